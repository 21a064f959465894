"""What a running Compose project says Lifeboat protects, read through the Docker API (issue #19).

A service is protected when its containers carry the label ``lifeboat.component`` (``mysql``,
``redis``, ``vault`` or ``app``), the way docker-volume-backup users label theirs. Optional
labels refine what the defaults guess:

* ``lifeboat.port``: the port the service listens on (default 3306, 6379, 8200, 8080);
* ``lifeboat.data``: the data folder *inside* the container (default ``/var/lib/mysql``,
  ``/data``, ``/vault/raft``, ``/srv/app/storage``); its host path is found through the
  container's mounts (named volume or bind mount alike).

:func:`discover` returns a :class:`ProjectView`, and :func:`inventory_vars` the Lifeboat
variables it implies (addresses on the project network, volumes' host paths, the ``docker``
service manager on the project). Secrets never come from labels: they stay in the inventory's
group_vars. Nothing is changed on the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    ConnectionFailure,
    NotFound,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import (
    COMPOSE_PROJECT_LABEL,
    COMPOSE_SERVICE_LABEL,
)

COMPONENT_LABEL = "lifeboat.component"
PORT_LABEL = "lifeboat.port"
DATA_LABEL = "lifeboat.data"
COMPONENTS = ("mysql", "redis", "vault", "app")
DEFAULT_PORTS = {"mysql": 3306, "redis": 6379, "vault": 8200, "app": 8080}
DEFAULT_DATA = {"mysql": "/var/lib/mysql", "redis": "/data", "vault": "/vault/raft", "app": "/srv/app/storage"}


@dataclass(frozen=True)
class ServiceView:
    """One protected Compose service: its container, address on the project network, data on the host."""

    component: str
    service: str
    container: str
    network: str
    address: str
    port: int
    data_in_container: str
    data_on_host: Optional[str]
    volume: Optional[str]


@dataclass(frozen=True)
class ProjectView:
    """The protected services of one Compose project (one per component) and where its engine is;
    ``network``: the network(s) they are reached on (comma-separated when they differ)."""

    project: str
    base_url: str
    network: str
    services: dict[str, ServiceView] = field(default_factory=dict)


def discover(client: Any, project: str, base_url: str, network: Optional[str] = None) -> ProjectView:
    """The protected services of ``project`` on the engine of ``client`` (a ``docker.DockerClient``).

    Raises NotFound (project absent: the projects found are named; no labelled service),
    ConfigError (a component on two services, a service scaled to several containers, a
    container on several networks and none chosen, a component the labels misname) and
    ConnectionFailure (engine unreachable)."""
    containers = _project_containers(client, project)
    by_component: dict[str, list[Any]] = {}
    for container in containers:
        component = container.labels.get(COMPONENT_LABEL)
        if component is None:
            continue
        if component not in COMPONENTS:
            raise ConfigError(f"service {container.labels.get(COMPOSE_SERVICE_LABEL)!r} of Compose project "
                              f"{project!r} has {COMPONENT_LABEL}={component!r}",
                              hint=f"use one of {', '.join(COMPONENTS)}")
        by_component.setdefault(component, []).append(container)
    if not by_component:
        services = sorted({c.labels.get(COMPOSE_SERVICE_LABEL, "?") for c in containers})
        raise NotFound(f"no service of Compose project {project!r} has the label {COMPONENT_LABEL}",
                       hint=f"label what Lifeboat protects (e.g. {COMPONENT_LABEL}: mysql); its services: "
                            f"{', '.join(services)}")
    views = {component: _service_view(component, found, project, network) for component, found in by_component.items()}
    networks = sorted({v.network for v in views.values()})
    return ProjectView(project=project, base_url=base_url, network=",".join(networks), services=views)


def inventory_vars(view: ProjectView) -> dict[str, Any]:
    """The Lifeboat variables of ``view`` for every host (what inventories/lab-compose sets by hand)."""
    names = {c: s.service for c, s in view.services.items()}
    out: dict[str, Any] = {
        "lifeboat_deployment": "compose", "lifeboat_docker_host": view.base_url,
        "lifeboat_compose_project": view.project, "lifeboat_compose_network": view.network,
        "lifeboat_compose_services": names,
        "lifeboat_compose_volumes": {c: s.volume for c, s in view.services.items() if s.volume},
        "lifeboat_service_manager": "docker",
        "lifeboat_service_settings": {"base_url": view.base_url, "project": view.project},
        "lifeboat_service_names": names,
    }
    for component, svc in view.services.items():
        out.update(_component_vars(component, svc))
    return out


def _component_vars(component: str, svc: ServiceView) -> dict[str, Any]:
    url = f"http://{svc.address}:{svc.port}"
    if component == "mysql":
        return {"lifeboat_mysql_host": svc.address, "lifeboat_mysql_port": svc.port,
                "lifeboat_mysql_datadir": svc.data_on_host}
    if component == "redis":
        return {"lifeboat_redis_host": svc.address, "lifeboat_redis_port": svc.port,
                "lifeboat_redis_dir": svc.data_on_host}
    if component == "vault":
        return {"lifeboat_vault_addr": url, "lifeboat_vault_datadir": svc.data_on_host}
    return {"lifeboat_app_url": url, "lifeboat_app_storage": svc.data_on_host}


def _project_containers(client: Any, project: str) -> list[Any]:
    import docker.errors

    try:
        containers = client.containers.list(all=True, filters={"label": [f"{COMPOSE_PROJECT_LABEL}={project}"]})
        if containers:
            return containers
        projects = sorted({c.labels.get(COMPOSE_PROJECT_LABEL) for c in client.containers.list(
            all=True, filters={"label": [COMPOSE_PROJECT_LABEL]})} - {None})
    except docker.errors.DockerException as exc:
        raise ConnectionFailure(f"cannot reach the Docker engine to read Compose project {project!r}: {exc}",
                                hint="is the engine running, and is docker_host (or DOCKER_HOST) right?") from exc
    raise NotFound(f"no container of Compose project {project!r} on this engine",
                   hint=f"projects found: {', '.join(projects) or 'none'}")


def _service_view(component: str, containers: list[Any], project: str, network: Optional[str]) -> ServiceView:
    services = sorted({c.labels.get(COMPOSE_SERVICE_LABEL, "?") for c in containers})
    if len(services) > 1:
        raise ConfigError(f"{COMPONENT_LABEL}={component} is on several services of Compose project {project!r}: "
                          f"{', '.join(services)}", hint="label one service per component")
    if len(containers) > 1:
        raise ConfigError(f"Compose service {services[0]!r} ({component}) of project {project!r} runs "
                          f"{len(containers)} containers: {', '.join(sorted(c.name for c in containers))}",
                          hint="Lifeboat protects one container per component: scale the service to 1")
    container = containers[0]
    labels = container.labels
    try:
        port = int(labels.get(PORT_LABEL) or DEFAULT_PORTS[component])
    except ValueError as exc:
        raise ConfigError(f"service {services[0]!r}: {PORT_LABEL}={labels.get(PORT_LABEL)!r} is not a port",
                          hint="a number such as 3306") from exc
    data = labels.get(DATA_LABEL) or DEFAULT_DATA[component]
    host_path, volume = _host_path(container.attrs.get("Mounts") or [], data)
    net = _network_of(container, network, project)
    address = ((container.attrs.get("NetworkSettings") or {}).get("Networks") or {}).get(net, {}).get("IPAddress")
    if not address:
        raise ConfigError(f"service {services[0]!r} ({component}) has no address on network {net!r} "
                          f"(container {container.name} is {container.status})", hint="start the project first")
    return ServiceView(component, services[0], container.name, net, address, port, data, host_path, volume)


def _network_of(container: Any, wanted: Optional[str], project: str) -> str:
    """The network Lifeboat reaches ``container`` on: ``wanted``, else its only one, else the project's."""
    names = sorted((container.attrs.get("NetworkSettings") or {}).get("Networks") or {})
    if wanted:
        if wanted not in names:
            raise ConfigError(f"container {container.name} is not on network {wanted!r}",
                              hint=f"its networks: {', '.join(names) or 'none'}")
        return wanted
    if len(names) == 1:
        return names[0]
    own = [n for n in names if n.startswith(f"{project}_")]
    if len(own) == 1:
        return own[0]
    raise ConfigError(f"container {container.name} is on several networks ({', '.join(names)})",
                      hint="name the one Lifeboat reaches it on with the option network")


def _host_path(mounts: list[dict[str, Any]], data: str) -> tuple[Optional[str], Optional[str]]:
    """(host path, volume name) of the container path ``data`` through the mount holding it (the
    longest destination that is ``data`` or above it); (None, None) when no mount holds it."""
    target = PurePosixPath(data)
    best = None
    for mount in mounts:
        dest = PurePosixPath(str(mount.get("Destination") or ""))
        if (dest == target or dest in target.parents) and (best is None or len(dest.parts) > len(best[0].parts)):
            best = (dest, mount)
    if best is None:
        return None, None
    dest, mount = best
    source = PurePosixPath(str(mount.get("Source")))
    return str(source.joinpath(target.relative_to(dest))), mount.get("Name") if mount.get("Type") == "volume" else None


def service_images(client: Any, project: str, services: dict[str, str]) -> dict[str, str]:
    """``{component: image id}`` of each ``services`` entry (``{component: Compose service}``) of
    ``project``: the image its container runs -- what a full verification's scratch servers run, so
    they are the version the service runs. NotFound names a service without a container, ConfigError
    one scaled to several (the list), ConnectionFailure an unreachable engine."""
    found: dict[str, str] = {}
    containers = _project_containers(client, project)
    for component, service in services.items():
        mine = [c for c in containers if c.labels.get(COMPOSE_SERVICE_LABEL) == service]
        if not mine:
            present = sorted({c.labels.get(COMPOSE_SERVICE_LABEL, "?") for c in containers})
            raise NotFound(f"Compose service {service!r} ({component}) of project {project!r} has no container",
                           hint=f"services found: {', '.join(present)}; fix lifeboat_compose_services or start it")
        images = sorted({c.attrs.get("Image") or c.image.id for c in mine})
        if len(images) > 1:
            raise ConfigError(f"Compose service {service!r} ({component}) runs containers of several images: "
                              f"{', '.join(images)}", hint="scale the service to one container, or update them all")
        found[component] = images[0]
    return found
