"""MySQL helpers the integration tests share: run statements, and a database's content as the backup sees it."""

from __future__ import annotations

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mb
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import dumpformat


def sql(params: my.ConnParams, *statements: str, db: str | None = None) -> list:
    """Run ``statements`` in one connection (in database ``db``); the rows of each, in order."""
    conn = my.connect(params, database=db)
    try:
        return [my.query_all(conn, s) for s in statements]
    finally:
        conn.close()


def table_state(params: my.ConnParams, db: str) -> dict[str, tuple[int, str]]:
    """Every base table's (row count, content checksum), computed like the backup does."""
    conn = my.connect(params, raw=True)
    try:
        specs, _views = mb.discover_tables(conn, [db])
        out = {}
        for spec in specs:
            hasher = dumpformat.RowHasher(spec.hash_mode)
            dumpformat.stream_table_rows(conn, dumpformat.row_select_sql(spec), hasher.update)
            out[spec.table] = (hasher.rows, hasher.hexdigest())
        return out
    finally:
        conn.close()
