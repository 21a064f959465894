"""PITR replay through the server's own parallel applier (relay_replay.py), on real MariaDB.

Scenario (built once, ~20 s): on the lab MariaDB a database with four tables gets a base
backup, then a burst of transactions from four concurrent clients (single-row autocommit
writes, multi-statement transactions, updates), a marked UPDATE in the middle of the burst
(the ``before`` target) and more burst; the binlogs are archived (flush). The recovery target
is a fresh scratch MariaDB (binary log off: the build-aside instance) whose ``server_id`` is
the same as the lab's (1), so the applier must use a temporary one.

Each target kind is recovered with the applier and with the client replay
(``mariadb-binlog | mariadb``) into the same server; the table checksums and rows must be
identical, and the replication state of the server (connections, globals, relay files) as
it was before.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mysql_backup
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog, pitr, relay_replay
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import scratch as mysql_scratch
from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, RestoreFailed
from lab.params import lab_mysql_params

TABLES = ("t1", "t2", "t3", "t4")


def _client_burst(admin, db, client, txns, seed):
    rnd = random.Random(seed)
    conn = mysql.connect(admin, database=db)
    try:
        for i in range(txns):
            table = rnd.choice(TABLES)
            kind = rnd.random()
            if kind < 0.6:
                mysql.execute(conn, f"INSERT INTO {table} (client, n, v) VALUES (%s, %s, 'a')", (client, i))
            elif kind < 0.85:
                mysql.execute(conn, "BEGIN")
                mysql.execute(conn, f"INSERT INTO {table} (client, n, v) VALUES (%s, %s, 'b1')", (client, i))
                other = rnd.choice(TABLES)
                mysql.execute(conn, f"INSERT INTO {other} (client, n, v) VALUES (%s, %s, 'b2')", (client, i))
                mysql.execute(conn, "COMMIT")
            else:
                mysql.execute(conn, f"UPDATE {table} SET v = CONCAT(v, 'u'), n = n + 1 WHERE client = %s "
                                    "ORDER BY id DESC LIMIT 3", (client,))
            if i % 40 == 0:
                time.sleep(0.3)  # spread the burst over several seconds (time targets)
    finally:
        conn.close()


def _burst(admin, db, txns_per_client, seed):
    threads = [threading.Thread(target=_client_burst, args=(admin, db, c, txns_per_client, seed * 10 + c))
               for c in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.fixture(scope="module")
def scenario(lab_env, tmp_path_factory):
    admin = lab_mysql_params(lab_env)
    backup_user = lab_mysql_params(lab_env, backup_user=True)
    root = tmp_path_factory.mktemp("applier")
    key_file = root / "kek"
    keys.create_key_file(key_file)
    keyring = keys.KeyRing(keys.FileKEK.load(key_file))
    store = Store(root / "store")
    db = f"lbapplier_{secrets.token_hex(3)}"
    setup = mysql.connect(admin)
    mysql.execute(setup, f"CREATE DATABASE {db}")
    for table in TABLES:
        mysql.execute(setup, f"CREATE TABLE {db}.{table} (id INT AUTO_INCREMENT PRIMARY KEY, client INT, n INT, "
                             "v VARCHAR(200), KEY (client))")
    _burst(admin, db, 20, 1)
    binlog.archive_binlogs(backup_user, store, keyring, flush=True)
    with store.begin_set("mysql", ["mysql"], keyring) as writer:
        mysql_backup.backup_mysql_into(writer, backup_user, databases=[db], parallel=1, include_users=False)
        base = writer.set_id
        writer.publish()
    _burst(admin, db, 160, 2)
    mysql.execute(setup, "FLUSH BINARY LOGS")  # the replay spans several binlog files
    marker_done = threading.Event()

    def mark_later():
        time.sleep(1.0)
        conn = mysql.connect(admin, database=db)
        mysql.execute(conn, f"UPDATE t1 SET v = 'marker-{db}' WHERE id = 1")
        conn.close()
        marker_done.set()

    marker = threading.Thread(target=mark_later)
    marker.start()
    _burst(admin, db, 160, 3)
    marker.join()
    archived = binlog.archive_binlogs(backup_user, store, keyring, flush=True)
    scratch = mysql_scratch.ScratchMariaDB(base_dir=str(root))
    scratch.start()
    try:
        yield {"admin": admin, "store": store, "keyring": keyring, "db": db, "base": base,
               "identity": archived["identity"], "target": scratch.params, "datadir": scratch.datadir}
    finally:
        scratch.cleanup()
        mysql.execute(setup, f"DROP DATABASE IF EXISTS {db}")
        setup.close()


def _recover(s, target, method, **kwargs):
    return pitr.execute(s["store"], s["keyring"], target, s["target"], identity=s["identity"],
                        databases=[s["db"]], new_generation=False, replay_method=method, **kwargs)


def _tables_state(s):
    conn = mysql.connect(s["target"], database=s["db"])
    try:
        sums = {t: mysql.query_all(conn, f"CHECKSUM TABLE {t}")[0][1] for t in TABLES}
        rows = {t: sorted(mysql.query_all(conn, f"SELECT id, client, n, v FROM {t}")) for t in TABLES}
        return sums, rows
    finally:
        conn.close()


def _replication_state(s):
    conn = mysql.connect(s["target"])
    try:
        slaves = relay_replay.all_slaves_status(conn)
        variables = mysql.query_all(conn, "SELECT @@server_id, @@slave_parallel_threads, @@gtid_slave_pos")[0]
    finally:
        conn.close()
    files = sorted(p.name for p in Path(s["datadir"]).iterdir()
                   if "relay" in p.name or p.name.startswith("master-") or p.name == relay_replay.STATE_NAME
                   or ".lbtmp-" in p.name)
    return {"slaves": slaves, "globals": variables, "files": files}


def _both_engines_agree(s, target):
    """Recover ``target`` with the client replay, then with the applier: same tables."""
    before = _replication_state(s)
    client = _recover(s, target, "client")
    assert client["replay"]["method"] == "client"
    expected = _tables_state(s)
    applier = _recover(s, target, "applier")
    assert applier["replay"]["method"] == "applier" and applier["replay"]["workers"] >= 2
    assert applier["plan"]["resolved_stop"] == client["plan"]["resolved_stop"]
    assert _tables_state(s) == expected
    assert _replication_state(s) == before
    return client, expected


def test_auto_chooses_the_applier_on_a_server_that_does_not_binlog_the_replay(scenario):
    result = _recover(scenario, "latest", "auto")
    assert result["replay"]["method"] == "applier", result["replay"]["why"]


def test_auto_uses_the_sql_thread_alone_where_it_would_binlog_the_replay_if_durability_is_relaxed(
        scenario, lab_env):
    # the lab's MariaDB: log_bin and log_slave_updates ON (parallel workers would binlog the replay)
    admin = lab_mysql_params(lab_env)
    conn = mysql.connect(admin)
    try:
        assert int(mysql.query_value(conn, "SELECT @@innodb_flush_log_at_trx_commit")) == 1
        # durable: one fsync per commit, the SQL thread alone is no faster than the client
        method, why = relay_replay.choose_method(admin, "auto", log_replayed=False, databases=None)
        assert method == "client" and "innodb_flush_log_at_trx_commit=1" in why
        assert relay_replay.choose_method(admin, "applier", log_replayed=False, databases=None)[0] == "applier"
        mysql.execute(conn, "SET GLOBAL innodb_flush_log_at_trx_commit = 2")  # as relax_durability does
        method, why = relay_replay.choose_method(admin, "auto", log_replayed=False, databases=None)
        assert method == "applier" and "SQL thread alone" in why and "log_slave_updates" in why
    finally:
        mysql.execute(conn, "SET GLOBAL innodb_flush_log_at_trx_commit = 1")
        conn.close()
    # the scratch server (binlog off) gets the parallel workers
    method, why = relay_replay.choose_method(scenario["target"], "auto", log_replayed=False, databases=None)
    assert method == "applier" and "parallel applier" in why


def test_latest_is_identical_with_both_engines(scenario):
    _client, state = _both_engines_agree(scenario, "latest")
    assert any(r[3] == f"marker-{scenario['db']}" for r in state[1]["t1"])


def test_position_in_the_middle_of_the_concurrent_burst_is_identical_and_exclusive(scenario):
    s = scenario
    p = pitr.plan(s["store"], s["keyring"], "latest", identity=s["identity"], databases=[s["db"]])
    run = pitr.run_of(binlog.load_index(s["store"], s["identity"]), p["base"]["file"])[1]
    txns = list(pitr.iter_transactions(s["store"], s["keyring"], run, p["base"]["position"]))
    k = len(txns) // 2
    stop = txns[k]
    client, _state = _both_engines_agree(s, {"position": f"{stop.file}:{stop.start}"})
    assert client["plan"]["resolved_stop"]["position"] == stop.start
    # exclusive: the transaction AT the position is not applied, the one before it is
    assert client["plan"]["last_applied"]["gtid"] == txns[k - 1].gtid


def test_gtid_target_is_identical_and_inclusive(scenario):
    s = scenario
    p = pitr.plan(s["store"], s["keyring"], "latest", identity=s["identity"], databases=[s["db"]])
    run = pitr.run_of(binlog.load_index(s["store"], s["identity"]), p["base"]["file"])[1]
    txns = [t for t in pitr.iter_transactions(s["store"], s["keyring"], run, p["base"]["position"])
            if t.row_events]
    target = txns[len(txns) // 3]
    client, _state = _both_engines_agree(s, {"gtid": target.gtid})
    assert client["plan"]["last_applied"]["gtid"] == target.gtid


def test_time_target_is_identical(scenario):
    s = scenario
    p = pitr.plan(s["store"], s["keyring"], "latest", identity=s["identity"], databases=[s["db"]])
    run = pitr.run_of(binlog.load_index(s["store"], s["identity"]), p["base"]["file"])[1]
    seconds = sorted({t.timestamp for t in pitr.iter_transactions(s["store"], s["keyring"], run,
                                                                  p["base"]["position"]) if t.row_events})
    assert len(seconds) >= 3, "the burst must span several seconds"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds[len(seconds) // 2]))
    client, _state = _both_engines_agree(s, {"time": when})
    assert client["plan"]["last_applied"]["timestamp"] <= seconds[len(seconds) // 2]


def test_before_event_is_identical_and_excludes_the_matched_transaction(scenario):
    _client, state = _both_engines_agree(scenario, {"before": f"marker-{scenario['db']}"})
    assert all(r[3] != f"marker-{scenario['db']}" for r in state[1]["t1"])


def test_a_taken_connection_name_is_refused_and_left_as_it_was(scenario):
    s = scenario
    conn = mysql.connect(s["target"])
    try:
        mysql.execute(conn, f"CHANGE MASTER '{relay_replay.CONNECTION}' TO MASTER_HOST = '192.0.2.7', "
                            "MASTER_PORT = 3307, MASTER_USER = 'repl'")
        before = _replication_state(s)
        with pytest.raises(ConfigError, match="is taken"):
            _recover(s, "latest", "applier")
        assert _replication_state(s) == before
    finally:
        mysql.execute(conn, f"RESET SLAVE '{relay_replay.CONNECTION}' ALL")
        conn.close()


def test_an_existing_replication_setup_is_untouched(scenario):
    s = scenario
    conn = mysql.connect(s["target"])
    try:
        mysql.execute(conn, "CHANGE MASTER 'upstream' TO MASTER_HOST = '192.0.2.8', MASTER_PORT = 3308, "
                            "MASTER_USER = 'repl', MASTER_USE_GTID = slave_pos")
        before = _replication_state(s)
        assert any(r["Connection_name"] == "upstream" for r in before["slaves"])
        result = _recover(s, "latest", "applier")
        assert result["replay"]["method"] == "applier"
        assert _replication_state(s) == before
    finally:
        mysql.execute(conn, "RESET SLAVE 'upstream' ALL")
        conn.close()


def test_an_applier_error_midway_fails_naming_it_and_leaves_nothing_behind(scenario):
    s = scenario
    _recover(s, "latest", "client")
    before = _replication_state(s)
    # the rows of the range are already there: the SQL thread's first write of a row fails
    p = pitr.plan(s["store"], s["keyring"], "latest", identity=s["identity"], databases=[s["db"]])
    with pytest.raises(RestoreFailed, match=rf"parallel applier failed: Could not execute \w+ event on table "
                                            rf"{s['db']}\.t\d.*master log mysql-bin\.\d+"):
        relay_replay.replay_with_applier(s["store"], s["keyring"], p["replay"], s["target"], databases=[s["db"]])
    assert _replication_state(s) == before


def test_a_killed_run_is_cleaned_up_by_the_next_one(scenario):
    s = scenario
    before = _replication_state(s)
    conn = mysql.connect(s["target"])
    try:
        original = int(mysql.query_value(conn, "SELECT @@server_id"))
        state = {"server_id": original, "slave_parallel_threads": 0, "gtid_slave_pos": before["globals"][2],
                 "tmp_files": []}
        (Path(s["datadir"]) / relay_replay.STATE_NAME).write_text(json.dumps(state))
        # what a kill -9 in the middle of a replay leaves: the marked connection, a temporary server_id
        mysql.execute(conn, f"CHANGE MASTER '{relay_replay.CONNECTION}' TO MASTER_HOST = "
                            f"'{relay_replay.MARKER_HOST}', MASTER_PORT = 1")
        mysql.execute(conn, "SET GLOBAL server_id = 4242")
    finally:
        conn.close()
    result = _recover(s, "latest", "applier")
    assert result["replay"]["method"] == "applier"
    assert _replication_state(s) == before


def test_each_engine_records_its_own_speed_and_the_plan_estimates_with_both(scenario):
    s = scenario
    _recover(s, "latest", "client")
    client_bps = pitr.measured_throughput(s["store"], s["identity"])
    assert client_bps
    _recover(s, "latest", "applier")
    assert pitr.measured_throughput(s["store"], s["identity"]) == client_bps  # the applier did not overwrite it
    applier_bps = pitr.measured_throughput(s["store"], s["identity"], "applier")
    assert applier_bps and applier_bps != client_bps
    p = pitr.plan(s["store"], s["keyring"], "latest", identity=s["identity"], databases=[s["db"]])
    total = sum(r["bytes"] for r in p["replay"])
    assert p["estimated_duration_s"] == round(total / client_bps + 2.0, 1)
    assert p["estimated_applier_duration_s"] == round(total / applier_bps + 2.0, 1)


def test_a_killed_runs_sql_thread_still_applying_is_stopped_before_the_base_is_restored(scenario):
    s = scenario
    _recover(s, "latest", "client")
    expected = _tables_state(s)
    before = _replication_state(s)
    conn = mysql.connect(s["target"])
    try:
        state = {"server_id": int(before["globals"][0]), "slave_parallel_threads": int(before["globals"][1]),
                 "gtid_slave_pos": before["globals"][2], "tmp_files": []}
        (Path(s["datadir"]) / relay_replay.STATE_NAME).write_text(json.dumps(state))
        # a kill -9 of the playbook leaves the SQL thread running (it waits for more relay log)
        mysql.execute(conn, f"CHANGE MASTER '{relay_replay.CONNECTION}' TO MASTER_HOST = "
                            f"'{relay_replay.MARKER_HOST}', MASTER_PORT = 1, MASTER_LOG_FILE = 'mysql-bin.000001', "
                            "MASTER_LOG_POS = 4")
        mysql.execute(conn, "SET GLOBAL server_id = 4243")
        mysql.execute(conn, f"START SLAVE '{relay_replay.CONNECTION}' SQL_THREAD")
        assert relay_replay.connection_status(conn, relay_replay.CONNECTION)["Slave_SQL_Running"] == "Yes"
    finally:
        conn.close()
    result = _recover(s, "latest", "auto")
    assert result["replay"]["method"] == "applier", result["replay"]["why"]
    assert _tables_state(s) == expected
    assert _replication_state(s) == before
