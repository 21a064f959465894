"""Physical MariaDB backups (mariabackup streams) against the lab's real server: chains, restore by files.

These tests replace the lab server's whole datadir (that is what a physical restore does):
they run on this worktree's own lab (LAB_PORT_BASE) and leave it running, on the restored
datadir. Each test removes the kept-aside datadirs it caused (Lifeboat itself never does).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mb
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import physical as mp
from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import set_verify
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    LifeboatError,
    LockHeld,
    NotFound,
    RestoreFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import get_service
from lab.params import lab_mysql_params

REPO = Path(__file__).resolve().parents[2]
DB = "lbt_physical"

pytestmark = pytest.mark.skipif(shutil.which("mariabackup") is None and shutil.which("mariadb-backup") is None,
                                reason="mariadb-backup is not installed (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def service():
    return get_service("lab", "mysql", repo_dir=str(REPO))


@pytest.fixture(scope="module")
def datadir(lab_env):
    return Path(lab_env["LAB_MYSQL_DATADIR"])


@pytest.fixture
def store(tmp_path):
    return tmp_path / "store"


@pytest.fixture(scope="module", autouse=True)
def quiet_server_afterwards(lab_env):
    """After this module the server is left quiet: purge done, redo flushed, binlog not growing.

    The restores and bulk deletes here leave background work (purge, statistics, the binlog
    checkpoint event a rotation writes once InnoDB flushed), which a later test reading
    ``SHOW MASTER STATUS`` twice would see as a change it did not make."""
    yield
    params = lab_mysql_params(lab_env)
    deadline = time.monotonic() + 60
    last = None
    while time.monotonic() < deadline:
        status = dict(sql(params, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_lsn_current', "
                                  "'Innodb_lsn_flushed', 'Innodb_history_list_length')"))
        master = sql(params, "SHOW MASTER STATUS")
        quiet = (status.get("Innodb_lsn_current") == status.get("Innodb_lsn_flushed")
                 and int(status.get("Innodb_history_list_length") or 0) == 0)
        if quiet and master == last:
            return
        last = master
        time.sleep(1.0)


@pytest.fixture(autouse=True)
def remove_kept_datadirs(datadir, service):
    """Kept-aside datadirs of a test are removed after it (by the test, never by Lifeboat)."""
    before = set(datadir.parent.iterdir())
    yield
    if not service.is_running():
        service.start()
    for path in set(datadir.parent.iterdir()) - before:
        if ".lbprev_" in path.name or ".lbfailed_" in path.name or ".lbrestore_" in path.name \
                or ".wiped_" in path.name:
            shutil.rmtree(path, ignore_errors=True)


def sql(params, *statements, db=None):
    conn = my.connect(params)
    try:
        rows = None
        with conn.cursor() as cur:
            if db:
                cur.execute(f"USE {my.quote_ident(db)}")
            for statement in statements:
                cur.execute(statement)
                rows = cur.fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def every_table_checksum(params):
    """``db.table -> (rows, CHECKSUM TABLE)`` of every base table except the server's own statistics/logs."""
    tables = sql(params, "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = "
                         "'BASE TABLE' AND TABLE_SCHEMA NOT IN ('information_schema','performance_schema','sys') "
                         "AND TABLE_NAME NOT IN ('innodb_table_stats','innodb_index_stats','gtid_slave_pos',"
                         "'general_log','slow_log','transaction_registry') ORDER BY 1, 2")
    out = {}
    for db, table in tables:
        name = my.qualified(db, table)
        rows = sql(params, f"SELECT COUNT(*) FROM {name}")[0][0]
        out[f"{db}.{table}"] = (rows, sql(params, f"CHECKSUM TABLE {name}")[0][1])
    return out


@pytest.fixture
def shop(admin):
    """``lbt_physical``: InnoDB orders, an Aria ledger, a MyISAM note table; 2000 orders of ~1 KiB."""
    sql(admin, f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB}")
    sql(admin, f"CREATE TABLE {DB}.orders (id INT PRIMARY KEY AUTO_INCREMENT, amount DECIMAL(10,2),"
        " pad VARBINARY(1000)) ENGINE=InnoDB",
        f"CREATE TABLE {DB}.ledger (id INT PRIMARY KEY, what VARCHAR(40)) ENGINE=Aria",
        f"CREATE TABLE {DB}.notes (id INT PRIMARY KEY, note TEXT) ENGINE=MyISAM",
        f"INSERT INTO {DB}.orders (amount, pad) SELECT seq / 100, RANDOM_BYTES(1000) FROM seq_1_to_2000",
        f"INSERT INTO {DB}.ledger SELECT seq, CONCAT('entry ', seq) FROM seq_1_to_500",
        f"INSERT INTO {DB}.notes VALUES (1, 'first')", db=DB)
    yield DB
    sql(admin, f"DROP DATABASE IF EXISTS {DB}")


def physical_backup(store, keyring, params, **options):
    return mb.run_backup(str(store), keyring, params, method="physical", physical=options)


def wipe_datadir(service, datadir):
    """The server stops and its datadir is lost (moved away; an empty folder is left in its place)."""
    service.stop()
    os.rename(datadir, datadir.with_name(f"{datadir.name}.wiped_{time.time_ns()}"))
    datadir.mkdir(mode=0o700)


# --------------------------------------------------------------------------- the chain
def test_full_then_two_incrementals_restore_onto_a_wiped_datadir_equal_to_the_last_incremental(
        admin, backup_user, service, datadir, shop, store, keyring):
    full = physical_backup(store, keyring, backup_user)
    assert full["backup_type"] == "full" and full["from_lsn"] == 0 and full["chain"] == []
    assert full["binlog_position"]["file"].startswith("mysql-bin.") and full["gtid"]
    sql(admin, f"INSERT INTO {DB}.orders (amount, pad) SELECT 7, RANDOM_BYTES(1000) FROM seq_1_to_300",
        f"UPDATE {DB}.orders SET amount = amount + 1 WHERE id <= 50", f"INSERT INTO {DB}.ledger VALUES (501, 'x')",
        db=DB)
    first = physical_backup(store, keyring, backup_user, incremental=True)
    assert first["backup_type"] == "incremental" and first["chain"] == [full["set_id"]]
    assert first["from_lsn"] == full["to_lsn"]
    sql(admin, f"DELETE FROM {DB}.orders WHERE id BETWEEN 100 AND 149", f"UPDATE {DB}.notes SET note = 'second'",
        f"CREATE TABLE {DB}.late (id INT PRIMARY KEY) ENGINE=InnoDB", f"INSERT INTO {DB}.late VALUES (1), (2)")
    second = physical_backup(store, keyring, backup_user, incremental=True)
    assert second["chain"] == [full["set_id"], first["set_id"]]
    at_second = every_table_checksum(admin)
    sql(admin, f"INSERT INTO {DB}.orders (amount) VALUES (99)", f"DROP TABLE {DB}.late")  # after the backup: gone

    manifest_meta = Store(store).open_set(second["set_id"]).component_metadata("mysql")
    assert manifest_meta["method"] == "physical" and manifest_meta["parent"] == first["set_id"]
    assert manifest_meta["binlog_position"]["gtid"] == second["gtid"]

    wipe_datadir(service, datadir)
    backup_set = Store(store).open_set(second["set_id"])
    result = mp.restore_physical(Store(store), backup_set, keyring, admin, service=service, datadir=str(datadir))
    assert result["chain"] == [full["set_id"], first["set_id"], second["set_id"]]
    assert Path(result["kept_datadir"]).is_dir()
    assert not list(datadir.glob("*.lbprev_*")) and not (datadir / "xtrabackup_checkpoints").exists()
    assert not list(datadir.parent.glob(f"{datadir.name}.lbrestore_*")) and result["cleaned_leftovers"] == []
    assert every_table_checksum(admin) == at_second
    assert result["gtid_state"] == {"set": True, "gtid_binlog_state": second["gtid"]}
    assert sql(admin, "SELECT @@GLOBAL.gtid_binlog_pos")[0][0] == second["gtid"]

    # back to the full: the server's LSN is now behind the newest set's end, an incremental on it is refused
    mp.restore_physical(Store(store), Store(store).open_set(full["set_id"]), keyring, admin, service=service,
                        datadir=str(datadir))
    with pytest.raises(ConfigError, match=f"behind the end of parent {second['set_id']}"):
        physical_backup(store, keyring, backup_user, incremental=True)
    assert physical_backup(store, keyring, backup_user, parent=full["set_id"])["chain"] == [full["set_id"]]


def test_full_verification_prepares_the_chain_in_a_scratch_server_and_checks_every_table(
        admin, backup_user, shop, store, keyring, tmp_path):
    full = physical_backup(store, keyring, backup_user)
    sql(admin, f"INSERT INTO {DB}.orders (amount) SELECT seq FROM seq_1_to_100", db=DB)
    incr = physical_backup(store, keyring, backup_user, incremental=True)
    at_backup = every_table_checksum(admin)
    report = set_verify.verify_set(str(store), incr["set_id"], keyring, mode="full",
                                   options={"work_dir": str(tmp_path)})
    assert report["ok"], report["failed"]
    names = {c["name"]: c for c in report["checks"]}
    assert names["mysql physical chain complete"]["detail"] == f"{full['set_id']} -> {incr['set_id']}"
    for table in ("orders", "ledger", "notes"):
        detail = names[f"mysql {DB}.{table} CHECK TABLE"]["detail"]
        rows, checksum = at_backup[f"{DB}.{table}"]
        assert detail == f"OK; {rows} rows, CHECKSUM TABLE {checksum}"
    assert report["restore_durations_s"]["mysql"] > 0
    assert not list(tmp_path.glob("lifeboat-mysql-*"))


# --------------------------------------------------------------------------- refusals
def test_a_chain_with_a_pruned_middle_set_is_refused_before_anything_changes(
        admin, backup_user, service, datadir, shop, store, keyring):
    full = physical_backup(store, keyring, backup_user)
    middle = physical_backup(store, keyring, backup_user, incremental=True)
    last = physical_backup(store, keyring, backup_user, incremental=True)
    shutil.rmtree(Path(store) / middle["set_id"])
    live = every_table_checksum(admin)
    pid = service.main_pid()
    with pytest.raises(NotFound, match=f"needs its parent {middle['set_id']}.*gap"):
        mp.restore_physical(Store(store), Store(store).open_set(last["set_id"]), keyring, admin, service=service,
                            datadir=str(datadir))
    assert service.main_pid() == pid and every_table_checksum(admin) == live
    assert not list(datadir.parent.glob("*.lbrestore_*"))
    with pytest.raises(NotFound, match="gap"):  # an incremental on top of the broken chain is refused too
        physical_backup(store, keyring, backup_user, parent=last["set_id"])
    report = set_verify.verify_set(str(store), last["set_id"], keyring, mode="quick")
    assert not report["ok"] and any("gap" in c["detail"] for c in report["checks"] if not c["ok"])
    assert full["set_id"] in {i.set_id for i in Store(store).list_sets()}


def test_an_incremental_without_a_physical_parent_is_refused_naming_the_fix(backup_user, shop, store, keyring):
    with pytest.raises(NotFound, match="take a full physical backup first|no physical backup"):
        physical_backup(store, keyring, backup_user, incremental=True)
    logical = mb.run_backup(str(store), keyring, backup_user, databases=[DB])
    with pytest.raises(ConfigError, match="not a physical MySQL backup"):
        physical_backup(store, keyring, backup_user, parent=logical["set_id"])
    assert [i.set_id for i in Store(store).list_sets()] == [logical["set_id"]]


def test_a_mariabackup_of_another_major_version_is_refused_naming_both():
    with pytest.raises(ConfigError, match=r"mariabackup 10\.6\.18 cannot back up or prepare MariaDB 10\.11\.19.*"
                                          r"10\.6 != 10\.11"):
        mp.check_tool_matches("10.6.18", "10.11.19-MariaDB-log")
    mp.check_tool_matches("10.11.6", "10.11.19-MariaDB-0+deb12u1-log")


# --------------------------------------------------------------------------- Aria under BACKUP STAGE
def test_aria_and_innodb_tables_written_together_are_restored_at_the_same_point(
        admin, backup_user, service, datadir, shop, store, keyring):
    """A writer appends the same id to an Aria and an InnoDB table during the backup: restored, they differ by <= 1."""
    stop = threading.Event()
    written = [0]

    def writer():
        conn = my.connect(admin)
        try:
            with conn.cursor() as cur:
                cur.execute(f"USE {DB}")
                cur.execute("CREATE TABLE IF NOT EXISTS pair_aria (id INT PRIMARY KEY) ENGINE=Aria")
                cur.execute("CREATE TABLE IF NOT EXISTS pair_inno (id INT PRIMARY KEY) ENGINE=InnoDB")
                conn.commit()
                n = 0
                while not stop.is_set():
                    n += 1
                    cur.execute("INSERT INTO pair_aria VALUES (%s)", (n,))
                    cur.execute("INSERT INTO pair_inno VALUES (%s)", (n,))
                    conn.commit()
                    written[0] = n
        finally:
            conn.close()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    while written[0] < 200:
        time.sleep(0.05)
    try:
        result = physical_backup(store, keyring, backup_user)
    finally:
        stop.set()
        thread.join()
    assert written[0] > 200
    wipe_datadir(service, datadir)
    mp.restore_physical(Store(store), Store(store).open_set(result["set_id"]), keyring, admin, service=service,
                        datadir=str(datadir))
    aria = sql(admin, f"SELECT COUNT(*), MAX(id) FROM {DB}.pair_aria")[0]
    inno = sql(admin, f"SELECT COUNT(*), MAX(id) FROM {DB}.pair_inno")[0]
    assert aria[0] == aria[1] and inno[0] == inno[1]          # no holes
    assert 0 <= aria[0] - inno[0] <= 1, (aria, inno)          # the same moment, at most the pair in flight
    assert aria[0] >= 200
    for row in sql(admin, "CHECK TABLE mysql.user, mysql.db, mysql.proc, mysql.global_priv, "
                          f"{DB}.pair_aria, {DB}.ledger"):
        if row[2] in ("status", "error"):
            assert row[3] == "OK", row


# --------------------------------------------------------------------------- kill -9
CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mb, physical as mp
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.conn import ConnParams
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import get_service
    import lab
    from lab.params import lab_mysql_params
    env = lab.env()
    keyring = keys.KeyRing.from_options(key_file=sys.argv[3])
    if sys.argv[1].startswith("backup"):
        mb.run_backup(sys.argv[2], keyring, lab_mysql_params(env, backup_user=True), method="physical",
                      physical={"incremental": sys.argv[1] == "backup-incremental"})
    else:
        if sys.argv[1] == "restore-killed-after-exchange":   # kill -9 between the exchange and the .lbprev rename
            import os, signal
            exchange = mp.exchange_paths
            def exchange_then_die(a, b):
                exchange(a, b)
                os.kill(os.getpid(), signal.SIGKILL)
            mp.exchange_paths = exchange_then_die
        store = Store(sys.argv[2])
        mp.restore_physical(store, store.open_set(sys.argv[4]), keyring, lab_mysql_params(env),
                            service=get_service("lab", "mysql", repo_dir=sys.argv[5]),
                            datadir=env["LAB_MYSQL_DATADIR"])
""")


def start_child(*args):
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def group_gone(pgid, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_kill_9_during_a_backup_publishes_nothing_and_the_next_run_succeeds(
        admin, backup_user, shop, store, keyring, tmp_path):
    sql(admin, f"INSERT INTO {DB}.orders (amount, pad) SELECT 1, RANDOM_BYTES(1000) FROM seq_1_to_60000", db=DB)
    child = start_child("backup", store, tmp_path / "kek.key")
    partial = Path(store) / ".partial"
    deadline = time.monotonic() + 60
    while not list(partial.glob("*/mysql/.physical.mbstream*.incomplete")):
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert group_gone(child.pid), "mariabackup outlived its killed caller"
    assert Store(store).list_sets() == []
    assert [i.status for i in Store(store).list_sets(include_partial=True)] == ["partial"]
    lsn_dirs = list(Path(tempfile.gettempdir()).glob(f"{mp.LSN_DIR_PREFIX}{child.pid}-*"))
    assert lsn_dirs, "the killed backup left its --extra-lsndir (named by its pid)"
    again = physical_backup(store, keyring, backup_user)
    assert [i.set_id for i in Store(store).list_sets()] == [again["set_id"]]
    assert not [d for d in lsn_dirs if d.exists()], "the next backup removed the dead run's --extra-lsndir"
    assert set_verify.verify_set(str(store), again["set_id"], keyring, mode="quick")["ok"]


def test_kill_9_during_an_incremental_backup_publishes_nothing_and_the_next_incremental_builds_on_the_full(
        admin, backup_user, shop, store, keyring, tmp_path):
    full = physical_backup(store, keyring, backup_user)
    sql(admin, f"INSERT INTO {DB}.orders (amount, pad) SELECT 1, RANDOM_BYTES(1000) FROM seq_1_to_60000", db=DB)
    child = start_child("backup-incremental", store, tmp_path / "kek.key")
    partial = Path(store) / ".partial"
    deadline = time.monotonic() + 120
    while not list(partial.glob("*/mysql/.physical.mbstream*.incomplete")):
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert group_gone(child.pid), "mariabackup outlived its killed caller"
    assert [i.set_id for i in Store(store).list_sets()] == [full["set_id"]]   # nothing looks complete
    again = physical_backup(store, keyring, backup_user, incremental=True)
    assert again["parent"] == full["set_id"] and again["from_lsn"] == full["to_lsn"]
    report = set_verify.verify_set(str(store), again["set_id"], keyring, mode="quick")
    assert report["ok"], report["failed"]
    assert any(c["name"] == "mysql physical chain complete" and c["detail"] == f"{full['set_id']} -> {again['set_id']}"
               for c in report["checks"])


def test_kill_9_during_a_restore_leaves_the_live_datadir_whole_old_or_new(
        admin, backup_user, service, datadir, shop, store, keyring, tmp_path):
    backed_up = physical_backup(store, keyring, backup_user)
    sql(admin, f"INSERT INTO {DB}.ledger VALUES (9001, 'after the backup')")
    before = every_table_checksum(admin)
    after_backup_marker = f"SELECT COUNT(*) FROM {DB}.ledger WHERE id = 9001"

    # 1: killed while extracting/preparing beside the datadir -> the live server never noticed
    child = start_child("restore", store, tmp_path / "kek.key", backed_up["set_id"], REPO)
    deadline = time.monotonic() + 60
    while not list(datadir.parent.glob(f"{datadir.name}.lbrestore_*/base/*")):
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert group_gone(child.pid)
    assert service.is_running() and every_table_checksum(admin) == before
    leftover = list(datadir.parent.glob(f"{datadir.name}.lbrestore_*"))
    assert len(leftover) == 1
    plan = mp.plan_physical_restore(Store(store), Store(store).open_set(backed_up["set_id"]), keyring,
                                    datadir=str(datadir))
    assert plan["leftover_work_folders"] == [str(leftover[0])]  # the plan (check mode) names it, changes nothing
    assert plan["leftover_cleanup"][0]["action"] == "remove" and plan["reclaimable_bytes"] > 0
    assert leftover[0].is_dir()
    # the next run removes the partial extraction first, then restores
    done = mp.restore_physical(Store(store), Store(store).open_set(backed_up["set_id"]), keyring, admin,
                               service=service, datadir=str(datadir))
    assert done["cleaned_leftovers"] == [{"path": str(leftover[0]), "action": "removed"}]
    assert not list(datadir.parent.glob(f"{datadir.name}.lbrestore_*"))
    assert sql(admin, after_backup_marker)[0][0] == 0   # the backup's state
    sql(admin, f"INSERT INTO {DB}.ledger VALUES (9001, 'after the backup')")
    before = every_table_checksum(admin)

    # 2: killed once the server is down (stop, exchange, start) -> the datadir is the old one or the restored one
    pid = service.main_pid()
    child = start_child("restore", store, tmp_path / "kek.key", backed_up["set_id"], REPO)
    deadline = time.monotonic() + 120
    while service.main_pid() == pid:
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert group_gone(child.pid)
    if not service.is_running():
        service.start()
    marker = sql(admin, after_backup_marker)[0][0]
    now = every_table_checksum(admin)
    if marker:   # untouched
        assert now == before
    else:        # the restored datadir, whole
        assert now[f"{DB}.ledger"][0] == before[f"{DB}.ledger"][0] - 1
        for row in sql(admin, f"CHECK TABLE {DB}.orders, {DB}.ledger, {DB}.notes, mysql.user"):
            if row[2] in ("status", "error"):
                assert row[3] == "OK", row
    # whatever it left beside the datadir, the next run cleans up (a replaced datadir is kept, never deleted)
    mp.restore_physical(Store(store), Store(store).open_set(backed_up["set_id"]), keyring, admin, service=service,
                        datadir=str(datadir))
    assert not list(datadir.parent.glob(f"{datadir.name}.lbrestore_*"))
    assert sql(admin, after_backup_marker)[0][0] == 0


def test_kill_9_right_after_the_exchange_the_next_run_keeps_the_replaced_datadir_and_removes_the_rest(
        admin, backup_user, service, datadir, shop, store, keyring, tmp_path):
    """The one window where the work folder holds the OLD datadir (``base/``): it must be kept, not deleted."""
    backed_up = physical_backup(store, keyring, backup_user)
    sql(admin, f"INSERT INTO {DB}.ledger VALUES (9003, 'only in the replaced datadir')")
    old = datadir.stat()
    child = start_child("restore-killed-after-exchange", store, tmp_path / "kek.key", backed_up["set_id"], REPO)
    assert child.wait(timeout=300) == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    assert group_gone(child.pid)
    assert not service.is_running()                       # stopped for the exchange, never started again
    assert datadir.stat().st_ino != old.st_ino            # the path names the restored datadir, whole
    work = list(datadir.parent.glob(f"{datadir.name}.lbrestore_*"))
    assert len(work) == 1 and (work[0] / "base").stat().st_ino == old.st_ino
    plan = mp.plan_physical_restore(Store(store), Store(store).open_set(backed_up["set_id"]), keyring,
                                    datadir=str(datadir))
    assert [x["action"] for x in plan["leftover_cleanup"]] == ["keep base as .lbprev"]

    done = mp.restore_physical(Store(store), Store(store).open_set(backed_up["set_id"]), keyring, admin,
                               service=service, datadir=str(datadir))
    [cleaned] = done["cleaned_leftovers"]
    assert cleaned["path"] == str(work[0]) and cleaned["action"] == "previous datadir kept, rest removed"
    kept = Path(cleaned["kept_datadir"])
    assert kept.name.startswith(f"{datadir.name}.lbprev_") and kept.stat().st_ino == old.st_ino
    assert (kept / DB / "ledger.MAD").is_file()           # the replaced datadir, whole, with its data files
    assert not list(datadir.parent.glob(f"{datadir.name}.lbrestore_*"))
    assert sql(admin, f"SELECT COUNT(*) FROM {DB}.ledger WHERE id = 9003")[0][0] == 0


def test_a_running_restore_locks_its_work_folder_and_a_second_restore_of_the_datadir_is_refused(
        admin, backup_user, datadir, shop, store, keyring):
    physical_backup(store, keyring, backup_user)
    backup_set = Store(store).open_set(Store(store).list_sets()[-1].set_id)
    busy = datadir.with_name(f"{datadir.name}.lbrestore_20260101T000000Z")
    busy.mkdir(mode=0o700)
    fd = mp._work_lock(busy)
    try:
        with pytest.raises(LockHeld, match=f"another physical restore of {datadir} is running"):
            mp.plan_physical_restore(Store(store), backup_set, keyring, datadir=str(datadir))
    finally:
        os.close(fd)
    plan = mp.plan_physical_restore(Store(store), backup_set, keyring, datadir=str(datadir))
    assert plan["leftover_cleanup"] == [{"path": str(busy), "action": "remove", "removed_bytes": 0}]
    assert busy.is_dir()                                  # planning changes nothing


def test_a_damaged_stream_fails_the_restore_before_the_server_is_touched_and_leaves_no_work_folder(
        admin, backup_user, service, datadir, shop, store, keyring):
    backed_up = physical_backup(store, keyring, backup_user)
    artifact = Path(store) / backed_up["set_id"] / "mysql" / mp.STREAM_ARTIFACT
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF                          # one flipped bit in the middle of the stream
    artifact.chmod(0o600)
    artifact.write_bytes(bytes(data))
    live = every_table_checksum(admin)
    pid = service.main_pid()
    beside = set(datadir.parent.iterdir())
    with pytest.raises(LifeboatError, match="(?i)tamper|authentic|corrupt"):
        mp.restore_physical(Store(store), Store(store).open_set(backed_up["set_id"]), keyring, admin,
                            service=service, datadir=str(datadir))
    assert service.main_pid() == pid and every_table_checksum(admin) == live
    assert set(datadir.parent.iterdir()) == beside        # no work folder left, nothing kept aside


# --------------------------------------------------------------------------- the modules
def test_the_modules_back_up_a_chain_and_restore_it_choosing_the_method_from_the_set(
        lab_env, admin, shop, tmp_path, datadir):
    """mysql_backup method physical (check mode, full, incremental); mysql_restore finds the method by itself."""
    import json

    store, key = tmp_path / "store", tmp_path / "kek.key"
    keys.create_key_file(key)
    secrets_file = tmp_path / "vars.json"
    secrets_file.write_text(json.dumps({"pw": lab_env["LAB_MYSQL_BACKUP_PASSWORD"],
                                        "admin_pw": lab_env["LAB_MYSQL_PASSWORD"]}))
    secrets_file.chmod(0o600)
    conn = {"store": str(store), "key_file": str(key), "login_host": lab_env["LAB_MYSQL_HOST"],
            "login_port": int(lab_env["LAB_MYSQL_PORT"])}
    backup = dict(conn, login_user=lab_env["LAB_MYSQL_BACKUP_USER"], login_password="{{ pw }}", method="physical")
    restore = dict(conn, login_user=lab_env["LAB_MYSQL_USER"], login_password="{{ admin_pw }}",
                   service_manager="lab", service_settings={"repo_dir": str(REPO)})
    tasks = [
        {"lifeboat.dr.mysql_backup": backup, "check_mode": True, "register": "plan"},
        {"lifeboat.dr.mysql_backup": backup, "register": "full"},
        {"lifeboat.dr.mysql_backup": dict(backup, incremental=True), "check_mode": True, "register": "incr_plan"},
        {"lifeboat.dr.mysql_backup": dict(backup, incremental=True), "register": "incr"},
        {"lifeboat.dr.mysql_restore": restore, "check_mode": True, "register": "restore_plan"},
        {"lifeboat.dr.mysql_restore": restore, "register": "restored"},
        {"ansible.builtin.copy": {"dest": str(tmp_path / "out.json"), "content": "{{ {'plan': plan, 'full': full, "
                                  "'incr_plan': incr_plan, 'incr': incr, 'restore_plan': restore_plan, "
                                  "'restored': restored} | to_json }}"}},
    ]
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"@{secrets_file}",
                           str(playbook)], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["plan"]["datadir"] == str(datadir) and out["plan"]["datadir_bytes"] > 0
    assert out["plan"]["incremental"] is False
    assert out["full"]["backup_type"] == "full"
    assert out["incr_plan"]["parent"] == out["full"]["set_id"]
    assert out["incr_plan"]["incremental_lsn"] == out["full"]["to_lsn"]
    assert out["incr"]["chain"] == [out["full"]["set_id"]]
    assert out["restore_plan"]["method"] == "physical"
    assert out["restore_plan"]["plan"]["chain"] == [out["full"]["set_id"], out["incr"]["set_id"]]
    assert out["restored"]["health"]["tables"] > 0 and Path(out["restored"]["kept_datadir"]).is_dir()
    assert lab_env["LAB_MYSQL_BACKUP_PASSWORD"] not in proc.stdout + proc.stderr
    history = (store / "jobs" / "history.jsonl").read_text()
    assert str(out["restored"]["kept_datadir"]) in history


# --------------------------------------------------------------------------- catalog and retention
def test_retention_keeps_or_prunes_a_chain_whole_and_the_cli_shows_it(backup_user, shop, store, keyring, capsys):
    from ansible_collections.lifeboat.dr.plugins.module_utils.edge import cli
    from ansible_collections.lifeboat.dr.plugins.module_utils.ops import retention

    full = physical_backup(store, keyring, backup_user)
    first = physical_backup(store, keyring, backup_user, incremental=True)
    second = physical_backup(store, keyring, backup_user, incremental=True)
    policy = retention.RetentionPolicy(rules={"default": retention.GfsRule(keep_last=1)}, min_age_s=0)
    decisions = {d.set_id: d for d in retention.plan(store, policy)["decisions"]}
    assert all(d.keep for d in decisions.values())
    assert f"parent of kept incremental set {second['set_id']}" in decisions[first["set_id"]].reasons
    assert any(r.startswith("parent of kept incremental set") for r in decisions[full["set_id"]].reasons)

    assert cli.main(["list", "--store", str(store)]) == 0
    listing = capsys.readouterr().out
    assert "CHAIN" in listing
    assert f"physical incr 2 <- {first['set_id']}" in listing and "physical full" in listing
    assert cli.main(["show", "--store", str(store), second["set_id"]]) == 0
    shown = capsys.readouterr().out
    assert f"{full['set_id']} -> {first['set_id']} -> {second['set_id']}" in shown

    newer = physical_backup(store, keyring, backup_user)  # a new full: the old chain is no longer needed
    decisions = {d.set_id: d for d in retention.plan(store, policy)["decisions"]}
    assert [s for s, d in decisions.items() if d.keep] == [newer["set_id"]]


def test_a_restored_server_that_fails_the_health_gate_is_rolled_back_to_the_kept_datadir(
        admin, backup_user, service, datadir, shop, store, keyring):
    backed_up = physical_backup(store, keyring, backup_user)
    kept_before = set(datadir.parent.glob(f"{datadir.name}.lbprev_*"))
    sql(admin, f"INSERT INTO {DB}.ledger VALUES (9002, 'after the backup')")
    before = every_table_checksum(admin)
    wrong = admin.replace(password="not-the-password")  # the gate's login fails on the restored server
    with pytest.raises(RestoreFailed, match="failed its health gate.*previous datadir was put back.*lbfailed_"):
        mp.restore_physical(Store(store), Store(store).open_set(backed_up["set_id"]), keyring, wrong,
                            service=service, datadir=str(datadir), start_timeout_s=8)
    assert service.is_running() and every_table_checksum(admin) == before
    failed = list(datadir.parent.glob(f"{datadir.name}.lbfailed_*"))
    assert len(failed) == 1 and (failed[0] / "ibdata1").is_file()
    assert set(datadir.parent.glob(f"{datadir.name}.lbprev_*")) == kept_before
    assert not list(datadir.parent.glob(f"{datadir.name}.lbrestore_*"))   # the work folder went with the run


# --------------------------------------------------------------------------- PITR from a physical base
@pytest.mark.parametrize(("replay_method", "base_kind"), [("client", "full"), ("auto", "full"),
                                                          ("client", "incremental")])
def test_pitr_from_a_physical_base_replays_the_archived_binlogs_to_a_time_after_it(
        admin, backup_user, service, datadir, shop, store, keyring, replay_method, base_kind):
    """The base is a full, or the last incremental of a chain (then its whole chain is restored first)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog, pitr

    st = Store(store)
    sql(admin, f"CREATE TABLE {DB}.ticks (id INT AUTO_INCREMENT PRIMARY KEY, ts INT) ENGINE=InnoDB")
    binlog.archive_binlogs(backup_user, st, keyring, flush=True)
    base = full = physical_backup(store, keyring, backup_user)
    if base_kind == "incremental":
        sql(admin, f"INSERT INTO {DB}.orders (amount) SELECT 5 FROM seq_1_to_250", f"DELETE FROM {DB}.ledger "
            "WHERE id <= 10", db=DB)
        base = physical_backup(store, keyring, backup_user, incremental=True)
    orders = sql(admin, f"SELECT COUNT(*), SUM(amount) FROM {DB}.orders")
    conn = my.connect(admin)
    try:
        deadline = time.time() + 3.5
        while time.time() < deadline:
            my.execute(conn, f"INSERT INTO {DB}.ticks (ts) VALUES (UNIX_TIMESTAMP())")
            time.sleep(0.2)
    finally:
        conn.close()
    written = sql(admin, f"SELECT id, ts FROM {DB}.ticks ORDER BY id")
    seconds = sorted({ts for _id, ts in written})
    target = seconds[len(seconds) // 2]
    sql(admin, f"DELETE FROM {DB}.ticks", f"DROP TABLE {DB}.notes")  # the mistake the recovery undoes
    binlog.archive_binlogs(backup_user, st, keyring, flush=True)

    result = pitr.execute(st, keyring, {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(target))}, admin,
                          restore_kwargs={"service": service, "datadir": str(datadir)}, new_generation=False,
                          replay_method=replay_method)
    assert result["plan"]["base"]["set_id"] == base["set_id"]
    assert result["restore"]["method"] == "physical"
    assert result["restore"]["chain"] == ([full["set_id"]] if base_kind == "full" else [full["set_id"], base["set_id"]])
    assert sql(admin, f"SELECT id, ts FROM {DB}.ticks ORDER BY id") == tuple(r for r in written if r[1] <= target)
    assert sql(admin, f"SELECT note FROM {DB}.notes") == (("first",),)
    assert sql(admin, f"SELECT COUNT(*), SUM(amount) FROM {DB}.orders") == orders


def test_pitr_from_a_physical_base_refuses_selected_databases_before_anything_changes(
        admin, backup_user, service, datadir, shop, store, keyring):
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog, pitr

    st = Store(store)
    binlog.archive_binlogs(backup_user, st, keyring, flush=True)
    physical_backup(store, keyring, backup_user)
    sql(admin, f"INSERT INTO {DB}.notes VALUES (2, 'later')")
    binlog.archive_binlogs(backup_user, st, keyring, flush=True)
    pid = service.main_pid()
    with pytest.raises(ConfigError, match="physical backup: it restores the whole server"):
        pitr.execute(st, keyring, "latest", admin, databases=[DB], restore_kwargs={"service": service},
                     new_generation=False)
    assert service.main_pid() == pid and sql(admin, f"SELECT COUNT(*) FROM {DB}.notes")[0][0] == 2


# --------------------------------------------------------------------------- restore.yml picks the method
def run_playbook(name, *extra, timeout=900):
    """``ansible-playbook -i inventories/lab playbooks/<name>.yml [extra]`` from the repo, as operators run it."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", "inventories/lab",
                           f"playbooks/{name}.yml", *extra], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    return proc


def new_set(lab_store, before):
    new = [i.set_id for i in Store(lab_store).list_sets() if i.set_id not in before]
    assert len(new) == 1, new
    return new[0]


@pytest.mark.slow
def test_restore_yml_restores_a_physical_chain_named_by_its_last_set_and_records_the_branch(
        lab_env, admin, backup_user, shop, datadir):
    """backup.yml -e mysql_method=physical (full, then mysql_incremental=true); restore.yml given the
    incremental restores the chain by files with no method variable: app stopped, health-gated, every
    table equal to the incremental's state, no work folder left, and the binlog archive records that
    the server's history branched at the incremental's position."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog

    lab_store = lab_env["LAB_STORE"]
    lab_keyring = keys.KeyRing.from_options(key_file=lab_env["LAB_KEY_FILE"])

    def archive():
        return binlog.archive_binlogs(backup_user, Store(lab_store), lab_keyring, flush=True)

    archive()                                           # the store archives this server's binlogs
    before = {i.set_id for i in Store(lab_store).list_sets()}
    run_playbook("backup", "-e", "components=mysql", "-e", "mysql_method=physical")
    full = new_set(lab_store, before)
    sql(admin, f"INSERT INTO {DB}.orders (amount) SELECT 3 FROM seq_1_to_400", f"UPDATE {DB}.notes SET note = 'b'",
        db=DB)
    run_playbook("backup", "-e", "components=mysql", "-e", "mysql_method=physical", "-e", "mysql_incremental=true")
    incr = new_set(lab_store, before | {full})
    meta = Store(lab_store).open_set(incr).component_metadata("mysql")
    assert meta["method"] == "physical" and meta["backup_type"] == "incremental" and meta["parent"] == full
    at_incremental = every_table_checksum(admin)
    sql(admin, f"DELETE FROM {DB}.orders WHERE id > 100", f"DROP TABLE {DB}.ledger")  # the damage to undo

    proc = run_playbook("restore", "-e", "components=mysql", "-e", f"backup_id={incr}")
    assert re.search(r"PREFLIGHT passed in [0-9.]+ s: set " + incr, proc.stdout)
    assert every_table_checksum(admin) == at_incremental
    assert not list(datadir.parent.glob(f"{datadir.name}.lbrestore_*"))
    kept = list(datadir.parent.glob(f"{datadir.name}.lbprev_*"))
    assert len(kept) == 1
    assert '"method": "physical"' in proc.stdout and f'"kept_aside": "{kept[0]}"' in proc.stdout  # the summary
    restores = [line for line in (Path(lab_store) / "jobs" / "history.jsonl").read_text().splitlines()
                if '"kind": "restore"' in line and incr in line]
    assert restores and str(kept[0]) in restores[-1]                 # the job record names the kept datadir

    # the branch: a new archive generation from the restored server's current binlog, at the set's position
    identity = meta["server_identity"]
    generation = binlog.load_index(Store(lab_store), identity).generations[-1]
    position = meta["binlog_position"]
    assert generation["branch"]["base"] == incr and generation["branch"]["by"] == "restore"
    assert (generation["branch"]["file"], generation["branch"]["position"]) == (position["file"],
                                                                                position["position"])
    current = sql(admin, "SHOW MASTER STATUS")[0][0]
    assert generation["first_file"] == current
    sql(admin, f"INSERT INTO {DB}.notes VALUES (7, 'after the restore')")
    archive()
    generation = binlog.load_index(Store(lab_store), identity).generations[-1]
    assert current in [entry["file"] for entry in generation["files"]]  # the new history goes to the new line
