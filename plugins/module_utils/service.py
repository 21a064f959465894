# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start, stop, restart and check one service of the stack, whatever runs it.

One abstraction, :class:`Service`, with one implementation per *manager*:

* ``lab``     -- ``<python> -m lab service NAME start|stop|restart`` and
  ``<python> -m lab status --json`` run in the Lifeboat repository (the local lab;
  settings: ``repo_dir``, ``python``, ``env``).
* ``systemd`` -- ``systemctl start|stop|restart UNIT`` and ``systemctl is-active``
  (settings: ``unit``, ``user``, ``systemctl``).
* ``docker``  -- a container through the Docker SDK (optional dependency; settings:
  ``container``, ``base_url``, ``stop_timeout_s``).
* ``command`` -- user-given argv lists (settings: ``start``, ``stop``, ``status``,
  optional ``restart``, ``cwd``, ``env``).

Every command-based manager also takes ``timeout_s`` (seconds one command may run,
default 120). Status commands follow the LSB/systemd convention: exit code 0 means
*running*, any other exit code means *not running*. Commands are run without a
shell, from argv lists; secrets must not be put in them (pass them through ``env``
or the service's own configuration files).

:func:`get_service` builds a :class:`Service` from a manager name and a settings
dict, rejecting unknown settings with :class:`errors.ConfigError`.
:func:`wait_for_port`, :func:`wait_for_port_closed` and :func:`wait_for_http` wait,
bounded by a deadline, for a service to answer (or stop answering).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.errors import (
    ConfigError,
    ConnectionFailure,
    DependencyMissing,
    LifeboatError,
    NotFound,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.progress import get_logger

# imported where used: the docker SDK (~50 ms) only by the docker manager, Ansible's
# open_url (~55 ms, requests) only when waiting for a URL -- every service task pays for
# what its module imports
HAS_DOCKER = importlib.util.find_spec("docker") is not None

LOG = get_logger("service")

MANAGERS = ("lab", "systemd", "docker", "command")
DEFAULT_TIMEOUT_S = 120.0
_OUTPUT_TAIL_CHARS = 400


class ServiceControlFailed(LifeboatError):
    """A start/stop/restart/status command failed (non-zero exit or timeout).

    Subclass of :class:`errors.LifeboatError`; candidates for moving into errors.py.
    """


class Service:
    """One service of the stack. Subclasses implement the four operations.

    ``start()``/``stop()``/``restart()`` return once the manager reports the
    operation done (they do not wait for the service to accept connections: use
    :func:`wait_for_port` or :func:`wait_for_http` for that). They raise
    :class:`ServiceControlFailed` when the manager reports failure.
    ``is_running()`` never changes anything.
    """

    manager = ""

    def __init__(self, name: str) -> None:
        if not name:
            raise ConfigError("a service needs a name", hint="give the service name, e.g. 'mysql'")
        self.name = name

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        """Stop then start (managers with a native restart override this)."""
        self.stop()
        self.start()

    def is_running(self) -> bool:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (no secrets): manager, name and how it is controlled."""
        return {"manager": self.manager, "name": self.name}


class CommandService(Service):
    """A service controlled by argv lists: start, stop, status and optional restart.

    ``status`` exiting 0 means running; any other exit code means not running.
    ``env`` entries are added to the inherited environment (and never logged), and
    ``LIFEBOAT_SERVICE`` names the service (one command set can serve several services).
    """

    manager = "command"

    def __init__(self, name: str, *, start: Sequence[str], stop: Sequence[str], status: Sequence[str],
                 restart: Optional[Sequence[str]] = None, cwd: Optional[str] = None,
                 env: Optional[Mapping[str, str]] = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(name)
        self.start_argv = _argv("start", start)
        self.stop_argv = _argv("stop", stop)
        self.status_argv = _argv("status", status)
        self.restart_argv = _argv("restart", restart) if restart else None
        self.cwd = cwd
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.timeout_s = float(timeout_s)

    def start(self) -> None:
        self._run_checked("start", self.start_argv)

    def stop(self) -> None:
        self._run_checked("stop", self.stop_argv)

    def restart(self) -> None:
        if self.restart_argv:
            self._run_checked("restart", self.restart_argv)
        else:
            super().restart()

    def is_running(self) -> bool:
        return self._run("status", self.status_argv).returncode == 0

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(start=list(self.start_argv), stop=list(self.stop_argv), status=list(self.status_argv),
                    restart=list(self.restart_argv) if self.restart_argv else None, cwd=self.cwd,
                    env_names=sorted(self.env))
        return info

    def _run(self, action: str, argv: list[str]) -> subprocess.CompletedProcess:
        """Run one command with ``LIFEBOAT_SERVICE`` = the service name in its environment;
        raise on a missing program or a timeout, not on exit codes."""
        env = dict(os.environ)
        env.update(self.env)
        env["LIFEBOAT_SERVICE"] = self.name
        LOG.info("%s %s: %s", self.name, action, " ".join(argv))
        try:
            return subprocess.run(argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=self.timeout_s, check=False)
        except FileNotFoundError as exc:
            raise DependencyMissing(f"cannot {action} service {self.name!r}: program {argv[0]!r} not found",
                                    hint="install it or give its full path") from exc
        except subprocess.TimeoutExpired as exc:
            raise ServiceControlFailed(f"{action} of service {self.name!r} did not finish within "
                                       f"{self.timeout_s:g} s", hint="check the service's logs, or raise timeout_s"
                                       ) from exc

    def _run_checked(self, action: str, argv: list[str]) -> None:
        proc = self._run(action, argv)
        if proc.returncode != 0:
            output = (proc.stderr or proc.stdout or "").strip()[-_OUTPUT_TAIL_CHARS:]
            raise ServiceControlFailed(f"{action} of service {self.name!r} failed with exit code "
                                       f"{proc.returncode}: {output or '(no output)'}",
                                       hint="see the service's logs")


class LabService(CommandService):
    """A service of the local lab, run in ``repo_dir`` with ``python``:
    ``-m lab service NAME start|stop|restart``; running = its ``running`` flag in ``-m lab status --json``
    (``lab service NAME status`` exits 0 whether or not the service runs, so its exit code is not used).
    """

    manager = "lab"

    def __init__(self, name: str, *, repo_dir: Optional[str] = None, python: Optional[str] = None,
                 env: Optional[Mapping[str, str]] = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        py = python or sys.executable
        base = [py, "-m", "lab", "service", name]
        super().__init__(name, start=base + ["start"], stop=base + ["stop"], restart=base + ["restart"],
                         status=[py, "-m", "lab", "status", "--json"], cwd=repo_dir or os.getcwd(), env=env,
                         timeout_s=timeout_s)

    def is_running(self) -> bool:
        proc = self._run("status", self.status_argv)
        try:
            if proc.returncode != 0:
                raise ValueError(f"exit code {proc.returncode}")
            rows = json.loads(proc.stdout)
            row = next((r for r in rows if r.get("service") == self.name), None)
        except (ValueError, AttributeError, TypeError) as exc:
            output = (proc.stderr or proc.stdout or "").strip()[-_OUTPUT_TAIL_CHARS:]
            raise ServiceControlFailed(f"lab status failed ({exc}): {output or '(no output)'}",
                                       hint=f"run '{' '.join(self.status_argv)}' in {self.cwd}") from exc
        if row is None:
            raise NotFound(f"the lab has no service {self.name!r}", hint="see: python -m lab status")
        return bool(row.get("running"))


class SystemdService(CommandService):
    """A systemd unit: ``systemctl [--user] start|stop|restart UNIT``; running = ``is-active``."""

    manager = "systemd"

    def __init__(self, name: str, *, unit: Optional[str] = None, user: bool = False, systemctl: str = "systemctl",
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.unit = unit or name
        base = [systemctl] + (["--user"] if user else [])
        super().__init__(name, start=base + ["start", self.unit], stop=base + ["stop", self.unit],
                         status=base + ["is-active", "--quiet", self.unit],
                         restart=base + ["restart", self.unit], timeout_s=timeout_s)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["unit"] = self.unit
        return info


class DockerService(Service):
    """A Docker container, through the Docker SDK (``docker`` Python package)."""

    manager = "docker"

    def __init__(self, name: str, *, container: Optional[str] = None, base_url: Optional[str] = None,
                 stop_timeout_s: int = 10) -> None:
        super().__init__(name)
        if not HAS_DOCKER:
            raise DependencyMissing("the docker manager needs the Python package 'docker'",
                                    hint="pip install docker on the managed host")
        self.container = container or name
        self.base_url = base_url
        self.stop_timeout_s = int(stop_timeout_s)

    def start(self) -> None:
        self._call("start", lambda c: c.start())

    def stop(self) -> None:
        self._call("stop", lambda c: c.stop(timeout=self.stop_timeout_s))

    def restart(self) -> None:
        self._call("restart", lambda c: c.restart(timeout=self.stop_timeout_s))

    def is_running(self) -> bool:
        return self._call("status", lambda c: c.status) == "running"

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(container=self.container, base_url=self.base_url)
        return info

    def _call(self, action: str, op: Any) -> Any:
        import docker
        import docker.errors

        try:
            client = docker.DockerClient(base_url=self.base_url) if self.base_url else docker.from_env()
            return op(client.containers.get(self.container))
        except docker.errors.NotFound as exc:
            raise NotFound(f"docker container {self.container!r} (service {self.name!r}) does not exist",
                           hint="check the container name in the service settings") from exc
        except docker.errors.APIError as exc:
            raise ServiceControlFailed(f"{action} of docker container {self.container!r} failed: {exc}") from exc
        except docker.errors.DockerException as exc:
            raise ConnectionFailure(f"cannot reach the docker daemon for service {self.name!r}: {exc}",
                                    hint="is dockerd running, and is base_url right?") from exc


_CLASSES: dict[str, type] = {"lab": LabService, "systemd": SystemdService, "docker": DockerService,
                             "command": CommandService}
_SETTINGS: dict[str, frozenset] = {
    "lab": frozenset({"repo_dir", "python", "env", "timeout_s"}),
    "systemd": frozenset({"unit", "user", "systemctl", "timeout_s"}),
    "docker": frozenset({"container", "base_url", "stop_timeout_s"}),
    "command": frozenset({"start", "stop", "status", "restart", "cwd", "env", "timeout_s"}),
}


def get_service(manager: str, name: str, **settings: Any) -> Service:
    """Build the :class:`Service` ``name`` controlled by ``manager`` (one of :data:`MANAGERS`).

    ``settings`` are the manager's keyword settings (see the module docstring);
    ``None`` values are dropped. Raises :class:`errors.ConfigError` for an unknown
    manager, an unknown setting or a missing required one, and
    :class:`errors.DependencyMissing` for ``docker`` without the Docker SDK.
    """
    if manager not in _CLASSES:
        raise ConfigError(f"unknown service manager {manager!r}", hint=f"use one of: {', '.join(MANAGERS)}")
    given = {k: v for k, v in settings.items() if v is not None}
    unknown = sorted(set(given) - _SETTINGS[manager])
    if unknown:
        raise ConfigError(f"unknown setting(s) for the {manager} manager: {', '.join(unknown)}",
                          hint=f"accepted: {', '.join(sorted(_SETTINGS[manager]))}")
    if manager == "command":
        missing = [k for k in ("start", "stop", "status") if k not in given]
        if missing:
            raise ConfigError(f"the command manager needs the setting(s) {', '.join(missing)}",
                              hint="give each as a list of program and arguments")
    return _CLASSES[manager](name, **given)


def wait_for_port(host: str, port: int, timeout_s: float, interval_s: float = 0.2) -> float:
    """Wait until a TCP connection to ``host:port`` succeeds; return the seconds waited.

    Tries at least once; gives up when ``timeout_s`` seconds (monotonic clock) have
    passed and raises :class:`errors.ConnectionFailure` naming the last error.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    last_error: Optional[BaseException] = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.05, min(remaining, 2.0))):
                return time.monotonic() - started
        except OSError as exc:
            last_error = exc
        if time.monotonic() + interval_s > deadline:
            raise ConnectionFailure(f"{host}:{port} did not accept connections within {timeout_s:g} s "
                                    f"(last error: {last_error})", hint="is the service started and listening?")
        time.sleep(interval_s)


def wait_for_port_closed(host: str, port: int, timeout_s: float, interval_s: float = 0.2) -> float:
    """Wait until ``host:port`` refuses TCP connections; return the seconds waited.

    Raises :class:`errors.ConnectionFailure` if something still listens after ``timeout_s``.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                pass
        except OSError:
            return time.monotonic() - started
        if time.monotonic() + interval_s > deadline:
            raise ConnectionFailure(f"{host}:{port} still accepts connections after {timeout_s:g} s",
                                    hint="the service did not stop; check its logs")
        time.sleep(interval_s)


def wait_for_http(url: str, timeout_s: float, expect: Union[int, Iterable[int]] = 200,
                  interval_s: float = 0.2, validate_certs: bool = True) -> float:
    """Wait until ``GET url`` answers with a status in ``expect``; return the seconds waited.

    ``expect`` is one status code or several. Redirects to GET/HEAD are followed. Gives up after
    ``timeout_s`` seconds and raises :class:`errors.ConnectionFailure` naming the last
    status or error seen.
    """
    from ansible.module_utils.urls import open_url

    wanted = {expect} if isinstance(expect, int) else set(expect)
    started = time.monotonic()
    deadline = started + timeout_s
    last = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        try:
            with open_url(url, method="GET", timeout=max(0.05, min(remaining, 5.0)), validate_certs=validate_certs,
                          follow_redirects="safe") as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except ValueError as exc:
            raise ConfigError(f"cannot wait for {url!r}: {exc}", hint="give an http:// or https:// URL") from exc
        except OSError as exc:
            status = None
            last = str(exc)
        if status is not None:
            if status in wanted:
                return time.monotonic() - started
            last = f"HTTP {status}"
        if time.monotonic() + interval_s > deadline:
            raise ConnectionFailure(f"{url} did not answer with {sorted(wanted)} within {timeout_s:g} s "
                                    f"(last: {last})", hint="is the service started and healthy?")
        time.sleep(interval_s)


def _argv(what: str, argv: Optional[Sequence[str]]) -> list[str]:
    """Validate one command: a non-empty list of strings (never a shell string)."""
    if isinstance(argv, (str, bytes)) or not argv or not all(isinstance(a, str) for a in argv):
        raise ConfigError(f"the {what} command must be a non-empty list of strings (program and arguments)",
                          hint='e.g. ["systemctl", "start", "mysql"]; no shell string')
    return list(argv)
