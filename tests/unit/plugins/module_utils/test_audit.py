"""Audit trail: hash chain, actor, redaction, and detection of edited, removed and reordered records."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    for n in range(1, 6):
        audit.append(root, "backup", f"full_{n}", "ok", stored_bytes=n * 100)
    return root


def lines(store: Path) -> list[str]:
    return audit.audit_path(store).read_text().splitlines()


def write_lines(store: Path, text: list[str]) -> None:
    audit.audit_path(store).write_text("\n".join(text) + "\n")


def test_records_are_chained_and_carry_actor_and_awx_job(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AWX_JOB_ID", "4242")
    rec = audit.append(tmp_path, "prune", "/srv/store", "changed", deleted_sets=["a"])
    again = audit.append(tmp_path, "schedule", "cron", "unchanged")
    assert rec["seq"] == 1 and rec["prev_hash"] == audit.GENESIS_HASH
    assert again["prev_hash"] == rec["hash"] and again["seq"] == 2
    assert rec["actor"]["awx_job_id"] == "4242" and rec["actor"]["host"] and rec["actor"]["user"]
    assert rec["hash"] == audit.record_hash(rec)
    assert audit.verify(tmp_path) == {"ok": True, "records": 2, "problems": [], "path": str(audit.audit_path(tmp_path))}
    assert oct(audit.audit_path(tmp_path).stat().st_mode & 0o777) == "0o600"


def test_secret_looking_details_are_redacted(tmp_path: Path):
    rec = audit.append(tmp_path, "restore", "redis", "ok", redis_password="hunter2", nested={"vault_token": "s.x"},
                       key_id="abcd")
    text = audit.audit_path(tmp_path).read_text()
    assert "hunter2" not in text and "s.x" not in text
    assert rec["details"] == {"redis_password": "[redacted]", "nested": {"vault_token": "[redacted]"},
                              "key_id": "abcd"}


def test_an_intact_log_verifies(store: Path):
    assert audit.verify(store)["ok"] and audit.verify(store)["records"] == 5


def test_an_edited_record_is_named_by_line(store: Path):
    text = lines(store)
    rec = json.loads(text[2])
    rec["result"] = "failed"
    text[2] = json.dumps(rec)
    write_lines(store, text)
    report = audit.verify(store)
    assert not report["ok"]
    assert report["problems"][0]["line"] == 3 and "edited" in report["problems"][0]["problem"]


def test_an_edited_record_with_recomputed_hash_breaks_the_next_link(store: Path):
    text = lines(store)
    rec = json.loads(text[1])
    rec["target"] = "something_else"
    rec["hash"] = audit.record_hash(rec)
    text[1] = json.dumps(rec)
    write_lines(store, text)
    report = audit.verify(store)
    assert [p["line"] for p in report["problems"]] == [3]


def test_a_removed_record_is_detected(store: Path):
    text = lines(store)
    del text[1]
    write_lines(store, text)
    report = audit.verify(store)
    assert not report["ok"] and report["problems"][0]["line"] == 2
    assert "removed" in report["problems"][0]["problem"]


def test_removing_the_last_record_is_detected_by_the_head(store: Path):
    write_lines(store, lines(store)[:-1])
    report = audit.verify(store)
    assert not report["ok"] and "removed from the end" in report["problems"][0]["problem"]


def test_reordered_records_are_detected(store: Path):
    text = lines(store)
    text[1], text[2] = text[2], text[1]
    write_lines(store, text)
    report = audit.verify(store)
    assert not report["ok"]
    assert report["problems"][0]["line"] == 2
    assert any("reordered" in p["problem"] for p in report["problems"])


def test_concurrent_appenders_never_fork_the_chain(tmp_path: Path):
    def worker(n: int) -> None:
        for i in range(10):
            audit.append(tmp_path, "verify", f"t{n}-{i}", "ok")
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = audit.verify(tmp_path)
    assert report["ok"] and report["records"] == 40
