"""Point-in-time recovery on the lab MariaDB: the recovered data is exactly what the target says.

Scenario (built once for the module, ~15 s): rows are written to ``lbpitr_<rand>.ticks``
every ~0.25 s, each carrying ``ts = UNIX_TIMESTAMP()`` (= its transaction's binlog time);
a base backup of that database alone is taken; writing goes on (with a two-statement
transaction); ``DROP TABLE ticks``; writing goes on into ``other``; the binlogs are archived
(flush). Each test then recovers the database to a target and compares the rows.
Only the test's own database is restored and replayed: the lab's ``demo`` is untouched.

Every recovery test runs with both replay engines (``engine``): ``client``
(``mariadb-binlog | mariadb``) and ``applier`` (the server's own SQL thread, relay_replay.py;
the lab's MariaDB has ``log_slave_updates`` ON, so the SQL thread applies alone with its
session's binlog off). With either, the server's binlog does not receive the replay and its
replication settings are as before.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mysql_backup
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog, pitr, relay_replay
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import RecoveryTargetInvalid, RestoreFailed
from lab.params import lab_mysql_params


def _insert(conn, n, note="tick"):
    mysql.execute(conn, "INSERT INTO ticks (n, note, ts) VALUES (%s, %s, UNIX_TIMESTAMP())", (n, note))


def _write_for(conn, seconds, start_n, note="tick", interval=0.25):
    n = start_n
    deadline = time.time() + seconds
    while time.time() < deadline:
        _insert(conn, n, note)
        n += 1
        time.sleep(interval)
    return n


@pytest.fixture(scope="module")
def scenario(lab_env, tmp_path_factory):
    admin = lab_mysql_params(lab_env)
    backup_user = lab_mysql_params(lab_env, backup_user=True)
    root = tmp_path_factory.mktemp("pitr")
    key_file = root / "kek"
    keys.create_key_file(key_file)
    keyring = keys.KeyRing(keys.FileKEK.load(key_file))
    store = Store(root / "store")
    db = f"lbpitr_{secrets.token_hex(3)}"
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    setup = mysql.connect(admin)
    mysql.execute(setup, f"CREATE DATABASE {db}")
    conn = mysql.connect(admin, database=db)
    mysql.execute(conn, "CREATE TABLE ticks (id INT AUTO_INCREMENT PRIMARY KEY, n INT, note VARCHAR(40), ts INT)")
    mysql.execute(conn, "CREATE TABLE other (id INT AUTO_INCREMENT PRIMARY KEY, ts INT)")
    n = _write_for(conn, 1.2, 0, "before-base")
    binlog.archive_binlogs(backup_user, store, keyring, flush=True)  # the archive run before the base
    with store.begin_set("mysql", ["mysql"], keyring) as writer:
        mysql_backup.backup_mysql_into(writer, backup_user, databases=[db], parallel=1, include_users=False)
        base = writer.set_id
        writer.publish()
    n = _write_for(conn, 2.6, n, "after-base")
    mysql.execute(conn, "BEGIN")
    _insert(conn, n, "txn-a")
    _insert(conn, n + 1, "txn-b")
    mysql.execute(conn, "COMMIT")
    n = _write_for(conn, 1.3, n + 2, "after-base")
    before_drop = sorted(r[0] for r in mysql.query_all(conn, "SELECT id FROM ticks"))
    mysql.execute(conn, "DROP TABLE ticks")
    for _row in range(6):
        mysql.execute(conn, "INSERT INTO other (ts) VALUES (UNIX_TIMESTAMP())")
        time.sleep(0.2)
    conn.close()
    archived = binlog.archive_binlogs(backup_user, store, keyring, flush=True)
    yield {"admin": admin, "store": store, "keyring": keyring, "db": db, "base": base,
           "before_drop": before_drop, "started": started, "archived": archived, "identity": archived["identity"]}
    for (name,) in mysql.query_all(setup, "SHOW DATABASES"):
        if str(name).startswith(db):
            mysql.execute(setup, f"DROP DATABASE `{name}`")
    setup.close()


def _rows(s, table="ticks"):
    columns = "id, n, note, ts" if table == "ticks" else "id, ts"
    conn = mysql.connect(s["admin"], database=s["db"])
    try:
        return sorted(mysql.query_all(conn, f"SELECT {columns} FROM {table}"))
    finally:
        conn.close()


SERVER_STATE = ("SELECT @@gtid_binlog_pos, @@gtid_slave_pos, @@server_id, @@slave_parallel_threads, "
                "@@init_slave, @@gtid_strict_mode, @@innodb_flush_log_at_trx_commit, @@sync_binlog")


def _server_state(s):
    """What a replay must leave as it was: the binlog (no replayed GTID in it), the replication settings."""
    conn = mysql.connect(s["admin"])
    try:
        return {"globals": mysql.query_all(conn, SERVER_STATE)[0],
                "master": mysql.query_all(conn, "SHOW MASTER STATUS"), "slaves": relay_replay.all_slaves_status(conn)}
    finally:
        conn.close()


@pytest.fixture(params=["client", "applier"])
def engine(request):
    return request.param


def _settled_state(s, timeout_s=10.0):
    """:func:`_server_state` once it stops changing on its own: a binlog rotation (the scenario's
    archive flush) is followed, asynchronously, by a Binlog_checkpoint event once InnoDB has flushed
    the previous file's commits (up to ~1 s later, longer on a loaded machine)."""
    state = _server_state(s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(1.2)
        again = _server_state(s)
        if again == state:
            return state
        state = again
    return state


def _recover(s, target, engine="client"):
    before = _settled_state(s)
    result = pitr.execute(s["store"], s["keyring"], target, s["admin"], identity=s["identity"],
                          databases=[s["db"]], new_generation=False, replay_method=engine)
    assert result["replay"]["method"] == engine, result["replay"]["why"]
    assert _server_state(s) == before
    return result


def test_find_lists_the_drop_with_its_position_and_gtid(scenario):
    matches = pitr.find(scenario["store"], scenario["keyring"], r"drop\s+table\s+.*ticks",
                        identity=scenario["identity"], start=scenario["started"])
    assert len(matches) == 1
    m = matches[0]
    assert m["kind"] == "DROP" and m["gtid"] and m["file"] and m["position"] > 4


def test_recover_just_before_the_drop_keeps_every_row_committed_before_it_and_nothing_after(scenario, engine):
    result = _recover(scenario, {"before": r"DROP TABLE\s+`?ticks", "start": scenario["started"]}, engine)
    assert result["plan"]["base"]["set_id"] == scenario["base"]
    ids = [r[0] for r in _rows(scenario)]
    assert ids == scenario["before_drop"]
    assert _rows(scenario, "other") == []  # written after the drop: not recovered


def test_recover_to_time_applies_exactly_the_transactions_at_or_before_that_second(scenario, engine):
    rows_all = []
    _recover(scenario, {"before": r"DROP TABLE\s+`?ticks", "start": scenario["started"]})
    rows_all = _rows(scenario)
    after_base = [r for r in rows_all if r[2] != "before-base"]
    seconds = sorted({r[3] for r in after_base})
    # a second holding at least two transactions, not the last one
    t = next(sec for sec in seconds[:-1] if sum(1 for r in after_base if r[3] == sec) >= 2)
    result = _recover(scenario, {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))}, engine)
    got = _rows(scenario)
    assert got == [r for r in rows_all if r[3] <= t]
    assert sum(1 for r in got if r[3] == t) >= 2
    assert result["plan"]["resolved_stop"]["exclusive"] is True


def test_position_target_at_an_event_start_is_exclusive(scenario, engine):
    s = scenario
    _recover(s, {"before": r"DROP TABLE\s+`?ticks", "start": s["started"]})
    all_rows = _rows(s)
    plan_latest = pitr.plan(s["store"], s["keyring"], "latest", identity=s["identity"])
    run = pitr.run_of(binlog.load_index(s["store"], s["identity"]), plan_latest["base"]["file"])[1]
    txns = [t for t in pitr.iter_transactions(s["store"], s["keyring"], run, plan_latest["base"]["position"])
            if any(st.table == "ticks" and st.kind == "INSERT" for st in t.statements)]
    stop_txn = txns[len(txns) // 2]
    stop_n = int(re.search(r"VALUES \((\d+),", stop_txn.statements[0].sql).group(1))
    result = _recover(s, {"position": f"{stop_txn.file}:{stop_txn.start}"}, engine)
    assert result["plan"]["resolved_stop"]["position"] == stop_txn.start
    # every transaction starting before the position is applied; the one AT it is not
    assert _rows(s) == [r for r in all_rows if r[1] < stop_n]


def _ticks_transactions(s):
    p = pitr.plan(s["store"], s["keyring"], "latest", identity=s["identity"], databases=[s["db"]])
    run = pitr.run_of(binlog.load_index(s["store"], s["identity"]), p["base"]["file"])[1]
    return [t for t in pitr.iter_transactions(s["store"], s["keyring"], run, p["base"]["position"])
            if any(st.table == "ticks" and st.kind == "INSERT" for st in t.statements)]


def test_gtid_target_is_inclusive(scenario, engine):
    s = scenario
    txns = _ticks_transactions(s)
    target = txns[len(txns) // 3]
    last_n = max(int(n) for st in target.statements for n in re.findall(r"VALUES \((\d+),", st.sql))
    result = _recover(s, {"gtid": target.gtid}, engine)
    assert result["plan"]["last_applied"]["gtid"] == target.gtid
    # the transaction named by the GTID is applied, the next one is not
    assert max(r[1] for r in _rows(s)) == last_n


def test_latest_replays_everything_archived_including_the_drop(scenario, engine):
    s = scenario
    _recover(s, "latest", engine)
    conn = mysql.connect(s["admin"], database=s["db"])
    try:
        tables = {str(t) for (t,) in mysql.query_all(conn, "SHOW TABLES")}
    finally:
        conn.close()
    assert "ticks" not in tables
    assert len(_rows(s, "other")) == 6


def test_target_outside_the_window_is_refused_and_nothing_changes(scenario):
    s = scenario
    _recover(s, {"before": r"DROP TABLE\s+`?ticks", "start": s["started"]})
    before = _rows(s)
    with pytest.raises(RecoveryTargetInvalid, match="future"):
        _recover(s, {"time": "2999-01-01T00:00:00Z"})
    with pytest.raises(RecoveryTargetInvalid):
        _recover(s, {"time": "2001-01-01T00:00:00Z"})
    with pytest.raises(RecoveryTargetInvalid):
        _recover(s, {"gtid": "0-1-999999999"})
    assert _rows(s) == before


def test_analyze_shows_the_base_window_and_events_in_a_time_range(scenario):
    s = scenario
    report = pitr.analyze(s["store"], s["keyring"], identity=s["identity"], start="2000-01-01T00:00:00Z")
    window = next(w for w in report["windows"] if w["base"] == s["base"])
    assert window["recoverable"] is True
    kinds = {st["kind"] for e in report["events"] for st in e["statements"]}
    assert {"INSERT", "DROP"} <= kinds


def test_plan_reports_ddl_loss_and_duration(scenario):
    s = scenario
    p = pitr.plan(s["store"], s["keyring"], "latest", identity=s["identity"], databases=[s["db"]])
    assert p["ddl_in_window"] and any(st["kind"] == "DROP" for d in p["ddl_in_window"] for st in d["statements"])
    assert p["estimated_duration_s"] > 0
    assert p["replay"][0]["start"] == p["base"]["position"]
    assert os.environ.get("LIFEBOAT_NEVER") is None


DURABILITY = "SELECT @@GLOBAL.innodb_flush_log_at_trx_commit, @@GLOBAL.sync_binlog"


def _durability(s):
    conn = mysql.connect(s["admin"])
    try:
        return tuple(int(v) for v in mysql.query_all(conn, DURABILITY)[0])
    finally:
        conn.close()


def _watch_durability_during_replay(s, monkeypatch, before_replay=None):
    """The server's durability settings as the replay engine starts (read from the server itself)."""
    seen = []
    real = pitr._replay_with_method

    def replay_and_look(*args, **kwargs):
        seen.append(_durability(s))
        if before_replay:
            before_replay()
        return real(*args, **kwargs)

    monkeypatch.setattr(pitr, "_replay_with_method", replay_and_look)
    return seen


def test_relaxed_durability_holds_only_during_the_replay_and_is_put_back(scenario, engine, monkeypatch):
    s = scenario
    before = _durability(s)
    seen = _watch_durability_during_replay(s, monkeypatch)
    result = pitr.execute(s["store"], s["keyring"], "latest", s["admin"], identity=s["identity"],
                          databases=[s["db"]], new_generation=False, replay_method=engine, relax_durability=True)
    assert seen == [(2, 0)]
    assert result["replay"]["durability"] == {"relaxed": {"innodb_flush_log_at_trx_commit": 2, "sync_binlog": 0},
                                              "put_back": {"innodb_flush_log_at_trx_commit": before[0],
                                                           "sync_binlog": before[1]}}
    assert _durability(s) == before
    assert not (binlog.index_path(s["store"], s["identity"]).parent / pitr.DURABILITY_STATE_NAME).exists()


def test_relaxed_durability_is_put_back_when_the_replay_fails(scenario, engine, monkeypatch):
    s = scenario
    before = _durability(s)

    def a_row_the_base_lacks():  # the replay's third INSERT into `other` (ids 1..6) fails part-way
        conn = mysql.connect(s["admin"], database=s["db"])
        try:
            mysql.execute(conn, "SET SESSION sql_log_bin = 0")
            mysql.execute(conn, "INSERT INTO other (id, ts) VALUES (3, 0)")
        finally:
            conn.close()

    seen = _watch_durability_during_replay(s, monkeypatch, a_row_the_base_lacks)
    with pytest.raises(RestoreFailed, match="Duplicate entry '3'"):
        pitr.execute(s["store"], s["keyring"], "latest", s["admin"], identity=s["identity"], databases=[s["db"]],
                     new_generation=False, replay_method=engine, relax_durability=True)
    assert seen == [(2, 0)]
    assert _durability(s) == before
    assert not (binlog.index_path(s["store"], s["identity"]).parent / pitr.DURABILITY_STATE_NAME).exists()


def test_durability_left_relaxed_by_a_killed_run_is_put_back_by_the_next_one(scenario):
    s = scenario
    before = _durability(s)
    assert before != (2, 0), "the lab's server is durable (innodb_flush_log_at_trx_commit=1)"
    # what a kill -9 during a relaxed replay leaves: the recorded originals, the server relaxed
    state = binlog.index_path(s["store"], s["identity"]).parent / pitr.DURABILITY_STATE_NAME
    state.write_text(json.dumps({"server": f"{s['admin'].host}:{s['admin'].port}",
                                 "values": {"innodb_flush_log_at_trx_commit": before[0], "sync_binlog": before[1]}}))
    conn = mysql.connect(s["admin"])
    try:
        mysql.execute(conn, "SET GLOBAL innodb_flush_log_at_trx_commit = 2")
        mysql.execute(conn, "SET GLOBAL sync_binlog = 0")
    finally:
        conn.close()
    try:
        result = pitr.execute(s["store"], s["keyring"], "latest", s["admin"], identity=s["identity"],
                              databases=[s["db"]], new_generation=False, replay_method="client")
        assert result["replay"]["durability"] == "unchanged"
        assert _durability(s) == before
        assert not state.exists()
    finally:  # never leave the lab's server relaxed
        conn = mysql.connect(s["admin"])
        mysql.execute(conn, f"SET GLOBAL innodb_flush_log_at_trx_commit = {before[0]}")
        mysql.execute(conn, f"SET GLOBAL sync_binlog = {before[1]}")
        conn.close()
