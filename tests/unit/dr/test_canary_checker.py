"""The drill's canary set checker classifies writes the way a user would count losses."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from dr_tests.canary import CanaryWrite, check_canaries, coverage_problem  # noqa: E402

FAULT = 100.0


def write(seq: int, sent: float, acked: bool = True, store: str = "mysql") -> CanaryWrite:
    """A write sent at ``sent`` and answered 0.05 s later (acknowledged or with an error)."""
    return CanaryWrite(seq=seq, sent_at=sent, acked_at=sent + 0.05, status=200 if acked else 503,
                       acks={store: acked})


def unanswered(seq: int, sent: float) -> CanaryWrite:
    return CanaryWrite(seq=seq, sent_at=sent)


def pre_fault_writes(n: int = 10) -> list[CanaryWrite]:
    """Writes 0..n-1 sent at 90, 91, ... (all before the fault at 100)."""
    return [write(i, 90.0 + i) for i in range(n)]


def test_everything_survived_is_ok_with_zero_rpo():
    writes = pre_fault_writes()
    result = check_canaries(writes, range(10), "mysql", fault_at=FAULT, promise_at=FAULT, recovered_at=120.0)
    assert result.ok
    assert (result.attempted, result.acknowledged, result.rpo_s) == (10, 10, 0.0)
    assert result.lost == result.unexpected == result.holes == result.duplicates == []


def test_acknowledged_write_missing_before_the_promise_point_is_lost():
    writes = pre_fault_writes()
    result = check_canaries(writes, range(8), "mysql", fault_at=FAULT, promise_at=FAULT, recovered_at=120.0)
    assert not result.ok
    assert result.lost == [8, 9]
    # the last survivor (seq 7) was acknowledged at 97.05
    assert result.rpo_s == FAULT - 97.05


def test_writes_after_the_backup_point_may_be_lost_within_rpo():
    writes = pre_fault_writes()
    result = check_canaries(writes, range(5), "mysql", fault_at=FAULT, promise_at=95.0, recovered_at=120.0)
    assert result.ok
    assert result.lost == []
    assert result.lost_within_rpo == [5, 6, 7, 8, 9]
    assert abs(result.rpo_s - (FAULT - 94.05)) < 1e-9


def test_a_write_acknowledged_just_before_the_promise_point_must_survive():
    writes = pre_fault_writes()
    result = check_canaries(writes, range(4), "mysql", fault_at=FAULT, promise_at=95.0, recovered_at=120.0)
    assert result.lost == [4]
    assert not result.ok


def test_unacknowledged_writes_may_be_missing_or_recovered():
    writes = pre_fault_writes(3) + [write(3, 93.0, acked=False), unanswered(4, 94.0), write(5, 95.0)]
    result = check_canaries(writes, [0, 1, 2, 4, 5], "mysql", fault_at=FAULT, promise_at=FAULT,
                            recovered_at=120.0)
    assert result.ok
    assert result.recovered == [4]
    assert result.holes == []
    assert result.acknowledged == 4


def test_hole_in_the_prefix_is_reported_even_when_later_writes_survived():
    writes = pre_fault_writes()
    present = [0, 1, 2, 4, 5, 6, 7, 8, 9]
    result = check_canaries(writes, present, "mysql", fault_at=FAULT, promise_at=95.0, recovered_at=120.0)
    assert result.holes == [3]
    assert result.lost == [3]
    assert not result.ok


def test_hole_after_the_promise_point_still_fails_the_prefix_rule():
    writes = pre_fault_writes()
    present = [0, 1, 2, 3, 4, 5, 7, 8, 9]
    result = check_canaries(writes, present, "mysql", fault_at=FAULT, promise_at=92.0, recovered_at=120.0)
    assert result.lost == []
    assert result.lost_within_rpo == [6]
    assert result.holes == [6]
    assert not result.ok


def test_present_but_never_attempted_is_unexpected_and_repeats_are_duplicates():
    writes = pre_fault_writes(3)
    result = check_canaries(writes, [0, 1, 1, 2, 3], "mysql", fault_at=FAULT, promise_at=FAULT,
                            recovered_at=120.0, seq_range=(0, 5))
    assert result.unexpected == [3]
    assert result.duplicates == [1]
    assert not result.ok


def test_rows_of_other_drills_outside_the_seq_range_are_ignored():
    writes = [write(1000 + i, 90.0 + i) for i in range(3)]
    result = check_canaries(writes, [5, 6, 1000, 1001, 1002, 99999], "mysql", fault_at=FAULT,
                            promise_at=FAULT, recovered_at=120.0, seq_range=(1000, 1003))
    assert result.ok
    assert result.unexpected == []


def test_writes_after_recovery_must_survive_outage_writes_are_only_reported():
    writes = pre_fault_writes(2) + [write(2, 105.0), write(3, 125.0)]
    result = check_canaries(writes, [0, 1], "mysql", fault_at=FAULT, promise_at=FAULT, recovered_at=120.0)
    assert result.lost_in_outage == [2]
    assert result.lost == [3]
    assert result.rpo_s == 0.0


def test_nothing_survived_gives_a_lower_bound_rpo_from_the_first_acknowledgement():
    writes = pre_fault_writes()
    result = check_canaries(writes, [], "mysql", fault_at=FAULT, promise_at=None, recovered_at=120.0)
    assert result.lost == []
    assert len(result.lost_within_rpo) == 10
    assert result.rpo_s == FAULT - 90.05


def test_acknowledgement_is_per_store():
    writes = [CanaryWrite(seq=0, sent_at=90.0, acked_at=90.1, status=503, acks={"mysql": False, "redis": True})]
    assert check_canaries(writes, [], "mysql", fault_at=FAULT, promise_at=FAULT, recovered_at=None).ok
    assert check_canaries(writes, [], "redis", fault_at=FAULT, promise_at=FAULT, recovered_at=None).lost == [0]


# --- the real RPO: fault time minus the newest state the recovery brought back --------------
def test_a_backup_older_than_the_canary_writer_is_measured_by_its_own_age():
    """The issue's case: a 15-minute-old backup restored, none of the drill's writes survive.
    The RPO is fault - backup point (900 s), not fault - first canary write (10 s)."""
    writes = pre_fault_writes()
    backup_at = FAULT - 900.0
    result = check_canaries(writes, [], "mysql", fault_at=FAULT, promise_at=backup_at, recovered_at=120.0,
                            backup_at=backup_at)
    assert result.rpo_s == 900.0
    assert result.newest_recovered_at == backup_at
    assert result.rpo_basis.startswith("backup consistency point")


def test_without_a_known_backup_point_the_rpo_is_at_least_the_canary_window():
    writes = pre_fault_writes()
    result = check_canaries(writes, [], "mysql", fault_at=FAULT, promise_at=None, recovered_at=120.0)
    assert result.rpo_s == FAULT - 90.05
    assert result.rpo_basis.startswith("before the first lost canary write")


def test_survivors_newer_than_the_backup_point_show_replay_beyond_the_base():
    """PITR from an old base: every write survived, so the backup's age does not count."""
    writes = pre_fault_writes()
    result = check_canaries(writes, range(10), "mysql", fault_at=FAULT, promise_at=FAULT, recovered_at=120.0,
                            backup_at=FAULT - 900.0, outage_promised=True)
    assert result.ok and result.rpo_s == 0.0
    assert result.rpo_basis == "every acknowledged write survived"
    assert result.newest_recovered_at == 99.05


def test_newest_surviving_write_bounds_the_recovered_state_when_some_survived():
    writes = pre_fault_writes()
    result = check_canaries(writes, range(6), "mysql", fault_at=FAULT, promise_at=93.0, recovered_at=120.0,
                            backup_at=FAULT - 900.0)
    assert abs(result.rpo_s - (FAULT - 95.05)) < 1e-9
    assert result.rpo_basis == "newest surviving canary write"


def test_with_promise_fault_writes_lost_in_the_outage_are_lost_and_count_in_rpo():
    writes = pre_fault_writes(2) + [write(2, 105.0), write(3, 110.0), write(4, 125.0)]
    result = check_canaries(writes, [0, 1, 4], "mysql", fault_at=FAULT, promise_at=FAULT, recovered_at=120.0,
                            outage_promised=True)
    assert result.lost_in_outage == [2, 3]
    assert result.lost == [2, 3]
    assert not result.ok
    # newest recovered write: seq 1 acknowledged at 91.05; the loss window ends with seq 3 (110.05)
    assert abs(result.rpo_s - (110.05 - 91.05)) < 1e-9
    assert result.loss_window_end == 110.05


# --- coverage: the canary must have written across the promised window ----------------------
def test_zero_acknowledged_writes_is_a_coverage_problem():
    writes = [write(i, 90.0 + i, acked=False) for i in range(30)]
    problem = coverage_problem(writes, "mysql", 90.0, 100.0)
    assert problem and "only 0 acknowledged writes" in problem


def test_fewer_than_20_acknowledged_writes_is_a_coverage_problem():
    writes = [write(i, 90.0 + i * 0.5) for i in range(19)]
    assert "only 19 acknowledged" in coverage_problem(writes, "mysql", 90.0, 100.0)
    assert coverage_problem(writes + [write(19, 99.5)], "mysql", 90.0, 100.0) is None


def test_fewer_than_one_acknowledged_write_per_second_of_the_window_is_a_coverage_problem():
    writes = [write(i, 60.0 + i * 1.5) for i in range(26)]  # 26 writes over 40 s
    problem = coverage_problem(writes, "mysql", 60.0, 100.0)
    assert problem and "need at least 40" in problem
    dense = [write(i, 60.0 + i * 0.5) for i in range(80)]
    assert coverage_problem(dense, "mysql", 60.0, 100.0) is None


def test_coverage_counts_only_writes_the_store_acknowledged_inside_the_window():
    writes = [write(i, 80.0 + i * 0.1, store="redis") for i in range(100)]  # 80..90, redis only
    assert coverage_problem(writes, "redis", 80.0, 95.0) is None
    assert "only 0" in coverage_problem(writes, "mysql", 80.0, 95.0)
    assert "only 0" in coverage_problem(writes, "redis", 91.0, 95.0)
