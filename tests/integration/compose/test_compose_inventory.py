"""inventories/lab-compose drives the compose lab: its variables are the running project's, the health
check playbook passes against the containers over the project network, and the service playbook
restarts a Compose service found by its labels.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from lab.compose import lab as compose_lab_module

REPO = Path(__file__).resolve().parents[3]
INVENTORY = REPO / "inventories" / "lab-compose"


def ansible_env() -> dict[str, str]:
    return dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")


def host_vars(host: str, *names: str) -> dict:
    """Variables of ``host`` as Ansible templates them (``debug var=...`` through ad-hoc)."""
    expression = "{" + ", ".join(f"'{n}': {n}" for n in names) + "}"
    proc = subprocess.run(["ansible", "-i", str(INVENTORY), host, "-m", "ansible.builtin.debug",
                           "-a", f"msg={{{{ {expression} | to_json }}}}", "-o"],
                          cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    payload = proc.stdout.split("=>", 1)[1]
    return json.loads(json.loads(payload)["msg"])


def test_the_inventory_names_the_running_project_and_its_services(compose_lab):
    found = host_vars("compose-db", "lifeboat_deployment", "lifeboat_compose_project", "lifeboat_docker_host",
                      "lifeboat_compose_services", "lifeboat_mysql_host", "lifeboat_mysql_port",
                      "lifeboat_mysql_datadir", "lifeboat_app_storage", "lifeboat_service_manager")
    assert found == {
        "lifeboat_deployment": "compose", "lifeboat_compose_project": compose_lab.project,
        "lifeboat_docker_host": compose_lab.docker_host,
        "lifeboat_compose_services": compose_lab_module.SERVICES,
        "lifeboat_mysql_host": compose_lab.host_for("mysql"), "lifeboat_mysql_port": compose_lab.port("mysql"),
        "lifeboat_mysql_datadir": str(compose_lab.mysql_datadir), "lifeboat_app_storage": str(compose_lab.app_storage),
        "lifeboat_service_manager": "docker"}
    assert host_vars("compose-db", "lifeboat_service_settings", "lifeboat_service_names") == {
        "lifeboat_service_settings": {"base_url": compose_lab.docker_host, "project": compose_lab.project},
        "lifeboat_service_names": compose_lab_module.SERVICES}
    assert (compose_lab.mysql_datadir / "mysql").is_dir(), "the datadir variable is the volume's host path"


def test_health_check_playbook_passes_on_the_compose_lab(compose_lab):
    proc = subprocess.run(["ansible-playbook", "-i", str(INVENTORY), "playbooks/health_check.yml"], cwd=REPO,
                          env=ansible_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "stack healthy" in proc.stdout


def test_service_playbook_restarts_a_compose_service_found_by_its_labels(compose_lab, docker_client):
    name = compose_lab_module.container_name(compose_lab, "cache")
    before = docker_client.containers.get(name).attrs["State"]["StartedAt"]
    proc = subprocess.run(["ansible-playbook", "-i", str(INVENTORY), "playbooks/service.yml", "-e", "action=restart",
                           "-e", "components=redis"], cwd=REPO, env=ansible_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    container = docker_client.containers.get(name)
    assert container.status == "running" and container.attrs["State"]["StartedAt"] != before
    compose_lab_module.wait_healthy(compose_lab, "cache", timeout_s=60)
    compose_lab_module.wait_healthy(compose_lab, "app", timeout_s=60)
