"""Leases of open multi-process sets (issue 16 part 2), with real processes.

A backup set opened by one Ansible task and written by others keeps the store's
``create`` lock as a *lease* between the steps. A killed controller must not block every
later backup: a lease whose run owner is provably gone (same host and boot, process dead
or its pid reused) is taken over at once, one whose owner this host cannot see expires
after its short term unless the run's steps renew it, and a live run is never taken over.
Takeovers and refused backups are recorded; ``lifeboat health`` warns about leases;
``lifeboat abort`` is the operator's manual remedy.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.edge import cli
from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import health, metrics, orchestrate
from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit, jobs, locks, runstatus
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import utc_now
from ansible_collections.lifeboat.dr.plugins.module_utils.store.writer import DEFAULT_LEASE_S
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, IncompleteBackup, LockHeld


@pytest.fixture()
def env(tmp_path: Path):
    key = tmp_path / "k.key"
    keys.create_key_file(key)
    return Store(tmp_path / "store", reserve_bytes=0), keys.KeyRing(keys.FileKEK.load(key)), key


@pytest.fixture()
def controller():
    """A real process standing in for ``ansible-playbook`` (killed with SIGKILL by the tests)."""
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(["sleep", "300"])
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def open_set(store: Store, ring: keys.KeyRing, run_owner, lease_s: float = DEFAULT_LEASE_S) -> str:
    return orchestrate.open_multi_set_recorded(str(store.root), ["mysql", "redis"], ring, owner="backup.yml",
                                               run_owner=run_owner, lease_s=lease_s)["set_id"]


def other_host_owner() -> dict:
    """A run owner on another (simulated) controller: this host cannot judge it."""
    return {"host": "controller-elsewhere", "pid": 4242, "start_ticks": 123456,
            "boot_id": "00000000-0000-4000-8000-000000000000"}


# --------------------------------------------------------------------------- the owner's identity

def test_a_live_owner_is_alive_a_killed_one_dead_and_a_reused_pid_dead(controller):
    proc = controller()
    identity = locks.process_identity(proc.pid)
    assert identity["pid"] == proc.pid and identity["boot_id"] == locks.boot_id()
    assert locks.owner_state(identity) == "alive"
    # the same pid with another start time: the pid was reused by a newer process
    assert locks.owner_state(dict(identity, start_ticks=identity["start_ticks"] - 1)) == "dead"
    kill9(proc)
    assert locks.owner_state(identity) == "dead"


def test_a_zombie_owner_is_dead(tmp_path):
    # the controller was killed but nobody reaped it yet: its pid still exists, as a zombie
    child = subprocess.Popen(["sleep", "300"])
    identity = locks.process_identity(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while locks.process_stat(child.pid)[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        assert locks.owner_state(identity) == "dead"
    finally:
        child.wait(10)


def test_an_owner_on_another_host_or_boot_or_pid_namespace_cannot_be_judged(controller):
    identity = locks.process_identity(controller().pid)
    assert locks.owner_state(dict(identity, host="controller-elsewhere")) == "unknown"
    assert locks.owner_state(dict(identity, boot_id="00000000-0000-4000-8000-000000000000")) == "unknown"
    assert locks.owner_state(dict(identity, pid_ns="pid:[1]")) == "unknown"
    assert locks.owner_state(None) == "unknown"


def test_the_controller_pid_is_the_top_of_the_forked_chain_with_the_same_command_line(tmp_path):
    # like ansible-playbook -> forked worker (setsid) -> lookup: fork without exec, twice
    script = textwrap.dedent("""
        import os, sys, time
        from ansible_collections.lifeboat.dr.plugins.module_utils.store import locks
        out = sys.argv[1]
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                with open(out, "w") as f:
                    f.write(f"{locks.controller_pid(os.getpid())} {os.getppid()}")
                os._exit(0)
            os.wait()
            os._exit(0)
        os.wait()
        time.sleep(0.2)
    """)
    out = tmp_path / "pid"
    top = subprocess.Popen([sys.executable, "-c", script, str(out)])
    assert top.wait(30) == 0
    found, worker = (int(x) for x in out.read_text().split())
    assert found == top.pid
    assert worker != top.pid  # it really ran two forks below the top
    assert locks.controller_pid(os.getpid()) == os.getpid()  # a process whose parent runs something else


def test_a_malformed_run_owner_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="run_owner lacks a valid 'start_ticks'.*lifeboat.dr.run_owner"):
        locks.check_run_owner({"host": "h", "pid": 12, "boot_id": "b"})
    with pytest.raises(ConfigError, match="run_owner lacks a valid 'pid'"):
        locks.check_run_owner({"host": "h", "pid": 0, "start_ticks": 5, "boot_id": "b"})
    with pytest.raises(ConfigError, match="run_owner lacks a valid 'start_ticks'"):
        locks.check_run_owner({"host": "h", "pid": 12, "start_ticks": -1, "boot_id": "b"})
    assert locks.check_run_owner({"host": "h", "pid": "12", "start_ticks": "0", "boot_id": "b"}) == {
        "host": "h", "pid": 12, "start_ticks": 0, "boot_id": "b"}
    with pytest.raises(ConfigError, match="run_owner must be a dict"):
        locks.check_run_owner("pid 12")
    assert locks.check_run_owner(None) is None


# --------------------------------------------------------------------------- takeover on this host

def test_a_dead_controllers_lease_is_taken_over_at_once_and_recorded(env, controller):
    store, ring, _key = env
    owner_proc = controller()
    dead_owner = locks.process_identity(owner_proc.pid)
    dead_set = open_set(store, ring, dead_owner)
    writer = store.resume_set(dead_set, ring, component="mysql")
    with writer.artifact("mysql", "dump.sql") as out:
        out.write(b"partial work of the killed run")
    writer.detach()

    with pytest.raises(LockHeld, match=rf"leased to set {dead_set}.*lifeboat abort {dead_set} --store"):
        open_set(store, ring, locks.process_identity(controller().pid))  # owner alive: refused
    kill9(owner_proc)

    started = time.monotonic()
    new_set = open_set(store, ring, locks.process_identity(controller().pid))
    assert time.monotonic() - started < 5
    assert new_set != dead_set
    assert not (store.partial_root / dead_set).exists()
    assert not (store.partial_root / f"{dead_set}.lock").exists()
    assert [i.set_id for i in store.list_sets(include_partial=True)] == [new_set]

    history = {j["backup_id"]: j for j in jobs.read_jobs(store, kind="backup")}
    taken = history[dead_set]
    assert taken["result"] == "failed"
    assert taken["error"].startswith("aborted: taken over, its run owner ")
    assert f"pid {dead_owner['pid']}" in taken["error"] and "is gone" in taken["error"]
    assert taken["details"]["taken_over"] is True
    assert taken["details"]["taken_over_by"]["pid"] == os.getpid()
    assert taken["details"]["run_owner"]["pid"] == dead_owner["pid"]
    assert [j["backup_id"] for j in jobs.read_jobs(store)].count(dead_set) == 1  # one record per set
    refused = [j for j in jobs.read_jobs(store, kind="backup") if j["result"] == "refused"]
    assert len(refused) == 1 and refused[0]["details"]["blocked_by_set"] == dead_set

    trail = [r for r in audit.read_records(store) if r["target"] == dead_set]
    assert trail and trail[-1]["result"] == "failed"
    assert trail[-1]["details"]["taken_over"] is True
    assert trail[-1]["details"]["run_owner"]["pid"] == dead_owner["pid"]
    assert audit.verify(store)["ok"]


def test_a_live_run_is_never_taken_over_even_when_its_lease_term_passed(env, controller):
    store, ring, _key = env
    live = locks.process_identity(controller().pid)
    set_id = open_set(store, ring, live, lease_s=0.3)
    time.sleep(0.6)  # the term passed, but the owner provably lives on this host
    with pytest.raises(LockHeld, match=set_id):
        store.lock("create")
    assert (store.partial_root / set_id).is_dir()


WRITING_STEP = textwrap.dedent("""
    import sys, time
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
    from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
    store = Store(sys.argv[1], reserve_bytes=0)
    ring = keys.KeyRing(keys.FileKEK.load(sys.argv[2]))
    writer = store.resume_set(sys.argv[3], ring, component="mysql")
    out = writer.artifact("mysql", "dump.sql")
    out.write(b"x" * 1000)
    print("writing", flush=True)
    sys.stdin.readline()          # the test says when the step ends
    out.close()
    writer.detach()
    print("detached", flush=True)
""")


def test_a_step_still_writing_holds_the_set_even_after_its_controller_died(env, controller):
    # the kill -9 of ansible-playbook leaves module processes running in their own sessions
    store, ring, key = env
    owner_proc = controller()
    set_id = open_set(store, ring, locks.process_identity(owner_proc.pid))
    step = subprocess.Popen([sys.executable, "-c", WRITING_STEP, str(store.root), str(key), set_id],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert step.stdout.readline().strip() == "writing"
        kill9(owner_proc)
        with pytest.raises(LockHeld, match=set_id):
            store.lock("create")  # never under a live writer
        assert [lease["state"] for lease in store.lease_status()] == ["writing"]
        step.stdin.write("end\n")
        step.stdin.flush()
        assert step.stdout.readline().strip() == "detached"
        assert step.wait(30) == 0
    finally:
        if step.poll() is None:
            step.kill()
            step.wait(10)
    with store.lock("create"):  # the step ended: the dead run's lease is taken over now
        assert not (store.partial_root / set_id).exists()


def test_a_takeover_leaves_a_running_prune_and_key_rotation_holding_their_locks(env, controller):
    store, ring, key = env
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
        store = Store(sys.argv[1])
        with store.lock("rotate"), store.lock("prune"):
            print("locked", flush=True)
            time.sleep(300)
    """), str(store.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        owner_proc = controller()
        dead_set = open_set(store, ring, locks.process_identity(owner_proc.pid))
        kill9(owner_proc)
        open_set(store, ring, locks.process_identity(controller().pid))
        assert not (store.partial_root / dead_set).exists()
        for kind in ("prune", "rotate"):
            with pytest.raises(LockHeld, match=rf"'{kind}' lock .* is held by pid {holder.pid}"):
                store.lock(kind)
    finally:
        holder.kill()
        holder.wait(10)


# --------------------------------------------------------------------------- owners on other hosts

def test_a_lease_from_another_host_holds_while_renewed_and_expires_after_its_term(env):
    store, ring, _key = env
    term = 1.5
    set_id = open_set(store, ring, other_host_owner(), lease_s=term)
    renewals_until = time.monotonic() + 3 * term
    while time.monotonic() < renewals_until:  # the run's steps: each resume + detach renews the lease
        with pytest.raises(LockHeld, match=set_id):
            store.lock("create")
        store.resume_set(set_id, ring, component="redis").detach()
        time.sleep(term / 3)
    with pytest.raises(LockHeld, match=set_id):
        store.lock("create")  # renewed just now
    time.sleep(term + 0.3)  # the run went silent for longer than its term
    [lease] = store.lease_status()
    assert lease["state"] == "stale" and "expired" in lease["reason"]
    with store.lock("create"):
        assert not (store.partial_root / set_id).exists()
    [taken] = [j for j in jobs.read_jobs(store, kind="backup") if j["backup_id"] == set_id]
    assert taken["result"] == "failed" and "lease expired" in taken["error"]


STEP_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
    from ansible_collections.lifeboat.dr.plugins.module_utils.store import runstatus
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
    root, key, set_id, owner = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    writer = Store(root, reserve_bytes=0).resume_set(set_id, keys.KeyRing(keys.FileKEK.load(key)), component="redis")
    runstatus.activate_run_status(root, "step", kind="backup", component="redis", run_owner=owner,
                                  interval_s=1.0, owner_check_s=0.5)
    print("ready", flush=True)
    time.sleep(120)
""")


def test_a_step_whose_remote_controller_stops_polling_stops_itself_and_gives_up_the_lease(env):
    # the controller is another machine: this host can judge neither it nor its lease (5 min term);
    # the controller's polls are the tether (run_progress), and their silence ends the run and its lease
    store, ring, key = env
    owner = other_host_owner()
    set_id = open_set(store, ring, owner)
    step = subprocess.Popen([sys.executable, "-c", STEP_SCRIPT, str(store.root), str(key), set_id, json.dumps(owner)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))
    try:
        assert step.stdout.readline().strip() == "ready"
        status = runstatus.progress_dir(store.root) / "step.json"
        time.sleep(1.5)
        assert step.poll() is None  # never polled yet: not tethered, it runs on
        for _poll in range(6):  # polled on a 0.5 s beat: it runs on
            runstatus.record_poll(status, 0.5)
            time.sleep(0.5)
        assert step.poll() is None
        with pytest.raises(LockHeld, match=set_id):
            store.lock("create")
        silent = time.monotonic() - 0.5
        assert step.wait(timeout=30) == 75
        took = time.monotonic() - silent
        assert 0.5 + runstatus.POLL_GRACE_S - 0.2 < took < 0.5 + runstatus.POLL_GRACE_S + 2.0, took
        assert "polls stopped" in step.stderr.read()
    finally:
        if step.poll() is None:
            step.kill()
            step.wait(10)
    [lease] = store.lease_status()
    assert lease["state"] == "stale" and "stopped itself" in lease["reason"] and "polls stopped" in lease["reason"]
    assert not runstatus.poll_path(status).exists()
    with store.lock("create"):  # at once, not after the lease's 5 minutes
        assert not (store.partial_root / set_id).exists()
    [taken] = [j for j in jobs.read_jobs(store, kind="backup") if j["backup_id"] == set_id]
    assert taken["result"] == "failed" and "stopped itself" in taken["error"]


def test_an_abandoned_mark_only_lands_on_the_lease_of_its_own_set(env):
    store, ring, _key = env
    set_id = open_set(store, ring, other_host_owner())
    assert not locks.abandon_lease(store.root / "locks", "create", "full_20200101T000000Z_0000", "gone")
    with pytest.raises(LockHeld, match=set_id):
        store.lock("create")
    assert locks.abandon_lease(store.root / "locks", "create", set_id, "its controller is gone")
    assert locks.lease_stale_reason(locks.read_holder(store.root / "locks" / "create.lock")) == \
        "its run stopped itself (its controller is gone)"


def test_a_step_renews_the_lease_while_it_works_and_stops_when_it_detaches(env, monkeypatch):
    store, ring, _key = env
    # 60 s in production
    monkeypatch.setattr("ansible_collections.lifeboat.dr.plugins.module_utils.store.writer.RENEW_EVERY_S", 0.2)
    lock_file = store.root / "locks" / "create.lock"
    set_id = open_set(store, ring, other_host_owner(), lease_s=1.0)
    opened = locks.read_holder(lock_file)["lease_until"]
    step = store.resume_set(set_id, ring, component="mysql")
    try:
        time.sleep(2.0)  # twice the term: only the step's own renewals keep the lease current
        record = locks.read_holder(lock_file)
        assert locks.lease_active(record) and record["lease_until"] > opened and record["renewed"]
        lease_json = json.loads((store.partial_root / set_id / ".state" / "lease.json").read_text())
        assert locks.lease_active(lease_json)
    finally:
        step.detach()
    detached = locks.read_holder(lock_file)["lease_until"]
    time.sleep(0.6)
    assert locks.read_holder(lock_file)["lease_until"] == detached  # no renewal after the step


def test_the_default_lease_term_is_five_minutes_and_recorded_with_the_owner(env):
    store, ring, _key = env
    before = time.time()
    set_id = open_set(store, ring, other_host_owner())
    record = locks.read_holder(store.root / "locks" / "create.lock")
    until = locks.datetime.fromisoformat(record["lease_until"].replace("Z", "+00:00")).timestamp()
    assert DEFAULT_LEASE_S == 300
    assert before + 290 < until < time.time() + 301
    assert record["run_owner"] == other_host_owner() and record["set_id"] == set_id
    lease_json = json.loads((store.partial_root / set_id / ".state" / "lease.json").read_text())
    assert lease_json["run_owner"] == other_host_owner()


# --------------------------------------------------------------------------- health, jobs, abort

def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_health_warns_about_a_held_lease_and_counts_the_backups_it_refused(env, controller, capsys):
    store, ring, _key = env
    live = locks.process_identity(controller().pid)
    set_id = open_set(store, ring, live)
    for _attempt in range(2):
        with pytest.raises(LockHeld):
            open_set(store, ring, other_host_owner())
    report = health.build_report(store)
    [lease] = report["leases"]
    assert (lease["set_id"], lease["state"], lease["refused_backups"]) == (set_id, "held", 2)
    assert lease["run_owner"]["pid"] == live["pid"] and lease["since"]
    assert report["refused_backups_in_window"] == 2
    assert report["status"] in ("warning", "critical")
    [problem] = [p for p in report["problems"] if set_id in p["message"]]
    assert problem["level"] == "warning"
    assert f"pid {live['pid']}" in problem["message"] and "2 backup(s) refused" in problem["message"]
    assert "since" in problem["message"]

    code, out, _err = run_cli(capsys, "jobs", "--store", str(store.root), "--json")
    assert [j["result"] for j in json.loads(out)].count("refused") == 2
    text = metrics.render(report)
    assert 'lifeboat_lock_lease_stale{lock="create"} 0' in text
    assert "lifeboat_backups_refused 2" in text


def test_health_is_a_warning_exit_1_for_a_stale_lease_alone(env, controller, capsys):
    store, ring, _key = env
    # a healthy store: one published, verified set
    with store.begin_set("mysql", ["mysql"], ring, lock=None) as writer:
        with writer.artifact("mysql", "dump.sql") as out:
            out.write(b"data")
        writer.publish()
    jobs.record_job(store, "backup", start=utc_now(), result="ok", components=["mysql"])
    owner_proc = controller()
    set_id = open_set(store, ring, locks.process_identity(owner_proc.pid))
    kill9(owner_proc)
    code, out, _err = run_cli(capsys, "health", "--store", str(store.root))
    assert code == 1, out
    assert f"STALE: its run owner pid {owner_proc.pid}" in out and set_id in out
    assert "the next backup takes it over" in out
    assert (store.partial_root / set_id).is_dir()  # health changes nothing
    assert 'lifeboat_lock_lease_stale{lock="create"} 1' in metrics.render(health.build_report(store))


def test_lifeboat_abort_refuses_a_held_lease_without_force_and_records_the_abort(env, controller, capsys):
    store, ring, _key = env
    set_id = open_set(store, ring, locks.process_identity(controller().pid))
    code, _out, err = run_cli(capsys, "abort", set_id, "--store", str(store.root))
    assert code != 0
    assert "LockHeld" in err and f"lifeboat abort {set_id} --force" in err
    assert (store.partial_root / set_id).is_dir()

    code, out, _err = run_cli(capsys, "abort", set_id, "--store", str(store.root), "--force",
                              "--reason", "AWX job 7 cancelled")
    assert code == 0 and "aborted" in out
    assert not (store.partial_root / set_id).exists()
    store.lock("create").release()  # the lease ended
    [job] = [j for j in jobs.read_jobs(store, kind="backup") if j["backup_id"] == set_id]
    assert job["result"] == "failed" and "aborted by the operator" in job["error"] and "AWX job 7" in job["error"]
    assert [r for r in audit.read_records(store) if r["target"] == set_id][-1]["result"] == "failed"

    code, _out, err = run_cli(capsys, "abort", set_id, "--store", str(store.root))
    assert code != 0 and "NotFound" in err and "lifeboat list --partial" in err


def test_lifeboat_abort_of_a_stale_lease_needs_no_force(env):
    store, ring, _key = env
    set_id = open_set(store, ring, other_host_owner(), lease_s=0.2)
    time.sleep(0.4)
    assert cli.main(["abort", set_id, "--store", str(store.root)]) == 0
    assert not (store.partial_root / set_id).exists()


def test_errors_name_the_operator_command_never_an_internal_python_api(env):
    store, ring, _key = env
    set_id = open_set(store, ring, other_host_owner())
    (store.partial_root / set_id / ".state" / "set.json").unlink()  # a damaged open set
    with pytest.raises(IncompleteBackup, match=rf"lifeboat abort {set_id} --store {store.root}"):
        store.resume_set(set_id, ring, component="mysql")
    module_utils = Path(inspect.getfile(Store)).parents[1]  # store/catalog.py -> module_utils
    offenders = [str(p.relative_to(module_utils)) for p in module_utils.rglob("*.py")
                 if "Store.abort_set)" in p.read_text(encoding="utf-8")]
    assert offenders == []
