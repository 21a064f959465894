# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a component's service runs and how Lifeboat reaches it: the deployment target.

:class:`DeploymentTarget` is the interface (internal API of ``lifeboat.dr``): start, stop,
restart, is it running, its main pid and configured address, :meth:`~Service.run_command`
(run a program where the service lives, with streamed stdin/stdout and secrets passed in
the environment, never in argv), :meth:`~Service.data_dir` (where its data lives, when
the target knows) and :meth:`~Service.wait_healthy` (wait until it answers).
A new deployment (e.g. containers) is one new :class:`Service` subclass registered in
``_CLASSES``; the engines only talk to the interface.

:class:`Service` implements it with one subclass per *manager*:

* ``lab``     -- ``<python> -m lab service NAME start|stop|restart`` and
  ``<python> -m lab status --json`` run in the Lifeboat repository (the local lab;
  settings: ``repo_dir``, ``python``, ``env``).
* ``systemd`` -- ``systemctl start|stop|restart UNIT`` and ``systemctl is-active``
  (settings: ``unit``, ``user``, ``systemctl``).
* ``docker``  -- a container through the Docker SDK (optional dependency; settings:
  ``container``, or a Compose ``project`` + ``service`` (+ ``container_number``) resolved
  by labels; ``base_url``, ``stop_timeout_s``); commands run in it through exec.
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
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterable, Mapping, Optional, Protocol, Sequence, Union, runtime_checkable

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    ConnectionFailure,
    DependencyMissing,
    NotFound,
    ServiceControlFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

# imported where used: the docker SDK (~50 ms) only by the docker manager, Ansible's
# open_url (~55 ms, requests) only when waiting for a URL -- every service task pays for
# what its module imports
HAS_DOCKER = importlib.util.find_spec("docker") is not None

LOG = get_logger("service")

MANAGERS = ("lab", "systemd", "docker", "command")
DEFAULT_TIMEOUT_S = 120.0
_OUTPUT_TAIL_CHARS = 400


@runtime_checkable
class DeploymentTarget(Protocol):
    """What the engines need of the place a service runs (see the module docstring)."""

    name: str
    manager: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def restart(self) -> None: ...

    def is_running(self) -> bool: ...

    def main_pid(self) -> Optional[int]: ...

    def configured_address(self) -> Optional[tuple[str, int]]: ...

    def describe(self) -> dict[str, Any]: ...

    def run_command(self, argv: Sequence[str], *, stdin: Optional[BinaryIO] = None,
                    stdout: Optional[BinaryIO] = None, secret_env: Optional[Mapping[str, str]] = None,
                    timeout_s: Optional[float] = None, what: str = "") -> CommandResult: ...

    def data_dir(self) -> Optional[str]: ...

    def wait_healthy(self, timeout_s: float) -> float: ...


@dataclass(frozen=True)
class CommandResult:
    """The outcome of :meth:`Service.run_command`: exit code, the captured stdout (empty when it
    was streamed to a file) and the tail of stderr."""

    returncode: int
    stdout: bytes
    stderr_tail: str


class Service:
    """One service of the stack (a :class:`DeploymentTarget`). Subclasses implement the four operations.

    ``start()``/``stop()``/``restart()`` return once the manager reports the
    operation done (they do not wait for the service to accept connections: use
    :func:`wait_for_port` or :func:`wait_for_http` for that). They raise
    :class:`ServiceControlFailed` when the manager reports failure.
    ``is_running()`` never changes anything. ``identified_by_name``: the manager finds the
    service itself (a container by its name or Compose labels), not by where it listens, so
    "not running" says the service at the inventory's address is down even when its address
    cannot be read back (a stopped container has none). ``listens_only_while_running``: a
    stopped service leaves nothing at its address (a container's address goes with it), so
    :func:`probe_service` asks the manager before it tries to connect.
    """

    manager = ""
    identified_by_name = False
    listens_only_while_running = False

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

    def main_pid(self) -> Optional[int]:
        """The pid of the running service's main process as the manager knows it, or None
        (not running, or a manager that cannot tell). Never changes anything."""
        return None

    def configured_address(self) -> Optional[tuple[str, int]]:
        """The (host, port) the service is configured to listen on, when the manager knows
        it (the lab does), else None. Never changes anything."""
        return None

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (no secrets): manager, name and how it is controlled."""
        return {"manager": self.manager, "name": self.name}

    def run_command(self, argv: Sequence[str], *, stdin: Optional[BinaryIO] = None,
                    stdout: Optional[BinaryIO] = None, secret_env: Optional[Mapping[str, str]] = None,
                    timeout_s: Optional[float] = None, what: str = "") -> CommandResult:
        """Run ``argv`` where the service lives and wait for it; raise ServiceControlFailed if it fails.

        ``stdin``/``stdout``: binary files streamed to / from the program (``stdout=None``:
        captured and returned). ``secret_env``: environment entries for secrets -- never
        put secrets in ``argv``, which is logged. The process-based managers run it on this
        host with the inherited environment; a non-zero exit or a timeout (``timeout_s``,
        default none) raises :class:`ServiceControlFailed` naming ``what`` and stderr's tail.
        """
        argv = _argv(what or "command", argv)
        label = what or os.path.basename(argv[0])
        LOG.info("%s %s: %s", self.name, label, " ".join(argv))
        env = dict(os.environ)
        env.update(getattr(self, "env", {}) or {})
        env.update({str(k): str(v) for k, v in (secret_env or {}).items()})
        try:
            proc = subprocess.run(argv, cwd=getattr(self, "cwd", None), env=env,
                                  stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  stdout=stdout if stdout is not None else subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise ServiceControlFailed(f"{label} on service {self.name!r} did not finish within {timeout_s} s",
                                       hint="raise the timeout or check the program") from None
        except OSError as exc:
            raise ServiceControlFailed(f"{label} on service {self.name!r} could not run: {exc.strerror or exc}",
                                       hint=f"check that {argv[0]} is installed on the service's host") from exc
        tail = (proc.stderr or b"").decode("utf-8", "replace").strip()[-_OUTPUT_TAIL_CHARS:]
        if proc.returncode != 0:
            raise ServiceControlFailed(f"{label} on service {self.name!r} failed with exit code {proc.returncode}: "
                                       f"{tail or '(no output)'}", hint="see the program's message")
        return CommandResult(proc.returncode, proc.stdout or b"", tail)

    def data_dir(self) -> Optional[str]:
        """The service's data directory when the manager knows it (the lab does), else None:
        the engines then take it from their options or ask the server."""
        return None

    def wait_healthy(self, timeout_s: float) -> float:
        """Wait until the service answers: its configured address accepts TCP connections, or
        (address unknown) the manager reports it running. Returns the seconds waited;
        ConnectionFailure after ``timeout_s``."""
        address = self.configured_address()
        if address is not None:
            return wait_for_port(address[0], address[1], timeout_s)
        started = time.monotonic()
        while not self.is_running():
            if time.monotonic() - started >= timeout_s:
                raise ConnectionFailure(f"service {self.name!r} is not running after {timeout_s:.0f} s",
                                        hint="see the service's logs")
            time.sleep(0.2)
        return time.monotonic() - started


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
        return bool(self._status_row().get("running"))

    def main_pid(self) -> Optional[int]:
        row = self._status_row()
        pid = row.get("pid") if row.get("running") else None
        return int(pid) if pid else None

    def configured_address(self) -> Optional[tuple[str, int]]:
        row = self._status_row()
        if not row.get("host") or not row.get("port"):
            return None
        return str(row["host"]), int(row["port"])

    def data_dir(self) -> Optional[str]:
        """The ``data_dir`` of this service in ``lab status --json``."""
        found = self._status_row().get("data_dir")
        return str(found) if found else None

    def _status_row(self) -> dict[str, Any]:
        """This service's row of ``lab status --json`` (running, pid, host, port, ...)."""
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
        return dict(row)


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
        self.show_argv = base + ["show", "--property=MainPID", "--value", self.unit]

    def main_pid(self) -> Optional[int]:
        proc = self._run("show", self.show_argv)
        text = (proc.stdout or "").strip()
        return int(text) if proc.returncode == 0 and text.isdigit() and int(text) > 0 else None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["unit"] = self.unit
        return info


COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
COMPOSE_NUMBER_LABEL = "com.docker.compose.container-number"


class DockerService(Service):
    """A container, through the Docker SDK (``docker`` Python package): by name, or as a Compose service.

    ``container``: the container's name (default the service name). ``project`` (+ ``service``,
    default the service name): a Compose project and service, resolved on every call through the
    labels every Compose implementation sets (``com.docker.compose.project``/``.service``),
    never by container name; a service scaled to several containers is refused with their list
    unless ``container_number`` picks one. ``base_url``: the engine (``unix://...``,
    ``ssh://...``), default ``DOCKER_HOST``. Commands run in the container through exec with
    streamed stdin/stdout (:mod:`util.container_exec`), secrets only in the exec's environment.
    """

    manager = "docker"
    identified_by_name = True
    listens_only_while_running = True

    def __init__(self, name: str, *, container: Optional[str] = None, base_url: Optional[str] = None,
                 stop_timeout_s: int = 10, project: Optional[str] = None, service: Optional[str] = None,
                 container_number: Optional[int] = None) -> None:
        super().__init__(name)
        if not HAS_DOCKER:
            raise DependencyMissing("the docker manager needs the Python package 'docker'",
                                    hint="pip install docker on the managed host")
        if container and project:
            raise ConfigError(f"service {name!r}: give either a container name or a Compose project, not both",
                              hint="with a Compose project the container is found by its labels")
        if service and not project:
            raise ConfigError(f"service {name!r}: the Compose service {service!r} needs its project",
                              hint="add the setting project (the Compose project name)")
        self.project = project
        self.compose_service = (service or name) if project else None
        self.container_number = int(container_number) if container_number is not None else None
        self.container = None if project else (container or name)
        self.base_url = base_url
        self.stop_timeout_s = int(stop_timeout_s)
        self._client: Any = None

    def start(self) -> None:
        self._call("start", lambda c: c.start())

    def stop(self) -> None:
        self._call("stop", lambda c: c.stop(timeout=self.stop_timeout_s))

    def restart(self) -> None:
        self._call("restart", lambda c: c.restart(timeout=self.stop_timeout_s))

    def is_running(self) -> bool:
        return self._call("status", lambda c: c.status) == "running"

    def main_pid(self) -> Optional[int]:
        """The container's main process as the engine reports it (its host pid), or None when stopped."""
        pid = self._call("inspect", lambda c: (c.attrs.get("State") or {}).get("Pid"))
        return int(pid) if pid else None

    def container_name(self) -> str:
        """The name of the container the service resolves to now."""
        return self._call("inspect", lambda c: c.name)

    def labels(self) -> dict[str, str]:
        """The labels of the container the service resolves to now."""
        return self._call("inspect", lambda c: dict(c.labels or {}))

    def run_command(self, argv: Sequence[str], *, stdin: Optional[BinaryIO] = None,
                    stdout: Optional[BinaryIO] = None, secret_env: Optional[Mapping[str, str]] = None,
                    timeout_s: Optional[float] = None, what: str = "") -> CommandResult:
        """Run ``argv`` inside the container (exec through the API) and wait for it.

        ``stdin`` is streamed into the exec and closed (EOF) after its last byte; ``stdout``
        receives the program's output as it arrives (else it is captured and returned);
        ``secret_env`` reaches only the exec's environment. A non-zero exit or the deadline
        raises :class:`ServiceControlFailed` naming ``what`` and stderr's tail.
        """
        from ansible_collections.lifeboat.dr.plugins.module_utils.util import container_exec
        from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError

        argv = _argv(what or "command", argv)
        label = what or os.path.basename(argv[0])
        name = self.container_name()
        LOG.info("%s %s (in container %s): %s", self.name, label, name, " ".join(argv))
        chunks: Iterable[bytes] = iter(lambda: stdin.read(container_exec.CHUNK), b"") if stdin is not None else []
        sink = stdout.write if stdout is not None else None
        try:
            result = container_exec.exec_stream(
                self._engine(), name, argv, chunks, env={str(k): str(v) for k, v in (secret_env or {}).items()},
                timeout_s=timeout_s or container_exec.DEFAULT_TIMEOUT_S, stdout_sink=sink)
        except LifeboatError as exc:
            raise ServiceControlFailed(f"{label} in container {name} (service {self.name!r}): {exc.message}",
                                       hint="raise the timeout or check the program") from exc
        tail = result.stderr.decode("utf-8", "replace").strip()[-_OUTPUT_TAIL_CHARS:]
        if result.exit_code != 0:
            raise ServiceControlFailed(f"{label} in container {name} (service {self.name!r}) failed with exit code "
                                       f"{result.exit_code}: {tail or '(no output)'}", hint="see the program's message")
        return CommandResult(result.exit_code, result.stdout, tail)

    def run_in_image(self, argv: Sequence[str], *, what: str = "") -> bytes:
        """Run ``argv`` in a throwaway container of this service's image and return its stdout.

        For questions about the image while the service's own container may be stopped (which
        server version will open a restored datadir): no network, no volumes, removed when done;
        ``argv[0]`` replaces the image's entrypoint. ServiceControlFailed when it fails.
        """
        import docker.errors

        argv = _argv(what or "command", argv)

        def run(container: Any) -> bytes:
            try:
                return self._engine().containers.run(container.image.id, command=argv[1:], entrypoint=[argv[0]],
                                                     network_mode="none", remove=True, stdout=True, stderr=True)
            except docker.errors.ContainerError as exc:
                raise ServiceControlFailed(f"{what or argv[0]} in a container of image {container.image.id[:19]} "
                                           f"(service {self.name!r}) failed: {exc}") from exc

        return self._call(what or "run in image", run)

    def wait_healthy(self, timeout_s: float) -> float:
        """Run the container's own healthcheck (exec of its test through the API) until it passes.

        Engines without systemd timers (podman here) never update a container's health
        status by themselves, so the test is run here. A container without a healthcheck
        counts as healthy once it runs. Returns the seconds waited; ConnectionFailure after
        ``timeout_s`` naming the last output.
        """
        started = time.monotonic()
        last = ""
        while True:
            container = self._call("inspect", lambda c: c)
            test = ((container.attrs.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
            if container.status == "running":
                argv = _healthcheck_argv(test)
                if argv is None:
                    return time.monotonic() - started
                code, output = container.exec_run(argv)
                last = (output or b"").decode("utf-8", "replace").strip()[-_OUTPUT_TAIL_CHARS:]
                if code == 0:
                    return time.monotonic() - started
            else:
                last = f"container {container.name} is {container.status}"
            if time.monotonic() - started >= timeout_s:
                raise ConnectionFailure(f"service {self.name!r} (container {container.name}) is not healthy after "
                                        f"{timeout_s:.0f} s: {last or '(healthcheck said nothing)'}",
                                        hint="see the container's logs")
            time.sleep(0.5)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(container=self.container, base_url=self.base_url)
        if self.project:
            info.update(project=self.project, service=self.compose_service, container_number=self.container_number)
        return info

    # --- the engine -------------------------------------------------------------------------
    def _engine(self) -> Any:
        import docker

        if self._client is None:
            self._client = docker.DockerClient(base_url=self.base_url) if self.base_url else docker.from_env()
        return self._client

    def _resolve(self, client: Any) -> Any:
        """The container of this service: by name, or by its Compose labels (see the class doc)."""
        if not self.project:
            return client.containers.get(self.container)
        labels = [f"{COMPOSE_PROJECT_LABEL}={self.project}", f"{COMPOSE_SERVICE_LABEL}={self.compose_service}"]
        found = client.containers.list(all=True, filters={"label": labels})
        if self.container_number is not None:
            found = [c for c in found if c.labels.get(COMPOSE_NUMBER_LABEL) == str(self.container_number)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            numbered = sorted((c.labels.get(COMPOSE_NUMBER_LABEL, "?").zfill(6), c.name) for c in found)
            names = [f"{name} (number {number.lstrip('0') or '0'})" for number, name in numbered]
            raise ConfigError(f"Compose service {self.compose_service!r} of project {self.project!r} runs "
                              f"{len(found)} containers: {', '.join(names)}",
                              hint="say which one with the setting container_number")
        in_project = client.containers.list(all=True, filters={"label": [f"{COMPOSE_PROJECT_LABEL}={self.project}"]})
        if in_project:
            services = sorted({c.labels.get(COMPOSE_SERVICE_LABEL, "?") for c in in_project})
            number = f" with container number {self.container_number}" if self.container_number is not None else ""
            raise NotFound(f"Compose project {self.project!r} has no container of service "
                           f"{self.compose_service!r}{number}",
                           hint=f"its services: {', '.join(services)}")
        projects = sorted({c.labels.get(COMPOSE_PROJECT_LABEL) for c in client.containers.list(
            all=True, filters={"label": [COMPOSE_PROJECT_LABEL]})} - {None})
        raise NotFound(f"no container of Compose project {self.project!r} on this engine",
                       hint=f"projects found: {', '.join(projects) or 'none'}")

    def _call(self, action: str, op: Any) -> Any:
        import docker
        import docker.errors

        what = (f"Compose service {self.compose_service!r} of project {self.project!r}" if self.project
                else f"docker container {self.container!r}")
        try:
            return op(self._resolve(self._engine()))
        except docker.errors.NotFound as exc:
            raise NotFound(f"{what} (service {self.name!r}) does not exist",
                           hint="check the container name in the service settings") from exc
        except docker.errors.APIError as exc:
            raise ServiceControlFailed(f"{action} of {what} failed: {exc}") from exc
        except docker.errors.DockerException as exc:
            raise ConnectionFailure(f"cannot reach the docker engine for service {self.name!r}: {exc}",
                                    hint="is the engine running, and is base_url (or DOCKER_HOST) right?") from exc


def _healthcheck_argv(test: Sequence[str]) -> Optional[list[str]]:
    """A Docker healthcheck ``Test`` as an exec argv; None when there is none (``[]``, ``NONE``)."""
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    if test[0] == "CMD":
        return list(test[1:]) or None
    return ["/bin/sh", "-c", " ".join(test)]


_CLASSES: dict[str, type] = {"lab": LabService, "systemd": SystemdService, "docker": DockerService,
                             "command": CommandService}
_SETTINGS: dict[str, frozenset] = {
    "lab": frozenset({"repo_dir", "python", "env", "timeout_s"}),
    "systemd": frozenset({"unit", "user", "systemctl", "timeout_s"}),
    "docker": frozenset({"container", "base_url", "stop_timeout_s", "project", "service", "container_number"}),
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


# --------------------------------------------------------------------------- probing

#: Probe verdicts. ``up``: the address accepts connections. ``dead``: the manager says the
#: service is not running and the address is the one it is configured for. ``stopped``: not
#: running, but where it would listen cannot be confirmed. ``misaddressed``: the service runs
#: (or is configured) elsewhere. ``unreachable``: it runs and listens on that port, yet the
#: address refuses (host, firewall). ``unknown``: it runs but where it listens cannot be known.
VERDICTS = ("up", "dead", "stopped", "misaddressed", "unreachable", "unknown")
_TCP_LISTEN = "0A"
_ANY_HOSTS = {"0.0.0.0", "::", "::ffff:0.0.0.0"}


def _decode_proc_address(text: str) -> tuple[str, int]:
    """``0100007F:3306`` (as in /proc/net/tcp, host byte order per 32-bit word) -> ("127.0.0.1", 3306)."""
    hex_ip, hex_port = text.split(":")
    raw = bytes.fromhex(hex_ip)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words), int(hex_port, 16)


def _socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets process ``pid`` holds open (empty when unreadable)."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def listening_addresses(pid: int) -> Optional[list[tuple[str, int]]]:
    """The TCP (host, port) pairs process ``pid`` listens on, read from /proc (its own network
    namespace); None when the process or its tables cannot be read."""
    if not os.path.isdir(f"/proc/{pid}/fd"):
        return None
    inodes = _socket_inodes(pid)
    found: list[tuple[str, int]] = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == _TCP_LISTEN and fields[9] in inodes:
                found.append(_decode_proc_address(fields[1]))
    return sorted(set(found))


def _host_addresses(host: str) -> set[str]:
    """Every IP address ``host`` resolves to (itself when it does not resolve)."""
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except OSError:
        return {host}


def _listens_on(listening: list[tuple[str, int]], host: str, port: int) -> bool:
    """Whether one of ``listening`` serves ``host:port`` (a wildcard bind serves every host)."""
    wanted = _host_addresses(host)
    return any(p == port and (h in _ANY_HOSTS or h in wanted) for h, p in listening)


def _same_host(configured: str, given: str) -> bool:
    """Whether ``given`` reaches a service configured to listen on ``configured``."""
    return configured in _ANY_HOSTS or bool(_host_addresses(configured) & _host_addresses(given))


def _try_connect(host: str, port: int, timeout_s: float) -> Optional[str]:
    """None when ``host:port`` accepts a TCP connection, else the error."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def _fmt(addresses: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{h}:{p}" for h, p in addresses) or "nothing"


def probe_service(service: Service, host: str, port: int, *, timeout_s: float = 2.0,
                  address_source: str = "") -> dict[str, Any]:
    """Tell an unreachable service from a dead one; changes nothing.

    Connects once to ``host:port``; when that fails, asks the manager whether the service runs,
    (a manager whose services listen only while running -- ``docker`` -- is asked first: a stopped
    container is dead without a connect timeout),
    its pid, where that process listens (/proc) and where it is configured to listen. Returns
    ``{name, manager, host, port, reachable, error, running, pid, listening, configured,
    verdict, message}`` with ``verdict`` one of :data:`VERDICTS` and ``message`` saying what was
    tried, what runs and the fix (``address_source`` names the setting holding the address).
    """
    where = f"{host}:{port}"
    fix_where = address_source or "the address you gave"
    result: dict[str, Any] = dict(name=service.name, manager=service.manager, host=host, port=port, reachable=False,
                                  error=None, running=None, pid=None, listening=None, configured=None)
    if service.listens_only_while_running and not service.is_running():
        # nothing is left at a stopped service's address (a container's goes with it): not worth a
        # connect timeout per service while a whole project is down
        result.update(running=False, verdict="dead", message=(
            f"the {service.manager} manager says {service.name} is not running: the server is down; {where} was "
            "not tried (nothing listens there while it is stopped; the manager finds the service itself, not by "
            "its address)"))
        return result
    error = _try_connect(host, port, timeout_s)
    if error is None:
        result.update(reachable=True, verdict="up", message=f"{service.name} accepts connections on {where}")
        return result
    result["error"] = error
    running = service.is_running()
    configured = service.configured_address()
    result.update(running=running, configured=f"{configured[0]}:{configured[1]}" if configured else None)
    if not running:
        return _verdict_not_running(result, service, where, configured, fix_where)
    pid = service.main_pid()
    listening = listening_addresses(pid) if pid else None
    result.update(pid=pid, listening=[f"{h}:{p}" for h, p in listening] if listening is not None else None)
    running_what = f"{service.name} is running ({service.manager} manager, pid {pid or '?'})"
    if listening is None:
        result.update(verdict="unknown", message=(
            f"{where} refused the connection ({error}), but {running_what} and where it listens cannot be "
            f"known with the {service.manager} manager: refusing to take it for a dead server; check "
            f"{fix_where} against the service's configuration"))
    elif _listens_on(listening, host, port):
        result.update(verdict="unreachable", message=(
            f"{where} refused the connection ({error}) although {running_what} and listens on "
            f"{_fmt(listening)}: a firewall, a wrong host name or a network problem is in the way; fix the "
            f"network path, the server is not dead"))
    else:
        result.update(verdict="misaddressed", message=(
            f"{where} refused the connection ({error}): {running_what} but listens on {_fmt(listening)}, not "
            f"{where}; fix {fix_where} (the server is not dead)"))
    return result


def _verdict_not_running(result: dict[str, Any], service: Service, where: str,
                         configured: Optional[tuple[str, int]], fix_where: str) -> dict[str, Any]:
    """The verdict for a service its manager reports as not running."""
    stopped = f"the {service.manager} manager says {service.name} is not running"
    if configured is None and getattr(service, "identified_by_name", False):
        result.update(verdict="dead", message=(
            f"{where} refused the connection ({result['error']}) and {stopped}: the server is down (the "
            f"{service.manager} manager finds the service itself, not by its address)"))
    elif configured is None:
        result.update(verdict="stopped", message=(
            f"{where} refused the connection ({result['error']}) and {stopped}; whether {where} is the address "
            f"it listens on cannot be confirmed with this manager"))
    elif configured[1] != result["port"] or not _same_host(configured[0], result["host"]):
        result.update(verdict="misaddressed", message=(
            f"{where} refused the connection ({result['error']}); {stopped}, and it is configured for "
            f"{configured[0]}:{configured[1]}, not {where}: fix {fix_where}"))
    else:
        result.update(verdict="dead", message=(
            f"{where} refused the connection ({result['error']}), {stopped} and {where} is its configured "
            f"address: the server is down"))
    return result
