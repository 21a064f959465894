# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Binary log archiving: the replication-protocol reader, the archiver and salvage.

* :class:`ReplicationReader` streams binlog events from a running server with
  COM_BINLOG_DUMP over a PyMySQL connection (the approach of python-mysql-replication),
  so archiving needs only a ``REPLICATION SLAVE`` + ``BINLOG MONITOR`` account, never
  the DB host's files. Events arrive exactly as on disk (the session announces
  checksum awareness and, on MariaDB, full GTID/annotate capability), so a file is
  rebuilt byte-identically as ``\\xfebin`` + its events; every event's ``log_pos`` is
  checked against the rebuilt offset, so a missing or extra byte fails the run.
* :func:`archive_binlogs` archives every *closed* binlog file not yet archived as a
  set of type ``binlog`` under ``binlogs/<identity>/g<generation>/`` and keeps the
  archive index ``<store>/binlogs/<identity>/index.json`` (plaintext, no SQL text:
  file names, sizes, positions, times, GTIDs, gaps). It is idempotent, reports gaps
  (purged files) and starts a new *generation* when the server's binlog history
  restarts or diverges (after a restore / PITR).
* :func:`salvage_from_files` ships binlogs from the files of a dead server,
  including the active file up to its last complete event.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog_events as be
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    BackupFailed,
    ConfigError,
    FormatError,
    NotFound,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

try:
    import pymysql
    import pymysql.err

    HAS_PYMYSQL = True
except ImportError:  # pragma: no cover - sanity import test runs without it
    HAS_PYMYSQL = False

LOG = get_logger("binlog")

COM_BINLOG_DUMP = 0x12
BINLOG_DUMP_NON_BLOCK = 0x01
BINLOG_SEND_ANNOTATE_ROWS_EVENT = 0x02
MARIA_SLAVE_CAPABILITY_MINE = 4
INDEX_NAME = "index.json"
ARCHIVE_DIR = "binlogs"
COMPONENT = "binlog"
BASE_COMPONENT = "mysql"      # the component of base backups (mysql_backup.COMPONENT)
INDEX_FORMAT = 1


# --------------------------------------------------------------------------- names
def binlog_sequence(name: str) -> int:
    """The numeric suffix of a binlog file name (``mariadb-bin.000042`` -> 42)."""
    m = re.search(r"\.(\d+)$", name)
    if not m:
        raise ConfigError(f"{name!r} is not a binary log file name (expected <base>.<number>)")
    return int(m.group(1))


def binlog_name(base_like: str, seq: int) -> str:
    """The file name with sequence ``seq`` in the series of ``base_like`` (same width)."""
    m = re.match(r"^(.*)\.(\d+)$", base_like)
    if not m:
        raise ConfigError(f"{base_like!r} is not a binary log file name")
    return f"{m.group(1)}.{seq:0{len(m.group(2))}d}"


def identity_dirname(identity: str) -> str:
    """A file-system-safe folder name for a server identity."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", identity).lstrip("._-") or "server"


# --------------------------------------------------------------------------- reader
@dataclass
class StreamedFile:
    """A binlog file as received: events in order, ``closed`` when its Rotate was seen."""

    name: str
    closed: bool = False
    size: int = 4


class ReplicationReader:
    """Reads binlog files from a server over the replication protocol (COM_BINLOG_DUMP).

    ``conn_params`` is a :class:`mysql.ConnParams` of an account with REPLICATION SLAVE
    (and BINLOG MONITOR for :meth:`list_files`). One reader = one connection per dump.
    """

    def __init__(self, conn_params: Any, *, dump_server_id: Optional[int] = None,
                 read_timeout: int = 60) -> None:
        from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
        mysql.require_pymysql()
        self.params = conn_params
        self.read_timeout = read_timeout
        # a replica id no real server uses: the server kills older dumps with the same id
        self.dump_server_id = dump_server_id or random.randint(0x7F000000, 0x7FFFFFFE)

    def _connect(self) -> Any:
        from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
        return mysql.connect(self.params, read_timeout=self.read_timeout)

    def list_files(self, conn: Any = None) -> list[tuple[str, int]]:
        """``SHOW BINARY LOGS`` as [(name, size)], oldest first; the last one is active."""
        from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
        own = conn is None
        conn = conn or self._connect()
        try:
            rows = mysql.query_all(conn, "SHOW BINARY LOGS",
                                   doing="listing binary logs (needs BINLOG MONITOR / REPLICATION CLIENT)")
        finally:
            if own:
                conn.close()
        return [(_text(r[0]), int(r[1])) for r in rows]

    def iter_file_events(self, name: str, *, stop_after_rotate: bool = True) -> Iterator[be.RawEvent]:
        """Yield the on-disk events of binlog ``name`` from position 4, in order.

        Artificial events (fake Rotate, heartbeats) are dropped; every real event's
        ``log_pos`` must equal its rebuilt end offset (FormatError otherwise). Ends after
        the file's own Rotate event (a closed file) or when the server reports the end of
        the active file (non-blocking dump). Stops at the first event of another file.
        """
        conn = self._connect()
        try:
            yield from self._dump(conn, name, stop_after_rotate)
        finally:
            _close_quietly(conn)

    def _dump(self, conn: Any, name: str, stop_after_rotate: bool) -> Iterator[be.RawEvent]:
        from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
        with conn.cursor() as cur:
            try:
                cur.execute("SET @master_binlog_checksum = @@global.binlog_checksum")
                cur.execute("SET @source_binlog_checksum = @@global.binlog_checksum")
            except pymysql.err.MySQLError:
                pass  # servers without checksums (or old versions) ignore this
            with contextlib.suppress(pymysql.err.MySQLError):
                cur.execute(f"SET @mariadb_slave_capability = {MARIA_SLAVE_CAPABILITY_MINE}")
        payload = struct.pack("<IHI", 4, BINLOG_DUMP_NON_BLOCK | BINLOG_SEND_ANNOTATE_ROWS_EVENT,
                              self.dump_server_id) + name.encode()
        try:
            conn._execute_command(COM_BINLOG_DUMP, payload)
        except pymysql.err.MySQLError as err:
            raise mysql.translate_error(err, f"starting a binlog dump of {name} (needs REPLICATION SLAVE)") \
                from None
        pos = 4
        current: Optional[str] = None
        while True:
            try:
                packet = conn._read_packet()
            except pymysql.err.MySQLError as err:
                raise mysql.translate_error(err, f"streaming binlog {name}") from None
            if packet.is_eof_packet():
                return
            data = packet.get_all_data()
            if not data or data[0] != 0:
                continue
            event = data[1:]
            header = be.parse_header(event)
            if header.is_artificial:
                if header.type_code == be.ROTATE:
                    current = _text(event[be.HEADER_LEN + 8:_end_without_checksum(event)])
                    if current != name and pos > 4:
                        return
                continue
            if current is not None and current != name:
                return
            if header.next_pos != pos + header.event_size:
                raise FormatError(f"binlog {name}: event at {pos} claims to end at {header.next_pos}, "
                                  f"expected {pos + header.event_size}",
                                  hint="the replication stream is not byte-identical to the file; report this")
            yield be.RawEvent(pos, bytes(event))
            pos += header.event_size
            if header.type_code == be.ROTATE and stop_after_rotate:
                return
            if header.type_code == be.STOP:
                return

    def read_head(self, name: str, events: int = 3) -> be.FileSummary:
        """Summary of the first events of ``name`` (its fingerprint: FDE time + Gtid_list)."""
        summ = be.Summarizer(name)
        for i, raw in enumerate(self.iter_file_events(name)):
            summ.feed(raw.data, raw.start)
            if i + 1 >= events:
                break
        return summ.summary


def _end_without_checksum(event: bytes) -> int:
    """End of an artificial event's body: without its CRC32 when the last 4 bytes are one."""
    if len(event) > be.HEADER_LEN + 4:
        crc = struct.unpack_from("<I", event, len(event) - 4)[0]
        if zlib.crc32(event[:-4]) & 0xFFFFFFFF == crc:
            return len(event) - 4
    return len(event)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def _close_quietly(conn: Any) -> None:
    try:
        conn._force_close()
    except Exception:  # noqa: BLE001 - closing a half-read dump connection
        pass


# --------------------------------------------------------------------------- archive index
def archive_parent(identity: str, generation: int) -> str:
    """Store sub-folder of one generation's binlog sets: ``binlogs/<identity>/g<generation>``."""
    return f"{ARCHIVE_DIR}/{identity_dirname(identity)}/g{generation}"


def index_path(store: Store, identity: str) -> Path:
    """``<store>/binlogs/<identity>/index.json``."""
    return Path(store.root) / ARCHIVE_DIR / identity_dirname(identity) / INDEX_NAME


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class ArchiveIndex:
    """The archive index of one server identity (plaintext JSON; no SQL text).

    ``generations``: list of ``{"generation", "started_at", "reason", "files": [entry],
    "gaps": [gap]}``; an entry is a :class:`binlog_events.FileSummary` dict plus
    ``set_id``, ``parent``, ``archived_at``, ``salvaged``, ``partial``.
    """

    identity: str
    generations: list[dict[str, Any]] = field(default_factory=list)
    server_version: str = ""

    @property
    def current(self) -> dict[str, Any]:
        if not self.generations:
            self.new_generation("first archive run")
        return self.generations[-1]

    def new_generation(self, reason: str, **extra: Any) -> dict[str, Any]:
        gen = {"generation": len(self.generations) + 1, "started_at": _now(), "reason": reason,
               "files": [], "gaps": [], **extra}
        self.generations.append(gen)
        return gen

    def to_dict(self) -> dict[str, Any]:
        return {"format": INDEX_FORMAT, "identity": self.identity, "server_version": self.server_version,
                "updated_at": _now(), "generations": self.generations}


def load_index(store: Store, identity: str) -> ArchiveIndex:
    """The archive index of ``identity`` (empty if nothing was archived yet)."""
    path = index_path(store, identity)
    if not path.is_file():
        return ArchiveIndex(identity)
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != INDEX_FORMAT:
        raise FormatError(f"{path}: unknown binlog archive index format {data.get('format')!r}")
    return ArchiveIndex(data["identity"], data.get("generations", []), data.get("server_version", ""))


def save_index(store: Store, index: ArchiveIndex) -> None:
    """Write the index atomically (0600, fsynced)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import make_private_dirs, write_file_atomic
    path = index_path(store, index.identity)
    make_private_dirs(path.parent)
    write_file_atomic(path, json.dumps(index.to_dict(), indent=1, sort_keys=True).encode())


def archived_identities(store: Store) -> list[str]:
    """Server identities that have an archive index in ``store``."""
    base = Path(store.root) / ARCHIVE_DIR
    out = []
    for p in sorted(base.glob(f"*/{INDEX_NAME}")) if base.is_dir() else []:
        with contextlib.suppress(ValueError, KeyError, OSError):
            out.append(json.loads(p.read_text(encoding="utf-8"))["identity"])
    return out


def _entry_by_name(gen: dict[str, Any], name: str) -> Optional[dict[str, Any]]:
    for entry in reversed(gen["files"]):
        if entry["file"] == name:
            return entry
    return None


def mark_new_generation(store: Store, identity: str, reason: str, first_file: Optional[str] = None,
                        branch: Optional[dict[str, Any]] = None) -> int:
    """Start a new generation now (called after a restore/PITR changed the server's history).

    ``first_file``: the first binlog of the new history (files before it still go to the
    previous generation). ``branch``: where the new history left its parent, as a PITR or
    restore knows it -- ``{"parent_generation", "file", "position" (exclusive: events of
    the parent starting before it are part of the new history), "gtid" (last applied),
    "last_applied_time", "at" (when), "base", "databases", "by"}``; plans follow it
    (pitr.line_of_history). Returns the new generation number.
    """
    with store.lock("binlog"):
        index = load_index(store, identity)
        index.current  # noqa: B018 - make sure generation 1 exists
        extra: dict[str, Any] = {"first_file": first_file}
        if branch is not None:
            extra["branch"] = dict(branch)
        gen = index.new_generation(reason, **extra)
        save_index(store, index)
        return gen["generation"]


# --------------------------------------------------------------------------- planning a run
@dataclass
class ArchivePlan:
    """What one archive run does: generation decision, gaps and files to ship."""

    generation: dict[str, Any]
    to_archive: list[str]
    skipped: list[str]
    gaps: list[dict[str, Any]]
    new_generation_reason: Optional[str] = None


def detect_new_generation(gen: dict[str, Any], present: list[tuple[str, int]], closed_names: set[str],
                          head_of: Any) -> Optional[str]:
    """Why the server's binlogs are a new history (None if they continue ``gen``).

    ``present``: [(name, size)] the server (or disk) has, oldest first; ``head_of(name)``
    returns a :class:`FileSummary` of the first events. Compares the newest file name
    that is both present and archived: fingerprint (FDE time + starting GTID list) and,
    for a closed file archived whole, its size. If no name is shared and the present
    names do not go beyond the archived ones, the names restarted.
    """
    if not gen["files"]:
        return _restarted_before_the_branch(gen, present)
    archived = {e["file"] for e in gen["files"]}
    common = [(n, s) for n, s in present if n in archived]
    if common:
        name, size = common[-1]
        entry = _entry_by_name(gen, name)
        head = head_of(name)
        if head.fingerprint != entry["fingerprint"]:
            return (f"{name} on the server starts differently from the archived {name} "
                    f"(format-description time/GTID list {head.fingerprint} vs {entry['fingerprint']}): "
                    "binlog history restarted (restore, RESET MASTER or a new server)")
        if name in closed_names and not entry.get("partial") and size != entry["size"]:
            return f"{name} is {size} bytes on the server but {entry['size']} archived: history diverged"
        return None
    last = gen["files"][-1]["file"]
    if present and binlog_sequence(present[-1][0]) <= binlog_sequence(last):
        return f"the server's binlog names restarted ({present[-1][0]} is not after the archived {last})"
    return None


def _restarted_before_the_branch(gen: dict[str, Any], present: list[tuple[str, int]]) -> Optional[str]:
    """For a generation with nothing archived yet (just begun by a PITR or restore, which recorded the
    server's binlog after it as ``first_file``): why the server's binlogs cannot be its continuation
    (None if they may be). A server whose newest file comes before ``first_file`` has started a
    history of its own since (re-initialised, or a new container volume): its files must neither be
    archived as, nor replayed as, the continuation of the old history."""
    first = gen.get("first_file")
    if not present or not first:
        return None
    if binlog_sequence(present[-1][0]) < binlog_sequence(first):
        return (f"the server's newest binlog {present[-1][0]} comes before {first}, where generation "
                f"{gen.get('generation', '?')} begins: binlog history restarted (a new server)")
    return None


def plan_run(gen: dict[str, Any], present: list[tuple[str, int]], closed_names: set[str]) -> ArchivePlan:
    """Which closed files to ship and which gaps exist, for a generation that continues."""
    files = gen["files"]
    names = [n for n, _pos in present]
    if not files:
        first = gen.get("first_file")
        todo = [n for n in names if n in closed_names
                and (first is None or binlog_sequence(n) >= binlog_sequence(first))]
        return ArchivePlan(gen, todo, [], [])
    last = files[-1]
    last_seq = binlog_sequence(last["file"])
    todo = [n for n in names if n in closed_names and binlog_sequence(n) > last_seq]
    if last.get("partial") and last["file"] in closed_names:
        todo.insert(0, last["file"])  # salvaged part of a file now closed: ship it whole
    skipped = [n for n in names if n in closed_names and n not in todo]
    gaps = []
    later = [n for n in names if binlog_sequence(n) > last_seq]
    if later and binlog_sequence(later[0]) != last_seq + 1:
        gaps.append({"after": last["file"], "missing_from": binlog_name(last["file"], last_seq + 1),
                     "missing_to": binlog_name(last["file"], binlog_sequence(later[0]) - 1),
                     "resumes_at": later[0], "detected_at": _now(),
                     "reason": "purged from the server before it was archived"})
    elif not later and names and last["file"] not in names and binlog_sequence(names[0]) <= last_seq:
        pass  # nothing newer yet
    return ArchivePlan(gen, todo, skipped, gaps)


# --------------------------------------------------------------------------- shipping
def ship_file(store: Store, keyring: KeyRing, held_lock: Any, identity: str, generation: int, name: str,
              events: Iterator[be.RawEvent], *, codec: Any = None, expected_size: Optional[int] = None,
              salvaged: bool = False, partial: bool = False, source_host: str = "",
              progress: Any = None) -> dict[str, Any]:
    """Store one binlog file (``\\xfebin`` + ``events``) as a ``binlog`` set; return its index entry.

    For a closed file (``partial=False``) the data must end with its Rotate/Stop event
    and match ``expected_size`` when given (BackupFailed otherwise): nothing incomplete
    is ever published as a whole file.
    """
    parent = archive_parent(identity, generation)
    summ = be.Summarizer(name)
    last_type = None
    # the caller holds the store's "binlog" lock for the whole run (held_lock); the set
    # itself takes no writer lock of its own
    del held_lock
    with store.begin_set("binlog", [COMPONENT], keyring, codec=codec, lock=None, parent=parent,
                         estimated_bytes=expected_size, progress=progress) as writer:
        with writer.artifact(COMPONENT, name, total_bytes=expected_size) as out:
            out.write(be.MAGIC)
            for raw in events:
                summ.feed(raw.data, raw.start)
                out.write(raw.data)
                last_type = be.parse_header(raw.data).type_code
        summary = summ.finish()
        if not partial and last_type not in (be.ROTATE, be.STOP):
            raise BackupFailed(f"binlog {name} ended at {summary.end_pos} without its closing Rotate event",
                               hint="the stream broke off; run the archive again")
        if expected_size is not None and not partial and summary.size != expected_size:
            raise BackupFailed(f"binlog {name}: received {summary.size} bytes but the server lists {expected_size}",
                               hint="run the archive again")
        entry = summary.to_dict()
        entry.update(set_id=writer.set_id, parent=parent, archived_at=_now(), salvaged=salvaged, partial=partial,
                     generation=generation)
        writer.write_json(COMPONENT, "summary.json", entry)
        writer.set_component_metadata(COMPONENT, {"identity": identity, "generation": generation, "file": name,
                                                  "partial": partial, "salvaged": salvaged})
        writer.add_source(COMPONENT, source_host, summary.server_version, identity=identity)
        writer.publish()
    LOG.info("binlog %s archived as %s/%s (%d bytes, %d transactions)%s", name, parent, entry["set_id"],
             summary.size, summary.transactions, " [salvaged, partial]" if partial else "")
    return entry


def _record(gen: dict[str, Any], entry: dict[str, Any]) -> None:
    """Add (or replace a partial entry of the same file with) ``entry``."""
    for i, old in enumerate(gen["files"]):
        if old["file"] == entry["file"]:
            entry["supersedes"] = old["set_id"]
            gen["files"][i] = entry
            return
    gen["files"].append(entry)


def _route_generation(index: ArchiveIndex, name: str) -> dict[str, Any]:
    """The generation a file belongs to: the newest whose ``first_file`` is not after it."""
    for gen in reversed(index.generations):
        first = gen.get("first_file")
        if first is None or binlog_sequence(name) >= binlog_sequence(first):
            return gen
    return index.generations[0]


def archive_binlogs(conn_params: Any, store: Store, keyring: KeyRing, *, flush: bool = False, codec: Any = None,
                    check_mode: bool = False, dump_server_id: Optional[int] = None,
                    progress: Any = None) -> dict[str, Any]:
    """Archive every closed binlog of the server not archived yet; return a result dict.

    ``flush=True`` first runs FLUSH BINARY LOGS so the newest events are in a closed file
    (needs RELOAD / BINLOG ADMIN). Takes the store's ``binlog`` lock (LockHeld if another
    archiver runs; it never waits for a full backup's ``create`` lock). Result keys:
    ``changed``, ``identity``, ``generation``, ``new_generation`` (reason or None),
    ``archived`` (entries), ``skipped`` (names already archived), ``gaps``.
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
    reader = ReplicationReader(conn_params, dump_server_id=dump_server_id)
    conn = mysql.connect(conn_params)
    try:
        flavor = mysql.detect_flavor(conn)
        identity = mysql.server_identity(conn, flavor)
        if flush and not check_mode:
            mysql.execute(conn, "FLUSH BINARY LOGS", doing="flushing binary logs (needs RELOAD or BINLOG ADMIN)")
        present = reader.list_files(conn)
    finally:
        conn.close()
    if not present:
        raise ConfigError(f"server {conn_params.where} has no binary logs", hint="enable log_bin on the server")
    closed = {n for n, _pos in present[:-1]}
    sizes = dict(present)
    with store.lock("binlog") as held:
        index = load_index(store, identity)
        index.server_version = flavor.version_string
        gen = index.current
        reason = detect_new_generation(gen, present, closed, reader.read_head)
        if reason:
            LOG.warning("binlog archive %s: new generation: %s", identity, reason)
            gen = index.new_generation(reason)
        plan = plan_run(gen, present, closed)
        plan = _with_previous_generation(index, plan, present, closed)
        result: dict[str, Any] = {"identity": identity, "generation": gen["generation"],
                                  "new_generation": reason, "skipped": plan.skipped, "gaps": plan.gaps,
                                  "archived": [], "would_archive": plan.to_archive if check_mode else []}
        if check_mode:
            result["changed"] = bool(plan.to_archive or plan.gaps or reason)
            return result
        gen["gaps"].extend(plan.gaps)
        for gap in plan.gaps:
            LOG.error("binlog archive %s: GAP: %s..%s missing (purged before archiving); archiving resumes at %s",
                      identity, gap["missing_from"], gap["missing_to"], gap["resumes_at"])
        if reason or plan.gaps:
            save_index(store, index)
        for name in plan.to_archive:
            target = _route_generation(index, name)
            if _archived_whole(target, name):
                plan.skipped.append(name)  # never ship a file again into the generation holding it
                continue
            entry = ship_file(store, keyring, held, identity, target["generation"], name,
                              reader.iter_file_events(name), codec=codec, expected_size=sizes[name],
                              source_host=f"{conn_params.host}:{conn_params.port}", progress=progress)
            _record(target, entry)
            save_index(store, index)
            result["archived"].append(entry)
    result["changed"] = bool(result["archived"] or plan.gaps or reason)
    return result


def _archived_whole(gen: dict[str, Any], name: str) -> bool:
    """True when ``gen`` already holds a complete (not partial) copy of the file ``name``."""
    entry = _entry_by_name(gen, name)
    return entry is not None and not entry.get("partial")


def _with_previous_generation(index: ArchiveIndex, plan: ArchivePlan, present: list[tuple[str, int]],
                              closed: set[str]) -> ArchivePlan:
    """Also ship closed files that belong to an earlier generation (before the new one's
    ``first_file``) and that this earlier generation does not hold yet.

    Each file is routed like the shipping loop does (:func:`_route_generation`), so files
    an earlier generation already archived are never shipped again -- also when the
    generations in between hold nothing (two PITRs with no archive run between them).
    """
    gen = plan.generation
    first = gen.get("first_file")
    if first is None or len(index.generations) < 2:
        return plan
    extra = [n for n, _pos in present if n in closed and binlog_sequence(n) < binlog_sequence(first)
             and not _archived_whole(_route_generation(index, n), n)]
    plan.to_archive = extra + [n for n in plan.to_archive if n not in extra]
    return plan


# --------------------------------------------------------------------------- salvage
def binlog_files_on_disk(binlog_dir: Path, basename: Optional[str] = None) -> list[Path]:
    """The binlog files listed in ``<dir>/<base>.index`` (oldest first) that exist.

    ``basename`` selects the series when the folder holds several (e.g. ``mariadb-bin``).
    """
    binlog_dir = Path(binlog_dir)
    indexes = sorted(binlog_dir.glob(f"{basename}.index" if basename else "*.index"))
    indexes = [p for p in indexes if not p.name.startswith(("relay", "ddl_recovery", "mysql-relay"))]
    candidates = []
    for idx in indexes:
        files = []
        for line in idx.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if not line:
                continue
            path = Path(line) if os.path.isabs(line) else binlog_dir / Path(line).name
            if path.is_file():
                files.append(path)
        if files and _is_binlog(files[0]):
            candidates.append(files)
    if not candidates:
        raise NotFound(f"no binary log index with readable binlog files in {binlog_dir}",
                       hint="point at the server's datadir or log_bin folder")
    if len(candidates) > 1:
        raise ConfigError(f"{binlog_dir} holds several binlog series",
                          hint="give basename (e.g. mariadb-bin)")
    return candidates[0]


def _is_binlog(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == be.MAGIC


def _disk_events(path: Path, partial: bool) -> Iterator[be.RawEvent]:
    with open(path, "rb") as fh:
        yield from be.iter_raw_events(fh, allow_partial_tail=partial)


def _disk_head(path: Path) -> be.FileSummary:
    summ = be.Summarizer(path.name)
    for i, raw in enumerate(_disk_events(path, True)):
        summ.feed(raw.data, raw.start)
        if i >= 2:
            break
    return summ.summary


def newest_base_identity(store: Store) -> Optional[str]:
    """The ``server_identity`` recorded in the newest published set holding a ``mysql``
    component (its mysql component metadata), or None when there is no such set."""
    newest = store.latest_set(component=BASE_COMPONENT)
    if newest is None:
        return None
    return newest.component_metadata(BASE_COMPONENT).get("server_identity") or None


def salvage_identity(store: Store, binlog_dir: Any) -> str:
    """Which server the salvaged binlogs of ``binlog_dir`` belong to, when not given.

    The only identity archived in the store; when nothing was archived yet, the
    identity of the newest base backup (:func:`newest_base_identity`) -- a server that
    died before its first archive run can still be salvaged and recovered (PITR
    works on that identity). ConfigError ("give identity") when the store archives
    several servers, or has neither archives nor a base backup naming one.
    """
    known = archived_identities(store)
    if len(known) == 1:
        return known[0]
    from_base = newest_base_identity(store) if not known else None
    if from_base:
        LOG.info("binlog salvage of %s: nothing archived yet; identity %s from the newest base backup",
                 binlog_dir, from_base)
        return from_base
    found = f"archived identities: {', '.join(known)}" if known else "nothing archived, no base backup names one"
    raise ConfigError(f"cannot tell which server {binlog_dir} belongs to ({found})",
                      hint="give identity (the server_identity of the server's base backup)")


def salvage_from_files(binlog_dir: Any, store: Store, keyring: KeyRing, *, identity: Optional[str] = None,
                       basename: Optional[str] = None, codec: Any = None, check_mode: bool = False,
                       progress: Any = None) -> dict[str, Any]:
    """Ship the binlogs written since the last archive run from a dead server's files.

    Reads ``<binlog_dir>/<base>.index``; closed files are shipped whole, the last
    (active) file up to its last complete event (``partial=True`` in the index; a later
    run replaces it by the whole file). Only reads the files. ``identity`` defaults to
    :func:`salvage_identity`. Result as :func:`archive_binlogs`.
    """
    files = binlog_files_on_disk(Path(binlog_dir), basename)
    if identity is None:
        identity = salvage_identity(store, binlog_dir)
    present = [(p.name, p.stat().st_size) for p in files]
    by_name = {p.name: p for p in files}
    closed = {n for n, _pos in present[:-1]}
    with store.lock("binlog") as held:
        index = load_index(store, identity)
        gen = index.current
        reason = detect_new_generation(gen, present, closed, lambda n: _disk_head(by_name[n]))
        if reason:
            gen = index.new_generation(reason)
        plan = plan_run(gen, present, closed | {present[-1][0]})
        active = present[-1][0]
        last = gen["files"][-1] if gen["files"] else None
        if last and last["file"] == active and last.get("partial") and active not in plan.to_archive:
            if present[-1][1] > last["size"]:
                plan.to_archive.append(active)
        result: dict[str, Any] = {"identity": identity, "generation": gen["generation"], "new_generation": reason,
                                  "skipped": plan.skipped, "gaps": plan.gaps, "archived": [],
                                  "would_archive": plan.to_archive if check_mode else []}
        if check_mode:
            result["changed"] = bool(plan.to_archive or plan.gaps or reason)
            return result
        gen["gaps"].extend(plan.gaps)
        for name in plan.to_archive:
            partial = name == active
            entry = ship_file(store, keyring, held, identity, gen["generation"], name,
                              _disk_events(by_name[name], partial), codec=codec,
                              expected_size=None if partial else by_name[name].stat().st_size,
                              salvaged=True, partial=partial, source_host=str(binlog_dir), progress=progress)
            _record(gen, entry)
            save_index(store, index)
            result["archived"].append(entry)
        if reason or plan.gaps:
            save_index(store, index)
    result["changed"] = bool(result["archived"] or plan.gaps or reason)
    return result


def open_archived(store: Store, keyring: KeyRing, entry: dict[str, Any]) -> BinaryIO:
    """A plaintext reader of an archived binlog file (authenticated by the pipeline)."""
    bset = store.open_set(entry["set_id"], parent=entry["parent"])
    return bset.open_artifact(COMPONENT, entry["file"], keyring)


__all__ = ["ReplicationReader", "archive_binlogs", "salvage_from_files", "load_index", "save_index",
           "mark_new_generation", "open_archived", "ArchiveIndex"]
