"""The multi-host lab: hosts in network namespaces reached over SSH, and the playbooks across them.

Needs root and ``ip netns`` (skipped with the reason otherwise; CI runs as root). The lab
(lab/netns.py) is brought up once per session in its own state folder and subnet and
taken down at the end if this session started it; the single-host lab is not touched.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.multihost

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventories" / "lab-multihost"
PLAYBOOK_TIMEOUT_S = 420


def multihost_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the multi-host lab needs root (network namespaces, bridge, sshd)"
    if not shutil.which("ip") or subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                check=False).returncode != 0:
        return "`ip netns` is not available (apt-get install iproute2; needs CAP_NET_ADMIN)"
    if not Path("/usr/sbin/sshd").exists() and not shutil.which("sshd"):
        return "sshd is missing (apt-get install openssh-server)"
    return None


@pytest.fixture(scope="session")
def multihost():
    """The running multi-host lab (its status dict); torn down after the session if we started it."""
    reason = multihost_unavailable()
    if reason:
        pytest.skip(reason)
    from lab import netns

    was_running = netns.status()["bridge_up"]
    report = netns.up()
    yield report
    if not was_running:
        netns.down()


def ansible(*args: str, timeout: float = PLAYBOOK_TIMEOUT_S, env_extra: dict | None = None
            ) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", **(env_extra or {}))
    return subprocess.run([str(REPO / ".venv" / "bin" / args[0]), "-i", str(INVENTORY), *args[1:]], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)


def connect_error(address: str, port: int, timeout: float) -> tuple[int | None, float]:
    """(errno of a TCP connect to address:port or None if it connected, seconds it took)."""
    start = time.monotonic()
    sock = socket.socket()
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
        return None, time.monotonic() - start
    except OSError as err:
        return err.errno, time.monotonic() - start
    finally:
        sock.close()


def test_lab_traffic_cannot_leave_the_machine(multihost):
    from lab import netns

    assert multihost["guard_route"] and multihost["bridge_up"]
    addresses = {info["address"] for info in multihost["hosts"].values()}
    assert all(netns.SUBNET.overlaps(netns.ipaddress.ip_network(a + "/32")) for a in addresses)
    with pytest.raises(Exception, match="outside the lab subnet"):
        netns.require_lab_address("192.0.2.1")
    # with the bridge down, a lab address is unreachable at once (guard route), not routed away
    subprocess.run(["ip", "link", "set", netns.BRIDGE, "down"], check=True)
    try:
        code, took = connect_error(netns.host_address("mysql"), 22, timeout=5)
    finally:
        subprocess.run(["ip", "link", "set", netns.BRIDGE, "up"], check=True)
    assert code in (errno.EHOSTUNREACH, errno.ENETUNREACH) and took < 1.0
    # inside a namespace there is no route but the lab subnet
    probe = ("import socket\ns=socket.socket(); s.settimeout(3)\ntry:\n s.connect(('192.0.2.1', 80))\n"
             "except OSError as e: print(e.errno)\n")
    out = subprocess.run(["ip", "netns", "exec", netns.namespace("app"), "python3", "-c", probe],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(errno.ENETUNREACH)
    netns.wait_reachable("mysql")


def test_services_run_on_their_own_hosts(multihost):
    rows = {row["service"]: row for row in multihost["services"]}
    hosts = multihost["hosts"]
    for service in ("mysql", "redis", "vault", "app"):
        assert rows[service]["running"] and rows[service]["port_open"]
        assert rows[service]["host"] == hosts[service]["address"]
    for host, info in hosts.items():
        assert info["namespace_exists"] and info["veth_up"] and info["sshd_pid"], host


def test_ansible_reaches_every_host_over_ssh_and_fails_fast_when_cut_off(multihost):
    from lab import netns

    result = ansible("ansible", "all", "-m", "ansible.builtin.command", "-a", "ip -o -4 addr show dev eth0")
    assert result.returncode == 0, result.stdout[-2000:]
    for host, info in multihost["hosts"].items():
        assert f"mh-{host} | CHANGED" in result.stdout and info["address"] in result.stdout

    netns.partition("redis", seconds=60)
    try:
        start = time.monotonic()
        cut = ansible("ansible", "redis", "-m", "ansible.builtin.ping", timeout=60)
        took = time.monotonic() - start
    finally:
        netns.heal("redis")
    assert cut.returncode != 0 and "UNREACHABLE" in cut.stdout
    assert took < 30, f"ansible took {took:.0f} s to give up on a cut-off host"
    netns.wait_reachable("redis")


def redis_client():
    import redis

    import lab

    values = lab.env(multihost_state())
    return redis.Redis(host=values["LAB_REDIS_HOST"], port=int(values["LAB_REDIS_PORT"]),
                       password=values["LAB_REDIS_PASSWORD"], socket_timeout=3)


def multihost_state() -> str:
    from lab import netns

    return str(netns.state_dir())


@pytest.mark.slow
def test_backup_offsite_copy_and_restore_from_it_across_hosts(multihost):
    """backup.yml over SSH (components on their hosts, set on mh-store, verified copy on mh-offsite);
    then the local set is lost, pulled back from mh-offsite (hashes re-checked) and restored."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.store import offsite
    from lab import netns

    state = netns.state_dir()
    probe = redis_client()
    probe.set("mh:probe", "before-backup")

    backup = ansible("ansible-playbook", "playbooks/backup.yml")
    assert backup.returncode == 0, backup.stdout[-3000:]
    store = state / "store"
    sets = sorted(p.name for p in store.iterdir() if p.name.startswith("full_"))
    newest = sets[-1]
    copy = offsite.FolderTarget(netns.offsite_dir(state))
    assert newest in copy.list_sets()
    manifest_data = (store / newest / "backup_manifest.json").read_bytes()
    assert copy.verify(newest, json.loads(manifest_data), manifest_data) == []

    # disaster: the store's copy of the set is gone; pull it back from the off-site host
    probe.set("mh:probe", "after-backup")
    shutil.rmtree(store / newest)
    pull = ansible("ansible", "backup_store", "-m", "lifeboat.dr.offsite_copy", "-a", json.dumps({
        "mode": "pull", "store": str(store), "set_id": newest, "key_file": str(state / "keys" / "backup.key"),
        "target_type": "folder", "path": str(netns.offsite_dir(state)), "host": netns.host_address("offsite"),
        "ssh_key_file": str(netns.client_key(state)),
        "ssh_options": ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"]}))
    assert pull.returncode == 0 and '"changed": true' in pull.stdout, pull.stdout[-2000:]
    assert (store / newest / "backup_manifest.json").read_bytes() == manifest_data

    restore = ansible("ansible-playbook", "playbooks/restore.yml", "-e", f"backup_id={newest}",
                      "-e", "components=redis,app")
    assert restore.returncode == 0, restore.stdout[-3000:]
    assert redis_client().get("mh:probe") == b"before-backup"
