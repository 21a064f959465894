"""Dump format, checksums and restore planning of the MySQL engine (pure logic)."""

from __future__ import annotations

import io

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mb
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import dumpformat as df
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import restore as mr
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import check_relative
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, NotFound, RestoreFailed


def spec(order_by=("id",)):
    return df.TableSpec("shop", "orders", [df.Column("id", "int"), df.Column("note", "text", "latin1"),
                                           df.Column("blob", "blob"), df.Column("b", "bit")], list(order_by))


def test_row_query_renders_every_type_as_a_sql_literal_in_key_order():
    sql = df.row_select_sql(spec())
    assert sql.startswith("SELECT CONCAT('(',IFNULL(`id`,'NULL'),',',")
    assert "REPLACE(QUOTE(CONVERT(`note` USING utf8mb4)),'\\n','\\\\n')" in sql
    assert "CONCAT('X''',HEX(`blob`),'''')" in sql and "BIN(`b`)" in sql
    assert sql.endswith("FROM `shop`.`orders` ORDER BY `id`")
    assert df.row_select_sql(spec(), db="s2", table="t2").split(" FROM ")[1] == "`s2`.`t2` ORDER BY `id`"


def test_ordered_checksum_does_not_depend_on_batching():
    rows = [b"(1,'a')", b"(2,'b')", b"(3,NULL)"]
    one, two = df.RowHasher("ordered"), df.RowHasher("ordered")
    one.update(rows)
    two.update(rows[:1])
    two.update(rows[1:])
    assert one.hexdigest() == two.hexdigest() and one.rows == 3


def test_unordered_checksum_does_not_depend_on_row_order_but_on_content():
    a, b, c = df.RowHasher("unordered"), df.RowHasher("unordered"), df.RowHasher("unordered")
    a.update([b"(1)", b"(2)", b"(2)"])
    b.update([b"(2)", b"(1)", b"(2)"])
    c.update([b"(2)", b"(1)", b"(1)"])
    assert a.hexdigest() == b.hexdigest() != c.hexdigest()


def test_tables_without_a_key_hash_unordered():
    assert spec(order_by=()).hash_mode == "unordered" and spec().hash_mode == "ordered"


def test_artifact_names_are_flat_and_safe_for_any_identifier():
    assert df.data_artifact_name("shop", "orders") == "data.shop.orders.sql.zst.enc"
    name = df.data_artifact_name("we.ird/db", "t ä")
    assert "/" not in name and " " not in name and name.count(".") == 5


@pytest.mark.parametrize("db, table", [("shop", "tëst"), ("we.ird/db", "t ä"), ("日本", "表" * 64),
                                       ("a" * 64, "b" * 64), ("x", "+2B"), ("x", "%41")])
def test_artifact_names_of_any_identifier_are_valid_set_member_names(db, table):
    for name in (df.data_artifact_name(db, table), df.tsv_artifact_name(db, table)):
        assert check_relative(name, "artifact name") == [name]


def test_artifact_names_stay_distinct_for_distinct_identifiers():
    tables = ["+", "+2B", "%2B", "a b", "a+20b", "表" * 64, "表" * 63 + "x", "t" * 64, "t" * 63 + "u"]
    assert len({df.tsv_artifact_name("db", t) for t in tables}) == len(tables)


def test_schema_blocks_survive_a_render_parse_round_trip_including_compound_bodies():
    blocks = [({"kind": "database", "db": "shop", "name": "shop"}, "CREATE DATABASE IF NOT EXISTS `shop`"),
              ({"kind": "procedure", "db": "shop", "name": "p", "sql_mode": "STRICT_ALL_TABLES"},
               "CREATE PROCEDURE `p`()\nBEGIN\n  SELECT 1;\n  SELECT ';;';\nEND"),
              ({"kind": "table", "db": "shop", "name": "t"}, "CREATE TABLE `t` (\n  `a` int\n)")]
    text = mb.render_blocks(blocks)
    assert b"DELIMITER ;;" in text and b"SET SESSION sql_mode = 'STRICT_ALL_TABLES';" in text
    assert df.parse_blocks(text) == blocks


def test_an_event_is_rendered_in_its_own_time_zone_and_the_session_zone_comes_back_after_it():
    event = ({"kind": "event", "db": "shop", "name": "e", "sql_mode": "", "time_zone": "SYSTEM"},
             "CREATE EVENT `e` ON SCHEDULE EVERY 1 DAY DISABLE DO SELECT 1")
    lines = mb.render_blocks([event]).decode().split("\n")
    at = lines.index("SET SESSION time_zone = 'SYSTEM';")
    assert lines.index("DELIMITER ;;") > at
    assert lines[lines.index("DELIMITER ;", at) + 1] == "SET SESSION time_zone = '+00:00';"
    assert df.parse_blocks("\n".join(lines).encode()) == [event]


def test_statements_split_on_semicolon_newline_across_read_boundaries():
    data = b"-- LIFEBOAT {}\nINSERT INTO `t` (`a`) VALUES\n('x;y'),\n('\\n;');\nINSERT INTO `t` (`a`) VALUES\n(1);\n"
    got = list(mr.iter_statements(io.BytesIO(data), bufsize=7))
    assert got == [b"-- LIFEBOAT {}\nINSERT INTO `t` (`a`) VALUES\n('x;y'),\n('\\n;')",
                   b"INSERT INTO `t` (`a`) VALUES\n(1)"]


def test_an_empty_table_artifact_has_no_statements_and_a_truncated_one_fails():
    assert list(mr.iter_statements(io.BytesIO(b"-- LIFEBOAT {}\n"))) == []
    with pytest.raises(RestoreFailed):
        list(mr.iter_statements(io.BytesIO(b"INSERT INTO `t` VALUES\n(1),\n(2")))


def test_batches_are_split_when_rows_are_bigger_than_expected():
    batches = []
    df._emit_split([b"x" * 10] * 8, 80, 10, batches.append)
    assert sum(len(b) for b in batches) == 8 and all(sum(map(len, b)) <= 20 for b in batches)


META = {"databases": ["shop", "crm"], "tables": [
    {"db": "shop", "table": "orders", "artifact": "data.shop.orders.sql.zst.enc", "rows": 3, "checksum": "sha256:x",
     "columns": [{"name": "id", "type": "int", "charset": None}], "order_by": ["id"]},
    {"db": "shop", "table": "customers", "artifact": "a2", "rows": 2, "checksum": "sha256:y",
     "columns": [{"name": "id", "type": "int", "charset": None}], "order_by": ["id"]},
    {"db": "crm", "table": "leads", "artifact": "a3", "rows": 1, "checksum": "sha256:z",
     "columns": [{"name": "id", "type": "int", "charset": None}], "order_by": []}]}


def test_default_plan_restores_every_database_in_place_through_staging():
    plan = mr.build_plan(META, "set1")
    assert plan.whole_databases == {"shop": "shop", "crm": "crm"}
    assert {(t.target_db, t.target_table, t.staging_db) for t in plan.tables} == {
        ("shop", "orders", "shop__lbrestore"), ("shop", "customers", "shop__lbrestore"),
        ("crm", "leads", "crm__lbrestore")}


def test_side_by_side_single_table_gets_the_restored_suffix_or_the_given_name():
    plan = mr.build_plan(META, "s", tables=["shop.orders"], mode="side_by_side")
    assert [(t.target_db, t.target_table) for t in plan.tables] == [("shop", "orders_restored")]
    plan = mr.build_plan(META, "s", tables=["shop.orders"], mode="side_by_side",
                         rename_to={"shop.orders": "other.o2"})
    assert [(t.target_db, t.target_table, t.staging_db) for t in plan.tables] == [("other", "o2", "other__lbrestore")]
    assert plan.whole_databases == {}


def test_side_by_side_whole_database_goes_to_a_new_database():
    plan = mr.build_plan(META, "s", databases=["crm"], mode="side_by_side", rename_to={"crm": "crm_copy"})
    assert [(t.target_db, t.target_table) for t in plan.tables] == [("crm_copy", "leads")]


def test_plans_refuse_unknown_names_bad_modes_and_rename_without_side_by_side():
    with pytest.raises(NotFound, match="shop.nope"):
        mr.build_plan(META, "s", tables=["shop.nope"])
    with pytest.raises(NotFound, match="hr"):
        mr.build_plan(META, "s", databases=["hr"])
    with pytest.raises(ConfigError):
        mr.build_plan(META, "s", mode="yolo")
    with pytest.raises(ConfigError, match="side_by_side"):
        mr.build_plan(META, "s", rename_to={"shop": "x"})
    with pytest.raises(ConfigError, match="distinct"):
        mr.build_plan(META, "s", tables=["shop.orders", "shop.customers"], mode="side_by_side",
                      rename_to={"shop.orders": "x", "shop.customers": "x"})


def test_reinit_datadir_always_restores_users():
    assert mr.build_plan(META, "s", mode="reinit_datadir").include_users


def test_helper_schema_names_fit_the_64_character_limit():
    long = "d" * 60
    assert len(mr.staging_name(long)) <= 64 and len(mr.prev_name(long, "20250101T000000")) <= 64
    assert mr.staging_name(long) != mr.staging_name("d" * 59 + "e")
    assert mr.prev_name("shop", "20250101T000000") == "shop__lbprev_20250101T000000"


def test_create_database_is_retargeted_keeping_its_options():
    stmt = "CREATE DATABASE IF NOT EXISTS `shop` /*!40100 DEFAULT CHARACTER SET utf8mb4 */"
    assert mr.create_database_sql(stmt, "shop__lbrestore") == \
        "CREATE DATABASE IF NOT EXISTS `shop__lbrestore` /*!40100 DEFAULT CHARACTER SET utf8mb4 */"


def test_foreign_keys_are_stripped_for_side_by_side_copies():
    ddl = ("CREATE TABLE `orders` (\n  `id` int NOT NULL,\n  `c` int,\n  PRIMARY KEY (`id`),\n  KEY `c` (`c`),\n"
           "  CONSTRAINT `fk` FOREIGN KEY (`c`) REFERENCES `customers` (`id`)\n) ENGINE=InnoDB")
    assert mr.strip_foreign_keys(ddl) == ("CREATE TABLE `orders` (\n  `id` int NOT NULL,\n  `c` int,\n"
                                          "  PRIMARY KEY (`id`),\n  KEY `c` (`c`)\n) ENGINE=InnoDB")


def test_dump_tool_errors_map_to_the_error_hierarchy():
    err = df.tool_failure("dumping users", "mariadb-dump", 2,
                          "mariadb-dump: Got error: 1044: \"Access denied for user 'u'@'h' to database 'mysql'\"")
    assert type(err).__name__ == "PermissionDenied"
    err = df.tool_failure("dumping", "mariadb-dump", 7, "mariadb-dump: unknown variable 'x'")
    assert type(err).__name__ == "BackupFailed" and "exit 7" in str(err)


def test_secondary_keys_are_deferred_only_for_tables_without_foreign_keys():
    ddl = ("CREATE TABLE `c` (\n  `id` int NOT NULL,\n  `e` varchar(9),\n  PRIMARY KEY (`id`),\n"
           "  UNIQUE KEY `e` (`e`),\n  KEY `ie` (`e`,`id`)\n) ENGINE=InnoDB")
    bare, keys = mr.split_secondary_keys(ddl)
    assert keys == ["UNIQUE KEY `e` (`e`)", "KEY `ie` (`e`,`id`)"]
    assert bare == "CREATE TABLE `c` (\n  `id` int NOT NULL,\n  `e` varchar(9),\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB"
    with_fk = ddl.replace("KEY `ie` (`e`,`id`)",
                          "KEY `ie` (`e`,`id`),\n  CONSTRAINT `f` FOREIGN KEY (`e`) REFERENCES `x` (`e`)")
    assert mr.split_secondary_keys(with_fk) == (with_fk, [])


@pytest.mark.parametrize("name", [mr.prev_name("shop", "20261125T154640"), mr.prev_name("shop", "20261125T154640_2"),
                                  mr.prev_name("x" * 64, "20261125T154640"), mr.staging_name("shop"),
                                  mr.staging_name("y" * 64)])
def test_the_schemas_restores_leave_behind_are_recognised(name):
    assert mb.my.LIFEBOAT_SCHEMA_RE.search(name)


def test_a_backup_of_all_databases_leaves_out_kept_aside_and_staging_schemas(monkeypatch):
    names = ["shop", "mysql", "information_schema", "shop__lbprev_20261125T154640", "shop__lbrestore",
             "notes__lbprev", "lbprev_archive"]
    monkeypatch.setattr(mb.my, "query_all", lambda conn, sql: [(n,) for n in names])
    assert mb.list_databases(object()) == ["shop", "notes__lbprev", "lbprev_archive"]
    # named explicitly, a kept-aside schema is backed up like any other
    assert mb.list_databases(object(), ["shop__lbprev_20261125T154640"]) == ["shop__lbprev_20261125T154640"]


ORDERS_DDL = ("CREATE TABLE `orders` (\n  `id` int NOT NULL,\n  `customer_id` int NOT NULL,\n  `a` int, `b` int,\n"
              "  CONSTRAINT `fk_c` FOREIGN KEY (`customer_id`) REFERENCES `customers` (`id`) ON DELETE CASCADE,\n"
              "  CONSTRAINT `fk_ab` FOREIGN KEY (`a`, `b`) REFERENCES `other``db`.`pairs` (`x`, `y`)\n"
              ") ENGINE=InnoDB")


def test_foreign_keys_are_read_with_columns_and_referenced_db_table_columns():
    assert mr.foreign_keys(ORDERS_DDL, "shop") == [
        {"columns": ["customer_id"], "db": "shop", "table": "customers", "ref_columns": ["id"]},
        {"columns": ["a", "b"], "db": "other`db", "table": "pairs", "ref_columns": ["x", "y"]}]


def test_a_table_restored_without_its_parent_references_the_live_parent():
    fixed = mr.qualify_foreign_keys(ORDERS_DDL, {"orders"}, "shop")
    assert "REFERENCES `shop`.`customers` (`id`) ON DELETE CASCADE" in fixed
    assert "REFERENCES `other``db`.`pairs` (`x`, `y`)" in fixed  # already qualified: as it was
    assert fixed.replace("`shop`.`customers`", "`customers`") == ORDERS_DDL


def test_a_table_restored_with_its_parent_keeps_the_unqualified_reference():
    assert mr.qualify_foreign_keys(ORDERS_DDL, {"orders", "customers"}, "shop") == ORDERS_DDL
