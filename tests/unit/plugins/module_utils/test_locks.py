"""Specification of plugins/module_utils/store/locks.py: writer locks (flock) and leases of a backup store.

Real flocks, real processes: a holder in another process is a child Python that takes the lock.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.store import locks
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, LockHeld


def hold_in_child(lock_dir: Path, kind: str, seconds: float) -> subprocess.Popen:
    """A child process that takes ``kind``, prints ``held`` and keeps it ``seconds`` (then exits)."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from ansible_collections.lifeboat.dr.plugins.module_utils.store import locks
        lock = locks.acquire(Path({str(lock_dir)!r}), {kind!r}, set_id="full_child")
        print("held", flush=True)
        time.sleep({seconds})
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_held_kind_is_refused_naming_the_holder(tmp_path):
    with locks.acquire(tmp_path / "locks", "create", set_id="full_1"):
        with pytest.raises(LockHeld) as err:
            locks.acquire(tmp_path / "locks", "create")
    assert str(os.getpid()) in err.value.message
    assert socket.gethostname() in err.value.message
    assert err.value.details["holder"]["set_id"] == "full_1"


def test_kinds_do_not_block_each_other(tmp_path):
    with locks.acquire(tmp_path / "locks", "create"), locks.acquire(tmp_path / "locks", "binlog") as other:
        assert other.held


def test_release_empties_the_record_and_frees_the_kind(tmp_path):
    lock = locks.acquire(tmp_path / "locks", "prune")
    assert locks.read_holder(lock.path)["pid"] == os.getpid()
    lock.release()
    lock.release()  # idempotent
    assert not lock.held and locks.read_holder(lock.path) is None
    with locks.acquire(tmp_path / "locks", "prune") as again:
        assert again.held


def test_lock_folder_and_file_are_private(tmp_path):
    with locks.acquire(tmp_path / "locks", "create") as lock:
        assert stat.S_IMODE(os.stat(tmp_path / "locks").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(lock.path).st_mode) == 0o600


def test_an_invalid_kind_is_a_config_error_naming_the_standard_ones(tmp_path):
    with pytest.raises(ConfigError) as err:
        locks.acquire(tmp_path / "locks", "../etc")
    assert "create" in err.value.hint and "prune" in err.value.hint


def test_a_lock_held_by_another_process_is_refused_then_waited_for(tmp_path):
    child = hold_in_child(tmp_path / "locks", "create", 1.0)
    try:
        with pytest.raises(LockHeld) as err:
            locks.acquire(tmp_path / "locks", "create")
        assert str(child.pid) in err.value.message
        started = time.monotonic()
        with locks.acquire(tmp_path / "locks", "create", wait_s=20) as lock:
            assert lock.held and time.monotonic() - started < 20
    finally:
        child.wait(timeout=30)


def test_a_killed_holder_never_leaves_a_stale_lock(tmp_path):
    child = hold_in_child(tmp_path / "locks", "create", 600)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    with locks.acquire(tmp_path / "locks", "create") as lock:
        assert lock.held and locks.read_holder(lock.path)["pid"] == os.getpid()


def test_a_lease_keeps_the_kind_until_it_expires_and_names_the_abort_command(tmp_path):
    lock = locks.acquire(tmp_path / "locks", "create", set_id="full_lease", store=str(tmp_path))
    lock.detach_as_lease(1.5, owner="run-1")
    assert not lock.held and locks.read_holder(lock.path)["lease_until"]
    with pytest.raises(LockHeld) as err:
        locks.acquire(tmp_path / "locks", "create", store=str(tmp_path))
    assert "full_lease" in err.value.message and "run-1" in err.value.message
    assert f"lifeboat abort full_lease --store {tmp_path}" in err.value.hint
    with locks.acquire(tmp_path / "locks", "create", wait_s=20) as taken:
        assert taken.held and locks.read_holder(taken.path).get("lease_until") is None


def test_refresh_extends_and_clear_ends_a_lease(tmp_path):
    lock = locks.acquire(tmp_path / "locks", "create", set_id="full_x")
    lock.detach_as_lease(2.0)
    assert locks.refresh_lease(tmp_path / "locks", "create", "full_x", 60)
    time.sleep(2.3)  # past the first lease_until: only the refresh keeps it
    with pytest.raises(LockHeld):
        locks.acquire(tmp_path / "locks", "create")
    assert not locks.refresh_lease(tmp_path / "locks", "create", "full_other", 60)  # not its lease
    assert locks.clear_lease(tmp_path / "locks", "create", "full_x")
    with locks.acquire(tmp_path / "locks", "create") as lock:
        assert lock.held


def test_shared_holders_coexist_and_upgrade_waits_for_the_others(tmp_path):
    path = tmp_path / "set.lock"
    first = locks.acquire_file(path, None, what="the set", shared=True)
    second = locks.acquire_file(path, None, what="the set", shared=True)
    try:
        with pytest.raises(LockHeld):
            locks.acquire_file(path, {"kind": "writer"}, what="the set")
        assert not first.upgrade(wait_s=0.2) and first.shared
        second.release()
        assert first.upgrade(wait_s=2) and not first.shared
    finally:
        first.release()
        second.release()
