"""Pure planning logic of binlog archiving and PITR (no server, no store)."""

from __future__ import annotations

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils import binlog as bl
from ansible_collections.lifeboat.dr.plugins.module_utils import binlog_events as be
from ansible_collections.lifeboat.dr.plugins.module_utils import pitr
from ansible_collections.lifeboat.dr.plugins.module_utils.errors import ConfigError


def entry(name, size=1000, fingerprint="10|0-1-1", **kw):
    return dict(file=name, size=size, fingerprint=fingerprint, set_id="binlog_x", parent="p", **kw)


def test_target_time_is_utc_whole_seconds():
    assert pitr.parse_target_time("1970-01-01T00:01:40Z") == 100
    assert pitr.parse_target_time("1970-01-01T00:01:40.999") == 100  # naive = UTC, truncated
    assert pitr.parse_target_time("1970-01-01T01:01:40+01:00") == 100
    with pytest.raises(ConfigError):
        pitr.parse_target_time("yesterday")


def test_exactly_one_target_kind():
    assert pitr.normalize_target("latest") == {"latest": True}
    with pytest.raises(ConfigError):
        pitr.normalize_target({"time": "2025-01-01T00:00:00Z", "gtid": "0-1-5"})


def test_runs_split_at_missing_sequence_numbers():
    gen = {"files": [entry("b.000003"), entry("b.000001"), entry("b.000002"), entry("b.000005")]}
    assert [[e["file"] for e in r] for r in pitr.runs(gen)] == [["b.000001", "b.000002", "b.000003"], ["b.000005"]]


def test_plan_run_skips_archived_files_and_reports_a_purged_one_as_gap():
    gen = {"files": [entry("b.000001"), entry("b.000002")], "gaps": []}
    present = [("b.000004", 10), ("b.000005", 10), ("b.000006", 10)]
    plan = bl.plan_run(gen, present, {"b.000004", "b.000005"})
    assert plan.to_archive == ["b.000004", "b.000005"]
    assert [(g["missing_from"], g["missing_to"], g["resumes_at"]) for g in plan.gaps] == \
        [("b.000003", "b.000003", "b.000004")]


def test_plan_run_without_gap_and_partial_file_is_shipped_again_when_closed():
    gen = {"files": [entry("b.000001"), entry("b.000002", partial=True)], "gaps": []}
    plan = bl.plan_run(gen, [("b.000001", 1), ("b.000002", 5), ("b.000003", 1)], {"b.000001", "b.000002"})
    assert plan.to_archive == ["b.000002"] and plan.gaps == [] and plan.skipped == ["b.000001"]


def test_new_generation_when_a_name_starts_differently_or_names_restart():
    gen = {"files": [entry("b.000001", fingerprint="10|"), entry("b.000002", fingerprint="20|0-1-5")]}
    same = be.FileSummary("b.000002", fde_time=20, gtid_list="0-1-5")
    other = be.FileSummary("b.000002", fde_time=99, gtid_list="")
    present = [("b.000002", 1000), ("b.000003", 5)]
    assert bl.detect_new_generation(gen, present, {"b.000002"}, lambda n: same) is None
    assert "restarted" in bl.detect_new_generation(gen, present, {"b.000002"}, lambda n: other)
    assert "diverged" in bl.detect_new_generation(gen, [("b.000002", 7), ("b.000003", 1)], {"b.000002"},
                                                  lambda n: same)
    gen3 = {"files": [entry("b.000007")]}
    assert "restarted" in bl.detect_new_generation(gen3, [("b.000001", 5)], set(), lambda n: same)


def test_gtid_state_comparison_is_per_domain():
    assert pitr._gtid_in_state("0-1-5", "0-1-9,1-2-3")
    assert not pitr._gtid_in_state("0-1-10", "0-1-9")
    assert not pitr._gtid_in_state("2-1-1", "0-1-9")


def test_coverage_of_a_closed_file_ends_the_second_before_its_rotate():
    assert pitr.coverage_end({"closed_at": 100, "max_time": 90}) == 99
    assert pitr.coverage_end({"closed_at": 100, "max_time": 100}) == 100
    assert pitr.coverage_end({"partial": True, "max_time": 90, "closed_at": None}) == 90


def test_identity_folder_names_are_store_safe():
    assert bl.identity_dirname("mariadb:server_id=1:domain=0") == "mariadb_server_id_1_domain_0"
    assert bl.binlog_name("mysql-bin.000009", 10) == "mysql-bin.000010"
