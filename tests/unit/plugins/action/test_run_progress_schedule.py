"""When the controller polls an async step (lifeboat.dr.run_progress): a step is seen finished soon
after it ends - the wait is part of every playbook's RTO - with few polls (each is a module run on the host)."""

from __future__ import annotations

import pytest

from ansible_collections.lifeboat.dr.plugins.action import run_progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


def poll_until_done(monkeypatch, runs_s: float, interval_s: float = 15.0):
    """Drive the action's wait on a job that ends ``runs_s`` after the start (fake clock, each poll
    taking 0.2 s); returns (seconds until the action returned, poll times, printed lines)."""
    clock = FakeClock()
    monkeypatch.setattr(run_progress, "time", clock)
    lines: list[str] = []
    monkeypatch.setattr(run_progress.display, "display", lambda msg, stderr=False: lines.append(msg))
    start, polls = clock.now, []

    def execute_module(module_name, module_args, task_vars):
        polls.append(clock.now - start)
        clock.now += 0.2
        if clock.now - start >= runs_s:
            return {"finished": True, "changed": True}
        return {"finished": False, "progress_line": f"at {clock.now - start:.0f} s"}

    action = run_progress.ActionModule.__new__(run_progress.ActionModule)
    action._execute_module = execute_module
    result = action._wait({}, {}, interval_s, "db")
    assert result["finished"] is True
    return clock.now - start, polls, lines


@pytest.mark.parametrize("runs_s", [0.5, 2.5, 4.0, 16.0, 21.0, 44.0, 300.0])
def test_a_step_is_seen_finished_at_most_half_its_run_time_after_it_ends(monkeypatch, runs_s):
    seen_at, _polls, _lines = poll_until_done(monkeypatch, runs_s)
    assert seen_at <= runs_s + min(15.0, max(run_progress.MIN_BEAT_S, runs_s * run_progress.SILENT_BEAT_SHARE)) + 0.5, \
        seen_at


def test_a_21_s_restore_step_is_no_longer_seen_at_the_next_line_at_30_s(monkeypatch):
    seen_at, _polls, _lines = poll_until_done(monkeypatch, 21.0)
    assert seen_at < 25.0


def test_a_short_step_costs_few_polls(monkeypatch):
    """Each poll is a module run on the host: a 7 s step is polled 5 times (1, 2, 3, 4.5, 6.75 s, then done)."""
    _seen_at, polls, _lines = poll_until_done(monkeypatch, 7.0)
    assert len(polls) <= 6


def test_a_one_hour_run_is_polled_sparsely_and_prints_a_line_each_interval(monkeypatch):
    seen_at, polls, lines = poll_until_done(monkeypatch, 3600.0)
    assert len(polls) <= 250, "a few silent polls plus one per line, not one a second"
    assert 235 <= len(lines) <= 240, "one progress line every 15 s"
    assert seen_at <= 3600 + 15.5
