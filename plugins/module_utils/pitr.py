# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recovery points and point-in-time recovery (analyze / find / plan / execute).

Everything is computed from the store alone (base backups + the binlog archive);
only :func:`execute` touches a server. Target semantics (see docs/pitr.md):

* ``time`` T (ISO 8601, UTC when no zone is given; truncated to whole seconds):
  replay stops at the first transaction, after the base, whose binlog timestamp
  is > T. So every transaction with timestamp <= T is applied (two transactions in
  the same second as T both are) and none after. Binlog timestamps are the server's
  whole-second commit statement times.
* ``position`` ``file:N``: exclusive; events starting before byte N of ``file`` are
  applied. N must be an event start (or the file's end); if N is inside a
  transaction the stop moves back to that transaction's start (a risk says so).
* ``gtid`` G: inclusive; stops right after the transaction G.
* ``before`` (a regex, ``find``): stops at the start of the matched transaction (by
  position, never by time); more than one match is an error unless ``match_index``.
* ``latest``: to the last complete transaction archived (salvaged files included).

Replay decodes archived binlogs with ``mariadb-binlog`` reading the decrypted stream on
its stdin (nothing decrypted touches the disk), one ``mariadb-binlog`` per file, all
outputs into ONE ``mariadb`` client session; start = the base's recorded position,
stop = the computed exclusive position. Both tools' exit codes and stderr are checked.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils import binlog as bl
from ansible_collections.lifeboat.dr.plugins.module_utils import binlog_events as be
from ansible_collections.lifeboat.dr.plugins.module_utils.errors import (
    ConfigError,
    DependencyMissing,
    NotFound,
    RecoveryTargetInvalid,
    RestoreFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.progress import get_logger

LOG = get_logger("pitr")
UTC = timezone.utc  # noqa: UP017 - datetime.UTC is 3.11+; module targets may be older
POSITION_JSON = "binlog_position.json"
THROUGHPUT_NAME = "replay_throughput.json"
DEFAULT_REPLAY_BPS = 4 * 1024 * 1024  # assumed until an execute has measured it
MAX_LISTED = 200


# --------------------------------------------------------------------------- time
def parse_target_time(text: Any) -> int:
    """Epoch seconds (UTC) of an ISO 8601 time; naive times are UTC; fractions truncated."""
    if isinstance(text, (int, float)):
        return int(text)
    try:
        when = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"cannot parse the target time {text!r}",
                          hint="use ISO 8601, e.g. 2025-01-29T14:03:00Z (UTC if no zone is given)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def iso(epoch: Optional[int]) -> Optional[str]:
    """``2025-01-29T14:03:00Z`` for epoch seconds (None stays None)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: Optional[str]) -> Optional[float]:
    if not text:
        return None
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


# --------------------------------------------------------------------------- bases
@dataclass
class Base:
    """A base backup usable for PITR: a set with a mysql component and its binlog position."""

    set_id: str
    taken_at: Optional[str]
    file: str
    position: int
    gtid: str
    identity: str
    databases: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def list_bases(store: Any, identity: Optional[str] = None) -> list[Base]:
    """Published sets with a ``mysql`` component whose ``mysql/binlog_position.json``
    names a binlog position (oldest first); optionally of one server identity."""
    bases = []
    for info in store.list_sets():
        if "mysql" not in info.components:
            continue
        try:
            bset = store.open_set(info.set_id)
            pos = bset.read_json("mysql", POSITION_JSON)
        except Exception as err:  # noqa: BLE001 - a damaged set is not a base; say so
            LOG.warning("set %s: no usable binlog position (%s)", info.set_id, err)
            continue
        if not pos or not pos.get("file") or pos.get("binlog_enabled") is False:
            continue
        ident = pos.get("server_identity") or bset.component_metadata("mysql").get("server_identity", "")
        if identity and ident != identity:
            continue
        meta = bset.component_metadata("mysql")
        bases.append(Base(info.set_id, pos.get("taken_at") or info.start, pos["file"], int(pos["position"]),
                          pos.get("gtid") or "", ident, list(meta.get("databases") or [])))
    return bases


def resolve_identity(store: Any, identity: Optional[str]) -> str:
    """The identity to work on: given, or the only one archived in the store."""
    if identity:
        return identity
    known = bl.archived_identities(store)
    if len(known) == 1:
        return known[0]
    raise ConfigError(f"the store archives binlogs of {len(known)} servers ({', '.join(known) or 'none'})",
                      hint="give identity (the server_identity of the base backup)")


# --------------------------------------------------------------------------- archive walk
def _seq(name: str) -> int:
    return bl.binlog_sequence(name)


def runs(gen: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Contiguous runs of archived files of a generation (a missing sequence number splits)."""
    files = sorted(gen["files"], key=lambda e: _seq(e["file"]))
    out: list[list[dict[str, Any]]] = []
    for entry in files:
        if out and _seq(entry["file"]) == _seq(out[-1][-1]["file"]) + 1:
            out[-1].append(entry)
        else:
            out.append([entry])
    return out


def run_of(index: bl.ArchiveIndex, file: str, taken_at: Optional[str] = None
           ) -> Optional[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(generation, run from ``file`` onward) for the newest generation holding ``file``
    whose copy was created before ``taken_at``; None if ``file`` is not archived."""
    when = _parse_iso(taken_at)
    for gen in reversed(index.generations):
        for run in runs(gen):
            for i, entry in enumerate(run):
                if entry["file"] != file:
                    continue
                if when is not None and entry.get("fde_time") and entry["fde_time"] > when + 1:
                    continue
                return gen, run[i:]
    return None


def coverage_end(entry: dict[str, Any]) -> Optional[int]:
    """Last second whose transactions are all in this file and earlier ones.

    A closed file: the second before its Rotate (transactions in the rotation second may
    be in the next file); a partial/active one: its last event's time.
    """
    if entry.get("closed_at") and not entry.get("partial"):
        return max(int(entry["closed_at"]) - 1, int(entry.get("max_time") or 0))
    return entry.get("max_time") or entry.get("last_time")


def iter_transactions(store: Any, keyring: Any, run: list[dict[str, Any]], start_pos: int = 4
                      ) -> Iterator[be.Transaction]:
    """Complete transactions of the archived files of ``run`` (in order), from ``start_pos``
    of the first file; decoded from the pipeline reader (nothing written to disk)."""
    for i, entry in enumerate(run):
        with bl.open_archived(store, keyring, entry) as fh:
            events = be.decode_events(be.iter_raw_events(fh, allow_partial_tail=bool(entry.get("partial"))))
            grouper = be.TransactionGrouper(entry["file"])
            for ev in events:
                done = grouper.feed(ev)
                if done is not None and done.complete and (i > 0 or done.start >= start_pos):
                    yield done


def event_starts(store: Any, keyring: Any, entry: dict[str, Any]) -> list[int]:
    """Start offsets of every event of an archived file, plus its end offset."""
    with bl.open_archived(store, keyring, entry) as fh:
        raws = list(be.iter_raw_events(fh, allow_partial_tail=bool(entry.get("partial"))))
    return [r.start for r in raws] + ([raws[-1].end] if raws else [4])


def describe_txn(txn: be.Transaction, with_sql: bool = False) -> dict[str, Any]:
    """JSON view of a transaction (SQL text only when asked: it is data)."""
    out: dict[str, Any] = {"time": iso(txn.timestamp), "timestamp": txn.timestamp, "file": txn.file,
                           "position": txn.start, "end_position": txn.end, "gtid": txn.gtid,
                           "row_events": txn.row_events,
                           "statements": [{"kind": s.kind, "schema": s.schema, "table": s.table}
                                          for s in txn.statements]}
    if with_sql:
        for view, stmt in zip(out["statements"], txn.statements, strict=True):
            view["sql"] = (stmt.sql or "")[:500]
    return out


# --------------------------------------------------------------------------- analyze
def analyze(store: Any, keyring: Any = None, *, identity: Optional[str] = None, start: Any = None,
            end: Any = None, with_sql: bool = False) -> dict[str, Any]:
    """Base backups, archived binlog coverage per generation (with gaps), the recoverable
    window of each base, and (with a keyring and a start or end time) the transactions
    inside [start, end] (inclusive, whole seconds)."""
    identity = resolve_identity(store, identity)
    index = bl.load_index(store, identity)
    bases = list_bases(store, identity)
    generations = []
    for gen in index.generations:
        generations.append({
            "generation": gen["generation"], "started_at": gen.get("started_at"), "reason": gen.get("reason"),
            "files": len(gen["files"]), "gaps": gen.get("gaps", []),
            "runs": [{"first_file": r[0]["file"], "last_file": r[-1]["file"], "from": iso(r[0].get("first_time")),
                      "to": iso(coverage_end(r[-1])), "partial_tail": bool(r[-1].get("partial"))}
                     for r in runs(gen)]})
    windows = [base_window(index, b) for b in bases]
    result: dict[str, Any] = {"identity": identity, "bases": [b.to_dict() for b in bases],
                              "generations": generations, "windows": windows,
                              "recoverable": [w for w in windows if w.get("recoverable")]}
    if keyring is not None and (start is not None or end is not None):
        lo = parse_target_time(start) if start is not None else 0
        hi = parse_target_time(end) if end is not None else 2 ** 62
        events = []
        for gen in index.generations:
            for run in runs(gen):
                selected = [e for e in run if (e.get("max_time") or 0) >= lo and (e.get("first_time") or 0) <= hi]
                for txn in iter_transactions(store, keyring, selected) if selected else ():
                    if lo <= txn.timestamp <= hi:
                        events.append(dict(describe_txn(txn, with_sql), generation=gen["generation"]))
        result["events"] = events[:MAX_LISTED * 5]
        result["events_truncated"] = len(events) > MAX_LISTED * 5
    return result


def base_window(index: bl.ArchiveIndex, base: Base) -> dict[str, Any]:
    """The window a base can be rolled forward through: its position to the end of the
    contiguous archived run that starts at its binlog file."""
    found = run_of(index, base.file, base.taken_at)
    window: dict[str, Any] = {"base": base.set_id, "from": {"time": base.taken_at, "file": base.file,
                                                            "position": base.position, "gtid": base.gtid}}
    if not found:
        window.update(recoverable=False, reason=f"binlog {base.file} (the base's position) is not archived")
        return window
    gen, run = found
    last = run[-1]
    window.update(recoverable=True, generation=gen["generation"],
                  to={"time": iso(coverage_end(last)), "file": last["file"], "position": last["complete_end"],
                      "gtid": last.get("last_gtid"), "partial": bool(last.get("partial"))})
    after = [g for g in gen.get("gaps", []) if _seq(g["missing_from"]) > _seq(last["file"])]
    if after:
        window["gap_after"] = after[0]
    return window


# --------------------------------------------------------------------------- find
def find(store: Any, keyring: Any, pattern: str, *, identity: Optional[str] = None, start: Any = None,
         end: Any = None) -> list[dict[str, Any]]:
    """Transactions whose statements (Query text, Annotate_rows SQL) match ``pattern``
    (case-insensitive regex), optionally within [start, end]; oldest first."""
    try:
        rx = re.compile(pattern, re.I | re.S)
    except re.error as err:
        raise ConfigError(f"invalid pattern {pattern!r}: {err}") from None
    identity = resolve_identity(store, identity)
    index = bl.load_index(store, identity)
    lo = parse_target_time(start) if start is not None else 0
    hi = parse_target_time(end) if end is not None else 2 ** 62
    matches = []
    for gen in index.generations:
        for run in runs(gen):
            selected = [e for e in run if (e.get("max_time") or 0) >= lo and (e.get("first_time") or 0) <= hi]
            for txn in iter_transactions(store, keyring, selected) if selected else ():
                if not lo <= txn.timestamp <= hi:
                    continue
                for stmt in txn.statements:
                    if stmt.sql and rx.search(stmt.sql):
                        m = describe_txn(txn)
                        m.update(generation=gen["generation"], event_position=stmt.position,
                                 statement=stmt.sql[:300], kind=stmt.kind)
                        matches.append(m)
                        break
    return matches


# --------------------------------------------------------------------------- plan
@dataclass
class Stop:
    """Where replay stops: apply events of ``file`` starting before ``position`` (exclusive)."""

    generation: int
    file: str
    position: int
    description: str
    risks: list[str] = field(default_factory=list)
    target_time: Optional[int] = None


def normalize_target(target: Any) -> dict[str, Any]:
    """Accept ``"latest"``, ``{"time": ...}``, ``{"position": "file:N"}``, ``{"gtid": ...}``,
    ``{"before": regex, "match_index": n}``; exactly one kind."""
    if target in (None, "latest"):
        return {"latest": True}
    if not isinstance(target, dict):
        raise ConfigError(f"unknown recovery target {target!r}")
    kinds = [k for k in ("time", "position", "gtid", "before", "latest") if target.get(k) not in (None, False)]
    if len(kinds) != 1:
        raise ConfigError(f"give exactly one recovery target (time, position, gtid, before, latest); got {kinds}")
    return dict(target)


def plan(store: Any, keyring: Any, target: Any, *, identity: Optional[str] = None,
         databases: Optional[list[str]] = None, now: Optional[float] = None) -> dict[str, Any]:
    """A JSON-able recovery plan for ``target``; RecoveryTargetInvalid if impossible."""
    target = normalize_target(target)
    identity = resolve_identity(store, identity)
    index = bl.load_index(store, identity)
    bases = list_bases(store, identity)
    if not bases:
        raise RecoveryTargetInvalid(f"the store has no base backup of {identity} with a binlog position",
                                    hint="take a mysql backup with binary logging on")
    if not index.generations or not any(g["files"] for g in index.generations):
        raise RecoveryTargetInvalid(f"no binlogs of {identity} are archived", hint="run mysql_binlog_archive")
    now = time.time() if now is None else now
    base, gen, run, stop = _choose(store, keyring, index, bases, target, now)
    replay = _replay_files(run, base, stop)
    return _describe_plan(store, keyring, identity, target, base, gen, run, stop, replay, databases)


def _choose(store: Any, keyring: Any, index: bl.ArchiveIndex, bases: list[Base], target: dict[str, Any],
            now: float) -> tuple[Base, dict[str, Any], list[dict[str, Any]], Stop]:
    """Newest base whose position is <= the stop point, with no gap between them."""
    if target.get("time") is not None:
        t = parse_target_time(target["time"])
        if t > now:
            raise RecoveryTargetInvalid(f"target time {iso(t)} is in the future (now {iso(int(now))})")
    errors = []
    for base in sorted(bases, key=lambda b: (b.taken_at or ""), reverse=True):
        if target.get("time") is not None and _parse_iso(base.taken_at) and \
                _parse_iso(base.taken_at) > parse_target_time(target["time"]) + 1:
            errors.append(f"{base.set_id}: taken after the target")
            continue
        found = run_of(index, base.file, base.taken_at)
        if not found:
            errors.append(f"{base.set_id}: its binlog {base.file} is not archived")
            continue
        gen, run = found
        try:
            stop = resolve_stop(store, keyring, gen, run, base, target)
        except _BeforeBase as err:
            errors.append(f"{base.set_id}: {err}")
            continue
        return base, gen, run, stop
    oldest = min(bases, key=lambda b: b.taken_at or "")
    raise RecoveryTargetInvalid(
        f"no base backup can reach target {_target_text(target)}: " + "; ".join(errors[-5:]),
        hint=f"the oldest base is {oldest.set_id} ({oldest.taken_at}); run analyze for the recoverable windows")


class _BeforeBase(Exception):
    """The target lies before this base's position: try an older base."""


def _target_text(target: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in target.items() if v not in (None, False))


def resolve_stop(store: Any, keyring: Any, gen: dict[str, Any], run: list[dict[str, Any]], base: Base,
                 target: dict[str, Any]) -> Stop:
    """Exact exclusive stop point for ``target`` within ``run`` (which starts at the base's file)."""
    g = gen["generation"]
    last = run[-1]
    gap_note = _gap_after(gen, last)
    if target.get("latest"):
        return Stop(g, last["file"], last["complete_end"], "latest archived transaction",
                    risks=[f"archive ends at a gap: {gap_note}"] if gap_note else [])
    if target.get("time") is not None:
        return _stop_for_time(store, keyring, gen, run, base, parse_target_time(target["time"]), gap_note)
    if target.get("position"):
        return _stop_for_position(store, keyring, gen, run, base, str(target["position"]))
    if target.get("gtid"):
        return _stop_for_gtid(store, keyring, g, run, base, str(target["gtid"]), gap_note)
    return _stop_before(store, keyring, g, run, base, target)


def _gap_after(gen: dict[str, Any], last: dict[str, Any]) -> Optional[str]:
    for gap in gen.get("gaps", []):
        if _seq(gap["missing_from"]) == _seq(last["file"]) + 1:
            return f"{gap['missing_from']}..{gap['missing_to']} missing"
    return None


def _stop_for_time(store: Any, keyring: Any, gen: dict[str, Any], run: list[dict[str, Any]], base: Base,
                   t: int, gap_note: Optional[str]) -> Stop:
    g = gen["generation"]
    last_applied: Optional[be.Transaction] = None
    for i, entry in enumerate(run):
        if (entry.get("max_time") or 0) <= t and i < len(run) - 1:
            continue  # every transaction of this file is <= t
        for txn in iter_transactions(store, keyring, [entry], base.position if i == 0 else 4):
            if txn.timestamp > t:
                if i == 0 and last_applied is None and txn.start == base.position and _base_after(base, t):
                    raise _BeforeBase(f"its snapshot is after {iso(t)}")
                return Stop(g, entry["file"], txn.start, f"first transaction after {iso(t)} "
                            f"({iso(txn.timestamp)}, {txn.gtid}) excluded", target_time=t)
            last_applied = txn
    end = coverage_end(run[-1])
    if end is None or t > end:
        where = f"a gap ({gap_note})" if gap_note else "the end of the archive"
        raise RecoveryTargetInvalid(
            f"target time {iso(t)} is after {where}: archived binlogs cover up to {iso(end)}",
            hint="archive again with flush: true (or salvage the binlog files) and re-plan, or pick an earlier "
                 "time" if not gap_note else "the binlogs after the gap are lost; pick a time before it")
    return Stop(g, run[-1]["file"], run[-1]["complete_end"], f"all archived transactions <= {iso(t)}",
                target_time=t)


def _base_after(base: Base, t: int) -> bool:
    when = _parse_iso(base.taken_at)
    return when is not None and int(when) > t


def _stop_for_position(store: Any, keyring: Any, gen: dict[str, Any], run: list[dict[str, Any]], base: Base,
                       position: str) -> Stop:
    m = re.match(r"^(.+):(\d+)$", position.strip())
    if not m:
        raise ConfigError(f"position target {position!r} is not <file>:<offset>")
    file, pos = m.group(1), int(m.group(2))
    entry = next((e for e in run if e["file"] == file), None)
    if entry is None:
        if _seq(file) < _seq(run[0]["file"]):
            raise _BeforeBase(f"{file} is before its binlog {run[0]['file']}")
        gap = next((x for x in gen.get("gaps", []) if _seq(x["missing_from"]) <= _seq(file) <= _seq(x["missing_to"])),
                   None)
        raise RecoveryTargetInvalid(f"binlog {file} is {'inside a gap' if gap else 'not archived'}",
                                    hint="run analyze for the archived files and gaps")
    if file == base.file and pos < base.position:
        raise _BeforeBase(f"{file}:{pos} is before its position {base.position}")
    starts = event_starts(store, keyring, entry)
    if pos not in starts:
        near = [s for s in starts if abs(s - pos) < 2000][:6]
        raise RecoveryTargetInvalid(f"{file}:{pos} is not the start of an event",
                                    hint=f"event starts near it: {near}")
    risks = []
    stop_pos = pos
    for txn in iter_transactions(store, keyring, [entry], base.position if entry is run[0] else 4):
        if txn.start < pos < txn.end:
            stop_pos = txn.start
            risks.append(f"{file}:{pos} is inside transaction {txn.gtid} ({txn.start}-{txn.end}); "
                         f"stopping at its start {txn.start}: it is NOT applied")
            break
    if stop_pos > entry["complete_end"]:
        stop_pos = entry["complete_end"]
    return Stop(gen["generation"], file, stop_pos, f"events starting before {file}:{pos}", risks)


def _stop_for_gtid(store: Any, keyring: Any, g: int, run: list[dict[str, Any]], base: Base, gtid: str,
                   gap_note: Optional[str]) -> Stop:
    if base.gtid and _gtid_in_state(gtid, base.gtid):
        raise _BeforeBase(f"GTID {gtid} is already in its snapshot ({base.gtid})")
    for i, entry in enumerate(run):
        if not _gtid_may_be_in(entry, gtid):
            continue
        for txn in iter_transactions(store, keyring, [entry], base.position if i == 0 else 4):
            if txn.gtid == gtid:
                return Stop(g, entry["file"], txn.end, f"through transaction {gtid} (inclusive)")
    raise RecoveryTargetInvalid(f"GTID {gtid} is not in the archived binlogs after the base"
                                + (f" (the archive has a gap: {gap_note})" if gap_note else ""),
                                hint="run analyze/find to list GTIDs")


def _gtid_parts(gtid: Optional[str]) -> Optional[tuple[int, int, int]]:
    m = re.match(r"^(\d+)-(\d+)-(\d+)$", (gtid or "").strip())
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def _gtid_in_state(gtid: str, state: str) -> bool:
    """MariaDB: is ``gtid`` at or before the per-domain position ``state`` (``d-s-n,...``)?"""
    parts = _gtid_parts(gtid)
    if not parts:
        return False
    for item in state.split(","):
        p = _gtid_parts(item)
        if p and p[0] == parts[0] and parts[2] <= p[2]:
            return True
    return False


def _gtid_may_be_in(entry: dict[str, Any], gtid: str) -> bool:
    want, lo, hi = _gtid_parts(gtid), _gtid_parts(entry.get("first_gtid")), _gtid_parts(entry.get("last_gtid"))
    if not (want and lo and hi) or lo[0] != want[0] or hi[0] != want[0]:
        return entry.get("first_gtid") is not None or want is None
    return lo[2] <= want[2] <= hi[2]


def _stop_before(store: Any, keyring: Any, g: int, run: list[dict[str, Any]], base: Base,
                 target: dict[str, Any]) -> Stop:
    matches = target.get("_matches")
    if matches is None:
        raise ConfigError("a 'before' target needs its matches resolved (use plan())")
    m = matches[target.get("match_index") or 0] if matches else None
    if m is None:
        raise RecoveryTargetInvalid("no event matches")
    if m["generation"] != g or all(e["file"] != m["file"] for e in run):
        raise _BeforeBase(f"the event {m['file']}:{m['position']} is not reachable from it")
    if m["file"] == base.file and m["position"] < base.position:
        raise _BeforeBase(f"the event {m['file']}:{m['position']} is before its position {base.position}")
    return Stop(g, m["file"], m["position"], f"just before {m['kind']} at {m['file']}:{m['position']} "
                f"({m['time']}, {m['gtid']})")


def resolve_before_target(store: Any, keyring: Any, target: dict[str, Any], identity: Optional[str]) -> dict:
    """Find the event of a ``before`` target; >1 match without ``match_index`` is an error listing them."""
    matches = find(store, keyring, target["before"], identity=identity, start=target.get("start"),
                   end=target.get("end"))
    if not matches:
        raise RecoveryTargetInvalid(f"no archived statement matches {target['before']!r}",
                                    hint="check the pattern with mode: find (case-insensitive regex)")
    idx = target.get("match_index")
    if idx is None and len(matches) > 1:
        listing = "; ".join(f"[{i}] {m['time']} {m['file']}:{m['position']} {m['gtid']} {m['statement'][:80]}"
                            for i, m in enumerate(matches[:20]))
        raise RecoveryTargetInvalid(f"{len(matches)} events match {target['before']!r}: {listing}",
                                    hint="give match_index (0-based) or narrow the pattern/start/end")
    if idx is not None and not 0 <= int(idx) < len(matches):
        raise RecoveryTargetInvalid(f"match_index {idx} is out of range (0..{len(matches) - 1})")
    return dict(target, _matches=[matches[int(idx or 0)]], match_index=0, matched=matches[int(idx or 0)])


def _replay_files(run: list[dict[str, Any]], base: Base, stop: Stop) -> list[dict[str, Any]]:
    out = []
    for entry in run:
        start = base.position if entry["file"] == base.file else 4
        stop_pos = stop.position if entry["file"] == stop.file else entry["complete_end"]
        out.append({"file": entry["file"], "set_id": entry["set_id"], "parent": entry["parent"],
                    "start": start, "stop": stop_pos, "partial": bool(entry.get("partial")),
                    "bytes": max(0, stop_pos - start)})
        if entry["file"] == stop.file:
            break
    return out


def _describe_plan(store: Any, keyring: Any, identity: str, target: dict[str, Any], base: Base,
                   gen: dict[str, Any], run: list[dict[str, Any]], stop: Stop, replay: list[dict[str, Any]],
                   databases: Optional[list[str]]) -> dict[str, Any]:
    applied = lost = 0
    row_events = 0
    ddl: list[dict[str, Any]] = []
    last_applied = first_lost = None
    by_file = {r["file"]: r for r in replay}
    for i, entry in enumerate(run):
        start = base.position if i == 0 else 4
        for txn in iter_transactions(store, keyring, [entry], start):
            r = by_file.get(entry["file"])
            if r is not None and txn.end <= r["stop"]:
                applied += 1
                row_events += txn.row_events
                last_applied = txn
                if txn.is_ddl:
                    ddl.append(describe_txn(txn))
            else:
                lost += 1
                first_lost = first_lost or txn
    total_bytes = sum(r["bytes"] for r in replay)
    bps = measured_throughput(store, identity) or DEFAULT_REPLAY_BPS
    risks = list(stop.risks)
    if ddl:
        risks.append(f"{len(ddl)} DDL statement(s) in the replay window (schema changes are replayed too)")
    if any(r["partial"] for r in replay):
        risks.append("the replay uses a salvaged (partial) binlog: only complete transactions are applied")
    gaps_after = _gap_after(gen, run[-1])
    if gaps_after:
        risks.append(f"binlogs after {run[-1]['file']} were lost before archiving ({gaps_after})")
    if databases:
        risks.append("only databases " + ", ".join(databases) + " are restored and replayed (mariadb-binlog "
                     "--database: statements are filtered by their default database)")
    return {
        "identity": identity, "target": {k: v for k, v in target.items() if not k.startswith("_")},
        "resolved_stop": {"file": stop.file, "position": stop.position, "exclusive": True,
                          "description": stop.description, "target_time": iso(stop.target_time)},
        "generation": gen["generation"], "base": base.to_dict(), "replay": replay,
        "databases": databases or None,
        "transactions_applied": applied, "row_events": row_events,
        "last_applied": describe_txn(last_applied) if last_applied else None,
        "expected_data_loss": {"transactions_not_applied": lost,
                               "first_not_applied": describe_txn(first_lost) if first_lost else None,
                               "archive_end": {"file": run[-1]["file"], "position": run[-1]["complete_end"],
                                               "time": iso(coverage_end(run[-1]))}},
        "estimated_duration_s": round(total_bytes / bps + 2.0, 1), "throughput_bps_assumed": bps,
        "replay_bytes": total_bytes,
        "ddl_in_window": ddl[:MAX_LISTED],
        "risks": risks,
        "steps": [f"restore base {base.set_id} ({base.taken_at}) with the mysql restore"
                  + (f" (databases: {', '.join(databases)})" if databases else ""),
                  f"replay {len(replay)} archived binlog file(s) from {base.file}:{base.position} to "
                  f"{stop.file}:{stop.position} (exclusive) in one client session",
                  "verify the replay ended exactly at the stop position",
                  "FLUSH BINARY LOGS and start a new archive generation"],
        "rollback": "the mysql restore keeps the replaced databases aside as its result describes; the binlog "
                    "archive is never modified (a new generation starts after execute), so the plan can be "
                    "re-run from the same base",
    }


# --------------------------------------------------------------------------- throughput
def measured_throughput(store: Any, identity: str) -> Optional[float]:
    """Bytes/s of binlog replay measured by the last execute (None if never measured)."""
    path = bl.index_path(store, identity).parent / THROUGHPUT_NAME
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["bytes_per_s"])
    except (OSError, ValueError, KeyError):
        return None


def _record_throughput(store: Any, identity: str, nbytes: int, seconds: float) -> None:
    from ansible_collections.lifeboat.dr.plugins.module_utils import backupset
    if nbytes <= 0 or seconds <= 0:
        return
    path = bl.index_path(store, identity).parent / THROUGHPUT_NAME
    backupset.make_private_dirs(path.parent)
    backupset.write_file_atomic(path, json.dumps({"bytes_per_s": nbytes / seconds, "bytes": nbytes,
                                                  "seconds": seconds, "measured_at": iso(int(time.time()))}).encode())


# --------------------------------------------------------------------------- replay
def replay(store: Any, keyring: Any, replay_files: list[dict[str, Any]], conn_params: Any, *,
           databases: Optional[list[str]] = None, log_replayed: bool = False, flavor: Any = None) -> dict[str, Any]:
    """Apply the archived binlog ranges to the server in ONE client session.

    Each file is decrypted by the pipeline reader straight into ``mariadb-binlog -``
    (``--start-position`` on the first, ``--stop-position`` on the last, exclusive);
    the decoded SQL of all files goes, in order, into one ``mariadb`` process. Any
    non-zero exit or error output fails with RestoreFailed. Returns bytes and seconds.
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils import mysql
    client = flavor.client_tool if flavor else _tool("mariadb", "mysql")
    decoder = flavor.binlog_tool if flavor else _tool("mariadb-binlog", "mysqlbinlog")
    started = time.monotonic()
    total = 0
    with mysql.option_file(conn_params) as optfile:
        argv = mysql.tool_argv(client, optfile, "--binary-mode", "--batch", "--skip-column-names")
        sink = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sink_err: list[bytes] = []
        readers = [_drain(sink.stdout, []), _drain(sink.stderr, sink_err)]
        try:
            if not log_replayed:
                sink.stdin.write(b"SET SESSION sql_log_bin = 0;\n")
            for i, rf in enumerate(replay_files):
                total += _decode_into(store, keyring, rf, decoder, sink.stdin, databases,
                                      first=i == 0, keep_gtids=log_replayed)
            sink.stdin.close()
        except BrokenPipeError:
            pass
        except BaseException:
            sink.kill()
            sink.wait()
            raise
        rc = sink.wait()
        for t in readers:
            t.join()
    err_text = b"".join(sink_err).decode("utf-8", "replace").strip()
    if rc != 0 or err_text:
        raise RestoreFailed(f"{client} failed while replaying binlogs (exit {rc}): {err_text[:800]}",
                            hint="the server is between the base and the target; fix the cause and re-run "
                                 "execute (it restores the base again)")
    return {"bytes": total, "seconds": round(time.monotonic() - started, 3)}


def _tool(mariadb_name: str, mysql_name: str) -> str:
    import shutil
    for name in (mariadb_name, mysql_name):
        if shutil.which(name):
            return name
    raise DependencyMissing(f"neither {mariadb_name} nor {mysql_name} is installed",
                            hint="install the MariaDB client package (mariadb-client)")


def _drain(stream: Any, into: list[bytes]) -> threading.Thread:
    def run() -> None:
        for chunk in iter(lambda: stream.read(65536), b""):
            into.append(chunk)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _decode_into(store: Any, keyring: Any, rf: dict[str, Any], decoder: str, sink: Any,
                 databases: Optional[list[str]], first: bool, keep_gtids: bool) -> int:
    """Run ``mariadb-binlog -`` on one archived file (fed from the pipeline) into ``sink``.

    Without ``keep_gtids`` the decoder's ``SET @@session.gtid_seq_no=N`` lines are dropped
    (mariadb-binlog has no --skip-gtids): the replay is not binlogged, and with
    gtid_strict_mode the server refuses to take an older sequence number.
    """
    argv = [decoder]
    if first and rf["start"] > 4:
        argv.append(f"--start-position={rf['start']}")
    argv.append(f"--stop-position={rf['stop']}")
    for db in databases or []:
        argv.append(f"--database={db}")
    argv.append("-")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err: list[bytes] = []
    err_thread = _drain(proc.stderr, err)
    feed_error: list[BaseException] = []

    def feed() -> None:
        try:
            with bl.open_archived(store, keyring, rf) as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    proc.stdin.write(chunk)
        except BrokenPipeError:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            feed_error.append(exc)
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    total = 0
    try:
        if keep_gtids:
            for chunk in iter(lambda: proc.stdout.read(1 << 16), b""):
                sink.write(chunk)
                total += len(chunk)
        else:
            for line in proc.stdout:
                if not _GTID_SEQ_LINE.match(line):
                    sink.write(line)
    except BaseException:
        proc.kill()
        raise
    finally:
        rc = proc.wait()
        feeder.join()
        err_thread.join()
    if feed_error:
        raise feed_error[0]
    text = b"".join(err).decode("utf-8", "replace").strip()
    if rc != 0 or _real_errors(text):
        raise RestoreFailed(f"{decoder} failed on {rf['file']} (exit {rc}): {text[:800]}",
                            hint="the archived file may be damaged; verify the binlog set " + rf["set_id"])
    return rf["bytes"]


_GTID_SEQ_LINE = re.compile(rb"^/\*M!100001 SET @@session\.gtid_seq_no=\d+\*/(/\*!\*/)?;\r?\n?$")


def _real_errors(stderr_text: str) -> bool:
    """True when the decoder's stderr has more than known harmless warnings."""
    lines = [ln for ln in stderr_text.splitlines() if ln.strip()]
    harmless = ("was not closed properly",)
    return any(not any(h in ln for h in harmless) for ln in lines)


# --------------------------------------------------------------------------- execute
def execute(store: Any, keyring: Any, target: Any, conn_params: Any, *, identity: Optional[str] = None,
            databases: Optional[list[str]] = None, log_replayed: bool = False, restore_kwargs: Optional[dict] = None,
            new_generation: bool = True) -> dict[str, Any]:
    """Plan, restore the base (mysql restore), replay to the target, start a new archive
    generation. Returns the plan plus what was done. Nothing is changed when planning fails."""
    target = normalize_target(target)
    if target.get("before"):
        target = resolve_before_target(store, keyring, target, identity)
    the_plan = plan(store, keyring, target, identity=identity, databases=databases)
    identity = the_plan["identity"]
    bset = store.open_set(the_plan["base"]["set_id"])
    restored = restore_base(bset, keyring, conn_params, databases,
                            {"write_binlog": log_replayed, **(restore_kwargs or {})})
    done = replay(store, keyring, the_plan["replay"], conn_params, databases=databases, log_replayed=log_replayed)
    _record_throughput(store, identity, sum(r["bytes"] for r in the_plan["replay"]), done["seconds"])
    generation = None
    if new_generation:
        generation = _start_generation_after(store, identity, conn_params, the_plan)
    return {"changed": True, "plan": the_plan, "restore": restored, "replay": done, "new_generation": generation}


def restore_base(bset: Any, keyring: Any, conn_params: Any, databases: Optional[list[str]],
                 extra: dict[str, Any]) -> Any:
    """Restore the base set with the mysql helper's ``restore_mysql_from`` (databases only if given)."""
    try:
        from ansible_collections.lifeboat.dr.plugins.module_utils import mysql_restore
    except ImportError:
        raise DependencyMissing("the mysql restore (module_utils/mysql_restore.py) is not available",
                                hint="install the complete lifeboat.dr collection") from None
    import inspect
    func = mysql_restore.restore_mysql_from
    kwargs = dict(extra)
    params = inspect.signature(func).parameters
    if databases:
        if "databases" not in params:
            raise ConfigError("this mysql restore cannot restore selected databases")
        kwargs["databases"] = databases
    kwargs = {k: v for k, v in kwargs.items() if k in params or any(p.kind == p.VAR_KEYWORD for p in params.values())}
    return func(bset, keyring, conn_params, **kwargs)


def _start_generation_after(store: Any, identity: str, conn_params: Any, the_plan: dict[str, Any]) -> Any:
    """FLUSH BINARY LOGS and mark a new archive generation starting at the new binlog file."""
    from ansible_collections.lifeboat.dr.plugins.module_utils import mysql
    try:
        conn = mysql.connect(conn_params)
        try:
            mysql.execute(conn, "FLUSH BINARY LOGS")
            status = mysql.query_all(conn, "SHOW BINARY LOGS")
            first = bl._text(status[-1][0]) if status else None
        finally:
            conn.close()
    except Exception as err:  # noqa: BLE001 - the recovery itself succeeded; report, do not fail
        LOG.warning("could not flush binary logs after PITR (%s); the next archive run detects the new "
                    "history by itself only if names restart", err)
        first = None
    return bl.mark_new_generation(store, identity, f"PITR executed to {the_plan['resolved_stop']['description']} "
                                  f"from base {the_plan['base']['set_id']}", first_file=first)


__all__ = ["analyze", "find", "plan", "execute", "replay", "list_bases", "resolve_before_target", "NotFound"]
