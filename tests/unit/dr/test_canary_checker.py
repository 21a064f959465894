"""The drill's canary set checker classifies writes the way a user would count losses."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from dr_tests.canary import CanaryWrite, check_canaries  # noqa: E402

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
