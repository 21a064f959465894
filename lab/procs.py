"""Start, find and stop the lab's own processes.

A lab process is identified by its pid file *and* a marker string (the path of
its config file) that must appear in ``/proc/<pid>/cmdline``; a pid file whose
process is gone, a zombie, or another program is stale and is never signalled.
Processes are detached (new session, re-parented away from the caller), so they
outlive ``python -m lab up`` and do not become zombies of a test process.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    DependencyMissing,
    LifeboatError,
)

#: Environment passed to services: nothing from the caller (no tokens, no passwords).
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

_DETACH = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'


def find_binary(name: str, debian_package: str, extra_dirs: Sequence[Path] = ()) -> str:
    """Absolute path of program ``name``; :class:`DependencyMissing` names the package to install."""
    for folder in extra_dirs:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise DependencyMissing(f"the lab needs the program {name!r}, which is not installed",
                                hint=f"install it with: apt-get install {debian_package} (or run make setup)")
    return found


def process_matches(pid: int, marker: str) -> bool:
    """True if ``pid`` is alive (not a zombie) and its command line contains ``marker``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and marker in cmdline


def process_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (whatever its command line says)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def read_pid(pid_file: Path) -> int | None:
    """The pid stored in ``pid_file``, or None (missing or unreadable file)."""
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def running_pid(pid_file: Path, marker: str) -> int | None:
    """The pid of the lab process recorded in ``pid_file`` if it still runs, else None."""
    pid = read_pid(pid_file)
    if pid is not None and process_matches(pid, marker):
        return pid
    return None


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(argv: Sequence[str], pid_file: Path, log_file: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> int:
    """Start ``argv`` detached with stdout/stderr appended to ``log_file``; write and return its pid.

    ``env`` is added to :data:`BASE_ENV`; the caller's environment is not passed on.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    full_env = dict(BASE_ENV, **(env or {}))
    out = subprocess.run(["/bin/sh", "-c", _DETACH, "sh", str(log_file), *argv], env=full_env,
                         cwd=str(cwd) if cwd else None, capture_output=True, text=True, check=True,
                         start_new_session=True)
    pid = int(out.stdout.strip())
    pid_file.write_text(f"{pid}\n")
    return pid


def log_tail(log_file: Path, lines: int = 15) -> str:
    """The last lines of a log file ('' if missing)."""
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def wait_until(check, what: str, timeout_s: float, pid: int, marker: str, log_file: Path,
               interval_s: float = 0.1) -> None:
    """Poll ``check()`` until true; fail early if the process dies, or after ``timeout_s`` seconds.

    ``marker`` is kept for callers; liveness alone decides during start-up (see below).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return
        # Seconds after we spawned it, the pid is still that process (no reuse that fast): judge
        # it by liveness. Its command line can be briefly unreadable while it retitles itself
        # (sshd, redis-server), which made a marker check report a live process as dead.
        if not process_alive(pid):
            raise LifeboatError(f"{what}: the process exited during start-up",
                                hint=f"see {log_file}; last lines:\n{log_tail(log_file)}")
        if time.monotonic() > deadline:
            raise LifeboatError(f"{what}: not ready after {timeout_s:.0f} s",
                                hint=f"see {log_file}; last lines:\n{log_tail(log_file)}")
        time.sleep(interval_s)


def ensure_port_free(host: str, port: int, service: str) -> None:
    """Raise :class:`ConfigError` if another program already listens on ``host:port``."""
    if port_open(host, port):
        raise ConfigError(f"{service}: port {host}:{port} is already in use by a process the lab did not start",
                          hint="stop that process, or use LAB_PORT_BASE with a new LAB_STATE_DIR")


def stop_process(pid_file: Path, marker: str, timeout_s: float = 60.0) -> int | None:
    """Stop the lab process of ``pid_file`` (SIGTERM, then SIGKILL after ``timeout_s``).

    Only a process whose command line contains ``marker`` is signalled. The pid
    file is removed in every case. Returns the pid stopped, or None if none ran.
    """
    pid = running_pid(pid_file, marker)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        killed = False
        while process_matches(pid, marker):
            if time.monotonic() > deadline:
                if killed:
                    raise LifeboatError(f"process {pid} ({marker}) survives SIGKILL",
                                        hint="check it with ps; it may be stuck in the kernel (D state)")
                os.kill(pid, signal.SIGKILL)
                killed, deadline = True, time.monotonic() + 10
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    return pid
