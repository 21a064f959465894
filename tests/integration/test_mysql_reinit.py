"""Recovering a MariaDB that no longer starts: ``mysql_restore mode=reinit_datadir`` and binlog salvage.

Runs on a PRIVATE lab MariaDB (own state folder and ports, started with
``python -m lab service mysql start``), never the shared one: the test kills its
server and corrupts its datadir. The restore runs through the Ansible module with
the ``lab`` service manager, like the roles call it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from mysql_helpers import sql, table_state

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mb
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.restore import (
    idempotent_users_sql,
    split_users_sql,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError
from lab.params import lab_mysql_params

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
APP_PASSWORD = "shop-app-pw-" + os.urandom(4).hex()


# ----------------------------------------------------------------------------- pure rewrite
def test_users_sql_creates_only_missing_accounts_and_keeps_every_grant():
    dump = (b"CREATE USER `mariadb.sys`@`localhost` ACCOUNT LOCK PASSWORD EXPIRE;\n"
            b"create user `app`@`%` IDENTIFIED BY PASSWORD '*AB';\n"
            b"CREATE ROLE `reader`;\n"
            b"CREATE ROLE IF NOT EXISTS mariadb_dump_import_role;\n"
            b"CREATE OR REPLACE USER `x`@`y`;\n"
            b"CREATE USER IF NOT EXISTS `z`@`w`;\n"
            b"GRANT SELECT ON `shop`.* TO `reader`;\n"
            b"INSERT INTO t VALUES ('CREATE USER inside data');\n")
    out = idempotent_users_sql(dump).splitlines()
    assert out[0] == b"CREATE USER IF NOT EXISTS `mariadb.sys`@`localhost` ACCOUNT LOCK PASSWORD EXPIRE;"
    assert out[1] == b"create user IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*AB';"
    assert out[2] == b"CREATE ROLE IF NOT EXISTS `reader`;"
    assert out[3:] == dump.splitlines()[3:]


def test_table_and_routine_grants_are_run_after_the_data_everything_else_before():
    dump = (b"CREATE USER `app`@`%`;\n"
            b"GRANT USAGE ON *.* TO `app`@`%`;\n"
            b"GRANT SELECT ON `shop`.* TO `app`@`%`;\n"
            b"GRANT INSERT, UPDATE (`price`) ON `shop`.`items` TO `app`@`%`;\n"
            b"GRANT EXECUTE ON PROCEDURE `shop`.`add_item` TO `app`@`%`;\n"
            b"GRANT PROXY ON ``@`%` TO `root`@`localhost` WITH GRANT OPTION;\n"
            b"GRANT `reader` TO `app`@`%`;\n"
            b"SET DEFAULT ROLE `reader` FOR 'app'@'%';\n")
    lines = dump.splitlines(keepends=True)
    before, after = split_users_sql(dump)
    assert after == lines[3] + lines[4]
    assert before == b"".join(lines[:3] + lines[5:])


# ----------------------------------------------------------------------------- private lab
def _lab(state: Path, *args: str, port_base: int | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "LAB_PORT_BASE"}  # the state folder records it
    env["LAB_STATE_DIR"] = str(state)
    if port_base is not None:
        env["LAB_PORT_BASE"] = str(port_base)
    return subprocess.run([str(PYTHON), "-m", "lab", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180, check=True).stdout


def _free_offset() -> int:
    """A LAB_PORT_BASE offset (the lab accepts -10000..40000) whose MariaDB port is free now."""
    for _attempt in range(50):
        offset = random.randint(20000, 40000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", 13306 + offset))
            except OSError:
                continue
        return offset
    raise AssertionError("no free port for a private lab MariaDB")


@pytest.fixture
def private_mysql(tmp_path):
    """A private lab MariaDB (its LAB_* values); stopped and its state removed with tmp_path afterwards."""
    state = tmp_path / "lab"
    offset = _free_offset()
    _lab(state, "service", "mysql", "start", port_base=offset)
    env = {"LAB_PORT_BASE": str(offset)}
    for line in _lab(state, "env").splitlines():
        if line.startswith("export "):
            key, value = line[len("export "):].split("=", 1)
            env[key] = value.strip("'\"")
    try:
        yield state, env
    finally:
        _lab(state, "service", "mysql", "stop")


def _lab_env_of(state: Path, env: dict) -> dict:
    """The environment the lab service manager needs for the private lab (whatever the caller's LAB_*)."""
    return {"LAB_STATE_DIR": str(state), "LAB_PORT_BASE": env["LAB_PORT_BASE"]}


def _grants(params: my.ConnParams, account: str) -> list[str]:
    return sorted(r[0] for r in sql(params, f"SHOW GRANTS FOR {account}")[0])


def _corrupt_and_kill(datadir: Path, pid_file: Path) -> None:
    """kill -9 the server, then overwrite the start of InnoDB's system tablespace and redo log."""
    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
    for name in ("ibdata1", "ib_logfile0"):
        with open(datadir / name, "r+b") as f:
            f.seek(0)
            f.write(os.urandom(64 << 10))


def _run_module(name: str, args: dict) -> dict:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    argv = [str(REPO / ".venv" / "bin" / "ansible"), "localhost", "-c", "local", "-m", f"lifeboat.dr.{name}",
            "-a", json.dumps(args)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False, cwd="/")
    head, _sep, body = proc.stdout.partition(" => ")
    assert body, f"no module result:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(body)
    assert "FAILED" not in head and not result.get("failed"), result.get("msg")
    return result


def test_corrupt_datadir_is_kept_aside_and_a_fresh_server_gets_data_users_and_grants_back(private_mysql, tmp_path):
    state, env = private_mysql
    admin = lab_mysql_params(env)
    app_account = "'shopapp'@'127.0.0.1'"
    sql(admin, "CREATE DATABASE shop")
    sql(admin, "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(8,2))",
        "INSERT INTO items SELECT seq, CONCAT('item ', seq), seq / 7 FROM seq_1_to_500",
        "CREATE TABLE notes (n TEXT)", "INSERT INTO notes VALUES ('a;\\nb'), (NULL)", db="shop")
    sql(admin,
        "CREATE ROLE shop_reader", "GRANT SELECT ON shop.* TO shop_reader",
        f"CREATE USER {app_account} IDENTIFIED BY '{APP_PASSWORD}'",
        f"GRANT INSERT, UPDATE ON shop.items TO {app_account}", f"GRANT shop_reader TO {app_account}",
        f"SET DEFAULT ROLE shop_reader FOR {app_account}")
    before = table_state(admin, "shop")
    grants_before = {a: _grants(admin, a) for a in (app_account, "shop_reader", "'lifeboat_admin'@'127.0.0.1'")}
    key_file = tmp_path / "kek.key"
    keys.create_key_file(key_file)
    store = tmp_path / "store"
    ring = keys.KeyRing.from_options(key_file=key_file)
    backup = mb.run_backup(str(store), ring, lab_mysql_params(env, backup_user=True), databases=["shop"])
    datadir = Path(env["LAB_MYSQL_DATADIR"])
    _corrupt_and_kill(datadir, state / "run" / "mysql.pid")

    result = _run_module("mysql_restore", {
        "store": str(store), "key_file": str(key_file), "backup_id": backup["set_id"], "mode": "reinit_datadir",
        "login_host": admin.host, "login_port": admin.port, "login_user": admin.user,
        "login_password": admin.password, "service_manager": "lab", "service_name": "mysql",
        "service_settings": {"repo_dir": str(REPO), "python": str(PYTHON), "env": _lab_env_of(state, env)},
        "datadir": str(datadir), "root_socket": env["LAB_MYSQL_SOCKET"], "start_timeout": 60})

    kept = Path(result["broken_datadir_kept_at"])
    assert kept.parent == datadir.parent and kept.name.startswith(datadir.name + ".lbbroken_")
    assert (kept / "shop" / "items.ibd").exists(), "the broken datadir must be kept, not deleted"
    assert (datadir / "mysql").is_dir() and not (datadir / "shop__lbrestore").exists()
    assert table_state(admin, "shop") == before
    assert set(result["verified"]) == {"shop.items", "shop.notes"}
    assert {a: _grants(admin, a) for a in grants_before} == grants_before
    app = my.ConnParams(host=admin.host, port=admin.port, user="shopapp", password=APP_PASSWORD)
    assert sql(app, "SELECT COUNT(*) FROM shop.items")[0][0][0] == 500
    assert admin.password not in json.dumps(result) and APP_PASSWORD not in json.dumps(result)


# ----------------------------------------------------------------------------- salvage identity
def _binlog_copy(conn, datadir: str, into: Path) -> str:
    """A copy of the lab server's active binlog (with its .index) standing in for a dead server's disk."""
    into.mkdir()
    name = my.query_all(conn, "SHOW BINARY LOGS")[-1][0]
    shutil.copy(f"{datadir}/{name}", into / name)
    (into / "mysql-bin.index").write_text(f"./{name}\n")
    return name


def test_salvage_before_any_archive_run_takes_the_identity_of_the_newest_base(private_mysql, tmp_path):
    lab_env = private_mysql[1]
    key_file = tmp_path / "kek.key"
    keys.create_key_file(key_file)
    ring = keys.KeyRing.from_options(key_file=key_file)
    store = Store(tmp_path / "store")
    admin = lab_mysql_params(lab_env)
    db = f"lbsalv_{os.urandom(3).hex()}"
    conn = my.connect(admin)
    try:
        my.execute(conn, f"CREATE DATABASE {db}")
        my.execute(conn, f"CREATE TABLE {db}.t (v VARCHAR(20))")
        identity = my.server_identity(conn)
        _binlog_copy(conn, lab_env["LAB_MYSQL_DATADIR"], tmp_path / "early")
        with pytest.raises(ConfigError, match="give identity"):
            binlog.salvage_from_files(tmp_path / "early", store, ring)  # no archive, no base: cannot tell
        base = mb.run_backup(str(store.root), ring, lab_mysql_params(lab_env, backup_user=True),
                             databases=[db], include_users=False)
        my.execute(conn, f"INSERT INTO {db}.t VALUES ('after-the-base')")
        name = _binlog_copy(conn, lab_env["LAB_MYSQL_DATADIR"], tmp_path / "dead")
        salvaged = binlog.salvage_from_files(tmp_path / "dead", store, ring)
    finally:
        my.execute(conn, f"DROP DATABASE IF EXISTS {db}")
        conn.close()
    assert salvaged["identity"] == base["server_identity"] == identity
    assert [e["file"] for e in salvaged["archived"]] == [name] and salvaged["archived"][0]["salvaged"]
    assert binlog.archived_identities(store) == [base["server_identity"]]


def test_pitr_into_a_fresh_server_is_one_restore_then_the_replay(private_mysql, tmp_path):
    """Dead server: salvage its binlogs, then mysql_pitr execute restore_mode=reinit_datadir target latest."""
    state, env = private_mysql
    admin = lab_mysql_params(env)
    sql(admin, "CREATE DATABASE shop")
    sql(admin, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))", "INSERT INTO t VALUES (1, 'in-the-base')",
        db="shop")
    key_file = tmp_path / "kek.key"
    keys.create_key_file(key_file)
    ring = keys.KeyRing.from_options(key_file=key_file)
    store = tmp_path / "store"
    mb.run_backup(str(store), ring, lab_mysql_params(env, backup_user=True), databases=["shop"])
    sql(admin, "INSERT INTO t VALUES (2, 'after-the-base')", "UPDATE t SET v = 'changed' WHERE id = 1", db="shop")
    expected = table_state(admin, "shop")
    datadir = Path(env["LAB_MYSQL_DATADIR"])
    _corrupt_and_kill(datadir, state / "run" / "mysql.pid")
    salvaged = binlog.salvage_from_files(datadir, Store(store), ring)
    assert salvaged["archived"]

    result = _run_module("mysql_pitr", {
        "mode": "execute", "latest": True, "store": str(store), "key_file": str(key_file),
        "login_host": admin.host, "login_port": admin.port, "login_user": admin.user,
        "login_password": admin.password, "restore_mode": "reinit_datadir", "service_manager": "lab",
        "service_settings": {"repo_dir": str(REPO), "python": str(PYTHON), "env": _lab_env_of(state, env)},
        "datadir": str(datadir), "root_socket": env["LAB_MYSQL_SOCKET"], "start_timeout": 60})

    assert Path(result["restore"]["broken_datadir_kept_at"]).name.startswith(datadir.name + ".lbbroken_")
    assert table_state(admin, "shop") == expected
