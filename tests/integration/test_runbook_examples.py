"""docs/runbook.md worked examples, run as documented against the lab (issue 17, part 4):

* ``restore-tables``: restore.yml ``tables`` / ``rename_to`` restores one table of a logical set
  beside the original, then in place (the live one kept aside), and touches nothing else: the
  other tables keep their live content, the app keeps running (same pid), no safety copy set.
* ``pitr-find``: pitr.yml ``mode=find`` lists each archived match of a pattern with its
  [match_index], time, generation, binlog file:position and GTID; ``mode=execute`` with the same
  pattern and no ``match_index`` is refused with that list and changes nothing; with
  ``match_index`` it recovers to exactly just before the chosen statement.

The documented commands are run word for word, with the lab inventory for ``inventories/prod``
and the demo database only (the lab's other databases belong to other tests); the PITR ones get
``start_time`` = this test's start too, so that matches archived by earlier runs in the same
lab are not counted.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from datetime import UTC, datetime

import pytest
from test_playbooks import REPO, app_health, mysql_checksums, mysql_conn, ok
from test_recovery_safety import lab_pids, store_sets

DEMO_ONLY = ["-e", '{"lifeboat_mysql_databases": ["demo"]}']


def documented_commands(marker: str) -> list[list[str]]:
    """The ``ansible-playbook`` lines of the shell block after ``<!-- example: <marker>`` in docs/runbook.md."""
    text = (REPO / "docs" / "runbook.md").read_text()
    tag = f"<!-- example: {marker} "
    assert tag in text, f"docs/runbook.md lost its tested example {marker!r}"
    block = re.search(r"```sh\n(.*?)```", text[text.index(tag):], re.S)
    assert block
    commands = [shlex.split(line) for line in block.group(1).splitlines() if line.startswith("ansible-playbook")]
    assert commands and all("inventories/prod" in argv for argv in commands)
    return commands


def run_documented(argv: list[str], *extra: str) -> subprocess.CompletedProcess:
    """Run a documented command against the lab (demo database only)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    argv = [REPO / ".venv" / "bin" / a if a == "ansible-playbook" else ("inventories/lab" if a == "inventories/prod"
                                                                        else a) for a in argv]
    return subprocess.run([str(a) for a in argv] + DEMO_ONLY + list(extra), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def query(env: dict[str, str], sql: str, args: tuple = ()) -> list[tuple]:
    with mysql_conn(env) as conn, conn.cursor() as cur:
        cur.execute(sql, args or None)
        return list(cur.fetchall())


def execute(env: dict[str, str], *statements: str) -> None:
    with mysql_conn(env) as conn, conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)


def checksum(env: dict[str, str], table: str) -> tuple[int, int]:
    return (query(env, f"SELECT COUNT(*) FROM {table}")[0][0], query(env, f"CHECKSUM TABLE {table}")[0][1])


def lbprev_schemas(env: dict[str, str]) -> set[str]:
    return {r[0] for r in query(env, "SELECT schema_name FROM information_schema.schemata "
                                     "WHERE schema_name LIKE 'demo\\_\\_lbprev\\_%'")}


def foreign_keys(env: dict[str, str], db: str) -> set[tuple[str, ...]]:
    """(schema, table, constraint, referenced schema, referenced table) of every FK of and into ``db``."""
    return set(query(env, "SELECT DISTINCT TABLE_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_SCHEMA, "
                          "REFERENCED_TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE REFERENCED_TABLE_NAME "
                          "IS NOT NULL AND (TABLE_SCHEMA=%s OR REFERENCED_TABLE_SCHEMA=%s)", (db, db)))


@pytest.mark.slow
def test_restore_tables_example_beside_then_in_place_touches_nothing_else(lab_env):
    beside, in_place = documented_commands("restore-tables")
    execute(lab_env, "DROP TABLE IF EXISTS demo.orders_restored")
    ok(run_documented(["ansible-playbook", "-i", "inventories/prod", "playbooks/backup.yml"], "-e",
                      "components=mysql"))
    from_set = checksum(lab_env, "demo.orders")
    # the damage: orders rows changed; customers changed too, legitimately (must stay as it is live)
    execute(lab_env, "UPDATE demo.orders SET total = total + 1 WHERE id <= 25",
            "UPDATE demo.customers SET balance = balance + 1 WHERE id <= 5")
    damaged, live_customers = checksum(lab_env, "demo.orders"), checksum(lab_env, "demo.customers")
    items, live_fks = checksum(lab_env, "demo.order_items"), foreign_keys(lab_env, "demo")
    assert ("demo", "order_items", "fk_items_order", "demo", "orders") in live_fks
    assert damaged != from_set
    pids, sets, prev_before = lab_pids(), store_sets(lab_env), lbprev_schemas(lab_env)

    first = ok(run_documented(beside))
    assert "safety_copy\": \"not needed for a table restore: side by side" in first.stdout
    assert checksum(lab_env, "demo.orders_restored") == from_set
    assert checksum(lab_env, "demo.orders") == damaged  # the live table is not touched
    assert lbprev_schemas(lab_env) == prev_before

    second = ok(run_documented(in_place))
    assert checksum(lab_env, "demo.orders") == from_set and checksum(lab_env, "demo.order_items") == items
    kept = lbprev_schemas(lab_env) - prev_before
    assert len(kept) == 1
    kept_schema = kept.pop()
    assert checksum(lab_env, f"`{kept_schema}`.orders") == damaged
    assert checksum(lab_env, f"`{kept_schema}`.order_items") == items
    assert '"demo.orders"' in second.stdout and '"demo.order_items"' in second.stdout
    assert kept_schema in second.stdout
    # the foreign keys reference the live tables, none the kept-aside or staging ones
    assert foreign_keys(lab_env, "demo") == live_fks
    # nothing else: other tables live, the app never stopped, no safety copy set, redis etc. untouched
    assert checksum(lab_env, "demo.customers") == live_customers
    assert checksum(lab_env, "demo.orders_restored") == from_set
    assert lab_pids() == pids and app_health(lab_env) == 200
    assert store_sets(lab_env) == sets
    execute(lab_env, "DROP TABLE demo.orders_restored")


def test_restore_tables_refuses_a_side_by_side_name_that_exists_and_changes_nothing(lab_env):
    beside, _in_place = documented_commands("restore-tables")
    execute(lab_env, "CREATE TABLE IF NOT EXISTS demo.orders_restored (id INT PRIMARY KEY)")
    try:
        before, pids = mysql_checksums(lab_env), lab_pids()
        proc = run_documented(beside)
        assert proc.returncode != 0
        assert "demo.orders_restored already exists; side_by_side never overwrites" in proc.stdout
        assert mysql_checksums(lab_env) == before and lab_pids() == pids and app_health(lab_env) == 200
    finally:
        execute(lab_env, "DROP TABLE IF EXISTS demo.orders_restored")


def test_restore_tables_options_are_checked_before_anything(lab_env):
    _beside, in_place = documented_commands("restore-tables")
    sets = store_sets(lab_env)
    proc = run_documented(in_place, "-e", "components=mysql,redis")
    assert proc.returncode != 0 and "tables restores MySQL tables only" in proc.stdout
    proc = run_documented([a if not a.startswith("tables=") else "tables=orders" for a in in_place])
    assert proc.returncode != 0 and "each named db.table" in proc.stdout
    assert store_sets(lab_env) == sets


def test_restore_of_a_table_other_live_tables_reference_is_refused_before_anything(lab_env):
    _beside, in_place = documented_commands("restore-tables")
    before, fks, pids = mysql_checksums(lab_env), foreign_keys(lab_env, "demo"), lab_pids()
    proc = run_documented([a if not a.startswith("tables=") else "tables=demo.orders" for a in in_place])
    assert proc.returncode != 0
    assert ("an in-place table restore would leave live foreign keys pointing at the tables kept aside: "
            "demo.order_items references demo.orders (fk_items_order)") in proc.stdout
    assert "tables: add demo.order_items" in proc.stdout
    assert mysql_checksums(lab_env) == before and foreign_keys(lab_env, "demo") == fks
    assert lab_pids() == pids and app_health(lab_env) == 200


MATCH_LINE = re.compile(r"\[(\d+)\] (\S+) generation (\d+) (\S+):(\d+) gtid (\S+): (DROP TABLE `?coupons)")


def in_demo(env: dict[str, str], *statements: str) -> None:
    """Statements in one session whose default database is demo (as typed at a mariadb prompt)."""
    execute(env, "USE demo", *statements)


@pytest.mark.slow
def test_pitr_find_example_lists_refuses_ambiguity_and_recovers_just_before_the_chosen_drop(lab_env):
    find, execute_documented = documented_commands("pitr-find")
    assert "match_index=1" in execute_documented
    at = execute_documented.index("match_index=1")
    without_index = execute_documented[:at - 1] + execute_documented[at + 1:]  # the same, no "-e match_index=1"
    in_demo(lab_env, "DROP TABLE IF EXISTS coupons", "DROP TABLE IF EXISTS coupons_after")
    ok(run_documented(["ansible-playbook", "-i", "inventories/prod", "playbooks/archive_binlogs.yml"]))
    ok(run_documented(["ansible-playbook", "-i", "inventories/prod", "playbooks/backup.yml"], "-e",
                      "components=mysql"))
    time.sleep(1)  # binlog times are whole seconds: start_time must not reach the cleanup above
    since = ["-e", "start_time=" + datetime.fromtimestamp(int(time.time()), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")]
    in_demo(lab_env,
            "CREATE TABLE coupons (id INT PRIMARY KEY, code VARCHAR(20) NOT NULL)",
            "INSERT INTO coupons VALUES (1, 'WELCOME'), (2, 'SPRING')",
            "DROP TABLE coupons",
            "CREATE TABLE coupons (id INT PRIMARY KEY, code VARCHAR(20) NOT NULL)",
            "INSERT INTO coupons VALUES (1, 'SUMMER'), (2, 'AUTUMN'), (3, 'WINTER')",
            "UPDATE coupons SET code = 'SUMMER24' WHERE id = 1",
            "DROP TABLE coupons",  # the mistake
            "CREATE TABLE coupons_after (id INT PRIMARY KEY)")  # after it: not part of the recovery
    orders = checksum(lab_env, "demo.orders")
    ok(run_documented(["ansible-playbook", "-i", "inventories/prod", "playbooks/archive_binlogs.yml"]))

    listing = ok(run_documented(find, *since)).stdout
    found = [m.groups() for m in MATCH_LINE.finditer(listing)]
    assert [f[0] for f in found] == ["0", "1"], listing[-3000:]
    assert (found[0][3], int(found[0][4])) < (found[1][3], int(found[1][4]))  # oldest first
    assert all(re.fullmatch(r"\d+-\d+-\d+", f[5]) and f[1].endswith("Z") for f in found)  # GTID, UTC time

    pids, sets = lab_pids(), store_sets(lab_env)
    refused = run_documented(without_index, *since)
    assert refused.returncode != 0
    assert "2 events match 'DROP TABLE .?coupons', none was chosen" in refused.stdout
    for index, _time, generation, file, position, gtid, _stmt in found:
        assert f"[{index}] {_time} generation {generation} {file}:{position} gtid {gtid}" in refused.stdout
    assert "give match_index" in refused.stdout
    # refused before anything was stopped or changed
    assert lab_pids() == pids and store_sets(lab_env) == sets and app_health(lab_env) == 200
    assert query(lab_env, "SHOW TABLES FROM demo LIKE 'coupons_after'")

    ok(run_documented(execute_documented, *since))
    # exactly just before the second DROP: the second table with its UPDATE, nothing after it
    assert query(lab_env, "SELECT id, code FROM demo.coupons ORDER BY id") == [
        (1, "SUMMER24"), (2, "AUTUMN"), (3, "WINTER")]
    assert not query(lab_env, "SHOW TABLES FROM demo LIKE 'coupons_after'")
    assert checksum(lab_env, "demo.orders") == orders
    assert app_health(lab_env) == 200
