"""The inventory plugin lifeboat.dr.compose (issue #19): pointed at the running compose lab's project,
it builds the groups and the variables that inventories/lab-compose writes by hand - from the
containers' labels and mounts, through the Docker API - and a playbook runs on it; a wrong project
is refused naming the projects the engine has.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml
from test_compose_inventory import INVENTORY, REPO, ansible_env

#: what the plugin finds itself; the rest of inventories/lab-compose/group_vars (secrets, store) stays
DISCOVERED = {"lifeboat_deployment", "lifeboat_docker_host", "lifeboat_compose_project", "lifeboat_compose_file",
              "lifeboat_compose_services", "lifeboat_compose_volumes", "lifeboat_mysql_host", "lifeboat_mysql_port",
              "lifeboat_mysql_datadir", "lifeboat_redis_host", "lifeboat_redis_port", "lifeboat_redis_dir",
              "lifeboat_vault_addr", "lifeboat_vault_datadir", "lifeboat_app_url", "lifeboat_app_storage",
              "lifeboat_service_manager", "lifeboat_service_settings", "lifeboat_service_names", "ansible_connection"}
COMPARED = sorted(DISCOVERED - {"lifeboat_compose_file", "ansible_connection"})


def plugin_inventory(tmp_path: Path, layout, project: str | None = None) -> Path:
    """``<tmp>/lab.lifeboat.yml`` for the plugin, with the secrets and store settings of the lab's own
    inventory (everything it does not discover) in ``group_vars/all.yml`` beside it."""
    config = tmp_path / "lab.lifeboat.yml"
    config.write_text(yaml.safe_dump({"plugin": "lifeboat.dr.compose", "project": project or layout.project,
                                      "docker_host": layout.docker_host}))
    handwritten = yaml.safe_load((INVENTORY / "group_vars" / "all.yml").read_text())
    kept = {k: v for k, v in handwritten.items() if k not in DISCOVERED}
    kept["lifeboat_repo_dir"] = str(REPO)
    kept["lifeboat_state_dir"] = str(layout.state_dir)
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text(yaml.safe_dump(kept))
    return config


def inventory_list(source: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run(["ansible-inventory", "-i", str(source), "--list"], cwd=REPO,
                          env=dict(ansible_env(), ANSIBLE_INVENTORY_UNPARSED_FAILED="true"),
                          capture_output=True, text=True, timeout=120, check=False)


def templated(source: Path | str, host: str, names: list[str]) -> dict:
    expression = "{" + ", ".join(f"'{n}': {n}" for n in names) + "}"
    proc = subprocess.run(["ansible", "-i", str(source), host, "-m", "ansible.builtin.debug",
                           "-a", f"msg={{{{ {expression} | to_json }}}}", "-o"],
                          cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(json.loads(proc.stdout.split("=>", 1)[1])["msg"])


def test_the_plugin_finds_what_the_handwritten_inventory_says(compose_lab, tmp_path):
    config = plugin_inventory(tmp_path, compose_lab)
    listed = inventory_list(config)
    assert listed.returncode == 0, listed.stderr[-3000:]
    groups = json.loads(listed.stdout)
    assert {g: groups[g]["hosts"] for g in ("mysql", "redis", "vault", "app", "backup_store")} == {
        "mysql": ["db"], "redis": ["cache"], "vault": ["vault"], "app": ["app"], "backup_store": ["backup-store"]}
    found = templated(config, "db", COMPARED)
    assert found == templated(INVENTORY, "compose-db", COMPARED)
    assert found["lifeboat_mysql_datadir"] == str(compose_lab.mysql_datadir)
    assert found["lifeboat_vault_datadir"].endswith("/raft"), "the lifeboat.data label's sub-folder of the volume"


def test_a_playbook_runs_on_the_inventory_the_plugin_built(compose_lab, tmp_path):
    config = plugin_inventory(tmp_path, compose_lab)
    proc = subprocess.run(["ansible-playbook", "-i", str(config), "playbooks/health_check.yml"], cwd=REPO,
                          env=ansible_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "stack healthy" in proc.stdout


def test_an_unknown_project_is_refused_naming_the_projects_found(compose_lab, tmp_path):
    config = plugin_inventory(tmp_path, compose_lab, project="no-such-shop")
    listed = inventory_list(config)
    assert listed.returncode != 0
    message = " ".join(listed.stderr.split())
    assert "no container of Compose project 'no-such-shop'" in message and compose_lab.project in message


def test_an_engine_that_does_not_answer_is_refused_naming_it(tmp_path):
    config = tmp_path / "gone.lifeboat.yml"
    config.write_text(yaml.safe_dump({"plugin": "lifeboat.dr.compose", "project": "shop",
                                      "docker_host": f"unix://{tmp_path}/no-engine.sock"}))
    listed = inventory_list(config)
    assert listed.returncode != 0
    assert "no-engine.sock" in " ".join(listed.stderr.split())
    assert not os.path.exists(tmp_path / "no-engine.sock")
