"""The ``tsv`` dump method: exact round trip of every type, stream verification, one snapshot with native tables.

Suggested for tests/integration/ (uses the lab MariaDB through ``lab_env``).
"""

from __future__ import annotations

import secrets

import pytest
from mysql_helpers import sql, table_state

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mb
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import dumpformat
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import restore as mr
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import VerificationFailed

ODD_SQL = [
    "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO')",  # so z = 0 is stored as 0
    "CREATE TABLE odd (id INT PRIMARY KEY, s VARCHAR(20) CHARACTER SET latin1, u VARCHAR(20), b BLOB, bi BIT(32),"
    " d DECIMAL(10,2), f FLOAT, dd DOUBLE, ts TIMESTAMP NULL, dt DATETIME(6), j JSON, g GEOMETRY,"
    " e ENUM('a','b'), y YEAR, z INT NOT NULL AUTO_INCREMENT UNIQUE, v INT AS (id * 2) VIRTUAL, KEY (u))",
    # the string 'NULL', BIT bytes spelling NULL, TAB/LF/backslash/NUL/CR bytes, latin1, CJK, zero auto-increment
    "INSERT INTO odd (id,s,u,b,bi,d,f,dd,ts,dt,j,g,e,y,z) VALUES (1,'NULL','NULL',0x00090A5C0D4E554C4C,"
    " 0x4E554C4C, 1.5, 3.4e38, 0.1, '2024-01-01 00:00:00', '2024-01-01 00:00:00.123456', '{\"a\":1}', POINT(1,2),"
    " 'a', 2024, 0)",
    "INSERT INTO odd (id) VALUES (2)",
    "INSERT INTO odd (id,s,u,b,bi,d,f,dd,ts,dt,j,g,e,y) VALUES (3,'Zoë é\\t\\n\\\\','日本\\0x','', b'0', -3.25,"
    " 1.1, 1e-300, '2038-01-19 03:14:07', '1000-01-01', '[]', POINT(0,0), 'b', 1901)",
    "CREATE TABLE nokey (msg VARCHAR(10), n INT)",
    "INSERT INTO nokey VALUES ('dup', 1), ('dup', 1), (NULL, NULL)",
    "CREATE TABLE empty_t (id INT PRIMARY KEY)",
    # identifiers outside ASCII: the client escapes bytes, the server still parses the SQL as utf8mb4
    "CREATE TABLE `tëst_表` (`ñ` VARCHAR(20) PRIMARY KEY, `值` INT)",
    "INSERT INTO `tëst_表` VALUES ('é\\t', 1), ('日本', NULL)",
]


@pytest.fixture
def odd(admin):
    db = f"lbt_{secrets.token_hex(4)}"
    sql(admin, f"CREATE DATABASE {db} DEFAULT CHARSET utf8mb4")
    sql(admin, *ODD_SQL, db=db)
    yield db
    names = [r[0] for r in sql(admin, "SHOW DATABASES")[0] if r[0].startswith(db)]
    sql(admin, *[f"DROP DATABASE IF EXISTS `{n}`" for n in names])


@pytest.mark.parametrize("parallel", [1, 2])
def test_tsv_backup_restores_every_value_exactly(admin, odd, tmp_path, keyring, parallel):
    before = table_state(admin, odd)
    assert sql(admin, "SELECT z FROM odd WHERE id = 1", db=odd)[0] == [(0,)]
    result = mb.run_backup(str(tmp_path / "store"), keyring, admin, databases=[odd], parallel=parallel,
                           include_users=False, method="tsv")
    assert result["methods"] == {"native": 0, "tsv": 4} and result["rows"] == 8
    bset = Store(tmp_path / "store").open_set(result["set_id"])
    meta = bset.read_json("mysql", "mysql_backup_metadata.json")
    assert meta["format"] == dumpformat.TSV_METADATA_FORMAT
    assert {t["table"]: t["rows"] for t in meta["tables"]} == {"odd": 3, "nokey": 3, "empty_t": 0, "tëst_表": 2}
    for table in meta["tables"]:  # the recorded checksum is recomputable from the artifact alone
        with bset.open_artifact("mysql", table["artifact"], keyring) as reader:
            assert mb.recompute_from_artifact(reader, table) == {"rows": table["rows"], "checksum": table["checksum"]}
    sql(admin, f"DROP DATABASE {odd}")

    out = mr.restore_mysql_from(bset, keyring, admin, databases=[odd], parallel=parallel)

    assert table_state(admin, odd) == before
    assert {v["verified_by"] for v in out["verified"].values()} == {"stream"}


def test_auto_mixes_native_and_tsv_tables_in_one_snapshot(admin, odd, tmp_path, keyring, monkeypatch):
    monkeypatch.setattr(mb, "TSV_MIN_BYTES", 1)  # every non-empty table counts as big
    before = table_state(admin, odd)
    result = mb.run_backup(str(tmp_path / "store"), keyring, admin, databases=[odd], parallel=2,
                           include_users=False)
    assert result["methods"]["tsv"] >= 1 and result["snapshot"] == "ftwrl+consistent-snapshot"
    mr.restore_mysql_from(mr.open_backup_set(str(tmp_path / "store")), keyring, admin, databases=[odd],
                          mode="side_by_side", rename_to={odd: odd + "_copy"})
    assert table_state(admin, odd + "_copy") == before


def test_a_tsv_load_that_does_not_match_the_record_fails_and_leaves_live_data(admin, odd, tmp_path, keyring,
                                                                              monkeypatch):
    mb.run_backup(str(tmp_path / "store"), keyring, admin, databases=[odd], parallel=1, include_users=False,
                  method="tsv")
    before = table_state(admin, odd)
    real = mr.build_plan

    def wrong_rows(*args, **kwargs):
        plan = real(*args, **kwargs)
        for t in plan.tables:
            t.rows += 1
        return plan

    monkeypatch.setattr(mr, "build_plan", wrong_rows)
    with pytest.raises(VerificationFailed, match="rows"):
        mr.restore_mysql_from(mr.open_backup_set(str(tmp_path / "store")), keyring, admin, databases=[odd])
    assert table_state(admin, odd) == before
    assert not [r for r in sql(admin, "SHOW DATABASES")[0] if r[0].startswith(odd + "__lbrestore")]
