"""Job history: records, running/finished merge, the wrapping context manager."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit, jobs
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import BackupFailed, ConfigError


def test_record_job_appends_one_line_with_the_contract_fields(tmp_path: Path):
    start = datetime(2025, 1, 29, 2, 0, tzinfo=UTC)
    end = datetime(2025, 1, 29, 2, 3, 30, tzinfo=UTC)
    rec = jobs.record_job(tmp_path, "backup", start=start, end=end, result="ok", sizes={"stored_bytes": 10},
                          backup_id="full_20250129T020000Z_a1b2c3", host="backup1", components=["mysql"])
    assert rec["duration_s"] == 210.0 and rec["start"] == "2025-01-29T02:00:00.000000Z"
    assert set(rec) >= {"id", "kind", "start", "end", "result", "sizes", "backup_id", "host"}
    assert jobs.read_jobs(tmp_path) == [rec]
    assert len(jobs.history_path(tmp_path).read_text().splitlines()) == 1
    assert oct(jobs.history_path(tmp_path).stat().st_mode & 0o777) == "0o600"


def test_unknown_kind_or_result_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError):
        jobs.record_job(tmp_path, "coffee", start=datetime.now(UTC))
    with pytest.raises(ConfigError):
        jobs.record_job(tmp_path, "backup", start=datetime.now(UTC), result="meh")


def test_start_then_finish_reads_as_one_job(tmp_path: Path):
    started = jobs.start_job(tmp_path, "verify", backup_id="full_x")
    assert jobs.read_jobs(tmp_path)[0]["result"] == "running"
    jobs.finish_job(tmp_path, started["id"], "failed", error="VerificationFailed: x", sizes={"checked": 3})
    (only,) = jobs.read_jobs(tmp_path)
    assert only["result"] == "failed" and only["backup_id"] == "full_x" and only["sizes"] == {"checked": 3}
    assert only["end"] is not None


def test_read_jobs_limit_and_kind(tmp_path: Path):
    for n in range(5):
        jobs.record_job(tmp_path, "backup" if n % 2 else "verify", start=datetime(2025, 1, n + 1, tzinfo=UTC))
    assert [j["start"][:10] for j in jobs.read_jobs(tmp_path, limit=2)] == ["2025-01-04", "2025-01-05"]
    assert len(jobs.read_jobs(tmp_path, kind="backup")) == 2


def test_job_context_manager_records_success_and_failure_and_audits(tmp_path: Path):
    with jobs.job(tmp_path, "backup", "full") as handle:
        handle.update(backup_id="full_1", sizes={"stored_bytes": 5})
    with pytest.raises(BackupFailed):
        with jobs.job(tmp_path, "backup", "full"):
            raise BackupFailed("mysqldump exited 2")
    ok, failed = jobs.read_jobs(tmp_path)
    assert ok["result"] == "ok" and ok["backup_id"] == "full_1" and ok["sizes"] == {"stored_bytes": 5}
    assert failed["result"] == "failed" and "mysqldump exited 2" in failed["error"]
    assert [r["result"] for r in audit.read_records(tmp_path)] == ["ok", "failed"]


def test_a_failing_history_write_never_fails_the_operation(tmp_path: Path):
    blocker = tmp_path / "store"
    blocker.write_text("not a folder")
    with jobs.job(blocker, "backup") as handle:
        handle.update(backup_id="x")
