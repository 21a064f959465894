"""The compose lab: the four lab services as Compose services on podman's Docker API.

Same interface as the process lab (``python -m lab up|down|status|env --kind compose``,
or ``LAB_KIND=compose``); see docs/lab.md. What it does, in order (:func:`up`):

1. The image (:mod:`lab.compose.images`, built once per machine and cached).
2. Secrets and keys in its own state folder (``<repo>/.lab-compose``, or
   ``$LAB_COMPOSE_STATE_DIR``), as in the process lab; Compose secret files 0600.
3. Podman private to the lab: a ``storage.conf`` whose graphroot is under the state
   folder (the shared image store only added read-only), a ``containers.conf``
   (runtime runc, ulimits at or below the hard limits, cgroupfs, network configs in
   the state folder), handed to every podman call through ``CONTAINERS_CONF`` /
   ``CONTAINERS_STORAGE_CONF``.
4. Network safety before anything starts: the project subnet (:func:`subnet_for`,
   ``10.214.<n>.0/24`` from ``LAB_PORT_BASE``) gets a local ``unreachable`` guard route;
   the Compose network is ``internal`` (no gateway, no NAT, no IP forwarding) and the
   host reaches it through the bridge address ``.1`` the lab gives the bridge.
5. ``podman system service`` on a private unix socket (``DOCKER_HOST``).
6. The services one ``depends_on`` level at a time (``podman-compose up -d --no-deps``),
   each gated by running its own healthcheck (:func:`wait_healthy`; podman has no
   systemd timers here, and podman-compose ignores ``condition: service_healthy``).
   OpenBao is initialised, unsealed and configured before its gate.
7. The demo data, seeded over the network as in the process lab.

:func:`down` removes exactly what :func:`up` made: the project's containers, volumes and
network (``podman-compose down -v``), the API service, the private podman store, the
bridge address and the guard route. Secrets and keys in the state folder are kept.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    DependencyMissing,
    LifeboatError,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger
from lab import procs, services, svc_mysql, svc_redis, svc_vault
from lab.compose import images
from lab.layout import REPO_DIR, Layout, port_offset_from_env
from lab.secrets import ensure_key_files, ensure_secrets, make_private_dir, write_private_file

COMPOSE_DIR = Path(__file__).resolve().parent
#: The compose file's template: copied into the lab's project folder (:attr:`ComposeLayout.project_dir`).
COMPOSE_FILE = COMPOSE_DIR / "compose.yml"
DEMOAPP_DIR = COMPOSE_DIR.parent / "demoapp"
STATE_ENV = "LAB_COMPOSE_STATE_DIR"
#: Compose service of each lab component (the compose file labels them ``lifeboat.component``).
SERVICES = {"mysql": "db", "redis": "cache", "vault": "vault", "app": "app"}
#: Last octet of each component's address in the project subnet (.1 is the host's bridge address).
OCTETS = {"mysql": 11, "redis": 12, "vault": 13, "app": 14}
VOLUMES = {"mysql": "mysql-data", "redis": "redis-data", "vault": "vault-data", "app": "app-storage"}
GUARD_METRIC = 4000
NET_LOCK = Path("/tmp/lifeboat-compose-net.lock")
HEALTH_TIMEOUT_S = 120.0
API_TIMEOUT_S = 30.0
#: Container ulimits at or below this machine's hard limits (``--ulimit host`` fails here).
ULIMITS = ("nofile=10000:10000", "nproc=4096:4096")

log = get_logger("lab.compose")


# --- where things are --------------------------------------------------------------------
def subnet_for(port_offset: int) -> ipaddress.IPv4Network:
    """The project subnet of the lab with ``LAB_PORT_BASE=port_offset``: ``10.214.<offset mod 256>.0/24``.

    Never the multi-host lab's 10.213.0.0/24; parallel labs with different offsets get different
    subnets (offsets 256 apart collide, and :func:`ensure_guard_route` then refuses to start).
    """
    return ipaddress.ip_network(f"10.214.{port_offset % 256}.0/24")


def project_for(port_offset: int) -> str:
    """The Compose project name of the lab with ``LAB_PORT_BASE=port_offset``."""
    return f"lifeboat{port_offset}" if port_offset else "lifeboat"


def resolve_state_dir(state_dir: str | os.PathLike | None = None) -> Path:
    chosen = state_dir or os.environ.get(STATE_ENV) or REPO_DIR / ".lab-compose"
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class ComposeLayout(Layout):
    """A :class:`Layout` whose data folders are the host paths of the project's named volumes."""

    project: str = "lifeboat"
    subnet: str = "10.214.0.0/24"

    # --- podman, private to this lab ------------------------------------------------------
    @property
    def compose_dir(self) -> Path:
        return self.state_dir / "compose"

    @property
    def graphroot(self) -> Path:
        return self.compose_dir / "storage"

    @property
    def runroot(self) -> Path:
        """Run folder of the lab's podman, short (unix socket paths are limited) and per lab."""
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10]
        return Path("/run") / f"lifeboat-compose-{digest}"

    @property
    def containers_conf(self) -> Path:
        return self.compose_dir / "containers.conf"

    @property
    def storage_conf(self) -> Path:
        return self.compose_dir / "storage.conf"

    @property
    def network_dir(self) -> Path:
        return self.compose_dir / "networks"

    # --- the Compose project's folder: everything ``up`` needs, relative paths, as a user keeps it
    @property
    def project_dir(self) -> Path:
        return self.state_dir / "project"

    @property
    def compose_file(self) -> Path:
        return self.project_dir / "compose.yml"

    @property
    def env_file(self) -> Path:
        """The project's ``.env`` (0600): the variables the compose file uses (addresses, ports, image)."""
        return self.project_dir / ".env"

    @property
    def secrets_dir(self) -> Path:
        return self.project_dir / "secrets"

    @property
    def conf_dir(self) -> Path:
        return self.project_dir / "conf"

    @property
    def app_token_file(self) -> Path:
        """The demo app's OpenBao token: a Compose secret of the project."""
        return self.secrets_dir / "app_vault_token"

    @property
    def api_socket(self) -> Path:
        return self.compose_dir / "podman.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.api_socket}"

    # --- the project --------------------------------------------------------------------
    @property
    def network_name(self) -> str:
        return f"{self.project}_lab"

    @property
    def gateway(self) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + 1)

    def volume_name(self, component: str) -> str:
        return f"{self.project}_{VOLUMES[component]}"

    def volume_path(self, component: str) -> Path:
        """Host path of a component's named volume (podman's local driver: ``volumes/NAME/_data``)."""
        return self.graphroot / "volumes" / self.volume_name(component) / "_data"

    @property
    def mysql_datadir(self) -> Path:
        return self.volume_path("mysql")

    @property
    def redis_dir(self) -> Path:
        return self.volume_path("redis")

    @property
    def vault_datadir(self) -> Path:
        return self.volume_path("vault") / "raft"

    @property
    def app_storage(self) -> Path:
        return self.volume_path("app")

    @property
    def mysql_socket(self) -> Path:
        """MariaDB's socket lives inside its container; there is none on the host."""
        return Path("/nonexistent/compose-lab/mysql.sock")


def load_compose_layout(state_dir: str | os.PathLike | None = None) -> ComposeLayout:
    """The compose lab's layout: its ``lab.json`` if present, else a new one from ``LAB_PORT_BASE``."""
    root = resolve_state_dir(state_dir)
    wanted = port_offset_from_env()
    stored = root / "lab.json"
    if stored.exists():
        offset = int(json.loads(stored.read_text()).get("port_offset", 0))
        if wanted is not None and wanted != offset:
            raise ConfigError(f"compose lab state folder {root} was created with LAB_PORT_BASE={offset}, not {wanted}",
                              hint=f"unset LAB_PORT_BASE, or use another {STATE_ENV}")
    else:
        offset = wanted or 0
    subnet = subnet_for(offset)
    hosts = {name: str(subnet.network_address + octet) for name, octet in OCTETS.items()}
    return ComposeLayout(root, host=str(subnet.network_address + 1), port_offset=offset,
                         service_hosts=tuple(sorted(hosts.items())),
                         client_hosts=(str(subnet.network_address).rsplit(".", 1)[0] + ".%",),
                         project=project_for(offset), subnet=str(subnet))


def write_lab_json(layout: ComposeLayout) -> None:
    make_private_dir(layout.state_dir)
    data = dict(layout.to_json(), kind="compose", project=layout.project, subnet=layout.subnet,
                docker_host=layout.docker_host, compose_file=str(layout.compose_file),
                project_dir=str(layout.project_dir), compose_command=[podman_compose_binary()],
                compose_environment=podman_only_env(layout), services=dict(SERVICES),
                volumes={component: layout.volume_name(component) for component in SERVICES},
                volume_paths={component: str(layout.volume_path(component)) for component in SERVICES})
    write_private_file(layout.state_dir / "lab.json", json.dumps(data, indent=2) + "\n")


# --- podman configuration -------------------------------------------------------------------
def render_containers_conf(layout: ComposeLayout) -> str:
    ulimits = ", ".join(f'"{u}"' for u in ULIMITS)
    return f"""# Written by `python -m lab up --kind compose`: podman private to this lab.
[containers]
default_ulimits = [{ulimits}]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{layout.compose_dir / 'events.log'}"
tmp_dir = "{layout.runroot / 'tmp'}"
# conmon of an exec session waits this long for its exit to be collected (default 300 s: every
# exec through the API left a conmon for 5 minutes)
exit_command_delay = 10

[network]
network_config_dir = "{layout.network_dir}"
"""


def render_storage_conf(layout: ComposeLayout) -> str:
    return f"""# Written by `python -m lab up --kind compose`: the lab's own store; images from the shared cache.
[storage]
driver = "overlay"
graphroot = "{layout.graphroot}"
runroot = "{layout.runroot / 'storage'}"

[storage.options]
additionalimagestores = ["{images.store_root()}"]
"""


def write_podman_conf(layout: ComposeLayout) -> None:
    make_private_dir(layout.compose_dir)
    layout.network_dir.mkdir(parents=True, exist_ok=True)
    layout.containers_conf.write_text(render_containers_conf(layout))
    layout.storage_conf.write_text(render_storage_conf(layout))


def podman_only_env(layout: ComposeLayout) -> dict[str, str]:
    """The variables that make podman (and podman-compose) this lab's: its configuration and store."""
    return {"CONTAINERS_CONF": str(layout.containers_conf), "CONTAINERS_STORAGE_CONF": str(layout.storage_conf)}


def podman_env(layout: ComposeLayout) -> dict[str, str]:
    """Environment of every podman / podman-compose call of this lab (no secrets in it)."""
    return dict(procs.BASE_ENV, **podman_only_env(layout))


def podman(layout: ComposeLayout, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, env=podman_env(layout),
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise LifeboatError(f"podman {' '.join(args)} failed (exit {result.returncode}): "
                            f"{result.stderr.strip()[-1500:]}",
                            hint="see `python -m lab status --kind compose`; `lab down --kind compose` cleans up")
    return result


# --- network safety -------------------------------------------------------------------------
def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, env=procs.BASE_ENV, check=False)
    if check and result.returncode != 0:
        raise LifeboatError(f"ip {' '.join(args)} failed: {result.stderr.strip()}",
                            hint="the compose lab needs root and iproute2")
    return result


def routes_for(subnet: str) -> list[dict]:
    """Main-table routes of exactly ``subnet`` (JSON rows of ``ip -j route``)."""
    out = ip("-j", "route", "show", "table", "main", "exact", subnet).stdout
    return json.loads(out or "[]")


def guard_route_present(subnet: str) -> bool:
    return any(r.get("type") == "unreachable" and r.get("metric") == GUARD_METRIC for r in routes_for(subnet))


@contextmanager
def net_lock() -> Iterator[None]:
    """Machine-wide lock around subnet and bridge set-up (parallel compose labs)."""
    fd = os.open(NET_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def subnet_holders(subnet: str) -> dict[str, str]:
    """Interfaces of the main namespace with an IPv4 address inside ``subnet``: ``{name: address/len}``."""
    network = ipaddress.ip_network(subnet)
    holders = {}
    for row in json.loads(ip("-j", "addr", "show").stdout or "[]"):
        for addr in row.get("addr_info", []):
            if addr.get("family") == "inet" and ipaddress.ip_address(addr["local"]) in network:
                holders[row.get("ifname", "?")] = f"{addr['local']}/{addr.get('prefixlen')}"
    return holders


def refuse_a_subnet_in_use(layout: ComposeLayout) -> None:
    """Refuse (:class:`ConfigError`, naming the interface) when something other than this lab's own
    bridge holds an address or a route in the lab's subnet: another compose lab (another checkout or
    state folder with the same ``LAB_PORT_BASE`` mod 256), or a network of the machine. podman would
    refuse the network later with no word of why (``network create`` exit 125)."""
    own = bridge_name(layout)
    holders = {name: cidr for name, cidr in subnet_holders(layout.subnet).items() if name != own}
    routed = [r.get("dev", "?") for r in routes_for(layout.subnet)
              if r.get("type") != "unreachable" and r.get("dev") != own]
    if holders or routed:
        what = ", ".join(f"{name} ({cidr})" for name, cidr in holders.items()) or f"a route via {routed[0]}"
        raise ConfigError(f"subnet {layout.subnet} of the compose lab in {layout.state_dir} is already in use on "
                          f"this machine: {what}",
                          hint="another compose lab holds it: take that one down (`python -m lab down --kind compose` "
                               "in its checkout), or give this one a LAB_PORT_BASE whose value mod 256 differs")


def ensure_guard_route(layout: ComposeLayout) -> None:
    """Add the ``unreachable`` guard route for the subnet (before anything starts).

    Refuses first (:func:`refuse_a_subnet_in_use`) when anything but this lab's network uses the
    subnet: another lab, or something else of the machine.
    """
    refuse_a_subnet_in_use(layout)
    if guard_route_present(layout.subnet):
        return
    ip("route", "add", "unreachable", layout.subnet, "metric", str(GUARD_METRIC))
    log.info("compose: guard route 'unreachable %s metric %d' added", layout.subnet, GUARD_METRIC)


def remove_guard_route(layout: ComposeLayout) -> None:
    if guard_route_present(layout.subnet):
        ip("route", "del", "unreachable", layout.subnet, "metric", str(GUARD_METRIC))


def network_exists(layout: ComposeLayout) -> bool:
    if not layout.containers_conf.exists():
        return False
    return podman(layout, "network", "exists", layout.network_name, check=False).returncode == 0


def bridge_name(layout: ComposeLayout) -> str | None:
    """The host bridge podman made for the project network (None without the network)."""
    if not network_exists(layout):
        return None
    info = json.loads(podman(layout, "network", "inspect", layout.network_name).stdout)
    return info[0].get("network_interface") if info else None


def ensure_bridge_address(layout: ComposeLayout) -> None:
    """Give the project bridge the host address ``.1`` (the network is internal: no gateway of its own)."""
    bridge = bridge_name(layout)
    if not bridge:
        raise LifeboatError(f"compose: network {layout.network_name} has no bridge", hint="run lab down, then up")
    cidr = f"{layout.gateway}/{ipaddress.ip_network(layout.subnet).prefixlen}"
    addresses = json.loads(ip("-j", "addr", "show", "dev", bridge).stdout or "[]")
    present = {f"{a['local']}/{a['prefixlen']}" for row in addresses for a in row.get("addr_info", [])
               if a.get("family") == "inet"}
    if cidr not in present:
        ip("addr", "add", cidr, "dev", bridge)
    pin_bridge_mac(bridge)
    ip("link", "set", bridge, "up")


def pin_bridge_mac(bridge: str) -> None:
    """Make the bridge keep its MAC address (set it to its current one, once).

    A Linux bridge whose address was never set takes the lowest MAC of its ports, so a container
    leaving or joining the network (a restart, a network disconnect) can change the host's MAC
    on the subnet; every container still holding the old one in its neighbour cache then drops
    the host's traffic until that entry times out (~30 s: seen as a partition drill whose
    reconnected server stayed unreachable). An address set explicitly is kept
    (``addr_assign_type`` 3, as ``docker0`` does)."""
    assign = Path(f"/sys/class/net/{bridge}/addr_assign_type")
    if assign.exists() and assign.read_text().strip() == "3":
        return
    mac = Path(f"/sys/class/net/{bridge}/address").read_text().strip()
    ip("link", "set", "dev", bridge, "address", mac)


# --- the API service ------------------------------------------------------------------------
def api_pid_file(layout: ComposeLayout) -> Path:
    return layout.compose_dir / "podman-service.pid"


def api_marker(layout: ComposeLayout) -> str:
    return layout.docker_host


def api_running(layout: ComposeLayout) -> int | None:
    return procs.running_pid(api_pid_file(layout), api_marker(layout))


def api_answers(layout: ComposeLayout) -> bool:
    """True if the API socket answers a ping (a raw request: no client is cached before it answers)."""
    import http.client
    import socket as _socket

    conn = http.client.HTTPConnection("localhost", timeout=5)
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(str(layout.api_socket))
        conn.sock = sock
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def ensure_api(layout: ComposeLayout) -> int:
    """Start ``podman system service`` on the lab's unix socket (idempotent); returns its pid."""
    pid = api_running(layout)
    if pid is None:
        layout.api_socket.unlink(missing_ok=True)
        log_file = layout.compose_dir / "podman-service.log"
        pid = procs.spawn(["podman", "system", "service", "--time=0", api_marker(layout)], api_pid_file(layout),
                          log_file, env=podman_env(layout))
        procs.wait_until(lambda: api_answers(layout), "podman API service", API_TIMEOUT_S, pid,
                         api_marker(layout), log_file)
        log.info("compose: podman API service pid %d on %s", pid, layout.docker_host)
    return pid


def stop_api(layout: ComposeLayout) -> None:
    procs.stop_process(api_pid_file(layout), api_marker(layout), timeout_s=15)
    layout.api_socket.unlink(missing_ok=True)


_CLIENTS: dict[tuple[str, int], object] = {}


def docker_client(layout: ComposeLayout, timeout: int = 60):
    """A ``docker`` SDK client on the lab's API socket, one per process (do not close it).

    Made once because the SDK's API version negotiation costs podman ~1.4 s per client.
    """
    import docker

    key = (layout.docker_host, timeout)
    if key not in _CLIENTS:
        _CLIENTS[key] = docker.DockerClient(base_url=layout.docker_host, timeout=timeout)
    return _CLIENTS[key]


# --- compose -----------------------------------------------------------------------------------
def project_variables(layout: ComposeLayout, image: str) -> dict[str, str]:
    """The variables the compose file interpolates, kept in the project's ``.env`` (addresses,
    ports, MACs, the subnet and the image; never a secret)."""
    env = {"LIFEBOAT_IMAGE": image, "LAB_SUBNET": layout.subnet}
    for component in SERVICES:
        env[f"LAB_{component.upper()}_IP"] = layout.host_for(component)
        env[f"LAB_{component.upper()}_MAC"] = mac_for(layout.host_for(component))
        env[f"LAB_{component.upper()}_PORT"] = str(layout.port(component))
    return env


def render_env_file(variables: dict[str, str]) -> str:
    lines = ["# Written by `python -m lab up --kind compose`: the variables of compose.yml (no secrets)."]
    return "\n".join(lines + [f"{name}={value}" for name, value in sorted(variables.items())]) + "\n"


def mac_for(ipv4: str) -> str:
    """A container's fixed MAC address, made of its IPv4 address as Docker's bridge driver does
    (``02:42:`` + the four bytes). podman gives a container a random MAC at every start: this host
    would keep sending to the old one until its neighbour entry expires (~30-60 s unreachable
    after each restart of a service)."""
    return "02:42:" + ":".join(f"{int(octet):02x}" for octet in ipv4.split("."))


def podman_compose_binary() -> str:
    return procs.find_binary("podman-compose", "podman-compose (PyPI, in requirements.txt: run make setup)",
                             extra_dirs=[REPO_DIR / ".venv" / "bin", Path(sys.executable).parent])


def compose(layout: ComposeLayout, image: str, *args: str, timeout: float = 600) -> str:
    """Run ``podman-compose -p PROJECT -f <project>/compose.yml ARGS`` in the project folder (its
    ``.env`` gives the variables; the folder is written first when missing); its output, or
    :class:`LifeboatError`."""
    if not layout.compose_file.exists():
        write_project_folder(layout, image)
    argv = [podman_compose_binary(), "-p", layout.project, "-f", str(layout.compose_file), *args]
    result = subprocess.run(argv, capture_output=True, text=True, env=podman_env(layout), timeout=timeout,
                            check=False, cwd=str(layout.project_dir))
    if result.returncode != 0:
        raise LifeboatError(f"podman-compose {' '.join(args)} failed (exit {result.returncode}): "
                            f"{(result.stderr or result.stdout).strip()[-1500:]}",
                            hint="see `python -m lab status --kind compose`")
    return result.stdout


def load_compose_file(path: Path = COMPOSE_FILE) -> dict:
    return yaml.safe_load(path.read_text())


def start_levels(spec: dict) -> list[list[str]]:
    """Services grouped by ``depends_on`` depth: level 0 depends on nothing, level n on levels < n.

    Raises :class:`ConfigError` on an unknown dependency or a cycle.
    """
    services = spec.get("services") or {}
    deps: dict[str, set[str]] = {}
    for name, body in services.items():
        raw = (body or {}).get("depends_on") or []
        wanted = set(raw) if isinstance(raw, (list, dict)) else set()
        unknown = wanted - set(services)
        if unknown:
            raise ConfigError(f"service {name!r} depends on unknown service(s) {sorted(unknown)}",
                              hint="fix depends_on in the compose file")
        deps[name] = wanted
    levels: list[list[str]] = []
    placed: set[str] = set()
    while len(placed) < len(services):
        level = sorted(n for n in services if n not in placed and deps[n] <= placed)
        if not level:
            raise ConfigError(f"depends_on cycle among {sorted(set(services) - placed)}",
                              hint="fix depends_on in the compose file")
        levels.append(level)
        placed.update(level)
    return levels


# --- health -----------------------------------------------------------------------------------
def container_name(layout: ComposeLayout, service: str) -> str | None:
    """The name of the project's container of ``service`` (by Compose labels), or None."""
    found = project_containers(layout, service, sparse=True)
    return found[0].attrs["Names"][0].lstrip("/") if found else None


def project_containers(layout: ComposeLayout, service: str | None = None, sparse: bool = False) -> list:
    """The project's containers (of one service), found by their Compose labels.

    ``sparse`` skips inspecting each one (podman's API is slow at that): names, ids and
    labels only.
    """
    labels = [f"com.docker.compose.project={layout.project}"]
    if service:
        labels.append(f"com.docker.compose.service={service}")
    return docker_client(layout).containers.list(all=True, filters={"label": labels}, sparse=sparse)


def service_running(layout: ComposeLayout, service: str) -> bool:
    """True if ``service`` has a container and it runs (then ``up`` leaves it as it is)."""
    found = project_containers(layout, service, sparse=True)
    return bool(found) and all(c.attrs.get("State") == "running" for c in found)


def run_healthcheck(layout: ComposeLayout, container: str) -> tuple[bool, str]:
    """Run a container's own healthcheck once (``podman healthcheck run``): (healthy, what it said).

    ``podman healthcheck run`` records the result in the container's health log (shown by
    ``docker inspect``); the check's own output is taken from there.
    """
    result = podman(layout, "healthcheck", "run", container, check=False, timeout=60)
    said = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        health = podman(layout, "inspect", "--format", "{{json .State.Health}}", container, check=False)
        try:
            entries = (json.loads(health.stdout or "{}") or {}).get("Log") or []
        except json.JSONDecodeError:
            entries = []
        if entries and entries[-1].get("Output"):
            said = f"{said}: {entries[-1]['Output'].strip()}"
    return result.returncode == 0, said


def wait_healthy(layout: ComposeLayout, service: str, timeout_s: float = HEALTH_TIMEOUT_S,
                 interval_s: float = 0.5) -> float:
    """Run ``service``'s healthcheck until it passes; the seconds it took.

    Raises :class:`LifeboatError` naming the service, the last healthcheck output and the
    container's log tail when it is not healthy after ``timeout_s`` or its container stops.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    output = ""
    name = container_name(layout, service)
    if name is None:
        raise LifeboatError(f"compose: service {service!r} has no container in project {layout.project}",
                            hint="see `python -m lab status --kind compose`")
    while True:
        healthy, output = run_healthcheck(layout, name)
        if healthy:
            return time.monotonic() - started
        state = json.loads(podman(layout, "inspect", "--format", "{{json .State}}", name).stdout or "{}")
        if not state.get("Running") and state.get("Status") not in ("created", "configured", "initialized"):
            logs = podman(layout, "logs", "--tail", "15", name, check=False)
            raise LifeboatError(f"compose: service {service!r} (container {name}) stopped before it became healthy "
                                f"(exit code {state.get('ExitCode')})",
                                hint=f"its last log lines:\n{(logs.stdout + logs.stderr).strip()}")
        if time.monotonic() > deadline:
            logs = podman(layout, "logs", "--tail", "15", name, check=False)
            raise LifeboatError(f"compose: service {service!r} (container {name}) not healthy after {timeout_s:.0f} s; "
                                f"last healthcheck output: {output or '(none)'}",
                                hint=f"its last log lines:\n{(logs.stdout + logs.stderr).strip()}")
        time.sleep(interval_s)


# --- the services' files ----------------------------------------------------------------------
def render_redis_conf(layout: ComposeLayout, secrets: dict) -> str:
    """The process lab's redis.conf with the container's bind address and data folder."""
    lines = []
    for line in svc_redis.render_config(layout, secrets).splitlines():
        if line.startswith("bind "):
            line = "bind 0.0.0.0"
        elif line.startswith("dir "):
            line = "dir /data"
        lines.append(line)
    return "\n".join(lines) + "\n"


def render_bao_hcl(layout: ComposeLayout) -> str:
    host = layout.host_for("vault")
    return f"""# Written by `python -m lab up --kind compose`; no secrets in it.
ui = false
log_level = "info"
disable_mlock = true
api_addr = "http://{host}:{layout.port('vault')}"
cluster_addr = "http://{host}:{layout.port('vault_cluster')}"

storage "raft" {{
  path    = "/bao/raft"
  node_id = "lab-vault"
}}

listener "tcp" {{
  address         = "0.0.0.0:{layout.port('vault')}"
  cluster_address = "0.0.0.0:{layout.port('vault_cluster')}"
  tls_disable     = true
}}
"""


def render_app_config(layout: ComposeLayout) -> dict:
    return {"listen_host": "0.0.0.0", "listen_port": layout.port("app"), "vault_addr": layout.vault_addr,
            "vault_token_file": "/run/secrets/app_vault_token", "vault_mount": "secret",
            "db_secret": "demoapp/db", "redis_secret": "demoapp/redis", "storage": "/srv/app/storage",
            "log_file": "/srv/app/logs/app.log", "timeout_s": 2}


def sync_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Make ``path`` hold ``data`` with ``mode``; written in place (same inode: a file bind-mounted
    into a running container sees it) and only when it differs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_bytes() != data:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with open(fd, "wb") as out:
            out.write(data)
    os.chmod(path, mode)


def write_project_folder(layout: ComposeLayout, image: str) -> None:
    """The Compose project's folder (:attr:`ComposeLayout.project_dir`), self-contained as a user
    keeps one: ``compose.yml`` (the template), ``bin/``, ``mariadb.cnf``, ``demoapp/`` (the app's
    code), ``.env`` (0600, :func:`project_variables`), ``conf/`` and ``secrets/`` (0600,
    :func:`write_service_files`). A Lifeboat backup stores it; a rebuild brings it back."""
    make_private_dir(layout.project_dir)
    sync_file(layout.compose_file, COMPOSE_FILE.read_bytes())
    sync_file(layout.project_dir / "mariadb.cnf", (COMPOSE_DIR / "mariadb.cnf").read_bytes())
    for script in sorted((COMPOSE_DIR / "bin").iterdir()):
        sync_file(layout.project_dir / "bin" / script.name, script.read_bytes(), 0o755)
    for source in sorted(DEMOAPP_DIR.glob("*.py")):
        sync_file(layout.project_dir / "demoapp" / source.name, source.read_bytes())
    sync_file(layout.env_file, render_env_file(project_variables(layout, image)).encode(), 0o600)
    write_service_files(layout)


def write_service_files(layout: ComposeLayout) -> None:
    """Compose secret files (0600) and the services' configs (no secrets)."""
    secrets = ensure_secrets(layout)
    make_private_dir(layout.secrets_dir)
    sync_file(layout.secrets_dir / "mysql_init.sql",
              svc_mysql.provisioning_sql(secrets, layout.client_hosts).encode(), 0o600)
    sync_file(layout.secrets_dir / "redis.conf", render_redis_conf(layout, secrets).encode(), 0o600)
    sync_file(layout.secrets_dir / "redis_password", secrets["redis_password"].encode(), 0o600)
    make_private_dir(layout.app_dir)
    if not layout.app_token_file.exists():  # a placeholder until OpenBao made the real token
        write_private_file(layout.app_token_file, "")
    sync_file(layout.conf_dir / "bao.hcl", render_bao_hcl(layout).encode())
    sync_file(layout.conf_dir / "app.json", (json.dumps(render_app_config(layout), indent=2) + "\n").encode())


# --- up / down / status -----------------------------------------------------------------------
def require_host_tools() -> None:
    if os.geteuid() != 0:
        raise ConfigError("the compose lab needs root (podman rootful, bridge address, guard route)",
                          hint="run it as root, e.g. in CI or with sudo")
    for tool, package in (("podman", "podman"), ("runc", "runc"), ("ip", "iproute2")):
        if not shutil.which(tool):
            raise DependencyMissing(f"the compose lab needs {tool}",
                                    hint=f"run `make setup` (apt-get install {package})")


def post_start(layout: ComposeLayout, component: str) -> None:
    """What a service needs after its container started and before its gate (OpenBao: init/unseal/configure)."""
    if component == "vault":
        deadline = time.monotonic() + API_TIMEOUT_S
        while svc_vault.health_code(layout) is None:
            if time.monotonic() > deadline:
                raise LifeboatError(f"compose: OpenBao does not answer on {layout.vault_addr}",
                                    hint="see the vault container's log: podman logs (CONTAINERS_* as in lab.py)")
            time.sleep(0.3)
        svc_vault.initialise(layout)
        svc_vault.unseal(layout)
        svc_vault.configure(layout)


def up(state_dir: str | os.PathLike | None = None, seed_rows: int | None = None,
       health_timeout_s: float = HEALTH_TIMEOUT_S) -> list[dict]:
    """Bring the compose lab up from any state (idempotent); returns :func:`status`."""
    from lab import seed

    require_host_tools()
    started = time.monotonic()
    image = images.ensure_image()
    layout = load_compose_layout(state_dir)
    write_lab_json(layout)
    ensure_secrets(layout)
    ensure_key_files(layout)
    write_podman_conf(layout)
    write_project_folder(layout, image)
    component_of = {svc: comp for comp, svc in SERVICES.items()}
    with services.locked(layout), net_lock():
        ensure_guard_route(layout)
        ensure_api(layout)
        levels = start_levels(load_compose_file())
        for number, level in enumerate(levels):
            if not all(service_running(layout, service) for service in level):
                compose(layout, image, "up", "-d", "--no-deps", *level)
            if number == 0:
                ensure_bridge_address(layout)
            for service in level:
                post_start(layout, component_of[service])
                seconds = wait_healthy(layout, service, timeout_s=health_timeout_s)
                log.info("compose: %s healthy (%.1f s)", service, seconds)
            if number == 0:
                write_service_files(layout)  # the app token exists now
    if not seed.demo_schema_exists(layout):
        seed.seed(layout, rows=seed_rows or seed.DEFAULT_ROWS)
    log.info("compose: project %s up in %.1f s", layout.project, time.monotonic() - started)
    return status(layout.state_dir)


def status(state_dir: str | os.PathLike | None = None) -> list[dict]:
    """One row per Compose service: container, state, health (as last run) and address."""
    layout = load_compose_layout(state_dir)
    rows = []
    running_api = api_running(layout) is not None
    by_service = {}
    if running_api:
        for container in project_containers(layout):
            by_service[container.labels.get("com.docker.compose.service")] = container
    for component, service in SERVICES.items():
        container = by_service.get(service)
        health = None
        if container is not None:
            health = (container.attrs.get("State", {}).get("Health") or {}).get("Status")
        rows.append({"service": service, "component": component,
                     "container": container.name if container else None,
                     "state": container.status if container else "absent", "health": health,
                     "address": f"{layout.host_for(component)}:{layout.port(component)}",
                     "volume": layout.volume_name(component)})
    return rows


def lab_processes(layout: ComposeLayout) -> list[int]:
    """Pids of processes whose command line names this lab's podman store (conmon of exec sessions)."""
    marker = str(layout.graphroot) + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and procs.process_matches(int(entry.name), marker):
            found.append(int(entry.name))
    return found


def stop_leftover_processes(layout: ComposeLayout, timeout_s: float = 10.0) -> None:
    """End what podman left of this lab once its containers are gone: exec sessions' conmon processes
    (SIGTERM, then SIGKILL), identified by the lab's store path in their command line."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in lab_processes(layout):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        while lab_processes(layout) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not lab_processes(layout):
            return


def unmount_below(folder: Path) -> None:
    """Unmount whatever podman's storage left mounted at or below ``folder`` (deepest first)."""
    prefix = str(folder)
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m == prefix or m.startswith(prefix + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False, env=procs.BASE_ENV)


def down(state_dir: str | os.PathLike | None = None) -> None:
    """Remove exactly what :func:`up` made (containers, volumes, network, API service, store, route)."""
    layout = load_compose_layout(state_dir)
    if not layout.compose_dir.exists():
        return
    with services.locked(layout), net_lock():
        if layout.containers_conf.exists():
            bridge = bridge_name(layout)
            try:
                image = images.image_ref()
            except LifeboatError:
                image = "unused"
            compose(layout, image, "down", "-v", "-t", "20")
            if network_exists(layout):
                podman(layout, "network", "rm", "-f", layout.network_name)
            if bridge and ip("link", "show", bridge, check=False).returncode == 0:
                ip("link", "del", bridge)
        stop_api(layout)
        stop_leftover_processes(layout)
        remove_guard_route(layout)
        unmount_below(layout.graphroot)
        unmount_below(layout.runroot)
        shutil.rmtree(layout.graphroot, ignore_errors=True)
        shutil.rmtree(layout.runroot, ignore_errors=True)
        shutil.rmtree(layout.network_dir, ignore_errors=True)
    log.info("compose: project %s removed", layout.project)


def env(state_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """The process lab's ``LAB_*`` values for this lab, plus DOCKER_HOST and the Compose project name."""
    from lab.envinfo import values_for

    layout = load_compose_layout(state_dir)
    values = values_for(layout)
    values.update(LAB_KIND="compose", DOCKER_HOST=layout.docker_host, COMPOSE_PROJECT_NAME=layout.project,
                  LAB_COMPOSE_FILE=str(layout.compose_file))
    return values
