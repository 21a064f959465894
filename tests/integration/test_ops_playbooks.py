"""Operations playbooks run non-interactively: schedule (install, idempotent, remove),
prune (check mode, then real), health report; and nothing anywhere prompts."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store import jobs
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import utc_now

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
INTERACTIVE_MODULES = {"pause", "ansible.builtin.pause", "ansible.legacy.pause"}


def playbook(name: str, extra: dict, *flags: str) -> subprocess.CompletedProcess:
    """Run playbooks/<name> on the lab inventory with extra vars; fail with its output."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "inventories/lab", "-e", json.dumps(extra),
                           f"playbooks/{name}", *flags], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def changed_count(proc: subprocess.CompletedProcess) -> int:
    return sum(int(n) for n in re.findall(r"changed=(\d+)", proc.stdout))


def yaml_files() -> list[Path]:
    roots = [REPO / "playbooks", REPO / "roles"]
    return sorted(p for root in roots if root.is_dir() for p in root.rglob("*.y*ml"))


def walk_tasks(node):
    if isinstance(node, list):
        for item in node:
            yield from walk_tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always"):
            if key in node:
                yield from walk_tasks(node[key])


def test_no_playbook_or_role_needs_a_human():
    files = yaml_files()
    assert any(p.name == "prune.yml" for p in files)
    offenders = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        prompts = re.search(r"^\s*-?\s*vars_prompt\s*:", text, re.M)
        pauses = re.search(r"^\s*-?\s*(ansible\.builtin\.)?pause\s*:", text, re.M)
        if prompts or pauses:
            offenders.append(str(path.relative_to(REPO)))
            continue
        for item in walk_tasks(yaml.safe_load(text)):
            if "vars_prompt" in item or INTERACTIVE_MODULES & set(item):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == [], f"interactive playbooks/roles (AWX cannot answer prompts): {offenders}"


def test_schedule_playbook_installs_idempotently_and_removes(tmp_path: Path):
    cron = tmp_path / "cron.d" / "lifeboat"
    extra = {"lifeboat_schedule_cron_file": str(cron), "lifeboat_schedule_logs": str(tmp_path / "logs"),
             "lifeboat_schedule_user": "root", "lifeboat_store": str(tmp_path / "store"),
             "lifeboat_schedule_times": {"backup_full": "30 1 * * *"}}
    first = playbook("schedule.yml", extra)
    assert changed_count(first) >= 1
    text = cron.read_text()
    assert "30 1 * * * root cd " in text and "playbooks/backup.yml >> " in text
    assert "*/15 * * * * root" in text and "0 3 * * 0 root" in text and "0 4 1 * * root" in text
    again = playbook("schedule.yml", extra)
    assert changed_count(again) == 0, again.stdout
    playbook("schedule.yml", {**extra, "lifeboat_schedule_state": "absent"})
    assert not cron.exists()


@pytest.fixture()
def small_store(tmp_path: Path) -> Store:
    keys.create_key_file(tmp_path / "k.key")
    ring = keys.KeyRing(keys.FileKEK.load(tmp_path / "k.key"))
    store = Store(tmp_path / "store", reserve_bytes=0)
    for _n in range(3):
        with store.begin_set("redis", ["redis"], ring) as writer:
            with writer.artifact("redis", "dump.rdb") as out:
                out.write(b"r" * 500)
            writer.publish()
            jobs.record_job(store, "backup", start=utc_now(), backup_id=writer.set_id, components=["redis"])
    return store


def test_prune_playbook_check_mode_changes_nothing_then_prunes(small_store: Store):
    extra = {"lifeboat_store": str(small_store.root), "lifeboat_retention_keep_last": 1,
             "lifeboat_retention_keep_daily": 0, "lifeboat_retention_keep_weekly": 0,
             "lifeboat_retention_keep_monthly": 0, "lifeboat_retention_keep_within_days": 0,
             "lifeboat_retention_min_age_hours": 0}
    ids = [s.set_id for s in small_store.list_sets()]
    preview = playbook("prune.yml", extra, "--check")
    assert "2 set(s) would be deleted" in preview.stdout
    assert [s.set_id for s in small_store.list_sets()] == ids
    playbook("prune.yml", extra)
    assert [s.set_id for s in small_store.list_sets()] == ids[-1:]


def test_health_playbook_writes_json_and_html(small_store: Store, tmp_path: Path):
    out_json, out_html, prom = tmp_path / "h.json", tmp_path / "h.html", tmp_path / "m.prom"
    proc = playbook("health_report.yml", {"lifeboat_store": str(small_store.root),
                                          "lifeboat_health_json_path": str(out_json),
                                          "lifeboat_health_html_path": str(out_html),
                                          "lifeboat_health_metrics_path": str(prom)})
    assert "OK" in proc.stdout
    report = json.loads(out_json.read_text())
    assert report["status"] == "ok" and report["components"][0]["component"] == "redis"
    assert out_html.read_text().startswith("<!DOCTYPE html>")
    assert 'lifeboat_backup_size_bytes{component="redis"}' in prom.read_text()


def adhoc(module: str, args: dict) -> dict:
    """Run one module on the lab store host (ad hoc, JSON output); returns its result."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(BIN / "ansible"), "lab-store", "-i", "inventories/lab", "-m", module,
                           "-a", json.dumps(args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False, stdin=subprocess.DEVNULL)
    head, _sep, body = proc.stdout.partition("=>")
    assert "lab-store |" in head, f"unexpected ansible output:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(body)


def test_job_record_and_audit_verify_modules(tmp_path: Path):
    store = tmp_path / "store"
    started = adhoc("lifeboat.dr.job_record", {"store": str(store), "state": "started", "kind": "restore"})
    assert started["changed"] and started["record"]["result"] == "running"
    finished = adhoc("lifeboat.dr.job_record", {"store": str(store), "id": started["id"], "result": "ok",
                                                "details": {"verified": True, "kept_aside": ["/srv/x.lbprev-1"]}})
    assert finished["record"]["details"]["verified"] is True
    (job,) = jobs.read_jobs(store)
    assert job["result"] == "ok" and job["kind"] == "restore"
    intact = adhoc("lifeboat.dr.audit_verify", {"store": str(store)})
    assert intact["ok"] is True and intact["records"] == 1 and "error_type" not in intact
    trail = store / "audit" / "audit.jsonl"
    trail.write_text(trail.read_text().replace('"restore"', '"backup"'))
    tampered = adhoc("lifeboat.dr.audit_verify", {"store": str(store)})
    assert tampered["error_type"] == "IntegrityError" and "line 1" in tampered["msg"]
