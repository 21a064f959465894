"""A killed controller blocks no backup (issue 16 part 2): ``kill -9`` of the whole
``ansible-playbook`` process group in the middle of ``playbooks/backup.yml`` against the lab,
then the next backup on the same host succeeds within a minute, the dead run's open set is
removed and the takeover is in the job history and the audit trail.

First test: the backup is held open deterministically by the test hook
``lifeboat_test_pause_before_publish`` (every component written, the set not yet published);
Ansible's workers run in their own sessions, so they survive the kill like in real life; the
test ends them afterwards by pid. Second test: the kill lands while a component step is
writing the set (seen as a ``writing`` lease); the set stays held until that step's process
is gone, then the next backup takes it over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from controller_procs import descendants, read_until

from ansible_collections.lifeboat.dr.plugins.module_utils.ops import health
from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit, jobs, locks
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

REPO = Path(__file__).resolve().parents[2]


def playbook_argv(name: str, *extra: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1")
    argv = ["ansible-playbook", "-i", "inventories/lab", f"playbooks/{name}.yml",
            "-e", '{"lifeboat_mysql_databases": ["demo"]}', *extra]
    return argv, env


def partial_sets(store: Store) -> set[str]:
    return {p.name for p in store.partial_root.glob("*_*") if p.is_dir()}


def test_kill_9_of_the_controller_mid_backup_then_the_next_backup_succeeds_within_a_minute(lab_env):
    store = Store(lab_env["LAB_STORE"])
    before = partial_sets(store)
    published_before = {s.set_id for s in store.list_sets()}
    argv, env = playbook_argv("backup", "-e", "lifeboat_test_pause_before_publish=300")
    controller = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
    orphans: list[int] = []
    try:
        read_until(controller, "Pause before publishing")
        [dead_set] = partial_sets(store) - before
        [lease] = [entry for entry in store.lease_status() if entry["set_id"] == dead_set]
        # the lease names the ansible-playbook process itself (found by the run_owner lookup)
        assert lease["run_owner"]["pid"] == controller.pid
        assert lease["run_owner"]["start_ticks"] == locks.process_stat(controller.pid)[2]
        assert (lease["state"], lease["run_owner_state"]) == ("held", "alive")

        orphans = descendants(controller.pid)
        os.killpg(controller.pid, signal.SIGKILL)  # the whole controller process group
        controller.wait(30)
        killed_at = time.monotonic()

        report = health.build_report(store)
        [stale] = [entry for entry in report["leases"] if entry["set_id"] == dead_set]
        assert stale["state"] == "stale" and f"pid {controller.pid}" in stale["reason"]
        assert any(dead_set in p["message"] and p["level"] == "warning" for p in report["problems"])

        argv, env = playbook_argv("backup", "-e", "components=redis,app")
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
        took = time.monotonic() - killed_at
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert took < 60, f"the next backup took {took:.1f} s after the kill"
    finally:
        if controller.poll() is None:
            os.killpg(controller.pid, signal.SIGKILL)
            controller.wait(30)
        for pid in orphans:  # the killed controller's workers (own sessions), still pausing
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    assert dead_set not in partial_sets(store)
    new_sets = {s.set_id for s in store.list_sets()} - published_before
    assert len(new_sets) == 1 and dead_set not in new_sets
    [record] = [j for j in jobs.read_jobs(store, kind="backup") if j["backup_id"] == dead_set]
    assert record["result"] == "failed" and record["error"].startswith("aborted: taken over")
    assert record["details"]["run_owner"]["pid"] == controller.pid
    trail = [r for r in audit.read_records(store) if r["target"] == dead_set]
    assert trail[-1]["details"]["taken_over"] is True
    assert audit.verify(store)["ok"]
    assert not [entry for entry in store.lease_status() if entry["set_id"] == dead_set]


def test_kill_9_of_the_controller_during_a_component_step_then_the_next_backup_succeeds_within_a_minute(lab_env):
    # the killed controller's module process keeps writing (own session) and holds the set until it ends;
    # then the dead run's lease is stale and the next backup takes it over
    store = Store(lab_env["LAB_STORE"])
    published_before = {s.set_id for s in store.list_sets()}
    argv, env = playbook_argv("backup")
    controller = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
    orphans: list[int] = []
    try:
        deadline = time.monotonic() + 300
        writing = []
        while not writing:
            assert controller.poll() is None, "the backup ended before any component step was seen writing"
            assert time.monotonic() < deadline
            writing = [entry for entry in store.lease_status() if entry["state"] == "writing"]
            time.sleep(0.01)
        dead_set = writing[0]["set_id"]
        assert writing[0]["run_owner"]["pid"] == controller.pid
        orphans = descendants(controller.pid)
        os.killpg(controller.pid, signal.SIGKILL)
        controller.wait(30)
        killed_at = time.monotonic()

        while any(entry["state"] == "writing" for entry in store.lease_status()):  # the orphaned step ends
            assert time.monotonic() - killed_at < 50, "the orphaned step did not end"
            time.sleep(0.1)
        argv, env = playbook_argv("backup", "-e", "components=redis,app")
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
        took = time.monotonic() - killed_at
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert took < 60, f"the next backup succeeded {took:.1f} s after the kill"
    finally:
        if controller.poll() is None:
            os.killpg(controller.pid, signal.SIGKILL)
            controller.wait(30)
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    assert dead_set not in partial_sets(store)
    assert dead_set not in {s.set_id for s in store.list_sets()}
    assert len({s.set_id for s in store.list_sets()} - published_before) == 1
    [record] = [j for j in jobs.read_jobs(store, kind="backup") if j["backup_id"] == dead_set]
    assert record["result"] == "failed" and record["error"].startswith("aborted: taken over")
