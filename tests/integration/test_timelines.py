"""PITR follows timelines (issue #17 part 3) on the lab MariaDB: after a PITR the archive's
new generation records its branch point, and later recoveries follow the CURRENT line of
history -- generation 1 up to the branch point, then generation 2 -- never silently the
history the first PITR abandoned.

Scenario (built once for the module, ~20 s), in its own database ``lbtl_<rand>.t`` whose
rows carry ``ts = UNIX_TIMESTAMP()`` (= their transaction's binlog time):

* generation 1: rows ``g1-base``; archive; base backup B1 (the only base); rows ``g1-keep``;
  a bad ``UPDATE ... SET note='bad-update'``; rows ``g1-abandoned``; archive.
* PITR (execute, new generation) to just before the bad UPDATE: generation 2 branches there.
* generation 2: rows ``g2-first``; a second boundary; rows ``g2-second``; archive.

The rows in the live table at the end are the current history; each test recovers the
database to a target and compares the rows. Only the test's database is restored.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mysql_backup
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog, pitr
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
from ansible_collections.lifeboat.dr.plugins.module_utils.edge import cli
from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import health
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import RecoveryTargetInvalid
from lab.params import lab_mysql_params

BAD_UPDATE = r"note\s*=\s*'bad-update'"


def _insert_rows(conn, first_n, count, note, interval=0.2):
    for n in range(first_n, first_n + count):
        mysql.execute(conn, "INSERT INTO t (n, note, ts) VALUES (%s, %s, UNIX_TIMESTAMP())", (n, note))
        time.sleep(interval)


def _wait_for_next_second(after_epoch: int) -> None:
    while time.time() < after_epoch + 1.05:
        time.sleep(0.05)


def _server_second(conn) -> int:
    return int(mysql.query_all(conn, "SELECT UNIX_TIMESTAMP()")[0][0])


def _base_backup(store, keyring, backup_user, db):
    with store.begin_set("mysql", ["mysql"], keyring) as writer:
        mysql_backup.backup_mysql_into(writer, backup_user, databases=[db], parallel=1, include_users=False)
        set_id = writer.set_id
        writer.publish()
    return set_id


@pytest.fixture(scope="module")
def timeline(lab_env, tmp_path_factory):
    admin = lab_mysql_params(lab_env)
    backup_user = lab_mysql_params(lab_env, backup_user=True)
    root = tmp_path_factory.mktemp("timelines")
    key_file = root / "kek"
    keys.create_key_file(key_file)
    keyring = keys.KeyRing(keys.FileKEK.load(key_file))
    store = Store(root / "store")
    db = f"lbtl_{secrets.token_hex(3)}"
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    setup = mysql.connect(admin)
    mysql.execute(setup, f"CREATE DATABASE {db}")
    conn = mysql.connect(admin, database=db)
    mysql.execute(conn, "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, n INT, note VARCHAR(40), ts INT)")
    _insert_rows(conn, 0, 3, "g1-base", interval=0.05)
    binlog.archive_binlogs(backup_user, store, keyring, flush=True)
    base = _base_backup(store, keyring, backup_user, db)
    _insert_rows(conn, 10, 4, "g1-keep")
    _wait_for_next_second(_server_second(conn))
    mysql.execute(conn, "UPDATE t SET note='bad-update' WHERE note='g1-keep'")
    _insert_rows(conn, 20, 3, "g1-abandoned")
    abandoned_rows = _select(conn)
    # binlog times have whole seconds: the PITR (and generation 2's first event) must come in a later
    # second than the abandoned rows, or a time target in that second lies on both lines of history
    _wait_for_next_second(_server_second(conn))
    conn.close()
    binlog.archive_binlogs(backup_user, store, keyring, flush=True)
    identity = binlog.archived_identities(store)[0]
    first_pitr = pitr.execute(store, keyring, {"before": BAD_UPDATE, "start": started}, admin, identity=identity,
                              databases=[db])
    conn = mysql.connect(admin, database=db)
    _wait_for_next_second(_server_second(conn))
    _insert_rows(conn, 100, 4, "g2-first")
    t_mid = _server_second(conn)
    _wait_for_next_second(t_mid)
    _insert_rows(conn, 200, 4, "g2-second")
    current_rows = _select(conn)
    conn.close()
    before_archive = binlog.load_index(store, identity)
    archived_before = {e["file"] for g in before_archive.generations for e in g["files"]}
    archived_after = binlog.archive_binlogs(backup_user, store, keyring, flush=True)
    yield {"admin": admin, "backup_user": backup_user, "store": store, "keyring": keyring, "db": db, "base": base,
           "root": root, "identity": identity, "started": started, "first_pitr": first_pitr, "t_mid": t_mid,
           "current_rows": current_rows, "abandoned_rows": abandoned_rows, "archived_after": archived_after,
           "archived_before": archived_before}
    for (name,) in mysql.query_all(setup, "SHOW DATABASES"):
        if str(name).startswith(db):
            mysql.execute(setup, f"DROP DATABASE `{name}`")
    setup.close()


def _run_module(tmp, name, **args):
    """Run module ``name`` with ``args`` as Ansible does (args in a 0600 file); return its JSON result."""
    args_file = tmp / f"args-{name}.json"
    args_file.touch(mode=0o600)
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))  # holds the lab's admin password
    proc = subprocess.run([sys.executable, "-m", f"ansible_collections.lifeboat.dr.plugins.modules.{name}",
                           str(args_file)], capture_output=True, text=True, timeout=300, check=False)
    args_file.unlink()
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def _select(conn):
    return sorted(mysql.query_all(conn, "SELECT id, n, note, ts FROM t"))


def _rows(s):
    conn = mysql.connect(s["admin"], database=s["db"])
    try:
        return _select(conn)
    finally:
        conn.close()


def _recover(s, target, **kw):
    return pitr.execute(s["store"], s["keyring"], target, s["admin"], identity=s["identity"], databases=[s["db"]],
                        new_generation=False, **kw)


def _iso(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _bad_update_match(s):
    matches = pitr.find(s["store"], s["keyring"], BAD_UPDATE, identity=s["identity"], start=s["started"])
    assert len(matches) == 1 and matches[0]["generation"] == 1
    return matches[0]


def test_the_pitr_records_where_generation_2_branched_from_generation_1(timeline):
    s = timeline
    the_plan = s["first_pitr"]["plan"]
    index = binlog.load_index(s["store"], s["identity"])
    assert [g["generation"] for g in index.generations] == [1, 2]
    branch = index.generations[1]["branch"]
    bad = _bad_update_match(s)
    assert branch["parent_generation"] == 1
    assert (branch["file"], branch["position"]) == (bad["file"], bad["position"])  # exclusive: the UPDATE is out
    assert branch["gtid"] == the_plan["last_applied"]["gtid"]
    assert branch["base"] == s["base"] and branch["databases"] == [s["db"]] and branch["at"]
    assert "backup.yml" in s["first_pitr"]["base_backup_needed"]


def test_latest_gives_exactly_the_current_history(timeline):
    s = timeline
    result = _recover(s, "latest")
    assert result["plan"]["base"]["set_id"] == s["base"]
    assert {r["generation"] for r in result["plan"]["replay"]} == {1, 2}
    got = _rows(s)
    assert got == s["current_rows"]
    notes = {r[2] for r in got}
    assert "bad-update" not in notes and "g1-abandoned" not in notes
    assert {"g1-base", "g1-keep", "g2-first", "g2-second"} <= notes
    assert any("branch point" in risk for risk in result["plan"]["risks"])


def test_a_time_in_generation_2_without_a_new_base_is_exact_across_the_branch(timeline):
    s = timeline
    result = _recover(s, {"time": _iso(s["t_mid"])})
    assert result["plan"]["base"]["set_id"] == s["base"]  # generation 2 has no base of its own
    assert result["plan"]["stop_generation"] == 2
    got = _rows(s)
    assert got == [r for r in s["current_rows"] if r[3] <= s["t_mid"]]
    assert {r[2] for r in got} == {"g1-base", "g1-keep", "g2-first"}


def test_a_target_on_the_abandoned_branch_is_refused_unless_its_generation_is_named(timeline):
    s = timeline
    before = _rows(s)
    bad = _bad_update_match(s)
    abandoned_second = max(r[3] for r in s["abandoned_rows"])
    refused = [{"gtid": bad["gtid"]}, {"position": f"{bad['file']}:{bad['end_position']}"},
               {"before": BAD_UPDATE, "start": s["started"]}, {"time": _iso(abandoned_second)}]
    for target in refused:
        with pytest.raises(RecoveryTargetInvalid, match=r"abandoned branch.*generation 2 branched off") as err:
            _recover(s, target)
            pytest.fail(f"target {target} was not refused")
        assert "generation: 1" in err.value.hint
    assert _rows(s) == before  # nothing was changed by the refusals
    # named, the abandoned history is recovered: through the bad UPDATE (inclusive)
    result = _recover(s, {"gtid": bad["gtid"]}, generation=1)
    assert result["plan"]["line_generation"] == 1
    got = _rows(s)
    assert got == [r for r in s["abandoned_rows"] if r[2] != "g1-abandoned"]
    assert {r[2] for r in got} == {"g1-base", "bad-update"}


def test_the_first_archive_after_the_pitr_ships_no_file_twice(timeline):
    s = timeline
    index = binlog.load_index(s["store"], s["identity"])
    shipped = s["archived_after"]["archived"]
    assert shipped and not {e["file"] for e in shipped} & s["archived_before"]
    # the file the PITR's FLUSH closed still holds generation 1's (abandoned) tail; newer files are generation 2
    first = binlog.binlog_sequence(index.generations[1]["first_file"])
    assert [e["generation"] for e in shipped] == [2 if binlog.binlog_sequence(e["file"]) >= first else 1
                                                  for e in shipped]
    assert [e["generation"] for e in shipped][-1] == 2
    pairs = [(g["generation"], e["file"]) for g in index.generations for e in g["files"]]
    assert len(pairs) == len(set(pairs))


def test_two_pitrs_without_an_archive_run_between_them_ship_nothing_twice(timeline):
    s = timeline
    copy = s["root"] / "store-double-pitr"
    shutil.copytree(s["store"].root, copy)
    store = Store(copy)
    for _pitr in range(2):
        pitr.execute(store, s["keyring"], "latest", s["admin"], identity=s["identity"], databases=[s["db"]])
    index = binlog.load_index(store, s["identity"])
    already = {(g["generation"], e["file"]) for g in index.generations for e in g["files"]}
    archived_names = {e["file"] for g in index.generations for e in g["files"]}
    assert [g["generation"] for g in index.generations] == [1, 2, 3, 4]
    assert index.generations[3]["branch"]["parent_generation"] == 2  # generation 3 has nothing archived
    result = binlog.archive_binlogs(s["backup_user"], store, s["keyring"], flush=True)
    shipped = [e["file"] for e in result["archived"]]
    assert shipped and not set(shipped) & archived_names
    index = binlog.load_index(store, s["identity"])
    after = [(g["generation"], e["file"]) for g in index.generations for e in g["files"]]
    assert len(after) == len(set(after)) == len(already) + len(shipped)
    the_plan = pitr.plan(store, s["keyring"], "latest", identity=s["identity"], databases=[s["db"]])
    assert [x["generation"] for x in the_plan["line"]] == [1, 2, 4]
    assert _rows(s) == s["current_rows"]  # both PITRs to latest recovered the current history


def test_analyze_recovery_points_and_health_show_generations_branch_points_and_the_missing_base(timeline, capsys):
    s = timeline
    report = pitr.analyze(s["store"], identity=s["identity"])
    gen1, gen2 = report["generations"]
    assert gen2["current"] and gen2["branch"]["parent_generation"] == 1
    assert [x["generation"] for x in gen2["line"]] == [1, 2] and "until" in gen2["line"][0]
    assert gen2["recoverable"]["from_base"] == s["base"] and gen2["recoverable"]["to"]["generation"] == 2
    assert gen1["recoverable"]["from_base"] == s["base"] and gen1["recoverable"]["to"]["generation"] == 1
    assert "no base backup since generation 2" in report["base_backup_needed"]
    assert cli.main(["recovery-points", "--store", str(s["store"].root), "--identity", s["identity"]]) == 0
    out = capsys.readouterr().out
    branch = gen2["branch"]
    assert "BRANCHED FROM" in out and f"gen 1 at {branch['file']}:{branch['position']}" in out
    assert "warning: no base backup since generation 2" in out
    problems = health.build_report(s["store"])["problems"]
    assert any("no base backup since generation 2" in p["message"] for p in problems)
    # a base backup of the recovered server ends the warning (in a copy: the other tests need no base in gen 2)
    copy = Store(shutil.copytree(s["store"].root, s["root"] / "store-new-base"))
    _base_backup(copy, s["keyring"], s["backup_user"], s["db"])
    assert pitr.analyze(copy, identity=s["identity"])["base_backup_needed"] is None
    assert not any("no base backup since" in p["message"] for p in health.build_report(copy)["problems"])


def test_a_restore_that_is_not_binlogged_branches_and_later_pitrs_follow_it(timeline):
    s = timeline
    store = Store(shutil.copytree(s["store"].root, s["root"] / "store-restore"))
    admin = s["admin"]
    result = _run_module(s["root"], "mysql_restore", store=str(store.root), key_file=str(s["root"] / "kek"),
                         backup_id=s["base"], databases=[s["db"]], write_binlog=False, login_host=admin.host,
                         login_port=admin.port, login_user=admin.user, login_password=admin.password)
    assert result.get("changed") and not result.get("failed"), result.get("msg")
    recorded = result["timeline"]
    base_pos = store.open_set(s["base"]).read_json("mysql", pitr.POSITION_JSON)
    assert recorded["generation"] == 3 and "backup.yml" in recorded["base_backup_needed"]
    assert {k: recorded["branch"][k] for k in ("parent_generation", "file", "position", "by", "base")} == \
        {"parent_generation": 1, "file": base_pos["file"], "position": base_pos["position"], "by": "restore",
         "base": s["base"]}
    restored = _rows(s)
    assert {r[2] for r in restored} == {"g1-base"}
    conn = mysql.connect(s["admin"], database=s["db"])
    _insert_rows(conn, 300, 3, "g3", interval=0.05)
    conn.close()
    binlog.archive_binlogs(s["backup_user"], store, s["keyring"], flush=True)
    result = pitr.execute(store, s["keyring"], "latest", s["admin"], identity=s["identity"], databases=[s["db"]],
                          new_generation=False)
    assert [x["generation"] for x in result["plan"]["line"]] == [1, 3]
    got = _rows(s)
    assert got[:len(restored)] == restored
    assert [(r[1], r[2]) for r in got[len(restored):]] == [(300, "g3"), (301, "g3"), (302, "g3")]
    # the second generation's history (after the restore's branch point) is not on the current line
    with pytest.raises(RecoveryTargetInvalid, match="abandoned branch"):
        pitr.plan(store, s["keyring"], {"time": _iso(s["t_mid"])}, identity=s["identity"])


def test_a_before_pattern_matching_on_both_branches_means_the_one_on_the_current_line(timeline):
    s = timeline
    pattern = r"VALUES \((13|20),"  # row 13 (g1-keep, before the branch point), row 20 (g1-abandoned, after it)
    result = _recover(s, {"before": pattern, "start": s["started"]})
    assert result["plan"]["resolved_stop"]["description"].startswith("just before INSERT")
    assert [(r[1], r[2]) for r in _rows(s)] == [(0, "g1-base"), (1, "g1-base"), (2, "g1-base"), (10, "g1-keep"),
                                                (11, "g1-keep"), (12, "g1-keep")]
    # on generation 1's own line both match: which one is meant must be said
    with pytest.raises(RecoveryTargetInvalid, match=r"2 events match.*generation 1"):
        _recover(s, {"before": pattern, "start": s["started"]}, generation=1)
    with pytest.raises(RecoveryTargetInvalid, match="none on the line of history of generation 2"):
        _recover(s, {"before": r"VALUES \(20,", "start": s["started"]}, generation=2)
