"""Specification against the lab's Redis: a backup and its full verification (restore into a
scratch redis-server) are recorded in the job history and the audit trail, and the health
report's "if disaster struck now" RTO is the restore time that verification measured;
playbooks/drill.yml runs the drill harness from the repository checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import health
from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit, jobs

PACKAGE = "ansible_collections.lifeboat.dr.plugins.modules."


def run_module(tmp_path, name, **args):
    """Run module ``name`` with ``args`` as Ansible does; return its JSON result."""
    args_file = tmp_path / f"args-{name}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    args_file.chmod(0o600)  # holds the lab's backup password
    proc = subprocess.run([sys.executable, "-m", PACKAGE + name, str(args_file)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def test_full_verify_of_a_redis_backup_gives_the_health_report_a_measured_rto(lab_env, tmp_path):
    key_file = tmp_path / "kek"
    keys.create_key_file(key_file)
    base = {"store": str(tmp_path / "store"), "key_file": str(key_file)}
    backup = run_module(tmp_path, "redis_backup", redis_host=lab_env["LAB_REDIS_HOST"],
                        redis_port=int(lab_env["LAB_REDIS_PORT"]), redis_user=lab_env["LAB_REDIS_BACKUP_USER"],
                        redis_password=lab_env["LAB_REDIS_BACKUP_PASSWORD"], **base)
    assert not backup.get("failed"), backup.get("msg")
    full = run_module(tmp_path, "backup_verify", mode="full", components=["redis"], backup_id=backup["set_id"],
                      work_dir=str(tmp_path), **base)
    assert not full.get("failed"), full.get("msg")

    measured = full["restore_durations_s"]["redis"]
    assert measured > 0
    records = jobs.read_jobs(base["store"])
    assert [(j["kind"], j["result"], j["backup_id"]) for j in records] == [
        ("backup", "ok", backup["set_id"]), ("verify", "ok", backup["set_id"])]
    assert records[0]["components"] == ["redis"] and records[0]["sizes"]["stored_bytes"] > 0
    assert [r["action"] for r in audit.read_records(base["store"])] == ["backup", "verify"]
    assert audit.verify(base["store"])["ok"]

    report = health.build_report(base["store"], components=["redis"])
    assert report["disaster_now"] == {**report["disaster_now"], "rto": "measured", "rto_s": measured,
                                      "rto_unmeasured_components": []}
    assert report["components"][0]["measured_rto_method"].startswith("restored into a scratch redis-server")


def run_drill_playbook(extra):
    """ansible-playbook playbooks/drill.yml with extra vars ``extra``; returns the process."""
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, ANSIBLE_CONFIG=str(repo / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return subprocess.run([str(repo / ".venv" / "bin" / "ansible-playbook"), "-i", "inventories/lab",
                           "playbooks/drill.yml", "-e", json.dumps(extra)], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_drill_playbook_runs_the_harness_and_names_the_report(tmp_path):
    report = tmp_path / "drill.html"
    proc = run_drill_playbook({"lifeboat_drill_extra_args": ["--collect-only", "-q"],
                               "lifeboat_drill_report": str(report)})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert f"drills passed; report {report}" in proc.stdout and "collected" in proc.stdout


def test_drill_playbook_refuses_without_a_repository_checkout(tmp_path):
    proc = run_drill_playbook({"lifeboat_drill_repo_dir": str(tmp_path)})
    assert proc.returncode != 0
    assert "lacks .venv/bin/python or dr_tests/" in proc.stdout
