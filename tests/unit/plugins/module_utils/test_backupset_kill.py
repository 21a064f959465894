"""Crash safety and locking with real processes: kill -9 mid-write and just before the commit
rename, lock contention between processes, dead holders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import MANIFEST_NAME
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LockHeld

PRELUDE = textwrap.dedent("""
    import os, sys, time
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
    from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
    store = Store(sys.argv[1], reserve_bytes=0)
    ring = keys.KeyRing(keys.FileKEK.load(sys.argv[2]))
    def ready(text):
        sys.stdout.write(text + "\\n"); sys.stdout.flush()
""")

# Writes an endless, incompressible artifact: the parent kills it mid-stream.
ENDLESS_WRITER = PRELUDE + textwrap.dedent("""
    writer = store.begin_set("full", ["mysql", "redis"], ring)
    writer.write_json("mysql", "binlog_position.json", {"pos": 4})
    ready(writer.set_id)
    out = writer.artifact("mysql", "dump.sql")
    written = 0
    while True:
        block = os.urandom(256 * 1024)  # incompressible, so it reaches the disk
        out.write(block)
        written += len(block)
        if written == 4 * 1024 * 1024:
            ready("streaming")
        time.sleep(0.001)
""")

# Finishes everything, then dies at the commit point (after the manifest, before the rename).
DIES_AT_COMMIT = PRELUDE + textwrap.dedent("""
    def die(src, dst):
        os.kill(os.getpid(), 9)
    from ansible_collections.lifeboat.dr.plugins.module_utils.store import writer as writer_module
    writer_module._rename_into_place = die
    with store.begin_set("redis", ["redis"], ring) as writer:
        with writer.artifact("redis", "dump.rdb") as out:
            out.write(os.urandom(100000))
        ready(writer.set_id)
        writer.publish()
""")

# A component step of a multi-process set, killed mid-stream.
ENDLESS_COMPONENT = PRELUDE + textwrap.dedent("""
    writer = store.resume_set(sys.argv[3], ring, component="mysql")
    out = writer.artifact("mysql", "dump.sql")
    written = 0
    while True:
        out.write(os.urandom(256 * 1024))
        written += 256 * 1024
        if written == 4 * 1024 * 1024:
            ready("streaming")
""")

HOLDS_LOCK = PRELUDE + textwrap.dedent("""
    with store.lock(sys.argv[3]):
        ready("locked")
        time.sleep(60)
""")

BEGINS_SET = PRELUDE + textwrap.dedent("""
    writer = store.begin_set("full", ["mysql"], ring)
    ready(writer.set_id)
    time.sleep(60)
""")


@pytest.fixture()
def env(tmp_path: Path):
    key = tmp_path / "k.key"
    keys.create_key_file(key)
    return Store(tmp_path / "store", reserve_bytes=0), keys.KeyRing(keys.FileKEK.load(key)), key


def spawn(script: str, store: Store, key: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, str(store.root), str(key), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def expect_line(proc: subprocess.Popen, timeout_s: float = 30.0) -> str:
    """The next stdout line of ``proc`` (fails with its stderr if it exits first)."""
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            proc.kill()
            pytest.fail("child process produced no output in time")
    line = proc.stdout.readline().strip()
    if not line:
        proc.wait(5)
        pytest.fail(f"child exited early ({proc.returncode}): {proc.stderr.read()}")
    return line


def kill9(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    proc.stderr.close()


def test_kill_9_mid_stream_leaves_no_complete_looking_set(env):
    store, ring, key = env
    child = spawn(ENDLESS_WRITER, store, key)
    try:
        set_id = expect_line(child)
        assert expect_line(child) == "streaming"
        assert store.clean_stale_partials(0) == []  # the writer is alive: never removed
        assert (store.partial_root / set_id).is_dir()
        deadline = time.monotonic() + 20
        while store.list_sets(include_partial=True)[0].stored_bytes < 1024 * 1024:  # mid-stream, on disk
            assert time.monotonic() < deadline, "the writer stored nothing"
            time.sleep(0.05)
    finally:
        kill9(child)

    assert store.list_sets() == []
    [partial] = store.list_sets(include_partial=True)
    assert (partial.set_id, partial.status) == (set_id, "partial")
    assert not (store.root / set_id).exists()
    assert store.clean_stale_partials(3600) == []  # too recent
    assert store.clean_stale_partials(0) == [set_id]
    assert list(store.partial_root.iterdir()) == []
    assert store.list_sets(include_partial=True) == []
    store.lock("create").release()  # the dead writer's lock went with it


def test_kill_9_after_manifest_before_rename_is_still_partial(env):
    store, ring, key = env
    child = spawn(DIES_AT_COMMIT, store, key)
    set_id = expect_line(child)
    child.wait(30)
    kill9(child)
    assert child.returncode == -signal.SIGKILL
    assert (store.partial_root / set_id / MANIFEST_NAME).is_file()  # it got that far
    assert store.list_sets() == []
    assert [i.status for i in store.list_sets(include_partial=True)] == ["partial"]
    assert store.clean_stale_partials(0) == [set_id]
    assert store.list_sets(include_partial=True) == []


def test_lock_contention_between_processes_names_the_holder(env):
    store, ring, key = env
    child = spawn(HOLDS_LOCK, store, key, "create")
    try:
        assert expect_line(child) == "locked"
        with pytest.raises(LockHeld, match=rf"'create' lock .* held by pid {child.pid} on host"):
            store.lock("create")
        started = time.monotonic()
        with pytest.raises(LockHeld, match="after waiting 0.3 s"):
            store.lock("create", wait_s=0.3)
        assert time.monotonic() - started >= 0.3
        with store.lock("binlog"), store.lock("prune"):
            pass  # other kinds never wait on "create"
        with store.begin_set("binlog", ["mysql"], ring, lock="binlog", parent="binlogs/u1/g1") as writer:
            writer.write_json("mysql", "index.json", [])
            writer.publish()
    finally:
        kill9(child)
    with store.lock("create", wait_s=5):  # a killed holder releases its lock
        pass


def test_second_create_run_fails_at_once_while_the_first_runs(env):
    store, ring, key = env
    child = spawn(BEGINS_SET, store, key)
    try:
        set_id = expect_line(child)
        started = time.monotonic()
        with pytest.raises(LockHeld, match=rf"pid {child.pid} .*set {set_id}"):
            store.begin_set("full", ["mysql"], ring)
        assert time.monotonic() - started < 2
    finally:
        kill9(child)
    assert store.clean_stale_partials(0) == [set_id]


def test_killed_component_step_of_a_detached_set_can_be_retried(env):
    store, ring, key = env
    set_id = store.begin_set("full", ["mysql", "redis"], ring, owner="run-1").detach()
    child = spawn(ENDLESS_COMPONENT, store, key, set_id)
    try:
        assert expect_line(child) == "streaming"
    finally:
        kill9(child)
    assert store.clean_stale_partials(0) == []  # detached set: its lease protects it
    with store.resume_set(set_id, ring, component="mysql") as retry:
        with retry.artifact("mysql", "dump.sql") as out:
            out.write(b"complete dump")
    manifest = store.resume_set(set_id, ring).publish()
    assert [a["path"] for a in manifest["artifacts"]] == ["mysql/dump.sql"]
    files = sorted(p.relative_to(store.root / set_id).as_posix() for p in (store.root / set_id).rglob("*"))
    assert files == ["backup_manifest.json", "metadata", "mysql", "mysql/dump.sql", "redis"]  # no leftovers
