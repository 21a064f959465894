"""Every scenario of scenarios.yml as a drill: steady state, real fault, real recovery, measure, assert.

A drill:
  1. checks the steady state with testinfra (unhealthy -> ERROR "not drillable", not a failure);
  2. starts the canary writer (~10 writes/s) and a /health monitor;
  3. fingerprints the non-canary data, runs the scenario's ``setup`` playbooks (what production
     runs on a schedule, e.g. the binlog archive) and, when the scenario needs one, takes a
     backup with playbooks/backup.yml (or uses --backup-id);
  4. injects the fault (dr_tests/faults.py) and runs the recovery playbooks with ansible-playbook;
  5. waits for the first healthy /health (RTO = that - fault time), writes a little longer,
     reads the canaries back (RPO, losses), fingerprints the data again;
  6. fails with measured vs target and the slowest step when a target is missed;
  7. always brings the lab back (``python -m lab up`` + health wait) for the next drill.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from dr_tests import measure
from dr_tests.canary import CanaryWriter, check_canaries, read_canaries
from dr_tests.conftest import MULTIHOST_INVENTORY, bring_lab_back, load_scenarios
from dr_tests.faults import make_fault
from dr_tests.measure import DrillInventory, PlaybookFailed, Step
from dr_tests.report import DrillRecord, fmt_s

SCENARIOS = load_scenarios()
LOG_ROOT = measure.REPO_DIR / "reports" / "drills"
PRE_FAULT_WRITE_S = 3.0
POST_RECOVERY_WRITE_S = 2.0


def scenario_params():
    return [pytest.param(s, id=s["id"], marks=[getattr(pytest.mark, m) for m in s.get("markers", [])])
            for s in SCENARIOS]


@pytest.fixture
def inventory(drill_inventory: DrillInventory, scenario: dict, pytestconfig: pytest.Config,
              request: pytest.FixtureRequest, drill_record: DrillRecord) -> DrillInventory:
    """The inventory the scenario is drilled on.

    A scenario declaring ``inventory: lab-multihost`` runs on the multi-host lab -- brought
    up for it by the session fixture ``multihost_lab`` -- unless ``--inventory`` was given
    (then everything runs on that one). When the multi-host lab cannot run here (not root,
    no ``ip netns``) the scenario falls back to the session inventory, and the report's
    fault mode says so (e.g. the partition is then emulated with SIGSTOP).
    """
    wanted = scenario.get("inventory") or scenario.get("prefer_inventory")
    if not wanted or pytestconfig.getoption("--inventory"):
        return drill_inventory
    if wanted != MULTIHOST_INVENTORY.name:
        pytest.fail(f"scenario {scenario['id']}: unknown inventory {wanted!r} -- use {MULTIHOST_INVENTORY.name}",
                    pytrace=False)
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


def take_backup(inv: DrillInventory, log_dir: Path) -> tuple[str, Step]:
    """Run playbooks/backup.yml; the id of the set it published (read from its summary)."""
    step = measure.run_playbook(inv.path, "backup.yml", {}, log_dir, kind="setup")
    text = (log_dir / "backup.log").read_text()
    match = re.findall(r'"backup_id": "([^"]+)"', text)
    if not match:
        raise PlaybookFailed(f"backup.yml did not report a backup_id (log {log_dir / 'backup.log'})")
    return match[-1], step


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
        failures.append(f"RPO missed: measured {record.rpo_s:.1f} s > target {record.rpo_target_s:.0f} s "
                        f"(last surviving canary write {record.rpo_s:.1f} s before the fault)")
    return failures


@pytest.mark.parametrize("scenario", scenario_params())
def test_drill(scenario: dict, inventory: DrillInventory, steady_lab: list, drill_record: DrillRecord,
               pytestconfig: pytest.Config) -> None:
    record = drill_record
    log_dir = LOG_ROOT / scenario["id"]
    fault = make_fault(inventory, scenario["fault"])
    steady_lab.append(fault.cleanup)
    record.fault_mode = "; ".join(filter(None, [
        scenario["fault"]["name"] + (f" ({fault.mode})" if hasattr(fault, "mode") else ""), record.fault_mode]))

    writer = CanaryWriter(inventory.app_url, base=int(time.time() * 1000) * 1000)
    monitor = measure.HealthMonitor(inventory.app_url)
    steady_lab.insert(0, writer.stop)
    steady_lab.insert(0, monitor.stop)
    writer.start()
    monitor.start()
    fingerprint_before = measure.fingerprint(inventory)

    for entry in scenario.get("setup", []):
        try:
            record.steps.append(measure.run_playbook(inventory.path, entry["playbook"],
                                                     dict(entry.get("extra_vars") or {}), log_dir, kind="setup"))
        except PlaybookFailed as err:
            pytest.fail(f"not drillable: setup playbook {entry['playbook']} failed: {err}", pytrace=False)
    backup_id = pytestconfig.getoption("--backup-id")
    backup_path = pytestconfig.getoption("--backup-path")
    if scenario.get("backup") and not backup_id:
        try:
            backup_id, step = take_backup(inventory, log_dir)
        except PlaybookFailed as err:
            pytest.fail(f"not drillable: the backup before the fault failed: {err}", pytrace=False)
        record.steps.append(step)
        record.promise_at = step.start if scenario.get("promise") == "backup" else None
    record.backup_id = backup_id
    if scenario.get("promise") == "fault":
        record.promise_at = float("inf")  # set to the fault time below
    time.sleep(PRE_FAULT_WRITE_S)

    # --- the fault
    record.fault_at = time.time()
    description = fault.inject()
    record.steps.append(Step(name=fault.name, kind="fault", start=record.fault_at, end=time.time(),
                             detail=description))
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

    # --- measure: RTO, canaries, data
    budget = max(30.0, min(record.rto_target_s, 600.0) - (time.time() - record.fault_at))
    record.healthy_at = measure.wait_healthy(inventory.app_url, budget) if not failures else None
    record.rto_s = None if record.healthy_at is None else record.healthy_at - record.fault_at
    record.steps.append(Step(name="first healthy /health", kind="check", start=record.recovered_at,
                             end=record.healthy_at or time.time(), ok=record.healthy_at is not None))
    if record.healthy_at:
        time.sleep(POST_RECOVERY_WRITE_S)
    writer.stop()
    monitor.stop()
    record.writes, record.health = writer.writes, monitor.samples

    if not failures:
        check_canary_stores(scenario, inventory, writer, record, failures)
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
                      f"RPO {fmt_s(record.rpo_s)} <= {record.rpo_target_s:.0f} s")


def check_canary_stores(scenario: dict, inventory: DrillInventory, writer: CanaryWriter, record: DrillRecord,
                        failures: list[str]) -> None:
    """Read the canaries back and run the set checker for each store the scenario promises."""
    try:
        present = read_canaries(inventory.app_url)
    except Exception as err:  # noqa: BLE001 - unreadable canaries fail the drill with the reason
        failures.append(f"cannot read the canaries back: {err}")
        return
    rpo = 0.0
    for store in scenario.get("canary_stores", ["mysql"]):
        seqs = present.get(store)
        if seqs is None:
            failures.append(f"canary store {store} could not be read after recovery")
            continue
        result = check_canaries(writer.writes, seqs, store, fault_at=record.fault_at, promise_at=record.promise_at,
                                recovered_at=record.recovered_at, seq_range=writer.seq_range)
        record.canary[store] = result.summary()
        record.lost += len(result.lost)
        rpo = max(rpo, result.rpo_s)
        if not result.ok:
            failures.append(
                f"canary {store}: {len(result.lost)} acknowledged writes lost (first {result.lost[:5]}), "
                f"unexpected {result.unexpected[:5]}, duplicates {result.duplicates[:5]}, holes {result.holes[:5]}")
    record.rpo_s = rpo
