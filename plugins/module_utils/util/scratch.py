# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Throw-away servers for verification and rehearsal (internal API of ``lifeboat.dr``).

:class:`ScratchServer` is the one lifecycle the scratch MariaDB, Redis and OpenBao share:
a private folder (``root``), one child process (``proc``) started in its own session,
a log file (``log_path``); ``stop()`` sends SIGTERM and kills after ``stop_timeout_s``;
``cleanup()`` stops and removes the folder (idempotent); as a context manager it is
cleaned up on exit, also when the body raises, and -- with ``start_on_enter`` -- started
on entry (cleaned up if that fails). Subclasses write their own ``start()``.

Where the server's programs run is the server's ``launcher``: :class:`HostLauncher` (this
host's installed programs, the default) or :class:`ContainerLauncher` (throw-away containers
of an image -- on a Compose deployment the service's own image, so the scratch server is the
version the service runs; :func:`launcher_for`). Either way the server's folder and addresses
are the same: the container gets the folder bind-mounted at the same path and this host's
network (its ``127.0.0.1`` is this host's), so the code that talks to the server does not
change.

:func:`free_port` and :func:`find_program` are the helpers every scratch server needs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import DependencyMissing

PROGRAM_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_program(name: str, *, install_hint: str, why: str = "",
                 dirs: Sequence[str] = PROGRAM_DIRS) -> str:
    """Absolute path of program ``name``: PATH, then ``dirs``; DependencyMissing naming ``install_hint``.

    ``why`` is appended to the message (``"<name> is not installed; <why>"``).
    """
    found = shutil.which(name) or next((str(Path(d) / name) for d in dirs
                                        if os.access(Path(d) / name, os.X_OK)), None)
    if not found:
        raise DependencyMissing(f"{name} is not installed" + (f"; {why}" if why else ""), hint=install_hint)
    return found


class HostLauncher:
    """Runs a scratch server's programs on this host (the installed ones)."""

    where = "on this host"

    def program(self, names: Sequence[str], find: Callable[[], str]) -> str:
        """The program to run: ``find()`` (a path on this host, or DependencyMissing)."""
        return find()

    def popen(self, argv: list[str], *, mounts: Sequence[Path], env: Optional[dict[str, str]] = None,
              cwd: Optional[Path] = None, output: Optional[Path] = None) -> subprocess.Popen:
        """Start ``argv`` in its own session; stdout+stderr appended to ``output`` (else discarded)."""
        out = open(output, "ab") if output else subprocess.DEVNULL  # noqa: SIM115 - closed below, kept by the child
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, cwd=cwd, start_new_session=True)
        finally:
            if output:
                out.close()  # type: ignore[union-attr]

    def run(self, argv: list[str], *, mounts: Sequence[Path], env: Optional[dict[str, str]] = None,
            output: Optional[Path] = None, timeout: float = 300) -> int:
        """Run ``argv`` to its end; its exit code (output as :meth:`popen`)."""
        proc = self.popen(argv, mounts=mounts, env=env, output=output)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise


class ContainerProcess:
    """A scratch server's container with the part of ``subprocess.Popen``'s interface that
    :class:`ScratchServer` uses (``poll``, ``wait``, ``send_signal``, ``kill``, ``returncode``,
    ``pid``), and :meth:`remove`."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.pid = container.short_id
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            self.container.reload()
            if self.container.status in ("exited", "dead", "stopped"):
                self.returncode = int((self.container.attrs.get("State") or {}).get("ExitCode", -1))
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        if self.returncode is not None:
            return self.returncode
        try:
            result = self.container.wait(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - the SDK raises the transport's timeout
            raise subprocess.TimeoutExpired(f"container {self.pid}", timeout or 0) from exc
        self.returncode = int(result.get("StatusCode", -1))
        return self.returncode

    def send_signal(self, signum: int) -> None:
        try:
            self.container.kill(signal=int(signum))
        except Exception:  # noqa: BLE001 - already exited
            pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def remove(self) -> None:
        """Remove the container (idempotent)."""
        try:
            self.container.remove(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


class ContainerLauncher:
    """Runs a scratch server's programs in throw-away containers of ``image`` on the engine of
    ``client``: entrypoint = the program (the image's own entrypoint is not run), user root,
    this host's network, the server's folder(s) bind-mounted at the same path, label
    ``lifeboat.scratch=1``; no environment but the image's (no secret reaches the container but
    through the server's 0600 files). Programs are named, found through the image's ``PATH``."""

    LABEL = "lifeboat.scratch"

    def __init__(self, client: Any, image: str) -> None:
        self.client = client
        self.image = image
        self.where = f"in a container of image {image[:19]}"

    def _create(self, argv: list[str], mounts: Sequence[Path], cwd: Optional[Path] = None,
                output: Optional[Path] = None) -> ContainerProcess:
        entrypoint, command = [argv[0]], argv[1:]
        if output:  # the server's log as a file of its folder, as on the host
            entrypoint, command = ["/bin/sh", "-c", 'exec "$@" >>"$0" 2>&1', str(output)], argv
        container = self.client.containers.run(
            self.image, command, entrypoint=entrypoint, detach=True, network_mode="host", user="0",
            working_dir=str(cwd) if cwd else None, labels={self.LABEL: "1"},
            volumes={str(m): {"bind": str(m), "mode": "rw"} for m in mounts})
        return ContainerProcess(container)

    def program(self, names: Sequence[str], find: Callable[[], str]) -> str:
        """The first of ``names`` the image has (asked of the image when there is a choice)."""
        if len(names) == 1:
            return names[0]
        script = " || ".join(f"command -v {name}" for name in names)
        proc = ContainerProcess(self.client.containers.run(
            self.image, ["-c", script], entrypoint=["/bin/sh"], detach=True, network_mode="none", user="0",
            labels={self.LABEL: "1"}))
        try:
            proc.wait(timeout=60)
            found = proc.container.logs().decode(errors="replace").strip().splitlines()
        finally:
            proc.remove()
        if not found:
            raise DependencyMissing(f"image {self.image} has none of {', '.join(names)}",
                                    hint="verify on a host with the program installed (no scratch_images)")
        return found[0]

    def popen(self, argv: list[str], *, mounts: Sequence[Path], env: Optional[dict[str, str]] = None,
              cwd: Optional[Path] = None, output: Optional[Path] = None) -> ContainerProcess:
        return self._create(argv, mounts, cwd, output)

    def run(self, argv: list[str], *, mounts: Sequence[Path], env: Optional[dict[str, str]] = None,
            output: Optional[Path] = None, timeout: float = 300) -> int:
        proc = self._create(argv, mounts, output=output)
        try:
            return proc.wait(timeout=timeout)
        finally:
            proc.remove()


Launcher = Union[HostLauncher, ContainerLauncher]
HOST = HostLauncher()


def launcher_for(options: Optional[dict[str, Any]], component: str) -> Launcher:
    """Where ``component``'s scratch server runs: in a container of ``options["scratch_images"][component]``
    on the engine of ``options["docker_host"]`` when the verification was given one, else on this host."""
    image = ((options or {}).get("scratch_images") or {}).get(component)
    if not image:
        return HOST
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.compose_volumes import client_for

    return ContainerLauncher(client_for((options or {}).get("docker_host")), str(image))


class ScratchServer:
    """Base of the scratch servers: folder, process, log, stop / cleanup / context manager.

    Subclasses set ``name``, ``root``, ``log_path`` (and ``proc`` when started) and write
    ``start()``. Class settings: ``stop_timeout_s`` (SIGTERM grace before SIGKILL),
    ``start_on_enter`` (``with`` starts the server), ``log_tail_chars``.
    """

    name = "scratch"
    stop_timeout_s = 30.0
    start_on_enter = True
    log_tail_chars = 600
    root: Path
    log_path: Path
    proc: Optional[Any] = None         # subprocess.Popen, or ContainerProcess
    launcher: Launcher = HOST

    def start(self) -> Any:
        """Start the server and return once it answers (subclasses)."""
        raise NotImplementedError

    def is_running(self) -> bool:
        """True while the started process has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop the process (SIGTERM, SIGKILL after ``stop_timeout_s``); a container is then removed.
        No-op if not running."""
        try:
            if self.proc is None or self.proc.poll() is not None:
                return
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        finally:
            remove = getattr(self.proc, "remove", None)
            if remove is not None:
                remove()

    def log_tail(self, chars: Optional[int] = None) -> str:
        """The last ``chars`` characters of the server's log (``"(no log)"`` when unreadable)."""
        try:
            return self.log_path.read_text(errors="replace")[-(chars or self.log_tail_chars):]
        except OSError:
            return "(no log)"

    def cleanup(self) -> None:
        """Stop the server and remove its folder; idempotent."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Any:
        if self.start_on_enter:
            try:
                self.start()
            except BaseException:
                self.cleanup()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
