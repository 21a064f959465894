"""Every scenario of scenarios.yml as a drill: steady state, real fault, real recovery, measure, assert.

A drill:
  1. checks the steady state with testinfra (unhealthy -> ERROR "not drillable", not a failure);
  2. starts the canary writer (~10 writes/s) and a /health monitor;
  3. fingerprints the non-canary data, runs the scenario's ``setup`` playbooks (what production
     runs on a schedule, e.g. the binlog archive) and, when the scenario needs one, takes a
     backup with playbooks/backup.yml (or uses --backup-id);
  4. injects the fault (dr_tests/faults.py) and runs the recovery playbooks with ansible-playbook;
  5. waits until the app serves a real read of the drill's data (/health 200 and the newest
     canary record of every promised store from /canary/latest: RTO = that - fault time),
     writes a little longer, reads the canaries back (losses; RPO = fault time - the newest
     state the recovery brought back, the restored backup's capture point when no canary
     write of the drill survived), fingerprints the data again;
  6. fails with measured vs target and the slowest step when a target is missed;
  7. always brings the lab back (``python -m lab up`` + health wait) for the next drill.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from dr_tests import measure
from dr_tests.canary import CanaryWriter, check_canaries, coverage_problem, read_canaries
from dr_tests.conftest import (
    COMPOSE_INVENTORY,
    MULTIHOST_INVENTORY,
    bring_lab_back,
    deployment_of,
    load_scenarios,
    multihost_unavailable_reason,
)
from dr_tests.conftest import lab_command as conftest_lab_command
from dr_tests.faults import FaultHadNoEffect, PartitionDb, make_fault
from dr_tests.measure import DrillInventory, NotDrillable, PlaybookFailed, Step
from dr_tests.report import DrillRecord, fmt_s, iso

SCENARIOS = load_scenarios()
LOG_ROOT = measure.REPO_DIR / "reports" / "drills"
PRE_FAULT_WRITE_S = 3.0
POST_RECOVERY_WRITE_S = 2.0
MIN_ACKED = 20  # acknowledged canary writes a drill needs in its promised window (and >= 1 per second)
WARMUP_ACKED = MIN_ACKED + 5  # written before the promise point (backup) and before the fault
WARMUP_MAX_S = 15.0  # ... unless the app acknowledges too slowly: then the coverage check fails the drill


def scenario_params():
    return [pytest.param(s, id=s["id"], marks=[getattr(pytest.mark, m) for m in s.get("markers", [])])
            for s in SCENARIOS]


@pytest.fixture
def inventory(drill_inventory: DrillInventory, scenario: dict, pytestconfig: pytest.Config,
              request: pytest.FixtureRequest, drill_record: DrillRecord) -> DrillInventory:
    """The inventory the scenario is drilled on (its deployment is recorded for the report).

    A scenario declaring ``inventory: lab-multihost`` runs on the multi-host lab -- brought
    up for it by the session fixture ``multihost_lab`` -- and ``inventory: lab-compose`` on
    the compose lab (fixture ``compose_lab``), unless ``--inventory`` was given (then
    everything runs on that one). When the multi-host lab cannot run here (not root, no
    ``ip netns``) the scenario falls back to the session inventory, and the report's fault
    mode says so (e.g. the partition is then emulated with SIGSTOP); a compose scenario has no
    fallback (skipped, naming why).
    """
    chosen = choose_inventory(drill_inventory, scenario, pytestconfig, request, drill_record)
    drill_record.deployment = deployment_of(chosen)
    return chosen


def choose_inventory(drill_inventory: DrillInventory, scenario: dict, pytestconfig: pytest.Config,
                     request: pytest.FixtureRequest, drill_record: DrillRecord) -> DrillInventory:
    wanted = scenario.get("inventory") or scenario.get("prefer_inventory")
    if not wanted or pytestconfig.getoption("--inventory"):
        return drill_inventory
    if wanted == COMPOSE_INVENTORY.name:
        return request.getfixturevalue("compose_inventory")
    if wanted != MULTIHOST_INVENTORY.name:
        pytest.fail(f"scenario {scenario['id']}: unknown inventory {wanted!r} -- use {MULTIHOST_INVENTORY.name} "
                    f"or {COMPOSE_INVENTORY.name}", pytrace=False)
    lab = request.getfixturevalue("multihost_lab")
    if not lab.available:
        drill_record.fault_mode = f"multi-host lab unavailable: {lab.reason}; fell back to {drill_inventory.path.name}"
        return drill_inventory
    return request.getfixturevalue("multihost_inventory")


@pytest.fixture
def steady_lab(inventory: DrillInventory, drill_store: Path, drill_record: DrillRecord):
    """Setup: the steady state must hold BEFORE the fault (else ERROR, not drillable).
    Teardown: bring the lab back, whatever happened."""
    problems = measure.steady_state_problems(inventory)
    if problems:
        drill_record.message = "not drillable: steady state unhealthy before the fault: " + "; ".join(problems)
        pytest.fail(drill_record.message, pytrace=False)
    cleanups: list = []
    yield cleanups
    for cleanup in cleanups:
        cleanup()
    problem = bring_lab_back(inventory)
    assert not problem, f"cleanup after the drill: {problem}"


def take_backup(inv: DrillInventory, log_dir: Path, extra_vars: dict | None = None) -> tuple[str, Step]:
    """Run playbooks/backup.yml (with the scenario's ``backup_vars``); the id of the set it published
    (read from its summary)."""
    step = measure.run_playbook(inv.path, "backup.yml", dict(extra_vars or {}), log_dir, kind="setup")
    text = (log_dir / "backup.log").read_text()
    match = re.findall(r'"backup_id": "([^"]+)"', text)
    if not match:
        raise PlaybookFailed(f"backup.yml did not report a backup_id (log {log_dir / 'backup.log'})")
    return match[-1], step


def require_mysql_base(record: DrillRecord, store: Path, backup_id: str) -> None:
    """A drill promising a ``mysql_base`` must restore such a set: else it is not drillable (the
    comparison of the methods' RTOs would compare nothing)."""
    method = measure.mysql_method_of(store, backup_id)
    if method != record.mysql_base:
        record.message = (f"not drillable: the scenario drills a {record.mysql_base} MySQL base, but set {backup_id} "
                          f"holds a {method or 'no'} MySQL backup")
        pytest.fail(record.message, pytrace=False)


def kept_datadir_cleanup(inv: DrillInventory):
    """On a lab inventory: a cleanup removing the MySQL datadirs the drill's physical restore kept aside
    (``<datadir>.lbprev_*``; Lifeboat itself never deletes them), so drills do not fill the disk."""
    if not conftest_lab_command(inv):
        return lambda: None
    datadir = Path(str(inv.var("mysql", "lifeboat_mysql_datadir")))
    before = set(datadir.parent.glob(f"{datadir.name}.lbprev_*"))

    def cleanup() -> None:
        for path in set(datadir.parent.glob(f"{datadir.name}.lbprev_*")) - before:
            shutil.rmtree(path, ignore_errors=True)

    return cleanup


def fill(value, backup_id: str | None):
    """Replace "{backup_id}" in extra vars (recursively)."""
    if isinstance(value, str):
        return value.replace("{backup_id}", backup_id or "")
    if isinstance(value, list):
        return [fill(v, backup_id) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, backup_id) for k, v in value.items()}
    return value


def target_failures(record: DrillRecord) -> list[str]:
    """Messages for every missed target (measured vs target, the slowest step)."""
    failures = []
    slowest = record.slowest_step()
    slow = f" (slowest step: {slowest.name} {slowest.duration_s:.1f} s)" if slowest else ""
    if record.rto_s is None:
        failures.append(f"RTO not met: the app never became healthy; target {record.rto_target_s:.0f} s{slow}")
    elif record.rto_s > record.rto_target_s:
        failures.append(f"RTO missed: measured {record.rto_s:.1f} s > target {record.rto_target_s:.0f} s{slow}")
    if record.rpo_s is not None and record.rpo_s > record.rpo_target_s:
        failures.append(f"RPO missed: measured {record.rpo_s:.1f} s > target {record.rpo_target_s:g} s "
                        f"(fault at {iso(record.fault_at)}, newest recovered write at "
                        f"{iso(record.newest_recovered_at)}: {record.rpo_basis})")
    return failures


def sigstop_refusal(fault) -> str | None:
    """Why the SIGSTOP emulation of a partition may not run here (None when it may): as root in
    CI (``CI=true``), where network namespaces are possible, only a real link cut counts."""
    if (not isinstance(fault, PartitionDb) or fault.veth or fault.compose
            or os.environ.get("CI", "").lower() != "true"):
        return None
    if multihost_unavailable_reason():
        return None
    return ("network_partition: refusing the SIGSTOP emulation in CI (CI=true) as root, where network "
            "namespaces are possible -- the multi-host lab must run and the mysql host set lifeboat_drill_veth "
            "(python -m lab multihost up; drill without --inventory or with --inventory inventories/lab-multihost)")


def wait_for_canaries(writer: CanaryWriter, stores: list[str], since: float, min_s: float) -> None:
    """Let the canary writer run at least ``min_s`` seconds and until every store in ``stores``
    acknowledged :data:`WARMUP_ACKED` writes since ``since`` (at most :data:`WARMUP_MAX_S`)."""
    started = time.time()
    while time.time() - started < WARMUP_MAX_S:
        acked = [sum(1 for w in list(writer.writes) if w.acked_by(s) and (w.acked_at or 0) >= since) for s in stores]
        if time.time() - started >= min_s and min(acked, default=0) >= WARMUP_ACKED:
            return
        time.sleep(0.2)


def read_backup_point(record: DrillRecord, store: Path, backup_id: str) -> dict[str, float]:
    """The restored set's capture point per component (see measure.backup_points); sets
    ``record.backup_at`` (the newest) and its source."""
    try:
        points, source = measure.backup_points(store, backup_id)
    except ValueError as err:
        pytest.fail(f"not drillable: {err}", pytrace=False)
    record.backup_at = max(points.values()) if points else None
    record.backup_point_source = source
    return points


@pytest.mark.parametrize("scenario", scenario_params())
def test_drill(scenario: dict, inventory: DrillInventory, steady_lab: list, drill_record: DrillRecord,
               drill_store: Path, pytestconfig: pytest.Config) -> None:
    record = drill_record
    log_dir = LOG_ROOT / scenario["id"]
    stores = list(scenario.get("canary_stores", ["mysql"]))
    fault = make_fault(inventory, scenario["fault"])
    steady_lab.append(fault.cleanup)
    record.fault_mode = "; ".join(filter(None, [
        scenario["fault"]["name"] + (f" ({fault.mode})" if hasattr(fault, "mode") else ""), record.fault_mode]))
    refusal = sigstop_refusal(fault)
    if refusal:
        record.message = f"not drillable: {refusal}"
        pytest.fail(record.message, pytrace=False)

    writer = CanaryWriter(inventory.app_url, base=int(time.time() * 1000) * 1000,
                          rate=pytestconfig.getoption("--canary-rate"))
    monitor = measure.HealthMonitor(inventory.app_url)
    steady_lab.insert(0, writer.stop)
    steady_lab.insert(0, monitor.stop)
    writer.start()
    monitor.start()
    fingerprint_before = measure.fingerprint(inventory)
    unreadable = measure.unreadable_components(fingerprint_before)
    if unreadable:
        record.message = "not drillable: cannot fingerprint the data before the fault: " + "; ".join(unreadable)
        pytest.fail(record.message, pytrace=False)

    for entry in scenario.get("setup", []):
        try:
            record.steps.append(measure.run_playbook(inventory.path, entry["playbook"],
                                                     dict(entry.get("extra_vars") or {}), log_dir, kind="setup"))
        except PlaybookFailed as err:
            pytest.fail(f"not drillable: setup playbook {entry['playbook']} failed: {err}", pytrace=False)
    backup_id = pytestconfig.getoption("--backup-id")
    backup_path = pytestconfig.getoption("--backup-path")
    backup_points: dict[str, float] = {}
    if scenario.get("backup") and not backup_id:
        # the canary writes must span the window the backup promises to keep
        wait_for_canaries(writer, stores, since=0.0, min_s=2.5)
        try:
            backup_id, step = take_backup(inventory, log_dir, scenario.get("backup_vars"))
        except PlaybookFailed as err:
            pytest.fail(f"not drillable: the backup before the fault failed: {err}", pytrace=False)
        record.steps.append(step)
        record.promise_at = step.start if scenario.get("promise") == "backup" else None
    record.backup_id = backup_id
    # the store the backup went to: the scenario's inventory's (the session's drill_store holds the history)
    set_store = Path(backup_path) if backup_path else Path(str(inventory.var("backup_store", "lifeboat_store")))
    if backup_id and scenario.get("backup"):
        backup_points = read_backup_point(record, set_store, backup_id)
    if backup_id and record.mysql_base != "logical":
        require_mysql_base(record, set_store, backup_id)
        steady_lab.insert(0, kept_datadir_cleanup(inventory))
        if scenario.get("promise") == "backup" and record.promise_at is None:
            record.promise_at = record.backup_at  # --backup-id: the set's own capture point
    if scenario.get("promise") == "fault":
        record.promise_at = float("inf")  # set to the fault time below
    time.sleep(PRE_FAULT_WRITE_S)
    wait_for_canaries(writer, stores, since=0.0, min_s=0.0)

    # --- the fault
    record.fault_at = time.time()
    try:
        description = fault.inject()
        fault.verify_effect()
    except FaultHadNoEffect as err:
        record.message = f"not drillable: the fault had no effect: {err}"
        pytest.fail(record.message, pytrace=False)
    except NotDrillable as err:
        record.message = f"not drillable: {err}"
        pytest.fail(record.message, pytrace=False)
    record.steps.append(Step(name=fault.name, kind="fault", start=record.fault_at, end=time.time(),
                             detail=description + " (effect verified)"))
    if record.promise_at == float("inf"):
        record.promise_at = record.fault_at

    # --- recovery: the harness's part (end of a timed fault), then the playbooks
    failures: list[str] = []
    started = time.time()
    healed = fault.heal()
    if healed:
        record.steps.append(Step(name="restore connectivity", kind="recovery", start=started, end=time.time(),
                                 detail=healed))
    for entry in scenario.get("recovery", []):
        extra_vars = fill(dict(entry.get("extra_vars") or {}), backup_id)
        if backup_path:
            extra_vars["lifeboat_source_store"] = backup_path
        try:
            record.steps.append(measure.run_playbook(inventory.path, entry["playbook"], extra_vars, log_dir))
        except PlaybookFailed as err:
            if err.step:
                record.steps.append(err.step)
            failures.append(f"recovery failed: {err}")
            break
    record.recovered_at = time.time()

    # --- measure: RTO (a real read of the drill's data), canaries, data
    budget = max(30.0, min(record.rto_target_s, 600.0) - (time.time() - record.fault_at))
    record.healthy_at = (measure.wait_serving(inventory.app_url, writer.seq_range, stores, budget)
                         if not failures else None)
    record.rto_s = None if record.healthy_at is None else record.healthy_at - record.fault_at
    record.steps.append(Step(name="app serves the drill's data (/health + /canary/latest)", kind="check",
                             start=record.recovered_at, end=record.healthy_at or time.time(),
                             ok=record.healthy_at is not None,
                             detail="" if record.healthy_at or failures else
                             str(measure.serving_problem(inventory.app_url, writer.seq_range, stores))))
    if record.healthy_at:
        time.sleep(POST_RECOVERY_WRITE_S)
    writer.stop()
    monitor.stop()
    record.writes, record.health = writer.writes, monitor.samples

    if not failures:
        check_canary_stores(scenario, inventory, writer, record, failures, backup_points)
        fingerprint_after = measure.fingerprint(inventory)
        record.differences = measure.fingerprint_differences(fingerprint_before, fingerprint_after)
        record.data_equal = not record.differences
        if record.differences:
            failures.append("data differs from before the fault: " + "; ".join(record.differences[:8]))
        problems = measure.steady_state_problems(inventory)
        if problems:
            failures.append("steady state not restored: " + "; ".join(problems))
    failures = failures + target_failures(record)
    if failures:
        record.message = "\n".join(failures)
        pytest.fail(record.message, pytrace=False)
    record.message = (f"RTO {fmt_s(record.rto_s)} <= {record.rto_target_s:.0f} s, "
                      f"RPO {fmt_s(record.rpo_s)} <= {record.rpo_target_s:g} s ({record.rpo_explanation()})")


def promised_window(writer: CanaryWriter, record: DrillRecord) -> tuple[float, float]:
    """``[start, end)``: the part of the window the scenario promises to keep that the canary
    writer could see -- from its first write to the promise point (the backup's start, or the
    fault), or to the fault when the restored backup predates the writer (then its age is
    accounted for by its capture point)."""
    start = writer.writes[0].sent_at if writer.writes else record.fault_at
    end = record.promise_at if record.promise_at and record.promise_at > start + 1.0 else record.fault_at
    return start, min(end, record.fault_at)


def check_canary_stores(scenario: dict, inventory: DrillInventory, writer: CanaryWriter, record: DrillRecord,
                        failures: list[str], backup_points: dict[str, float] | None = None) -> None:
    """Read the canaries back and run the set checker for each store the scenario promises;
    the drill's RPO is the worst store's (and names its basis)."""
    try:
        present = read_canaries(inventory.app_url)
    except Exception as err:  # noqa: BLE001 - unreadable canaries fail the drill with the reason
        failures.append(f"cannot read the canaries back: {err}")
        return
    start, end = promised_window(writer, record)
    worst = None
    for store in scenario.get("canary_stores", ["mysql"]):
        seqs = present.get(store)
        if seqs is None:
            failures.append(f"canary store {store} could not be read after recovery")
            continue
        problem = coverage_problem(writer.writes, store, start, end, min_total=MIN_ACKED)
        if problem:
            failures.append(problem)
        component = measure.CANARY_STORE_COMPONENT[store]
        backup_at = (backup_points or {}).get(component, record.backup_at) if backup_points else None
        result = check_canaries(writer.writes, seqs, store, fault_at=record.fault_at, promise_at=record.promise_at,
                                recovered_at=record.recovered_at, seq_range=writer.seq_range,
                                outage_promised=scenario.get("promise") == "fault", backup_at=backup_at)
        record.canary[store] = result.summary()
        record.lost += len(result.lost)
        if worst is None or result.rpo_s > worst.rpo_s:
            worst = result
        if not result.ok:
            failures.append(
                f"canary {store}: {len(result.lost)} acknowledged writes lost (first {result.lost[:5]}; "
                f"{len(result.lost_in_outage)} acknowledged during the outage), "
                f"unexpected {result.unexpected[:5]}, duplicates {result.duplicates[:5]}, holes {result.holes[:5]}")
    if worst is None:
        return
    record.rpo_s = worst.rpo_s
    record.newest_recovered_at = worst.newest_recovered_at if worst.rpo_s > 0 else None
    record.loss_window_end = worst.loss_window_end if worst.rpo_s > 0 else None
    record.rpo_basis = f"{worst.store}: {worst.rpo_basis}"
