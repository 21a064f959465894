"""MySQL backup + restore against the lab MariaDB: consistent, verified, never destroying live data.

Every test works on its own databases (``lbt_<random>``) so helpers sharing the lab
do not see each other; they are dropped afterwards (with any ``__lbprev_`` copies).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mysql_helpers import sql, table_state

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mb
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import restore as mr
from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    AuthenticationFailed,
    ConnectionFailure,
    NotFound,
    PermissionDenied,
)

REPO = Path(__file__).resolve().parents[2]

SHOP_SQL = [
    "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50) CHARACTER SET latin1, email VARCHAR(80) UNIQUE,"
    " created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, flags BIT(5), photo BLOB)",
    "CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL, amount DECIMAL(10,2),"
    " note TEXT, doubled DECIMAL(12,2) AS (amount * 2) VIRTUAL, ts DATETIME(6), f FLOAT, j JSON,"
    " KEY (customer_id), CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id))",
    "CREATE TABLE audit (msg VARCHAR(100), at DATETIME)",
    "INSERT INTO customers VALUES (1, 'Zoë é', 'z@x', '2024-03-01 10:00:00', b'10101', 0x00FF0A0D275C),"
    " (2, 'O''Brien;\\n', 'o@x', '2024-03-02 00:00:00', NULL, NULL), (3, NULL, NULL, '2024-01-01', b'0', '')",
    "INSERT INTO orders (customer_id, amount, note, ts, f, j) VALUES (1, 10.5, 'first;\\n(x),(y)',"
    " '2024-01-01 00:00:00.123456', 1.1, '{\"a\": 1}'), (2, 20, NULL, NULL, NULL, NULL),"
    " (1, -3.25, 'tab\\there', '2024-05-05', 3.4e38, '[]')",
    "INSERT INTO audit VALUES ('dup', '2024-01-01'), ('dup', '2024-01-01'), (NULL, NULL)",
    "CREATE VIEW big_orders AS SELECT id, amount FROM orders WHERE amount > 5",
    "CREATE VIEW big_order_count AS SELECT COUNT(*) AS n FROM big_orders",
    "CREATE TRIGGER orders_ai AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit VALUES (CONCAT('order ', NEW.id),"
    " NOW())",
    "CREATE PROCEDURE add_order(IN c INT, IN a DECIMAL(10,2)) BEGIN INSERT INTO orders (customer_id, amount)"
    " VALUES (c, a); END",
    "CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
    "CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM audit WHERE at < NOW() - INTERVAL 30 DAY",
]


@pytest.fixture
def store(tmp_path):
    return tmp_path / "store"


@pytest.fixture
def shop(admin):
    """A fresh database with tables (FK, generated column, odd values), views, trigger, routines, event."""
    db = f"lbt_{secrets.token_hex(4)}"
    sql(admin, f"CREATE DATABASE {db} DEFAULT CHARSET utf8mb4")
    sql(admin, *SHOP_SQL, db=db)
    yield db
    names = [r[0] for r in sql(admin, "SHOW DATABASES")[0] if r[0].startswith(db)]
    sql(admin, *[f"DROP DATABASE IF EXISTS `{n}`" for n in names])


def published_sets(store):
    return Store(store).list_sets(include_partial=True) if store.exists() else []


def test_backup_records_the_snapshot_position_and_per_table_counts(admin, backup_user, shop, store, keyring):
    result = mb.run_backup(str(store), keyring, backup_user, databases=[shop], parallel=2)
    bset = Store(store).open_set(result["set_id"])
    position = bset.read_json("mysql", "binlog_position.json")
    meta = bset.read_json("mysql", "mysql_backup_metadata.json")
    status = sql(admin, "SHOW BINLOG STATUS")[0][0]
    assert position["file"].startswith("mysql-bin.") and position["position"] > 0
    assert (position["file"], position["position"]) <= (status[0], status[1])
    assert position["gtid"] and position["server_identity"].startswith("mariadb:server_id=")
    assert {t["table"]: t["rows"] for t in meta["tables"]} == {"customers": 3, "orders": 3, "audit": 3}
    assert meta["objects"] == {"view": 2, "function": 1, "procedure": 1, "trigger": 1, "event": 1}
    assert {t["table"]: (t["rows"], t["checksum"]) for t in meta["tables"]} == table_state(admin, shop)
    names = {a["name"] for a in bset.artifacts("mysql")}
    assert {"schema.sql.zst.enc", "objects.sql.zst.enc", "users.sql.zst.enc"} <= names
    users = mr.read_artifact(bset, keyring, "users.sql.zst.enc")
    assert b"lifeboat_backup" in users and b"GRANT" in users
    # nothing in the store is readable plaintext
    for path in Path(bset.path, "mysql").glob("*.enc"):
        assert b"Brien" not in path.read_bytes()


def test_drop_everything_then_restore_brings_back_identical_tables_and_all_objects(admin, shop, store, keyring):
    before = table_state(admin, shop)
    result = mb.run_backup(str(store), keyring, admin, databases=[shop], parallel=2)
    sql(admin, f"DROP DATABASE {shop}")

    bset = mr.open_backup_set(str(store))
    assert bset.set_id == result["set_id"]
    out = mr.restore_mysql_from(bset, keyring, admin, databases=[shop], parallel=2)

    assert table_state(admin, shop) == before
    assert set(out["verified"]) == {f"{shop}.{t}" for t in before}
    assert out["objects"] == {"view": 2, "function": 1, "procedure": 1, "trigger": 1, "event": 1}
    (count,), = sql(admin, "SELECT n FROM big_order_count", db=shop)[0]
    assert count == 2
    sql(admin, "CALL add_order(3, 7.5)", db=shop)  # procedure + trigger work
    assert sql(admin, "SELECT twice(21)", "SELECT msg FROM audit WHERE msg LIKE 'order %'", db=shop) == \
        [[(42,)], [("order 4",)]]
    assert sql(admin, f"SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA='{shop}'")[0][0][0] == 1
    assert not [r for r in sql(admin, "SHOW DATABASES")[0] if r[0].startswith(shop + "__lbrestore")]


def test_events_come_back_in_the_time_zone_they_were_created_in(admin, shop, store, keyring):
    zones = {"in_system": "SYSTEM", "in_plus2": "+02:00", "in_utc": "+00:00"}
    conn = my.connect(admin, database=shop)
    try:
        for name, zone in zones.items():
            my.execute(conn, "SET SESSION time_zone = %s", (zone,))
            my.execute(conn, f"CREATE EVENT {name} ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 03:00:00' DISABLE"
                             " DO DELETE FROM audit WHERE at IS NULL")
    finally:
        conn.close()
    query = f"SELECT EVENT_NAME, TIME_ZONE, STARTS FROM information_schema.EVENTS WHERE EVENT_SCHEMA='{shop}'"
    before = set(sql(admin, query)[0])
    assert {(n, z) for n, z, _starts in before} >= set(zones.items())

    mb.run_backup(str(store), keyring, admin, databases=[shop], parallel=1)
    sql(admin, f"DROP DATABASE {shop}")
    mr.restore_mysql_from(mr.open_backup_set(str(store)), keyring, admin, databases=[shop], parallel=1)

    assert set(sql(admin, query)[0]) == before


_LOAD_DIR_OWNER = """
import os, signal, sys
from ansible_collections.lifeboat.dr.plugins.module_utils.util import rundirs
print(rundirs.make_owned_tmpdir(sys.argv[1]), flush=True)
if sys.argv[2] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()
"""


def test_restore_removes_a_killed_restores_load_folder_but_not_a_running_ones(
        admin, shop, store, keyring, tmp_path, monkeypatch):
    """A restore SIGKILLed mid-way leaves its FIFO folder; the next restore removes it, never a live run's."""
    tmp_root = tmp_path / "tmp"
    tmp_root.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TMPDIR": str(tmp_root)}
    owners = {fate: subprocess.Popen([sys.executable, "-c", _LOAD_DIR_OWNER, mr.LOAD_DIR_PREFIX, fate], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
              for fate in ("die", "live")}
    folders = {fate: Path(proc.stdout.readline().strip()) for fate, proc in owners.items()}
    try:
        assert owners["die"].wait(timeout=30) == -signal.SIGKILL and folders["die"].is_dir()
        mb.run_backup(str(store), keyring, admin, databases=[shop], parallel=1, include_users=False)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_root))  # this process's temp folder, as TMPDIR would

        mr.restore_mysql_from(mr.open_backup_set(str(store)), keyring, admin, databases=[shop])

        assert not folders["die"].exists()
        assert folders["live"].is_dir()
        assert [p.name for p in tmp_root.iterdir()] == [folders["live"].name]  # the restore's own one is gone too
    finally:
        owners["live"].stdin.close()
        owners["live"].wait(timeout=30)


def test_single_table_restored_beside_the_original(admin, shop, store, keyring):
    mb.run_backup(str(store), keyring, admin, databases=[shop], parallel=1, include_users=False)
    sql(admin, "SET foreign_key_checks=0", "DELETE FROM orders WHERE id > 1", db=shop)
    live = table_state(admin, shop)

    bset = mr.open_backup_set(str(store))
    mr.restore_mysql_from(bset, keyring, admin, tables=[f"{shop}.orders"], mode="side_by_side",
                          rename_to={f"{shop}.orders": "orders_restored"})

    state = table_state(admin, shop)
    assert state["orders"] == live["orders"]           # original untouched
    assert state["orders_restored"][0] == 3             # the backup's rows beside it
    meta = bset.read_json("mysql", "mysql_backup_metadata.json")
    recorded = {t["table"]: t["checksum"] for t in meta["tables"]}
    assert state["orders_restored"][1] == recorded["orders"]


def test_in_place_swap_keeps_the_live_tables_aside(admin, shop, store, keyring):
    mb.run_backup(str(store), keyring, admin, databases=[shop], parallel=2, include_users=False)
    sql(admin, "INSERT INTO customers (id, name) VALUES (99, 'new since backup')", "CREATE TABLE extra (x INT)",
        db=shop)
    changed = table_state(admin, shop)

    out = mr.restore_mysql_from(mr.open_backup_set(str(store)), keyring, admin, databases=[shop])

    (prev, moved), = out["kept_aside"].items()
    assert prev.startswith(f"{shop}__lbprev_") and "extra" in moved
    assert table_state(admin, prev) == {**changed, "_lifeboat_saved_objects": table_state(admin, prev)[
        "_lifeboat_saved_objects"]}
    assert "extra" not in table_state(admin, shop)
    assert table_state(admin, shop)["customers"][0] == 3


def test_a_set_whose_database_held_no_table_restores_to_an_empty_database(admin, store, keyring):
    """Nothing to swap in (RENAME TABLE needs a pair): the restore succeeds and changes nothing else."""
    db = f"lbt_empty_{secrets.token_hex(4)}"
    sql(admin, f"CREATE DATABASE {db}")
    try:
        mb.run_backup(str(store), keyring, admin, databases=[db], parallel=2, include_users=False)

        mr.restore_mysql_from(mr.open_backup_set(str(store)), keyring, admin, databases=[db])

        assert table_state(admin, db) == {}
    finally:
        names = [r[0] for r in sql(admin, "SHOW DATABASES")[0] if r[0].startswith(db)]
        sql(admin, *[f"DROP DATABASE IF EXISTS `{n}`" for n in names])


def test_unknown_database_fails_and_publishes_nothing(admin, shop, store, keyring):
    with pytest.raises(NotFound, match="no_such_db_xyz"):
        mb.run_backup(str(store), keyring, admin, databases=[shop, "no_such_db_xyz"])
    assert published_sets(store) == []


@pytest.fixture
def limited_user(admin, shop):
    """A user with SELECT etc. on the test database only: no RELOAD, no access to mysql.*."""
    name, password = f"lbt_{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    sql(admin, f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY '{password}'",
        f"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON `{shop}`.* TO '{name}'@'127.0.0.1'")
    yield admin.replace(user=name, password=password)
    sql(admin, f"DROP USER '{name}'@'127.0.0.1'")


def test_missing_reload_privilege_is_named_and_nothing_is_published(limited_user, shop, store, keyring):
    with pytest.raises(PermissionDenied, match="RELOAD"):
        mb.run_backup(str(store), keyring, limited_user, databases=[shop], parallel=2, include_users=False)
    assert published_sets(store) == []


def test_failing_dump_tool_fails_the_backup_and_publishes_nothing(limited_user, shop, store, keyring):
    # parallel 1 needs no RELOAD; the users dump (mariadb-dump --system=users) then fails: no access to mysql.*
    with pytest.raises(PermissionDenied) as err:
        mb.run_backup(str(store), keyring, limited_user, databases=[shop], parallel=1, include_users=True)
    assert "mysql" in str(err.value)
    assert published_sets(store) == []


def test_wrong_password_is_an_authentication_failure(admin, store, keyring):
    with pytest.raises(AuthenticationFailed, match="refused the login"):
        mb.run_backup(str(store), keyring, admin.replace(password="wrong-" + secrets.token_hex(4)))
    assert published_sets(store) == []


def test_unreachable_server_is_a_connection_failure(admin, store, keyring):
    with pytest.raises(ConnectionFailure) as err:
        mb.run_backup(str(store), keyring, admin.replace(port=1, connect_timeout=2))
    assert err.value.retryable
    assert published_sets(store) == []


def test_restore_refuses_to_overwrite_in_side_by_side(admin, shop, store, keyring):
    mb.run_backup(str(store), keyring, admin, databases=[shop], parallel=1, include_users=False)
    with pytest.raises(Exception, match="already exists"):
        mr.restore_mysql_from(mr.open_backup_set(str(store)), keyring, admin, tables=[f"{shop}.orders"],
                              mode="side_by_side", rename_to={f"{shop}.orders": "customers"})
    assert "orders" in table_state(admin, shop)
    assert not [r for r in sql(admin, "SHOW DATABASES")[0] if r[0].startswith(shop + "__lbrestore")]


def test_the_password_never_reaches_a_dump_tool_command_line(admin, shop, store, keyring, monkeypatch):
    seen = []
    real_popen = subprocess.Popen

    def spy(argv, *args, **kwargs):
        proc = real_popen(argv, *args, **kwargs)
        try:
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        # a process that already exited (gone, or a zombie with an empty cmdline): the argv we gave
        seen.append(cmdline or "\0".join(argv).encode())
        return proc

    monkeypatch.setattr(mb.subprocess, "Popen", spy)
    mb.run_backup(str(store), keyring, admin, databases=[shop], parallel=1, include_users=True)
    assert seen, "the users dump should have spawned the dump tool"
    for cmdline in seen:
        assert admin.password.encode() not in cmdline
        assert b"--defaults-extra-file=" in cmdline


def test_modules_back_up_and_restore_in_check_mode_and_for_real(admin, shop, store, tmp_path, lab_env):
    key_file = tmp_path / "module.key"
    keys.create_key_file(key_file)
    common = {"store": str(store), "key_file": str(key_file), "login_host": admin.host, "login_port": admin.port,
              "login_user": admin.user, "login_password": admin.password}
    planned = run_module("mysql_backup", dict(common, databases=[shop]), check=True)
    assert planned["databases"][shop]["tables"] == 3 and published_sets(store) == []
    done = run_module("mysql_backup", dict(common, databases=[shop], parallel=2, method="tsv"))
    assert done["changed"] and done["set_id"] and done["binlog_position"]["gtid"]
    assert done["methods"] == {"native": 0, "tsv": 3}
    assert admin.password not in json.dumps(done)
    plan = run_module("mysql_restore", dict(common, tables=[f"{shop}.orders"], mode="side_by_side"), check=True)
    assert plan["plan"]["tables"][0]["target"] == f"{shop}.orders_restored"
    assert "orders_restored" not in table_state(admin, shop)
    run_module("mysql_restore", dict(common, tables=[f"{shop}.orders"], mode="side_by_side"))
    assert table_state(admin, shop)["orders_restored"] == table_state(admin, shop)["orders"]


def run_module(name, args, check=False):
    """Run a module through ansible (ad hoc, localhost, local connection) and return its result."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    argv = [str(REPO / ".venv" / "bin" / "ansible"), "localhost", "-c", "local", "-m", f"lifeboat.dr.{name}",
            "-a", json.dumps(args)] + (["--check"] if check else [])
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    head, _sep, body = proc.stdout.partition(" => ")
    assert body, f"no module result:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(body)
    assert "FAILED" not in head and not result.get("failed"), result.get("msg")
    return result
