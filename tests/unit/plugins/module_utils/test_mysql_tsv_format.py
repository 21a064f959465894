"""Pure logic of the tsv dump method: the query, the LOAD DATA statement, the method choice (tests/unit/...)."""

from __future__ import annotations

import io

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mb
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import dumpformat as df


def spec(n_nullable=2):
    cols = [df.Column("id", "int", nullable=False)] + [df.Column(f"c{i}", "text", "utf8mb4") for i in range(n_nullable)]
    return df.TableSpec("shop", "t", cols, ["id"])


def test_select_streams_columns_as_they_are_plus_a_null_mask_in_key_order():
    assert mb.tsv_select_sql(spec()) == ("SELECT `id`, `c0`, `c1`, ((`c0` IS NULL) << 0)+((`c1` IS NULL) << 1)"
                                         " FROM `shop`.`t` ORDER BY `id`")


def test_load_reads_nullable_columns_through_the_mask_and_binary_charset():
    sql = df.tsv_load_sql(spec(), "/run/x'y.tsv", "shop__lbrestore")
    assert sql.startswith("LOAD DATA LOCAL INFILE '/run/x\\'y.tsv' "
                          "INTO TABLE `shop__lbrestore`.`t` CHARACTER SET binary")
    assert "(`id`, @v1, @v2, @m0) SET `c0` = IF(@m0 & 1, NULL, @v1), `c1` = IF(@m0 & 2, NULL, @v2)" in sql


def test_more_than_60_nullable_columns_use_several_masks():
    s = spec(61)
    assert mb.tsv_select_sql(s).count("<< 0)") == 2
    assert "@m1 & 1, NULL, @v61" in df.tsv_load_sql(s, "/f", "d")


def test_auto_uses_tsv_for_big_tables_and_everything_with_one_connection():
    small, big = spec(), spec()
    small.table, big.approx_bytes = "small", mb.TSV_MIN_BYTES
    mb.choose_methods([small, big], "auto", parallel=2)
    assert (small.method, big.method) == ("native", "tsv")
    assert big.artifact == "data.shop.t.tsv.zst.enc" and big.to_dict()["method"] == "tsv"
    mb.choose_methods([small, big], "auto", parallel=1)
    assert small.method == "tsv"


def test_tsv_checksum_is_recomputed_from_the_artifact_text():
    got = mb.recompute_from_artifact(io.BytesIO(b"1\ta\t0\n2\tNULL\t1\n"), {"method": "tsv"})
    assert got["rows"] == 2 and got["checksum"].startswith("tsv-sha256:")
