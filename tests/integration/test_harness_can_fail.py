"""The DR drill harness reports a drill as FAILED when recovery loses data beyond its target.

Runs ``pytest dr_tests`` in a subprocess, as CI would, drilling redis_data_loss with a
deliberately stale backup (one taken before the drill's canary writes began) and an RPO
target of 1 s: every canary write of the drill is gone after the restore, so the
measured RPO is several seconds and the drill must fail with "measured X s > target 1 s".
Also: an inventory without ``lifeboat_drill_allowed: true`` is refused, and
``--list-scenarios`` lists without running anything.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def run_drills(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "pytest", "dr_tests", "-p", "no:cacheprovider", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


def test_list_scenarios_prints_one_tab_separated_line_per_scenario_and_runs_nothing():
    run = run_drills("--list-scenarios", timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    ids = [line.split("\t")[0] for line in lines]
    assert {"mysql_data_corruption", "redis_data_loss", "complete_system_failure", "app_container_failure",
            "network_partition"} <= set(ids)
    for line in lines:
        scenario, severity, rto, rpo, title = line.split("\t")
        assert severity in ("critical", "major", "minor")
        assert float(rto) > 0 and float(rpo) >= 0 and title
    assert "passed" not in run.stdout and "collected" not in run.stdout


def test_inventory_without_drill_permission_is_refused(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    somewhere:\n      ansible_connection: local\n")
    run = run_drills("--inventory", str(inventory), "-k", "app_container_failure", timeout=120)
    assert run.returncode != 0
    assert "lifeboat_drill_allowed: true" in run.stdout + run.stderr
    assert "passed" not in run.stdout.splitlines()[-1]


def backup_id_from(log: str) -> str:
    ids = re.findall(r'"backup_id": "([^"]+)"', log)
    assert ids, "backup.yml printed no backup_id"
    return ids[-1]


# ~45 s on an idle 2-core lab (was 108 s): in make test, it is the proof that the harness can fail
def test_stale_backup_with_a_tight_rpo_is_reported_as_failed_with_measured_vs_target(lab_env, tmp_path):
    backup = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(REPO / "inventories" / "lab"),
                             str(REPO / "playbooks" / "backup.yml"), "-e", "components=redis"],
                            cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert backup.returncode == 0, backup.stdout[-2000:]
    stale = backup_id_from(backup.stdout)
    results = REPO / "reports" / "dr-results.json"

    run = run_drills("-k", "redis_data_loss", "--backup-id", stale, "--drill-target", "redis_data_loss:rpo_s=1",
                     "--junitxml", str(tmp_path / "junit.xml"))

    assert run.returncode == 1, run.stdout[-3000:]
    assert "1 failed" in run.stdout
    assert re.search(r"RPO missed: measured \d+\.\d s > target 1 s", run.stdout), run.stdout[-3000:]
    record = json.loads(results.read_text())["drills"][-1]
    assert record["scenario"] == "redis_data_loss"
    assert record["outcome"] == "failed" and record["passed"] is False
    assert record["rpo_s"] > record["rpo_target_s"] == 1
    assert record["backup_id"] == stale
