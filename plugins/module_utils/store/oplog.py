# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Operations log: every module run of backup / verify / restore / PITR / binlog archive
/ prune leaves one job record (:mod:`jobs`) and one audit record (:mod:`audit`).

Contracts:

* :func:`run_recorded` runs the operation and then appends its job record (``ok``, or
  ``failed`` with ``<ErrorType>: <message>``) and an audit record (actor = OS user, host,
  AWX job id from ``AWX_JOB_ID``/``TOWER_JOB_ID``). The operation's exception propagates
  unchanged; its result is returned unchanged.
* Writing the history or the trail never fails the operation: any error is logged as a
  warning (and so ends up in the module's ``log``).
* Check mode writes nothing. Nothing is written when the store folder does not exist
  (a mistyped store path is not created by a failing run).
* Records carry no secrets (:func:`audit.redact` applies to details).
* The ``*_fields`` functions turn an engine's result into record fields: ``backup_id``,
  ``components``, ``sizes`` (bytes) and details. Restore details carry ``verified``
  (``True`` only when the restore's own check passed: MySQL rows/checksums, Redis key
  counts, files SHA-256, Vault unsealed + token + check path) and ``kept_aside`` (a list
  of absolute ``*.lbprev-*`` paths, ``<db>__lbprev_*`` schema names and kept-aside Vault
  set ids), the names :mod:`retention` reads before removing kept-aside data.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit, jobs
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import parse_time, utc_now
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

log = get_logger("oplog")

AUDIT_DETAIL_KEYS = ("mode", "components", "verified", "kept_aside", "target_description", "identity",
                     "deleted_sets", "taken_over", "taken_over_by", "run_owner", "blocked_by_set")

Action = Callable[[jobs.JobHandle], dict[str, Any]]
Describe = Callable[[dict[str, Any]], dict[str, Any]]


def store_exists(store: Union[str, Path, None]) -> bool:
    """True when ``store`` names an existing folder."""
    return bool(store) and Path(str(store)).is_dir()


def named_set(value: Optional[str]) -> Optional[str]:
    """``value`` unless it is empty or ``latest`` (the set is then only known from the result)."""
    return None if not value or value == "latest" else value


def set_job_id(set_id: str, started: Any) -> str:
    """The job id of the backup of set ``set_id`` (same for its publish and its abort, so the
    history holds one record per set): ``job_<start stamp>Z_<8 hex of the set id>``."""
    when = parse_time(started) if isinstance(started, str) else started
    return f"job_{when.strftime('%Y%m%dT%H%M%SZ')}_{hashlib.sha256(set_id.encode('utf-8')).hexdigest()[:8]}"


def record_operation(store: Union[str, Path], kind: str, *, start: Any, result: str, job_id: Optional[str] = None,
                     error: Optional[str] = None, target: str = "", **fields: Any) -> Optional[dict[str, Any]]:
    """Append the job record and its audit record; returns the job record, ``None`` when it
    could not be written (logged) or the store does not exist. Never raises."""
    if not store_exists(store):
        log.warning("no job/audit record for this %s: store %s does not exist", kind, store)
        return None
    record = None
    try:
        record = jobs.record_job(store, kind, start=start, result=result, error=error, job_id=job_id, **fields)
    except Exception as err:  # noqa: BLE001 - the history must never fail the operation
        log.warning("could not append the %s job record to %s: %s", kind, jobs.history_path(store), err)
    details = {k: fields[k] for k in AUDIT_DETAIL_KEYS if fields.get(k) not in (None, [], {})}
    try:
        audit.safe_append(store, kind, target or str(fields.get("backup_id") or ""), result,
                          job_id=record["id"] if record else job_id, error=error, **details)
    except Exception as err:  # noqa: BLE001 - the trail must never fail the operation
        log.warning("could not append the %s audit record to %s: %s", kind, audit.audit_path(store), err)
    return record


def record_takeover(store: Union[str, Path], set_id: str, info: dict[str, Any], lease: dict[str, Any],
                    reason: str) -> Optional[dict[str, Any]]:
    """Record that the partial set ``set_id`` of a dead (or silent) run was removed because its
    lease was taken over: its ``backup`` job record (same job id as its publish would have had)
    becomes ``failed`` with ``aborted: taken over ...``, and the audit trail says so, naming
    the dead run's owner and this process as the one that took over. Never raises."""
    started = info.get("started") or lease.get("started") or utc_now()
    taker = {"host": socket.gethostname(), "pid": os.getpid()}
    return record_operation(
        store, "backup", start=started, result="failed", target=set_id, job_id=set_job_id(set_id, started),
        error=f"aborted: taken over, {reason}"[:500], backup_id=set_id,
        components=list(info.get("components") or []), taken_over=True, taken_over_by=taker,
        run_owner=lease.get("run_owner"), owner=lease.get("owner"), lease_until=lease.get("lease_until"))


def record_refused(store: Union[str, Path], err: BaseException, *, components: Optional[list[str]] = None,
                   run_owner: Optional[dict[str, Any]] = None) -> Optional[dict[str, Any]]:
    """Record a backup refused because the store's ``create`` lock is held or leased
    (:class:`errors.LockHeld`): a ``backup`` job with result ``refused``, the error, and
    ``blocked_by_set`` (the set holding the lease, if any). Never raises."""
    holder = (getattr(err, "details", None) or {}).get("holder") or {}
    return record_operation(store, "backup", start=utc_now(), result="refused", error=describe_error(err),
                            components=list(components or []), blocked_by_set=holder.get("set_id"),
                            blocked_by_owner=holder.get("owner"), run_owner=run_owner)


def describe_error(err: BaseException) -> str:
    """``<ExceptionType>: <message>`` (at most 500 characters; messages carry no secrets)."""
    return f"{type(err).__name__}: {err}"[:500]


def run_recorded(store: Union[str, Path], kind: str, action: Action, *, check_mode: bool = False,
                 describe: Optional[Describe] = None, target: str = "", start: Any = None,
                 job_id: Optional[str] = None, record_success: bool = True, **fields: Any) -> dict[str, Any]:
    """Run ``action(handle)`` and record it (see the module docstring); returns its result.

    ``handle`` is a :class:`jobs.JobHandle`: the action may ``handle.update(backup_id=...)``
    as soon as it knows, so a failure is recorded against the right set; ``handle.target``
    may be reassigned. ``describe(result)`` adds fields from the result (a failing
    ``describe`` is logged and ignored). ``start``: when the operation really started (a
    datetime or manifest time string; default now). ``record_success=False`` records only
    failures (for engines that record their own successes, e.g. :func:`retention.prune`).
    """
    if check_mode:
        return action(jobs.JobHandle(kind, target))
    handle = jobs.JobHandle(kind, target)
    handle.id = job_id or handle.id
    handle.update(**fields)
    started = start or utc_now()
    try:
        result = action(handle)
    except BaseException as err:
        record_operation(store, kind, start=started, result="failed", job_id=handle.id, error=describe_error(err),
                         target=handle.target, **handle.fields)
        raise
    if record_success:
        if describe is not None:
            try:
                handle.update(**describe(result))
            except Exception as err:  # noqa: BLE001 - describing the result must not fail the operation
                log.warning("could not describe the %s result for the job history: %s", kind, err)
        record_operation(store, kind, start=started, result="ok", job_id=handle.id, target=handle.target,
                         **handle.fields)
    return result


# --------------------------------------------------------------------------- describing results
def backup_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """Fields of a published set (:func:`orchestrate.set_summary` or an engine's ``run_*`` result)."""
    sizes = {k: int(summary[k]) for k in ("stored_bytes", "plaintext_bytes") if isinstance(summary.get(k), int)}
    for component, entry in (summary.get("per_component") or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("stored_bytes"), int):
            sizes[f"{component}_stored_bytes"] = entry["stored_bytes"]
    out: dict[str, Any] = {"backup_id": summary.get("set_id"), "sizes": sizes}
    if summary.get("components"):
        out["components"] = list(summary["components"])
    if isinstance(summary.get("verification"), dict):
        out["verification_ok"] = summary["verification"].get("ok")
    return out


def verify_fields(report: dict[str, Any]) -> dict[str, Any]:
    """Fields of a verification report (:func:`set_verify.verify_set` or the Redis verify)."""
    out: dict[str, Any] = {"backup_id": report.get("set_id"), "mode": report.get("mode"),
                           "verification_ok": report.get("ok"),
                           "failed_checks": len(report.get("failed") or [c for c in report.get("checks") or []
                                                                         if not c.get("ok")]),
                           "record": report.get("record")}
    if report.get("restore_durations_s"):
        out["restore_durations_s"] = report["restore_durations_s"]
    return out


def _abs(path: Any) -> Optional[str]:
    return os.path.abspath(str(path)) if path else None


def mysql_restore_fields(result: dict[str, Any]) -> dict[str, Any]:
    """A MySQL restore that returned passed its row count + checksum check of every table."""
    kept = sorted((result.get("kept_aside") or {}).keys())
    if result.get("broken_datadir_kept_at"):
        kept.append(_abs(result["broken_datadir_kept_at"]))
    if result.get("kept_datadir"):  # a physical restore: the datadir it replaced
        kept.append(_abs(result["kept_datadir"]))
    return {"backup_id": result.get("set_id"), "components": ["mysql"], "verified": True, "kept_aside": kept,
            "tables_restored": len(result.get("verified") or {}), "restore_duration_s": result.get("duration_s")}


def redis_restore_fields(result: dict[str, Any]) -> dict[str, Any]:
    """A Redis restore that returned loaded and matched the backup's key counts per db."""
    kept = [p for p in [_abs(result.get("previous_data"))] if p]
    return {"backup_id": result.get("set_id"), "components": ["redis"], "verified": True, "kept_aside": kept,
            "restore_duration_s": result.get("duration_s")}


def vault_restore_fields(result: dict[str, Any], check_path: Optional[str] = None) -> dict[str, Any]:
    """Verified when the cluster is unsealed, the token works and ``check_path`` (if given) read back."""
    health = result.get("health") or {}
    verified = (result.get("token_valid") is True and health.get("sealed") is not True
                and (not check_path or result.get("check_path_ok") is True))
    kept = [result["kept_aside_set_id"]] if result.get("kept_aside_set_id") else []
    return {"backup_id": result.get("set_id"), "components": ["vault"], "verified": bool(verified),
            "kept_aside": kept}


def files_restore_fields(result: dict[str, Any]) -> dict[str, Any]:
    """A files restore that returned checked every file's SHA-256 against the set's list."""
    folders = result.get("folders") or {}
    kept = [_abs(f["previous_kept_at"]) for f in folders.values() if f.get("previous_kept_at")]
    restored = sum(int(f.get("bytes_restored") or 0) for f in folders.values())
    return {"backup_id": result.get("set_id"), "components": ["app"], "verified": True, "kept_aside": kept,
            "folders": sorted(folders), "sizes": {"restored_bytes": restored}}


def pitr_fields(result: dict[str, Any]) -> dict[str, Any]:
    """Fields of :func:`pitr.execute`: the base set, the stop point, kept-aside schemas."""
    plan = result.get("plan") or {}
    restored = result.get("restore") or {}
    replay = result.get("replay") or {}
    return {"backup_id": (plan.get("base") or {}).get("set_id"), "components": ["mysql"],
            "identity": plan.get("identity"),
            "target_description": (plan.get("resolved_stop") or {}).get("description"),
            "verified": True, "kept_aside": sorted((restored.get("kept_aside") or {}).keys()),
            "sizes": {"replayed_bytes": sum(int(r.get("bytes") or 0) for r in plan.get("replay") or [])},
            "replay_seconds": replay.get("seconds"), "timing": result.get("timing")}


def binlog_archive_fields(result: dict[str, Any]) -> dict[str, Any]:
    """Fields of an archive (or salvage) run: files archived, gaps, generation."""
    archived = result.get("archived") or []
    return {"components": ["mysql"], "identity": result.get("identity"), "generation": result.get("generation"),
            "archived_files": [e.get("file") for e in archived], "gaps": len(result.get("gaps") or []),
            "new_generation": result.get("new_generation"),
            "sizes": {"archived_bytes": sum(int(e.get("size") or 0) for e in archived)}}
