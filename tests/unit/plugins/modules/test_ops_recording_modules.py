"""Specification: the backup, verify and restore modules, run as Ansible runs them, leave job
records and audit records in the store (none in check mode); the audit chain still verifies;
a full verification measures restore times that the health report turns into an RTO.

Uses the app-files component only (no servers needed)."""

from __future__ import annotations

import pytest
from module_runner import run_module as run_lifeboat_module

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import health, retention
from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit, jobs
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store


def run_module(tmp_path, name, **args):
    """Run module ``name`` with ``args`` as Ansible does; return its JSON result."""
    return run_lifeboat_module(tmp_path, name, args)


@pytest.fixture
def env(tmp_path):
    """A store, a key file and an app folder with a few files."""
    key_file = tmp_path / "kek"
    keys.create_key_file(key_file)
    app = tmp_path / "srv" / "uploads"
    app.mkdir(parents=True)
    for n in range(3):
        (app / f"f{n}.txt").write_text(f"file {n}\n" * 50)
    store = tmp_path / "store"
    return {"tmp": tmp_path, "store": str(store), "key_file": str(key_file), "app": app}


def backup_into_new_set(env, **publish_args):
    """open -> files_backup into the set -> publish; returns the publish result."""
    base = {"store": env["store"], "key_file": env["key_file"]}
    opened = run_module(env["tmp"], "backup_set", action="open", components=["app"], **base)
    assert not opened.get("failed"), opened
    written = run_module(env["tmp"], "files_backup", paths={"uploads": str(env["app"])}, set_id=opened["set_id"],
                         **base)
    assert not written.get("failed"), written
    return run_module(env["tmp"], "backup_set", action="publish", set_id=opened["set_id"], **base, **publish_args)


def test_publish_verify_and_restore_each_leave_a_job_and_an_audit_record(env):
    base = {"store": env["store"], "key_file": env["key_file"]}
    published = backup_into_new_set(env)
    set_id = published["set_id"]
    quick = run_module(env["tmp"], "backup_verify", mode="quick", components=["app"], backup_id=set_id, **base)
    restored = run_module(env["tmp"], "files_restore", set_id=set_id, **base)
    assert not published.get("failed") and not quick.get("failed") and not restored.get("failed"), restored

    records = jobs.read_jobs(env["store"])
    assert [(j["kind"], j["result"], j["backup_id"]) for j in records] == [
        ("backup", "ok", set_id), ("verify", "ok", set_id), ("restore", "ok", set_id)]
    backup, verify, restore = records
    assert backup["components"] == ["app"] and backup["sizes"]["stored_bytes"] == published["stored_bytes"] > 0
    assert backup["duration_s"] >= 0 and backup["host"]
    assert verify["details"]["mode"] == "quick" and verify["details"]["verification_ok"] is True
    kept = restored["folders"]["uploads"]["previous_kept_at"]
    assert restore["details"]["verified"] is True and restore["details"]["kept_aside"] == [kept]
    assert kept in retention._restore_verified_targets(Store(env["store"]))

    trail = audit.read_records(env["store"])
    assert [(r["action"], r["target"], r["result"]) for r in trail] == [
        ("backup", set_id, "ok"), ("verify", set_id, "ok"), ("restore", set_id, "ok")]
    assert [r["details"]["job_id"] for r in trail] == [j["id"] for j in records]
    assert audit.verify(env["store"])["ok"]

    listed = run_module(env["tmp"], "job_history", store=env["store"], kind="restore")
    assert [j["id"] for j in listed["jobs"]] == [restore["id"]] and listed["count"] == 1


def test_full_verification_measures_the_restore_time_the_health_report_adds_up(env):
    base = {"store": env["store"], "key_file": env["key_file"]}
    set_id = backup_into_new_set(env)["set_id"]
    full = run_module(env["tmp"], "backup_verify", mode="full", components=["app"], backup_id=set_id, **base)

    assert not full.get("failed"), full
    assert set(full["restore_durations_s"]) == {"app"} and full["restore_durations_s"]["app"] >= 0
    (record,) = Store(env["store"]).verifications(set_id)[-1:]
    assert record["mode"] == "full" and record["restore_durations_s"] == full["restore_durations_s"]
    assert jobs.read_jobs(env["store"], kind="verify")[-1]["details"]["restore_durations_s"] == \
        full["restore_durations_s"]

    report = health.build_report(env["store"], components=["app"])
    (view,) = report["components"]
    assert view["measured_rto_s"] == full["restore_durations_s"]["app"]
    assert report["disaster_now"]["rto"] == "measured"
    assert report["disaster_now"]["rto_s"] == full["restore_durations_s"]["app"]


def test_an_aborted_set_replaces_its_record_with_one_failed_record(env):
    base = {"store": env["store"], "key_file": env["key_file"]}
    opened = run_module(env["tmp"], "backup_set", action="open", components=["app"], **base)
    refused = run_module(env["tmp"], "backup_set", action="publish", set_id=opened["set_id"], **base)
    assert refused.get("failed") and "wrote nothing" in refused["msg"]
    aborted = run_module(env["tmp"], "backup_set", action="abort", set_id=opened["set_id"], reason="app task failed",
                         **base)
    assert aborted["aborted"] is True

    (record,) = jobs.read_jobs(env["store"])
    assert (record["kind"], record["result"], record["backup_id"]) == ("backup", "failed", opened["set_id"])
    assert record["error"] == "aborted: app task failed" and record["components"] == ["app"]
    assert [r["result"] for r in audit.read_records(env["store"])] == ["failed", "failed"]
    assert audit.verify(env["store"])["ok"]


def test_check_mode_leaves_no_job_or_audit_record(env):
    base = {"store": env["store"], "key_file": env["key_file"], "_ansible_check_mode": True}
    set_id = backup_into_new_set(env)["set_id"]
    before = (jobs.read_jobs(env["store"]), audit.read_records(env["store"]))
    for name, args in (("backup_verify", {"mode": "quick", "components": ["app"], "backup_id": set_id}),
                       ("files_restore", {"set_id": set_id})):
        result = run_module(env["tmp"], name, **base, **args)
        assert not result.get("failed"), result
    assert (jobs.read_jobs(env["store"]), audit.read_records(env["store"])) == before
