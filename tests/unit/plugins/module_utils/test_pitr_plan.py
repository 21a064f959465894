"""Pure planning logic of binlog archiving and PITR (no server, no store)."""

from __future__ import annotations

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog as bl
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog_events as be
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import pitr
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError


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


def test_a_generation_begun_by_a_pitr_is_not_continued_by_a_server_whose_history_restarted():
    """A PITR flushed the logs and began generation 5 at b.000004 (its first_file); nothing was archived
    since; then the server was re-initialised (a new container volume): its newest file is older."""
    gen = {"generation": 5, "files": [], "first_file": "b.000004",
           "branch": {"parent_generation": 4, "file": "b.000002", "position": 1396202, "by": "PITR"}}
    same = be.FileSummary("b.000004", fde_time=20, gtid_list="")
    assert bl.detect_new_generation(gen, [("b.000003", 9), ("b.000004", 50)], {"b.000003"},
                                    lambda n: same) is None, "it continued"
    assert bl.detect_new_generation(gen, [("b.000004", 9), ("b.000005", 5)], {"b.000004"},
                                    lambda n: same) is None, "it continued in the next file"
    older = bl.detect_new_generation(gen, [("b.000001", 900), ("b.000002", 342)], {"b.000001"}, lambda n: same)
    assert "newest binlog b.000002 comes before b.000004, where generation 5 begins" in older
    assert "restarted" in older
    assert bl.detect_new_generation({"files": []}, [("b.000001", 5)], set(), lambda n: same) is None, \
        "generation 1 before its first archive run: any history is its own"


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


# --------------------------------------------------------------------------- timelines
def _gen(number, files, **kw):
    return dict(generation=number, started_at="2026-01-01T00:00:00Z", reason="r", files=files, gaps=[], **kw)


def _branch(parent, file, position, at="2026-01-02T00:00:00Z"):
    return {"parent_generation": parent, "file": file, "position": position, "gtid": "0-1-7", "at": at, "by": "PITR"}


def _timeline_index():
    """Generation 1: b.1..b.5; a PITR stopped at b.4:400 -> generation 2 from b.6; generation 3 (a PITR
    back to b.2:200 of generation 1) from b.8."""
    g1 = _gen(1, [entry(f"b.00000{i}", complete_end=1000, generation=1) for i in range(1, 6)])
    g2 = _gen(2, [entry(f"b.00000{i}", complete_end=1000, generation=2) for i in (6, 7)], first_file="b.000006",
              branch=_branch(1, "b.000004", 400))
    g3 = _gen(3, [entry("b.000008", complete_end=1000, generation=3)], first_file="b.000008",
              branch=_branch(1, "b.000002", 200, at="2026-01-03T00:00:00Z"))
    return bl.ArchiveIndex("x", [g1, g2, g3])


def test_the_line_of_history_walks_the_branch_points_back_to_the_root():
    index = _timeline_index()
    assert [(s.number, s.limit) for s in pitr.line_of_history(index)] == [(1, ("b.000002", 200)), (3, None)]
    assert [(s.number, s.limit) for s in pitr.line_of_history(index, 2)] == [(1, ("b.000004", 400)), (2, None)]
    assert [(s.number, s.limit) for s in pitr.line_of_history(index, 1)] == [(1, None)]
    with pytest.raises(ConfigError, match="generation 9 does not exist"):
        pitr.line_of_history(index, 9)


def test_a_replay_follows_the_parent_up_to_the_branch_point_then_the_child():
    index = _timeline_index()
    line = pitr.line_of_history(index, 2)
    base = pitr.Base("base1", None, "b.000002", 120, "", "x")
    steps, broken = pitr.chain_from(line, 0, base)
    assert broken is None
    assert [(e["generation"], e["file"], pitr.effective_end(e)) for e in steps] == [
        (1, "b.000002", 1000), (1, "b.000003", 1000), (1, "b.000004", 400), (2, "b.000006", 1000),
        (2, "b.000007", 1000)]
    stop = pitr.Stop(2, "b.000007", 1000, "latest")
    assert [(r["generation"], r["file"], r["start"], r["stop"]) for r in pitr._replay_files(steps, base, stop)] == [
        (1, "b.000002", 120, 1000), (1, "b.000003", 4, 1000), (1, "b.000004", 4, 400), (2, "b.000006", 4, 1000),
        (2, "b.000007", 4, 1000)]


def test_a_base_after_the_branch_point_is_not_on_the_current_line_and_says_why():
    line = pitr.line_of_history(_timeline_index())  # generation 1 up to b.2:200, then 3
    on_abandoned = pitr.Base("base2", None, "b.000003", 50, "", "x")
    k, why = pitr.base_segment(line, on_abandoned)
    assert k is None and "after the point b.000002:200 where generation 3 branched off" in why
    assert pitr.base_segment(line, pitr.Base("base1", None, "b.000002", 200, "", "x")) == (0, "")


def test_a_line_with_missing_binlogs_names_exactly_what_is_missing():
    index = _timeline_index()
    index.generations[1]["files"] = index.generations[1]["files"][1:]  # b.000006 never archived
    _steps, broken = pitr.chain_from(pitr.line_of_history(index, 2), 0, pitr.Base("b", None, "b.000001", 4, "", "x"))
    assert broken == ("binlogs b.000006..b.000007 (excluded) of generation 2 are not archived: the start of its "
                      "history is missing")
    index = _timeline_index()
    index.generations[0]["files"] = index.generations[0]["files"][:3]  # generation 1 archived up to b.000003
    _steps, broken = pitr.chain_from(pitr.line_of_history(index, 2), 0, pitr.Base("b", None, "b.000001", 4, "", "x"))
    assert "before its branch point b.000004:400" in broken


def test_archiving_after_two_pitrs_ships_no_file_a_generation_already_holds():
    index = _timeline_index()
    index.generations[2]["files"] = []  # no archive run between the PITR of generation 3 and the next one
    index.generations.append(_gen(4, [], first_file="b.000010", branch=_branch(1, "b.000002", 200)))
    present = [(f"b.{i:06d}", 1000) for i in range(1, 12)]
    closed = {n for n, _size in present[:-1]}
    plan = bl.plan_run(index.generations[-1], present, closed)
    plan = bl._with_previous_generation(index, plan, present, closed)
    # b.000008..9 were closed in generation 3's time and never archived; b.000001..7 are archived already
    assert plan.to_archive == ["b.000008", "b.000009", "b.000010"]


def test_a_new_base_is_needed_after_a_branch_and_on_a_generation_that_restarted_without_a_parent():
    index = _timeline_index()  # generation 3: a PITR at 2026-01-03
    old_base = pitr.Base("base1", "2026-01-01T10:00:00+00:00", "b.000002", 120, "", "x")
    needed = pitr.base_backup_needed(None, "x", index, [old_base])
    assert needed.startswith("no base backup since generation 3 began (PITR at 2026-01-03T00:00:00Z, branched from "
                             "generation 1 at b.000002:200)") and "backup.yml" in needed
    new_base = pitr.Base("base2", "2026-01-03T00:00:05+00:00", "b.000008", 300, "", "x")
    assert pitr.base_backup_needed(None, "x", index, [old_base, new_base]) is None
    index.generations.append(_gen(4, [entry("b.000001", complete_end=900, generation=4)]))
    index.generations[-1]["started_at"] = "2026-01-04T00:00:00Z"
    index.generations[-1]["reason"] = "the server's binlog names restarted"
    needed = pitr.base_backup_needed(None, "x", index, [old_base, new_base])
    assert "no base backup on generation 4" in needed and "names restarted" in needed
    on_it = pitr.Base("base3", "2026-01-03T23:00:00+00:00", "b.000001", 500, "", "x")  # taken before the detection
    assert pitr.base_backup_needed(None, "x", index, [old_base, on_it]) is None
