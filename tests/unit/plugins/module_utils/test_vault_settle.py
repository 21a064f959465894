"""settle_after_restore: how long Lifeboat watches a Vault/OpenBao server after a force-restore.

The server is simulated on a fake clock: OpenBao holds status calls for ~5 s while it runs its
post-restore invalidations, then either stays unsealed (same keys) or seals itself (the
snapshot's keys differ). The real server is exercised by the Vault integration tests.
"""

from __future__ import annotations

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.vault import engine as ve
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import RestoreFailed


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeServer:
    """Holds the first status call until ``release_at``; seals at ``seal_at`` (None: never)."""

    url = "http://vault.test:8200"

    def __init__(self, clock: Clock, release_at: float = 5.5, seal_at: float | None = None,
                 held: bool = True) -> None:
        self.clock, self.release_at, self.seal_at, self.held = clock, release_at, seal_at, held
        self.calls = 0

    def seal_status(self) -> dict:
        self.calls += 1
        if self.held and self.clock.now < self.release_at:
            self.clock.now = self.release_at
            return {"sealed": False}
        return {"sealed": self.seal_at is not None and self.clock.now >= self.seal_at}


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(ve, "time", fake)
    monkeypatch.setattr(ve, "wait_ready", lambda conn, timeout_s: {"sealed": False, "standby": False})
    return fake


def test_a_server_that_held_its_status_calls_and_stayed_unsealed_is_done_after_the_confirm_window(clock):
    out = ve.settle_after_restore(FakeServer(clock), None)
    assert out["unsealed_by_lifeboat"] is False
    assert 5.5 + ve.CONFIRM_S <= clock.now < 5.5 + ve.CONFIRM_S + 0.5 < ve.SETTLE_S


def test_a_self_seal_right_after_the_held_call_is_seen_and_unsealed_with_escrowed_keys(
        clock, monkeypatch, tmp_path):
    unsealed = []
    monkeypatch.setattr(ve, "read_unseal_keys", lambda path: ["k1"])
    monkeypatch.setattr(ve, "unseal", lambda conn, keys, timeout_s: unsealed.append(keys))
    out = ve.settle_after_restore(FakeServer(clock, seal_at=5.8), str(tmp_path / "keys.json"))
    assert out["unsealed_by_lifeboat"] is True and unsealed == [["k1"]]


def test_a_self_seal_without_escrowed_keys_fails_and_says_which_keys_are_needed(clock):
    with pytest.raises(RestoreFailed, match="sealed itself") as err:
        ve.settle_after_restore(FakeServer(clock, seal_at=6.5), None)
    assert "unseal_keys_file" in err.value.hint


def test_without_a_held_call_the_whole_settle_time_is_watched(clock):
    server = FakeServer(clock, held=False)
    out = ve.settle_after_restore(server, None)
    assert out["unsealed_by_lifeboat"] is False and clock.now >= ve.SETTLE_S


def test_a_seal_late_in_the_settle_time_is_still_caught_when_no_call_was_held(clock):
    with pytest.raises(RestoreFailed):
        ve.settle_after_restore(FakeServer(clock, held=False, seal_at=10.0), None)
