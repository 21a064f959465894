# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Job history: one JSON line per run of backup / verify / restore / prune / drill.

``<store>/jobs/history.jsonl`` (0600; folder 0700). A record::

    {"id": "job_20250129T020000Z_1a2b3c4d", "kind": "backup", "start": "...Z", "end": "...Z",
     "duration_s": 221.8, "result": "ok", "error": null, "sizes": {"stored_bytes": 3000242},
     "backup_id": "full_20250129T020000Z_a1b2c3", "host": "backup1", "components": ["mysql"],
     "details": {...}}

``result`` is ``ok``, ``failed``, ``refused`` (a backup that did not start because the
store's ``create`` lock was held or leased by another run; ``details.blocked_by_set``
names that run's set) or ``running`` (a start record written by :func:`start_job`,
completed later by :func:`finish_job` with the same ``id``; readers merge them, the last
record of an id wins). Appends hold an exclusive ``flock`` and are
fsynced, so concurrent writers never interleave lines. Times are UTC ISO 8601 ``Z``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import format_time, parse_time, utc_now
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, LifeboatError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import make_private_dirs, store_root, write_all  # noqa: F401 - re-exported
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

JOBS_DIR = "jobs"
HISTORY_FILE = "history.jsonl"
KINDS = ("backup", "verify", "restore", "pitr", "prune", "drill", "binlog_archive", "key_rotation")
RESULTS = ("ok", "failed", "running", "refused")

log = get_logger("jobs")


def history_path(store: Union[str, Path]) -> Path:
    """``<store>/jobs/history.jsonl``."""
    return store_root(store) / JOBS_DIR / HISTORY_FILE


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line under an exclusive flock, then fsync (file 0600, folders 0700)."""
    make_private_dirs(path.parent)
    line = (json.dumps(record, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        write_all(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the flock


def new_job_id(when: Optional[Any] = None) -> str:
    """``job_<YYYYmmddTHHMMSS>Z_<8 hex>``."""
    when = when or utc_now()
    return f"job_{when.strftime('%Y%m%dT%H%M%SZ')}_{secrets.token_hex(4)}"


def _check_kind_result(kind: str, result: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown job kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    if result not in RESULTS:
        raise ConfigError(f"unknown job result {result!r}", hint=f"use one of {', '.join(RESULTS)}")


def record_job(store: Union[str, Path], kind: str, *, start: Any, end: Any = None, result: str = "ok",
               sizes: Optional[dict[str, int]] = None, backup_id: Optional[str] = None, host: Optional[str] = None,
               job_id: Optional[str] = None, error: Optional[str] = None, components: Optional[list[str]] = None,
               **details: Any) -> dict[str, Any]:
    """Append a job record and return it.

    ``start``/``end``: aware datetimes or manifest time strings (``end`` defaults to now,
    except for ``result="running"``). ``sizes``: byte counts by name. ``details``: small,
    non-secret JSON data (secret-looking keys are redacted as in the audit trail).
    """
    _check_kind_result(kind, result)
    start_text = start if isinstance(start, str) else format_time(start)
    if end is None and result != "running":
        end = utc_now()
    end_text = None if end is None else (end if isinstance(end, str) else format_time(end))
    duration = (parse_time(end_text) - parse_time(start_text)).total_seconds() if end_text else None
    record = {
        "id": job_id or new_job_id(parse_time(start_text)), "kind": kind, "start": start_text, "end": end_text,
        "duration_s": duration, "result": result, "error": error, "sizes": dict(sizes or {}),
        "backup_id": backup_id, "host": host or socket.gethostname(), "components": list(components or []),
        "awx_job_id": os.environ.get("AWX_JOB_ID") or os.environ.get("TOWER_JOB_ID") or None,
        "details": audit.redact(details),
    }
    append_jsonl(history_path(store), record)
    return record


def start_job(store: Union[str, Path], kind: str, **fields: Any) -> dict[str, Any]:
    """Write a ``running`` record now; finish it with :func:`finish_job` and the returned ``id``."""
    return record_job(store, kind, start=utc_now(), result="running", **fields)


def finish_job(store: Union[str, Path], job_id: str, result: str, **fields: Any) -> dict[str, Any]:
    """Complete the ``running`` record ``job_id`` (its kind and start are taken from it)."""
    started = next((j for j in read_jobs(store) if j.get("id") == job_id), None)
    if started is None:
        raise ConfigError(f"no job {job_id} in {history_path(store)}", hint="pass the id start_job returned")
    merged = {k: v for k, v in started.items() if k in ("sizes", "backup_id", "host", "components")}
    merged.update({k: v for k, v in fields.items() if v is not None})
    details = {**(started.get("details") or {}), **merged.pop("details", {})}
    extra = {k: merged.pop(k) for k in list(merged) if k not in ("sizes", "backup_id", "host", "components",
                                                                 "error", "end")}
    details.update(extra)
    return record_job(store, started["kind"], start=started["start"], result=result, job_id=job_id,
                      **merged, **details)


def read_jobs(store: Union[str, Path], *, limit: Optional[int] = None, kind: Optional[str] = None,
              since: Optional[Any] = None) -> list[dict[str, Any]]:
    """Job records, oldest first, one per id (the last record of an id wins).

    ``limit``: only the newest ``limit``; ``kind``: only that kind; ``since``: only jobs
    that started at or after this aware datetime. Unparseable lines are skipped (logged).
    """
    path = history_path(store)
    if not path.is_file():
        return []
    by_id: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            log.warning("%s line %d is not JSON; skipped", path, number)
            continue
        by_id.pop(record.get("id"), None)
        by_id[record.get("id")] = record
    jobs = sorted(by_id.values(), key=lambda j: (j.get("start") or "", j.get("id") or ""))
    if kind:
        jobs = [j for j in jobs if j.get("kind") == kind]
    if since is not None:
        jobs = [j for j in jobs if j.get("start") and parse_time(j["start"]) >= since]
    return jobs[-limit:] if limit else jobs


class JobHandle:
    """What the code inside :func:`job` may add to its record: ``handle.update(backup_id=..., sizes=...)``."""

    def __init__(self, kind: str, target: str) -> None:
        self.kind = kind
        self.target = target
        self.fields: dict[str, Any] = {}
        self.id = new_job_id()

    def update(self, **fields: Any) -> None:
        """Merge fields into the record (``sizes``, ``backup_id``, ``components``, details)."""
        self.fields.update(fields)


@contextlib.contextmanager
def job(store: Union[str, Path], kind: str, target: str = "", *, audit_trail: bool = True,
        **fields: Any) -> Iterator[JobHandle]:
    """Wrap an operation: on exit append its job record (``ok``, or ``failed`` with the
    error) and, with ``audit_trail``, an audit record. The exception propagates
    unchanged; a failure to write the history is logged, never raised."""
    handle = JobHandle(kind, target)
    handle.update(**fields)
    started = utc_now()
    try:
        yield handle
    except BaseException as err:
        _record_quietly(store, handle, started, "failed", _describe(err))
        raise
    _record_quietly(store, handle, started, "ok", None)


def _describe(err: BaseException) -> str:
    """``<ExceptionType>: <message>`` (at most 500 characters; messages carry no secrets)."""
    return f"{type(err).__name__}: {err}"[:500]


def _record_quietly(store: Union[str, Path], handle: JobHandle, started: Any, result: str,
                    error: Optional[str]) -> None:
    fields = dict(handle.fields)
    try:
        record_job(store, handle.kind, start=started, result=result, error=error, job_id=handle.id, **fields)
    except (OSError, LifeboatError, TypeError, ValueError) as err:
        log.warning("could not append the %s job record to %s: %s", handle.kind, history_path(store), err)
    audit.safe_append(store, handle.kind, handle.target or str(fields.get("backup_id") or ""), result,
                      job_id=handle.id, error=error)
