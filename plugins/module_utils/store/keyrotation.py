# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Key rotation: rewrap every set's data key under a new KEK without rewriting data.

A set's artifacts are encrypted with keys derived from its data key; the manifest holds
that data key only *wrapped* under key-encryption keys (``encryption.data_key_wraps``),
and the manifest MAC deliberately leaves the wraps out (``manifest.manifest_mac``). So a
rotation only rewrites ``backup_manifest.json``: no artifact or JSON file is touched.

Contracts of :func:`rotate_store`:

* Every published set is visited: sets in the store root (full, per-component, kept-aside
  Vault sets) and sets in parent folders (``binlogs/<server_uuid>/g<generation>/``).
  Folders in ``.partial/`` are not published; partial sets whose wraps lack the new key
  are listed in ``pending_partials`` (they publish under the keys they began with: run
  the rotation again after they finish).
* Per set: skip (``already_rotated``) when a wrap under the new key id exists and no wrap
  to retire is left. Else unwrap the data key with ``old_ring`` (old KEK or escrow),
  check the manifest MAC with it, wrap the data key under the new KEK and write the wrap
  list ``[new, *kept]`` where *kept* is every old wrap except the retired key ids (by
  default the old primary; never an escrow key) -- with ``keep_old`` nothing is retired.
* The manifest is replaced atomically (:func:`write_manifest_atomic`: temporary file in
  the set folder, fsync, ``rename(2)``, fsync of the folder): a crash leaves either the
  old or the new manifest, never a mix.
* Afterwards the set must open with **only** the new KEK (unwrap + manifest MAC); if it
  does not, the old manifest bytes are put back and the set is reported failed. With
  ``verify`` the set is then quick-verified with only the new KEK (every chunk
  authenticated, no plaintext written); a failure is reported in ``verify_failed``.
* A set that cannot be rotated (``KeyUnavailable``, ``WrongKey``, ``TamperedData``,
  unknown format, a transit KEK for a set holding Vault) is reported in ``failed_sets`` and
  does not stop the others.
* Locks: the store's ``rotate`` lock (one rotation at a time) and its ``prune`` lock (no
  set is deleted while its manifest is rewritten). Backups and binlog archiving are never
  waited for: a publish only adds new set folders, never modifies one; sets published
  while the rotation runs are picked up by a re-scan at the end (up to
  :data:`MAX_PASSES` passes).
* Outside check mode one job record (kind ``key_rotation``, if the job history knows the
  kind) and one audit record (action ``key_rotation``) are appended, for a failed run too.
  Check mode reads and unwraps only; it writes nothing.
* No key material is returned, logged or recorded: only key ids (public fingerprints).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit, jobs
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import (
    PARTIAL_DIR,
    RESERVED_TOP_NAMES,
    SET_ID_RE,
    SET_STATE_FILE,
    STATE_DIR,
    utc_now,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import (
    MANIFEST_NAME,
    Manifest,
    check_manifest_mac,
    load_manifest,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    IncompleteBackup,
    KeyProblem,
    LifeboatError,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import fsync_dir, write_all
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import ProgressFn, get_logger

ACTION = "key_rotation"
LOCK_KIND = "rotate"
PRUNE_LOCK_KIND = "prune"
MAX_PASSES = 3
MAX_PARENT_DEPTH = 4
TEMP_PREFIX = f".{MANIFEST_NAME}.rotate-"
VAULT_COMPONENT = "vault"

log = get_logger("keyrotation")


# --------------------------------------------------------------------------- finding sets


def published_set_paths(root: Union[str, Path]) -> list[Path]:
    """Every published set folder of the store at ``root``, sorted by path.

    A set folder is a folder named like a set id (``SET_ID_RE``) outside ``.partial``;
    the search descends into other folders (parents such as ``binlogs/<uuid>/g<n>``) up
    to :data:`MAX_PARENT_DEPTH` levels, never into a set, a hidden folder or the
    reserved top-level folders. Whether the folder holds a valid manifest is not checked.
    """
    root = Path(root)
    found: list[Path] = []
    if root.is_dir():
        _collect_sets(root, 0, found, top=True)
    return sorted(found)


def _collect_sets(folder: Path, depth: int, found: list[Path], top: bool = False) -> None:
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or (top and entry.name in RESERVED_TOP_NAMES) or not entry.is_dir() \
                or entry.is_symlink():
            continue
        if SET_ID_RE.match(entry.name):
            found.append(entry)
        elif depth < MAX_PARENT_DEPTH:
            _collect_sets(entry, depth + 1, found)


def pending_partials(root: Union[str, Path], new_key_id: str) -> list[str]:
    """Ids of partial sets (``.partial/<set_id>``) whose data key is not wrapped under ``new_key_id``."""
    partial_root = Path(root) / PARTIAL_DIR
    if not partial_root.is_dir():
        return []
    pending = []
    for entry in sorted(partial_root.iterdir()):
        if not (entry.is_dir() and SET_ID_RE.match(entry.name)):
            continue
        try:
            state = json.loads((entry / STATE_DIR / SET_STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
        if new_key_id not in _wrap_ids(state.get("data_key_wraps") or []):
            pending.append(entry.name)
    return pending


def _wrap_ids(wraps: Iterable[Any]) -> list[str]:
    return [str(w.get("key_id")) for w in wraps if isinstance(w, dict)]


# --------------------------------------------------------------------------- writing


def manifest_bytes(manifest: Manifest) -> bytes:
    """The manifest as Lifeboat writes it: UTF-8 JSON, sorted keys, 2-space indent, final newline."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_manifest_atomic(set_dir: Path, data: bytes) -> None:
    """Replace ``<set_dir>/backup_manifest.json`` by ``data`` atomically.

    Steps: write ``.backup_manifest.json.rotate-<random>`` (0600, O_EXCL) in the set
    folder, fsync it, ``os.replace`` it onto the manifest, fsync the folder. A crash
    before the rename leaves the old manifest intact (plus at most the temporary file,
    which :func:`remove_stale_temps` deletes); after it, the new one. On an error the
    temporary file is removed and the error propagates.
    """
    target = set_dir / MANIFEST_NAME
    tmp = set_dir / f"{TEMP_PREFIX}{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(set_dir)


def remove_stale_temps(set_dir: Path) -> list[str]:
    """Delete temporary manifests an interrupted rotation left in ``set_dir``; return their names."""
    removed = []
    for entry in set_dir.glob(f"{TEMP_PREFIX}*"):
        entry.unlink(missing_ok=True)
        removed.append(entry.name)
    if removed:
        fsync_dir(set_dir)
    return removed


# --------------------------------------------------------------------------- one set


def _entry(set_dir: Path, set_id: Optional[str] = None, **fields: Any) -> dict[str, Any]:
    return {"set_id": set_id or set_dir.name, "path": str(set_dir), **fields}


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".replace("\n", " ")


def _failed(set_dir: Path, err: BaseException, set_id: Optional[str] = None, **fields: Any) -> dict[str, Any]:
    return _entry(set_dir, set_id, status="failed", error=_describe(err), error_type=type(err).__name__,
                  key_problem=isinstance(err, KeyProblem), **fields)


def refuse_transit_for_vault(manifest: Manifest, new_kek: Any) -> None:
    """:class:`ConfigError` when ``new_kek`` is a Vault transit key and the set holds Vault:
    a Vault snapshot must stay readable while that Vault is down."""
    if getattr(new_kek, "kind", None) == "transit" and VAULT_COMPONENT in manifest.get("components", []):
        raise ConfigError(f"set {manifest['id']} holds a Vault snapshot; it may not be wrapped under a Vault "
                          "transit key (it could not be unwrapped while the Vault being restored is down)",
                          hint="rotate Vault sets to a key file (new_key_file), or keep their current key")


def rotation_needed(wraps: list[dict[str, Any]], new_key_id: str, retire: set[str]) -> bool:
    """True unless a wrap under ``new_key_id`` exists and no wrap under a retired key id is left."""
    ids = set(_wrap_ids(wraps))
    return new_key_id not in ids or bool(ids & retire)


def new_wrap_list(new_kek: Any, wraps: list[dict[str, Any]], data_key: bytes,
                  retire: set[str]) -> list[dict[str, Any]]:
    """``[wrap under new_kek, *old wraps except retired ids and the new id]`` (old ones unchanged)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing

    fresh = KeyRing(new_kek).wrap(data_key)
    dropped = set(retire) | {new_kek.key_id}
    return [*fresh, *(dict(w) for w in wraps if w.get("key_id") not in dropped)]


def rotate_set(set_dir: Path, old_ring: Any, new_kek: Any, *, retire: set[str], check_mode: bool = False,
               verify: bool = True, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Rotate one published set (see the module docstring); never raises a :class:`LifeboatError`.

    Returns ``{"set_id", "path", "status", ...}`` with ``status`` one of ``rotated``
    (``would_rotate`` in check mode), ``already_rotated``, ``failed`` (``error``) or
    ``skipped`` (no complete manifest: not a backup). A rotated entry has
    ``removed_key_ids``, ``key_ids`` (after) and ``quick_verify`` (``passed``, ``FAILED: ...``
    or ``skipped``).
    """
    try:
        manifest = load_manifest(set_dir)
    except IncompleteBackup as err:
        return _entry(set_dir, status="skipped", error=_describe(err))
    except LifeboatError as err:
        return _failed(set_dir, err)
    set_id = manifest["id"]
    wraps = manifest["encryption"]["data_key_wraps"]
    if not rotation_needed(wraps, new_kek.key_id, retire):
        return _entry(set_dir, set_id, status="already_rotated", key_ids=_wrap_ids(wraps))
    try:
        refuse_transit_for_vault(manifest, new_kek)
        data_key = old_ring.unwrap(wraps)
        check_manifest_mac(manifest, data_key)
        rewrapped = new_wrap_list(new_kek, wraps, data_key, retire)
    except LifeboatError as err:
        return _failed(set_dir, err, set_id)
    removed = sorted(set(_wrap_ids(wraps)) - set(_wrap_ids(rewrapped)))
    entry = _entry(set_dir, set_id, key_ids=_wrap_ids(rewrapped), removed_key_ids=removed,
                   components=list(manifest["components"]))
    if check_mode:
        return dict(entry, status="would_rotate", quick_verify="skipped")
    return _write_and_check(set_dir, manifest, rewrapped, new_kek, entry, verify, progress)


def _write_and_check(set_dir: Path, manifest: Manifest, rewrapped: list[dict[str, Any]], new_kek: Any,
                     entry: dict[str, Any], verify: bool, progress: Optional[ProgressFn]) -> dict[str, Any]:
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing

    old_bytes = (set_dir / MANIFEST_NAME).read_bytes()
    updated = json.loads(json.dumps(manifest))
    updated["encryption"]["data_key_wraps"] = rewrapped
    remove_stale_temps(set_dir)
    try:
        write_manifest_atomic(set_dir, manifest_bytes(updated))
    except OSError as err:
        return dict(_failed(set_dir, err, entry["set_id"]), error=f"cannot write the manifest: {_describe(err)}")
    new_ring = KeyRing(new_kek)
    try:
        reopened = BackupSet(set_dir)
        reopened.data_key(new_ring)  # unwrap with only the new KEK + manifest MAC
    except (LifeboatError, OSError) as err:
        write_manifest_atomic(set_dir, old_bytes)
        log.error("set %s: the rotated manifest does not open with the new key (%s); old manifest restored",
                  entry["set_id"], err)
        return dict(_failed(set_dir, err, entry["set_id"]),
                    error=f"rotated manifest did not open with the new key, old manifest restored: {_describe(err)}")
    log.info("set %s: data key rewrapped under %s (removed: %s)", entry["set_id"], new_kek.key_id,
             ", ".join(entry["removed_key_ids"]) or "none")
    if not verify:
        return dict(entry, status="rotated", quick_verify="skipped")
    report = reopened.quick_verify(new_ring, progress=progress)
    if report.get("ok"):
        return dict(entry, status="rotated", quick_verify="passed")
    bad = [f"{a['path']}: {a['error']}" for a in report.get("artifacts", []) if not a.get("ok")]
    detail = report.get("error") or "; ".join(bad[:3]) or "verification failed"
    return dict(entry, status="rotated", quick_verify=f"FAILED: {detail}")


# --------------------------------------------------------------------------- a store


def _passes(root: Path) -> Iterator[list[Path]]:
    """The set folders to visit: all of them, then (up to MAX_PASSES - 1 times) any new ones."""
    seen: set[Path] = set()
    for _pass in range(MAX_PASSES):
        fresh = [p for p in published_set_paths(root) if p not in seen]
        if not fresh:
            return
        seen.update(fresh)
        yield fresh


def _check_keys(old_ring: Any, new_kek: Any) -> None:
    if new_kek.key_id in old_ring.key_ids:
        which = "escrow key" if new_kek.key_id != old_ring.primary.key_id else "old key"
        raise ConfigError(f"the new key (key id {new_kek.key_id}) is the {which}; a rotation needs a different key",
                          hint="create a new key with `lifeboat key create FILE`")


def _summary(entries: list[dict[str, Any]], old_ring: Any, new_kek: Any, retire: set[str], keep_old: bool,
             check_mode: bool, partials: list[str]) -> dict[str, Any]:
    by_status: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_status.setdefault(entry["status"], []).append(entry)
    rotated = by_status.get("rotated", []) + by_status.get("would_rotate", [])
    verify_failed = [e["set_id"] for e in rotated if str(e.get("quick_verify", "")).startswith("FAILED")]
    return {
        "changed": bool(rotated), "check_mode": check_mode, "new_key_id": new_kek.key_id,
        "old_key_ids": list(old_ring.key_ids), "retired_key_ids": sorted(retire), "keep_old": keep_old,
        "rotated": rotated, "already_rotated": by_status.get("already_rotated", []),
        "failed_sets": by_status.get("failed", []), "skipped": by_status.get("skipped", []),
        "verify_failed": verify_failed, "pending_partials": partials,
        "ok": not by_status.get("failed") and not verify_failed,
    }


def rotate_store(store: Union[str, Path, Store], old_ring: Any, new_kek: Any, *, keep_old: bool = False,
                 retire_key_ids: Optional[Iterable[str]] = None, check_mode: bool = False, verify: bool = True,
                 lock_wait_s: float = 0.0, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Rewrap the data key of every published set of ``store`` under ``new_kek``.

    ``old_ring``: a :class:`keys.KeyRing` able to unwrap the sets (old KEK and/or escrow).
    ``retire_key_ids``: wraps to drop (default: ``old_ring.primary``'s key id); escrow key
    ids of ``old_ring`` are never retired; ``keep_old`` retires nothing. ``lock_wait_s``:
    seconds to wait for the ``rotate`` and ``prune`` locks (:class:`LockHeld` after that).

    Returns ``{"changed", "ok", "check_mode", "new_key_id", "old_key_ids", "retired_key_ids",
    "keep_old", "rotated", "already_rotated", "failed_sets", "skipped", "verify_failed",
    "pending_partials"}`` (lists of per-set entries from :func:`rotate_set`; in check mode
    ``rotated`` holds the sets that would be rotated). ``ok`` is False when a set failed
    or a rotated set failed its quick verification.
    """
    store = store if isinstance(store, Store) else Store(store)
    if not store.root.is_dir():
        raise ConfigError(f"backup store {store.root} does not exist", hint="check the store path")
    _check_keys(old_ring, new_kek)
    escrow_ids = {k.key_id for k in old_ring.escrow}
    retire = set() if keep_old else set(retire_key_ids if retire_key_ids is not None else [old_ring.primary.key_id])
    retire -= escrow_ids | {new_kek.key_id}
    if check_mode:
        return _rotate_all(store, old_ring, new_kek, retire, keep_old, True, verify, progress)
    started = utc_now()
    try:
        with store.lock(LOCK_KIND, wait_s=lock_wait_s), store.lock(PRUNE_LOCK_KIND, wait_s=lock_wait_s):
            result = _rotate_all(store, old_ring, new_kek, retire, keep_old, False, verify, progress)
    except BaseException as err:
        _record(store, started, None, error=_describe(err), new_key_id=new_kek.key_id)
        raise
    _record(store, started, result)
    return result


def _rotate_all(store: Store, old_ring: Any, new_kek: Any, retire: set[str], keep_old: bool, check_mode: bool,
                verify: bool, progress: Optional[ProgressFn]) -> dict[str, Any]:
    entries = []
    for batch in _passes(store.root):
        for set_dir in batch:
            entry = rotate_set(set_dir, old_ring, new_kek, retire=retire, check_mode=check_mode, verify=verify,
                               progress=progress)
            if entry["status"] in ("failed", "skipped"):
                log.warning("set %s: %s: %s", entry["set_id"], entry["status"], entry.get("error"))
            entries.append(entry)
    partials = pending_partials(store.root, new_kek.key_id)
    if partials:
        log.warning("partial sets %s are being written under the old keys; rotate again after they publish",
                    ", ".join(partials))
    return _summary(entries, old_ring, new_kek, retire, keep_old, check_mode, partials)


def _record(store: Store, started: Any, result: Optional[dict[str, Any]], error: Optional[str] = None,
            **extra: Any) -> None:
    """Append the job and audit records of a run; failures to record are logged, never raised."""
    outcome = "failed" if error or (result and not result["ok"]) else "ok"
    details: dict[str, Any] = dict(extra)
    if result is not None:
        details.update(new_key_id=result["new_key_id"], retired_key_ids=result["retired_key_ids"],
                       keep_old=result["keep_old"],
                       rotated_sets=[e["set_id"] for e in result["rotated"]],
                       already_rotated=len(result["already_rotated"]),
                       failed_sets=[{"set_id": e["set_id"], "error": e.get("error")} for e in result["failed_sets"]],
                       verify_failed=result["verify_failed"], pending_partials=result["pending_partials"])
    if error is None and result is not None and not result["ok"]:
        error = f"{len(result['failed_sets'])} set(s) failed, {len(result['verify_failed'])} failed verification"
    job_id = None
    if ACTION in jobs.KINDS:
        try:
            job_id = jobs.record_job(store.root, ACTION, start=started, result=outcome, error=error, **details)["id"]
        except (OSError, LifeboatError, TypeError, ValueError) as err:
            log.warning("could not append the key rotation job record: %s", err)
    else:
        log.info("job history has no %r kind yet; only the audit record is written", ACTION)
    audit_result = "failed" if outcome == "failed" else ("changed" if result and result["changed"] else "unchanged")
    audit.safe_append(store.root, ACTION, str(store.root), audit_result, job_id=job_id, error=error, **details)


# --------------------------------------------------------------------------- options


def keys_from_options(params: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    """``(old_ring, new_kek, retire_key_ids)`` from module/CLI options.

    Old keys: ``key_file`` (old primary KEK), ``transit_url``/``transit_token``/
    ``transit_mount``/``transit_key`` (old transit KEK), ``escrow_key_file``. New key:
    ``new_key_file``, or ``new_transit_key`` (same Vault as ``transit_url``, mount
    ``new_transit_mount`` or ``transit_mount``). Retired: the old key file's (else the old
    transit key's) id -- nothing when only the escrow key is given -- plus the ids listed
    in ``retire_key_ids``.
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import FileKEK, KeyRing, TransitKEK

    transit = None
    if params.get("transit_url") and params.get("transit_key"):
        transit = {"url": params["transit_url"], "token": params.get("transit_token"),
                   "mount": params.get("transit_mount") or "transit", "key_name": params["transit_key"]}
    if not (params.get("key_file") or transit or params.get("escrow_key_file")):
        raise ConfigError("no old key given: rotation must unwrap each set's data key first",
                          hint="give key_file (the old key), or escrow_key_file if the old key is lost")
    old_ring = KeyRing.from_options(key_file=params.get("key_file"), escrow_key_file=params.get("escrow_key_file"),
                                    transit=transit)
    if params.get("new_key_file") and params.get("new_transit_key"):
        raise ConfigError("give either new_key_file or new_transit_key, not both")
    if params.get("new_key_file"):
        new_kek: Any = FileKEK.load(params["new_key_file"])
    elif params.get("new_transit_key"):
        new_kek = TransitKEK(url=params.get("transit_url") or "", token=params.get("transit_token") or "",
                             mount=params.get("new_transit_mount") or params.get("transit_mount") or "transit",
                             key_name=params["new_transit_key"])
    else:
        raise ConfigError("no new key given", hint="give new_key_file (create one with `lifeboat key create FILE`)")
    retire = [old_ring.primary.key_id] if params.get("key_file") or transit else []
    retire += [str(k) for k in params.get("retire_key_ids") or [] if k not in retire]
    return old_ring, new_kek, retire


def rotate_from_options(params: dict[str, Any], check_mode: bool = False,
                        progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """:func:`rotate_store` with the keys of :func:`keys_from_options` and the options
    ``store``, ``keep_old`` (false), ``verify`` (true), ``lock_wait`` (seconds, 0)."""
    old_ring, new_kek, retire = keys_from_options(params)
    return rotate_store(params["store"], old_ring, new_kek, keep_old=bool(params.get("keep_old")),
                        retire_key_ids=retire, check_mode=check_mode, verify=params.get("verify", True) is not False,
                        lock_wait_s=float(params.get("lock_wait") or 0.0), progress=progress)


def failure_exit_error(result: dict[str, Any]) -> Optional[str]:
    """A one-line description of what went wrong in ``result`` (``None`` when ``ok``)."""
    if result["ok"]:
        return None
    parts = [f"{e['set_id']}: {e.get('error')}" for e in result["failed_sets"][:3]]
    if result["verify_failed"]:
        parts.append(f"quick verification failed after rotation: {', '.join(result['verify_failed'][:3])}")
    more = len(result["failed_sets"]) - 3
    if more > 0:
        parts.append(f"... and {more} more failed set(s)")
    return "; ".join(parts)


def is_key_failure(result: dict[str, Any]) -> bool:
    """True when every failed set failed for a key reason (KeyUnavailable, WrongKey, ...)."""
    return bool(result["failed_sets"]) and all(e.get("key_problem") for e in result["failed_sets"])
