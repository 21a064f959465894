# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run status files: what a long run is doing, for other processes to read while it works.

:class:`RunStatus` is the status file ``<store>/progress/<id>.json`` of one long module run.
While a run is active (:func:`activate_run_status`), it is the progress sink of
:mod:`progress`: every report of ``progress.log_progress`` (the callback every engine already
reports through) and every ``progress.set_step`` / ``set_counts`` land there - atomic replace,
about every ``interval_s / 2`` seconds, a heartbeat at least every ``interval_s``, written by
the run's watchdog thread (never on the engine's own threads). So the
playbook's polling task (``lifeboat.dr.run_progress``), ``lifeboat jobs --running`` and the
health report see what the run does. The watchdog thread also ends the run's process within
``OWNER_CHECK_S`` seconds once the recorded run owner (the controller, :mod:`locks`) is
provably gone (backups, archiving, verification; see :data:`STOP_WITH_OWNER`). A host that
cannot see its controller (another machine: :func:`locks.owner_state` says ``unknown``) is
*tethered* instead: the controller's polling task writes ``<id>.poll`` on every poll
(:func:`record_poll`), and the run stops once those polls stop (:func:`polls_stopped`).
:func:`read_run_statuses` lists and judges (:func:`judge_run`) the files of a store.

Nothing secret is ever written: only names of operations and steps, counts, times, host
names and process identities.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.store.locks import (
    describe_owner,
    owner_state,
    process_identity,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    Progress,
    get_logger,
    human_bytes,
    set_progress_sink,
)

# --------------------------------------------------------------------------- run status files

PROGRESS_DIR = "progress"
DEFAULT_INTERVAL_S = 15.0
OWNER_CHECK_S = 5.0
# The tether of a run whose controller is on another machine: the polling task polls at least every
# TETHER_BEAT_S and says so in the poll file; polls overdue by more than POLL_GRACE_S mean the
# controller is gone. Worst case from the controller's death to the run's exit: beat + grace +
# OWNER_CHECK_S = 8 + 10 + 5 = 23 s (issue 22: within 30 s). The grace absorbs a slow poll (an SSH
# connection and a module start on a loaded controller take a few seconds).
POLL_SUFFIX = ".poll"
TETHER_BEAT_S = 8.0
POLL_GRACE_S = 10.0
# A report this early (a share of ``write_every_s``) is still written: the engines' meters report
# on a 0.5 s beat, and a strict ``>=`` against a throttle of the same length skipped every other
# report on a few microseconds of jitter, so the file went up to a whole interval stale and two
# polls one interval apart could print the same figures while the run moved.
WRITE_EARLY_SHARE = 0.1
STATUS_VERSION = 1
_ID_RE = re.compile(r"[^A-Za-z0-9._-]+")
_ACTIVE: Optional[RunStatus] = None  # this process's run (also the progress sink)
_ON_ABANDON: list[Callable[[str], None]] = []  # what end_this_run does first (e.g. give up a set's lease)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


def progress_dir(store: Union[str, Path]) -> Path:
    """The folder of a store's run status files (``<store>/progress``)."""
    return Path(store) / PROGRESS_DIR


def safe_run_id(text: str) -> str:
    """``text`` reduced to a file-name-safe id (letters, digits, ``.``, ``_``, ``-``)."""
    cleaned = _ID_RE.sub("_", str(text)).strip("._") or "run"
    return cleaned[:120]


def _atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as JSON into ``path``, replaced atomically: the text is encoded at once (C encoder,
    not ``json.dump``'s chunk by chunk writes) and written with one system call to a temp file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    text = json.dumps(data, sort_keys=True).encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(text)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


class RunStatus:
    """The status file ``<store>/progress/<run_id>.json`` of one running module run.

    Contract: the file is only ever replaced atomically (never seen half-written); a report is
    written when the last write is ``write_every_s`` (``interval_s / 2``, at least 0.5 s) old,
    give or take :data:`WRITE_EARLY_SHARE` of it - so under a steady stream of reports the file
    is never more than about ``interval_s / 2`` behind the run - plus a heartbeat
    at least every ``interval_s`` while the run lives; :meth:`close` removes it. A file whose
    ``worker`` process is gone is a run that died (readers judge by :func:`read_run_statuses`).
    ``run_owner``: the controller's identity (``locks.process_identity``), or ``None``.

    ``deferred``: reports, steps and counts are only recorded (no file I/O on the engine's
    thread, which may hold the engine's own locks); the writes are :meth:`flush`'s, called by the
    watchdog thread of :func:`activate_run_status` on the same beat.
    """

    def __init__(self, store: Union[str, Path], run_id: str, *, kind: str, component: str,
                 run_owner: Optional[dict[str, Any]] = None, interval_s: float = DEFAULT_INTERVAL_S,
                 deferred: bool = False) -> None:
        self.path = progress_dir(store) / f"{safe_run_id(run_id)}.json"
        self.interval_s = max(0.5, float(interval_s))
        self.write_every_s = max(0.5, self.interval_s / 2)
        self.deferred = deferred
        self._lock = threading.Lock()
        self._ops: dict[str, dict[str, Any]] = {}
        self._last_write = 0.0
        self._dirty = False
        self._closed = False
        now = time.time()
        self.data: dict[str, Any] = {
            "version": STATUS_VERSION, "id": self.path.stem, "kind": kind, "component": component,
            "host": socket.gethostname(), "pid": os.getpid(), "worker": process_identity(os.getpid()),
            "run_owner": run_owner, "started": _iso(now), "updated": _iso(now), "progress_at": _iso(now),
            "state": "running", "operation": None, "step": None, "done_bytes": 0, "written_bytes": 0,
            "total_bytes": None, "rate_bps": 0.0, "eta_s": None, "rows": None, "events": None,
            "interval_s": self.interval_s,
        }

    def open(self) -> RunStatus:
        """Create the folder and write the first status; returns ``self``. The first progress
        report is written at once (not throttled by this first write)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._write(time.time())
            self._last_write = 0.0
        return self

    def report(self, p: Progress) -> None:
        """Record one progress report; unless ``deferred``, write the file if ``write_every_s`` has passed."""
        now = time.time()
        with self._lock:
            op = self._ops.setdefault(p.operation, {"started": now - p.elapsed_s})
            moved = p.done_bytes > op.get("done_bytes", 0)
            op.update(done_bytes=p.done_bytes, written_bytes=p.written_bytes, total_bytes=p.total_bytes,
                      rate_bps=round(p.rate_bps, 1), eta_s=None if p.eta_s is None else round(p.eta_s, 1),
                      final=p.final)
            if moved:
                self.data["progress_at"] = _iso(now)
            self._select_primary()
            self._dirty = True
            if not self.deferred and self._write_due(now):
                self._write(now)

    def flush(self) -> None:
        """Write what was recorded since the last write once ``write_every_s`` has passed, and a
        heartbeat once ``interval_s`` has passed without a write (the writer of a ``deferred`` run)."""
        now = time.time()
        with self._lock:
            if (self._dirty and self._write_due(now)) or now - self._last_write >= self.interval_s:
                self._write(now)

    def _write_due(self, now: float) -> bool:
        return now - self._last_write >= self.write_every_s * (1.0 - WRITE_EARLY_SHARE)

    def set_step(self, step: Optional[str]) -> None:
        """The current step, e.g. ``table shop.orders`` (a name, never a value)."""
        with self._lock:
            if step != self.data.get("step"):
                self.data["step"] = step
                self.data["progress_at"] = _iso(time.time())
                self._dirty = True

    def set_counts(self, rows: Optional[int] = None, events: Optional[int] = None) -> None:
        """Rows or binlog events done so far, where the engine knows them."""
        with self._lock:
            if rows is not None:
                self.data["rows"] = int(rows)
            if events is not None:
                self.data["events"] = int(events)
            self._dirty = True

    def heartbeat(self) -> None:
        """Rewrite the file when nothing was written for ``interval_s`` (shows the run lives)."""
        now = time.time()
        with self._lock:
            if not self._closed and now - self._last_write >= self.interval_s:
                self._write(now)

    def mark(self, state: str, reason: str = "") -> None:
        """Write a last status with ``state`` (e.g. ``abandoned``) and why; the file stays."""
        with self._lock:
            self.data["state"] = state
            if reason:
                self.data["reason"] = reason
            self._write(time.time())
            self._closed = True
        _unlink_quietly(poll_path(self.path))

    def close(self) -> None:
        """The run ended (either way): remove the file (and the controller's poll file)."""
        with self._lock:
            self._closed = True
            _unlink_quietly(self.path)
        _unlink_quietly(poll_path(self.path))

    def _select_primary(self) -> None:
        """Top-level figures: the earliest-started operation still running (else the latest)."""
        running = [(v["started"], k) for k, v in self._ops.items() if not v.get("final")]
        name = min(running)[1] if running else max((v["started"], k) for k, v in self._ops.items())[1]
        op = self._ops[name]
        self.data.update(operation=name, **{k: op[k] for k in ("done_bytes", "written_bytes", "total_bytes",
                                                               "rate_bps", "eta_s")})

    def _write(self, now: float) -> None:
        if self._closed:
            return
        self.data["updated"] = _iso(now)
        self.data["operations"] = {k: {f: v for f, v in op.items() if f != "started"} for k, op in self._ops.items()}
        try:
            _atomic_write_json(self.path, self.data)
            self._last_write = now
            self._dirty = False
        except OSError:
            get_logger("runstatus").warning("cannot write the status file %s", self.path)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def poll_path(status_path: Path) -> Path:
    """The poll file beside a status file: ``<store>/progress/<id>.poll``."""
    return status_path.with_suffix(POLL_SUFFIX)


def record_poll(status_path: Path, beat_s: float) -> None:
    """The controller's poll of the run whose status file is ``status_path`` (written on the run's
    host by ``lifeboat.dr.run_progress``): now, and that the next poll comes within ``beat_s``."""
    _atomic_write_json(poll_path(status_path), {"polled": time.time(), "beat_s": float(beat_s)})


def polls_stopped(status_path: Path, now: Optional[float] = None) -> Optional[str]:
    """Why the controller polling this run is taken as gone, or ``None``.

    ``None`` while no poll was ever recorded (the run is not tethered: nobody promised to poll,
    e.g. a module run without ``run_progress``) or while the last poll is at most its promised
    beat + :data:`POLL_GRACE_S` old; the poll file's own clock is this host's (the poller runs here).
    """
    try:
        data = json.loads(poll_path(status_path).read_text(encoding="utf-8"))
        polled, beat_s = float(data["polled"]), float(data["beat_s"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    age = (time.time() if now is None else now) - polled
    if age <= beat_s + POLL_GRACE_S:
        return None
    return f"its controller's polls stopped {age:.0f} s ago (promised every {beat_s:.0f} s)"


def end_this_run(reason: str, exit_code: int = 75) -> None:
    """Stop this process now: mark the status file ``abandoned`` and ``os._exit``.

    Used when the controller is gone: locks (``flock``) die with the process, a lease whose
    run owner is dead is stale at once, and an unpublished set never looks complete; child
    processes (a dump client) see their pipes close and end too. Before exiting it calls every
    :func:`on_abandon` callback with ``reason`` (their Lifeboat and OS errors logged, not raised).
    """
    for callback in list(_ON_ABANDON):
        try:
            callback(reason)
        except (LifeboatError, OSError) as err:  # the process exits next whatever happens
            get_logger("runstatus").warning("an abandon callback failed: %s", err)
    status = _ACTIVE
    if status is not None:
        status.mark("abandoned", reason)
    sys.stderr.write(f"lifeboat: {reason}\n")
    os._exit(exit_code)


def on_abandon(callback: Callable[[str], None]) -> Callable[[], None]:
    """Have :func:`end_this_run` call ``callback(reason)`` before this process stops itself; returns
    the function that cancels it. The callback runs on the watchdog thread while engine threads may
    hold their own locks: it must take none of them, and only wait for bounded times."""
    _ON_ABANDON.append(callback)

    def cancel() -> None:
        if callback in _ON_ABANDON:
            _ON_ABANDON.remove(callback)
    return cancel


# Runs that stop themselves when their controller dies: writers of the store and readers, and
# off-site copies (a copy is published only once complete and verified).
# A restore or PITR runs to its end instead - stopping it half-way would leave a
# half-restored server with nobody to roll it back.
STOP_WITH_OWNER = ("backup", "archive", "verify", "copy")


def _watch(status: RunStatus, stop: threading.Event, check_s: float) -> None:
    """The writer and watchdog of an active run: wakes every ``write_every_s`` to write what was
    reported since (:meth:`RunStatus.flush`: so the file is at most that stale), and checks the
    run owner every ``check_s`` - no more often, whatever the progress interval (each check
    reads /proc and the boot id). An owner this host cannot judge (on another machine) is checked
    by its polls instead (:func:`polls_stopped`)."""
    owner = status.data.get("run_owner") if status.data.get("kind") in STOP_WITH_OWNER else None
    next_check = time.monotonic() + check_s
    while not stop.wait(max(0.05, min(status.write_every_s, next_check - time.monotonic()))):
        if owner and time.monotonic() >= next_check:
            next_check = time.monotonic() + check_s
            state = owner_state(owner)
            if state == "dead":
                end_this_run(f"the controller that drives this run ({describe_owner(owner)}) is gone; stopping")
            stopped = polls_stopped(status.path) if state == "unknown" else None
            if stopped:
                end_this_run(f"the controller that drives this run ({describe_owner(owner)}) is gone: "
                             f"{stopped}; stopping")
        status.flush()


class ActiveRun:
    """Handle of :func:`activate_run_status`: :meth:`end` stops the watchdog and removes the file."""

    def __init__(self, status: RunStatus, stop: threading.Event, thread: threading.Thread) -> None:
        self.status, self._stop, self._thread = status, stop, thread

    def end(self) -> None:
        global _ACTIVE
        self._stop.set()
        self._thread.join(timeout=2 * OWNER_CHECK_S)
        self.status.close()
        if _ACTIVE is self.status:
            _ACTIVE = None
            set_progress_sink(None)


def activate_run_status(store: Union[str, Path], run_id: str, *, kind: str, component: str,
                        run_owner: Optional[dict[str, Any]] = None, interval_s: float = DEFAULT_INTERVAL_S,
                        owner_check_s: float = OWNER_CHECK_S) -> ActiveRun:
    """Open the status file of this process's run, route :func:`log_progress` reports to it and
    start its watchdog thread, the file's only writer (what was reported, within ``interval_s / 2``;
    a heartbeat; exit when ``run_owner`` is provably gone, checked every ``owner_check_s``).
    Call ``.end()``."""
    global _ACTIVE
    status = RunStatus(store, run_id, kind=kind, component=component, run_owner=run_owner,
                       interval_s=interval_s, deferred=True).open()
    stop = threading.Event()
    thread = threading.Thread(target=_watch, args=(status, stop, owner_check_s), name="lifeboat-progress",
                              daemon=True)
    _ACTIVE = status
    set_progress_sink(status)
    thread.start()
    return ActiveRun(status, stop, thread)


def _parse_iso(text: Any) -> Optional[float]:
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()  # noqa: UP017
    except (TypeError, ValueError):
        return None


def judge_run(data: dict[str, Any], now: Optional[float] = None, stall_after_s: Optional[float] = None) -> dict:
    """``data`` (one status file) with ``liveness``: ``running``, ``stalled`` (alive, no progress
    for ``stall_after_s``, default 4 x its interval and at least 60 s), ``dead`` (its worker is
    gone), ``abandoned`` (it stopped itself) or ``unknown`` (worker on another host), plus
    ``idle_s`` (seconds since progress last moved) and ``age_s`` (since the last write)."""
    now = time.time() if now is None else now
    out = dict(data)
    moved = _parse_iso(data.get("progress_at"))
    written = _parse_iso(data.get("updated"))
    out["idle_s"] = None if moved is None else round(max(0.0, now - moved), 1)
    out["age_s"] = None if written is None else round(max(0.0, now - written), 1)
    limit = stall_after_s if stall_after_s is not None else max(60.0, 4 * float(data.get("interval_s") or 15))
    out["stall_after_s"] = limit
    worker = owner_state(data.get("worker"))
    if data.get("state") not in (None, "running"):
        out["liveness"] = str(data.get("state"))
    elif worker == "dead":
        out["liveness"] = "dead"
    elif out["idle_s"] is not None and out["idle_s"] > limit:
        out["liveness"] = "stalled"
    else:
        out["liveness"] = "running" if worker == "alive" else "unknown"
    return out


def read_run_statuses(store: Union[str, Path], now: Optional[float] = None,
                      stall_after_s: Optional[float] = None) -> list[dict[str, Any]]:
    """Every status file of ``store`` (oldest first), judged by :func:`judge_run`; unreadable
    files are skipped (a writer replaces them atomically, so that is only a foreign file)."""
    folder = progress_dir(store)
    runs = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            runs.append(judge_run(data, now, stall_after_s))
    return sorted(runs, key=lambda r: str(r.get("started")))


def describe_run(run: dict[str, Any]) -> str:
    """One line: ``mysql backup [running]: mysql dump: 12.0 MiB of 40.0 MiB at 6.0 MiB/s, ETA 5 s
    (table shop.orders)``."""
    p = Progress(str(run.get("operation") or "starting"), int(run.get("done_bytes") or 0),
                 int(run.get("written_bytes") or 0), run.get("total_bytes"), 0.0)
    text = f"{p.operation}: {human_bytes(p.done_bytes)}"
    estimate_holds = bool(p.total_bytes) and p.done_bytes <= int(p.total_bytes or 0)
    if estimate_holds:
        text += f" of {human_bytes(int(p.total_bytes))} ({100.0 * p.done_bytes / int(p.total_bytes):.0f} %)"
    elif p.total_bytes:
        text += f" (more than the {human_bytes(int(p.total_bytes))} estimated)"
    text += f" at {human_bytes(int(run.get('rate_bps') or 0))}/s"
    if run.get("eta_s") is not None and estimate_holds:
        text += f", ETA {float(run['eta_s']):.0f} s"
    for key in ("rows", "events"):
        if run.get(key) is not None:
            text += f", {run[key]} {key}"
    if run.get("step"):
        text += f" ({run['step']})"
    head = f"{run.get('component')} {run.get('kind')}"
    if run.get("liveness"):
        head += f" [{run['liveness']}]"
    return f"{head}: {text}"
