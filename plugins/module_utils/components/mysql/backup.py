# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Consistent, parallel, streamed logical backup of MySQL/MariaDB (the "native" dumper).

Design (mydumper-like, in process):

* N worker connections share ONE consistent snapshot. With N > 1 the control
  connection holds ``FLUSH TABLES WITH READ LOCK`` (needs RELOAD) only while the
  workers run ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` and the schema is read;
  with N == 1 no lock is taken at all. On MariaDB the snapshot's exact binlog
  coordinates come from ``SHOW STATUS LIKE 'binlog_snapshot_%'`` (checked equal on
  every worker) and the GTID position from ``BINLOG_GTID_POS(file, pos)``.
* Every table is read once, in key order, as canonical SQL tuples built by the
  server (``QUOTE``/``HEX``), written as multi-row INSERTs (about
  :data:`STATEMENT_BYTES` each) straight into its own encrypted artifact
  ``mysql/data.<db>.<table>.sql.zst.enc``. Row count and content checksum are
  computed on the same bytes as they pass: no second read. Plaintext never
  touches the disk.
* ``schema.sql`` (databases, tables), ``objects.sql`` (views, routines, triggers,
  events) and ``users.sql`` (``mariadb-dump --system=users``) are separate
  artifacts; the restore loads objects after the data.

Checksum contract (shared with :mod:`mysql_restore`): a row's canonical text is
``row_select_sql`` output; ``ordered`` tables hash ``text + b"\\n"`` per row with
sha256 in key order; tables without a usable key are ``unordered``: the sum of
``sha256(text)`` modulo 2**256 (hex). Both sides run on the server, so a restore
onto the same server version reproduces the values exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Sequence

from ansible_collections.lifeboat.dr.plugins.module_utils.components import base as components
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.dumpformat import (
    BLOCK_MARK,
    COMPONENT,
    MASK_BITS,
    METADATA_FORMAT,
    METADATA_JSON,
    OBJECTS_ARTIFACT,
    POSITION_JSON,
    READ_CHUNK,
    SCHEMA_ARTIFACT,
    TSV_METADATA_FORMAT,
    USERS_ARTIFACT,
    Column,
    RowHasher,
    TableSpec,
    close_quietly,
    nullable_columns,
    parse_blocks,
    row_select_sql,
    stream_table_rows,
    text_of,
    tool_failure,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    BackupFailed,
    ConfigError,
    LifeboatError,
    NotFound,
    PermissionDenied,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    ProgressFn,
    ProgressMeter,
    get_logger,
    set_step,
)

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.writer import SetWriter

try:
    import pymysql
    import pymysql.cursors
except ImportError:  # pragma: no cover
    pass


log = get_logger("mysql.backup")


# --------------------------------------------------------------------------- dumping a table (the format: dumpformat)


def dump_table(conn: Any, spec: TableSpec, out: Any, meter: Optional[Callable[[int], None]] = None) -> dict:
    """Stream one table as INSERT statements into ``out`` (binary writer); return rows + checksum.

    Returns ``{"rows", "checksum", "plaintext_bytes"}``. Statement framing: every
    statement ends with ``;\\n`` and row texts never contain a raw newline, so a
    reader splits statements on ``b";\\n"`` alone.
    """
    prefix = spec.insert_prefix()
    hasher = RowHasher(spec.hash_mode)
    written = 0
    header = (BLOCK_MARK + json.dumps({"kind": "data", "db": spec.db, "name": spec.table}) + "\n").encode()
    out.write(header)
    written += len(header)

    def emit(rows: list[bytes]) -> None:
        nonlocal written
        hasher.update(rows)
        stmt = prefix + b",\n".join(rows) + b";\n"
        out.write(stmt)
        written += len(stmt)
        if meter:
            meter(len(stmt))

    stream_table_rows(conn, row_select_sql(spec), emit, spec.avg_row_bytes)
    return {"rows": hasher.rows, "checksum": hasher.hexdigest(), "plaintext_bytes": written}


# --------------------------------------------------------------------------- tsv method
# The ``tsv`` method streams a table as the ``mariadb`` client prints it in batch mode:
# one line per row, fields separated by TAB, TAB/LF/backslash/NUL escaped as \t \n \\ \0,
# every value in its column's own character set (``character_set_results = binary``),
# so no server-side formatting and no per-row Python. The client prints SQL NULL as the
# bare word ``NULL``, which a string, BLOB or BIT value can also be; so every row ends with
# NULL masks: field k of a row is NULL iff bit (k % MASK_BITS) of mask (k // MASK_BITS) of
# the nullable columns is set. ``mysql_restore`` loads it with ``LOAD DATA`` (see
# :func:`tsv_load_sql`). Row count = number of LF; checksum = sha256 of the whole stream.
METHODS = ("auto", "native", "tsv")
TSV_MIN_BYTES = 8 << 20            # ``auto``: tables at least this big (information_schema size) use tsv
# the client's own character set only decides how it escapes the bytes it prints: ``binary``
# escapes byte by byte (what LOAD DATA ... CHARACTER SET binary reads back) and costs a third
# less CPU than utf8mb4's multibyte scan; the server still parses our SQL as utf8mb4 (TsvSession.begin)
TSV_CLIENT_OPTIONS = ("--batch", "--skip-column-names", "--quick", "--unbuffered", "--default-character-set=binary",
                      "--max-allowed-packet=1G")


def tsv_select_sql(spec: TableSpec, db: Optional[str] = None, table: Optional[str] = None) -> str:
    """The query the ``tsv`` method streams: stored columns as they are, then the NULL masks, in key order."""
    fields = [my.quote_ident(c.name) for c in spec.columns]
    nullable = nullable_columns(spec)
    for start in range(0, len(nullable), MASK_BITS):
        group = nullable[start:start + MASK_BITS]
        fields.append("+".join(f"(({my.quote_ident(c.name)} IS NULL) << {k})" for k, c in enumerate(group)))
    sql = f"SELECT {', '.join(fields)} FROM {my.qualified(db or spec.db, table or spec.table)}"
    if spec.order_by:
        sql += " ORDER BY " + ",".join(my.quote_ident(c) for c in spec.order_by)
    return sql


def choose_methods(tables: Sequence[TableSpec], method: str, parallel: int) -> None:
    """Set ``spec.method`` of every table: ``native``, ``tsv``, or ``auto``.

    ``auto``: tables of at least :data:`TSV_MIN_BYTES` use ``tsv``, smaller ones
    ``native`` (whose checksum a restore recomputes from the restored table). With
    ``parallel`` 1 one connection does everything, so the whole backup uses ``tsv``
    as soon as one table is big.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown mysql dump method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if method == "auto":
        big = {t.key for t in tables if t.approx_bytes >= TSV_MIN_BYTES}
        if parallel == 1 and big:
            big = {t.key for t in tables}
        for t in tables:
            t.method = "tsv" if t.key in big else "native"
    else:
        for t in tables:
            t.method = method


class TsvSession:
    """One ``mariadb`` client process in batch mode, fed SQL on stdin, inside the backup's snapshot.

    :meth:`begin` starts its consistent snapshot and returns the session's
    ``binlog_snapshot_*`` status; :meth:`dump` streams one table into a writer.
    Every query is followed by ``SELECT '<marker>', FOUND_ROWS()``: its output line
    (marker TAB row count) ends the response, and gives the row count of the query
    without counting lines. Nothing is sent before that line arrives, so the marker
    line is always the last thing in the pipe: only the end of the stream is checked
    for it. A row cannot start with the marker (128 random bits). Credentials reach
    the client only through the 0600 option file.
    """

    def __init__(self, tool: str, defaults_file: str) -> None:
        import secrets

        self.marker = ("lifeboat-end-" + secrets.token_hex(16)).encode()
        argv = my.tool_argv(tool, defaults_file, *TSV_CLIENT_OPTIONS)
        self.tool = argv[0]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _widen_pipe(self.proc.stdout.fileno())
        self._errors: list[bytes] = []
        self._stderr = threading.Thread(target=lambda: self._errors.append(self.proc.stderr.read()), daemon=True)
        self._stderr.start()
        self.last_rows = 0

    def _send(self, sql: str) -> None:
        try:
            self.proc.stdin.write(sql.encode("utf-8", "surrogateescape")
                                  + f";\nSELECT '{self.marker.decode()}', FOUND_ROWS();\n".encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._failure("sending a query") from None

    def _failure(self, what: str) -> LifeboatError:
        self.proc.kill()
        self.proc.wait()
        self._stderr.join(5)
        stderr = b"".join(self._errors).decode("utf-8", "replace").strip()
        return tool_failure(what, self.tool, self.proc.returncode, stderr or "the client ended early")

    def _responses(self, what: str) -> Iterator[Any]:
        """Yield the output of the query just sent (bytes-like pieces) up to, not including, its
        marker line; sets :attr:`last_rows` from that line. Each byte is copied at most once
        here (only the few bytes held back at a read's end, in case they start the marker line).
        """
        fd = self.proc.stdout.fileno()
        head = self.marker + b"\t"
        hold = len(head) + 24  # the marker line: head, up to 22 digits, newline
        held = b""  # the end of the stream so far, not yet yielded
        at_line_start = True  # everything yielded so far ends with a newline (or nothing was)
        while True:
            chunk = os.read(fd, READ_CHUNK)
            if not chunk:
                raise self._failure(what)
            if len(chunk) >= hold:
                if held:
                    yield held
                    at_line_start = held.endswith(b"\n")
                data = chunk
            else:
                data = held + chunk
            held = b""
            start = _marker_line_start(data, head, hold, at_line_start)
            if start >= 0:
                self.last_rows = int(data[start + len(head):-1])
                if start:
                    yield memoryview(data)[:start]
                return
            if len(data) > hold:
                yield memoryview(data)[:-hold]
                at_line_start = data[-hold - 1] == 10
                held = data[-hold:]
            else:
                held = data

    def begin(self) -> dict[str, str]:
        """Start the session's consistent snapshot; return its ``binlog_snapshot_*`` status (lowercase names)."""
        self._send("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; SET time_zone = '+00:00';"
                   " SET character_set_client = utf8mb4, character_set_connection = utf8mb4,"
                   " character_set_results = binary;"
                   " START TRANSACTION WITH CONSISTENT SNAPSHOT;"
                   " SHOW STATUS LIKE 'binlog_snapshot_%'")
        text = b"".join(self._responses("opening a consistent snapshot")).decode("utf-8", "replace")
        status = {}
        for line in text.splitlines():
            name, _tab, value = line.partition("\t")
            status[name.lower()] = value
        return status

    def dump(self, spec: TableSpec, out: Any, meter: Optional[Callable[[int], None]] = None) -> dict:
        """Stream ``spec`` (``tsv_select_sql``) into ``out``; return ``{"rows", "plaintext_bytes"}``."""
        self._send(tsv_select_sql(spec))
        written = 0
        for piece in self._responses(f"dumping {spec.key}"):
            out.write(piece)
            written += len(piece)
            if meter:
                meter(len(piece))
        return {"rows": self.last_rows, "plaintext_bytes": written}

    def close(self, commit: bool = True) -> None:
        """End the snapshot and the client; a failure of the client here fails the backup."""
        if self.proc.poll() is None:
            try:
                if commit:
                    self.proc.stdin.write(b"COMMIT;\n")
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            if not commit:
                self.proc.kill()
        rc = self.proc.wait()
        self._stderr.join(5)
        stderr = b"".join(self._errors).decode("utf-8", "replace").strip()
        if commit and (rc != 0 or re.search(r"\berror\b", stderr, re.I)):
            raise tool_failure("ending the dump session", self.tool, rc, stderr)


def _widen_pipe(fd: int, size: int = READ_CHUNK) -> None:
    """Ask Linux for a ``size``-byte pipe buffer (fewer, bigger reads); silently keeps the default elsewhere."""
    import fcntl

    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is None:
        return
    try:
        fcntl.fcntl(fd, setpipe, size)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size for this user: the default works, only slower


def _marker_line_start(data: bytes, head: bytes, hold: int, at_line_start: bool) -> int:
    """Offset in ``data`` of a complete marker line (``head`` digits newline) ending ``data``, or -1.

    ``at_line_start``: whether the bytes before ``data`` end at a line boundary. Only the
    last ``hold`` bytes are looked at.
    """
    if not data.endswith(b"\n"):
        return -1
    newline = data.rfind(b"\n", max(0, len(data) - hold - 1), len(data) - 1)
    if newline < 0 and (len(data) > hold or not at_line_start):
        return -1
    start = newline + 1
    if not data.startswith(head, start) or not data[start + len(head):-1].isdigit():
        return -1
    return start


def recompute_from_artifact(reader: Any, table: dict[str, Any]) -> dict[str, Any]:
    """Row count and checksum of one table recomputed from its data artifact (``reader``: plaintext).

    Works for both methods (the table's metadata entry says which); compare the result
    with the entry's ``rows`` and ``checksum``. Reads the artifact once, in big pieces.
    """
    if table.get("method", "native") == "tsv":
        digest, rows = hashlib.sha256(), 0
        while True:
            chunk = reader.read(READ_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            rows += chunk.count(b"\n")
        return {"rows": rows, "checksum": "tsv-sha256:" + digest.hexdigest()}
    hasher = RowHasher(table.get("hash_mode", "ordered"))
    for line in reader.read().split(b"\n"):
        line = line.rstrip(b";").rstrip(b",")
        if line.startswith(b"("):
            hasher.update([line])
    return {"rows": hasher.rows, "checksum": hasher.hexdigest()}


# --------------------------------------------------------------------------- discovery
def list_databases(conn: Any, wanted: Optional[Iterable[str]] = None) -> list[str]:
    """Non-system databases (all, or ``wanted`` after checking each exists: NotFound otherwise).

    "All" leaves out the schemas of :data:`mysql.LIFEBOAT_SCHEMA_RE` (kept-aside copies of earlier
    restores are not the application's data, and backing them up would copy them again on
    every restore); name one in ``wanted`` to back it up.
    """
    existing = [text_of(r[0]) for r in my.query_all(conn, "SHOW DATABASES")]
    if not wanted:
        skipped = [d for d in existing if my.LIFEBOAT_SCHEMA_RE.search(d)]
        if skipped:
            log.info("not backed up (Lifeboat's kept-aside/staging schemas; name them in databases to include them):"
                     " %s", ", ".join(skipped))
        return [d for d in existing if d not in my.SYSTEM_DATABASES and d not in skipped]
    wanted = list(dict.fromkeys(wanted))
    missing = [d for d in wanted if d not in existing]
    if missing:
        raise NotFound(f"database(s) not found on the server: {', '.join(missing)}",
                       hint="check the 'databases' option (names are case-sensitive)")
    return wanted


def discover_tables(conn: Any, databases: Sequence[str]) -> tuple[list[TableSpec], list[tuple[str, str]]]:
    """Base tables (largest first) and views ``(db, name)`` of ``databases``."""
    if not databases:
        return [], []
    marks = ",".join(["%s"] * len(databases))
    rows = my.query_all(conn, "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, COALESCE(DATA_LENGTH,0),"
                        " COALESCE(AVG_ROW_LENGTH,0) FROM information_schema.TABLES"
                        f" WHERE TABLE_SCHEMA IN ({marks}) ORDER BY TABLE_SCHEMA, TABLE_NAME", list(databases))
    views = [(text_of(r[0]), text_of(r[1])) for r in rows if text_of(r[2]) == "VIEW"]
    bases = [r for r in rows if text_of(r[2]) in ("BASE TABLE", "SYSTEM VERSIONED")]
    columns = _columns(conn, marks, databases)
    keys = _order_keys(conn, marks, databases)
    specs = []
    for db, name, _type, size, avg in bases:
        db, name = text_of(db), text_of(name)
        cols = columns.get((db, name), [])
        specs.append(TableSpec(db, name, cols, keys.get((db, name), []), int(size), int(avg)))
    specs.sort(key=lambda s: -s.approx_bytes)
    return specs, views


def _columns(conn: Any, marks: str, databases: Sequence[str]) -> dict[tuple[str, str], list[Column]]:
    rows = my.query_all(conn, "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME, EXTRA,"
                        f" IS_NULLABLE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ({marks})"
                        " ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION", list(databases))
    out: dict[tuple[str, str], list[Column]] = {}
    for db, table, name, dtype, charset, extra, nullable in rows:
        if "GENERATED" in text_of(extra or "").upper():
            continue  # generated columns are recomputed by the server on load
        column = Column(text_of(name), text_of(dtype).lower(), text_of(charset), text_of(nullable) == "YES",
                        "AUTO_INCREMENT" in text_of(extra or "").upper())
        out.setdefault((text_of(db), text_of(table)), []).append(column)
    return out


def _order_keys(conn: Any, marks: str, databases: Sequence[str]) -> dict[tuple[str, str], list[str]]:
    """Primary key, else the first unique index whose columns are all NOT NULL."""
    rows = my.query_all(conn, "SELECT s.TABLE_SCHEMA, s.TABLE_NAME, s.INDEX_NAME, s.COLUMN_NAME, c.IS_NULLABLE,"
                        " s.SUB_PART FROM information_schema.STATISTICS s JOIN information_schema.COLUMNS c"
                        " ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME"
                        " AND c.COLUMN_NAME = s.COLUMN_NAME"
                        f" WHERE s.NON_UNIQUE = 0 AND s.TABLE_SCHEMA IN ({marks})"
                        " ORDER BY s.TABLE_SCHEMA, s.TABLE_NAME, s.INDEX_NAME = 'PRIMARY' DESC, s.INDEX_NAME,"
                        " s.SEQ_IN_INDEX", list(databases))
    indexes: dict[tuple[str, str], dict[str, list]] = {}
    for db, table, index, col, nullable, sub_part in rows:
        idx = indexes.setdefault((text_of(db), text_of(table)), {}).setdefault(text_of(index), [])
        idx.append((text_of(col), text_of(nullable) == "YES" or sub_part is not None))
    keys = {}
    for table_key, idxs in indexes.items():
        for cols in idxs.values():  # PRIMARY first (ordering above), then by name
            if not any(bad for _c, bad in cols):
                keys[table_key] = [c for c, _bad in cols]
                break
    return keys


# --------------------------------------------------------------------------- schema & objects
def schema_blocks(conn: Any, databases: Sequence[str], tables: Sequence[TableSpec]) -> list[tuple[dict, str]]:
    """(header, statement) for every database and base table, in dump order."""
    blocks: list[tuple[dict, str]] = []
    for db in databases:
        create = text_of(my.query_all(conn, f"SHOW CREATE DATABASE {my.quote_ident(db)}")[0][1])
        create = re.sub(r"^CREATE DATABASE (?!IF NOT EXISTS)", "CREATE DATABASE IF NOT EXISTS ", create)
        blocks.append(({"kind": "database", "db": db, "name": db}, create))
    for spec in sorted(tables, key=lambda s: (s.db, s.table)):
        create = text_of(my.query_all(conn, f"SHOW CREATE TABLE {my.qualified(spec.db, spec.table)}")[0][1])
        blocks.append(({"kind": "table", "db": spec.db, "name": spec.table}, create))
    return blocks


def object_blocks(conn: Any, databases: Sequence[str], views: Sequence[tuple[str, str]]) -> list[tuple[dict, str]]:
    """(header, statement) for views, routines, triggers and events of ``databases``."""
    blocks: list[tuple[dict, str]] = []
    for db, name in views:
        row = my.query_all(conn, f"SHOW CREATE VIEW {my.qualified(db, name)}")[0]
        blocks.append(({"kind": "view", "db": db, "name": name, "charset": text_of(row[2]),
                        "collation": text_of(row[3])}, text_of(row[1])))
    marks = ",".join(["%s"] * len(databases))
    if not databases:
        return blocks
    routines = my.query_all(conn, "SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES"
                            f" WHERE ROUTINE_SCHEMA IN ({marks}) ORDER BY 1, 3, 2", list(databases))
    for db, name, rtype in routines:
        db, name, rtype = text_of(db), text_of(name), text_of(rtype)
        row = my.query_all(conn, f"SHOW CREATE {rtype} {my.qualified(db, name)}",
                           doing=f"reading {rtype.lower()} {db}.{name}")[0]
        if row[2] is None:
            raise PermissionDenied(f"cannot read the body of {rtype.lower()} {db}.{name}",
                                   hint="GRANT SELECT ON mysql.proc (or SHOW CREATE ROUTINE) to the backup user")
        blocks.append(({"kind": rtype.lower(), "db": db, "name": name, "sql_mode": text_of(row[1]),
                        "charset": text_of(row[3]), "collation": text_of(row[4])}, text_of(row[2])))
    triggers = my.query_all(conn, "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_TABLE FROM"
                            f" information_schema.TRIGGERS WHERE TRIGGER_SCHEMA IN ({marks})"
                            " ORDER BY 1, 3, ACTION_ORDER", list(databases))
    for db, name, table in triggers:
        db, name = text_of(db), text_of(name)
        row = my.query_all(conn, f"SHOW CREATE TRIGGER {my.qualified(db, name)}")[0]
        blocks.append(({"kind": "trigger", "db": db, "name": name, "table": text_of(table), "sql_mode": text_of(row[1]),
                        "charset": text_of(row[3]), "collation": text_of(row[4])}, text_of(row[2])))
    events = my.query_all(conn, "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS"
                          f" WHERE EVENT_SCHEMA IN ({marks}) ORDER BY 1, 2", list(databases))
    for db, name in events:
        db, name = text_of(db), text_of(name)
        row = my.query_all(conn, f"SHOW CREATE EVENT {my.qualified(db, name)}")[0]
        blocks.append(({"kind": "event", "db": db, "name": name, "sql_mode": text_of(row[1]),
                        "time_zone": text_of(row[2]), "charset": text_of(row[4]), "collation": text_of(row[5])},
                       text_of(row[3])))
    return blocks


def render_blocks(blocks: Iterable[tuple[dict, str]]) -> bytes:
    """SQL text a ``mariadb`` client can run AND :func:`parse_blocks` reads back exactly."""
    out = ["/*!40101 SET NAMES utf8mb4 */;", "SET FOREIGN_KEY_CHECKS = 0;",
           f"SET time_zone = '{my.SESSION_TIME_ZONE}';"]
    for header, stmt in blocks:
        out.append(BLOCK_MARK + json.dumps(header, sort_keys=True))
        if header["kind"] in ("database",):
            out.append(stmt + ";")
            continue
        out.append(f"USE {my.quote_ident(header['db'])};")
        if "sql_mode" in header:
            out.append(f"SET SESSION sql_mode = '{header['sql_mode']}';")
        if header["kind"] == "event" and header.get("time_zone"):
            out.append(f"SET SESSION time_zone = '{header['time_zone']}';")
        out.extend(["DELIMITER ;;", stmt, ";;", "DELIMITER ;"])
        if header["kind"] == "event" and header.get("time_zone"):
            out.append(f"SET SESSION time_zone = '{my.SESSION_TIME_ZONE}';")
    return ("\n".join(out) + "\n").encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- snapshot
@dataclass
class Snapshot:
    """Worker connections and ``mariadb`` client sessions inside one consistent snapshot, and its binlog position."""

    workers: list[Any]
    position: Optional[dict[str, Any]]
    method: str
    lock_s: float = 0.0
    sessions: list[TsvSession] = field(default_factory=list)


def open_snapshot(params: my.ConnParams, control: Any, flavor: my.Flavor, n_workers: int,
                  read_schema: Callable[[], Any], n_sessions: int = 0,
                  defaults_file: Optional[str] = None) -> tuple[Snapshot, Any]:
    """Open ``n_workers`` raw connections and ``n_sessions`` :class:`TsvSession` in one consistent snapshot.

    Runs ``read_schema`` inside it; returns (snapshot, read_schema()). Holds FLUSH
    TABLES WITH READ LOCK only when more than one connection is opened or the server
    cannot report a snapshot's binlog position. ``defaults_file`` (the option file of
    the client sessions) is needed when ``n_sessions`` > 0.
    """
    use_lock = n_workers + n_sessions > 1 or not flavor.has_binlog_snapshot_status
    workers: list[Any] = []
    sessions: list[TsvSession] = []
    locked_at = time.monotonic()
    try:
        if use_lock:
            my.execute(control, "FLUSH TABLES WITH READ LOCK",
                       doing="taking the global read lock for a consistent multi-connection snapshot "
                             "(needs RELOAD; or use parallel: 1)")
        for _worker_no in range(n_workers):
            conn = my.connect(params, raw=True, autocommit=False)
            workers.append(conn)
            my.execute(conn, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            my.execute(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
        sessions = [TsvSession(flavor.client_tool, defaults_file or "") for _session_no in range(n_sessions)]
        statuses = [session.begin() for session in sessions]
        position = _snapshot_position(control, workers, flavor, use_lock, statuses)
        schema = read_schema()
    except BaseException:
        for conn in workers:
            close_quietly(conn)
        for session in sessions:
            session.close(commit=False)
        raise
    finally:
        if use_lock:
            try:
                my.execute(control, "UNLOCK TABLES")
            except LifeboatError:
                pass
    method = "ftwrl+consistent-snapshot" if use_lock else "consistent-snapshot"
    return Snapshot(workers, position, method, time.monotonic() - locked_at if use_lock else 0.0,
                    sessions), schema


def _snapshot_position(control: Any, workers: list[Any], flavor: my.Flavor, locked: bool,
                       session_statuses: Sequence[dict[str, str]] = ()) -> Optional[dict]:
    log_bin = my.query_value(control, "SELECT @@GLOBAL.log_bin")
    if not int(log_bin or 0):
        return None
    if flavor.has_binlog_snapshot_status:
        seen = set()
        for conn in workers:
            rows = my.query_all(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'")
            status = {text_of(k).lower(): text_of(v) for k, v in rows}
            seen.add((status["binlog_snapshot_file"], int(status["binlog_snapshot_position"])))
        for status in session_statuses:
            seen.add((status["binlog_snapshot_file"], int(status["binlog_snapshot_position"])))
        if len(seen) != 1:
            raise BackupFailed(f"worker snapshots disagree on the binlog position: {sorted(seen)}",
                               hint="report this: the read lock did not hold")
        file, pos = seen.pop()
        gtid = my.query_value(control, "SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
        if gtid is None and locked:
            gtid = my.query_value(control, f"SELECT @@GLOBAL.{flavor.gtid_variable}")
        return {"file": file, "position": pos, "gtid": text_of(gtid) or ""}
    return my.binlog_status(control, flavor)  # under the read lock: exactly the snapshot's


# --------------------------------------------------------------------------- users
def run_tool_into(argv: list[str], out: Any, what: str) -> int:
    """Run a dump tool, streaming stdout into ``out``; any non-zero exit or error on stderr fails.

    Returns the bytes copied. Raises BackupFailed (or the mapped auth/privilege error).
    """
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    reader.start()
    copied = 0
    try:
        while True:
            chunk = proc.stdout.read(1 << 20)
            if not chunk:
                break
            out.write(chunk)
            copied += len(chunk)
    except BaseException:
        proc.kill()
        raise
    finally:
        rc = proc.wait()
        reader.join()
    stderr = b"".join(errors).decode("utf-8", "replace").strip()
    if rc != 0 or re.search(r"\berror\b", stderr, re.I):
        raise tool_failure(what, argv[0], rc, stderr)
    return copied


def dump_users(params: my.ConnParams, flavor: my.Flavor, out: Any) -> int:
    """Write CREATE USER/GRANT statements for all accounts into ``out`` (bytes copied).

    MariaDB: ``mariadb-dump --system=users`` (roles, PUBLIC, proxies included). It
    refuses servers with accounts it cannot resolve (error 1133, e.g. host-name
    accounts under skip-name-resolve); then, and on MySQL, the accounts are written
    from SHOW CREATE USER / SHOW GRANTS, skipping (and logging) unresolvable ones.
    Nothing is written to ``out`` before the tool has succeeded.
    """
    if flavor.supports_system_users:
        buffer = io.BytesIO()  # users.sql is small; buffered so a fallback never mixes outputs
        try:
            with my.option_file(params) as cnf:
                argv = my.tool_argv(flavor.dump_tool, cnf, "--system=users", "--skip-comments", "--no-data",
                                    "--no-create-info", "--skip-triggers", "--databases", "mysql")
                run_tool_into(argv, buffer, "dumping users and grants (--system=users)")
            data = buffer.getvalue()
        except LifeboatError as err:
            if "(1133)" not in str(err):
                raise
            log.warning("mariadb-dump --system=users failed (%s); writing users from SHOW GRANTS", err.message)
            data = _users_via_grants(params)
    else:
        data = _users_via_grants(params)
    out.write(data)
    return len(data)


def _users_via_grants(params: my.ConnParams) -> bytes:
    conn = my.connect(params)
    try:
        return users_sql_from_grants(conn)
    finally:
        conn.close()


def users_sql_from_grants(conn: Any) -> bytes:
    """CREATE USER IF NOT EXISTS + GRANT statements for every account the server can show."""
    lines = []
    for user, host in my.query_all(conn, "SELECT User, Host FROM mysql.user WHERE User <> '' ORDER BY User, Host"):
        acct = f"'{text_of(user)}'@'{text_of(host)}'"
        try:
            with conn.cursor() as cur:
                cur.execute(f"SHOW CREATE USER {acct}")
                create = text_of(cur.fetchone()[0])
                cur.execute(f"SHOW GRANTS FOR {acct}")
                grants = [text_of(g[0]) for g in cur.fetchall()]
        except pymysql.err.MySQLError as err:
            if err.args and err.args[0] in (1133, 1141, 1396):
                log.warning("skipping account %s: %s", acct, err.args[1] if len(err.args) > 1 else err)
                continue
            raise my.translate_error(err, f"reading the grants of {acct}") from None
        lines.append(create.replace("CREATE USER", "CREATE USER IF NOT EXISTS", 1) + ";")
        lines.extend(g + ";" for g in grants)
    return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------- plan + run
def plan_backup(params: my.ConnParams, databases: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """What a backup would dump (check mode): databases, tables, approximate sizes. Reads metadata only."""
    conn = my.connect(params)
    try:
        flavor = my.detect_flavor(conn)
        dbs = list_databases(conn, databases)
        tables, views = discover_tables(conn, dbs)
        per_db = {db: {"tables": 0, "approx_bytes": 0} for db in dbs}
        for t in tables:
            per_db[t.db]["tables"] += 1
            per_db[t.db]["approx_bytes"] += t.approx_bytes
        return {"flavor": flavor.to_dict(), "server_identity": my.server_identity(conn, flavor),
                "databases": per_db, "tables": len(tables), "views": len(views),
                "approx_bytes": sum(t.approx_bytes for t in tables)}
    finally:
        conn.close()


@dataclass
class _Shared:
    """Work queues (native tables, tsv tables) and results shared by the dump workers."""

    queue: list[TableSpec]
    tsv_queue: list[TableSpec] = field(default_factory=list)
    results: dict[str, dict] = field(default_factory=dict)
    error: Optional[BaseException] = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    done_bytes: int = 0

    def take(self, tsv: bool) -> Optional[TableSpec]:
        """The next table of that kind (biggest first), or None when done or after any worker failed."""
        with self.lock:
            queue = self.tsv_queue if tsv else self.queue
            if self.error is not None or not queue:
                return None
            return queue.pop(0)

    def fail(self, err: BaseException, doing: str) -> None:
        with self.lock:
            if self.error is None:
                self.error = _as_lifeboat(err, doing)


def backup_mysql_into(set_writer: SetWriter, params: my.ConnParams, *, databases: Optional[Sequence[str]] = None,
                      parallel: int = 2, include_users: bool = True,
                      progress: Optional[ProgressFn] = None, method: str = "auto") -> dict[str, Any]:
    """Write the ``mysql`` component of a set into ``set_writer`` (an open writer.SetWriter).

    ``method`` (``auto``/``native``/``tsv``, see :func:`choose_methods`) decides how each
    table is dumped. Does not publish: the caller does (and aborts the set on any
    exception raised here). Returns a summary: databases, tables, rows, bytes, binlog
    position, gtid, duration_s. Raises NotFound (unknown database), PermissionDenied
    (names the privilege), AuthenticationFailed, ConnectionFailure, BackupFailed.
    """
    if parallel < 1:
        raise ConfigError("parallel must be >= 1")
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat()  # noqa: UP017 - datetime.UTC needs 3.11 on targets
    control = my.connect(params)
    snapshot: Optional[Snapshot] = None
    try:
        flavor = my.detect_flavor(control)
        identity = my.server_identity(control, flavor)
        dbs = list_databases(control, databases)
        tables, views = discover_tables(control, dbs)
        choose_methods(tables, method, parallel)
        native = [t for t in tables if t.method == "native"]
        tsv = [t for t in tables if t.method == "tsv"]
        n_workers = min(parallel, len(native)) if native else 0
        n_sessions = min(parallel, len(tsv)) if tsv else 0
        if not n_workers and not n_sessions:
            n_workers = 1

        def read_schema() -> tuple[bytes, bytes]:
            return (render_blocks(schema_blocks(control, dbs, tables)),
                    render_blocks(object_blocks(control, dbs, views)))

        with my.option_file(params) as cnf:
            snapshot, (schema_sql, objects_sql) = open_snapshot(params, control, flavor, n_workers, read_schema,
                                                                n_sessions, cnf)
        log.info("snapshot open (%s, %d worker(s), %d client session(s)), binlog position %s", snapshot.method,
                 n_workers, n_sessions, snapshot.position)
        _write_small(set_writer, SCHEMA_ARTIFACT, schema_sql)
        _write_small(set_writer, OBJECTS_ARTIFACT, objects_sql)
        total = sum(t.approx_bytes for t in tables)
        results = _run_workers(set_writer, snapshot, native, tsv, ProgressMeter("mysql dump", progress, total))
        sessions, snapshot.sessions = snapshot.sessions, []
        for session in sessions:
            session.close()
        users_bytes = None
        if include_users:
            with set_writer.artifact(COMPONENT, USERS_ARTIFACT) as out:
                users_bytes = dump_users(params, flavor, out)
        finished = time.monotonic()
        meta = _metadata(flavor, identity, dbs, tables, results, snapshot, objects_sql, include_users,
                         started_at, finished - started)
        position = dict(snapshot.position or {}, binlog_enabled=snapshot.position is not None,
                        server_identity=identity, flavor=flavor.name, taken_at=started_at)
        set_writer.write_json(COMPONENT, POSITION_JSON, position)
        set_writer.write_json(COMPONENT, METADATA_JSON, meta)
        set_writer.set_component_metadata(COMPONENT, {
            "server_identity": identity, "flavor": flavor.name, "server_version": flavor.version_string,
            "databases": dbs, "binlog_position": snapshot.position, "engine": "lifeboat-native",
            "include_users": include_users})
        if hasattr(set_writer, "add_source"):
            set_writer.add_source(COMPONENT, f"{params.host}:{params.port}", flavor.version_string,
                                  server_identity=identity)
        return {"databases": dbs, "tables": len(tables), "rows": sum(r["rows"] for r in results.values()),
                "plaintext_bytes": sum(r["plaintext_bytes"] for r in results.values()) + len(schema_sql)
                + len(objects_sql) + (users_bytes or 0),
                "binlog_position": snapshot.position, "gtid": (snapshot.position or {}).get("gtid"),
                "server_identity": identity, "duration_s": round(finished - started, 3),
                "snapshot": snapshot.method, "workers": n_workers, "client_sessions": n_sessions,
                "methods": {m: sum(1 for t in tables if t.method == m) for m in ("native", "tsv")}}
    finally:
        if snapshot:
            for conn in snapshot.workers:
                close_quietly(conn)
            for session in snapshot.sessions:
                session.close(commit=False)
        close_quietly(control)


def _write_small(set_writer: SetWriter, name: str, data: bytes) -> None:
    with set_writer.artifact(COMPONENT, name) as out:
        out.write(data)


def _run_workers(set_writer: SetWriter, snapshot: Snapshot, native: list[TableSpec], tsv: list[TableSpec],
                 meter: ProgressMeter) -> dict:
    """Dump ``native`` tables on the snapshot's connections and ``tsv`` tables on its client sessions, in parallel."""
    shared = _Shared(queue=list(native), tsv_queue=list(tsv))
    threads = [threading.Thread(target=_worker, args=(set_writer, conn, shared, meter), name=f"mysql-dump-{i}",
                                daemon=True) for i, conn in enumerate(snapshot.workers)]
    threads += [threading.Thread(target=_tsv_worker, args=(set_writer, session, shared, meter),
                                 name=f"mysql-tsv-{i}", daemon=True) for i, session in enumerate(snapshot.sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if shared.error is not None:
        raise shared.error
    meter.finish()
    return shared.results


def _counter(shared: _Shared, meter: ProgressMeter) -> Callable[[int], None]:
    def count(n: int) -> None:
        with shared.lock:
            shared.done_bytes += n
            meter.update(shared.done_bytes)
    return count


def _worker(set_writer: SetWriter, conn: Any, shared: _Shared, meter: ProgressMeter) -> None:
    count = _counter(shared, meter)
    while True:
        spec = shared.take(tsv=False)
        if spec is None:
            return
        set_step(f"table {spec.key}")
        try:
            with set_writer.artifact(COMPONENT, spec.artifact, total_bytes=spec.approx_bytes or None) as writer:
                result = dump_table(conn, spec, writer, count)
            with shared.lock:
                shared.results[spec.key] = result
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            shared.fail(err, f"dumping {spec.key}")
            return


def _tsv_worker(set_writer: SetWriter, session: TsvSession, shared: _Shared, meter: ProgressMeter) -> None:
    """Stream tsv tables through one client session; the checksum is the artifact's plaintext sha256."""
    count = _counter(shared, meter)
    while True:
        spec = shared.take(tsv=True)
        if spec is None:
            return
        set_step(f"table {spec.key}")
        try:
            with set_writer.artifact(COMPONENT, spec.artifact, total_bytes=spec.approx_bytes or None) as writer:
                result = session.dump(spec, writer, count)
                record = writer.close()
            result["checksum"] = "tsv-sha256:" + record["plaintext_sha256"]
            with shared.lock:
                shared.results[spec.key] = result
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            shared.fail(err, f"dumping {spec.key}")
            return


def _as_lifeboat(err: BaseException, doing: str) -> BaseException:
    if isinstance(err, LifeboatError):
        return err
    if type(err).__module__.startswith("pymysql"):
        return my.translate_error(err, doing)
    return BackupFailed(f"{doing} failed: {type(err).__name__}: {err}")


def _metadata(flavor: my.Flavor, identity: str, dbs: list[str], tables: list[TableSpec], results: dict,
              snapshot: Snapshot, objects_sql: bytes, include_users: bool, started_at: str,
              duration_s: float) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for header, _stmt in parse_blocks(objects_sql):
        kinds[header["kind"]] = kinds.get(header["kind"], 0) + 1
    table_meta = []
    for spec in sorted(tables, key=lambda s: (s.db, s.table)):
        entry = spec.to_dict()
        entry.update(results[spec.key])
        table_meta.append(entry)
    uses_tsv = any(t.method == "tsv" for t in tables)
    return {"format": TSV_METADATA_FORMAT if uses_tsv else METADATA_FORMAT, "engine": "lifeboat-native",
            **flavor.to_dict(),
            "server_identity": identity, "databases": dbs, "tables": table_meta, "objects": kinds,
            "schema_artifact": SCHEMA_ARTIFACT, "objects_artifact": OBJECTS_ARTIFACT,
            "users_artifact": USERS_ARTIFACT if include_users else None,
            "snapshot": {"method": snapshot.method, "workers": len(snapshot.workers),
                         "lock_held_s": round(snapshot.lock_s, 3)},
            "binlog_position": snapshot.position, "started_at": started_at, "duration_s": round(duration_s, 3),
            "checksum": "native tables: row texts of row_select_sql; ordered: sha256 over text+LF in key order; "
                        "unordered: sum of sha256(text) mod 2**256. tsv tables: tsv-sha256 = sha256 of the "
                        "tsv_select_sql stream (the artifact's plaintext), rows = its LF count"}


def metadata_summary(meta: dict[str, Any]) -> dict[str, Any]:
    """Short view of a backup's metadata (for module results)."""
    return {"databases": meta.get("databases"), "tables": len(meta.get("tables", [])),
            "rows": sum(t.get("rows", 0) for t in meta.get("tables", [])), "objects": meta.get("objects"),
            "binlog_position": meta.get("binlog_position")}


# --------------------------------------------------------------------------- module glue
def run_backup(store_root: str, keyring: KeyRing, params: my.ConnParams, *, codec: Any = None,
               databases: Optional[Sequence[str]] = None, parallel: int = 2, include_users: bool = True,
               set_type: str = "mysql", quick_verify: bool = True,
               progress: Optional[ProgressFn] = None, method: str = "auto",
               physical: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Back up into a new set of ``set_type`` in the store and publish it (all or nothing).

    Returns the :func:`backup_mysql_into` summary plus ``set_id``, ``path``,
    ``stored_bytes`` and ``plaintext_bytes`` (manifest totals). :func:`components.run_backup`
    with the ``mysql`` engine (:mod:`mysql_engine`). ``method="physical"``: a mariabackup
    stream (:func:`physical.backup_physical_into`), ``physical`` its options
    (``incremental``, ``parent``, ``target``, ``datadir``, ``work_dir``).
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.engine import (
        ENGINE,  # shipped with the module
    )

    return components.run_backup(ENGINE, store_root, keyring, params,
                                 {"databases": databases, "parallel": parallel, "include_users": include_users,
                                  "method": method, **(physical or {})},
                                 codec=codec, set_type=set_type, quick_verify=quick_verify, progress=progress)
