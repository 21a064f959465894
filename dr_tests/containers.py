"""The drill's hands on a Compose deployment: the project's containers through the Docker API.

A drill on an inventory with ``lifeboat_deployment: compose`` finds each component's
container the way a user names it -- the Compose project (``lifeboat_compose_project``)
and service (``lifeboat_compose_services[component]``), resolved by the labels every
Compose implementation sets -- on the engine of ``lifeboat_docker_host``. Faults are done
to containers (SIGKILL through the API, a disconnect from the project network), never to
host processes found by port, so nothing outside the project is touched.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

from dr_tests.measure import SERVICES, DrillInventory, NotDrillable

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
KEPT_FROM_LABEL = "lifeboat.kept-from"  # plugins/module_utils/util/compose_volumes.py
KEPT_AT_LABEL = "lifeboat.kept-at"


def is_compose(inv: DrillInventory) -> bool:
    """True when the inventory drives a Compose deployment (``lifeboat_deployment: compose``)."""
    return str(inv.any_var("lifeboat_deployment", "process")) == "compose"


def client(inv: DrillInventory) -> Any:
    """A docker SDK client on the inventory's engine (``lifeboat_docker_host``)."""
    import docker

    base_url = inv.any_var("lifeboat_docker_host")
    if not base_url:
        raise NotDrillable(f"inventory {inv.path} sets lifeboat_deployment: compose but no lifeboat_docker_host")
    try:
        return docker.DockerClient(base_url=str(base_url), timeout=30)
    except docker.errors.DockerException as err:
        raise NotDrillable(f"the Docker API at {base_url} does not answer: {err}") from err


def service_name(inv: DrillInventory, component: str) -> str:
    """The Compose service of ``component`` (``lifeboat_compose_services``)."""
    services = inv.any_var("lifeboat_compose_services") or {}
    if component not in services:
        raise NotDrillable(f"lifeboat_compose_services names no service for {component} -- add it to the inventory")
    return str(services[component])


def container(inv: DrillInventory, component: str, docker_client: Any | None = None) -> Any:
    """The one container of ``component``'s Compose service (NotDrillable if there is none or several)."""
    project = str(inv.any_var("lifeboat_compose_project"))
    service = service_name(inv, component)
    found = (docker_client or client(inv)).containers.list(
        all=True, filters={"label": [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}"]})
    if len(found) != 1:
        raise NotDrillable(f"Compose project {project!r} has {len(found)} containers of service {service!r} "
                           "(a drill needs exactly one) -- is the compose lab up? (python -m lab up --kind compose)")
    return found[0]


def is_running(inv: DrillInventory, component: str) -> bool:
    """Whether the container of ``component`` runs (False when it does not exist)."""
    try:
        found = container(inv, component)
    except NotDrillable:
        return False
    found.reload()
    return found.status == "running"


def kill(inv: DrillInventory, component: str, timeout_s: float = 10.0) -> str:
    """SIGKILL the container of ``component`` through the API; wait until the engine says it exited.
    Returns the container's name."""
    found = container(inv, component)
    found.kill(signal="SIGKILL")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found.reload()
        if found.status != "running":
            return found.name
        time.sleep(0.1)
    raise NotDrillable(f"container {found.name} still runs {timeout_s:.0f} s after SIGKILL")


def address(inv: DrillInventory, component: str) -> tuple[str, int]:
    """``(host, port)`` the inventory reaches ``component`` at (its address on the project network)."""
    if component == "mysql":
        return str(inv.var("mysql", "lifeboat_mysql_host")), int(inv.var("mysql", "lifeboat_mysql_port"))
    if component == "redis":
        return str(inv.var("redis", "lifeboat_redis_host")), int(inv.var("redis", "lifeboat_redis_port"))
    url = str(inv.var("vault", "lifeboat_vault_addr")) if component == "vault" else inv.app_url
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    return host, SERVICES[component][1](inv)


def answers(host: str, port: int, timeout_s: float = 2.0, within_s: float = 0.0) -> bool:
    """Whether a TCP connection to ``host:port`` is accepted within ``timeout_s``, trying again until
    ``within_s`` seconds have passed (a container started anew has a new MAC address: the host's
    first packets to it may be lost while its neighbour entry is re-learnt)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)


def service_problem(inv: DrillInventory, component: str) -> str | None:
    """Why ``component`` is not steady on a Compose deployment (its container does not run, or
    nothing accepts connections at its address), or None."""
    try:
        found = container(inv, component)
    except NotDrillable as err:
        return f"{component}: {err}"
    if found.status != "running":
        return f"{component}: container {found.name} is {found.status}"
    host, port = address(inv, component)
    if not answers(host, port, within_s=15.0):
        return f"{component}: container {found.name} runs but {host}:{port} does not accept connections"
    return None


def network_name(inv: DrillInventory, found: Any) -> tuple[str, str, str]:
    """``(network, IPv4 address, MAC address)`` of the container on its project network (the one it
    is reached on)."""
    host, _ = address(inv, "mysql")
    for name, settings in ((found.attrs.get("NetworkSettings") or {}).get("Networks") or {}).items():
        if settings.get("IPAddress") == host:
            return name, host, str(settings.get("MacAddress") or "")
    raise NotDrillable(f"container {found.name} has no address {host} on any network -- is it already cut off?")


def disconnect(inv: DrillInventory, component: str) -> tuple[str, str, str, str]:
    """Take ``component``'s container off its project network (the container keeps running);
    ``(container, network, IPv4 address, MAC address)`` to reconnect it with."""
    docker_client = client(inv)
    found = container(inv, component, docker_client)
    network, ip, mac = network_name(inv, found)
    docker_client.networks.get(network).disconnect(found.name)
    return found.name, network, ip, mac


def connect(inv: DrillInventory, name: str, network: str, ip: str, mac: str) -> None:
    """Put container ``name`` back on ``network`` at its old addresses (nothing when it is there).

    The old MAC address too: with a new one, the host and the other containers would keep sending
    to the old one until their neighbour entries time out (~30 s more of "partition")."""
    import docker

    docker_client = client(inv)
    found = docker_client.containers.get(name)
    if network in ((found.attrs.get("NetworkSettings") or {}).get("Networks") or {}):
        return
    try:
        docker_client.networks.get(network).connect(name, ipv4_address=ip, mac_address=mac or None)
    except docker.errors.APIError as err:
        if "already" not in str(err).lower():
            raise


def attached(inv: DrillInventory, name: str, network: str) -> bool:
    """Whether container ``name`` is on ``network``."""
    found = client(inv).containers.get(name)
    return network in ((found.attrs.get("NetworkSettings") or {}).get("Networks") or {})


def start_backstop_reconnect(inv: DrillInventory, name: str, network: str, ip: str, mac: str,
                             after_s: float) -> None:
    """A detached process that reconnects the container after ``after_s`` seconds even if the harness
    dies (the disconnect must never outlive the drill)."""
    code = ("import sys, time, docker; time.sleep(float(sys.argv[1])); c = docker.DockerClient(base_url=sys.argv[2]);"
            "n = c.networks.get(sys.argv[4]);"
            "nets = c.containers.get(sys.argv[3]).attrs['NetworkSettings']['Networks'];"
            "sys.argv[4] in nets or n.connect(sys.argv[3], ipv4_address=sys.argv[5], mac_address=sys.argv[6] or None)")
    subprocess.Popen([sys.executable, "-c", code, f"{after_s:.0f}", str(inv.any_var("lifeboat_docker_host")),
                      name, network, ip, mac], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


def remove_kept_volumes(inv: DrillInventory, since: float) -> list[str]:
    """Remove the volumes Lifeboat kept aside (label ``lifeboat.kept-from``) at or after ``since``
    (epoch seconds): what a drill's recovery kept of the data the drill itself damaged. Returns
    their names."""
    from datetime import datetime

    removed = []
    for volume in client(inv).volumes.list(filters={"label": KEPT_FROM_LABEL}):
        kept_at = (volume.attrs.get("Labels") or {}).get(KEPT_AT_LABEL, "")
        try:
            when = datetime.fromisoformat(kept_at).timestamp()
        except ValueError:
            continue
        if when >= since - 1.0:
            volume.remove(force=True)
            removed.append(volume.name)
    return removed


WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"


def project_name(inv: DrillInventory) -> str:
    return str(inv.any_var("lifeboat_compose_project"))


def project_containers(inv: DrillInventory, docker_client: Any | None = None) -> list[Any]:
    """Every container (any state) of the inventory's Compose project."""
    return (docker_client or client(inv)).containers.list(
        all=True, filters={"label": [f"{PROJECT_LABEL}={project_name(inv)}"]})


def project_volumes(inv: DrillInventory, docker_client: Any | None = None) -> list[Any]:
    """The named volumes of the inventory's Compose project (label ``com.docker.compose.project``;
    the volumes Lifeboat kept aside carry no such label)."""
    return (docker_client or client(inv)).volumes.list(filters={"label": f"{PROJECT_LABEL}={project_name(inv)}"})


def remove_project(inv: DrillInventory) -> tuple[list[str], list[str], str]:
    """Remove every container of the project (SIGKILL; a container others depend on goes after
    them) and then every named volume of the project. Returns ``(containers, volumes, working
    folder)``: the folder the containers were created from (label), which this does not touch."""
    import docker

    docker_client = client(inv)
    left = project_containers(inv, docker_client)
    if not left:
        raise NotDrillable(f"Compose project {project_name(inv)!r} has no container -- is the compose lab up?")
    working_dir = left[0].labels.get(WORKING_DIR_LABEL, "")
    removed: list[str] = []
    while left:
        blocked = []
        for found in left:
            try:
                found.remove(force=True)
                removed.append(found.name)
            except docker.errors.APIError as err:
                if "dependent containers" not in str(err):
                    raise
                blocked.append(found)
        if len(blocked) == len(left):
            raise NotDrillable(f"containers {[c.name for c in left]} cannot be removed (each has dependants)")
        left = blocked
    volumes = []
    for volume in project_volumes(inv, docker_client):
        volume.remove(force=True)
        volumes.append(volume.name)
    return removed, volumes, working_dir
