"""Prometheus textfile: names, labels and values parse with prometheus_client; atomic write."""

from __future__ import annotations

from pathlib import Path

from ops_helpers import keyring, small_set
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.lifeboat.dr.plugins.module_utils.ops import health, metrics
from ansible_collections.lifeboat.dr.plugins.module_utils.store import jobs
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import utc_now


def test_metrics_parse_and_carry_the_report_values(tmp_path: Path):
    store = Store(tmp_path / "store", reserve_bytes=0)
    set_id = small_set(store, keyring(tmp_path), components=("mysql", "redis"))
    jobs.record_job(store, "backup", start=utc_now(), backup_id=set_id)
    health.record_drill(store, 'quote"and\\slash', rto_s=120.5, rto_target_s=600, rpo_s=3, rpo_target_s=60,
                        passed=True)
    report = health.build_report(store)
    text = metrics.render(report)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    last = {s.labels["component"]: s.value for s in families["lifeboat_backup_last_success_timestamp_seconds"].samples}
    assert set(last) == {"mysql", "redis"}
    assert abs(last["mysql"] - report["components"][0]["latest"]["end_timestamp"]) < 1e-3
    size = families["lifeboat_backup_size_bytes"].samples[0].value
    assert size == store.list_sets()[-1].stored_bytes
    assert {s.value for s in families["lifeboat_verification_ok"].samples} == {1.0}
    drill = families["lifeboat_drill_rto_seconds"].samples[0]
    assert drill.value == 120.5 and drill.labels["scenario"] == 'quote"and\\slash'
    assert families["lifeboat_health_status"].samples[0].value == 0
    assert families["lifeboat_backup_age_seconds"].type == "gauge"
    # nothing measured -> nothing written (no fake zeros)
    assert "lifeboat_disaster_rto_seconds" not in families and "lifeboat_binlog_archive_lag_seconds" not in families


def test_write_textfile_is_atomic_and_reports_changes(tmp_path: Path):
    target = tmp_path / "collector" / "lifeboat.prom"
    assert metrics.write_textfile(target, "lifeboat_health_status 0\n") is True
    assert metrics.write_textfile(target, "lifeboat_health_status 0\n") is False
    assert target.read_text() == "lifeboat_health_status 0\n"
    assert [p.name for p in target.parent.iterdir()] == ["lifeboat.prom"]
