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
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from ansible_collections.lifeboat.dr.plugins.module_utils import mysql as my
from ansible_collections.lifeboat.dr.plugins.module_utils.errors import (
    BackupFailed,
    ConfigError,
    LifeboatError,
    NotFound,
    PermissionDenied,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.progress import ProgressFn, ProgressMeter, get_logger

try:
    import pymysql
    import pymysql.cursors
except ImportError:  # pragma: no cover
    pass

COMPONENT = "mysql"
SCHEMA_ARTIFACT = "schema.sql.zst.enc"
OBJECTS_ARTIFACT = "objects.sql.zst.enc"
USERS_ARTIFACT = "users.sql.zst.enc"
METADATA_JSON = "mysql_backup_metadata.json"
POSITION_JSON = "binlog_position.json"
METADATA_FORMAT = 1                # sets whose tables are all ``native``
TSV_METADATA_FORMAT = 2            # sets with ``tsv`` tables (older restores refuse them cleanly)
STATEMENT_BYTES = 1 << 20          # target size of one multi-row INSERT (bytes)
MAX_FETCH_ROWS = 2000
BLOCK_MARK = "-- LIFEBOAT "        # a line starting an object block in schema/objects artifacts

BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry",
                          "point", "linestring", "polygon", "multipoint", "multilinestring",
                          "multipolygon", "geometrycollection"})
NUMERIC_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal",
                           "numeric", "float", "double", "real", "year"})

log = get_logger("mysql.backup")


# --------------------------------------------------------------------------- table specs
@dataclass
class Column:
    """One stored column: ``name``, ``type`` (information_schema DATA_TYPE), ``charset`` or None."""

    name: str
    type: str
    charset: Optional[str] = None
    nullable: bool = True
    auto_increment: bool = False

    def select_expr(self) -> str:
        """SQL expression rendering the value as a SQL literal (``NULL`` for NULL), no raw newline."""
        col = my.quote_ident(self.name)
        if self.type in BINARY_TYPES:
            return f"IF({col} IS NULL,'NULL',CONCAT('X''',HEX({col}),''''))"
        if self.type == "bit":
            return f"IF({col} IS NULL,'NULL',CONCAT('b''',BIN({col}),''''))"
        if self.type in NUMERIC_TYPES:
            return f"IFNULL({col},'NULL')"
        if self.charset and self.charset not in ("utf8mb4", "binary"):
            col = f"CONVERT({col} USING utf8mb4)"
        return f"REPLACE(QUOTE({col}),'\\n','\\\\n')"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "charset": self.charset, "nullable": self.nullable,
                "auto_increment": self.auto_increment}


@dataclass
class TableSpec:
    """A base table to dump: columns (stored ones only), key columns used for ordering, size estimate."""

    db: str
    table: str
    columns: list[Column]
    order_by: list[str]
    approx_bytes: int = 0
    avg_row_bytes: int = 0
    method: str = "native"

    @property
    def key(self) -> str:
        return f"{self.db}.{self.table}"

    @property
    def hash_mode(self) -> str:
        return "ordered" if self.order_by else "unordered"

    @property
    def artifact(self) -> str:
        if self.method == "tsv":
            return tsv_artifact_name(self.db, self.table)
        return data_artifact_name(self.db, self.table)

    def insert_prefix(self, table: Optional[str] = None) -> bytes:
        """``INSERT INTO `t` (`a`,`b`) VALUES\\n`` (``table`` overrides the name)."""
        cols = ",".join(my.quote_ident(c.name) for c in self.columns)
        return f"INSERT INTO {my.quote_ident(table or self.table)} ({cols}) VALUES\n".encode()

    def to_dict(self) -> dict[str, Any]:
        return {"db": self.db, "table": self.table, "artifact": self.artifact,
                "columns": [c.to_dict() for c in self.columns], "order_by": self.order_by,
                "hash_mode": self.hash_mode if self.method == "native" else "stream", "method": self.method}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableSpec:
        return cls(d["db"], d["table"], [Column(**c) for c in d["columns"]], list(d["order_by"]),
                   method=d.get("method", "native"))


def row_select_sql(spec: TableSpec, db: Optional[str] = None, table: Optional[str] = None) -> str:
    """The one query producing canonical row texts of a table (``db``/``table`` override the source)."""
    parts = ",',',".join(c.select_expr() for c in spec.columns)
    sql = f"SELECT CONCAT('(',{parts},')') FROM {my.qualified(db or spec.db, table or spec.table)}"
    if spec.order_by:
        sql += " ORDER BY " + ",".join(my.quote_ident(c) for c in spec.order_by)
    return sql


def data_artifact_name(db: str, table: str) -> str:
    """``data.<db>.<table>.sql.zst.enc``, the names encoded by :func:`_safe` (a valid set member name)."""
    return f"data.{_safe(db)}.{_safe(table)}.sql.zst.enc"


def tsv_artifact_name(db: str, table: str) -> str:
    """``data.<db>.<table>.tsv.zst.enc`` (the ``tsv`` method), names encoded as :func:`data_artifact_name`."""
    return f"data.{_safe(db)}.{_safe(table)}.tsv.zst.enc"


SAFE_NAME_MAX = 48  # characters of one encoded identifier in an artifact name (set member names: <= 128)


def _safe(name: str) -> str:
    """``name`` with every byte outside [A-Za-z0-9_-] written ``+XX`` (hex of its UTF-8 bytes).

    One-to-one for names up to :data:`SAFE_NAME_MAX` encoded characters; a longer encoding
    keeps its first 31 characters and adds ``+`` and 16 hex digits of the name's SHA-256.
    Artifact names are recorded in the set's metadata, never parsed back.
    """
    encoded = "".join(ch if re.match(r"[A-Za-z0-9_\-]", ch) else "".join(f"+{b:02X}" for b in ch.encode())
                      for ch in name)
    if len(encoded) <= SAFE_NAME_MAX:
        return encoded
    head = encoded[:31]
    cut = head.rfind("+", len(head) - 2)  # not in the middle of a +XX escape
    return (head[:cut] if cut >= 0 else head) + "+" + hashlib.sha256(name.encode()).hexdigest()[:16]


class RowHasher:
    """Row count + content checksum of canonical row texts (see the module docstring)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.rows = 0
        self._ordered = hashlib.sha256()
        self._sum = 0

    def update(self, rows: Sequence[bytes]) -> None:
        """Add rows (in key order for ``ordered``)."""
        if not rows:
            return
        self.rows += len(rows)
        if self.mode == "ordered":
            self._ordered.update(b"\n".join(rows) + b"\n")
        else:
            for r in rows:
                self._sum = (self._sum + int.from_bytes(hashlib.sha256(r).digest(), "big")) % (1 << 256)

    def hexdigest(self) -> str:
        if self.mode == "ordered":
            return "sha256:" + self._ordered.hexdigest()
        return "sha256sum:" + f"{self._sum:064x}"


def stream_table_rows(conn: Any, sql: str, on_batch: Callable[[list[bytes]], None],
                      avg_row_bytes: int = 0, statement_bytes: int = STATEMENT_BYTES) -> None:
    """Run ``sql`` unbuffered on a raw connection; call ``on_batch(rows)`` per statement-sized batch.

    A batch holds about ``statement_bytes`` of row text (at most twice that, or
    one single bigger row). The fetch size adapts to the observed row size, so
    there is no per-row Python work besides PyMySQL's own.
    """
    cur = conn.cursor(pymysql.cursors.SSCursor)
    try:
        cur.execute(sql)
        fetch = _fetch_size(avg_row_bytes, statement_bytes)
        while True:
            rows = cur.fetchmany(fetch)
            if not rows:
                break
            texts = [r[0] for r in rows]
            size = sum(map(len, texts))
            _emit_split(texts, size, statement_bytes, on_batch)
            fetch = _fetch_size(size // len(texts), statement_bytes)
    finally:
        cur.close()


def _emit_split(texts: list[bytes], size: int, limit: int, on_batch: Callable[[list[bytes]], None]) -> None:
    """Emit ``texts`` as one batch, or halves recursively while a batch exceeds ``2 * limit``."""
    if size <= 2 * limit or len(texts) == 1:
        on_batch(texts)
        return
    half = len(texts) // 2
    first, second = texts[:half], texts[half:]
    first_size = sum(map(len, first))
    _emit_split(first, first_size, limit, on_batch)
    _emit_split(second, size - first_size, limit, on_batch)


def _fetch_size(avg_row_bytes: int, statement_bytes: int) -> int:
    if avg_row_bytes <= 0:
        return 100
    return max(1, min(MAX_FETCH_ROWS * 4, statement_bytes // avg_row_bytes))


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
MASK_BITS = 60
READ_CHUNK = 1 << 20
# the client's own character set only decides how it escapes the bytes it prints: ``binary``
# escapes byte by byte (what LOAD DATA ... CHARACTER SET binary reads back) and costs a third
# less CPU than utf8mb4's multibyte scan; the server still parses our SQL as utf8mb4 (TsvSession.begin)
TSV_CLIENT_OPTIONS = ("--batch", "--skip-column-names", "--quick", "--unbuffered", "--default-character-set=binary",
                      "--max-allowed-packet=1G")


def nullable_columns(spec: TableSpec) -> list[Column]:
    """The columns that carry a bit in the NULL masks, in column order."""
    return [c for c in spec.columns if c.nullable]


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


def tsv_load_sql(spec: TableSpec, path: str, db: str, table: Optional[str] = None) -> str:
    """``LOAD DATA LOCAL INFILE`` reading a :func:`tsv_select_sql` stream from ``path`` into ``db``.``table``."""
    targets, sets = [], []
    nullable = {c.name: i for i, c in enumerate(nullable_columns(spec))}
    for i, col in enumerate(spec.columns):
        if col.name not in nullable and col.auto_increment:
            # through SET: MariaDB 10.11 ignores NO_AUTO_VALUE_ON_ZERO for a column read directly
            # when the statement has a SET clause (a stored 0 would get a new value)
            targets.append(f"@v{i}")
            sets.append(f"{my.quote_ident(col.name)} = @v{i}")
            continue
        if col.name not in nullable:
            targets.append(my.quote_ident(col.name))
            continue
        k = nullable[col.name]
        targets.append(f"@v{i}")
        sets.append(f"{my.quote_ident(col.name)} = IF(@m{k // MASK_BITS} & {1 << (k % MASK_BITS)}, NULL, @v{i})")
    targets += [f"@m{g}" for g in range((len(nullable) + MASK_BITS - 1) // MASK_BITS)]
    quoted_path = path.replace("\\", "\\\\").replace("'", "\\'")
    sql = (f"LOAD DATA LOCAL INFILE '{quoted_path}' INTO TABLE {my.qualified(db, table or spec.table)}"
           " CHARACTER SET binary FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"
           f" ({', '.join(targets)})")
    if sets:
        sql += " SET " + ", ".join(sets)
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
    existing = [_s(r[0]) for r in my.query_all(conn, "SHOW DATABASES")]
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
    views = [(_s(r[0]), _s(r[1])) for r in rows if _s(r[2]) == "VIEW"]
    bases = [r for r in rows if _s(r[2]) in ("BASE TABLE", "SYSTEM VERSIONED")]
    columns = _columns(conn, marks, databases)
    keys = _order_keys(conn, marks, databases)
    specs = []
    for db, name, _type, size, avg in bases:
        db, name = _s(db), _s(name)
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
        if "GENERATED" in _s(extra or "").upper():
            continue  # generated columns are recomputed by the server on load
        out.setdefault((_s(db), _s(table)), []).append(Column(_s(name), _s(dtype).lower(), _s(charset),
                                                              _s(nullable) == "YES",
                                                              "AUTO_INCREMENT" in _s(extra or "").upper()))
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
        idx = indexes.setdefault((_s(db), _s(table)), {}).setdefault(_s(index), [])
        idx.append((_s(col), _s(nullable) == "YES" or sub_part is not None))
    keys = {}
    for table_key, idxs in indexes.items():
        for cols in idxs.values():  # PRIMARY first (ordering above), then by name
            if not any(bad for _c, bad in cols):
                keys[table_key] = [c for c, _bad in cols]
                break
    return keys


def _s(value: Any) -> Any:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, (bytes, bytearray)) else value


# --------------------------------------------------------------------------- schema & objects
def schema_blocks(conn: Any, databases: Sequence[str], tables: Sequence[TableSpec]) -> list[tuple[dict, str]]:
    """(header, statement) for every database and base table, in dump order."""
    blocks: list[tuple[dict, str]] = []
    for db in databases:
        create = _s(my.query_all(conn, f"SHOW CREATE DATABASE {my.quote_ident(db)}")[0][1])
        create = re.sub(r"^CREATE DATABASE (?!IF NOT EXISTS)", "CREATE DATABASE IF NOT EXISTS ", create)
        blocks.append(({"kind": "database", "db": db, "name": db}, create))
    for spec in sorted(tables, key=lambda s: (s.db, s.table)):
        create = _s(my.query_all(conn, f"SHOW CREATE TABLE {my.qualified(spec.db, spec.table)}")[0][1])
        blocks.append(({"kind": "table", "db": spec.db, "name": spec.table}, create))
    return blocks


def object_blocks(conn: Any, databases: Sequence[str], views: Sequence[tuple[str, str]]) -> list[tuple[dict, str]]:
    """(header, statement) for views, routines, triggers and events of ``databases``."""
    blocks: list[tuple[dict, str]] = []
    for db, name in views:
        row = my.query_all(conn, f"SHOW CREATE VIEW {my.qualified(db, name)}")[0]
        blocks.append(({"kind": "view", "db": db, "name": name, "charset": _s(row[2]), "collation": _s(row[3])},
                       _s(row[1])))
    marks = ",".join(["%s"] * len(databases))
    if not databases:
        return blocks
    routines = my.query_all(conn, "SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES"
                            f" WHERE ROUTINE_SCHEMA IN ({marks}) ORDER BY 1, 3, 2", list(databases))
    for db, name, rtype in routines:
        db, name, rtype = _s(db), _s(name), _s(rtype)
        row = my.query_all(conn, f"SHOW CREATE {rtype} {my.qualified(db, name)}",
                           doing=f"reading {rtype.lower()} {db}.{name}")[0]
        if row[2] is None:
            raise PermissionDenied(f"cannot read the body of {rtype.lower()} {db}.{name}",
                                   hint="GRANT SELECT ON mysql.proc (or SHOW CREATE ROUTINE) to the backup user")
        blocks.append(({"kind": rtype.lower(), "db": db, "name": name, "sql_mode": _s(row[1]),
                        "charset": _s(row[3]), "collation": _s(row[4])}, _s(row[2])))
    triggers = my.query_all(conn, "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_TABLE FROM"
                            f" information_schema.TRIGGERS WHERE TRIGGER_SCHEMA IN ({marks})"
                            " ORDER BY 1, 3, ACTION_ORDER", list(databases))
    for db, name, table in triggers:
        db, name = _s(db), _s(name)
        row = my.query_all(conn, f"SHOW CREATE TRIGGER {my.qualified(db, name)}")[0]
        blocks.append(({"kind": "trigger", "db": db, "name": name, "table": _s(table), "sql_mode": _s(row[1]),
                        "charset": _s(row[3]), "collation": _s(row[4])}, _s(row[2])))
    events = my.query_all(conn, "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS"
                          f" WHERE EVENT_SCHEMA IN ({marks}) ORDER BY 1, 2", list(databases))
    for db, name in events:
        db, name = _s(db), _s(name)
        row = my.query_all(conn, f"SHOW CREATE EVENT {my.qualified(db, name)}")[0]
        blocks.append(({"kind": "event", "db": db, "name": name, "sql_mode": _s(row[1]), "time_zone": _s(row[2]),
                        "charset": _s(row[4]), "collation": _s(row[5])}, _s(row[3])))
    return blocks


def render_blocks(blocks: Iterable[tuple[dict, str]]) -> bytes:
    """SQL text a ``mariadb`` client can run AND :func:`parse_blocks` reads back exactly."""
    out = ["/*!40101 SET NAMES utf8mb4 */;", "SET FOREIGN_KEY_CHECKS = 0;", "SET time_zone = '+00:00';"]
    for header, stmt in blocks:
        out.append(BLOCK_MARK + json.dumps(header, sort_keys=True))
        if header["kind"] in ("database",):
            out.append(stmt + ";")
            continue
        out.append(f"USE {my.quote_ident(header['db'])};")
        if "sql_mode" in header:
            out.append(f"SET SESSION sql_mode = '{header['sql_mode']}';")
        out.extend(["DELIMITER ;;", stmt, ";;", "DELIMITER ;"])
    return ("\n".join(out) + "\n").encode("utf-8", "surrogateescape")


def parse_blocks(text: bytes) -> list[tuple[dict, str]]:
    """Inverse of :func:`render_blocks`: the (header, statement) list."""
    blocks: list[tuple[dict, str]] = []
    header: Optional[dict] = None
    body: list[str] = []

    def close() -> None:
        if header is not None:
            blocks.append((header, _block_statement(body)))

    for line in text.decode("utf-8", "surrogateescape").split("\n"):
        if line.startswith(BLOCK_MARK):
            close()
            header, body = json.loads(line[len(BLOCK_MARK):]), []
        elif header is not None:
            body.append(line)
    close()
    return blocks


def _block_statement(lines: list[str]) -> str:
    if "DELIMITER ;;" in lines:
        start = lines.index("DELIMITER ;;") + 1
        end = len(lines) - 1 - lines[::-1].index(";;")
        return "\n".join(lines[start:end])
    return "\n".join(line for line in lines if line.strip()).rstrip().rstrip(";")


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
            _close(conn)
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
            status = {_s(k).lower(): _s(v) for k, v in my.query_all(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'")}
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
        return {"file": file, "position": pos, "gtid": _s(gtid) or ""}
    return my.binlog_status(control, flavor)  # under the read lock: exactly the snapshot's


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a broken connection
        pass


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


def tool_failure(what: str, tool: str, rc: int, stderr: str) -> LifeboatError:
    """Map a client tool's failure (its ``Got error: NNNN:`` text) to a Lifeboat error."""
    m = re.search(r"error:? (\d{4})", stderr, re.I)
    if m:
        code = int(m.group(1))
        text = stderr.splitlines()[-1] if stderr else ""
        err = my.translate_error(_FakeErr(code, text), what)
        if err.__class__ is not LifeboatError:  # a specific subclass (auth, privilege...) says more
            return err
    return BackupFailed(f"{tool} failed while {what} (exit {rc}): {stderr[-500:] or 'no message'}",
                        hint="see the tool's message above; nothing was published")


class _FakeErr(Exception):
    """Carries (code, message) like a PyMySQL error for :func:`mysql.translate_error`."""


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
        acct = f"'{_s(user)}'@'{_s(host)}'"
        try:
            with conn.cursor() as cur:
                cur.execute(f"SHOW CREATE USER {acct}")
                create = _s(cur.fetchone()[0])
                cur.execute(f"SHOW GRANTS FOR {acct}")
                grants = [_s(g[0]) for g in cur.fetchall()]
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


def backup_mysql_into(set_writer: Any, params: my.ConnParams, *, databases: Optional[Sequence[str]] = None,
                      parallel: int = 2, include_users: bool = True,
                      progress: Optional[ProgressFn] = None, method: str = "auto") -> dict[str, Any]:
    """Write the ``mysql`` component of a set into ``set_writer`` (an open backupset.SetWriter).

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
                _close(conn)
            for session in snapshot.sessions:
                session.close(commit=False)
        _close(control)


def _write_small(set_writer: Any, name: str, data: bytes) -> None:
    with set_writer.artifact(COMPONENT, name) as out:
        out.write(data)


def _run_workers(set_writer: Any, snapshot: Snapshot, native: list[TableSpec], tsv: list[TableSpec],
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


def _worker(set_writer: Any, conn: Any, shared: _Shared, meter: ProgressMeter) -> None:
    count = _counter(shared, meter)
    while True:
        spec = shared.take(tsv=False)
        if spec is None:
            return
        try:
            with set_writer.artifact(COMPONENT, spec.artifact, total_bytes=spec.approx_bytes or None) as writer:
                result = dump_table(conn, spec, writer, count)
            with shared.lock:
                shared.results[spec.key] = result
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            shared.fail(err, f"dumping {spec.key}")
            return


def _tsv_worker(set_writer: Any, session: TsvSession, shared: _Shared, meter: ProgressMeter) -> None:
    """Stream tsv tables through one client session; the checksum is the artifact's plaintext sha256."""
    count = _counter(shared, meter)
    while True:
        spec = shared.take(tsv=True)
        if spec is None:
            return
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
def run_backup(store_root: str, keyring: Any, params: my.ConnParams, *, codec: Any = None,
               databases: Optional[Sequence[str]] = None, parallel: int = 2, include_users: bool = True,
               set_type: str = "mysql", quick_verify: bool = True,
               progress: Optional[ProgressFn] = None, method: str = "auto") -> dict[str, Any]:
    """Back up into a new set of ``set_type`` in the store and publish it (all or nothing).

    Returns the :func:`backup_mysql_into` summary plus ``set_id``, ``path``,
    ``stored_bytes`` and ``plaintext_bytes`` (manifest totals).
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.backupset import Store

    store = Store(store_root)
    estimate = plan_backup(params, databases)["approx_bytes"]  # also fails early: auth, reachability, names
    with store.begin_set(set_type, [COMPONENT], keyring, codec=codec, estimated_bytes=estimate,
                         progress=None, early_read_back=quick_verify) as writer:
        summary = backup_mysql_into(writer, params, databases=databases, parallel=parallel,
                                    include_users=include_users, progress=progress, method=method)
        manifest = writer.publish(quick_verify=quick_verify)
    summary.update(set_id=writer.set_id, path=str(writer.path), stored_bytes=manifest["totals"]["stored_bytes"],
                   plaintext_bytes=manifest["totals"]["plaintext_bytes"])
    return summary
