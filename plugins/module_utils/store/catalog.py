# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store and its catalog (:class:`Store`): sets begun, resumed, listed, opened and verified.

A *store* is a folder. Each published *set* is a folder named by its id holding
``backup_manifest.json``, one folder per component and ``metadata/``. Binary-log archives
are sets too, published under a ``parent`` sub-folder (``binlogs/<server_uuid>/g<generation>/<set_id>``).
Verification results live beside the sets in ``<store>/verifications/<set_id>/<UTC time>.json``.
The full byte-level description is ``docs/format.md``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.store import locks
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import (
    BINLOG_DIR,
    LEASE_FILE,
    LOCK_DIR,
    METADATA_COMPONENT,
    PARTIAL_DIR,
    SET_ID_RE,
    SET_STATE_FILE,
    STATE_DIR,
    VERIFICATION_DIR,
    check_component,
    check_parent,
    check_set_type,
    format_time,
    new_set_id,
    parse_set_id,
    parse_time,
    utc_now,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import (
    Manifest,
    json_bytes,
    load_manifest,
    plain_json_copy,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet
from ansible_collections.lifeboat.dr.plugins.module_utils.store.writer import (
    DEFAULT_LEASE_S,
    RESUME_WAIT_S,
    SetWriter,
    codec_state,
    read_json_file,
    write_lease,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    BackupFailed,
    ConfigError,
    IncompleteBackup,
    InsufficientSpace,
    LifeboatError,
    LockHeld,
    NotFound,
    UnknownFormatVersion,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import (
    fsync_dir,
    make_private_dirs,
    write_file_atomic,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    ProgressFn,
    get_logger,
    human_bytes,
)

DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024


SPACE_FACTOR = 1.10


log = get_logger("store.catalog")


@dataclass(frozen=True)
class SetInfo:
    """One catalog entry. Times are manifest strings (UTC ISO 8601 ``Z``); sizes in bytes.

    ``status``: ``complete`` (published, never verified), ``verified`` (latest
    verification passed; ``verified_mode`` is ``full`` if a full verification
    passed since the last failure, else ``quick``), ``failed`` (latest
    verification failed) or ``partial`` (not published; only with ``include_partial``).
    ``age_s``: seconds since the end (partial: start) time.
    """

    set_id: str
    type: str
    components: tuple[str, ...]
    start: Optional[str]
    end: Optional[str]
    status: str
    verified_mode: Optional[str]
    stored_bytes: int
    plaintext_bytes: int
    age_s: Optional[float]
    path: Path
    parent: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (path as a string, components as a list)."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["components"] = list(self.components)
        return data


def verification_status(records: list[dict[str, Any]]) -> tuple[Optional[str], Optional[str]]:
    """``(status, verified_mode)`` from verification records (oldest first); ``(None, None)`` if none."""
    if not records:
        return None, None
    if not records[-1].get("ok"):
        return "failed", None
    since_failure: list[dict[str, Any]] = []
    for record in reversed(records):
        if not record.get("ok"):
            break
        since_failure.append(record)
    modes = {r.get("mode") for r in since_failure}
    return "verified", ("full" if "full" in modes else "quick")


class Store:
    """A backup store folder: writers, catalog, verification records, locks.

    ``reserve_bytes``: free space kept in addition to the estimate of a new set.
    Folders are created (0700) on first write; reading a missing store lists nothing.
    """

    def __init__(self, root: Union[str, Path], *, reserve_bytes: int = DEFAULT_RESERVE_BYTES) -> None:
        self.root = Path(root)
        self.reserve_bytes = reserve_bytes

    @property
    def partial_root(self) -> Path:
        """``<root>/.partial``: sets being written (or left by killed runs)."""
        return self.root / PARTIAL_DIR

    def set_path(self, set_id: str, parent: Optional[str] = None) -> Path:
        """Where set ``set_id`` is (or will be) published."""
        parse_set_id(set_id)
        parent = check_parent(parent)
        return (self.root / parent / set_id) if parent else (self.root / set_id)

    # -- locks
    def lock(self, kind: str, *, wait_s: float = 0.0, set_id: Optional[str] = None) -> locks.HeldLock:
        """Take writer lock ``kind`` (``create``, ``binlog``, ``prune``); use as a context manager.

        Fails at once (or after ``wait_s`` seconds) with :class:`LockHeld` naming the holder
        (or the detached set holding its lease). Different kinds never block each other.
        """
        make_private_dirs(self.root)
        return locks.acquire(self.root / LOCK_DIR, kind, wait_s=wait_s, set_id=set_id, store=str(self.root),
                             lease_valid=self._lease_holds_or_take_over)

    def _leased_partial(self, record: dict[str, Any]) -> Optional[str]:
        """The set id of a lease record whose set is still partial, else ``None`` (the lease is void)."""
        set_id = record.get("set_id")
        if isinstance(set_id, str) and SET_ID_RE.match(set_id) and (self.partial_root / set_id).is_dir():
            return set_id
        return None

    def _lease_holds_or_take_over(self, record: dict[str, Any]) -> bool:
        """Called with the writer lock's ``flock`` held: True while the lease in ``record`` holds.

        A lease holds while its set is partial and either a step is writing it (the set's own
        ``flock`` is taken) or :func:`locks.lease_stale_reason` finds no reason to end it. A
        stale lease is *taken over*: its partial set is removed here (under the set's ``flock``,
        so never under a live writer) and the takeover is recorded in the job history and the
        audit trail (:func:`oplog.record_takeover`).
        """
        set_id = self._leased_partial(record)
        if set_id is None:
            return False
        reason = locks.lease_stale_reason(record)
        if reason is None:
            return True
        try:
            info = self._remove_partial(set_id, wait_s=0.0)
        except LockHeld:
            return True  # a step is writing the set right now: its run is alive
        log.warning("backup set %s: taken over, its partial set removed (%s)", set_id, reason)
        self._record_takeover(set_id, info, record, reason)
        return False

    def _record_takeover(self, set_id: str, info: dict[str, Any], record: dict[str, Any], reason: str) -> None:
        from ansible_collections.lifeboat.dr.plugins.module_utils.store import oplog

        oplog.record_takeover(self.root, set_id, info, record, reason)

    def lease_status(self) -> list[dict[str, Any]]:
        """Every lease of a writer lock whose set is still partial, for the health report:
        ``{kind, set_id, owner, run_owner, run_owner_state, since, renewed, lease_until,
        state, reason}``; ``state`` is ``writing`` (a step holds the set's flock), ``held``
        or ``stale`` (``reason`` says why: the next backup takes it over). Changes nothing."""
        out: list[dict[str, Any]] = []
        folder = self.root / LOCK_DIR
        for path in sorted(folder.glob("*.lock")) if folder.is_dir() else []:
            record = locks.read_holder(path) or {}
            if not (record.get("detached") or record.get("lease_until")):
                continue  # a live holder's record, or none (the writer lock is never probed: no contention)
            set_id = self._leased_partial(record)
            if set_id is None:
                continue
            reason = locks.lease_stale_reason(record)
            writing = locks.is_locked_by_other(self.partial_root / f"{set_id}.lock")
            out.append({"kind": path.stem, "set_id": set_id, "owner": record.get("owner"),
                        "run_owner": record.get("run_owner"),
                        "run_owner_state": locks.owner_state(record.get("run_owner")),
                        "since": record.get("started"), "renewed": record.get("renewed"),
                        "lease_until": record.get("lease_until"),
                        "state": "writing" if writing else ("stale" if reason else "held"),
                        "reason": None if writing else reason})
        return out

    # -- space
    def stored_ratio(self, set_type: Optional[str] = None) -> float:
        """stored/plaintext bytes of the newest published set (of ``set_type`` if there is one), else 1.0."""
        sets = [s for s in self.list_sets() if s.plaintext_bytes > 0]
        same = [s for s in sets if s.type == set_type]
        pick = (same or sets)[-1:]
        return pick[0].stored_bytes / pick[0].plaintext_bytes if pick else 1.0

    def check_free_space(self, estimated_bytes: int, set_type: Optional[str] = None) -> dict[str, int]:
        """Raise :class:`InsufficientSpace` unless the store has room for a set of
        ``estimated_bytes`` plaintext bytes: needed = ceil(estimate × ratio × 1.10) + reserve.

        Returns ``{"needed", "available"}`` in bytes.
        """
        ratio = self.stored_ratio(set_type)
        needed = int(math.ceil(estimated_bytes * ratio * SPACE_FACTOR)) + self.reserve_bytes
        available = shutil.disk_usage(self.root).free
        if available < needed:
            raise InsufficientSpace(
                f"store {self.root} has {available} bytes ({human_bytes(available)}) free but a new "
                f"{set_type or ''} set needs about {needed} bytes ({human_bytes(needed)}): {estimated_bytes} "
                f"estimated plaintext bytes x stored/plaintext ratio {ratio:.2f} x {SPACE_FACTOR} + "
                f"{self.reserve_bytes} reserve",
                hint="free space (prune old sets) or use a store on a larger volume",
                needed=needed, available=available, store=str(self.root))
        return {"needed": needed, "available": available}

    # -- writing
    def begin_set(self, set_type: str, components: list[str], keyring: Any, *, codec: Any = None,
                  set_id: Optional[str] = None, estimated_bytes: Optional[int] = None,
                  progress: Optional[ProgressFn] = None, lock: Union[str, locks.HeldLock, None] = "create",
                  parent: Optional[str] = None, owner: Optional[str] = None,
                  lease_s: float = DEFAULT_LEASE_S, early_read_back: bool = True,
                  run_owner: Optional[dict[str, Any]] = None) -> SetWriter:
        """Start a set: take the writer lock, check free space, make a fresh data key,
        create ``<root>/.partial/<set_id>/`` (0700) with one folder per component + ``metadata/``.

        ``lock``: a kind to take now (released at publish/abort, leased on detach), a
        :class:`HeldLock` the caller already holds, or ``None`` (no writer lock).
        ``parent``: sub-folder of the root to publish into (e.g. ``binlogs/<uuid>/g1``).
        ``owner``: who drives a multi-process set (e.g. an Ansible run id), recorded
        with its lease; ``lease_s``: how long a detached set stays protected without a resume.
        ``run_owner``: the identity of the process driving a multi-process set (the
        ``ansible-playbook`` controller, :func:`locks.process_identity`), recorded with its
        lease: when it is provably gone the next :meth:`lock` takes the lease over at once.
        ``early_read_back``: read every artifact back as soon as it is closed (the check
        :meth:`SetWriter.publish` makes with ``quick_verify``, done ahead; publish then only
        collects the results); pass False when the set will be published without that check.
        """
        check_set_type(set_type)
        if not components:
            raise ConfigError("a backup set needs at least one component")
        for component in components:
            check_component(component)
        parent = check_parent(parent)
        run_owner = locks.check_run_owner(run_owner)
        set_id = set_id or new_set_id(set_type)
        if parse_set_id(set_id)[0] != set_type:
            raise ConfigError(f"set id {set_id} does not start with its type {set_type!r}")
        make_private_dirs(self.root)
        held, owns = (self.lock(lock, set_id=set_id), True) if isinstance(lock, str) else (lock, False)
        set_lock = None
        try:
            if self._find_set_dir(set_id) or (self.partial_root / set_id).exists():
                raise ConfigError(f"backup set {set_id} already exists in {self.root}", hint="use a new set id")
            if estimated_bytes is not None:
                self.check_free_space(estimated_bytes, set_type)
            data_key, wraps = keyring.new_data_key()
            make_private_dirs(self.partial_root)
            set_lock = locks.acquire_file(self.partial_root / f"{set_id}.lock", None, what=f"partial set {set_id}",
                                          shared=True)
            info = {"set_id": set_id, "type": set_type, "components": list(components), "parent": parent,
                    "codec": codec_state(codec), "data_key_wraps": wraps,
                    "started": format_time(utc_now()), "created_on": socket.gethostname(), "owner": owner,
                    "lease_s": lease_s, "lock_kind": held.kind if owns and held is not None else None,
                    "run_owner": run_owner}
            self._create_partial(info)
            writer = SetWriter(self, info, data_key, component=None, set_lock=set_lock, writer_lock=held,
                               owns_lock=owns, created=True, progress=progress, early_read_back=early_read_back)
        except BaseException:
            if set_lock is not None:
                shutil.rmtree(self.partial_root / set_id, ignore_errors=True)
                (self.partial_root / f"{set_id}.lock").unlink(missing_ok=True)
                set_lock.release()
            if owns and held is not None:
                held.release()
            raise
        log.info("backup set %s: writing to %s", set_id, writer.partial_path)
        return writer

    def _create_partial(self, info: dict[str, Any]) -> None:
        partial = self.partial_root / info["set_id"]
        for folder in [partial, *(partial / c for c in [*info["components"], METADATA_COMPONENT, STATE_DIR])]:
            folder.mkdir(mode=0o700)
            os.chmod(folder, 0o700)
        write_file_atomic(partial / STATE_DIR / SET_STATE_FILE, json_bytes(info))
        fsync_dir(self.partial_root)

    def resume_set(self, set_id: str, keyring: Any, *, component: Optional[str] = None,
                   replace: Optional[bool] = None, progress: Optional[ProgressFn] = None,
                   early_read_back: bool = True) -> SetWriter:
        """Continue a partial set begun (and detached) elsewhere, e.g. in another process.

        ``component``: write only that component (in parallel with writers of other
        components); ``None``: act as the main writer. ``replace``: discard what an earlier
        attempt of the same writer recorded, so a retried step starts clean (default: True
        for a component writer, False for the main writer, which continues). The data key is
        unwrapped with ``keyring``; the set's lease is renewed. :class:`NotFound` if there is
        no such partial set; :class:`LockHeld` if the same writer is active elsewhere or the
        set is being published/removed. ``early_read_back`` as for :meth:`begin_set`; a
        detaching writer saves its results for the writer that publishes.
        """
        parse_set_id(set_id)
        partial = self.partial_root / set_id
        if not partial.is_dir():
            if self._find_set_dir(set_id):
                raise BackupFailed(f"backup set {set_id} is already published; it cannot be written to")
            raise NotFound(f"no partial backup set {set_id} in store {self.root}",
                           hint="it was never begun, was aborted, or was removed as stale")
        set_lock = locks.acquire_file(self.partial_root / f"{set_id}.lock", None, what=f"partial set {set_id}",
                                      shared=True, wait_s=RESUME_WAIT_S)
        try:
            if not partial.is_dir():
                raise NotFound(f"no partial backup set {set_id} in store {self.root}",
                               hint="it was aborted or taken over meanwhile (see lifeboat jobs)")
            info = read_json_file(partial / STATE_DIR / SET_STATE_FILE)
            if not partial.is_dir() or not info:
                raise IncompleteBackup(f"partial backup set {set_id} lacks its state; it cannot be resumed",
                                       hint=f"abort it (lifeboat abort {set_id} --store {self.root}) and "
                                            f"start a new set")
            if component is not None and component not in info["components"]:
                raise ConfigError(f"set {set_id} has no component {component!r} ({', '.join(info['components'])})")
            data_key = keyring.unwrap(info["data_key_wraps"])
            lease_s = float(info.get("lease_s") or DEFAULT_LEASE_S)
            write_lease(partial, info, lease_s)
            if info.get("lock_kind"):
                locks.refresh_lease(self.root / LOCK_DIR, info["lock_kind"], set_id, lease_s)
            if replace is None:
                replace = component is not None
            writer = SetWriter(self, info, data_key, component=component, set_lock=set_lock, replace=replace,
                               progress=progress, early_read_back=early_read_back)
        except BaseException:
            set_lock.release()
            raise
        log.info("backup set %s: resumed by the %s writer", set_id, writer.state_name)
        return writer

    def abort_set(self, set_id: str, reason: str, wait_s: float = 0.0) -> None:
        """Remove partial set ``set_id`` and end its lock lease; ``reason`` is logged.

        :class:`LockHeld` if a writer is still active in it (after ``wait_s`` seconds);
        :class:`NotFound` if there is no such partial set.
        """
        parse_set_id(set_id)
        partial = self.partial_root / set_id
        if not partial.is_dir():
            raise NotFound(f"no partial backup set {set_id} in store {self.root}")
        info = self._remove_partial(set_id, wait_s=wait_s)
        self._end_lease(info, set_id)
        log.warning("backup set %s: aborted (%s); nothing published", set_id, reason)

    def _remove_partial(self, set_id: str, wait_s: float) -> dict[str, Any]:
        """Remove partial set ``set_id`` under its exclusive ``flock`` (:class:`LockHeld` while a
        writer is active, after ``wait_s`` seconds); returns its state (``{}`` if unreadable)."""
        partial = self.partial_root / set_id
        with locks.acquire_file(self.partial_root / f"{set_id}.lock", None, what=f"partial set {set_id}",
                                wait_s=wait_s):
            info = read_json_file(partial / STATE_DIR / SET_STATE_FILE) or {}
            shutil.rmtree(partial, ignore_errors=True)
            (self.partial_root / f"{set_id}.lock").unlink(missing_ok=True)
            fsync_dir(self.partial_root)
        return info

    def _end_lease(self, info: dict[str, Any], set_id: str) -> None:
        if info.get("lock_kind"):
            try:
                locks.clear_lease(self.root / LOCK_DIR, info["lock_kind"], set_id, wait_s=0)
            except LifeboatError:
                pass  # a live holder of that kind: its record is not our lease

    # -- catalog
    def _find_set_dir(self, set_id: str, parent: Optional[str] = None) -> Optional[Path]:
        """The published folder of ``set_id`` (top level, ``parent``, or any binlog archive)."""
        candidates = [self.set_path(set_id, parent)]
        if parent is None and set_id.startswith("binlog_"):
            candidates += sorted((self.root / BINLOG_DIR).glob(f"*/*/{set_id}"))
        for path in candidates:
            if path.is_dir():
                return path
        return None

    def open_set(self, set_id: str, parent: Optional[str] = None) -> BackupSet:
        """Open a published set (manifest validated). :class:`NotFound` if absent;
        :class:`IncompleteBackup` if it only exists as a partial (being written or killed)."""
        path = self._find_set_dir(set_id, parent)
        if path is None:
            if (self.partial_root / set_id).exists():
                raise IncompleteBackup(f"backup set {set_id} was never published (it is still being written, or "
                                       "its run died)", hint="use another set; clean_stale_partials removes it")
            raise NotFound(f"no backup set {set_id} in store {self.root}", hint="list the store's sets")
        return BackupSet(path)

    def list_sets(self, include_partial: bool = False, parent: Optional[str] = None) -> list[SetInfo]:
        """The sets directly in the root (or in ``parent``), ordered by manifest start time
        (then id). Folders without a complete manifest and partials appear only with
        ``include_partial`` (status ``partial``); sets of an unknown format are skipped (logged)."""
        parent = check_parent(parent)
        base = self.root / parent if parent else self.root
        infos: list[SetInfo] = []
        for entry in _set_folders(base):
            try:
                manifest = load_manifest(entry)
            except UnknownFormatVersion as err:
                log.warning("skipping set %s: %s", entry.name, err)
                continue
            except IncompleteBackup:
                if include_partial:
                    infos.append(self._partial_info(entry, {}, parent))
                continue
            infos.append(self._complete_info(entry, manifest, parent))
        if include_partial:
            for entry in _set_folders(self.partial_root):
                state = read_json_file(entry / STATE_DIR / SET_STATE_FILE) or {}
                if state.get("parent") == parent:
                    infos.append(self._partial_info(entry, state, parent))
        return sorted(infos, key=_catalog_order)

    def _complete_info(self, path: Path, manifest: Manifest, parent: Optional[str]) -> SetInfo:
        status, mode = verification_status(self.verifications(manifest["id"]))
        end = parse_time(manifest["end_time"])
        return SetInfo(manifest["id"], manifest["type"], tuple(manifest["components"]), manifest["start_time"],
                       manifest["end_time"], status or "complete", mode, int(manifest["totals"].get("stored_bytes", 0)),
                       int(manifest["totals"].get("plaintext_bytes", 0)), (utc_now() - end).total_seconds(), path,
                       parent)

    def _partial_info(self, path: Path, state: dict[str, Any], parent: Optional[str]) -> SetInfo:
        set_type, when = parse_set_id(path.name)
        start = state.get("started") or format_time(when)
        stored = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return SetInfo(path.name, set_type, tuple(state.get("components", ())), start, None, "partial", None,
                       stored, 0, (utc_now() - parse_time(start)).total_seconds(), path, parent)

    def latest_set(self, component: Optional[str] = None, verified_only: bool = False,
                   set_type: Optional[str] = None, parent: Optional[str] = None) -> Optional[BackupSet]:
        """The newest published set (by start time) holding ``component`` / of ``set_type``;
        with ``verified_only`` only sets whose latest verification passed. ``None`` if none."""
        for info in reversed(self.list_sets(parent=parent)):
            if component and component not in info.components:
                continue
            if set_type and info.type != set_type:
                continue
            if verified_only and info.status != "verified":
                continue
            return BackupSet(info.path)
        return None

    # -- verification records
    def record_verification(self, set_id: str, report: dict[str, Any]) -> Path:
        """Store a verification report as ``<root>/verifications/<set_id>/<UTC time>.json``
        (0600, atomic), never inside the set. The report needs ``ok`` (bool) and ``mode``."""
        if self._find_set_dir(set_id) is None:
            raise NotFound(f"no published backup set {set_id} in store {self.root}")
        if not isinstance(report.get("ok"), bool) or not report.get("mode"):
            raise ConfigError("a verification report needs 'ok' (bool) and 'mode' (quick/full)")
        record = plain_json_copy({**report, "set_id": set_id}, "verification report")
        record.setdefault("checked_at", format_time(utc_now()))
        folder = self.root / VERIFICATION_DIR / set_id
        make_private_dirs(folder)
        stamp = format_time(utc_now()).replace("-", "").replace(":", "")
        path = folder / f"{stamp}.json"
        counter = 1
        while path.exists():
            path = folder / f"{stamp}-{counter}.json"
            counter += 1
        write_file_atomic(path, json_bytes(record))
        log.info("backup set %s: %s verification %s recorded", set_id, record["mode"],
                 "passed" if record["ok"] else "FAILED")
        return path

    def verifications(self, set_id: str) -> list[dict[str, Any]]:
        """Stored verification reports of ``set_id``, oldest first (unreadable ones skipped, logged)."""
        folder = self.root / VERIFICATION_DIR / set_id
        if not folder.is_dir():
            return []
        records = []
        for path in sorted(folder.glob("*.json")):
            try:
                records.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as err:
                log.warning("skipping unreadable verification record %s: %s", path, err)
        return records

    # -- cleaning
    def clean_stale_partials(self, older_than_s: float) -> list[str]:
        """Remove partial sets that no live process writes (their lock is free), that hold
        no active lease (detached multi-process sets), and whose newest change is older than
        ``older_than_s`` seconds. Returns the removed set ids."""
        removed: list[str] = []
        if not self.partial_root.is_dir():
            return removed
        for folder in _set_folders(self.partial_root):
            if self._remove_if_stale(folder, older_than_s):
                removed.append(folder.name)
        for lock_file in self.partial_root.glob("*.lock"):  # lock files of partials that are gone
            if not (self.partial_root / lock_file.stem).exists():
                try:
                    with locks.acquire_file(lock_file, None, what="orphan lock"):
                        if not (self.partial_root / lock_file.stem).exists():
                            lock_file.unlink(missing_ok=True)
                except LifeboatError:
                    continue
        if removed:
            fsync_dir(self.partial_root)
        return removed

    def _remove_if_stale(self, folder: Path, older_than_s: float) -> bool:
        try:
            probe = locks.acquire_file(self.partial_root / f"{folder.name}.lock", None,
                                       what=f"partial set {folder.name}")
        except LifeboatError:
            log.info("partial set %s: a writer is active in it; kept", folder.name)
            return False
        with probe:
            if not folder.is_dir():
                return False
            if locks.lease_active(read_json_file(folder / STATE_DIR / LEASE_FILE)):
                log.info("partial set %s: detached, its lease is active; kept", folder.name)
                return False
            if time.time() - _newest_mtime(folder) < older_than_s:
                return False
            info = read_json_file(folder / STATE_DIR / SET_STATE_FILE) or {}
            shutil.rmtree(folder)
            (self.partial_root / f"{folder.name}.lock").unlink(missing_ok=True)
            self._end_lease(info, folder.name)
        log.info("partial set %s: removed (no writer, no lease)", folder.name)
        return True


def _catalog_order(info: SetInfo) -> tuple[datetime, str]:
    """Sort key: manifest start time (parsed, so any fraction compares right), then id."""
    return (parse_time(info.start) if info.start else parse_set_id(info.set_id)[1], info.set_id)


def _newest_mtime(folder: Path) -> float:
    """The newest mtime of ``folder``, its sub-folders and its state files."""
    times = [folder.stat().st_mtime]
    for path in folder.rglob("*"):
        try:
            times.append(path.stat().st_mtime)
        except FileNotFoundError:
            continue
    return max(times)


def _set_folders(base: Path) -> Iterator[Path]:
    """Folders in ``base`` named like a set id (nothing if ``base`` is missing)."""
    if not base.is_dir():
        return iter(())
    return (p for p in sorted(base.iterdir()) if SET_ID_RE.match(p.name) and p.is_dir())
