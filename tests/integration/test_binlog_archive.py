"""Binlog archiving from the lab MariaDB over the replication protocol.

Each test archives into its own fresh store. The gap test runs PURGE BINARY LOGS on the
lab server (it removes binlogs older than the newest closed file; the lab's data is
untouched).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog, pitr
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import RecoveryTargetInvalid
from lab.params import lab_mysql_params


@pytest.fixture
def env(lab_env, tmp_path):
    key_file = tmp_path / "kek"
    keys.create_key_file(key_file)
    admin = lab_mysql_params(lab_env)
    conn = mysql.connect(admin)
    db = f"lbarch_{secrets.token_hex(3)}"
    mysql.execute(conn, f"CREATE DATABASE {db}")
    mysql.execute(conn, f"CREATE TABLE {db}.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40))")
    yield {"admin": admin, "backup": lab_mysql_params(lab_env, backup_user=True), "conn": conn,
           "db": db, "store": Store(tmp_path / "store"),
           "keyring": keys.KeyRing(keys.FileKEK.load(key_file)), "datadir": lab_env["LAB_MYSQL_DATADIR"],
           "tmp": tmp_path}
    mysql.execute(conn, f"DROP DATABASE IF EXISTS {db}")
    conn.close()


def _decode(path_or_bytes) -> bytes:
    """mariadb-binlog's decoding of a binlog (from stdin), without the tool's header lines."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else open(path_or_bytes, "rb").read()
    out = subprocess.run(["mariadb-binlog", "-"], input=data, capture_output=True, check=True).stdout
    return b"\n".join(line for line in out.splitlines() if not line.startswith(b"# at 4") and b"DELIMITER" not in line)


def test_archive_is_byte_identical_and_idempotent(env):
    first = binlog.archive_binlogs(env["backup"], env["store"], env["keyring"], flush=True)
    assert first["archived"] and not first["gaps"]
    again = binlog.archive_binlogs(env["backup"], env["store"], env["keyring"])
    # other lab users may close new files meanwhile; what was archived is never shipped again
    first_files = {e["file"] for e in first["archived"]}
    assert not first_files & {e["file"] for e in again["archived"]}
    assert first_files <= set(again["skipped"])
    assert again["changed"] is bool(again["archived"])
    newest = first["archived"][-1]
    archived = binlog.open_archived(env["store"], env["keyring"], newest).read()
    on_disk = open(f"{env['datadir']}/{newest['file']}", "rb").read()
    assert archived == on_disk
    assert _decode(archived) == _decode(on_disk)
    index = binlog.load_index(env["store"], first["identity"])
    entry = index.current["files"][-1]
    assert {"file", "size", "first_time", "last_time", "first_gtid", "last_gtid", "start_pos", "end_pos"} <= set(entry)


def test_flush_puts_the_newest_events_into_the_archive(env):
    binlog.archive_binlogs(env["backup"], env["store"], env["keyring"], flush=True)
    marker = f"marker-{secrets.token_hex(4)}"
    mysql.execute(env["conn"], f"INSERT INTO {env['db']}.t (v) VALUES (%s)", (marker,))
    without = binlog.archive_binlogs(env["backup"], env["store"], env["keyring"], flush=False)
    # the insert is still in the active file (unless another lab user rotated it meanwhile)
    rotated = pitr.find(env["store"], env["keyring"], marker, identity=without["identity"])
    result = binlog.archive_binlogs(env["backup"], env["store"], env["keyring"], flush=True)
    assert result["archived"] or rotated
    found = pitr.find(env["store"], env["keyring"], marker, identity=result["identity"])
    assert len(found) == 1
    if not rotated:
        assert found[0]["file"] == result["archived"][-1]["file"]


def test_purged_binlog_is_reported_as_gap_and_plans_across_it_are_refused(env):
    store, keyring, backup = env["store"], env["keyring"], env["backup"]
    binlog.archive_binlogs(backup, store, keyring, flush=True)
    mysql.execute(env["conn"], f"INSERT INTO {env['db']}.t (v) VALUES ('lost')")
    mysql.execute(env["conn"], "FLUSH BINARY LOGS")  # closes the file holding 'lost'
    mysql.execute(env["conn"], "FLUSH BINARY LOGS")
    names = [r[0] for r in mysql.query_all(env["conn"], "SHOW BINARY LOGS")]
    lost_file, newest_closed = names[-3], names[-2]
    for _attempt in range(40):  # the server keeps a file until its binlog checkpoint has passed it
        mysql.execute(env["conn"], "PURGE BINARY LOGS TO %s", (newest_closed,))
        if lost_file not in [r[0] for r in mysql.query_all(env["conn"], "SHOW BINARY LOGS")]:
            break
        time.sleep(0.25)
    result = binlog.archive_binlogs(backup, store, keyring)
    assert len(result["gaps"]) == 1 and result["changed"]
    gap = result["gaps"][0]
    index = binlog.load_index(store, result["identity"])
    assert index.current["gaps"] == [gap]
    assert binlog.binlog_sequence(gap["missing_to"]) < binlog.binlog_sequence(gap["resumes_at"])
    # a "base" whose position lies before the gap cannot be rolled forward across it
    before_gap = index.current["files"][0]
    base = pitr.Base("mysql_20000101T000000Z_000000", None, before_gap["file"], 4, "", result["identity"])
    window = pitr.base_window(index, base)
    assert window["gap_after"]["missing_from"] == gap["missing_from"]
    with pytest.raises(RecoveryTargetInvalid):
        pitr.resolve_stop(store, keyring, index.current, pitr.run_of(index, before_gap["file"])[1], base,
                          {"time": "2999-01-01T00:00:00Z"})


def test_salvage_ships_the_active_file_up_to_its_last_complete_event(env, tmp_path):
    store, keyring = env["store"], env["keyring"]
    result = binlog.archive_binlogs(env["backup"], store, keyring, flush=True)
    mysql.execute(env["conn"], f"INSERT INTO {env['db']}.t (v) VALUES ('in-the-active-file')")
    # a copy of the binlog folder stands in for the dead server's disk; cut the last event short
    copy = tmp_path / "binlogs"
    copy.mkdir()
    names = [r[0] for r in mysql.query_all(env["conn"], "SHOW BINARY LOGS")]
    for name in names:
        shutil.copy(f"{env['datadir']}/{name}", copy / name)
    (copy / "mysql-bin.index").write_text("".join(f"./{n}\n" for n in names))
    with open(copy / names[-1], "ab") as fh:
        fh.write(b"\x00" * 7)  # a torn, incomplete event header
    salvaged = binlog.salvage_from_files(copy, store, keyring, identity=result["identity"])
    assert [e["file"] for e in salvaged["archived"]] == [names[-1]]
    entry = salvaged["archived"][0]
    assert entry["partial"] and entry["salvaged"]
    assert entry["size"] == (copy / names[-1]).stat().st_size - 7
    found = pitr.find(store, keyring, "in-the-active-file", identity=result["identity"])
    assert len(found) == 1
