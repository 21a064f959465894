"""The compose lab (issue #19, part 1): services found by their Compose labels through the Docker API,
healthy, on their own guarded subnet, with no credential in the compose file or in what the engine
shows, started behind health gates that fail clearly, and taken down exactly.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError
from lab.compose import images
from lab.compose import lab as compose_lab_module
from lab.secrets import load_secrets

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def containers_of(client, project: str, service: str | None = None) -> list:
    labels = [f"{PROJECT_LABEL}={project}"] + ([f"{SERVICE_LABEL}={service}"] if service else [])
    return client.containers.list(all=True, filters={"label": labels})


def test_each_component_is_one_container_found_by_project_and_service_labels(compose_lab, docker_client):
    for component, service in compose_lab_module.SERVICES.items():
        found = containers_of(docker_client, compose_lab.project, service)
        assert len(found) == 1, f"{service}: {[c.name for c in found]}"
        labels = found[0].labels
        assert labels[SERVICE_LABEL] == service and labels["lifeboat.component"] == component
        assert labels.get("com.docker.compose.container-number") == "1"
    assert len(containers_of(docker_client, compose_lab.project)) == len(compose_lab_module.SERVICES)


def test_every_service_passes_its_own_healthcheck_and_the_engine_shows_it_healthy(compose_lab, docker_client):
    for service in compose_lab_module.SERVICES.values():
        name = compose_lab_module.container_name(compose_lab, service)
        # other tests restart backends; the app reconnects on its next request
        compose_lab_module.wait_healthy(compose_lab, service, timeout_s=30)
        healthy, output = compose_lab_module.run_healthcheck(compose_lab, name)
        assert healthy, f"{service}: {output}"
        container = docker_client.containers.get(name)
        assert container.status == "running"
        assert container.attrs["State"]["Health"]["Status"] == "healthy", service


def test_the_services_answer_on_their_subnet_addresses_from_the_host(compose_lab):
    import requests

    from lab import svc_mysql

    compose_lab_module.wait_healthy(compose_lab, "app", timeout_s=30)  # reconnected after other tests' restarts
    assert requests.get(f"{compose_lab.app_url}/health", timeout=5).json() == {
        "mysql": "ok", "redis": "ok", "vault": "ok"}
    with svc_mysql.connect_admin(compose_lab) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@binlog_format, @@gtid_strict_mode, @@log_bin")
        assert cur.fetchone() == ("ROW", 1, 1)
        cur.execute("SELECT COUNT(*) FROM demo.customers")
        assert cur.fetchone() == (2000,)


def test_the_project_network_is_internal_on_the_labs_subnet_and_guarded(compose_lab, docker_client):
    network = docker_client.networks.get(compose_lab.network_name)
    assert network.attrs["Labels"][PROJECT_LABEL] == compose_lab.project
    assert network.attrs["Internal"] is True
    assert [c["Subnet"] for c in network.attrs["IPAM"]["Config"]] == [compose_lab.subnet]
    assert ipaddress.ip_network(compose_lab.subnet) != ipaddress.ip_network("10.213.0.0/24")
    routes = json.loads(subprocess.run(["ip", "-j", "route", "show", "exact", compose_lab.subnet],
                                       capture_output=True, text=True, check=True).stdout)
    assert {"type": "unreachable", "metric": compose_lab_module.GUARD_METRIC} in [
        {"type": r.get("type"), "metric": r.get("metric")} for r in routes]
    for container in containers_of(docker_client, compose_lab.project):
        assert list(container.attrs["NetworkSettings"]["Networks"]) == [compose_lab.network_name]
        assert not any(container.attrs["NetworkSettings"]["Ports"] or {}), f"{container.name} publishes a port"


def test_the_hosts_mac_on_the_subnet_does_not_change_when_a_container_leaves_and_rejoins(compose_lab, docker_client):
    """The bridge's address is pinned: with a bridge following its ports' lowest MAC, a container's
    restart could change it and the others would drop the host's traffic for ~30 s."""
    bridge = compose_lab_module.bridge_name(compose_lab)
    assert Path(f"/sys/class/net/{bridge}/addr_assign_type").read_text().strip() == "3", "set, not derived"
    before = Path(f"/sys/class/net/{bridge}/address").read_text()
    network = docker_client.networks.get(compose_lab.network_name)
    db = docker_client.containers.get(compose_lab_module.container_name(compose_lab, "db"))
    mac = db.attrs["NetworkSettings"]["Networks"][compose_lab.network_name]["MacAddress"]
    network.disconnect(db.name)
    try:
        assert Path(f"/sys/class/net/{bridge}/address").read_text() == before
    finally:  # its old MAC too, or the host's neighbour entry would be wrong for ~30 s
        network.connect(db.name, ipv4_address=compose_lab.host_for("mysql"), mac_address=mac)
    assert Path(f"/sys/class/net/{bridge}/address").read_text() == before
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import wait_for_port
    assert wait_for_port(compose_lab.host_for("mysql"), compose_lab.port("mysql"), 10) < 10


def test_a_restarted_container_keeps_its_mac_so_the_host_reaches_it_at_once(compose_lab, docker_client):
    """Each service's MAC is fixed (made of its IP, as Docker's bridge driver does): podman would give
    a random one at every start, and the host would send to the old one until its neighbour entry
    expires -- a restored MariaDB unreachable for ~60 s after its restart."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import wait_for_port

    db = docker_client.containers.get(compose_lab_module.container_name(compose_lab, "db"))
    mac = db.attrs["NetworkSettings"]["Networks"][compose_lab.network_name]["MacAddress"]
    assert mac == compose_lab_module.mac_for(compose_lab.host_for("mysql")) == "02:42:" + ":".join(
        f"{int(x):02x}" for x in compose_lab.host_for("mysql").split("."))
    assert wait_for_port(compose_lab.host_for("mysql"), compose_lab.port("mysql"), 10) < 10  # neighbour known
    db.restart(timeout=20)
    db.reload()
    assert db.attrs["NetworkSettings"]["Networks"][compose_lab.network_name]["MacAddress"] == mac
    assert wait_for_port(compose_lab.host_for("mysql"), compose_lab.port("mysql"), 30) < 15
    compose_lab_module.wait_healthy(compose_lab, "db", timeout_s=60)


def test_containers_have_no_route_off_the_subnet(compose_lab, docker_client):
    name = compose_lab_module.container_name(compose_lab, "app")
    routes = docker_client.containers.get(name).exec_run(["ip", "route"]).output.decode()
    assert "default" not in routes
    assert routes.strip().splitlines() == [line for line in routes.strip().splitlines()
                                           if line.startswith(compose_lab.subnet)]


def test_no_credential_in_the_compose_file_nor_in_what_the_engine_shows(compose_lab, docker_client):
    secrets = [value for value in load_secrets(compose_lab).values() if isinstance(value, str) and len(value) >= 8]
    secrets.append(compose_lab.app_token_file.read_text().strip())
    assert len(secrets) >= 6
    compose_text = compose_lab.compose_file.read_text() + compose_lab.env_file.read_text()
    for container in containers_of(docker_client, compose_lab.project):
        shown = json.dumps({"Path": container.attrs.get("Path"), "Args": container.attrs.get("Args"),
                            "Cmd": container.attrs["Config"].get("Cmd"),
                            "Entrypoint": container.attrs["Config"].get("Entrypoint"),
                            "Env": container.attrs["Config"].get("Env"),
                            "Labels": container.attrs["Config"].get("Labels")})
        for secret in secrets:
            assert secret not in shown, f"a credential is visible in {container.name}'s inspect output"
            assert secret not in compose_text
    for path in [*compose_lab.secrets_dir.iterdir(), compose_lab.env_file]:
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert compose_lab.app_token_file.stat().st_mode & 0o777 == 0o600


def test_mariadb_backup_in_the_image_is_the_servers_exact_version(compose_lab, docker_client):
    container = docker_client.containers.get(compose_lab_module.container_name(compose_lab, "db"))
    server = container.exec_run(["mariadbd", "--version"]).output.decode()
    backup = container.exec_run(["mariadb-backup", "--version"]).output.decode()
    version = server.split("Ver ")[1].split("-")[0]
    assert f"server {version}-MariaDB" in backup


# --- the health gate ----------------------------------------------------------------------------
@pytest.fixture
def extra_container(compose_lab, docker_client):
    """Start an extra container in the lab's project (no network) and remove it afterwards.

    Healthchecks are given as CMD-SHELL: podman 4.3's Docker API splits the words of a CMD
    healthcheck on blanks (``["CMD", "sh", "-c", "a b"]`` becomes ``sh -c a b``).
    """
    made = []

    def run(service: str, command: list[str], health: list[str]):
        container = docker_client.containers.run(
            images.image_ref(), command, detach=True, network_mode="none", entrypoint=[],
            labels={PROJECT_LABEL: compose_lab.project, SERVICE_LABEL: service},
            healthcheck={"test": health, "interval": 10 * 10**9, "retries": 1})
        made.append(container)
        return container

    yield run
    for container in made:
        container.remove(force=True)


def test_the_health_gate_times_out_naming_the_service_and_its_last_healthcheck_output(compose_lab, extra_container):
    extra_container("never-healthy", ["sleep", "120"], ["CMD-SHELL", "echo still warming up; exit 1"])
    started = time.monotonic()
    with pytest.raises(LifeboatError, match=r"service 'never-healthy' .* not healthy after 3 s") as caught:
        compose_lab_module.wait_healthy(compose_lab, "never-healthy", timeout_s=3)
    assert time.monotonic() - started < 30
    assert "still warming up" in str(caught.value)


def test_the_health_gate_fails_at_once_when_the_container_exits(compose_lab, extra_container):
    extra_container("crashing", ["sh", "-c", "echo cannot start >&2; exit 7"], ["CMD", "true"])
    time.sleep(1)
    with pytest.raises(LifeboatError, match=r"service 'crashing' .*stopped before it became healthy \(exit code 7\)"):
        compose_lab_module.wait_healthy(compose_lab, "crashing", timeout_s=60)


def test_the_health_gate_passes_as_soon_as_the_healthcheck_does(compose_lab, extra_container):
    second_try = "test -e /tmp/ready || { touch /tmp/ready; exit 1; }"
    extra_container("ready-soon", ["sleep", "120"], ["CMD-SHELL", second_try])
    assert compose_lab_module.wait_healthy(compose_lab, "ready-soon", timeout_s=30, interval_s=0.2) < 30


# --- down ----------------------------------------------------------------------------------------
def host_routes(subnet: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-j", "route", "show", "exact", subnet], capture_output=True,
                                     text=True, check=True).stdout or "[]")


def test_a_second_lab_comes_up_from_nothing_and_down_removes_exactly_what_it_made(compose_lab, docker_client,
                                                                                  tmp_path_factory, monkeypatch):
    """A separate compose lab (own state folder, LAB_PORT_BASE one above this one's, own subnet and project)."""
    state = tmp_path_factory.mktemp("compose-lab-2")
    monkeypatch.setenv(compose_lab_module.STATE_ENV, str(state))
    monkeypatch.setenv("LAB_PORT_BASE", str(compose_lab.port_offset + 1))
    started = time.monotonic()
    compose_lab_module.up(seed_rows=50)
    up_seconds = time.monotonic() - started
    second = compose_lab_module.load_compose_layout()
    assert second.subnet != compose_lab.subnet and second.project != compose_lab.project
    client = compose_lab_module.docker_client(second)
    made = {c.id for c in containers_of(client, second.project)}
    volumes = {v.name for v in client.volumes.list()}
    assert len(made) == 4
    assert {second.volume_name(c) for c in compose_lab_module.SERVICES} <= volumes
    bridge = compose_lab_module.bridge_name(second)
    app = compose_lab_module.container_name(second, "app")
    client.containers.get(app).exec_run(["true"])  # an exec session: podman keeps a conmon for it a while
    assert compose_lab_module.lab_processes(second)
    # the guard: with the bridge down, an address of the subnet is unreachable at once (never the default route)
    stray = str(ipaddress.ip_network(second.subnet).network_address + 99)
    subprocess.run(["ip", "link", "set", bridge, "down"], check=True)
    try:
        route = subprocess.run(["ip", "route", "get", stray], capture_output=True, text=True, check=False)
        assert route.returncode != 0 or route.stdout.startswith("unreachable"), route.stdout
        with pytest.raises(OSError) as refused:
            socket.create_connection((stray, 9), timeout=5)
        assert refused.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH), refused.value
    finally:
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    before_first = {c.id for c in containers_of(docker_client, compose_lab.project)}

    compose_lab_module.down()

    assert compose_lab_module.lab_processes(second) == [], "no conmon or other process of its store is left"
    assert not compose_lab_module.api_running(second)
    assert not Path(second.api_socket).exists()
    assert not second.graphroot.exists(), "the private podman store (containers, volumes) is gone"
    assert host_routes(second.subnet) == [], "bridge route and guard route removed"
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True, check=False).returncode != 0
    # ... and nothing else: this session's lab and the shared image are untouched
    assert {c.id for c in containers_of(docker_client, compose_lab.project)} == before_first
    assert images.image_exists(images.image_ref())
    assert (state / "secrets.json").exists(), "secrets and keys stay"
    print(f"second compose lab: up from nothing (image cached) in {up_seconds:.1f} s")
    assert up_seconds < 120


def test_a_lab_whose_subnet_another_interface_holds_is_refused_naming_it_before_anything_starts(
        compose_lab, tmp_path_factory, monkeypatch):
    """As when another checkout's compose lab runs with the same LAB_PORT_BASE: its bridge holds the
    subnet and podman would refuse the network with no reason (exit 125). Here a bridge
    (local only) holds an address of the subnet of a lab with LAB_PORT_BASE two above this one's."""
    state = tmp_path_factory.mktemp("compose-lab-taken")
    monkeypatch.setenv(compose_lab_module.STATE_ENV, str(state))
    monkeypatch.setenv("LAB_PORT_BASE", str(compose_lab.port_offset + 2))
    taken = compose_lab_module.load_compose_layout()
    holder = "lbtaken0"
    subprocess.run(["ip", "link", "add", holder, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{ipaddress.ip_network(taken.subnet).network_address + 1}/24",
                        "dev", holder], check=True)
        with pytest.raises(LifeboatError) as refused:
            compose_lab_module.up(seed_rows=50)
        message = str(refused.value)
        assert taken.subnet in message and holder in message and "already in use" in message, message
        assert "lab down --kind compose" in refused.value.hint and "LAB_PORT_BASE" in refused.value.hint
        assert not compose_lab_module.api_running(taken), "refused before the API service started"
        assert [r for r in host_routes(taken.subnet) if r.get("type") == "unreachable"] == [], "no guard route added"
    finally:
        subprocess.run(["ip", "link", "del", holder], check=False)
        compose_lab_module.down()


# --- restarts (what the app_container_failure drill will rely on) -------------------------------
def wait_running_again(container, old_pid: int, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "running" and container.attrs["State"]["Pid"] not in (0, old_pid):
            return True
        time.sleep(0.5)
    return False


def test_a_crashed_app_is_restarted_by_its_restart_policy(compose_lab, docker_client):
    container = docker_client.containers.get(compose_lab_module.container_name(compose_lab, "app"))
    pid, restarts = container.attrs["State"]["Pid"], container.attrs["RestartCount"]
    os.kill(pid, signal.SIGKILL)  # a crash: the engine did not stop it
    assert wait_running_again(container, pid), container.status
    assert container.attrs["RestartCount"] == restarts + 1
    compose_lab_module.wait_healthy(compose_lab, "app", timeout_s=60)


def test_an_app_killed_through_the_api_stays_down_until_up_starts_it_with_its_data(compose_lab, docker_client):
    """Podman (like Docker's unless-stopped) counts a kill through the API as a user's stop: no restart."""
    marker = compose_lab.app_storage / "restart-test.txt"
    marker.write_text("kept\n")
    container = docker_client.containers.get(compose_lab_module.container_name(compose_lab, "app"))
    container.kill(signal="SIGKILL")
    time.sleep(3)
    container.reload()
    assert container.status == "exited"
    compose_lab_module.up()
    container.reload()
    assert container.status == "running"
    assert container.exec_run(["cat", "/srv/app/storage/restart-test.txt"]).output == b"kept\n"
    marker.unlink()
