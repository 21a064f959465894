"""The docker deployment target on a Compose project (issue #19): the service named as a user knows it
(project + service), resolved by Compose labels through the Docker API; commands run in the container
with streamed stdin/stdout and secrets only in the exec's environment; health = the container's own
healthcheck; bad input refused naming what exists.
"""

from __future__ import annotations

import hashlib
import io
import time

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.util import service as svc
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    ConnectionFailure,
    NotFound,
    ServiceControlFailed,
)
from lab.compose import images
from lab.compose import lab as compose_lab_module
from lab.secrets import load_secrets


def target(layout, name: str, **settings) -> svc.Service:
    """The docker target ``name`` of the lab's project (its Compose service is ``name`` unless ``service`` says)."""
    return svc.get_service("docker", name, base_url=layout.docker_host, project=layout.project, **settings)


def test_a_compose_service_resolves_to_its_container_by_labels(compose_lab):
    db = target(compose_lab, "db")
    assert db.container_name() == compose_lab_module.container_name(compose_lab, "db")
    assert db.is_running()
    assert db.main_pid() and db.main_pid() > 1
    assert db.describe() == {"manager": "docker", "name": "db", "container": None, "base_url": compose_lab.docker_host,
                             "project": compose_lab.project, "service": "db", "container_number": None}


def test_the_service_name_can_differ_from_the_compose_service(compose_lab):
    assert target(compose_lab, "mysql", service="db").container_name() == \
        compose_lab_module.container_name(compose_lab, "db")


def test_sql_streamed_in_and_rows_streamed_out_with_the_password_only_in_the_environment(compose_lab):
    password = load_secrets(compose_lab)["mysql_admin_password"]
    sql = b"SELECT SHA2(REPEAT('x', 1000000), 256);\n" * 50
    out = io.BytesIO()
    result = target(compose_lab, "db").run_command(
        ["mariadb", "--batch", "--skip-column-names", "--protocol=tcp", "-h127.0.0.1", "-P",
         str(compose_lab.port("mysql")), "-ulifeboat_admin"],
        stdin=io.BytesIO(sql), stdout=out, secret_env={"MYSQL_PWD": password}, timeout_s=60, what="sql")
    expected = hashlib.sha256(b"x" * 1000000).hexdigest()
    assert out.getvalue().decode().split() == [expected] * 50
    assert result.returncode == 0 and result.stdout == b""


def test_captured_output_and_a_failure_naming_the_program_and_its_stderr(compose_lab):
    cache = target(compose_lab, "cache")
    assert cache.run_command(["sh", "-c", "cat | wc -c"], stdin=io.BytesIO(b"y" * 12345)).stdout.strip() == b"12345"
    with pytest.raises(ServiceControlFailed, match=r"probe in container .*cache.* exit code 4: nope"):
        cache.run_command(["sh", "-c", "echo nope >&2; exit 4"], what="probe")
    with pytest.raises(ServiceControlFailed, match="no end after 1 s"):
        cache.run_command(["sleep", "20"], timeout_s=1)


def test_wait_healthy_runs_the_containers_own_healthcheck(compose_lab):
    for service in compose_lab_module.SERVICES.values():
        assert target(compose_lab, service).wait_healthy(30) < 30


def test_stop_and_start_a_compose_service(compose_lab):
    cache = target(compose_lab, "cache")
    address = (compose_lab.host_for("redis"), compose_lab.port("redis"))
    svc.wait_for_port(*address, 30)  # a container started anew answers once the host re-learns its MAC
    assert svc.probe_service(cache, *address)["verdict"] == "up"
    cache.stop()
    try:
        assert not cache.is_running() and cache.main_pid() is None
        with pytest.raises(ConnectionFailure, match=r"not healthy after 1 s: container .* is exited"):
            cache.wait_healthy(1)
        started = time.monotonic()
        probed = svc.probe_service(cache, *address, timeout_s=5)
        assert probed["verdict"] == "dead", "a stopped container is found by its labels: its server is down"
        assert "finds the service itself, not by its address" in probed["message"]
        assert time.monotonic() - started < 5, "no connect timeout is waited for a stopped container"
    finally:
        cache.start()
    assert cache.wait_healthy(60) < 60
    assert target(compose_lab, "app").wait_healthy(60) < 60  # the app reconnects to Redis on its next request


def test_an_unknown_service_is_refused_listing_the_projects_services(compose_lab):
    with pytest.raises(NotFound, match=r"has no container of service 'nope'.*its services: app, cache, db, vault"):
        target(compose_lab, "nope").is_running()


def test_an_unknown_project_is_refused_listing_the_projects_found(compose_lab):
    ghost = svc.get_service("docker", "db", base_url=compose_lab.docker_host, project="no-such-project")
    with pytest.raises(NotFound, match=rf"no container of Compose project 'no-such-project'.*{compose_lab.project}"):
        ghost.is_running()


def test_an_unreachable_engine_is_a_connection_failure(tmp_path):
    lost = svc.get_service("docker", "db", base_url=f"unix://{tmp_path}/none.sock", project="p")
    with pytest.raises(ConnectionFailure, match="cannot reach the docker engine"):
        lost.is_running()


def test_a_scaled_service_is_refused_listing_its_containers_unless_one_is_chosen(compose_lab, docker_client):
    labels = {"com.docker.compose.project": compose_lab.project, "com.docker.compose.service": "worker"}
    made = [docker_client.containers.run(images.image_ref(), ["sleep", "120"], detach=True, network_mode="none",
                                         entrypoint=[], labels=dict(labels, **{
                                             "com.docker.compose.container-number": str(n)}))
            for n in (1, 2)]
    try:
        with pytest.raises(ConfigError, match=r"runs 2 containers: .*\(number 1\), .*\(number 2\)"):
            target(compose_lab, "worker").is_running()
        second = target(compose_lab, "worker", container_number=2)
        assert second.container_name() == made[1].name and second.is_running()
    finally:
        for container in made:
            container.remove(force=True)


def test_settings_that_contradict_each_other_are_refused():
    with pytest.raises(ConfigError, match="either a container name or a Compose project"):
        svc.get_service("docker", "db", container="x", project="p")
    with pytest.raises(ConfigError, match="needs its project"):
        svc.get_service("docker", "db", service="db")
