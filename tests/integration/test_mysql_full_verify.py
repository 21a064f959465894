"""Full verification of a MySQL backup restores it into a scratch MariaDB, times that restore, and cleans up.

Each test backs up its own ``lbt_<random>`` database from the lab MariaDB (never ``demo``)
and verifies the set with ``set_verify.verify_set(mode="full")``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
from mysql_helpers import sql

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mb
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import dumpformat
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import scratch as mysql_scratch
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import set_verify
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import RestoreFailed

SMALL_SQL = [
    "CREATE TABLE people (id INT PRIMARY KEY, name VARCHAR(40), photo BLOB, born DATE)",
    "INSERT INTO people VALUES (1, 'alice', 0x00FF0A, '1990-01-02'), (2, 'bob', NULL, NULL),"
    " (3, 'Zoë', '', '2000-02-29')",
    "CREATE TABLE counters (k VARCHAR(10) PRIMARY KEY, n INT NOT NULL)",
    "INSERT INTO counters VALUES ('visits', 4242), ('likes', 7)",
    "CREATE TABLE log_lines (msg VARCHAR(50), at DATETIME)",
    "INSERT INTO log_lines VALUES ('dup', '2024-01-01'), ('dup', '2024-01-01'), (NULL, NULL)",
    "CREATE VIEW named AS SELECT id, name FROM people WHERE name IS NOT NULL",
    "CREATE TRIGGER people_ai AFTER INSERT ON people FOR EACH ROW INSERT INTO log_lines VALUES (NEW.name, NOW())",
    "CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
]


@pytest.fixture
def small_db(admin):
    db = f"lbt_{secrets.token_hex(4)}"
    sql(admin, f"CREATE DATABASE {db} DEFAULT CHARSET utf8mb4")
    sql(admin, *SMALL_SQL, db=db)
    yield db
    sql(admin, f"DROP DATABASE IF EXISTS {db}")


@pytest.fixture
def work_dir():
    """A short folder for the scratch server (its socket path must stay short); must end up empty."""
    path = Path(tempfile.mkdtemp(prefix="lbt-verify-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def processes_mentioning(text):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(pid), cmdline))
    return found


def assert_no_scratch_left(work_dir):
    assert list(work_dir.iterdir()) == [], "the scratch MariaDB folder was not removed"
    assert processes_mentioning(str(work_dir)) == [], "a scratch mariadbd is still running"


def back_up(admin, db, store, keyring, method):
    return mb.run_backup(str(store), keyring, admin, databases=[db], parallel=2, include_users=False,
                         method=method)["set_id"]


class Rewriting:
    """A writer proxy replacing ``old`` with ``new`` in what is written (a dump gone wrong before encryption)."""

    def __init__(self, inner, old, new):
        self.inner, self.old, self.new = inner, old, new

    def write(self, data):
        self.inner.write(bytes(data).replace(self.old, self.new))
        return len(data)


def test_full_verify_restores_a_mixed_set_into_a_scratch_server_and_times_it(admin, small_db, tmp_path, keyring,
                                                                             work_dir, monkeypatch):
    real_choose = mb.choose_methods

    def people_as_tsv(tables, method, parallel):  # one snapshot, both dump methods
        real_choose(tables, "native", parallel)
        for spec in tables:
            spec.method = "tsv" if spec.table == "people" else spec.method

    monkeypatch.setattr(mb, "choose_methods", people_as_tsv)
    set_id = back_up(admin, small_db, tmp_path / "store", keyring, "auto")
    meta = Store(tmp_path / "store").open_set(set_id).read_json("mysql", "mysql_backup_metadata.json")

    report = set_verify.verify_set(str(tmp_path / "store"), set_id, keyring, mode="full",
                                   options={"work_dir": str(work_dir)})

    assert report["ok"], report["failed"]
    table_checks = [c for c in report["checks"] if c["name"].startswith(f"mysql {small_db}.")]
    assert len(table_checks) == 3 and all("restored with the recorded rows and checksum" in c["name"]
                                          for c in table_checks)
    how = {c["name"].split()[1].split(".")[1]: c["detail"].split(", ")[-1] for c in table_checks}
    assert how == {"people": "from the load stream", "counters": "read back", "log_lines": "read back"}
    objects = next(c for c in report["checks"] if "views, routines, triggers and events" in c["name"])
    assert objects["ok"] and "'view': 1" in objects["detail"] and "'trigger': 1" in objects["detail"]
    assert report["restore_methods"]["mysql"] == "scratch-restore"
    assert 0 < report["restore_durations_s"]["mysql"] < report["duration_s"]
    assert {t["table"]: t["method"] for t in meta["tables"]} == {"people": "tsv", "counters": "native",
                                                                 "log_lines": "native"}
    record = Store(tmp_path / "store").verifications(set_id)[-1]
    assert record["ok"] and record["restore_durations_s"]["mysql"] == report["restore_durations_s"]["mysql"]
    assert_no_scratch_left(work_dir)
    # the live database was never touched by the verification
    assert sql(admin, "SELECT COUNT(*) FROM people", db=small_db)[0] == [(3,)]


def test_the_dump_only_recomputation_accepts_tsv_tables(admin, small_db, tmp_path, keyring):
    set_id = back_up(admin, small_db, tmp_path / "store", keyring, "tsv")
    checks = set_verify.verify_mysql_dump(Store(tmp_path / "store").open_set(set_id), keyring)
    assert len(checks) == 3 and all(c["ok"] for c in checks), checks


def test_a_tampered_native_table_artifact_fails_the_full_verify_naming_it(admin, small_db, tmp_path, keyring,
                                                                          work_dir, monkeypatch):
    real = mb.dump_table

    def tampering_dump(conn, spec, out, meter=None):
        if spec.table == "people":
            out = Rewriting(out, b"'alice'", b"'alicX'")
        return real(conn, spec, out, meter)

    monkeypatch.setattr(mb, "dump_table", tampering_dump)
    set_id = back_up(admin, small_db, tmp_path / "store", keyring, "native")
    assert Store(tmp_path / "store").open_set(set_id).quick_verify(keyring)["ok"]  # authenticated, yet wrong

    report = set_verify.verify_set(str(tmp_path / "store"), set_id, keyring, mode="full",
                                   options={"work_dir": str(work_dir)})

    assert not report["ok"]
    assert len(report["failed"]) == 1
    failure = report["failed"][0]
    assert failure.startswith(f"mysql/{dumpformat.data_artifact_name(small_db, 'people')}: ")
    assert f"{small_db}.people" in failure and "checksum different" in failure
    assert_no_scratch_left(work_dir)


def test_a_tsv_artifact_that_does_not_load_cleanly_fails_the_full_verify(admin, small_db, tmp_path, keyring,
                                                                         work_dir, monkeypatch):
    """The tsv checksum is the stream's own sha256, so only a real load can catch a stream that does not load."""
    real = mb.TsvSession.dump

    def tampering_dump(self, spec, out, meter=None):
        if spec.table == "counters":
            out = Rewriting(out, b"\t4242\n", b"\tx4242\n")
        return real(self, spec, out, meter)

    monkeypatch.setattr(mb.TsvSession, "dump", tampering_dump)
    set_id = back_up(admin, small_db, tmp_path / "store", keyring, "tsv")
    bset = Store(tmp_path / "store").open_set(set_id)
    assert all(c["ok"] for c in set_verify.verify_mysql_dump(bset, keyring))  # the dump alone looks fine

    report = set_verify.verify_set(str(tmp_path / "store"), set_id, keyring, mode="full",
                                   options={"work_dir": str(work_dir)})

    assert not report["ok"]
    failure = report["failed"][0]
    assert failure.startswith(f"mysql/{dumpformat.tsv_artifact_name(small_db, 'counters')}: ")
    assert "warning" in failure
    assert_no_scratch_left(work_dir)


class BrokenScratch(mysql_scratch.ScratchMariaDB):
    """A scratch server whose option file mariadbd rejects at start-up."""

    def config_text(self):
        return super().config_text() + "no_such_lifeboat_option = 1\n"


def test_a_scratch_server_that_does_not_start_is_reported_and_leaves_nothing(work_dir):
    scratch = BrokenScratch(base_dir=str(work_dir))
    with pytest.raises(RestoreFailed, match="scratch mariadbd exited") as failure:
        with scratch:
            pass
    assert "no_such_lifeboat_option" in str(failure.value)  # the log tail says why
    assert not scratch.root.exists()
    assert_no_scratch_left(work_dir)
