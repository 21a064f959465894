"""The lifeboat CLI on a real small store built with backupset (list, show, verify, jobs, health,
schedules, audit, prune, decrypt) and through the console shim."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from ops_helpers import keyring, small_set

from ansible_collections.lifeboat.dr.plugins.module_utils.edge import cli
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import schedule
from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit, jobs
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import utc_now

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store", reserve_bytes=0)
    ring = keyring(tmp_path)
    ids = [small_set(store, ring, components=("mysql", "redis")), small_set(store, ring, "app", ("app",), 5000)]
    for set_id in ids:
        jobs.record_job(store, "backup", start=utc_now(), backup_id=set_id)
    return store


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_json_matches_the_catalog(store, capsys):
    code, out, _err = run(capsys, "list", "--store", str(store.root), "--json")
    assert code == 0
    listed = json.loads(out)
    assert [s["set_id"] for s in listed] == [i.set_id for i in store.list_sets()]
    assert listed[0]["components"] == ["mysql", "redis"] and listed[0]["status"] == "verified"
    assert listed[1]["type"] == "app" and listed[1]["plaintext_bytes"] == 5000


def test_list_table_and_store_from_the_environment(store, capsys, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_STORE", str(store.root))
    code, out, _err = run(capsys, "list")
    assert code == 0
    header = out.splitlines()[0].split()
    assert header == ["SET", "TYPE", "COMPONENTS", "STATUS", "VERIFIED", "SIZE", "AGE"]
    assert "mysql,redis" in out and "2 set(s)" in out


def test_missing_store_is_a_clear_error(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("LIFEBOAT_STORE", raising=False)
    code, _out, err = run(capsys, "list")
    assert code == 1 and "LIFEBOAT_STORE" in err
    code, _out, err = run(capsys, "list", "--store", str(tmp_path / "nope"))
    assert code == 1 and "does not exist" in err


def test_show_summarises_the_manifest_without_key_material(store, capsys):
    set_id = store.list_sets()[0].set_id
    code, out, _err = run(capsys, "show", set_id, "--store", str(store.root), "--json")
    summary = json.loads(out)
    assert code == 0 and summary["id"] == set_id and len(summary["artifacts"]) == 2
    assert "wrapped" not in out
    code, out, _err = run(capsys, "show", "full_20000101T000000Z_000000", "--store", str(store.root))
    assert code == 5


def test_verify_quick_records_a_verification_a_job_and_an_audit_record(store, capsys, tmp_path, monkeypatch):
    set_id = store.list_sets()[0].set_id
    monkeypatch.setenv("LIFEBOAT_KEY_FILE", str(tmp_path / "primary.key"))
    code, out, _err = run(capsys, "verify", set_id, "--quick", "--store", str(store.root))
    assert code == 0 and "quick verification passed" in out
    assert store.verifications(set_id)[-1]["trigger"] == "cli"
    assert jobs.read_jobs(store, kind="verify")[-1]["result"] == "ok"
    assert audit.read_records(store)[-1]["action"] == "verify"
    artifact = store.root / set_id / "redis" / "data.bin"
    data = bytearray(artifact.read_bytes())
    data[-40] ^= 1
    artifact.write_bytes(bytes(data))
    code, out, _err = run(capsys, "verify", set_id, "--quick", "--store", str(store.root))
    assert code == 4 and "FAILED redis/data.bin" in out


def test_verify_without_a_key_says_how_to_give_one(store, capsys, monkeypatch):
    monkeypatch.delenv("LIFEBOAT_KEY_FILE", raising=False)
    code, _out, err = run(capsys, "verify", store.list_sets()[0].set_id, "--quick", "--store", str(store.root))
    assert code == 1 and "--key-file" in err


def test_jobs_limit(store, capsys):
    code, out, _err = run(capsys, "jobs", "--limit", "1", "--store", str(store.root), "--json")
    assert code == 0 and len(json.loads(out)) == 1


def test_health_exit_codes(store, capsys, tmp_path):
    html, prom = tmp_path / "h.html", tmp_path / "m.prom"
    code, out, _err = run(capsys, "health", "--store", str(store.root), "--html", str(html), "--metrics", str(prom))
    assert code == 0 and out.startswith("status: OK")
    assert html.read_text().startswith("<!DOCTYPE html>") and "lifeboat_health_status 0" in prom.read_text()
    jobs.record_job(store, "backup", start=utc_now(), result="failed", error="BackupFailed: x")
    assert run(capsys, "health", "--store", str(store.root))[0] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(capsys, "health", "--store", str(empty))[0] == 2


def test_schedules_lists_installed_entries(tmp_path, capsys):
    cron = tmp_path / "lifeboat"
    schedule.apply([schedule.Entry("backup-full", "0 2 * * *", "run-backup")], cron_file=cron)
    code, out, _err = run(capsys, "schedules", "--cron-file", str(cron), "--systemd-dir", str(tmp_path), "--json")
    (entry,) = json.loads(out)
    assert code == 0 and entry["name"] == "backup-full" and entry["next_run"].endswith("T02:00:00Z")


def test_audit_verify_exit_status(store, capsys):
    audit.append(store, "backup", "x", "ok")
    assert run(capsys, "audit", "verify", "--store", str(store.root))[0] == 0
    path = audit.audit_path(store)
    path.write_text(path.read_text().replace('"ok"', '"failed"'))
    code, out, _err = run(capsys, "audit", "verify", "--store", str(store.root))
    assert code == 4 and "line 1" in out and "TAMPERED" in out


def test_prune_dry_run_changes_nothing(store, capsys):
    code, out, _err = run(capsys, "prune", "--dry-run", "--store", str(store.root))
    assert code == 0 and "0 set(s) would delete" in out
    assert len(store.list_sets()) == 2


def test_decrypt_delegates_to_the_break_glass_reader(store, tmp_path, capsys):
    set_id = store.list_sets()[1].set_id
    out_file = tmp_path / "plain.bin"
    code = cli.main(["decrypt", "--key-file", str(tmp_path / "primary.key"), "-o", str(out_file),
                     str(store.root / set_id / "app" / "data.bin")])
    assert code == 0 and out_file.read_bytes() == b"x" * 5000


def test_console_shim_runs_the_cli(store):
    shim = REPO / ".venv" / "bin" / "lifeboat"
    if not shim.exists():
        pytest.skip("console shim not installed (scripts/setup.sh)")
    done = subprocess.run([str(shim), "list", "--json"], capture_output=True, text=True, check=False,
                          env={**os.environ, "LIFEBOAT_STORE": str(store.root)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 2
