# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Binary log event parsing: just enough of the MySQL/MariaDB binlog format for PITR.

Pure Python, no server needed. What is decoded:

* the 19-byte v4 event header (timestamp, type, server id, size, next position, flags);
* Format_description (server version, header length, checksum algorithm);
* MariaDB GTID (162) and Gtid_list (163), MySQL GTID (33/34);
* Query (schema + SQL text), Annotate_rows (the SQL of row events), Xid,
  Table_map (schema/table of the following row events), Rows events (kind only),
  Rotate and Binlog_checkpoint.

Positions are byte offsets in the binlog file: an event *starts* at ``start`` and the
next event starts at ``end`` (= the header's ``log_pos`` for real events). Event
timestamps are whole seconds since the epoch (UTC) as the server wrote them.

A *transaction* (:class:`Transaction`) is the unit PITR applies or skips: for MariaDB a
GTID event up to its Xid / COMMIT (or the single statement of a standalone GTID, i.e.
DDL); its ``timestamp`` is the timestamp of its first event (the GTID / BEGIN event),
which MariaDB and MySQL set to the start time of the committing statement, so it is
the latest of the transaction's event times.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import FormatError, TruncatedData

MAGIC = b"\xfebin"
HEADER_LEN = 19
LOG_EVENT_BINLOG_IN_USE_F = 0x1
LOG_EVENT_ARTIFICIAL_F = 0x20
FLAGS_OFFSET = 17

# event type codes
START_V3 = 1
QUERY = 2
STOP = 3
ROTATE = 4
FORMAT_DESCRIPTION = 15
XID = 16
TABLE_MAP = 19
HEARTBEAT = 27
MYSQL_GTID = 33
MYSQL_ANONYMOUS_GTID = 34
MYSQL_PREVIOUS_GTIDS = 35
ANNOTATE_ROWS = 160
BINLOG_CHECKPOINT = 161
MARIADB_GTID = 162
GTID_LIST = 163
START_ENCRYPTION = 164
QUERY_COMPRESSED = 165
XA_PREPARE = 38

ROW_KINDS = {
    20: "insert", 21: "update", 22: "delete",        # v0 (5.1.0-5.1.15)
    23: "insert", 24: "update", 25: "delete",        # v1 (MariaDB default)
    30: "insert", 31: "update", 32: "delete",        # v2 (MySQL 5.6+)
    166: "insert", 167: "update", 168: "delete",     # MariaDB compressed v1
    169: "insert", 170: "update", 171: "delete",     # MariaDB compressed
}

EVENT_NAMES = {
    QUERY: "Query", STOP: "Stop", ROTATE: "Rotate", FORMAT_DESCRIPTION: "Format_desc", XID: "Xid",
    TABLE_MAP: "Table_map", HEARTBEAT: "Heartbeat", MYSQL_GTID: "Gtid", MYSQL_ANONYMOUS_GTID: "Anonymous_gtid",
    MYSQL_PREVIOUS_GTIDS: "Previous_gtids", ANNOTATE_ROWS: "Annotate_rows",
    BINLOG_CHECKPOINT: "Binlog_checkpoint", MARIADB_GTID: "Gtid", GTID_LIST: "Gtid_list",
    START_ENCRYPTION: "Start_encryption", QUERY_COMPRESSED: "Query_compressed", XA_PREPARE: "XA_prepare",
}

# MariaDB GTID event flags2
FL_STANDALONE = 1
FL_GROUP_COMMIT_ID = 2

CHECKSUM_OFF = 0
CHECKSUM_CRC32 = 1
CHECKSUM_LEN = 4


@dataclass(frozen=True)
class EventHeader:
    """The common 19-byte header. ``next_pos`` is 0 for artificial (not on disk) events."""

    timestamp: int
    type_code: int
    server_id: int
    event_size: int
    next_pos: int
    flags: int

    @property
    def is_artificial(self) -> bool:
        """True for events the server makes up for a replication stream (fake Rotate etc.)."""
        return bool(self.flags & LOG_EVENT_ARTIFICIAL_F) or self.next_pos == 0


def parse_header(buf: bytes) -> EventHeader:
    """Decode the first 19 bytes of an event (FormatError if shorter)."""
    if len(buf) < HEADER_LEN:
        raise FormatError(f"binlog event header needs {HEADER_LEN} bytes, got {len(buf)}")
    ts, typ, sid, size, pos, flags = struct.unpack_from("<IBIIIH", buf, 0)
    return EventHeader(ts, typ, sid, size, pos, flags)


@dataclass
class FormatDescription:
    """What a Format_description event says about the events after it."""

    binlog_version: int = 4
    server_version: str = ""
    created: int = 0
    header_length: int = HEADER_LEN
    checksum_alg: int = CHECKSUM_OFF
    post_header_lengths: bytes = b""

    @property
    def is_mariadb(self) -> bool:
        return "mariadb" in self.server_version.lower()

    def post_header_len(self, type_code: int) -> Optional[int]:
        """Post-header length of ``type_code`` (None when the FDE does not list it)."""
        idx = type_code - 1
        if 0 <= idx < len(self.post_header_lengths):
            return self.post_header_lengths[idx]
        return None


def _version_tuple(text: str) -> tuple[int, int, int]:
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (0, 0, 0)


def parse_format_description(event: bytes) -> FormatDescription:
    """Decode a whole Format_description event (header included)."""
    body = event[HEADER_LEN:]
    if len(body) < 57:
        raise FormatError("Format_description event too short")
    binlog_version = struct.unpack_from("<H", body, 0)[0]
    server_version = body[2:52].split(b"\0", 1)[0].decode("ascii", "replace")
    created = struct.unpack_from("<I", body, 52)[0]
    header_length = body[56]
    rest = body[57:]
    checksum_alg = CHECKSUM_OFF
    # servers >= 5.6.1 (and every MariaDB 10.x) end the FDE with alg byte + 4-byte checksum
    if _version_tuple(server_version) >= (5, 6, 1):
        checksum_alg = rest[-5]
        rest = rest[:-5]
    return FormatDescription(binlog_version, server_version, created, header_length, checksum_alg, bytes(rest))


def verify_checksum(event: bytes, fde: Optional[FormatDescription]) -> bool:
    """True when the event's CRC32 matches (or checksums are off / unknown).

    The Format_description event is checksummed with its BINLOG_IN_USE flag cleared.
    """
    header = parse_header(event)
    if header.type_code == FORMAT_DESCRIPTION:
        alg = parse_format_description(event).checksum_alg
    else:
        alg = fde.checksum_alg if fde else CHECKSUM_OFF
    if alg != CHECKSUM_CRC32:
        return True
    data = bytearray(event[:-CHECKSUM_LEN])
    if header.type_code == FORMAT_DESCRIPTION:
        data[FLAGS_OFFSET] &= ~LOG_EVENT_BINLOG_IN_USE_F & 0xFF
    expected = struct.unpack_from("<I", event, len(event) - CHECKSUM_LEN)[0]
    return zlib.crc32(bytes(data)) & 0xFFFFFFFF == expected


@dataclass
class BinlogEvent:
    """One decoded event. ``start``/``end``: byte offsets of the event in its file."""

    header: EventHeader
    start: int
    end: int
    name: str = ""
    gtid: Optional[str] = None
    standalone: bool = False
    schema: Optional[str] = None
    table: Optional[str] = None
    sql: Optional[str] = None
    row_kind: Optional[str] = None
    table_id: Optional[int] = None
    rotate_to: Optional[str] = None
    gtid_list: Optional[str] = None

    @property
    def timestamp(self) -> int:
        return self.header.timestamp

    @property
    def type_code(self) -> int:
        return self.header.type_code


def _body(event: bytes, fde: Optional[FormatDescription]) -> bytes:
    """The event bytes after the header, without a trailing checksum."""
    end = len(event)
    if fde is not None and fde.checksum_alg == CHECKSUM_CRC32:
        end -= CHECKSUM_LEN
    return event[HEADER_LEN:end]


def _decode_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def decode_event(event: bytes, start: int, fde: Optional[FormatDescription],
                 table_map: Optional[dict[int, tuple[str, str]]] = None) -> BinlogEvent:
    """Decode one event found at byte ``start`` of its file.

    ``fde`` is the file's Format_description (None only while decoding that event);
    ``table_map`` (table id -> (schema, table)) is updated by Table_map events and used
    to name the table of row events.
    """
    header = parse_header(event)
    ev = BinlogEvent(header, start, start + header.event_size, EVENT_NAMES.get(header.type_code, ""))
    typ = header.type_code
    if typ == FORMAT_DESCRIPTION:
        return ev
    body = _body(event, fde)
    try:
        _decode_body(ev, typ, body, fde, table_map)
    except (struct.error, IndexError) as err:
        raise FormatError(f"cannot decode {ev.name or typ} event at position {start}: {err}") from None
    return ev


def _decode_body(ev: BinlogEvent, typ: int, body: bytes, fde: Optional[FormatDescription],
                 table_map: Optional[dict[int, tuple[str, str]]]) -> None:
    if typ == MARIADB_GTID:
        seq, domain = struct.unpack_from("<QI", body, 0)
        flags2 = body[12]
        ev.gtid = f"{domain}-{ev.header.server_id}-{seq}"
        ev.standalone = bool(flags2 & FL_STANDALONE)
    elif typ == MYSQL_GTID:
        sid = body[1:17].hex()
        gno = struct.unpack_from("<Q", body, 17)[0]
        ev.gtid = f"{sid[:8]}-{sid[8:12]}-{sid[12:16]}-{sid[16:20]}-{sid[20:]}:{gno}"
    elif typ == QUERY:
        ev.schema, ev.sql = _decode_query(body, fde)
    elif typ == QUERY_COMPRESSED:
        ev.schema, compressed = _decode_query_raw(body, fde)
        ev.sql = _decode_text(_mariadb_uncompress(compressed))
    elif typ == ANNOTATE_ROWS:
        ev.sql = _decode_text(body)
    elif typ == TABLE_MAP:
        ev.table_id = _table_id(body, fde, typ)
        post = (fde.post_header_len(typ) if fde else None) or 8
        pos = post
        db_len = body[pos]
        ev.schema = _decode_text(body[pos + 1:pos + 1 + db_len])
        pos += 1 + db_len + 1
        t_len = body[pos]
        ev.table = _decode_text(body[pos + 1:pos + 1 + t_len])
        if table_map is not None:
            table_map[ev.table_id] = (ev.schema, ev.table)
    elif typ in ROW_KINDS:
        ev.row_kind = ROW_KINDS[typ]
        ev.table_id = _table_id(body, fde, typ)
        if table_map and ev.table_id in table_map:
            ev.schema, ev.table = table_map[ev.table_id]
    elif typ == ROTATE:
        ev.rotate_to = _decode_text(body[8:])
    elif typ == BINLOG_CHECKPOINT:
        n = struct.unpack_from("<I", body, 0)[0]
        ev.rotate_to = _decode_text(body[4:4 + n])
    elif typ == GTID_LIST:
        count = struct.unpack_from("<I", body, 0)[0] & 0x0FFFFFFF
        parts = []
        for i in range(count):
            domain, server, seq = struct.unpack_from("<IIQ", body, 4 + 16 * i)
            parts.append(f"{domain}-{server}-{seq}")
        ev.gtid_list = ",".join(parts)


def _table_id(body: bytes, fde: Optional[FormatDescription], typ: int) -> int:
    post = fde.post_header_len(typ) if fde else None
    if post == 6:
        return struct.unpack_from("<I", body, 0)[0]
    return int.from_bytes(body[0:6], "little")


def _decode_query_raw(body: bytes, fde: Optional[FormatDescription]) -> tuple[str, bytes]:
    post = (fde.post_header_len(QUERY) if fde else None) or 13
    db_len = body[8]
    status_len = struct.unpack_from("<H", body, 11)[0]
    pos = post + status_len
    schema = _decode_text(body[pos:pos + db_len])
    return schema, body[pos + db_len + 1:]


def _decode_query(body: bytes, fde: Optional[FormatDescription]) -> tuple[str, str]:
    schema, sql = _decode_query_raw(body, fde)
    return schema, _decode_text(sql)


def _mariadb_uncompress(data: bytes) -> bytes:
    """MariaDB compressed event payload: 1 header byte (0x80 | n), n bytes length, zlib data."""
    if not data:
        return b""
    n = data[0] & 0x07
    return zlib.decompress(data[1 + n:])


def statement_kind(sql: Optional[str]) -> str:
    """Upper-case first keyword of a statement (``INSERT``, ``DROP`` ...), comments skipped."""
    if not sql:
        return ""
    text = re.sub(r"^\s*(/\*.*?\*/\s*|--[^\n]*\n\s*|#[^\n]*\n\s*)*", "", sql, flags=re.S)
    m = re.match(r"[A-Za-z]+", text)
    return m.group(0).upper() if m else ""


DDL_KINDS = frozenset({"CREATE", "DROP", "ALTER", "TRUNCATE", "RENAME", "GRANT", "REVOKE"})


# --------------------------------------------------------------------------- reading files
@dataclass
class RawEvent:
    """An event's bytes and where it starts in its file."""

    start: int
    data: bytes

    @property
    def end(self) -> int:
        return self.start + len(self.data)


def read_exact(stream: BinaryIO, n: int) -> bytes:
    """Read up to ``n`` bytes (fewer only at EOF)."""
    chunks = []
    while n > 0:
        chunk = stream.read(n)
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def iter_raw_events(stream: BinaryIO, *, allow_partial_tail: bool = False,
                    verify: bool = True) -> Iterator[RawEvent]:
    """Yield the events of a binlog file (read from its first byte, the magic).

    ``allow_partial_tail=True`` (salvaging the active file of a crashed server) stops
    silently at a truncated or corrupt last event instead of raising TruncatedData /
    FormatError; every yielded event is complete (and CRC-checked when ``verify``).
    """
    if read_exact(stream, 4) != MAGIC:
        raise FormatError("not a binary log file (magic \\xfebin missing)")
    pos = 4
    fde: Optional[FormatDescription] = None
    while True:
        head = read_exact(stream, HEADER_LEN)
        if not head:
            return
        if len(head) < HEADER_LEN:
            if allow_partial_tail:
                return
            raise TruncatedData(f"binlog ends inside an event header at position {pos}")
        header = parse_header(head)
        if header.event_size < HEADER_LEN or header.event_size > (1 << 30):
            if allow_partial_tail:
                return
            raise FormatError(f"impossible event size {header.event_size} at position {pos}")
        rest = read_exact(stream, header.event_size - HEADER_LEN)
        data = head + rest
        if len(data) < header.event_size:
            if allow_partial_tail:
                return
            raise TruncatedData(f"binlog ends inside the event at position {pos}")
        if header.type_code == FORMAT_DESCRIPTION:
            fde = parse_format_description(data)
        if verify and not verify_checksum(data, fde):
            if allow_partial_tail:
                return
            raise FormatError(f"binlog event at position {pos} fails its CRC32 checksum")
        yield RawEvent(pos, data)
        pos += header.event_size


def decode_events(raw_events: Iterable[RawEvent]) -> Iterator[BinlogEvent]:
    """Decode raw events of ONE file in order (tracks the FDE and the table map)."""
    fde: Optional[FormatDescription] = None
    table_map: dict[int, tuple[str, str]] = {}
    for raw in raw_events:
        header = parse_header(raw.data)
        if header.type_code == FORMAT_DESCRIPTION:
            fde = parse_format_description(raw.data)
        yield decode_event(raw.data, raw.start, fde, table_map)


# --------------------------------------------------------------------------- transactions
@dataclass
class Statement:
    """One change inside a transaction: kind (INSERT, DROP, ...), schema, table, SQL text."""

    kind: str
    schema: Optional[str]
    table: Optional[str]
    sql: Optional[str]
    position: int
    timestamp: int


@dataclass
class Transaction:
    """A unit PITR applies whole or not at all. ``start``/``end``: byte offsets in ``file``.

    ``timestamp`` is the first event's time (commit statement time, whole seconds UTC).
    ``complete`` is False for a transaction cut off by the end of the data (salvage).
    """

    file: str
    start: int
    end: int
    timestamp: int
    gtid: Optional[str] = None
    statements: list[Statement] = field(default_factory=list)
    row_events: int = 0
    complete: bool = True

    @property
    def is_ddl(self) -> bool:
        return any(s.kind in DDL_KINDS for s in self.statements)

    def texts(self) -> list[str]:
        """SQL texts of the transaction (Query statements and Annotate_rows SQL)."""
        return [s.sql for s in self.statements if s.sql]


_TXN_END_WORDS = ("COMMIT", "ROLLBACK", "XA END", "XA COMMIT", "XA ROLLBACK")


class TransactionGrouper:
    """Push-based grouping of the decoded events of ONE file into transactions.

    Rules: a GTID event opens a transaction; a Query ``BEGIN`` opens one if none is
    open; Xid, XA_prepare or a Query COMMIT/ROLLBACK closes it; any other Query closes
    it when the transaction is standalone (DDL) or was not opened by BEGIN. A
    transaction still open at :meth:`finish` is returned with ``complete=False``.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.txn: Optional[Transaction] = None
        self.in_begin = False
        self.pending_annotate: Optional[str] = None

    def feed(self, ev: BinlogEvent) -> Optional[Transaction]:
        """Take the next event; return the transaction it completes, if any."""
        typ = ev.type_code
        if typ in (MARIADB_GTID, MYSQL_GTID, MYSQL_ANONYMOUS_GTID):
            done = self.txn
            if done is not None:  # never closed: should not happen in a valid log
                done.complete = False
            self.txn = Transaction(self.file, ev.start, ev.end, ev.timestamp, gtid=ev.gtid)
            self.in_begin = False
            return done
        if typ in (QUERY, QUERY_COMPRESSED):
            return self._feed_query(ev)
        if typ in (XID, XA_PREPARE):
            done = self.txn
            if done is not None:
                done.end = ev.end
            self.txn, self.in_begin = None, False
            return done
        txn = self.txn
        if txn is None:
            return None  # file-level event: FDE, Gtid_list, checkpoint, Rotate, Stop ...
        txn.end = ev.end
        if typ == ANNOTATE_ROWS:
            self.pending_annotate = ev.sql
        elif typ in ROW_KINDS:
            txn.row_events += 1
            if self.pending_annotate is not None or not _same_as_last(txn, ev):
                txn.statements.append(Statement((ev.row_kind or "").upper(), ev.schema, ev.table,
                                                self.pending_annotate, ev.start, ev.timestamp))
            self.pending_annotate = None
        return None

    def _feed_query(self, ev: BinlogEvent) -> Optional[Transaction]:
        word = statement_kind(ev.sql)
        sql_upper = (ev.sql or "").strip().upper()
        if word == "BEGIN" or sql_upper.startswith(("XA START", "XA BEGIN")):
            if self.txn is None:
                self.txn = Transaction(self.file, ev.start, ev.end, ev.timestamp)
            self.in_begin = True
            self.txn.end = ev.end
            return None
        txn = self.txn
        if txn is None:
            txn = self.txn = Transaction(self.file, ev.start, ev.end, ev.timestamp)
        txn.end = ev.end
        if self.in_begin and sql_upper.startswith(_TXN_END_WORDS):
            self.txn, self.in_begin = None, False
            return txn
        txn.statements.append(Statement(word, ev.schema, _ddl_table(ev.sql), ev.sql, ev.start, ev.timestamp))
        if not self.in_begin:
            self.txn = None
            return txn
        return None

    def finish(self) -> Optional[Transaction]:
        """The transaction left open by the end of the data (``complete=False``), if any."""
        txn, self.txn = self.txn, None
        if txn is not None:
            txn.complete = False
        return txn


def group_transactions(events: Iterable[BinlogEvent], file: str) -> Iterator[Transaction]:
    """Group the decoded events of one file into transactions, in order (see TransactionGrouper)."""
    grouper = TransactionGrouper(file)
    for ev in events:
        done = grouper.feed(ev)
        if done is not None:
            yield done
    last = grouper.finish()
    if last is not None:
        yield last


def _same_as_last(txn: Transaction, ev: BinlogEvent) -> bool:
    if not txn.statements:
        return False
    last = txn.statements[-1]
    return last.kind == (ev.row_kind or "").upper() and last.schema == ev.schema and last.table == ev.table


def _ddl_table(sql: Optional[str]) -> Optional[str]:
    """The table a DDL statement names (best effort, e.g. ``DROP TABLE `t``` -> ``t``)."""
    if not sql:
        return None
    m = re.search(r"\b(?:TABLE|VIEW)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?((?:`[^`]+`|\w+)(?:\.(?:`[^`]+`|\w+))?)",
                  sql, flags=re.I)
    if not m:
        return None
    return m.group(1).split(".")[-1].strip("`")


# --------------------------------------------------------------------------- summaries
@dataclass
class FileSummary:
    """What the archive index records about one binlog file."""

    file: str
    size: int = 0
    start_pos: int = 4
    end_pos: int = 4
    first_time: Optional[int] = None
    last_time: Optional[int] = None
    first_gtid: Optional[str] = None
    last_gtid: Optional[str] = None
    fde_time: Optional[int] = None
    gtid_list: Optional[str] = None
    server_version: str = ""
    events: int = 0
    transactions: int = 0
    row_events: int = 0
    rotate_to: Optional[str] = None
    complete_end: int = 4
    max_time: Optional[int] = None
    closed_at: Optional[int] = None

    @property
    def fingerprint(self) -> str:
        """Identifies this incarnation of the file name: FDE time + starting GTID state."""
        return f"{self.fde_time}|{self.gtid_list or ''}"

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"fingerprint": self.fingerprint}


class Summarizer:
    """Feed complete events of one file in order; builds a :class:`FileSummary`.

    With ``keep_transactions`` the complete :class:`Transaction` list is kept in
    ``transactions`` (for PITR analysis); otherwise only counts (bounded memory).
    """

    def __init__(self, file: str, keep_transactions: bool = False) -> None:
        self.summary = FileSummary(file)
        self.keep_transactions = keep_transactions
        self.transactions: list[Transaction] = []
        self._grouper = TransactionGrouper(file)
        self._fde: Optional[FormatDescription] = None
        self._table_map: dict[int, tuple[str, str]] = {}

    def feed(self, data: bytes, start: int) -> BinlogEvent:
        header = parse_header(data)
        if header.type_code == FORMAT_DESCRIPTION:
            self._fde = parse_format_description(data)
            self.summary.fde_time = header.timestamp
            self.summary.server_version = self._fde.server_version
        ev = decode_event(data, start, self._fde, self._table_map)
        s = self.summary
        s.events += 1
        s.end_pos = ev.end
        s.size = ev.end
        if header.type_code not in (FORMAT_DESCRIPTION, GTID_LIST, BINLOG_CHECKPOINT, MYSQL_PREVIOUS_GTIDS,
                                    ROTATE, STOP, START_ENCRYPTION):
            s.first_time = ev.timestamp if s.first_time is None else s.first_time
            s.last_time = ev.timestamp
            s.max_time = ev.timestamp if s.max_time is None else max(s.max_time, ev.timestamp)
        if ev.gtid:
            s.first_gtid = s.first_gtid or ev.gtid
            s.last_gtid = ev.gtid
        if ev.gtid_list is not None and s.gtid_list is None:
            s.gtid_list = ev.gtid_list
        if ev.type_code in (ROTATE, STOP):
            s.rotate_to = ev.rotate_to
            s.closed_at = ev.timestamp
        self._take(self._grouper.feed(ev))
        return ev

    def _take(self, txn: Optional[Transaction]) -> None:
        if txn is None:
            return
        s = self.summary
        if txn.complete:
            s.transactions += 1
            s.row_events += txn.row_events
            s.complete_end = txn.end
        if self.keep_transactions:
            self.transactions.append(txn)

    def finish(self) -> FileSummary:
        """Close the summary; ``complete_end`` = end of the last complete transaction.

        Events after the last complete transaction that belong to no transaction
        (Rotate, Stop) also count as complete.
        """
        last = self._grouper.finish()
        s = self.summary
        if last is None:
            s.complete_end = s.end_pos
        else:
            s.complete_end = last.start
            self._take(last)
        if s.first_time is None:
            s.first_time = s.last_time = s.max_time = s.fde_time
        return s


def summarize_stream(stream: BinaryIO, file: str, *, allow_partial_tail: bool = False,
                     keep_transactions: bool = False) -> Summarizer:
    """Read a whole binlog file from ``stream`` and summarize it."""
    summ = Summarizer(file, keep_transactions)
    for raw in iter_raw_events(stream, allow_partial_tail=allow_partial_tail):
        summ.feed(raw.data, raw.start)
    summ.finish()
    return summ
