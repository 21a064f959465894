"""Rebuilding the compose lab's project from the store alone (issue #19, docs/runbook.md "Compose"):
every container and volume of the project and its folder are gone; ``compose_project.yml -e up=true``
brings the folder back and creates the project (nothing started); a run killed half way through is
continued by the next one; ``restore.yml`` gives back equal data and a healthy project."""

from __future__ import annotations

import shutil

import docker
from test_compose_playbooks import compose_playbook
from test_playbooks import app_health, stack_state

from ansible_collections.lifeboat.dr.plugins.module_utils.util.compose_volumes import client_for
from lab.compose import lab as compose_lab_module

PROJECT_LABEL = "com.docker.compose.project"


def project_containers(client, project: str) -> list:
    return client.containers.list(all=True, filters={"label": [f"{PROJECT_LABEL}={project}"]})


def project_files(layout) -> dict:
    """``{relative path: bytes}`` of the project folder's files (but the listing a rebuild adds)."""
    return {p.relative_to(layout.project_dir): p.read_bytes() for p in layout.project_dir.rglob("*")
            if p.is_file() and p.name != "lifeboat-project.json"}


def remove_the_project(client, layout) -> None:
    """Every container (dependants first), every named volume of the project, and its folder."""
    left = project_containers(client, layout.project)
    while left:
        blocked = []
        for container in left:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                blocked.append(container)
        assert len(blocked) < len(left), "containers that cannot be removed"
        left = blocked
    for volume in client.volumes.list(filters={"label": f"{PROJECT_LABEL}={layout.project}"}):
        volume.remove(force=True)
    shutil.rmtree(layout.project_dir)


def test_a_lost_project_is_rebuilt_from_the_store_and_an_interrupted_rebuild_is_continued(compose_lab):
    env = compose_lab_module.env(compose_lab.state_dir)
    expected = stack_state(env)
    compose_playbook(compose_lab, "backup")
    client = client_for(compose_lab.docker_host)
    files_before = project_files(compose_lab)

    try:
        remove_the_project(client, compose_lab)
        assert project_containers(client, compose_lab.project) == [] and not compose_lab.project_dir.exists()

        first = compose_playbook(compose_lab, "compose_project", "-e", "up=true")
        assert '"continued": false' in first.stdout
        created = {c.labels["com.docker.compose.service"]: c.status
                   for c in project_containers(client, compose_lab.project)}
        assert created == {service: "created" for service in compose_lab_module.SERVICES.values()}, \
            "every service's container created, none started"
        assert project_files(compose_lab) == files_before, "the folder as it was"

        # a run killed after writing the files and creating some containers: the next one continues it
        app = [c for c in project_containers(client, compose_lab.project)
               if c.labels["com.docker.compose.service"] == "app"][0]
        app.remove(force=True)
        again = compose_playbook(compose_lab, "compose_project", "-e", "up=true")
        assert '"continued": true' in again.stdout, "the folder already held the set's files: not written again"
        assert sorted(c.labels["com.docker.compose.service"] for c in project_containers(client, compose_lab.project)) \
            == sorted(compose_lab_module.SERVICES.values())

        compose_playbook(compose_lab, "restore", "-e", "components=mysql,redis,vault,app")
        assert stack_state(env) == expected
        assert app_health(env) == 200
        for service in compose_lab_module.SERVICES.values():
            compose_lab_module.wait_healthy(compose_lab, service, timeout_s=60)
    except BaseException:
        compose_lab_module.up(compose_lab.state_dir)  # the later tests need the lab, whatever broke here
        raise
