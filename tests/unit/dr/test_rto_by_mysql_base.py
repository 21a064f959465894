"""The drill report sets the RTO of a disaster recovered from a logical and from a physical MySQL base side by side."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from dr_tests.conftest import load_scenarios  # noqa: E402
from dr_tests.report import method_families, rto_by_mysql_base, rto_by_mysql_base_html  # noqa: E402

SCENARIOS = [
    {"id": "complete_system_failure"},
    {"id": "system_failure_physical_base", "variant_of": "complete_system_failure", "mysql_base": "physical"},
    {"id": "redis_data_loss"},
]


def drill(scenario, rto_s, *, passed=True, time="2026-12-04T05:00:00Z", outcome=None):
    return {"scenario": scenario, "rto_s": rto_s, "passed": passed, "time": time,
            "outcome": outcome or ("passed" if passed else "failed")}


def test_the_shipped_scenarios_drill_both_disasters_with_a_physical_base_in_the_full_profile():
    scenarios = {s["id"]: s for s in load_scenarios()}
    assert method_families(list(scenarios.values())) == {
        "complete_system_failure": {"logical": "complete_system_failure", "physical": "system_failure_physical_base"},
        "mysql_data_corruption": {"logical": "mysql_data_corruption", "physical": "mysql_corruption_physical_base"}}
    for variant in ("system_failure_physical_base", "mysql_corruption_physical_base"):
        original = scenarios[scenarios[variant]["variant_of"]]
        assert scenarios[variant]["backup_vars"] == {"mysql_method": "physical"}
        assert scenarios[variant]["markers"] == ["full"]                      # make drills-full, not make test
        assert original["id"] not in variant                                  # pytest -k ORIGINAL selects one drill
        same = ("fault", "recovery", "setup", "canary_stores", "promise", "rto_s", "rpo_s", "backup")
        assert {k: scenarios[variant].get(k) for k in same} == {k: original.get(k) for k in same}


def test_both_methods_measured_in_this_run_are_shown_with_their_ratio():
    rows = rto_by_mysql_base(SCENARIOS, [drill("complete_system_failure", 60.0),
                                         drill("system_failure_physical_base", 45.0)], history=[])
    assert len(rows) == 1
    row = rows[0]
    assert row["scenario"] == "complete_system_failure" and row["ratio"] == 0.75
    assert row["bases"]["logical"]["measured"]["source"] == "this run"
    assert row["bases"]["physical"]["measured"]["rto_s"] == 45.0
    page = rto_by_mysql_base_html(rows)
    assert "RTO, logical MySQL base" in page and "RTO, physical MySQL base" in page
    assert "60.0 s" in page and "45.0 s" in page and "0.75" in page


def test_a_method_not_drilled_now_shows_its_newest_measurement_from_the_history_and_says_so():
    history = [drill("system_failure_physical_base", 50.0, time="2026-12-03T10:00:00Z"),
               drill("system_failure_physical_base", 40.0, time="2026-12-04T01:00:00Z"),
               drill("system_failure_physical_base", None, passed=False, time="2026-12-04T02:00:00Z")]
    rows = rto_by_mysql_base(SCENARIOS, [drill("complete_system_failure", 80.0)], history)
    physical = rows[0]["bases"]["physical"]["measured"]
    assert physical == {"rto_s": 40.0, "passed": True, "source": "drill history", "time": "2026-12-04T01:00:00Z"}
    assert rows[0]["ratio"] == 0.5
    assert "drill history, 2026-12-04T01:00:00Z" in rto_by_mysql_base_html(rows)


def test_a_failed_drill_of_this_run_wins_over_an_older_passing_one_and_never_measured_is_said():
    rows = rto_by_mysql_base(SCENARIOS, [drill("system_failure_physical_base", None, passed=False)],
                             [drill("system_failure_physical_base", 40.0)])
    physical = rows[0]["bases"]["physical"]["measured"]
    assert physical["source"] == "this run" and physical["rto_s"] is None and not physical["passed"]
    assert rows[0]["bases"]["logical"]["measured"] is None and rows[0]["ratio"] is None
    page = rto_by_mysql_base_html(rows)
    assert "FAILED" in page and "not measured" in page


def test_no_table_when_no_scenario_has_a_variant():
    assert rto_by_mysql_base([{"id": "redis_data_loss"}], [], []) == []
    assert rto_by_mysql_base_html([]) == ""
