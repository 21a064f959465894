"""Health report: status transitions on fabricated stores, measured RTO/RPO, binlog lag, HTML."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from ops_helpers import keyring, small_set

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog as bl
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import health
from ansible_collections.lifeboat.dr.plugins.module_utils.store import jobs
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import utc_now

HOUR = 3600.0


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store", reserve_bytes=0)
    ring = keyring(tmp_path)
    start = utc_now()
    set_id = small_set(store, ring, components=("mysql", "redis"))
    jobs.record_job(store, "backup", start=start, result="ok", backup_id=set_id, components=["mysql", "redis"])
    return store


def at(hours: float):
    return utc_now() + timedelta(hours=hours)


def test_a_fresh_verified_backup_is_ok_and_rto_is_unknown_without_measurement(store):
    report = health.build_report(store)
    assert report["status"] == "ok", report["problems"]
    assert [c["component"] for c in report["components"]] == ["mysql", "redis"]
    assert report["components"][0]["verification"]["ok"] is True
    assert report["components"][0]["success_rate"] == 1.0
    assert report["disaster_now"]["rto"] == "unknown" and report["disaster_now"]["rto_s"] is None
    assert report["disaster_now"]["rpo"] == "measured" and report["disaster_now"]["rpo_s"] < 60


def test_an_aged_backup_warns_and_past_the_rpo_target_is_critical(store):
    aged = health.build_report(store, now=at(25))
    assert aged["status"] == "warning"
    assert any("newest backup is 1d 1h old" in p["message"] for p in aged["problems"])
    too_old = health.build_report(store, now=at(27))
    assert too_old["status"] == "critical"
    assert any("RPO" in p["message"] for p in too_old["problems"] if p["level"] == "critical")


def test_a_failed_backup_job_is_critical(store):
    jobs.record_job(store, "backup", start=utc_now(), result="failed", error="BackupFailed: disk full",
                    components=["redis"])
    report = health.build_report(store)
    assert report["status"] == "critical"
    assert {p["component"] for p in report["problems"] if p["level"] == "critical"} == {"redis"}
    assert report["components"][1]["success_rate"] == 0.5


def test_a_failed_verification_warns(store):
    set_id = store.list_sets()[-1].set_id
    store.record_verification(set_id, {"ok": False, "mode": "quick", "error": "TamperedData"})
    report = health.build_report(store)
    assert report["status"] == "warning"
    assert any("verification" in p["message"] for p in report["problems"])


def test_measured_rto_comes_from_the_full_verification_and_is_checked_against_the_target(store):
    set_id = store.list_sets()[-1].set_id
    durations = {"mysql": 40.0, "redis": 2.5}
    store.record_verification(set_id, {"ok": True, "mode": "full", "restore_durations_s": durations})
    report = health.build_report(store)
    assert report["disaster_now"]["rto"] == "measured" and report["disaster_now"]["rto_s"] == 42.5
    strict = health.build_report(store, health.Thresholds(rto_target_s=30))
    assert strict["status"] == "critical"


def test_binlog_lag_lowers_the_mysql_rpo_and_warns_when_large(store):
    now = at(25)
    covered = int(now.timestamp()) - 3600
    index = bl.ArchiveIndex("srv-1", [{"generation": 1, "started_at": "", "reason": "", "gaps": [],
                                       "files": [{"file": "mariadb-bin.000007", "closed_at": covered + 1,
                                                  "max_time": covered, "set_id": "binlog_x"}]}])
    bl.save_index(store, index)
    report = health.build_report(store, now=now)
    mysql, redis = report["components"]
    assert mysql["rpo_source"] == "binlog archive" and 3600 <= mysql["rpo_s"] < 3602
    assert redis["rpo_source"] == "newest backup" and redis["rpo_s"] > 25 * HOUR - 60
    assert report["binlog_archives"][0]["last_file"] == "mariadb-bin.000007"
    assert any("binlog archive of srv-1 lags" in p["message"] for p in report["problems"])


def test_a_failed_drill_is_critical_and_shown(store):
    health.record_drill(store, "mysql-dropped-table", rto_s=300, rto_target_s=600, rpo_s=5, rpo_target_s=60,
                        passed=True)
    assert health.build_report(store)["status"] == "ok"
    health.record_drill(store, "full-site-loss", rto_s=1300, rto_target_s=600, rpo_s=5, rpo_target_s=60,
                        passed=False)
    report = health.build_report(store)
    assert report["status"] == "critical" and report["last_drill"]["scenario"] == "full-site-loss"
    page = health.render_html(report)
    assert "full-site-loss" in page and "FAILED" in page


def test_an_empty_store_is_critical(tmp_path: Path):
    report = health.build_report(Store(tmp_path / "empty"))
    assert report["status"] == "critical"


def test_an_expected_component_without_backup_is_critical(store):
    report = health.build_report(store, components=["mysql", "vault"])
    assert report["status"] == "critical"
    assert any(p["component"] == "vault" and "no backup" in p["message"] for p in report["problems"])


def test_html_is_self_contained(store):
    page = health.render_html(health.build_report(store))
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "src=" not in page and "<link" not in page
