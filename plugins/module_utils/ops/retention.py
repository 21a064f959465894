# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention: decide which backup sets and side data to keep, and prune the rest.

The decision is a pure function, :func:`plan_retention`, over :class:`SetRecord`
values (built from a store by :func:`gather_records`), so it can be tested with a
fabricated calendar. :func:`prune` applies it under the store's ``prune`` lock.

Rules (each decision carries every reason that applies):

* Regular sets are grouped by type (``full``, ``mysql``, ``redis``, ``vault``, ``app``)
  and each group gets the :class:`GfsRule` of its type (else ``default``), as
  ``restic forget``: ``keep_last`` N newest; ``keep_daily``/``keep_weekly``/``keep_monthly``
  N: walking from the newest, the newest set of each of the last N UTC days / ISO weeks /
  months that have a set; ``keep_within_s``: every set started within that many seconds
  of the group's newest set. Sets whose latest verification *failed* fill no GFS slot.
* Always kept: sets younger than ``min_age_s`` (relative to ``now``); the newest set of
  each type; the newest *verified* ``full`` set; every set a kept incremental set depends
  on (its ``chain``: files incrementals, physical MySQL incrementals), transitively.
* Vault sets a restore kept aside (``kept_aside_before``) are pruned only when older than
  ``kept_aside_s`` *and* that restore is recorded as verified.
* Binary-log sets are kept when younger than ``binlog_keep_within_s`` or ``min_age_s``, or
  when a kept base backup of the same server needs them to roll forward (same generation
  at or after the base's binlog file, or a later generation); with no kept base of their
  server they are all kept. Only binlogs older than the oldest kept base go.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit, jobs
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import (
    BINLOG_DIR,
    VERIFICATION_DIR,
    parse_time,
    utc_now,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import load_manifest
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, LifeboatError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import fsync_dir
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

log = get_logger("retention")

DAY = 86400.0
KEPT_ASIDE_RE = re.compile(r"^(?P<target>.*)\.lbprev-(?P<stamp>\d{8}T\d{6}Z)(?:-\d+)?$")
DRILLS_DIR = "drills"
DRILL_HISTORY = "history.jsonl"


# --------------------------------------------------------------------------- policy and inputs
@dataclass(frozen=True)
class GfsRule:
    """Grandfather-father-son counts for one set type (0 = that rule keeps nothing)."""

    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_within_s: float = 0.0

    def describe(self) -> str:
        """``keep_last=2 daily=7 weekly=4 monthly=3 within=7d``."""
        return (f"keep_last={self.keep_last} daily={self.keep_daily} weekly={self.keep_weekly} "
                f"monthly={self.keep_monthly} within={_duration(self.keep_within_s)}")


DEFAULT_RULE = GfsRule(keep_daily=7, keep_weekly=4, keep_monthly=3, keep_within_s=7 * DAY)


@dataclass(frozen=True)
class RetentionPolicy:
    """What to keep. Durations in seconds.

    ``rules``: set type -> :class:`GfsRule` (key ``default`` for types not named).
    ``verification_records_s``: verification records older than this are removed (the
    latest record and the latest passed full verification of a kept set always stay).
    ``drill_reports_s``: drill report files older than this are removed.
    ``kept_aside_s``: kept-aside data of verified restores older than this is removed.
    ``stale_partial_s``: unfinished sets untouched for this long are removed.
    """

    rules: dict[str, GfsRule] = field(default_factory=lambda: {"default": DEFAULT_RULE})
    min_age_s: float = 3600.0
    binlog_keep_within_s: float = 7 * DAY
    verification_records_s: float = 30 * DAY
    drill_reports_s: float = 90 * DAY
    kept_aside_s: float = 7 * DAY
    stale_partial_s: float = DAY

    def rule_for(self, set_type: str) -> GfsRule:
        """The rule of ``set_type``, else the ``default`` rule, else :data:`DEFAULT_RULE`."""
        return self.rules.get(set_type) or self.rules.get("default") or DEFAULT_RULE


@dataclass(frozen=True)
class BinlogRef:
    """A place in one server's binlog history: identity, archive generation, file sequence number."""

    identity: str
    generation: int
    seq: int


@dataclass(frozen=True)
class SetRecord:
    """What retention needs to know about one set.

    ``time``: manifest start time (aware UTC). ``status``: catalog status (``failed`` =
    latest verification failed). ``depends_on``: sets this one cannot be restored without
    (incremental chain). ``base``: for a set with a MySQL base, where its binlog position
    is. ``binlog``: for a ``binlog`` set, which file it is. ``kept_aside_before``: for a
    vault set saved by a restore, the set that restore applied; ``restore_verified``: that
    restore was recorded as verified.
    """

    set_id: str
    type: str
    time: datetime
    status: str = "complete"
    depends_on: tuple[str, ...] = ()
    base: Optional[BinlogRef] = None
    binlog: Optional[BinlogRef] = None
    kept_aside_before: Optional[str] = None
    restore_verified: bool = False
    path: Optional[str] = None


@dataclass
class Decision:
    """Keep or delete one set, with every reason that applies (never empty)."""

    set_id: str
    keep: bool
    reasons: list[str]
    type: str = ""
    path: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {"set_id": self.set_id, "keep": self.keep, "reasons": list(self.reasons), "type": self.type,
                "path": self.path}


# --------------------------------------------------------------------------- the pure decision
def _duration(seconds: float) -> str:
    if seconds and seconds % DAY == 0:
        return f"{int(seconds // DAY)}d"
    if seconds and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds)}s"


def _bucket_keys(when: datetime) -> dict[str, str]:
    iso = when.isocalendar()
    return {"daily": when.strftime("%Y-%m-%d"), "weekly": f"{iso[0]}-W{iso[1]:02d}",
            "monthly": when.strftime("%Y-%m")}


def _apply_gfs(group: list[SetRecord], rule: GfsRule, reasons: dict[str, list[str]]) -> None:
    """Add the GFS reasons for one type's sets (``group`` newest first)."""
    if not group:
        return
    newest = group[0].time
    for i, rec in enumerate(group[:rule.keep_last]):
        reasons[rec.set_id].append(f"keep_last: {i + 1} of the {rule.keep_last} newest")
    if rule.keep_within_s > 0:
        for rec in group:
            if (newest - rec.time).total_seconds() <= rule.keep_within_s:
                reasons[rec.set_id].append(f"keep_within: started within {_duration(rule.keep_within_s)} "
                                           "of the newest set")
    for period, count in (("daily", rule.keep_daily), ("weekly", rule.keep_weekly),
                          ("monthly", rule.keep_monthly)):
        seen: list[str] = []
        for rec in group:
            if len(seen) >= count:
                break
            if rec.status == "failed":
                continue
            key = _bucket_keys(rec.time)[period]
            if key in seen:
                continue
            seen.append(key)
            reasons[rec.set_id].append(f"keep_{period}: newest of {key} ({len(seen)} of {count})")


def plan_retention(sets: Iterable[SetRecord], policy: RetentionPolicy, now: datetime) -> list[Decision]:
    """Decide for every set, in input order sorted by time (oldest first). Pure: reads nothing.

    A set is deleted only when no rule keeps it; its reasons then say why it goes.
    """
    records = sorted(sets, key=lambda r: (r.time, r.set_id))
    reasons: dict[str, list[str]] = {r.set_id: [] for r in records}
    by_id = {r.set_id: r for r in records}
    regular = [r for r in records if r.type != "binlog" and not r.kept_aside_before]
    for set_type in sorted({r.type for r in regular}):
        group = [r for r in reversed(regular) if r.type == set_type]
        _apply_gfs(group, policy.rule_for(set_type), reasons)
        reasons[group[0].set_id].append(f"newest {set_type} set")
    verified_full = [r for r in regular if r.type == "full" and r.status == "verified"]
    if verified_full:
        reasons[verified_full[-1].set_id].append("newest verified full backup")
    for rec in records:
        if (now - rec.time).total_seconds() < policy.min_age_s:
            reasons[rec.set_id].append(f"younger than min_age ({_duration(policy.min_age_s)})")
    for rec in records:
        if rec.kept_aside_before:
            _kept_aside_set_reasons(rec, policy, now, reasons)
    _keep_dependencies(records, by_id, reasons)
    _binlog_reasons(records, policy, now, reasons)
    return [_decide(rec, reasons[rec.set_id], policy) for rec in records]


def _kept_aside_set_reasons(rec: SetRecord, policy: RetentionPolicy, now: datetime,
                            reasons: dict[str, list[str]]) -> None:
    if (now - rec.time).total_seconds() < policy.kept_aside_s:
        reasons[rec.set_id].append(f"kept aside by the restore of {rec.kept_aside_before} less than "
                                   f"{_duration(policy.kept_aside_s)} ago")
    elif not rec.restore_verified:
        reasons[rec.set_id].append(f"kept aside by the restore of {rec.kept_aside_before}, which is not "
                                   "recorded as verified")


def _keep_dependencies(records: list[SetRecord], by_id: dict[str, SetRecord],
                       reasons: dict[str, list[str]]) -> None:
    """Keep every set a kept set depends on (transitively)."""
    pending = [r for r in records if reasons[r.set_id] and r.depends_on]
    while pending:
        rec = pending.pop()
        for dep in rec.depends_on:
            if dep not in by_id:
                continue
            note = f"parent of kept incremental set {rec.set_id}"
            was_kept = bool(reasons[dep])
            if note not in reasons[dep]:
                reasons[dep].append(note)
            if not was_kept and by_id[dep].depends_on:
                pending.append(by_id[dep])


def _binlog_reasons(records: list[SetRecord], policy: RetentionPolicy, now: datetime,
                    reasons: dict[str, list[str]]) -> None:
    kept_bases = [r for r in records if r.base is not None and reasons[r.set_id]]
    for rec in records:
        if rec.binlog is None:
            continue
        ref = rec.binlog
        age = (now - rec.time).total_seconds()
        if age <= policy.binlog_keep_within_s:
            reasons[rec.set_id].append(f"binlog within {_duration(policy.binlog_keep_within_s)}")
        mine = [b for b in kept_bases if b.base and b.base.identity == ref.identity]
        if not mine:
            reasons[rec.set_id].append(f"no kept base backup of server {ref.identity}: binlogs kept")
            continue
        needing = [b for b in mine if b.base and (ref.generation > b.base.generation or
                                                  (ref.generation == b.base.generation and ref.seq >= b.base.seq))]
        if needing:
            reasons[rec.set_id].append(f"needed to roll forward kept base {needing[0].set_id}")


def _decide(rec: SetRecord, keep_reasons: list[str], policy: RetentionPolicy) -> Decision:
    if keep_reasons:
        return Decision(rec.set_id, True, keep_reasons, rec.type, rec.path)
    if rec.binlog is not None:
        why = [f"binlog older than {_duration(policy.binlog_keep_within_s)} and before the binlog position "
               f"of every kept base backup of server {rec.binlog.identity}"]
    elif rec.kept_aside_before:
        why = [f"kept aside by the verified restore of {rec.kept_aside_before}, older than "
               f"{_duration(policy.kept_aside_s)}"]
    else:
        why = [f"no rule keeps it ({policy.rule_for(rec.type).describe()}; min_age={_duration(policy.min_age_s)})"]
        if rec.status == "failed":
            why.append("its latest verification failed, so it fills no daily/weekly/monthly slot")
    return Decision(rec.set_id, False, why, rec.type, rec.path)


# --------------------------------------------------------------------------- reading a store
def _restore_verified_targets(store: Store) -> set[str]:
    """Paths / set ids named as kept aside by restores recorded ok and verified in the job history."""
    out: set[str] = set()
    for record in jobs.read_jobs(store, kind="restore"):
        details = record.get("details") or {}
        if record.get("result") != "ok" or details.get("verified") is not True:
            continue
        for key in ("kept_aside", "previous_data", "kept_aside_set_id"):
            value = details.get(key)
            for item in (value if isinstance(value, list) else [value]):
                if isinstance(item, str) and item:
                    out.add(item.rstrip("/"))
    return out


def _mysql_base_ref(store: Store, indexes: dict[str, Any]) -> dict[str, BinlogRef]:
    """set id -> binlog position (identity, generation, seq) of each MySQL base."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog as bl
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import pitr
    refs: dict[str, BinlogRef] = {}
    for base in pitr.list_bases(store):
        if not base.identity:
            continue
        if base.identity not in indexes:
            try:
                indexes[base.identity] = bl.load_index(store, base.identity)
            except (LifeboatError, OSError, ValueError) as err:
                log.warning("binlog index of %s unreadable (%s); its binlogs are all kept", base.identity, err)
                indexes[base.identity] = None
        index = indexes[base.identity]
        found = pitr.run_of(index, base.file, base.taken_at) if index is not None else None
        generation = int(found[0]["generation"]) if found else (len(index.generations) if index else 1)
        refs[base.set_id] = BinlogRef(base.identity, generation, bl.binlog_sequence(base.file))
    return refs


def _binlog_records(store: Store) -> list[SetRecord]:
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog as bl
    out = []
    base = store.root / BINLOG_DIR
    for gen_dir in sorted(base.glob("*/g*")) if base.is_dir() else []:
        parent = gen_dir.relative_to(store.root).as_posix()
        for info in store.list_sets(parent=parent):
            meta = (load_manifest(info.path).get("component_metadata") or {}).get("binlog") or {}
            try:
                ref = BinlogRef(str(meta["identity"]), int(meta["generation"]), bl.binlog_sequence(meta["file"]))
            except (KeyError, ValueError, TypeError, LifeboatError):
                log.warning("binlog set %s has no identity/generation/file metadata; kept", info.set_id)
                ref = BinlogRef(f"unknown:{info.set_id}", 0, 0)
            out.append(SetRecord(info.set_id, "binlog", parse_time(info.start), info.status, binlog=ref,
                                 path=str(info.path)))
    return out


def gather_records(store: Store) -> list[SetRecord]:
    """The :class:`SetRecord` of every published set of ``store`` (root and binlog archives)."""
    verified = _restore_verified_targets(store)
    bases = _mysql_base_ref(store, {})
    records = []
    for info in store.list_sets():
        meta = load_manifest(info.path).get("component_metadata") or {}
        app = meta.get("app") or {}
        chain = tuple(app.get("chain") or ()) + ((app["parent_set_id"],) if app.get("parent_set_id") else ())
        mysql = meta.get("mysql") or {}  # a physical MySQL incremental: its whole chain (full first)
        chain += tuple(mysql.get("chain") or ()) + ((mysql["parent"],) if mysql.get("parent") else ())
        kept_before = (meta.get("vault") or {}).get("kept_aside_before")
        records.append(SetRecord(info.set_id, info.type, parse_time(info.start), info.status,
                                 depends_on=tuple(dict.fromkeys(chain)), base=bases.get(info.set_id),
                                 kept_aside_before=kept_before, restore_verified=info.set_id in verified,
                                 path=str(info.path)))
    return records + _binlog_records(store)


# --------------------------------------------------------------------------- side data
@dataclass
class SideItem:
    """Something outside the sets that retention removes: ``kind`` is ``verification``,
    ``drill_report``, ``kept_aside`` or ``partial``."""

    kind: str
    path: str
    keep: bool
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "keep": self.keep, "reasons": list(self.reasons)}


def _stamp_time(stamp: str) -> Optional[datetime]:
    try:
        return parse_time(f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}Z")
    except ValueError:
        return None


def plan_verification_records(store: Store, decisions: list[Decision], policy: RetentionPolicy,
                              now: datetime) -> list[SideItem]:
    """Verification records: those of deleted sets go with them; of kept sets, those older
    than ``verification_records_s`` go except the latest and the latest passed full one."""
    items: list[SideItem] = []
    root = store.root / VERIFICATION_DIR
    deleted = {d.set_id for d in decisions if not d.keep}
    known = {d.set_id for d in decisions}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        files = sorted(folder.glob("*.json"))
        if folder.name in deleted or folder.name not in known:
            why = "its set is pruned" if folder.name in deleted else "its set no longer exists"
            items.extend(SideItem("verification", str(f), False, [why]) for f in files)
            continue
        protected = _protected_verifications(files)
        for path in files:
            age = now.timestamp() - path.stat().st_mtime
            if path in protected:
                items.append(SideItem("verification", str(path), True, [protected[path]]))
            elif age < policy.verification_records_s:
                items.append(SideItem("verification", str(path), True,
                                      [f"younger than {_duration(policy.verification_records_s)}"]))
            else:
                items.append(SideItem("verification", str(path), False,
                                      [f"older than {_duration(policy.verification_records_s)}"]))
    return items


def _protected_verifications(files: list[Path]) -> dict[Path, str]:
    protected: dict[Path, str] = {}
    if files:
        protected[files[-1]] = "latest verification of a kept set"
    for path in reversed(files):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if rec.get("ok") and rec.get("mode") == "full":
            protected.setdefault(path, "latest passed full verification of a kept set")
            break
    return protected


def plan_drill_reports(store: Store, policy: RetentionPolicy, now: datetime) -> list[SideItem]:
    """Files in ``<store>/drills/`` (except ``history.jsonl``) older than ``drill_reports_s``."""
    root = store.root / DRILLS_DIR
    items = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []:
        if path.name == DRILL_HISTORY and path.parent == root:
            continue
        old = now.timestamp() - path.stat().st_mtime >= policy.drill_reports_s
        items.append(SideItem("drill_report", str(path), not old,
                              [f"{'older' if old else 'younger'} than {_duration(policy.drill_reports_s)}"]))
    return items


def plan_kept_aside(roots: Iterable[Union[str, Path]], verified: set[str], policy: RetentionPolicy,
                    now: datetime) -> list[SideItem]:
    """``*.lbprev-<UTC stamp>`` entries directly in each root folder (files and Redis
    restores keep the previous data there). Removed only when older than ``kept_aside_s``
    and the restore that made them is recorded as verified."""
    items = []
    for root in roots:
        base = Path(root)
        for path in sorted(base.iterdir()) if base.is_dir() else []:
            match = KEPT_ASIDE_RE.match(path.name)
            if not match:
                continue
            when = _stamp_time(match.group("stamp"))
            reasons = []
            if when is None or (now - when).total_seconds() < policy.kept_aside_s:
                reasons.append(f"kept aside less than {_duration(policy.kept_aside_s)} ago")
            if str(path) not in verified:
                reasons.append("the restore that kept it aside is not recorded as verified")
            if reasons:
                items.append(SideItem("kept_aside", str(path), True, reasons))
            else:
                items.append(SideItem("kept_aside", str(path), False,
                                      [f"kept aside by a verified restore more than {_duration(policy.kept_aside_s)} "
                                       "ago"]))
    return items


def plan_partials(store: Store, policy: RetentionPolicy, now: datetime) -> list[SideItem]:
    """Unfinished sets in ``.partial/`` (for listing; removal goes through clean_stale_partials,
    which also checks that no writer is alive and no lease is active)."""
    items = []
    for info in store.list_sets(include_partial=True):
        if info.status != "partial" or not str(info.path).startswith(str(store.partial_root)):
            continue
        mtimes = [p.stat().st_mtime for p in info.path.rglob("*") if p.exists()]
        newest = max([info.path.stat().st_mtime, *mtimes])
        old = now.timestamp() - newest >= policy.stale_partial_s
        items.append(SideItem("partial", str(info.path), not old,
                              [f"untouched for {'more' if old else 'less'} than {_duration(policy.stale_partial_s)}"
                               + (" (removed only if no writer is alive and no lease is active)" if old else "")]))
    return items


# --------------------------------------------------------------------------- applying
def plan(store: Union[str, Path, Store], policy: RetentionPolicy, *, now: Optional[datetime] = None,
         kept_aside_roots: Iterable[Union[str, Path]] = ()) -> dict[str, Any]:
    """Everything a prune would do, without doing it: ``{"sets": [...], "side": [...]}``."""
    store = store if isinstance(store, Store) else Store(store)
    now = now or utc_now()
    decisions = plan_retention(gather_records(store), policy, now)
    verified = _restore_verified_targets(store)
    side = (plan_verification_records(store, decisions, policy, now) + plan_drill_reports(store, policy, now)
            + plan_kept_aside(kept_aside_roots, verified, policy, now) + plan_partials(store, policy, now))
    return {"decisions": decisions, "side": side}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _delete_set(store: Store, decision: Decision) -> None:
    """Remove a set folder: first rename it out of the listing (atomic), then delete it."""
    if not decision.path:
        raise ConfigError(f"set {decision.set_id}: no path to delete")
    path = Path(decision.path)
    if store.root.resolve() not in path.resolve().parents:
        raise ConfigError(f"refusing to delete {path}: it is not inside the store {store.root}")
    doomed = path.with_name(f".{path.name}.pruning")
    os.rename(path, doomed)
    fsync_dir(path.parent)
    shutil.rmtree(doomed)


def _forget_binlogs(store: Store, removed: list[Decision]) -> None:
    """Drop pruned binlog sets from their server's archive index (under the ``binlog`` lock)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog as bl
    gone = {d.set_id for d in removed if d.type == "binlog"}
    if not gone:
        return
    with store.lock("binlog", wait_s=60.0):
        for identity in bl.archived_identities(store):
            index = bl.load_index(store, identity)
            changed = False
            for gen in index.generations:
                before = len(gen["files"])
                gen["files"] = [e for e in gen["files"] if e.get("set_id") not in gone]
                changed = changed or len(gen["files"]) != before
            if changed:
                bl.save_index(store, index)


def prune(store: Union[str, Path, Store], policy: RetentionPolicy, *, check_mode: bool = False,
          now: Optional[datetime] = None, kept_aside_roots: Iterable[Union[str, Path]] = (),
          lock_wait_s: float = 0.0) -> dict[str, Any]:
    """Apply the retention plan under the ``prune`` lock (check mode: list only, change nothing).

    Returns ``{"changed", "deleted_sets", "kept_sets", "deleted_side", "kept_side",
    "removed_partials", "freed_bytes", "check_mode"}``; every entry names its reasons.
    Appends a job record and an audit record (not in check mode).
    """
    store = store if isinstance(store, Store) else Store(store)
    if not store.root.is_dir():
        raise ConfigError(f"backup store {store.root} does not exist", hint="check the store path")
    now = now or utc_now()
    started = utc_now()
    if check_mode:
        return _summary(plan(store, policy, now=now, kept_aside_roots=kept_aside_roots), [], 0, True)
    with store.lock("prune", wait_s=lock_wait_s):
        planned = plan(store, policy, now=now, kept_aside_roots=kept_aside_roots)
        freed = 0
        doomed = [d for d in planned["decisions"] if not d.keep]
        for decision in doomed:
            freed += _tree_size(Path(decision.path)) if decision.path else 0
            _delete_set(store, decision)
            log.info("pruned set %s: %s", decision.set_id, "; ".join(decision.reasons))
        _forget_binlogs(store, doomed)
        for item in planned["side"]:
            if not item.keep and item.kind != "partial":
                freed += _tree_size(Path(item.path))
                _remove(Path(item.path))
                if item.kind == "verification" and not any(Path(item.path).parent.iterdir()):
                    _remove(Path(item.path).parent)
                log.info("pruned %s %s: %s", item.kind, item.path, "; ".join(item.reasons))
        removed_partials = store.clean_stale_partials(policy.stale_partial_s)
    result = _summary(planned, removed_partials, freed, False)
    try:
        jobs.record_job(store, "prune", start=started, result="ok", sizes={"freed_bytes": freed},
                        deleted_sets=[d["set_id"] for d in result["deleted_sets"]])
    except (OSError, LifeboatError, TypeError, ValueError) as err:  # the history never fails the prune
        log.warning("could not append the prune job record: %s", err)
    audit.safe_append(store, "prune", str(store.root), "changed" if result["changed"] else "unchanged",
                      deleted_sets=[d["set_id"] for d in result["deleted_sets"]],
                      deleted_side=len(result["deleted_side"]), freed_bytes=freed)
    return result


def _tree_size(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _summary(planned: dict[str, Any], removed_partials: list[str], freed: int, check_mode: bool) -> dict[str, Any]:
    decisions: list[Decision] = planned["decisions"]
    side: list[SideItem] = planned["side"]
    deleted_side = [i.to_dict() for i in side if not i.keep and (i.kind != "partial" or check_mode)]
    deleted_side += [{"kind": "partial", "path": p, "keep": False, "reasons": ["stale partial"]}
                     for p in removed_partials]
    deleted_sets = [d.to_dict() for d in decisions if not d.keep]
    return {"changed": bool(deleted_sets or deleted_side), "check_mode": check_mode, "deleted_sets": deleted_sets,
            "kept_sets": [d.to_dict() for d in decisions if d.keep], "deleted_side": deleted_side,
            "kept_side": [i.to_dict() for i in side if i.keep], "removed_partials": removed_partials,
            "freed_bytes": freed}


def policy_from_options(options: dict[str, Any]) -> RetentionPolicy:
    """Build a policy from module/playbook options (durations in days unless ``*_s``).

    Keys: ``keep_last``, ``keep_daily``, ``keep_weekly``, ``keep_monthly``, ``keep_within_days``
    (default rule), ``per_type`` (type -> the same keys), ``min_age_hours``,
    ``binlog_keep_days``, ``verification_days``, ``drill_report_days``, ``kept_aside_days``,
    ``stale_partial_hours``. Missing keys take the :class:`RetentionPolicy` defaults.
    """
    def rule(opts: dict[str, Any], base: GfsRule) -> GfsRule:
        def pick(key: str, default: Any) -> Any:
            value = opts.get(key)
            if value is None:
                return default
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"retention option {key} must be a number >= 0, got {value!r}")
            return value
        return GfsRule(int(pick("keep_last", base.keep_last)), int(pick("keep_daily", base.keep_daily)),
                       int(pick("keep_weekly", base.keep_weekly)), int(pick("keep_monthly", base.keep_monthly)),
                       float(pick("keep_within_days", base.keep_within_s / DAY)) * DAY)

    default = rule(options, DEFAULT_RULE)
    rules = {"default": default}
    for set_type, opts in (options.get("per_type") or {}).items():
        rules[set_type] = rule(opts or {}, default)
    base = RetentionPolicy()

    def days(key: str, fallback_s: float, unit: float = DAY) -> float:
        value = options.get(key)
        return fallback_s if value is None else float(value) * unit
    return RetentionPolicy(rules=rules, min_age_s=days("min_age_hours", base.min_age_s, 3600.0),
                           binlog_keep_within_s=days("binlog_keep_days", base.binlog_keep_within_s),
                           verification_records_s=days("verification_days", base.verification_records_s),
                           drill_reports_s=days("drill_report_days", base.drill_reports_s),
                           kept_aside_s=days("kept_aside_days", base.kept_aside_s),
                           stale_partial_s=days("stale_partial_hours", base.stale_partial_s, 3600.0))


__all__ = ["BinlogRef", "Decision", "GfsRule", "RetentionPolicy", "SetRecord", "SideItem", "gather_records",
           "plan", "plan_retention", "policy_from_options", "prune"]
