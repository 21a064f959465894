"""Specification of oplog: every recorded operation leaves one job record and one audit record,
never fails because of them, writes nothing in check mode, and describes restores the way
retention reads them."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.ops import retention
from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit, jobs, oplog
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import utc_now
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import RestoreFailed


def failing(err):
    """An action that raises ``err``."""
    def action(handle):
        raise err
    return action


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    return root


def test_a_successful_operation_leaves_one_job_record_and_one_chained_audit_record(store, monkeypatch):
    monkeypatch.setenv("AWX_JOB_ID", "4242")

    def action(handle):
        handle.update(backup_id="redis_20250101T000000Z_abcdef")
        return {"changed": True, "set_id": "redis_20250101T000000Z_abcdef", "stored_bytes": 123}

    result = oplog.run_recorded(store, "backup", action, describe=oplog.backup_fields, components=["redis"])

    assert result["stored_bytes"] == 123
    (record,) = jobs.read_jobs(store)
    assert (record["kind"], record["result"], record["error"]) == ("backup", "ok", None)
    assert record["backup_id"] == "redis_20250101T000000Z_abcdef"
    assert record["components"] == ["redis"] and record["sizes"] == {"stored_bytes": 123}
    assert record["awx_job_id"] == "4242" and record["host"] and record["duration_s"] >= 0
    (entry,) = audit.read_records(store)
    assert (entry["action"], entry["target"], entry["result"]) == ("backup", "redis_20250101T000000Z_abcdef", "ok")
    assert entry["actor"]["awx_job_id"] == "4242" and entry["details"]["job_id"] == record["id"]
    assert audit.verify(store)["ok"]


def test_a_failed_operation_is_recorded_as_failed_and_its_error_propagates(store):
    def action(handle):
        handle.update(backup_id="app_20250101T000000Z_abcdef")
        raise RestoreFailed("target busy", hint="stop the app")

    with pytest.raises(RestoreFailed, match="target busy"):
        oplog.run_recorded(store, "restore", action, components=["app"])

    (record,) = jobs.read_jobs(store)
    assert record["result"] == "failed" and record["error"].startswith("RestoreFailed: target busy")
    assert record["backup_id"] == "app_20250101T000000Z_abcdef"
    assert audit.read_records(store)[-1]["result"] == "failed"
    assert audit.verify(store)["ok"]


def test_check_mode_writes_nothing(store):
    result = oplog.run_recorded(store, "restore", lambda handle: {"changed": True}, check_mode=True)
    assert result == {"changed": True}
    assert list(store.iterdir()) == []


def test_a_missing_store_is_not_created_by_the_record(tmp_path):
    missing = tmp_path / "typo"
    with pytest.raises(RestoreFailed):
        oplog.run_recorded(missing, "restore", failing(RestoreFailed("no such set")))
    assert not missing.exists()


def test_an_unwritable_history_never_fails_the_operation(store, caplog):
    (store / "jobs").write_text("a file where the jobs folder should be")
    (store / "audit").write_text("and one where the audit folder should be")
    with caplog.at_level(logging.WARNING, logger="lifeboat"):
        result = oplog.run_recorded(store, "verify", lambda handle: {"ok": True}, mode="quick")
    assert result == {"ok": True}
    assert "could not append the verify job record" in caplog.text


def test_record_success_false_records_only_failures(store):
    oplog.run_recorded(store, "prune", lambda handle: {"changed": False}, record_success=False)
    assert jobs.read_jobs(store) == []
    with pytest.raises(OSError):
        oplog.run_recorded(store, "prune", failing(OSError("disk gone")), record_success=False)
    assert [j["result"] for j in jobs.read_jobs(store, kind="prune")] == ["failed"]


def test_publish_and_abort_of_one_set_share_one_job_id():
    started = utc_now()
    first = oplog.set_job_id("full_20250101T000000Z_abcdef", started)
    assert first == oplog.set_job_id("full_20250101T000000Z_abcdef", started)
    assert first != oplog.set_job_id("full_20250101T000000Z_fedcba", started)
    assert re.fullmatch(r"job_\d{8}T\d{6}Z_[0-9a-f]{8}", first)


def test_restore_fields_name_what_retention_may_prune_after_a_verified_restore(store, tmp_path):
    kept = tmp_path / "app.lbprev-20250101T000000Z"
    files_result = {"set_id": "app_x", "folders": {"uploads": {"previous_kept_at": str(kept), "bytes_restored": 5}}}
    vault_result = {"set_id": "vault_y", "kept_aside_set_id": "vault_20250101T000000Z_keptaa", "token_valid": True,
                    "health": {"sealed": False}}
    for fields in (oplog.files_restore_fields(files_result), oplog.vault_restore_fields(vault_result)):
        oplog.record_operation(store, "restore", start=utc_now() - timedelta(seconds=1), result="ok", **fields)

    assert retention._restore_verified_targets(Store(store)) == {str(kept), "vault_20250101T000000Z_keptaa"}


def test_a_vault_restore_is_verified_only_when_unsealed_with_a_working_token_and_check_path():
    ok = {"token_valid": True, "health": {"sealed": False}, "check_path_ok": True}
    assert oplog.vault_restore_fields(ok, "secret/canary")["verified"] is True
    assert oplog.vault_restore_fields({**ok, "token_valid": False})["verified"] is False
    assert oplog.vault_restore_fields({**ok, "check_path_ok": False}, "secret/canary")["verified"] is False
    assert oplog.vault_restore_fields({**ok, "health": {"sealed": True}})["verified"] is False


def test_mysql_restore_fields_list_the_kept_aside_schemas():
    fields = oplog.mysql_restore_fields({"set_id": "mysql_x", "kept_aside": {"shop__lbprev_20250101T000000Z": ["t"]},
                                         "verified": {"shop.t": {"rows": 3}}})
    assert fields["verified"] is True and fields["kept_aside"] == ["shop__lbprev_20250101T000000Z"]
    assert fields["tables_restored"] == 1
