# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One backup set written by several module runs: open, write a component, publish, abort.

The playbooks drive a full-system backup as separate Ansible tasks, possibly on
different hosts and in parallel. This module gives them the steps, built on
:class:`catalog.Store` (``begin_set`` / ``resume_set`` / ``detach`` / ``publish``):

1. :func:`open_multi_set` -- begin the set (takes the store's ``create`` lock, kept as
   a lease while the set is detached), record who drives it, detach.
2. :func:`write_component` -- in each component's task: resume the set as that
   component's writer, run the engine's ``backup_<x>_into(writer, ...)``, record the
   capture window, detach. Connection-level failures are retried (:mod:`retry`); a
   retry starts the component afresh (its earlier files are discarded).
3. :func:`publish_multi_set` -- refuse if a component wrote nothing, else publish
   (quick read-back verification, atomic rename). Or :func:`abort_multi_set`.
   The ``*_recorded`` variants also append the set's one ``backup`` job record (publish
   ok/failed; an abort replaces it with ``failed``) and an audit record (:mod:`oplog`).

:func:`resolve_set` picks the set a restore or verification uses by default.
Times are UTC ISO 8601 strings ending in ``Z``; sizes are bytes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.store import oplog
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import SetInfo, Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import (
    KNOWN_COMPONENTS,
    METADATA_COMPONENT,
    SET_STATE_FILE,
    STATE_DIR,
    VERIFICATION_DIR,
    format_time,
    utc_now,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet
from ansible_collections.lifeboat.dr.plugins.module_utils.store.writer import DEFAULT_LEASE_S
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    BackupFailed,
    ConfigError,
    LifeboatError,
    LockHeld,
    NotFound,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger
from ansible_collections.lifeboat.dr.plugins.module_utils.util.retry import retry

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing

log = get_logger("orchestrate")

PURPOSE_JSON = "purpose.json"
PURPOSE_BACKUP = "backup"
PURPOSE_PRE_RESTORE = "pre-restore"
CAPTURE_KEY = "lifeboat_capture"


def parse_components(value: Any, allowed: tuple[str, ...] = KNOWN_COMPONENTS) -> list[str]:
    """``"mysql, redis"`` or ``["mysql", "redis"]`` -> ``["mysql", "redis"]`` (order of ``allowed``,
    duplicates dropped). :class:`ConfigError` for an empty list or an unknown name."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    names = {str(i).strip() for i in items if str(i).strip()}
    unknown = sorted(names - set(allowed))
    if unknown:
        raise ConfigError(f"unknown component(s) {', '.join(unknown)}", hint=f"use a comma list of {','.join(allowed)}")
    if not names:
        raise ConfigError("no component given", hint=f"use a comma list of {','.join(allowed)}")
    return [c for c in allowed if c in names]


def set_type_for(components: list[str]) -> str:
    """``full`` for several components, else the one component's name (a set type)."""
    return components[0] if len(components) == 1 else "full"


def open_multi_set(store_root: str, components: list[str], keyring: KeyRing, *, codec: Any = None,
                   owner: Optional[str] = None, purpose: str = PURPOSE_BACKUP,
                   note: Optional[dict[str, Any]] = None, lease_s: float = DEFAULT_LEASE_S,
                   run_owner: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Begin a set for ``components`` and detach it; returns ``{set_id, type, components, partial_path}``.

    ``purpose`` (``backup`` or ``pre-restore``) and ``note`` are stored as the
    plaintext ``metadata/purpose.json`` (no secrets). ``run_owner``: the controller's
    identity (:func:`locks.process_identity`), recorded with the set's lease so that a
    dead controller's set is taken over at once. Raises :class:`LockHeld` when another
    live (or not yet expired) run is creating a set in the store; a stale lease is taken
    over (its partial set removed and recorded, see :meth:`catalog.Store.lock`).
    """
    store = Store(store_root)
    writer = store.begin_set(set_type_for(components), components, keyring, codec=codec, owner=owner,
                             lease_s=lease_s, run_owner=run_owner)
    with writer:
        writer.write_json(METADATA_COMPONENT, PURPOSE_JSON,
                          {"purpose": purpose, "owner": owner, "components": components, **(note or {})})
        writer.detach()
    return {"set_id": writer.set_id, "type": writer.set_type, "components": components,
            "partial_path": str(writer.partial_path)}


def open_multi_set_recorded(store_root: str, components: list[str], keyring: KeyRing, **kwargs: Any) -> dict[str, Any]:
    """:func:`open_multi_set`; a backup refused because the ``create`` lock is held or leased
    (:class:`LockHeld`) is recorded as a ``refused`` backup job (and audit record) before
    the error propagates, so ``lifeboat jobs`` and ``lifeboat health`` count it."""
    try:
        return open_multi_set(store_root, components, keyring, **kwargs)
    except LockHeld as err:
        oplog.record_refused(store_root, err, components=components, run_owner=kwargs.get("run_owner"))
        raise


def _component_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def write_component(store_root: str, set_id: str, component: str, keyring: KeyRing,
                    write: Callable[[Any], dict[str, Any]], *, attempts: int = 3,
                    backoff: float = 2.0) -> dict[str, Any]:
    """Write ``component`` into the open set ``set_id`` with ``write(set_writer) -> summary``.

    The set is resumed as that component's writer (an earlier attempt's files are
    discarded), ``write`` runs, the capture window ``{started, finished}`` is added to
    the component metadata (key ``lifeboat_capture``) and the writer detaches. A
    retryable (connection-level) failure repeats the whole step up to ``attempts``
    times with exponential ``backoff`` seconds; any other failure discards this
    component's work (the set stays partial) and is raised.
    Returns the summary plus ``set_id``, ``component``, ``stored_bytes`` (this
    component's files), ``duration_s``, ``attempts_used``, ``capture``.
    """
    store = Store(store_root)
    tries = {"n": 0}

    def once() -> dict[str, Any]:
        tries["n"] += 1
        started_mono = time.monotonic()
        started = format_time(utc_now())
        with store.resume_set(set_id, keyring, component=component) as writer:
            summary = write(writer)
            capture = {"started": started, "finished": format_time(utc_now())}
            writer.set_component_metadata(component, {CAPTURE_KEY: capture})
            writer.detach()
        result = dict(summary or {})
        result.update(set_id=set_id, component=component, capture=capture,
                      duration_s=round(time.monotonic() - started_mono, 3))
        return result

    result = retry(once, attempts=attempts, backoff=backoff, what=f"{component} backup into set {set_id}")
    result["attempts_used"] = tries["n"]
    result["stored_bytes"] = _component_bytes(store.partial_root / set_id / component)
    return result


def written_components(store_root: str, set_id: str) -> dict[str, int]:
    """Per component of the open set, the number of artifacts + files its writers recorded so far."""
    folder = Store(store_root).partial_root / set_id / STATE_DIR
    counts: dict[str, int] = {}
    for path in sorted(folder.glob("writer-*.json")):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for record in state.get("artifacts", []) + state.get("files", []):
            counts[record["component"]] = counts.get(record["component"], 0) + 1
    return counts


def missing_components(store_root: str, set_id: str) -> list[str]:
    """Components the open set lists but no writer has written (yet)."""
    info = json.loads((Store(store_root).partial_root / set_id / STATE_DIR / SET_STATE_FILE)
                      .read_text(encoding="utf-8"))
    counts = written_components(store_root, set_id)
    return [c for c in info["components"] if not counts.get(c)]


def publish_multi_set(store_root: str, set_id: str, keyring: KeyRing, *, quick_verify: bool = True,
                      wait_s: float = 30.0) -> dict[str, Any]:
    """Publish the open set ``set_id`` after every component was written.

    :class:`BackupFailed` (set left partial, for :func:`abort_multi_set`) when a
    component wrote nothing. With ``quick_verify`` every artifact is read back and
    authenticated before the atomic rename; the passing report is stored as a
    verification record. Returns :func:`set_summary` plus ``verification``.
    """
    store = Store(store_root)
    if not (store.partial_root / set_id).is_dir():
        raise NotFound(f"no open backup set {set_id} in {store_root}", hint="open one first (lifeboat.dr.backup_set)")
    missing = missing_components(store_root, set_id)
    if missing:
        raise BackupFailed(f"backup set {set_id}: component(s) {', '.join(missing)} wrote nothing",
                           hint="see the failed component task above; the set is not published")
    with store.resume_set(set_id, keyring) as writer:
        writer.publish(quick_verify=quick_verify, wait_s=wait_s)
    summary = set_summary(store.open_set(set_id))
    report = writer.verification
    records = sorted((store.root / VERIFICATION_DIR / set_id).glob("*.json"))
    summary["verification"] = {"mode": "quick", "ok": bool(report and report.get("ok")),
                               "record": str(records[-1]) if records else None} if quick_verify else None
    return summary


def abort_multi_set(store_root: str, set_id: str, reason: str) -> dict[str, Any]:
    """Remove the open set ``set_id`` (nothing is published); ``changed`` False if it was already gone."""
    try:
        Store(store_root).abort_set(set_id, reason, wait_s=10.0)
    except NotFound:
        return {"set_id": set_id, "changed": False, "aborted": False}
    return {"set_id": set_id, "changed": True, "aborted": True, "reason": reason}


def open_set_state(store_root: str, set_id: str) -> dict[str, Any]:
    """The open set's state (``started``, ``components``, ...); ``{}`` when unreadable or gone."""
    path = Store(store_root).partial_root / set_id / STATE_DIR / SET_STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _set_record_fields(store_root: str, set_id: str) -> dict[str, Any]:
    """Start time, job id (one per set) and components of the open set, for its job record."""
    state = open_set_state(store_root, set_id)
    started = state.get("started") or format_time(utc_now())
    return {"start": started, "job_id": oplog.set_job_id(set_id, started), "backup_id": set_id,
            "components": list(state.get("components") or [])}


def publish_multi_set_recorded(store_root: str, set_id: str, keyring: KeyRing, *, quick_verify: bool = True,
                               wait_s: float = 30.0) -> dict[str, Any]:
    """:func:`publish_multi_set`, recorded as the set's ``backup`` job (start = the set's
    open time, so ``duration_s`` spans the whole backup) plus an audit record."""
    return oplog.run_recorded(store_root, "backup", lambda handle: publish_multi_set(
        store_root, set_id, keyring, quick_verify=quick_verify, wait_s=wait_s), target=set_id,
        describe=oplog.backup_fields, **_set_record_fields(store_root, set_id))


def abort_multi_set_recorded(store_root: str, set_id: str, reason: str) -> dict[str, Any]:
    """:func:`abort_multi_set`; when a set was removed, its ``backup`` job record becomes
    ``failed`` with ``aborted: <reason>`` (same job id as its publish)."""
    fields = _set_record_fields(store_root, set_id)
    result = abort_multi_set(store_root, set_id, reason)
    if result.get("aborted"):
        oplog.record_operation(store_root, "backup", start=fields["start"], result="failed", target=set_id,
                               error=f"aborted: {reason}"[:500], job_id=fields["job_id"],
                               backup_id=fields["backup_id"], components=fields["components"])
    return result


def capture_windows(backup_set: BackupSet) -> dict[str, dict[str, str]]:
    """Per component, the ``{started, finished}`` window recorded by :func:`write_component`."""
    windows = {}
    for component in backup_set.components:
        capture = backup_set.component_metadata(component).get(CAPTURE_KEY)
        if capture:
            windows[component] = capture
    return windows


def purpose_of(backup_set: BackupSet) -> Optional[dict[str, Any]]:
    """The set's ``metadata/purpose.json`` (``None`` when the set has none)."""
    if not any(f["path"] == f"{METADATA_COMPONENT}/{PURPOSE_JSON}" for f in backup_set.files()):
        return None
    try:
        return backup_set.read_json(METADATA_COMPONENT, PURPOSE_JSON)
    except LifeboatError:
        return None


def set_summary(backup_set: BackupSet) -> dict[str, Any]:
    """Id, type, components, times, sizes (total and per component), capture windows, purpose."""
    manifest = backup_set.manifest
    per_component: dict[str, dict[str, int]] = {}
    for record in manifest["artifacts"]:
        entry = per_component.setdefault(record["component"], {"stored_bytes": 0, "plaintext_bytes": 0})
        entry["stored_bytes"] += record["stored_size"]
        entry["plaintext_bytes"] += record["plaintext_size"]
    purpose = purpose_of(backup_set)
    return {"set_id": backup_set.set_id, "type": backup_set.type, "components": backup_set.components,
            "path": str(backup_set.path), "start_time": manifest["start_time"], "end_time": manifest["end_time"],
            "stored_bytes": manifest["totals"]["stored_bytes"],
            "plaintext_bytes": manifest["totals"]["plaintext_bytes"],
            "per_component": per_component, "capture": capture_windows(backup_set),
            "methods": methods_of(backup_set), "purpose": (purpose or {}).get("purpose")}


def methods_of(backup_set: BackupSet) -> dict[str, str]:
    """Per component, the backup method its engine recorded (``physical`` for a mariabackup set;
    components that record none are left out)."""
    return {c: str(backup_set.component_metadata(c)["method"]) for c in backup_set.components
            if backup_set.component_metadata(c).get("method")}


def _is_kept_aside_copy(backup_set: BackupSet) -> bool:
    """A set an engine saved automatically before restoring over live data (e.g. Vault's keep-aside)."""
    return any(backup_set.component_metadata(c).get("kept_aside_before") for c in backup_set.components)


def resolve_set(store_root: str, components: list[str], backup_id: Optional[str] = None, *,
                want: str = "restorable") -> dict[str, Any]:
    """The set to use: ``backup_id`` if given (checked to hold ``components``), else the newest fitting one.

    ``want``: ``restorable`` -- newest published set holding every component whose
    latest verification did not fail, skipping pre-restore safety copies and
    engine keep-aside copies; ``unverified_full`` -- like ``restorable`` but only
    sets without a passing full verification (for verify.yml). Returns
    :func:`set_summary` plus ``status`` and ``verified_mode``. :class:`NotFound` if none.
    """
    store = Store(store_root)
    if backup_id and backup_id != "latest":
        chosen = store.open_set(backup_id)
        lacking = [c for c in components if c not in chosen.components]
        if lacking:
            raise NotFound(f"set {backup_id} holds {', '.join(chosen.components)}, not {', '.join(lacking)}",
                           hint="pick a set holding every component asked for, or narrow components=")
        info = next((i for i in store.list_sets() if i.set_id == backup_id), None)
        return _with_status(set_summary(chosen), info)
    for info in reversed(store.list_sets()):
        if not set(components) <= set(info.components) or info.status == "failed" or info.type == "binlog":
            continue
        if want == "unverified_full" and info.verified_mode == "full":
            continue
        candidate = BackupSet(info.path)
        if _is_kept_aside_copy(candidate) or (purpose_of(candidate) or {}).get("purpose") == PURPOSE_PRE_RESTORE:
            continue
        return _with_status(set_summary(candidate), info)
    what = "without a full verification " if want == "unverified_full" else ""
    raise NotFound(f"no usable backup set {what}holding {', '.join(components)} in {store_root}",
                   hint="run playbooks/backup.yml first, or name one with -e backup_id=<set id>")


def _with_status(summary: dict[str, Any], info: Optional[SetInfo]) -> dict[str, Any]:
    summary["status"] = info.status if info else None
    summary["verified_mode"] = info.verified_mode if info else None
    return summary
