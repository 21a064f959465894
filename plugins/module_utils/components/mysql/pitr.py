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
from typing import TYPE_CHECKING, Any, Iterator, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog as bl
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog_events as be
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    DependencyMissing,
    LifeboatError,
    NotFound,
    RecoveryTargetInvalid,
    RestoreFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    ProgressMeter,
    get_logger,
    log_progress,
    set_step,
)

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet

LOG = get_logger("pitr")
UTC = timezone.utc  # noqa: UP017 - datetime.UTC is 3.11+; module targets may be older
POSITION_JSON = "binlog_position.json"
THROUGHPUT_NAME = "replay_throughput.json"
DURABILITY_STATE_NAME = "pitr_relaxed_durability.json"
RELAXED_DURABILITY = {"innodb_flush_log_at_trx_commit": 2, "sync_binlog": 0}
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


def list_bases(store: Store, identity: Optional[str] = None) -> list[Base]:
    """Published sets with a ``mysql`` component whose ``mysql/binlog_position.json``
    names a binlog position (oldest first); optionally of one server identity."""
    bases = []
    for info in store.list_sets():
        if "mysql" not in info.components:
            continue
        try:
            base = base_of_set(store.open_set(info.set_id), info.start)
        except Exception as err:  # noqa: BLE001 - a damaged set is not a base; say so
            LOG.warning("set %s: no usable binlog position (%s)", info.set_id, err)
            continue
        if base is None or (identity and base.identity != identity):
            continue
        bases.append(base)
    return bases


def base_of_set(bset: BackupSet, started: Optional[str] = None) -> Optional[Base]:
    """The :class:`Base` of an opened set (its ``mysql/binlog_position.json``), or None when
    the set records no binlog position (binary logging was off)."""
    pos = bset.read_json("mysql", POSITION_JSON)
    if not pos or not pos.get("file") or pos.get("binlog_enabled") is False:
        return None
    meta = bset.component_metadata("mysql")
    ident = pos.get("server_identity") or meta.get("server_identity", "")
    return Base(bset.set_id, pos.get("taken_at") or started, pos["file"], int(pos["position"]),
                pos.get("gtid") or "", ident, list(meta.get("databases") or []))


def resolve_identity(store: Store, identity: Optional[str]) -> str:
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
    if entry.get("branch_limit") is not None:
        return entry.get("branch_covered_until")
    if entry.get("closed_at") and not entry.get("partial"):
        return max(int(entry["closed_at"]) - 1, int(entry.get("max_time") or 0))
    return entry.get("max_time") or entry.get("last_time")


def effective_end(entry: dict[str, Any]) -> int:
    """Where the replay of an archived file ends: its last complete event, or the branch
    point when a newer generation of the line of history left this file there."""
    limit = entry.get("branch_limit")
    return int(entry["complete_end"]) if limit is None else min(int(limit), int(entry["complete_end"]))


def iter_transactions(store: Store, keyring: KeyRing, run: list[dict[str, Any]], start_pos: int = 4
                      ) -> Iterator[be.Transaction]:
    """Complete transactions of the archived files of ``run`` (in order), from ``start_pos``
    of the first file; decoded from the pipeline reader (nothing written to disk).

    An entry of a line of history carrying ``branch_limit`` (the exclusive position where
    a newer generation branched off) yields only the transactions starting before it.
    """
    for i, entry in enumerate(run):
        limit = entry.get("branch_limit")
        with bl.open_archived(store, keyring, entry) as fh:
            events = be.decode_events(be.iter_raw_events(fh, allow_partial_tail=bool(entry.get("partial"))))
            grouper = be.TransactionGrouper(entry["file"])
            for ev in events:
                done = grouper.feed(ev)
                if done is None or not done.complete or (i == 0 and done.start < start_pos):
                    continue
                if limit is not None and done.start >= limit:
                    break
                yield done


def event_starts(store: Store, keyring: KeyRing, entry: dict[str, Any]) -> list[int]:
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


# --------------------------------------------------------------------------- timelines
@dataclass
class Segment:
    """One generation on a line of history, up to ``limit`` = (file, exclusive position)
    where the next generation of the line branched off (None: to its end)."""

    generation: dict[str, Any]
    limit: Optional[tuple[str, int]] = None

    @property
    def number(self) -> int:
        return int(self.generation["generation"])


def generation_numbers(index: bl.ArchiveIndex) -> list[int]:
    """The generation numbers of an archive index, oldest first."""
    return [int(g["generation"]) for g in index.generations]


def line_of_history(index: bl.ArchiveIndex, generation: Optional[int] = None) -> list[Segment]:
    """The line of history ending in ``generation`` (default: the newest, the CURRENT line).

    Like a PostgreSQL timeline history: walks the recorded branch points back to a root
    (generation 1, or a generation started without a known parent, e.g. after RESET MASTER).
    Each ancestor counts up to the point where its child branched off. ConfigError for a
    generation that does not exist.
    """
    by_number = {int(g["generation"]): g for g in index.generations}
    if not by_number:
        return []
    number = generation if generation is not None else max(by_number)
    if int(number) not in by_number:
        raise ConfigError(f"generation {number} does not exist in the binlog archive of {index.identity} "
                          f"(generations: {', '.join(str(n) for n in sorted(by_number))})",
                          hint="run analyze (or lifeboat recovery-points) to list the generations")
    gen = by_number[int(number)]
    line = [Segment(gen)]
    seen = {int(number)}
    while True:
        branch = gen.get("branch") or {}
        parent = branch.get("parent_generation")
        if parent is None or int(parent) not in by_number or int(parent) in seen:
            return line
        seen.add(int(parent))
        gen = by_number[int(parent)]
        line.insert(0, Segment(gen, (str(branch["file"]), int(branch["position"]))))


def _before_or_at(file: str, position: int, limit: Optional[tuple[str, int]]) -> bool:
    """Is ``file:position`` at or before the branch point ``limit`` (same generation)?"""
    return limit is None or (_seq(file), position) <= (_seq(limit[0]), limit[1])


def _base_entry(gen: dict[str, Any], base: Base) -> Optional[dict[str, Any]]:
    """The archived copy of the base's binlog file in ``gen`` (created before the base)."""
    when = _parse_iso(base.taken_at)
    for entry in gen["files"]:
        if entry["file"] != base.file:
            continue
        if when is not None and entry.get("fde_time") and entry["fde_time"] > when + 1:
            continue
        return entry
    return None


def base_segment(line: list[Segment], base: Base) -> tuple[Optional[int], str]:
    """(index of the segment of ``line`` the base lies on, or None; why not when None)."""
    for k in range(len(line) - 1, -1, -1):
        seg = line[k]
        if _base_entry(seg.generation, base) is None:
            continue
        if _before_or_at(base.file, base.position, seg.limit):
            return k, ""
        return None, (f"taken in generation {seg.number} at {base.file}:{base.position}, after the point "
                      f"{seg.limit[0]}:{seg.limit[1]} where generation {line[k + 1].number} branched off "
                      "(that history was abandoned)")
    return None, f"its binlog {base.file} is not archived in generation(s) " \
                 f"{', '.join(str(s.number) for s in line)} of this line"


def _branch_covered_until(child: dict[str, Any]) -> Optional[int]:
    at = _parse_iso((child.get("branch") or {}).get("at") or child.get("started_at"))
    return int(at) if at is not None else None


def _limited(entry: dict[str, Any], number: int, limit: Optional[tuple[str, int]],
             child: Optional[dict[str, Any]]) -> dict[str, Any]:
    """A copy of an index entry as a step of a line of history."""
    step = dict(entry, generation=number)
    if limit is not None and entry["file"] == limit[0]:
        step["branch_limit"] = limit[1]
        step["branch_covered_until"] = _branch_covered_until(child or {})
        step["branched_to"] = int(child["generation"]) if child else None
    return step


def chain_from(line: list[Segment], k: int, base: Base) -> tuple[list[dict[str, Any]], Optional[str]]:
    """The archived files a replay from ``base`` (on segment ``k``) follows along ``line``.

    Returns (steps, broken): steps are index entries (copies carrying ``generation`` and,
    at a branch point, ``branch_limit``) from the base's file through each generation of the
    line up to the point the next one branched off; ``broken`` names exactly what is missing
    when the line cannot be followed to its end (a generation's binlogs not archived, a gap),
    None when the steps reach the newest archived file of the line.
    """
    steps: list[dict[str, Any]] = []
    for j in range(k, len(line)):
        seg = line[j]
        child = line[j + 1].generation if j + 1 < len(line) else None
        gen = seg.generation
        if j == k:
            first_entry = _base_entry(gen, base)
            run = next(r for r in runs(gen) if first_entry in r)
            run = run[run.index(first_entry):]
        else:
            all_runs = runs(gen)
            first = gen.get("first_file")
            if not all_runs:
                if seg.limit is None:
                    return steps, None  # the newest generation: nothing archived yet
                return steps, (f"generation {seg.number} has no archived binlog"
                               + (f" (its history starts at {first})" if first else ""))
            run = all_runs[0]
            if first and run[0]["file"] != first:
                return steps, (f"binlogs {first}..{run[0]['file']} (excluded) of generation {seg.number} are not "
                               "archived: the start of its history is missing")
        if seg.limit is not None:
            names = [e["file"] for e in run]
            if seg.limit[0] not in names:
                return steps + [_limited(e, seg.number, None, None) for e in run], (
                    f"generation {seg.number}'s archived binlogs end at {run[-1]['file']} before its branch point "
                    f"{seg.limit[0]}:{seg.limit[1]}: binlogs up to {seg.limit[0]} are missing")
            run = run[:names.index(seg.limit[0]) + 1]
        steps.extend(_limited(e, seg.number, seg.limit, child) for e in run)
    return steps, None


def describe_line(line: list[Segment]) -> list[dict[str, Any]]:
    """JSON view of a line of history: each generation and where the line leaves it."""
    out = []
    for seg in line:
        view: dict[str, Any] = {"generation": seg.number}
        if seg.limit is not None:
            view["until"] = {"file": seg.limit[0], "position": seg.limit[1], "exclusive": True}
        out.append(view)
    return out


def base_backup_needed(store: Store, identity: str, index: Optional[bl.ArchiveIndex] = None,
                       bases: Optional[list[Base]] = None) -> Optional[str]:
    """Why a new base backup is needed, or None.

    After a PITR or restore (the newest generation records a branch) a base backup taken
    since it is needed: until then every PITR replays the older generation's binlogs up to
    the branch point from a base taken before it (slower, and lost with that history's
    archive). A newer generation the archive started without a known parent (binlog history
    restarted: RESET MASTER, a fresh datadir, another server) cannot be recovered at all
    without a base on it.
    """
    index = index or bl.load_index(store, identity)
    if not index.generations:
        return None
    gen = index.generations[-1]
    branch = gen.get("branch")
    if not branch and int(gen["generation"]) == 1:
        return None
    since = _parse_iso((branch or {}).get("at") or gen.get("started_at"))
    bases = list_bases(store, identity) if bases is None else bases
    if any(since is not None and (_parse_iso(b.taken_at) or 0) >= since for b in bases):
        return None
    if not branch:
        line = line_of_history(index)
        if any(base_segment(line, b)[0] is not None for b in bases):
            return None
        return (f"no base backup on generation {gen['generation']}: its binlog history restarted without a known "
                f"parent ({gen.get('reason')}), so no PITR can reach it: take a base backup with backup.yml")
    return (f"no base backup since generation {gen['generation']} began ({branch.get('by') or 'recovery'} at "
            f"{branch.get('at')}, branched from generation {branch.get('parent_generation')} at "
            f"{branch.get('file')}:{branch.get('position')}): take one with backup.yml (or run the recovery "
            "with lifeboat_mysql_base_after_recovery: true)")


# --------------------------------------------------------------------------- analyze
def analyze(store: Store, keyring: Optional[KeyRing] = None, *, identity: Optional[str] = None, start: Any = None,
            end: Any = None, with_sql: bool = False) -> dict[str, Any]:
    """Base backups, archived binlog coverage per generation (with gaps), each generation's
    branch point and what is recoverable on its line of history, the recoverable window of
    each base on the current line, and (with a keyring and a start or end time) the
    transactions inside [start, end] (inclusive, whole seconds)."""
    identity = resolve_identity(store, identity)
    index = bl.load_index(store, identity)
    bases = list_bases(store, identity)
    newest = generation_numbers(index)[-1] if index.generations else None
    generations = []
    for gen in index.generations:
        line = line_of_history(index, int(gen["generation"]))
        line_windows = [w for w in (base_window(index, b, line) for b in bases) if w.get("recoverable")]
        best = max(line_windows, key=lambda w: _parse_iso((w.get("to") or {}).get("time")) or 0, default=None)
        generations.append({
            "generation": gen["generation"], "started_at": gen.get("started_at"), "reason": gen.get("reason"),
            "current": gen["generation"] == newest, "first_file": gen.get("first_file"),
            "branch": gen.get("branch"), "line": describe_line(line),
            "files": len(gen["files"]), "gaps": gen.get("gaps", []),
            "runs": [{"first_file": r[0]["file"], "last_file": r[-1]["file"], "from": iso(r[0].get("first_time")),
                      "to": iso(coverage_end(r[-1])), "partial_tail": bool(r[-1].get("partial"))}
                     for r in runs(gen)],
            "bases_on_line": [w["base"] for w in line_windows],
            "recoverable": ({"from_base": best["base"], "from": best["from"], "to": best["to"]}
                            if best else None),
            "not_recoverable_because": None if best else _why_line_unrecoverable(index, line, bases)})
    current = line_of_history(index) if index.generations else []
    windows = [base_window(index, b, current) for b in bases]
    result: dict[str, Any] = {"identity": identity, "bases": [b.to_dict() for b in bases],
                              "generations": generations, "current_generation": newest,
                              "current_line": describe_line(current), "windows": windows,
                              "recoverable": [w for w in windows if w.get("recoverable")],
                              "base_backup_needed": base_backup_needed(store, identity, index, bases)}
    if keyring is not None and (start is not None or end is not None):
        lo = parse_target_time(start) if start is not None else 0
        hi = parse_target_time(end) if end is not None else 2 ** 62
        events = []
        for gen in index.generations:
            for run in runs(gen):
                selected = [e for e in run if (e.get("max_time") or 0) >= lo and (e.get("first_time") or 0) <= hi]
                for txn in iter_transactions(store, keyring, selected) if selected else ():
                    if lo <= txn.timestamp <= hi:
                        events.append(dict(describe_txn(txn, with_sql), generation=gen["generation"],
                                           on_current_line=_on_line(current, int(gen["generation"]), txn.file,
                                                                    txn.start)))
        result["events"] = events[:MAX_LISTED * 5]
        result["events_truncated"] = len(events) > MAX_LISTED * 5
    return result


def _why_line_unrecoverable(index: bl.ArchiveIndex, line: list[Segment], bases: list[Base]) -> str:
    """Why no base backup can be rolled forward on ``line`` (for analyze)."""
    reasons = []
    for base in bases:
        _k, why = base_segment(line, base)
        if why:
            reasons.append(f"{base.set_id}: {why}")
    return (f"no base backup on the line of history of generation {line[-1].number}"
            + (f" ({'; '.join(reasons[-3:])})" if reasons else "") + ": take one with backup.yml")


def base_window(index: bl.ArchiveIndex, base: Base, line: Optional[list[Segment]] = None) -> dict[str, Any]:
    """The window a base can be rolled forward through on ``line`` (default: the current
    line of history): its position to the end of the archived binlogs the line follows
    without a gap (across branch points into newer generations)."""
    line = line_of_history(index) if line is None else line
    window: dict[str, Any] = {"base": base.set_id, "from": {"time": base.taken_at, "file": base.file,
                                                            "position": base.position, "gtid": base.gtid},
                              "line_generation": line[-1].number if line else None}
    k, why = base_segment(line, base) if line else (None, f"binlog {base.file} (the base's position) is not archived")
    if k is None:
        window.update(recoverable=False, reason=why)
        return window
    run, broken = chain_from(line, k, base)
    last = run[-1]
    gen = next(seg.generation for seg in line if seg.number == _gen_of(last, line[k].number))
    window.update(recoverable=True, generation=line[k].number,
                  to={"time": iso(coverage_end(last)), "file": last["file"], "position": effective_end(last),
                      "generation": _gen_of(last, gen["generation"]),
                      "gtid": last.get("last_gtid") if last.get("branch_limit") is None else None,
                      "partial": bool(last.get("partial"))})
    if broken:
        window["broken"] = broken
    after = [g for g in gen.get("gaps", []) if _seq(g["missing_from"]) > _seq(last["file"])]
    if after:
        window["gap_after"] = after[0]
    return window


# --------------------------------------------------------------------------- find
def find(store: Store, keyring: KeyRing, pattern: str, *, identity: Optional[str] = None, start: Any = None,
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


def plan(store: Store, keyring: KeyRing, target: Any, *, identity: Optional[str] = None,
         databases: Optional[list[str]] = None, now: Optional[float] = None,
         generation: Optional[int] = None) -> dict[str, Any]:
    """A JSON-able recovery plan for ``target``; RecoveryTargetInvalid if impossible.

    The target is resolved on the CURRENT line of history (the newest generation and the
    branch points back to its root) unless ``generation`` names another line. A target
    that lies only on history a PITR or restore abandoned is refused unless its generation
    is named; a line that cannot be followed is refused naming what is missing.
    """
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
    line = line_of_history(index, generation)
    base, gen, run, stop, broken = _choose(store, keyring, index, line, bases, target, now,
                                           explicit=generation is not None)
    replay = _replay_files(run, base, stop)
    result = _describe_plan(store, keyring, identity, target, base, gen, run, stop, replay, databases)
    result.update(line_generation=line[-1].number, line=describe_line(line),
                  generation_named=generation is not None)
    result["risks"].extend(_branch_risks(line, run, stop, databases, broken))
    needed = base_backup_needed(store, identity, index, bases)
    if needed:
        result["base_backup_needed"] = needed
    return result


def _branch_risks(line: list[Segment], run: list[dict[str, Any]], stop: Stop, databases: Optional[list[str]],
                  broken: Optional[str]) -> list[str]:
    """What following branch points means for this plan (said in the plan's risks)."""
    risks = []
    crossed = [e for e in run if e.get("branch_limit") is not None
               and (e["generation"], e["file"]) != (stop.generation, stop.file)
               and any(r["generation"] != e["generation"] for r in run[run.index(e) + 1:])]
    by_number = {seg.number: seg.generation for seg in line}
    for e in crossed:
        child = by_number.get(e.get("branched_to"))
        branch = (child or {}).get("branch") or {}
        risks.append(f"the replay follows generation {e['generation']} up to its branch point "
                     f"{e['file']}:{e['branch_limit']} then generation {e.get('branched_to')} "
                     f"({branch.get('by') or 'recovery'} at {branch.get('at')})")
        limited_to = branch.get("databases")
        if limited_to and sorted(limited_to) != sorted(databases or []):
            risks.append(f"the {branch.get('by') or 'recovery'} that started generation {e.get('branched_to')} "
                         f"recovered only databases {', '.join(limited_to)}: transactions of other databases "
                         "between its branch point and its time are not on this line")
    if broken:
        risks.append(f"the line of history cannot be followed further: {broken}")
    return risks


def _choose(store: Store, keyring: KeyRing, index: bl.ArchiveIndex, line: list[Segment], bases: list[Base],
            target: dict[str, Any], now: float, *, explicit: bool
            ) -> tuple[Base, dict[str, Any], list[dict[str, Any]], Stop, Optional[str]]:
    """Newest base on ``line`` whose position is <= the stop point, with no gap between them.

    Returns (base, generation of the last step, steps, stop, broken) -- see chain_from.
    """
    if target.get("time") is not None:
        t = parse_target_time(target["time"])
        if t > now:
            raise RecoveryTargetInvalid(f"target time {iso(t)} is in the future (now {iso(int(now))})")
        if not explicit:
            abandoned = _time_on_abandoned_branch(store, keyring, index, line, t)
            if abandoned:
                raise RecoveryTargetInvalid(abandoned[0], hint=abandoned[1])
    if target.get("_matches"):
        _check_match_on_line(index, line, target["_matches"][0], explicit)
    errors = []
    last_broken: Optional[str] = None
    for base in sorted(bases, key=lambda b: _parse_iso(b.taken_at) or 0, reverse=True):
        if target.get("time") is not None and _parse_iso(base.taken_at) and \
                _parse_iso(base.taken_at) > parse_target_time(target["time"]) + 1:
            errors.append(f"{base.set_id}: taken after the target")
            continue
        k, why = base_segment(line, base)
        if k is None:
            errors.append(f"{base.set_id}: {why}")
            continue
        run, broken = chain_from(line, k, base)
        last_broken = broken or last_broken
        gen = next(seg.generation for seg in line if seg.number == run[-1]["generation"])
        try:
            stop = resolve_stop(store, keyring, gen, run, base, target, broken)
        except _BeforeBase as err:
            errors.append(f"{base.set_id}: {err}")
            continue
        except RecoveryTargetInvalid:
            if not explicit:
                _refuse_if_off_line(store, keyring, index, line, target)
            raise
        return base, gen, run, stop, broken
    if not explicit:
        _refuse_if_off_line(store, keyring, index, line, target)
    oldest = min(bases, key=lambda b: _parse_iso(b.taken_at) or 0)
    on_line = " and ".join(f"generation {seg.number}" + (f" up to {seg.limit[0]}:{seg.limit[1]}" if seg.limit else "")
                           for seg in line)
    raise RecoveryTargetInvalid(
        f"no base backup can reach target {_target_text(target)} on the line of history of generation "
        f"{line[-1].number} ({on_line}): " + "; ".join(errors[-5:])
        + (f"; and {last_broken}" if last_broken else ""),
        hint=f"take a base backup with backup.yml (the oldest base is {oldest.set_id}, {oldest.taken_at}); "
             "run analyze for the generations and what each can recover; a target on an abandoned branch "
             "needs generation")


# --------------------------------------------------------------------------- abandoned branches
def _abandoned_text(number: int, where: str, index: bl.ArchiveIndex, line: list[Segment]) -> tuple[str, str]:
    """(message, hint) of a target that lies on history the current line abandoned."""
    on_line = {seg.number: seg for seg in line}
    seg = on_line.get(number)
    if seg is not None and seg.limit is not None:
        child = line[line.index(seg) + 1].generation
        branch = child.get("branch") or {}
        how = (f"after the point {seg.limit[0]}:{seg.limit[1]} where generation {child['generation']} branched off "
               f"({branch.get('by') or 'recovery'} at {branch.get('at')}): that history was abandoned")
    else:
        how = f"on generation {number}, which is not on the current line of history (generation {line[-1].number})"
    return (f"{where} lies only on an abandoned branch: {how}",
            f"to recover that history give generation: {number} (pitr.yml -e pitr_generation={number}); "
            f"run analyze for the generations and their branch points")


def _on_line(line: list[Segment], number: int, file: str, position: int) -> bool:
    """Is the event of generation ``number`` at ``file:position`` on ``line`` (before its branch point)?"""
    for seg in line:
        if seg.number == number:
            return seg.limit is None or (_seq(file), position) < (_seq(seg.limit[0]), seg.limit[1])
    return False


def _check_match_on_line(index: bl.ArchiveIndex, line: list[Segment], match: dict[str, Any], explicit: bool) -> None:
    if _on_line(line, int(match["generation"]), match["file"], int(match["position"])):
        return
    where = f"the matched event {match['file']}:{match['position']} ({match['time']}, {match['gtid']})"
    if explicit:
        raise RecoveryTargetInvalid(f"{where} of generation {match['generation']} is not on the line of history of "
                                    f"generation {line[-1].number}",
                                    hint=f"give generation: {match['generation']}")
    raise RecoveryTargetInvalid(*_abandoned_text(int(match["generation"]), where, index, line))


def _off_line_entries(index: bl.ArchiveIndex, line: list[Segment]) -> Iterator[tuple[dict[str, Any], int]]:
    """(entry, first position off the line) of every archived file holding history the line left."""
    on_line = {seg.number: seg for seg in line}
    for gen in index.generations:
        seg = on_line.get(int(gen["generation"]))
        for entry in gen["files"]:
            if seg is None:
                yield dict(entry, generation=gen["generation"]), 4
            elif seg.limit is not None and _seq(entry["file"]) > _seq(seg.limit[0]):
                yield dict(entry, generation=gen["generation"]), 4
            elif seg.limit is not None and entry["file"] == seg.limit[0]:
                yield dict(entry, generation=gen["generation"]), seg.limit[1]


def _refuse_if_off_line(store: Store, keyring: KeyRing, index: bl.ArchiveIndex, line: list[Segment],
                        target: dict[str, Any]) -> None:
    """RecoveryTargetInvalid naming the generation when a GTID/position target lies only on
    abandoned history (nothing when it is not found there either)."""
    if target.get("gtid"):
        gtid = str(target["gtid"])
        for entry, start in _off_line_entries(index, line):
            if not _gtid_may_be_in(entry, gtid):
                continue
            for txn in iter_transactions(store, keyring, [entry], start):
                if txn.gtid == gtid:
                    raise RecoveryTargetInvalid(*_abandoned_text(
                        int(entry["generation"]), f"GTID {gtid} ({entry['file']}:{txn.start}, {iso(txn.timestamp)})",
                        index, line))
    if target.get("position"):
        m = re.match(r"^(.+):(\d+)$", str(target["position"]).strip())
        if not m:
            return
        for entry, start in _off_line_entries(index, line):
            if entry["file"] == m.group(1) and int(m.group(2)) > start - (0 if start == 4 else 1):
                raise RecoveryTargetInvalid(*_abandoned_text(int(entry["generation"]), f"position {m.group(0)}",
                                                             index, line))


def _first_transaction_after(store: Store, keyring: KeyRing, gen: dict[str, Any], limit: tuple[str, int]
                             ) -> Optional[be.Transaction]:
    """The first archived transaction of ``gen`` at or after the branch point ``limit``."""
    for run in runs(gen):
        names = [e["file"] for e in run]
        if limit[0] not in names:
            continue
        tail = run[names.index(limit[0]):]
        return next(iter(iter_transactions(store, keyring, tail, limit[1])), None)
    return None


def _time_on_abandoned_branch(store: Store, keyring: KeyRing, index: bl.ArchiveIndex, line: list[Segment],
                              t: int) -> Optional[tuple[str, str]]:
    """(message, hint) when time ``t`` falls where the current line and an abandoned branch
    differ: after the first abandoned transaction of a branch point and before the
    recovery that abandoned it (on the current line nothing happened then)."""
    for k in range(len(line) - 1):
        seg, child = line[k], line[k + 1].generation
        at = _branch_covered_until(child)
        if at is None or t >= at:
            continue
        first = _first_transaction_after(store, keyring, seg.generation, seg.limit)
        if first is not None and first.timestamp <= t:
            msg, hint = _abandoned_text(seg.number, f"target time {iso(t)}", index, line)
            return (msg + f" (its first abandoned transaction {first.gtid} is at {iso(first.timestamp)}; on the "
                    f"current line nothing happened between the branch point and {iso(at)})",
                    hint + f"; for the current line pick a time before {iso(first.timestamp)} or from {iso(at)}")
    on_line = {seg.number for seg in line}
    for gen in index.generations:
        number = int(gen["generation"])
        if number in on_line or not gen["files"]:
            continue
        began = _parse_iso(gen.get("started_at")) or 0
        later = [_branch_covered_until(s.generation) for s in line if s.generation.get("branch")]
        ended = min((x for x in later if x is not None and x > began), default=None)
        first_time = min(int(e.get("first_time") or 2 ** 62) for e in gen["files"])
        if ended is not None and first_time <= t < ended:
            return _abandoned_text(number, f"target time {iso(t)}", index, line)
    return None


class _BeforeBase(Exception):
    """The target lies before this base's position: try an older base."""


def _target_text(target: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in target.items() if v not in (None, False))


def resolve_stop(store: Store, keyring: KeyRing, gen: dict[str, Any], run: list[dict[str, Any]], base: Base,
                 target: dict[str, Any], broken: Optional[str] = None) -> Stop:
    """Exact exclusive stop point for ``target`` within ``run`` (which starts at the base's file
    and follows a line of history; ``broken``: why it cannot be followed further)."""
    g = gen["generation"]
    last = run[-1]
    gap_note = broken or _gap_after(gen, last)
    if target.get("latest"):
        return Stop(_gen_of(last, g), last["file"], effective_end(last), "latest archived transaction",
                    risks=[f"archive ends at a gap: {gap_note}"] if gap_note else [])
    if target.get("time") is not None:
        return _stop_for_time(store, keyring, gen, run, base, parse_target_time(target["time"]), gap_note)
    if target.get("position"):
        return _stop_for_position(store, keyring, gen, run, base, str(target["position"]))
    if target.get("gtid"):
        return _stop_for_gtid(store, keyring, g, run, base, str(target["gtid"]), gap_note)
    return _stop_before(store, keyring, g, run, base, target)


def _gen_of(entry: dict[str, Any], default: int) -> int:
    """The generation of a step of a line of history (``default`` for an entry without one)."""
    return int(entry.get("generation") or default)


def _gap_after(gen: dict[str, Any], last: dict[str, Any]) -> Optional[str]:
    for gap in gen.get("gaps", []):
        if _seq(gap["missing_from"]) == _seq(last["file"]) + 1:
            return f"{gap['missing_from']}..{gap['missing_to']} missing"
    return None


def _stop_for_time(store: Store, keyring: KeyRing, gen: dict[str, Any], run: list[dict[str, Any]], base: Base,
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
                return Stop(_gen_of(entry, g), entry["file"], txn.start, f"first transaction after {iso(t)} "
                            f"({iso(txn.timestamp)}, {txn.gtid}) excluded", target_time=t)
            last_applied = txn
    end = coverage_end(run[-1])
    if end is None or t > end:
        where = f"a gap ({gap_note})" if gap_note else "the end of the archive"
        raise RecoveryTargetInvalid(
            f"target time {iso(t)} is after {where}: archived binlogs of this line of history cover up to "
            f"{iso(end)}",
            hint="archive again with flush: true (or salvage the binlog files) and re-plan, or pick an earlier "
                 "time" if not gap_note else "the binlogs after the gap are lost; pick a time before it")
    return Stop(_gen_of(run[-1], g), run[-1]["file"], effective_end(run[-1]),
                f"all archived transactions <= {iso(t)}", target_time=t)


def _base_after(base: Base, t: int) -> bool:
    when = _parse_iso(base.taken_at)
    return when is not None and int(when) > t


def _stop_for_position(store: Store, keyring: KeyRing, gen: dict[str, Any], run: list[dict[str, Any]], base: Base,
                       position: str) -> Stop:
    m = re.match(r"^(.+):(\d+)$", position.strip())
    if not m:
        raise ConfigError(f"position target {position!r} is not <file>:<offset>")
    file, pos = m.group(1), int(m.group(2))
    entry = next((e for e in reversed(run) if e["file"] == file), None)
    if entry is not None and entry.get("branch_limit") is not None and pos > entry["branch_limit"]:
        raise RecoveryTargetInvalid(f"position {file}:{pos} lies only on an abandoned branch: after the point "
                                    f"{file}:{entry['branch_limit']} where generation {entry.get('branched_to')} "
                                    "branched off: that history was abandoned",
                                    hint="to recover that history give generation: "
                                         f"{_gen_of(entry, gen['generation'])}")
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
    if stop_pos > effective_end(entry):
        stop_pos = effective_end(entry)
    return Stop(_gen_of(entry, gen["generation"]), file, stop_pos, f"events starting before {file}:{pos}", risks)


def _stop_for_gtid(store: Store, keyring: KeyRing, g: int, run: list[dict[str, Any]], base: Base, gtid: str,
                   gap_note: Optional[str]) -> Stop:
    if base.gtid and _gtid_in_state(gtid, base.gtid):
        raise _BeforeBase(f"GTID {gtid} is already in its snapshot ({base.gtid})")
    for i, entry in enumerate(run):
        if not _gtid_may_be_in(entry, gtid):
            continue
        for txn in iter_transactions(store, keyring, [entry], base.position if i == 0 else 4):
            if txn.gtid == gtid:
                return Stop(_gen_of(entry, g), entry["file"], txn.end, f"through transaction {gtid} (inclusive)")
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


def _stop_before(store: Store, keyring: KeyRing, g: int, run: list[dict[str, Any]], base: Base,
                 target: dict[str, Any]) -> Stop:
    matches = target.get("_matches")
    if matches is None:
        raise ConfigError("a 'before' target needs its matches resolved (use plan())")
    m = matches[target.get("match_index") or 0] if matches else None
    if m is None:
        raise RecoveryTargetInvalid("no event matches")
    holder = next((e for e in run if e["file"] == m["file"] and _gen_of(e, g) == int(m["generation"])), None)
    if holder is None or (holder.get("branch_limit") is not None and m["position"] >= holder["branch_limit"]):
        raise _BeforeBase(f"the event {m['file']}:{m['position']} is not reachable from it")
    if holder is run[0] and m["position"] < base.position:
        raise _BeforeBase(f"the event {m['file']}:{m['position']} is before its position {base.position}")
    return Stop(int(m["generation"]), m["file"], m["position"],
                f"just before {m['kind']} at {m['file']}:{m['position']} ({m['time']}, {m['gtid']})")


def before_candidates(store: Store, keyring: KeyRing, pattern: str, *, identity: Optional[str] = None,
                      generation: Optional[int] = None, start: Any = None, end: Any = None) -> list[dict[str, Any]]:
    """Every archived match of ``pattern`` (as find()), each marked with what a ``before`` target
    of the same pattern, start, end and generation would make of it.

    Each match gets ``on_line`` (its event is on the line of history of ``generation``, default
    the current line) and ``match_index``: its 0-based index among the matches a ``before``
    target chooses from (the ones on that line; without ``generation``, when none is on the
    current line, every match, so that plan() can refuse them naming their generation), or
    None when a ``before`` target cannot choose it. find lists exactly these indexes, so the
    ``match_index`` an operator reads in its output is the one execute uses.
    """
    matches = find(store, keyring, pattern, identity=identity, start=start, end=end)
    line = line_of_history(bl.load_index(store, resolve_identity(store, identity)), generation)
    for m in matches:
        m["on_line"] = _on_line(line, int(m["generation"]), m["file"], int(m["position"]))
    eligible = [m for m in matches if m["on_line"]] if (generation is not None
                                                        or any(m["on_line"] for m in matches)) else matches
    for m in matches:
        m["match_index"] = None
    for i, m in enumerate(eligible):
        m["match_index"] = i
    return matches


def describe_match(m: dict[str, Any]) -> str:
    """One line of a match: ``[index] time generation N file:position gtid statement``."""
    index = f"[{m['match_index']}]" if m.get("match_index") is not None else "[-]"
    branch = "" if m.get("on_line", True) else " (not on the line of history followed)"
    return (f"{index} {m['time']} generation {m['generation']} {m['file']}:{m['position']} "
            f"gtid {m['gtid']}{branch}: {m['statement'][:80]}")


def resolve_before_target(store: Store, keyring: KeyRing, target: dict[str, Any], identity: Optional[str],
                          generation: Optional[int] = None) -> dict:
    """Find the event of a ``before`` target; >1 match without ``match_index`` is an error listing them.

    Candidates are the events on the line of history of ``generation`` (default: the
    current line); without ``generation``, when none is on the current line, the matches on
    abandoned branches are kept so that plan() refuses them naming their generation. The
    numbering is before_candidates()'s, which find lists.
    """
    found = before_candidates(store, keyring, target["before"], identity=identity, generation=generation,
                              start=target.get("start"), end=target.get("end"))
    matches = [m for m in found if m["match_index"] is not None]
    if generation is not None and found and not matches:
        elsewhere = sorted({int(m["generation"]) for m in found})
        raise RecoveryTargetInvalid(f"{len(found)} archived statement(s) match {target['before']!r}, none on the "
                                    f"line of history of generation {generation} (they are in generation(s) "
                                    f"{', '.join(str(g) for g in elsewhere)})",
                                    hint="run find to list them; give the generation they are on")
    if not matches:
        raise RecoveryTargetInvalid(f"no archived statement matches {target['before']!r}",
                                    hint="check the pattern with mode: find (case-insensitive regex)")
    idx = target.get("match_index")
    if idx is None and len(matches) > 1:
        listing = "; ".join(describe_match(m) for m in matches[:20])
        more = f" (and {len(matches) - 20} more)" if len(matches) > 20 else ""
        raise RecoveryTargetInvalid(f"{len(matches)} events match {target['before']!r}, none was chosen: "
                                    f"{listing}{more}",
                                    hint="give match_index (0-based, the [index] above) or narrow the "
                                         "pattern/start/end; mode find lists the matches")
    if idx is not None and not 0 <= int(idx) < len(matches):
        raise RecoveryTargetInvalid(f"match_index {idx} is out of range: {len(matches)} event(s) match "
                                    f"{target['before']!r} (0..{len(matches) - 1}): "
                                    + "; ".join(describe_match(m) for m in matches[:20]),
                                    hint="mode find lists the matches with their index")
    chosen = matches[int(idx or 0)]
    return dict(target, _matches=[chosen], match_index=0, matched=chosen)


def _is_stop_step(entry: dict[str, Any], stop: Stop) -> bool:
    return entry["file"] == stop.file and _gen_of(entry, stop.generation) == stop.generation


def _replay_files(run: list[dict[str, Any]], base: Base, stop: Stop) -> list[dict[str, Any]]:
    """The replay list: each archived file of the line from the base's position to the stop
    (a file where a newer generation branched off is replayed only up to the branch point)."""
    out = []
    for i, entry in enumerate(run):
        start = base.position if i == 0 else 4
        stop_pos = stop.position if _is_stop_step(entry, stop) else effective_end(entry)
        out.append({"file": entry["file"], "generation": _gen_of(entry, stop.generation), "set_id": entry["set_id"],
                    "parent": entry["parent"], "start": start, "stop": stop_pos,
                    "partial": bool(entry.get("partial")), "bytes": max(0, stop_pos - start)})
        if _is_stop_step(entry, stop):
            break
    return out


def _describe_plan(store: Store, keyring: KeyRing, identity: str, target: dict[str, Any], base: Base,
                   gen: dict[str, Any], run: list[dict[str, Any]], stop: Stop, replay: list[dict[str, Any]],
                   databases: Optional[list[str]]) -> dict[str, Any]:
    applied = lost = 0
    row_events = 0
    ddl: list[dict[str, Any]] = []
    last_applied = first_lost = None
    for i, entry in enumerate(run):
        start = base.position if i == 0 else 4
        for txn in iter_transactions(store, keyring, [entry], start):
            r = replay[i] if i < len(replay) else None
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
    bps = measured_throughput(store, identity) or DEFAULT_REPLAY_BPS  # the client replay (the fallback)
    applier_bps = measured_throughput(store, identity, "applier")
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
        "generation": gen["generation"], "stop_generation": stop.generation, "base": base.to_dict(),
        "replay": replay,
        "databases": databases or None,
        "transactions_applied": applied, "row_events": row_events,
        "last_applied": describe_txn(last_applied) if last_applied else None,
        "expected_data_loss": {"transactions_not_applied": lost,
                               "first_not_applied": describe_txn(first_lost) if first_lost else None,
                               "archive_end": {"file": run[-1]["file"], "position": effective_end(run[-1]),
                                               "generation": _gen_of(run[-1], gen["generation"]),
                                               "time": iso(coverage_end(run[-1]))}},
        "estimated_duration_s": round(total_bytes / bps + 2.0, 1), "throughput_bps_assumed": bps,
        "estimated_applier_duration_s": (round(total_bytes / applier_bps + 2.0, 1) if applier_bps else None),
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
def _throughput_path(store: Store, identity: str, method: str) -> Any:
    """Where the measured replay speed of one engine is kept (the client's under the old name)."""
    name = THROUGHPUT_NAME if method == "client" else THROUGHPUT_NAME.replace(".json", f"_{method}.json")
    return bl.index_path(store, identity).parent / name


def measured_throughput(store: Store, identity: str, method: str = "client") -> Optional[float]:
    """Bytes/s of binlog replay measured by the last execute with that engine (None if never)."""
    path = _throughput_path(store, identity, method)
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["bytes_per_s"])
    except (OSError, ValueError, KeyError):
        return None


def _record_throughput(store: Store, identity: str, nbytes: int, seconds: float, method: str = "client") -> None:
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import make_private_dirs, write_file_atomic
    if nbytes <= 0 or seconds <= 0:
        return
    path = _throughput_path(store, identity, method)
    make_private_dirs(path.parent)
    write_file_atomic(path, json.dumps({"bytes_per_s": nbytes / seconds, "bytes": nbytes,
                                        "seconds": seconds, "measured_at": iso(int(time.time()))}).encode())


# --------------------------------------------------------------------------- replay
def replay(store: Store, keyring: KeyRing, replay_files: list[dict[str, Any]], conn_params: Any, *,
           databases: Optional[list[str]] = None, log_replayed: bool = False, flavor: Any = None) -> dict[str, Any]:
    """Apply the archived binlog ranges to the server in ONE client session.

    Each file is decrypted by the pipeline reader straight into ``mariadb-binlog -``
    (``--start-position`` on the first, ``--stop-position`` on the last, exclusive);
    the decoded SQL of all files goes, in order, into one ``mariadb`` process. Any
    non-zero exit or error output fails with RestoreFailed. Returns bytes and seconds.
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
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
            meter = ProgressMeter("binlog replay", log_progress(), sum(int(rf.get("bytes") or 0) for rf in replay_files)
                                  or None)
            for i, rf in enumerate(replay_files):
                set_step(f"binlog {rf['file']}")
                total += _decode_into(store, keyring, rf, decoder, sink.stdin, databases,
                                      first=i == 0, keep_gtids=log_replayed, meter=meter, meter_base=total)
            meter.finish()
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


def _decode_into(store: Store, keyring: KeyRing, rf: dict[str, Any], decoder: str, sink: Any,
                 databases: Optional[list[str]], first: bool, keep_gtids: bool,
                 meter: Optional[ProgressMeter] = None, meter_base: int = 0) -> int:
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
            fed = 0
            with bl.open_archived(store, keyring, rf) as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    proc.stdin.write(chunk)
                    fed += len(chunk)
                    if meter is not None:
                        meter.update(meter_base + fed)
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


# --------------------------------------------------------------------------- durability during the replay
def _durability_state_path(store: Store, identity: str) -> Any:
    return bl.index_path(store, identity).parent / DURABILITY_STATE_NAME


def _server_address(conn_params: Any) -> str:
    return f"{getattr(conn_params, 'host', '')}:{getattr(conn_params, 'port', '')}"


def _put_back_durability(conn_params: Any, values: dict[str, Any]) -> None:
    """Set the recorded durability globals back, then make the redo log durable (FLUSH ENGINE
    LOGS writes and, with innodb_flush_log_at_trx_commit=1, syncs InnoDB's log)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
    conn = mysql.connect(conn_params)
    try:
        for name in RELAXED_DURABILITY:
            if name in values:
                mysql.execute(conn, f"SET GLOBAL {name} = {int(values[name])}",
                              doing=f"putting {name} back after the replay")
        mysql.execute(conn, "FLUSH ENGINE LOGS", doing="flushing the storage engines' logs after the replay")
    finally:
        conn.close()


def restore_interrupted_durability(store: Store, identity: str, conn_params: Any) -> Optional[dict[str, Any]]:
    """Put back the durability settings a killed run relaxed (recorded in the store before it
    changed them). Returns what was put back (None: nothing was pending). RestoreFailed when
    the recorded server cannot be reached: nothing else is done to it before that is fixed."""
    path = _durability_state_path(store, identity)
    if not path.exists():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("server") != _server_address(conn_params):
        LOG.warning("relaxed durability recorded for server %s, not this one (%s): left for that server",
                    state.get("server"), _server_address(conn_params))
        return None
    LOG.warning("an interrupted PITR left %s relaxed on %s: putting back %s", ", ".join(RELAXED_DURABILITY),
                state["server"], state["values"])
    try:
        _put_back_durability(conn_params, state["values"])
    except LifeboatError as err:
        raise RestoreFailed(f"an interrupted PITR relaxed the durability of {state['server']} and it cannot be put "
                            f"back: {err.message}", hint=f"set {state['values']} with SET GLOBAL, then remove {path}"
                            ) from None
    path.unlink(missing_ok=True)
    return dict(state["values"])


class _RelaxedDurability:
    """Context: ``innodb_flush_log_at_trx_commit=2`` and ``sync_binlog=0`` on the target while
    the replay runs (no fsync per replayed commit), the originals recorded first in the store
    (0600, :data:`DURABILITY_STATE_NAME`) and put back -- with ``FLUSH ENGINE LOGS`` -- when
    the block ends, also on failure; a killed run's are put back by the next ``execute``
    before it touches anything. A crash during the replay means "run execute again" (it
    restores the base again), never a half-applied server handed back."""

    def __init__(self, store: Store, identity: str, conn_params: Any, enabled: bool) -> None:
        self.store, self.identity, self.conn_params, self.enabled = store, identity, conn_params, enabled
        self.values: Optional[dict[str, int]] = None

    def __enter__(self) -> Optional[dict[str, int]]:
        if not self.enabled:
            return None
        from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
        from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import (
            make_private_dirs,
            write_file_atomic,
        )
        conn = mysql.connect(self.conn_params)
        try:
            row = mysql.query_all(conn, "SELECT " + ", ".join(f"@@GLOBAL.{n}" for n in RELAXED_DURABILITY))[0]
            self.values = {n: int(v) for n, v in zip(RELAXED_DURABILITY, row, strict=True)}
            path = _durability_state_path(self.store, self.identity)
            make_private_dirs(path.parent)
            write_file_atomic(path, json.dumps({"server": _server_address(self.conn_params),
                                                "values": self.values, "at": iso(int(time.time()))}).encode())
            for name, value in RELAXED_DURABILITY.items():
                mysql.execute(conn, f"SET GLOBAL {name} = {value}", doing=f"relaxing {name} for the replay")
        finally:
            conn.close()
        LOG.info("durability relaxed for the replay (%s; originals %s)", RELAXED_DURABILITY, self.values)
        return dict(RELAXED_DURABILITY)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.values is None:
            return
        try:
            _put_back_durability(self.conn_params, self.values)
        except LifeboatError as err:
            if exc is None:  # the replay succeeded: the server must not be handed back relaxed
                raise RestoreFailed(f"the replay finished but the durability settings could not be put back "
                                    f"({err.message})", hint=f"set {self.values} with SET GLOBAL; the next execute "
                                                             "also puts them back") from None
            LOG.error("could not put the durability settings %s back (%s): the next execute does", self.values, err)
            return  # the replay's own error is the one reported; the state file stays for the next run
        _durability_state_path(self.store, self.identity).unlink(missing_ok=True)
        LOG.info("durability put back after the replay: %s", self.values)


# --------------------------------------------------------------------------- execute
def execute(store: Store, keyring: KeyRing, target: Any, conn_params: Any, *, identity: Optional[str] = None,
            databases: Optional[list[str]] = None, log_replayed: bool = False, restore_kwargs: Optional[dict] = None,
            new_generation: bool = True, generation: Optional[int] = None, replay_method: str = "auto",
            applier: Any = None, relax_durability: bool = False) -> dict[str, Any]:
    """Plan, restore the base (mysql restore), replay to the target, start a new archive
    generation branching from the stop point. Returns the plan plus what was done, with
    ``base_backup_needed`` (a new base backup is needed from now on). Nothing is changed
    when planning fails. ``generation``: the line of history to follow (default current).
    ``replay_method``: auto (the server's parallel applier where it applies, see
    relay_replay.py, else the client replay), applier or client; ``applier``: its
    ``relay_replay.ApplierOptions``. ``replay.method`` / ``replay.why`` say what was used.
    ``relax_durability``: for the replay only, ``innodb_flush_log_at_trx_commit=2`` and
    ``sync_binlog=0`` on the server (a server the recovery owns: nothing else writes), put
    back and flushed afterwards, also on failure, or by the next execute after a kill
    (``replay.durability`` says what was done)."""
    target = normalize_target(target)
    if target.get("before") and not target.get("_matches"):
        target = resolve_before_target(store, keyring, target, identity, generation)
    the_plan = plan(store, keyring, target, identity=identity, databases=databases, generation=generation)
    identity = the_plan["identity"]
    bset = store.open_set(the_plan["base"]["set_id"])
    clock = [time.monotonic()]
    restore_interrupted_durability(store, identity, conn_params)
    if replay_method != "client":  # a killed applier run's SQL thread may still be applying: stop it first
        from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import relay_replay
        relay_replay.clean_interrupted_run(conn_params, (applier or relay_replay.ApplierOptions()).connection)
    restored = restore_base(bset, keyring, conn_params, databases,
                            {"write_binlog": log_replayed, **(restore_kwargs or {})}, store=store)
    clock.append(time.monotonic())
    relaxed = _RelaxedDurability(store, identity, conn_params, relax_durability)
    with relaxed as during:
        done = _replay_with_method(store, keyring, the_plan, conn_params, databases, log_replayed, replay_method,
                                   applier)
    done["durability"] = ({"relaxed": during, "put_back": relaxed.values} if during else "unchanged")
    clock.append(time.monotonic())
    _record_throughput(store, identity, sum(r["bytes"] for r in the_plan["replay"]), done["seconds"],
                       done.get("method", "client"))
    started = None
    needed = None
    if new_generation:
        started = _start_generation_after(store, identity, conn_params, the_plan)
        needed = base_backup_needed(store, identity)
        if needed:
            LOG.warning("PITR done: %s", needed)
    clock.append(time.monotonic())
    return {"changed": True, "plan": the_plan, "restore": restored, "replay": done, "new_generation": started,
            "base_backup_needed": needed, "timing": _timing(clock, done)}


def _timing(clock: list[float], done: dict[str, Any]) -> dict[str, Any]:
    """Where an execute's time went: the base restore, the replay (with the applier split into
    fetching the binlogs from the store into relay files and the SQL thread's apply; the client
    streams fetch, decode and apply together), the new generation."""
    return {"restore_s": round(clock[1] - clock[0], 3), "replay_s": round(clock[2] - clock[1], 3),
            "binlog_fetch_s": done.get("install_s"), "apply_s": done.get("apply_s"),
            "new_generation_s": round(clock[3] - clock[2], 3), "total_s": round(clock[3] - clock[0], 3)}


def _replay_with_method(store: Store, keyring: KeyRing, the_plan: dict[str, Any], conn_params: Any,
                        databases: Optional[list[str]], log_replayed: bool, method: str, applier: Any
                        ) -> dict[str, Any]:
    """Replay the plan with the parallel applier (relay_replay.py) where it applies, else the client."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import relay_replay as rr
    opts = applier or rr.ApplierOptions()
    chosen, why = rr.choose_method(conn_params, method, log_replayed=log_replayed, databases=databases,
                                   connection=opts.connection)
    LOG.info("binlog replay: %s (%s)", chosen, why)
    if chosen == "client":
        done = replay(store, keyring, the_plan["replay"], conn_params, databases=databases, log_replayed=log_replayed)
        return dict(done, method="client", why=why)
    last = the_plan.get("last_applied") or {}
    avoid = rr.server_ids_of([last.get("gtid"), the_plan["base"].get("gtid")], the_plan.get("identity", ""))
    done = rr.replay_with_applier(store, keyring, the_plan["replay"], conn_params, options=opts, databases=databases,
                                  expect_gtid=last.get("gtid"), avoid_server_ids=avoid, log_replayed=log_replayed)
    return dict(done, why=why)


def restore_base(bset: BackupSet, keyring: KeyRing, conn_params: Any, databases: Optional[list[str]],
                 extra: dict[str, Any], store: Optional[Store] = None) -> Any:
    """Restore the base set with the mysql helper's ``restore_mysql_from`` (databases only if given).

    A physical base (``method: physical``) is restored by files, the whole server
    (:func:`physical.restore_physical`: its chain, ``extra["service"]`` stops and starts
    the server, ``extra["datadir"]``); selected ``databases`` are refused for it (ConfigError
    before anything changes). The replay then starts at the base's recorded position/GTID
    as for a logical base.
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import physical as mysql_physical

    if mysql_physical.is_physical(bset):
        if databases:
            raise ConfigError(f"base {bset.set_id} is a physical backup: it restores the whole server, not "
                              f"selected databases ({', '.join(databases)})",
                              hint="recover the whole server (no databases), or use a logical base backup")
        if store is None:
            raise ConfigError("a physical base restore needs the store holding its chain")
        return mysql_physical.restore_physical(store, bset, keyring, conn_params, service=extra.get("service"),
                                               datadir=extra.get("datadir"),
                                               start_timeout_s=float(extra.get("start_timeout_s") or 120.0))
    try:
        from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import restore as mysql_restore
    except ImportError:
        raise DependencyMissing("the mysql restore (module_utils/components/mysql/restore.py) is not available",
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


def _start_generation_after(store: Store, identity: str, conn_params: Any, the_plan: dict[str, Any]) -> Any:
    """FLUSH BINARY LOGS and mark a new archive generation starting at the new binlog file."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
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
                                  f"from base {the_plan['base']['set_id']}", first_file=first,
                                  branch=branch_of_plan(the_plan))


def _generation_holding_base(index: bl.ArchiveIndex, base: Base) -> int:
    """The generation a base lies on: on the current line if it is on it, else the newest
    generation holding its binlog file, else the newest generation."""
    line = line_of_history(index)
    k, _why = base_segment(line, base)
    if k is not None:
        return line[k].number
    for gen in reversed(index.generations):
        if _base_entry(gen, base) is not None:
            return int(gen["generation"])
    return int(index.generations[-1]["generation"])


def record_restore_branch(store: Store, bset: BackupSet, conn_params: Any, *, databases: Optional[list[str]] = None,
                          tables: Optional[list[str]] = None, flush: bool = True) -> Optional[dict[str, Any]]:
    """After a restore of ``bset`` that was NOT binlogged (``write_binlog: false``): the
    server's history branched at the set's binlog position -- FLUSH BINARY LOGS and start a
    new archive generation recording that branch point, so later PITRs follow it.

    ``flush`` False: for a restore whose server started a new binlog file on the restored data
    (a physical restore: the exchanged datadir brought no binlog, the server began a fresh
    one -- or, with binlogs outside the datadir, rotated at its start): the current file is the
    first of the new history and nothing is flushed.

    Returns ``{"generation", "branch", "base_backup_needed"}``, or None when there is
    nothing to record (the set has no binlog position, the server is another one than the
    set's, or the store archives no binlogs of it). A binlogged restore needs none of this:
    its statements are in the binlog, the line of history simply continues.
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
    base = base_of_set(bset)
    if base is None:
        return None
    conn = mysql.connect(conn_params)
    try:
        identity = mysql.server_identity(conn, mysql.detect_flavor(conn))
        if identity != base.identity or identity not in bl.archived_identities(store):
            return None
        if flush:
            mysql.execute(conn, "FLUSH BINARY LOGS",
                          doing="flushing binary logs after the restore (RELOAD/BINLOG ADMIN)")
        status = mysql.query_all(conn, "SHOW BINARY LOGS")
        first = bl._text(status[-1][0]) if status else None
    finally:
        conn.close()
    index = bl.load_index(store, identity)
    branch = {"parent_generation": _generation_holding_base(index, base), "file": base.file,
              "position": base.position, "gtid": base.gtid or None, "last_applied_time": base.taken_at,
              "at": iso(int(time.time())), "base": base.set_id, "by": "restore",
              "databases": list(databases) if databases else None, "tables": list(tables) if tables else None}
    how = "not binlogged" if flush else "physical: a new binlog from the restored datadir"
    number = bl.mark_new_generation(store, identity, f"restore of {base.set_id} ({how})", first_file=first,
                                    branch=branch)
    needed = base_backup_needed(store, identity)
    LOG.warning("restore of %s: binlog archive generation %d branches from generation %d at %s:%d; %s",
                base.set_id, number, branch["parent_generation"], base.file, base.position, needed)
    return {"generation": number, "branch": branch, "base_backup_needed": needed}


def branch_of_plan(the_plan: dict[str, Any]) -> dict[str, Any]:
    """The branch point a PITR to ``the_plan`` leaves behind: the generation and exclusive
    position its replay stopped at, the last applied transaction, when, from which base."""
    last = the_plan.get("last_applied") or {}
    stop = the_plan["resolved_stop"]
    return {"parent_generation": int(the_plan["stop_generation"]), "file": stop["file"],
            "position": int(stop["position"]), "gtid": last.get("gtid") or the_plan["base"].get("gtid") or None,
            "last_applied_time": last.get("time") or the_plan["base"].get("taken_at"),
            "at": iso(int(time.time())), "base": the_plan["base"]["set_id"], "by": "PITR",
            "databases": the_plan.get("databases")}


__all__ = ["analyze", "find", "plan", "execute", "replay", "list_bases", "resolve_before_target", "NotFound"]
