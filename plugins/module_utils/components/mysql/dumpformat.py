# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MySQL dump format: what :mod:`backup` writes and :mod:`restore` reads, defined once.

Artifact and metadata names of the ``mysql`` component, the table spec (columns, key,
hash mode) with its row SELECT, the row hasher both sides compute, the multi-row INSERT
streamer of ``native`` tables, the ``tsv`` format (NULL masks, its ``LOAD DATA`` statement),
the ``-- LIFEBOAT`` object blocks of the schema/objects artifacts, and the mapping of a client
tool's failure to a Lifeboat error. ``docs/format.md`` describes the bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    BackupFailed,
    LifeboatError,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    get_logger,
)

try:
    import pymysql
    import pymysql.cursors
except ImportError:  # pragma: no cover
    pass

log = get_logger("mysql.dumpformat")


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


MASK_BITS = 60


READ_CHUNK = 1 << 20


def nullable_columns(spec: TableSpec) -> list[Column]:
    """The columns that carry a bit in the NULL masks, in column order."""
    return [c for c in spec.columns if c.nullable]


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


def text_of(value: Any) -> Any:
    """A value the raw connection returned as text: bytes decoded as utf-8 (undecodable bytes kept as
    surrogate escapes), anything else unchanged."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, (bytes, bytearray)) else value


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


def close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a broken connection
        pass


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
