"""Scratch servers in containers of a service's own image (issue #19, ``verify.yml mode=full`` on
Compose): the scratch MariaDB, redis-server and OpenBao of a full verification run in throw-away
containers of the image their service runs -- the same server version -- and are gone afterwards."""

from __future__ import annotations

import json

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.scratch import ScratchMariaDB
from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis.engine import ScratchRedis
from ansible_collections.lifeboat.dr.plugins.module_utils.util.compose_project import service_images
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import DependencyMissing, NotFound
from ansible_collections.lifeboat.dr.plugins.module_utils.util.scratch import ContainerLauncher, launcher_for
from lab.compose import lab as compose_lab_module


def scratch_containers(client) -> list:
    return client.containers.list(all=True, filters={"label": f"{ContainerLauncher.LABEL}=1"})


@pytest.fixture
def images(compose_lab, docker_client):
    return service_images(docker_client, compose_lab.project, {"mysql": "db", "redis": "cache", "vault": "vault"})


def test_the_images_are_those_the_services_run(compose_lab, docker_client, images):
    db = docker_client.containers.get(compose_lab_module.container_name(compose_lab, "db"))
    assert images["mysql"] == db.attrs["Image"]
    with pytest.raises(NotFound, match="'nosuch' .* has no container"):
        service_images(docker_client, compose_lab.project, {"mysql": "nosuch"})


def test_a_scratch_mariadb_runs_in_a_container_of_the_service_image_and_leaves_nothing(
        compose_lab, docker_client, images, tmp_path):
    db = docker_client.containers.get(compose_lab_module.container_name(compose_lab, "db"))
    service_version = db.exec_run(["mariadbd", "--version"]).output.decode().split("Ver ")[1].split("-")[0]
    launcher = launcher_for({"docker_host": compose_lab.docker_host, "scratch_images": images}, "mysql")
    with ScratchMariaDB(base_dir=str(tmp_path), launcher=launcher) as scratch:
        [running] = scratch_containers(docker_client)
        assert running.attrs["Image"] == images["mysql"] and running.status == "running"
        conn = my.connect(scratch.params)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                assert cur.fetchone()[0].startswith(service_version)
        finally:
            conn.close()
        root = scratch.root
    assert scratch_containers(docker_client) == [], "the scratch container is removed"
    assert not root.exists(), "and its folder"


def test_a_scratch_redis_in_a_container_is_stopped_and_removed_even_when_the_body_fails(
        compose_lab, docker_client, images, tmp_path):
    launcher = launcher_for({"docker_host": compose_lab.docker_host, "scratch_images": images}, "redis")
    with pytest.raises(RuntimeError, match="body failed"):
        with ScratchRedis(base_dir=str(tmp_path), launcher=launcher) as scratch:
            scratch.start()
            assert len(scratch_containers(docker_client)) == 1
            raise RuntimeError("body failed")
    assert scratch_containers(docker_client) == []


def test_an_image_without_the_server_program_is_named(compose_lab, docker_client, images):
    launcher = ContainerLauncher(docker_client, images["vault"])
    with pytest.raises(DependencyMissing, match="has none of no-such-bao, no-such-vault"):
        launcher.program(["no-such-bao", "no-such-vault"], lambda: "unused")
    assert scratch_containers(docker_client) == []


def test_verify_full_on_compose_runs_every_scratch_server_in_its_services_image(
        compose_lab, docker_client, images):
    from test_compose_playbooks import compose_playbook

    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

    compose_playbook(compose_lab, "backup", "-e", "components=mysql,redis,vault,app")
    store = Store(compose_lab_module.env(compose_lab.state_dir)["LAB_STORE"])
    set_id = store.list_sets()[-1].set_id
    verified = compose_playbook(compose_lab, "verify", "-e", "mode=full", "-e", f"backup_id={set_id}")
    assert '"result": "VERIFIED"' in verified.stdout
    [record] = sorted((store.root / "verifications" / set_id).glob("*.json"))[-1:]
    details = {c["name"]: c["detail"] for c in json.loads(record.read_text())["checks"]}
    where = {component: f"in a container of image {images[component][:19]}" for component in images}
    assert where["mysql"] in details["mysql views, routines, triggers and events recreated"]
    assert where["redis"] in details["redis loads into a scratch redis-server with the same key counts"]
    assert where["vault"] in details["vault scratch"]
    assert scratch_containers(docker_client) == []
