"""The multi-host lab: each lab host is a Linux network namespace with its own sshd.

Network safety (every packet stays on this machine):

* The whole lab lives in ONE private subnet, :data:`SUBNET` (named only here).
* Before any namespace is created, :func:`network_up` installs a low-priority
  ``unreachable`` route for the subnet (metric :data:`GUARD_METRIC`) and the bridge
  :data:`BRIDGE` holding :data:`GATEWAY`. While the bridge is up its connected route
  (metric 0) wins; with the bridge down the guard route answers at once with
  EHOSTUNREACH, so nothing can fall through to the default route.
* Namespaces get only their /24 address and ``lo``: no default route, so from inside a
  namespace every address outside the subnet is unreachable, and IP forwarding is
  never switched on.
* Every address this module configures or connects to is checked by
  :func:`require_lab_address`.

Hosts (namespace ``lb-NAME``, host-side veth ``lbv-NAME`` on the bridge, address
``10.213.0.x``): :data:`HOSTS`. MariaDB, Redis, OpenBao and the demo app run in their
host's namespace (``ip netns exec``) from a separate state folder
(:func:`state_dir`, default ``<repo>/.lab-multihost``), so the single-host lab keeps
running on 127.0.0.1. Every namespace runs ``sshd`` (root, key only) so Ansible
connects over SSH as in production.

Public API (all need root)::

    up(state=None) -> dict            # network, sshds, services; idempotent
    down(state=None) -> None          # services, sshds, namespaces, bridge, guard route
    status(state=None) -> dict
    partition(host, seconds=None)     # host-side veth down (healed after ``seconds`` if given)
    heal(host)                        # veth up
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    DependencyMissing,
    LifeboatError,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger
from lab import procs
from lab.layout import REPO_DIR, Layout, load_layout, write_layout

#: The only network the multi-host lab uses. Change it here and nowhere else.
SUBNET = ipaddress.ip_network("10.213.0.0/24")
GATEWAY = ipaddress.ip_address("10.213.0.1")
BRIDGE = "lbbr0"
#: Metric of the guard route: far worse than the bridge's connected route (0).
GUARD_METRIC = 4000
NS_PREFIX = "lb-"
VETH_PREFIX = "lbv-"
SSH_PORT = 22
#: Lab host -> last octet of its address. ``store`` holds the backup store, ``offsite`` the second copy.
HOSTS = {"mysql": 11, "redis": 12, "vault": 13, "app": 14, "store": 15, "offsite": 16}
#: Which host runs which lab service.
SERVICE_HOSTS = {"mysql": "mysql", "redis": "redis", "vault": "vault", "app": "app"}
STATE_ENV = "LAB_MULTIHOST_STATE_DIR"
SSHD_START_TIMEOUT_S = 10.0

log = get_logger("lab.netns")


# --- addresses ----------------------------------------------------------------
def require_lab_address(address: str) -> str:
    """``address`` if it lies in :data:`SUBNET`, else :class:`ConfigError` (never leave the lab net)."""
    if ipaddress.ip_address(address) not in SUBNET:
        raise ConfigError(f"{address} is outside the lab subnet {SUBNET}",
                          hint="the multi-host lab only talks to its own subnet; see lab/netns.py")
    return address


def host_address(host: str) -> str:
    """The lab address of ``host`` (a key of :data:`HOSTS`)."""
    try:
        octet = HOSTS[host]
    except KeyError:
        raise ConfigError(f"unknown multi-host lab host {host!r}", hint=f"use one of: {', '.join(HOSTS)}") from None
    return require_lab_address(str(SUBNET.network_address + octet))


def namespace(host: str) -> str:
    host_address(host)
    return NS_PREFIX + host


def veth(host: str) -> str:
    """Host-side veth of ``host`` (at most 15 characters, the kernel's limit)."""
    host_address(host)
    return VETH_PREFIX + host


# --- state --------------------------------------------------------------------
def state_dir(state: str | os.PathLike | None = None) -> Path:
    """The multi-host lab's state folder: argument, ``$LAB_MULTIHOST_STATE_DIR`` or ``<repo>/.lab-multihost``."""
    chosen = state or os.environ.get(STATE_ENV) or REPO_DIR / ".lab-multihost"
    return Path(chosen).expanduser().resolve()


def ssh_dir(root: Path) -> Path:
    return root / "multihost" / "ssh"


def client_key(root: Path) -> Path:
    """Private key Ansible uses to log in as root on every lab host (0600)."""
    return ssh_dir(root) / "id_ed25519"


def offsite_dir(root: Path) -> Path:
    """The off-site folder, on host ``offsite`` (same file system as every lab host)."""
    return root / "offsite"


def multihost_layout(root: Path) -> Layout:
    """The :class:`Layout` of the multi-host lab in ``root`` (same ports, per-service addresses)."""
    return Layout(root, host=str(GATEWAY),
                  service_hosts=tuple(sorted((svc, host_address(h)) for svc, h in SERVICE_HOSTS.items())),
                  netns=tuple(sorted((svc, namespace(h)) for svc, h in SERVICE_HOSTS.items())),
                  client_hosts=(str(SUBNET.network_address).rsplit(".", 1)[0] + ".%",))


# --- commands -----------------------------------------------------------------
def require_root() -> None:
    if os.geteuid() != 0:
        raise ConfigError("the multi-host lab needs root (network namespaces, bridge, sshd)",
                          hint="run it as root, e.g. in CI or with sudo")
    if not shutil.which("ip"):
        raise DependencyMissing("the multi-host lab needs the program 'ip'", hint="apt-get install iproute2")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip ARGS`` (no secrets ever); raise :class:`LifeboatError` on failure when ``check``."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, env=procs.BASE_ENV)
    if check and result.returncode != 0:
        raise LifeboatError(f"ip {' '.join(args)} failed: {result.stderr.strip()}",
                            hint="see `python -m lab multihost status`; `multihost down` cleans up")
    return result


def link_exists(name: str, ns: str | None = None) -> bool:
    args = (["-n", ns] if ns else []) + ["link", "show", name]
    return ip(*args, check=False).returncode == 0


def link_is_up(name: str) -> bool:
    result = ip("-j", "link", "show", name, check=False)
    if result.returncode != 0:
        return False
    return "UP" in json.loads(result.stdout)[0].get("flags", [])


def namespaces() -> set[str]:
    result = ip("-j", "netns", "list", check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return set()
    return {entry["name"] for entry in json.loads(result.stdout)}


def guard_route_present() -> bool:
    result = ip("-j", "route", "show", "table", "main", "type", "unreachable", str(SUBNET), check=False)
    return result.returncode == 0 and bool(json.loads(result.stdout or "[]"))


# --- network ------------------------------------------------------------------
def ensure_guard_route() -> None:
    """The ``unreachable`` route for the subnet (installed before any bridge or namespace)."""
    if not guard_route_present():
        ip("route", "add", "unreachable", str(SUBNET), "metric", str(GUARD_METRIC))


def disable_ipv6(link: str, ns: str | None = None) -> None:
    """No IPv6 (not even link-local) on a lab link: the lab speaks IPv4 in :data:`SUBNET` only."""
    path = f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6"
    if ns is None:
        if Path(path).exists():
            Path(path).write_text("1\n")
        return
    subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", f"[ ! -e {path} ] || echo 1 > {path}"],
                   check=False, capture_output=True, env=procs.BASE_ENV)


def ensure_bridge() -> None:
    """Bridge :data:`BRIDGE` with :data:`GATEWAY`/24, up (IPv6 off)."""
    if not link_exists(BRIDGE):
        ip("link", "add", BRIDGE, "type", "bridge")
    disable_ipv6(BRIDGE)
    gateway = f"{require_lab_address(str(GATEWAY))}/{SUBNET.prefixlen}"
    if gateway not in ip("-o", "addr", "show", "dev", BRIDGE).stdout:
        ip("addr", "add", gateway, "dev", BRIDGE)
    ip("link", "set", BRIDGE, "up")


def ensure_host_network(host: str) -> None:
    """Namespace + veth pair (``eth0`` inside, on the bridge outside) + address + lo up."""
    ns, outer = namespace(host), veth(host)
    if ns not in namespaces():
        ip("netns", "add", ns)
    if not link_exists(outer):
        if link_exists("eth0", ns):
            ip("-n", ns, "link", "del", "eth0")
        ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
    disable_ipv6(outer)
    disable_ipv6("all", ns)
    disable_ipv6("eth0", ns)
    ip("link", "set", outer, "master", BRIDGE)
    ip("link", "set", outer, "up")
    address = f"{host_address(host)}/{SUBNET.prefixlen}"
    if address not in ip("-n", ns, "-o", "addr", "show", "dev", "eth0").stdout:
        ip("-n", ns, "addr", "add", address, "dev", "eth0")
    ip("-n", ns, "link", "set", "eth0", "up")
    ip("-n", ns, "link", "set", "lo", "up")


def network_up() -> None:
    """Guard route and bridge FIRST, then every host's namespace (idempotent)."""
    require_root()
    ensure_guard_route()
    ensure_bridge()
    for host in HOSTS:
        ensure_host_network(host)


def kill_namespace_processes(ns: str, grace_s: float = 10.0) -> list[int]:
    """Stop every process still inside namespace ``ns`` (SIGTERM, SIGKILL after ``grace_s``).

    Deleting a namespace does not stop its processes: they would live on in an orphaned
    network namespace, unreachable, while their pid files make them look running.
    """
    result = ip("netns", "pids", ns, check=False)
    pids = [int(word) for word in result.stdout.split() if word.isdigit()] if result.returncode == 0 else []
    for sig in (15, 9):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace_s if sig == 15 else 2.0)
        while time.monotonic() < deadline and any(procs.process_alive(pid) for pid in pids):
            time.sleep(0.1)
    if pids:
        log.info("namespace %s: stopped %d leftover process(es)", ns, len(pids))
    return pids


def evict_stray_processes(root: Path) -> list[int]:
    """Kill lab processes (by pid file) that run outside their host's current namespace.

    A process left in a deleted namespace answers nowhere; ``up`` must restart it instead of
    taking its pid file for a running service.
    """
    evicted = []
    for pid_file in sorted((root / "run").glob("*.pid")):
        host = pid_file.name.split(".")[0].removeprefix("sshd_")
        pid = procs.read_pid(pid_file)
        if host not in HOSTS or pid is None or not procs.process_alive(pid):
            continue
        try:
            current = os.stat(f"/proc/{pid}/ns/net").st_ino
            expected = os.stat(f"/run/netns/{namespace(host)}").st_ino
        except OSError:
            continue
        if current != expected:
            os.kill(pid, 9)
            pid_file.unlink(missing_ok=True)
            evicted.append(pid)
            log.warning("%s: pid %d ran in a stale network namespace; stopped it", pid_file.name, pid)
    return evicted


def remove_link(name: str, wait_s: float = 2.0) -> None:
    """Delete link ``name`` if it exists. Deleting a namespace removes its veth pair
    asynchronously, so a peer seen a moment ago may vanish under ``ip link del``: that is
    success; a link still there after ``wait_s`` seconds is an error."""
    deadline = time.monotonic() + wait_s
    while link_exists(name):
        result = ip("link", "del", name, check=False)
        if result.returncode == 0 or not link_exists(name):
            return
        if time.monotonic() > deadline:
            raise LifeboatError(f"ip link del {name} failed: {result.stderr.strip()}",
                                hint="see `python -m lab multihost status`; `multihost down` cleans up")
        time.sleep(0.1)


def network_down() -> None:
    """Stop what still runs in the namespaces, remove them (their veths go with them), the bridge,
    then the guard route."""
    for host in HOSTS:
        ns = namespace(host)
        if ns in namespaces():
            kill_namespace_processes(ns)
            ip("netns", "del", ns)
        remove_link(veth(host))
    if link_exists(BRIDGE):
        ip("link", "del", BRIDGE)
    if guard_route_present():
        ip("route", "del", "unreachable", str(SUBNET), "metric", str(GUARD_METRIC))


# --- sshd ---------------------------------------------------------------------
def _keygen(path: Path, comment: str) -> None:
    if path.exists():
        return
    keygen = procs.find_binary("ssh-keygen", "openssh-client")
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, env=procs.BASE_ENV)
    os.chmod(path, 0o600)


def ensure_ssh_keys(root: Path) -> None:
    """Client key pair, ``authorized_keys`` and one host key per lab host (all under ``<state>/multihost/ssh``)."""
    folder = ssh_dir(root)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _keygen(client_key(root), "lifeboat-multihost-lab")
    authorized = folder / "authorized_keys"
    authorized.write_text(client_key(root).with_suffix(".pub").read_text())
    os.chmod(authorized, 0o600)
    for host in HOSTS:
        _keygen(folder / f"host_{host}_ed25519", f"lb-{host}")


def sshd_config_file(root: Path, host: str) -> Path:
    return ssh_dir(root) / f"sshd_{host}.conf"


def render_sshd_config(root: Path, host: str) -> str:
    """sshd config of one lab host: its address only, root by key only, no PAM."""
    folder = ssh_dir(root)
    return "\n".join([
        "# Written by `python -m lab multihost up`; edits are overwritten.",
        f"ListenAddress {host_address(host)}:{SSH_PORT}",
        f"HostKey {folder / f'host_{host}_ed25519'}",
        f"PidFile {root / 'run' / f'sshd_{host}.sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PrintMotd no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "ClientAliveInterval 5",
        "ClientAliveCountMax 2",
        "Subsystem sftp internal-sftp",
    ]) + "\n"


def sshd_running_pid(root: Path, host: str) -> int | None:
    return procs.running_pid(root / "run" / f"sshd_{host}.pid", str(sshd_config_file(root, host)))


def start_sshd(root: Path, host: str) -> int:
    """Run ``sshd -D`` in the host's namespace; returns its pid (a running one is left alone)."""
    pid = sshd_running_pid(root, host)
    if pid is not None:
        return pid
    sshd = procs.find_binary("sshd", "openssh-server")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    config = sshd_config_file(root, host)
    config.write_text(render_sshd_config(root, host))
    log_file = root / "logs" / f"sshd_{host}.log"
    pid = procs.spawn(["ip", "netns", "exec", namespace(host), sshd, "-D", "-e", "-f", str(config)],
                      root / "run" / f"sshd_{host}.pid", log_file)
    address = host_address(host)
    procs.wait_until(lambda: procs.port_open(address, SSH_PORT, timeout=0.3), f"sshd on {host}",
                     SSHD_START_TIMEOUT_S, pid, str(config), log_file)
    return pid


def stop_sshd(root: Path, host: str) -> int | None:
    return procs.stop_process(root / "run" / f"sshd_{host}.pid", str(sshd_config_file(root, host)), timeout_s=5)


# --- the whole lab --------------------------------------------------------------
def ensure_layout(root: Path) -> Layout:
    """Write the multi-host ``lab.json`` (service addresses and namespaces) if needed; return the layout."""
    wanted = multihost_layout(root)
    if (root / "lab.json").exists():
        current = load_layout(root)
        if current == wanted:
            return current
    write_layout(wanted)
    return wanted


def up(state: str | os.PathLike | None = None, seed_rows: int | None = None) -> dict:
    """Network, sshd on every host, then the lab services in their namespaces (idempotent)."""
    from lab import services

    require_root()
    root = state_dir(state)
    network_up()
    ensure_layout(root)
    (root / "run").mkdir(mode=0o700, parents=True, exist_ok=True)
    evict_stray_processes(root)
    ensure_ssh_keys(root)
    for host in HOSTS:
        start_sshd(root, host)
    offsite_dir(root).mkdir(mode=0o700, exist_ok=True)
    services.up(root, seed_rows=seed_rows)
    return status(root)


def down(state: str | os.PathLike | None = None) -> None:
    """Stop the services and sshds this lab started, then remove namespaces, bridge and guard route."""
    from lab import services

    root = state_dir(state)
    if (root / "lab.json").exists():
        services.down(root)
        for host in HOSTS:
            stop_sshd(root, host)
    if os.geteuid() == 0:
        network_down()


def status(state: str | os.PathLike | None = None) -> dict:
    """Network, hosts (namespace, veth up, sshd pid) and services of the multi-host lab."""
    from lab import services

    root = state_dir(state)
    present = namespaces()
    hosts = {}
    for host in HOSTS:
        hosts[host] = {"address": host_address(host), "namespace": namespace(host),
                       "namespace_exists": namespace(host) in present, "veth_up": link_is_up(veth(host)),
                       "sshd_pid": sshd_running_pid(root, host) if root.exists() else None}
    result = {"state_dir": str(root), "subnet": str(SUBNET), "bridge": BRIDGE, "bridge_up": link_is_up(BRIDGE),
              "guard_route": guard_route_present(), "hosts": hosts, "services": []}
    if (root / "lab.json").exists():
        result["services"] = [row.as_dict() for row in services.status_all(root)]
    return result


def partition(host: str, seconds: float | None = None) -> None:
    """Cut ``host`` off the lab network (host-side veth down); heal by itself after ``seconds`` if given."""
    require_root()
    ip("link", "set", veth(host), "down")
    log.info("multihost: %s partitioned", host)
    if seconds:
        subprocess.Popen(["/bin/sh", "-c", 'sleep "$1"; exec ip link set "$2" up', "sh", str(float(seconds)),
                          veth(host)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, env=procs.BASE_ENV)


def heal(host: str) -> None:
    """Bring ``host``'s veth back up (undo :func:`partition`)."""
    require_root()
    ip("link", "set", veth(host), "up")
    log.info("multihost: %s healed", host)


def wait_reachable(host: str, timeout_s: float = 10.0) -> None:
    """Wait until ``host``'s sshd accepts connections again (after :func:`heal`)."""
    deadline = time.monotonic() + timeout_s
    while not procs.port_open(host_address(host), SSH_PORT, timeout=0.5):
        if time.monotonic() > deadline:
            raise LifeboatError(f"lab host {host} not reachable {timeout_s:.0f} s after healing",
                                hint="see `python -m lab multihost status`")
        time.sleep(0.2)
