"""Start, stop and inspect the lab's services; bring the whole lab up or down.

Public API (``state_dir=None`` means ``$LAB_STATE_DIR`` or ``<repo>/.lab``)::

    start(name, state_dir=None) -> int          # pid; a running service is left alone
    stop(name, state_dir=None) -> int | None    # pid stopped, None if it was not running
    restart(name, state_dir=None) -> int
    status(name, state_dir=None) -> ServiceStatus
    up(state_dir=None, seed_rows=None) -> list[ServiceStatus]
    down(state_dir=None) -> list[ServiceStatus]

Names: ``mysql``, ``redis``, ``vault``, ``app``. Every call holds an exclusive
lock on ``<state>/lab.lock``, so concurrent ``up`` runs (several test sessions)
do not race; the lock is re-entrant within one thread.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger
from lab import procs, svc_app, svc_mysql, svc_redis, svc_vault
from lab.layout import Layout, load_layout
from lab.secrets import ensure_key_files, ensure_secrets, make_private_dir

SERVICES = ("mysql", "redis", "vault", "app")
_MODULES = {"mysql": svc_mysql, "redis": svc_redis, "vault": svc_vault, "app": svc_app}
_DATA_DIRS = {"mysql": "mysql_datadir", "redis": "redis_dir", "vault": "vault_datadir", "app": "app_storage"}

log = get_logger("lab")
_held = threading.local()


@dataclass
class ServiceStatus:
    """What runs where: ``running`` is True when the pid file names a live lab process."""

    service: str
    running: bool
    pid: int | None
    host: str
    port: int
    port_open: bool
    data_dir: str

    def as_dict(self) -> dict:
        return asdict(self)


def _module(name: str):
    try:
        return _MODULES[name]
    except KeyError:
        raise ConfigError(f"unknown lab service {name!r}", hint=f"use one of: {', '.join(SERVICES)}") from None


@contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """Hold the lab's exclusive lock (re-entrant per thread and state folder)."""
    held = getattr(_held, "dirs", None)
    if held is None:
        held = _held.dirs = {}
    key = str(layout.state_dir)
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    make_private_dir(layout.state_dir)
    fd = os.open(layout.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held[key] = 1
        try:
            yield
        finally:
            held[key] = 0
    finally:
        os.close(fd)


def start(name: str, state_dir: str | os.PathLike | None = None) -> int:
    """Start one service on its existing data (vault: also unseal); returns the pid."""
    module = _module(name)
    layout = load_layout(state_dir, create=True)
    with locked(layout):
        ensure_secrets(layout)
        return module.start(layout)


def stop(name: str, state_dir: str | os.PathLike | None = None) -> int | None:
    """Stop one service if the lab started it; returns the stopped pid or None."""
    module = _module(name)
    layout = load_layout(state_dir)
    with locked(layout):
        return module.stop(layout)


def restart(name: str, state_dir: str | os.PathLike | None = None) -> int:
    """Stop then start one service; returns the new pid."""
    layout = load_layout(state_dir)
    with locked(layout):
        stop(name, layout.state_dir)
        return start(name, layout.state_dir)


def _status(layout: Layout, name: str) -> ServiceStatus:
    module = _module(name)
    pid = module.running_pid(layout)
    port = layout.port(name)
    host = layout.host_for(name)
    return ServiceStatus(service=name, running=pid is not None, pid=pid, host=host, port=port,
                         port_open=procs.port_open(host, port, timeout=0.3),
                         data_dir=str(getattr(layout, _DATA_DIRS[name])))


def status(name: str, state_dir: str | os.PathLike | None = None) -> ServiceStatus:
    """Whether one service runs, with its pid, address and data folder."""
    return _status(load_layout(state_dir), name)


def status_all(state_dir: str | os.PathLike | None = None) -> list[ServiceStatus]:
    layout = load_layout(state_dir)
    return [_status(layout, name) for name in SERVICES]


def up(state_dir: str | os.PathLike | None = None, seed_rows: int | None = None) -> list[ServiceStatus]:
    """Bring the whole lab up from any state; idempotent (running services keep their pids).

    Creates secrets, keys and store; starts MariaDB, Redis and OpenBao, provisions
    accounts and Vault (init/unseal/configure), seeds the demo data if the demo
    schema is missing, and starts the demo app.
    """
    from lab import seed

    layout = load_layout(state_dir, create=True)
    with locked(layout):
        ensure_secrets(layout)
        ensure_key_files(layout)
        svc_mysql.start(layout)
        svc_mysql.ensure_provisioned(layout)
        svc_redis.start(layout)
        svc_vault.ensure_ready(layout)
        if not seed.demo_schema_exists(layout):
            seed.seed(layout, rows=seed_rows or seed.DEFAULT_ROWS)
        svc_app.start(layout)
        return [_status(layout, name) for name in SERVICES]


def down(state_dir: str | os.PathLike | None = None) -> list[ServiceStatus]:
    """Stop every lab service (app first); only processes named by the lab's pid files."""
    layout = load_layout(state_dir)
    if not Path(layout.state_dir).exists():
        return []
    with locked(layout):
        for name in reversed(SERVICES):
            _module(name).stop(layout)
        return [_status(layout, name) for name in SERVICES]
