"""Real faults a drill injects, through the inventory's hosts (pytest-testinfra).

Each fault is a class with ``inject()`` (does the damage, returns a one-line
description for the report), ``verify_effect()`` (checks the damage is really there --
service down, files changed, keys gone -- and raises :class:`FaultHadNoEffect` if not, so
a drill never "recovers" from a fault that did nothing), ``heal()`` (optional: the harness's own part of recovery,
for faults that last a set time, e.g. a partition) and ``cleanup()`` (undo anything that
would keep the lab broken after a failed drill; safe to call twice). Processes are
found by the TCP port they listen on (``ss -ltnp``), so other labs on this machine are
never touched. On a Compose deployment (``lifeboat_deployment: compose``) the same faults are
done to the project's containers through the Docker API (dr_tests/containers.py): a crash is a
SIGKILL of the container, a partition a disconnect from the project network, and data damage
happens in the volumes' host folders the inventory names.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from dr_tests import containers
from dr_tests.measure import SERVICES, DrillInventory, NotDrillable, listener_pid


class FaultHadNoEffect(NotDrillable):
    """The fault did not do its damage (the message says what is missing): the drill errors."""


class Fault:
    """Base: ``params`` come from the scenario's ``fault`` mapping."""

    name = "fault"

    def __init__(self, inv: DrillInventory, **params) -> None:
        self.inv = inv
        self.params = params
        self.compose = containers.is_compose(inv)
        self.created_at = time.time()        # before the fault: the kept volumes of its recovery come after

    def host(self, group: str):
        return self.inv.testinfra_host(self.inv.host_of(group))

    def kill9(self, service: str) -> int:
        """SIGKILL the process listening on the service's port; wait until it is gone; its pid."""
        group, port_of = SERVICES[service]
        host = self.host(group)
        pid = listener_pid(host, port_of(self.inv))
        if pid is None:
            raise NotDrillable(f"no process listens on the {service} port -- the stack is not running")
        host.run_expect([0], f"kill -9 {pid}")
        for _ in range(100):
            if not host.file(f"/proc/{pid}").exists:
                break
            time.sleep(0.05)
        return pid

    def crash(self, service: str) -> str:
        """Crash ``service`` the way its deployment crashes: ``kill -9`` of the process listening on its
        port, or SIGKILL of its container through the Docker API; a description for the report."""
        if self.compose:
            return f"SIGKILL container {containers.kill(self.inv, service)} (Docker API)"
        return f"kill -9 {service} (pid {self.kill9(service)})"

    def inject(self) -> str:
        raise NotImplementedError

    def verify_effect(self) -> None:
        """Raise :class:`FaultHadNoEffect` unless the damage of :meth:`inject` is in place."""
        raise NotImplementedError

    def service_down_problems(self, *services: str) -> list[str]:
        """``service still listens on port N`` for each of ``services`` that is still up."""
        if self.compose:
            return [f"container of {service} still runs" for service in services
                    if containers.is_running(self.inv, service)]
        problems = []
        for service in services:
            group, port_of = SERVICES[service]
            if listener_pid(self.host(group), port_of(self.inv)) is not None:
                problems.append(f"{service} still listens on port {port_of(self.inv)}")
        return problems

    def require(self, problems: list[str]) -> None:
        if problems:
            raise FaultHadNoEffect(f"{self.name}: " + "; ".join(problems))

    def heal(self) -> str | None:
        """The harness's part of recovery (e.g. end a partition); None when there is none."""
        return None

    def cleanup(self) -> None:
        """Undo whatever would keep the stack broken (safe to call twice). On Compose: remove the
        volumes the drill's recovery kept aside (the data the drill itself damaged)."""
        self.remove_kept_volumes()

    def remove_kept_volumes(self) -> None:
        """On Compose, the volumes ``<volume>-lifeboat-kept-*`` made since this fault was set up
        (Lifeboat never removes them; drills would fill the disk)."""
        if self.compose:
            containers.remove_kept_volumes(self.inv, since=self.created_at)


class KillApp(Fault):
    """kill -9 the application process (a crashed container); on Compose, SIGKILL the app's container."""

    name = "kill_app"

    def inject(self) -> str:
        return self.crash("app")

    def verify_effect(self) -> None:
        self.require(self.service_down_problems("app"))


class CorruptMysqlDatadir(Fault):
    """Overwrite InnoDB pages of the live datadir with random bytes, then kill -9 mariadbd.

    Damaged: page 0 (the header) and a page in the middle of the system tablespace
    ``ibdata1``, the redo log header, and pages of every ``demo/*.ibd``. Binary logs
    (``mysql-bin.*``) are left alone: salvaging them is part of recovery.
    """

    name = "corrupt_mysql_datadir"
    PAGE = 16384
    datadir: Path | None = None  # set by inject()
    injected_at = 0.0
    damaged: list[str] = []  # files whose pages were overwritten and read back changed

    def damage(self, path: Path, offsets: list[int]) -> bool:
        """Overwrite a page at each offset with random bytes; True when every page read back
        differs from what it held before (the file really changed)."""
        changed = True
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            for offset in offsets:
                if offset < size:
                    f.seek(offset)
                    before = f.read(min(self.PAGE, size - offset))
                    noise = os.urandom(len(before))
                    f.seek(offset)
                    f.write(noise)
                    f.flush()
                    f.seek(offset)
                    changed = changed and f.read(len(noise)) == noise != before
            os.fsync(f.fileno())
        return changed

    def inject(self) -> str:
        datadir = Path(self.inv.var("mysql", "lifeboat_mysql_datadir"))
        if (self.inv.var("mysql", "ansible_connection", "local") != "local"
                and self.inv.var("mysql", "lifeboat_drill_shared_fs") is not True):
            raise NotDrillable("corrupt_mysql_datadir damages files on this machine: the mysql host "
                               "must use ansible_connection: local, or share this machine's file system "
                               "(lifeboat_drill_shared_fs: true, as the multi-host lab does)")
        damaged = []
        for path in [datadir / "ibdata1", datadir / "ib_logfile0", *sorted((datadir / "demo").glob("*.ibd"))]:
            if path.exists():
                size = path.stat().st_size
                if self.damage(path, [0, self.PAGE * 3, (size // 2) // self.PAGE * self.PAGE]):
                    damaged.append(path.name)
        self.damaged = damaged
        if "ibdata1" not in damaged or not any(name.endswith(".ibd") for name in damaged):
            # checked before the kill: a wrong path leaves the server running and the lab intact
            raise FaultHadNoEffect(
                f"corrupt_mysql_datadir damaged {len(damaged)} files in {datadir} ({', '.join(damaged) or 'none'}): "
                "no ibdata1 / demo/*.ibd there -- lifeboat_mysql_datadir must be the live server's datadir")
        self.injected_at = time.time()
        crashed = self.crash("mysql")
        self.datadir = datadir
        return f"random bytes over {len(damaged)} InnoDB files ({', '.join(damaged[:4])}...), {crashed}"

    def verify_effect(self) -> None:
        problems = self.service_down_problems("mysql")
        if not self.damaged:
            problems.append("no InnoDB file was changed")
        self.require(problems)

    def cleanup(self) -> None:
        """If recovery did not bring a server back, move the damaged datadir aside (kept as
        ``<datadir>.drill-broken-<time>``; on Compose its content, into
        ``<lifeboat_state_dir>/drill-broken/mysql-<time>``: the volume's folder itself must stay)
        so that ``lab up`` initialises and seeds a fresh one. On Compose the volumes the drill's
        recovery kept aside (``<volume>-lifeboat-kept-*``, the damaged data) are removed, so
        drills do not fill the disk."""
        datadir = self.datadir
        if datadir is None or not datadir.exists():
            return
        if self.compose:
            self.remove_kept_volumes()
            if not containers.is_running(self.inv, "mysql"):
                aside = Path(str(self.inv.any_var("lifeboat_state_dir"))) / "drill-broken" / f"mysql-{int(time.time())}"
                aside.mkdir(parents=True)
                for entry in datadir.iterdir():
                    entry.rename(aside / entry.name)
            return
        if listener_pid(self.host("mysql"), int(self.inv.var("mysql", "lifeboat_mysql_port"))) is None:
            datadir.rename(datadir.with_name(f"{datadir.name}.drill-broken-{int(time.time())}"))


class RedisDataLoss(Fault):
    """FLUSHALL, then delete the RDB file and the AOF folder of the running Redis."""

    name = "redis_data_loss"

    def inject(self) -> str:
        import redis
        client = redis.Redis(host=str(self.inv.var("redis", "lifeboat_redis_host")),
                             port=int(self.inv.var("redis", "lifeboat_redis_port")),
                             password=self.inv.var("redis", "lifeboat_redis_password"), socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()
        folder = self.inv.var("redis", "lifeboat_redis_dir")
        self.host("redis").run_expect([0], f"rm -rf '{folder}/dump.rdb' '{folder}/appendonlydir'")
        return f"FLUSHALL; rm {folder}/dump.rdb {folder}/appendonlydir"

    def verify_effect(self) -> None:
        """Every key is gone (but the canary sorted set the drill's writer keeps adding to in
        db 0) and neither the RDB file nor the AOF folder exists."""
        import redis
        client = redis.Redis(host=str(self.inv.var("redis", "lifeboat_redis_host")),
                             port=int(self.inv.var("redis", "lifeboat_redis_port")),
                             password=self.inv.var("redis", "lifeboat_redis_password"), socket_timeout=5)
        try:
            keyspace = client.info("keyspace")
            left = {db: info["keys"] - (1 if db == "db0" and client.exists("canary") else 0)
                    for db, info in keyspace.items()}
        finally:
            client.close()
        problems = [f"{db} still holds {n} keys" for db, n in sorted(left.items()) if n > 0]
        folder = self.inv.var("redis", "lifeboat_redis_dir")
        for name in ("dump.rdb", "appendonlydir"):
            if self.host("redis").file(f"{folder}/{name}").exists:
                problems.append(f"{folder}/{name} still exists")
        self.require(problems)


class WipeEverything(Fault):
    """kill -9 every service, then delete the contents of every data folder.

    On Compose: every container of the project removed (SIGKILL), every named volume of the project
    removed, and the project's folder (compose file, .env, secrets, configuration; the folder the
    containers were created from) deleted -- an engine and host that lost the whole project, to be
    rebuilt from the store alone. The images stay (they come from a registry, not from backups)."""

    name = "wipe_everything"
    project_dir: Path | None = None       # on Compose: the project's folder, deleted by inject()

    def inject(self) -> str:
        if self.compose:
            return self.remove_compose_project()
        killed = [f"{service} ({self.kill9(service)})" for service in ("app", "vault", "redis", "mysql")]
        folders = self.folders()
        for group, folder in folders:
            if not folder or str(folder) in ("/", ""):
                raise NotDrillable(f"data folder of {group} is not set in the inventory")
            self.host(group).run_expect([0], f"find '{folder}' -mindepth 1 -delete")
        return f"kill -9 {', '.join(killed)}; emptied {', '.join(str(f) for _, f in folders)}"

    def remove_compose_project(self) -> str:
        removed, volumes, working_dir = containers.remove_project(self.inv)
        state_dir = Path(str(self.inv.any_var("lifeboat_state_dir")))
        folder = Path(working_dir)
        if not working_dir or state_dir not in folder.parents:
            raise NotDrillable(f"the project's folder {working_dir!r} is not inside the lab's state folder "
                               f"{state_dir}: the drill deletes only a lab's own project folder")
        shutil.rmtree(folder)
        self.project_dir = folder
        return (f"removed containers {', '.join(sorted(removed))} and volumes {', '.join(sorted(volumes))} "
                f"(Docker API); deleted the project folder {folder}")

    def folders(self) -> list[tuple[str, str]]:
        return [
            ("mysql", self.inv.var("mysql", "lifeboat_mysql_datadir")),
            ("redis", self.inv.var("redis", "lifeboat_redis_dir")),
            ("vault", self.inv.var("vault", "lifeboat_vault_datadir")),
            ("app", self.inv.var("app", "lifeboat_app_storage")),
        ]

    def verify_effect(self) -> None:
        if self.compose:
            problems = [f"container {c.name} still exists" for c in containers.project_containers(self.inv)]
            problems += [f"volume {v.name} still exists" for v in containers.project_volumes(self.inv)]
            if self.project_dir is None or self.project_dir.exists():
                problems.append(f"the project folder {self.project_dir} still exists")
            self.require(problems)
            return
        problems = self.service_down_problems("app", "vault", "redis", "mysql")
        for group, folder in self.folders():
            left = self.host(group).run(f"find '{folder}' -mindepth 1 -maxdepth 1 | head -3").stdout.split()
            if left:
                problems.append(f"{folder} is not empty ({', '.join(left)})")
        self.require(problems)

    def cleanup(self) -> None:
        """On Compose, when the recovery did not bring the project back, ``lab up`` makes it anew (project
        folder, containers, volumes, seeded data) so later drills find a lab."""
        super().cleanup()
        if self.compose and self.project_dir is not None and not all(
                containers.is_running(self.inv, component) for component in ("mysql", "redis", "vault", "app")):
            command = str(self.inv.any_var("lifeboat_lab_command") or "").split()
            if command:
                subprocess.run([*command, "-q", "up", "--kind", "compose"], capture_output=True, check=False,
                               timeout=600)


class PartitionDb(Fault):
    """Cut the database off for ``duration_s`` seconds.

    Multi-host lab (the mysql host sets ``lifeboat_drill_veth``: the controller-side end of
    its veth pair, which must be a member of the lab bridge): ``ip link set VETH down`` on
    this machine, then up again after ``duration_s``. The host's own sshd is behind that
    link, so the link is switched from the controller, never over SSH; a detached
    ``sleep; ip link set VETH up`` (``duration_s`` + :attr:`BACKSTOP_S`) heals it even if the
    harness dies. On a Compose deployment: the database container is disconnected from the
    project network (it keeps running) and reconnected at its old address after ``duration_s``,
    with the same kind of detached backstop. Otherwise (single-host lab) emulated: SIGSTOP
    mariadbd -- a hung peer, which is what a partition looks like to its clients -- then SIGCONT.
    :attr:`mode` says which.
    """

    name = "partition_db"
    BACKSTOP_S = 60.0

    def __init__(self, inv: DrillInventory, duration_s: float = 8, **params) -> None:
        super().__init__(inv, **params)
        self.duration_s = float(duration_s)
        self.veth = inv.var("mysql", "lifeboat_drill_veth")
        self.pid: int | None = None
        self.started = 0.0
        self.detached: tuple[str, str, str, str] | None = None  # (container, network, IP, MAC) on Compose

    @property
    def mode(self) -> str:
        if self.compose:
            return "container disconnected from the project network (Docker API)"
        return f"veth down ({self.veth})" if self.veth else "emulated: SIGSTOP"

    def inject(self) -> str:
        if self.compose:
            self.detached = containers.disconnect(self.inv, "mysql")
            containers.start_backstop_reconnect(self.inv, *self.detached, after_s=self.duration_s + self.BACKSTOP_S)
        elif self.veth:
            require_lab_veth(str(self.veth))
            ip_link_set(str(self.veth), "down")
            start_backstop_healer(str(self.veth), self.duration_s + self.BACKSTOP_S)
        else:
            host = self.host("mysql")
            self.pid = listener_pid(host, int(self.inv.var("mysql", "lifeboat_mysql_port")))
            if self.pid is None:
                raise NotDrillable("no process listens on the mysql port -- the stack is not running")
            host.run_expect([0], f"kill -STOP {self.pid}")
        self.started = time.time()
        return f"partition of the database for {self.duration_s:.0f} s ({self.mode})"

    def verify_effect(self) -> None:
        if self.detached:
            name, network, ip, _mac = self.detached
            problems = [f"container {name} is still on network {network}"] if containers.attached(
                self.inv, name, network) else []
            if containers.answers(ip, int(self.inv.var("mysql", "lifeboat_mysql_port")), timeout_s=1.0):
                problems.append(f"{ip} still accepts connections")
            self.require(problems)
        elif self.veth:
            shown = subprocess.run(["ip", "-j", "link", "show", str(self.veth)], capture_output=True, text=True,
                                   check=False)
            flags = json.loads(shown.stdout)[0].get("flags", []) if shown.returncode == 0 and shown.stdout else []
            self.require([f"link {self.veth} is still up"] if "UP" in flags or shown.returncode != 0 else [])
        else:
            state = self.host("mysql").run(f"awk '{{print $3}}' /proc/{self.pid}/stat").stdout.strip()
            self.require([] if state == "T" else [f"mariadbd ({self.pid}) is not stopped (state {state or 'gone'})"])

    def heal(self) -> str:
        time.sleep(max(0.0, self.started + self.duration_s - time.time()))
        self.cleanup()
        how = ("network connect" if self.detached else f"ip link set {self.veth} up" if self.veth else "SIGCONT")
        return f"connectivity restored ({how})"

    def cleanup(self) -> None:
        if self.detached:
            containers.connect(self.inv, *self.detached)
        elif self.veth:
            ip_link_set(str(self.veth), "up", check=False)
        elif self.pid is not None:
            self.host("mysql").run(f"kill -CONT {self.pid}")


def require_lab_veth(link: str) -> None:
    """Refuse to switch any link but a lab host's veth: ``link`` must be attached to the lab bridge
    (lab/netns.py ``BRIDGE``), so a wrong inventory value can never take this machine's own
    network down."""
    from lab import netns
    shown = subprocess.run(["ip", "-j", "link", "show", link], capture_output=True, text=True, check=False)
    master = json.loads(shown.stdout)[0].get("master") if shown.returncode == 0 and shown.stdout.strip() else None
    if master != netns.BRIDGE:
        raise NotDrillable(f"lifeboat_drill_veth {link!r} is not a link of the lab bridge {netns.BRIDGE} "
                           "-- start the multi-host lab (python -m lab multihost up) or fix the inventory")


def ip_link_set(link: str, state: str, check: bool = True) -> None:
    """``ip link set LINK up|down`` on this machine (root)."""
    run = subprocess.run(["ip", "link", "set", link, state], capture_output=True, text=True, check=False)
    if check and run.returncode != 0:
        raise NotDrillable(f"ip link set {link} {state} failed: {run.stderr.strip()} -- the drill needs root")


def start_backstop_healer(link: str, after_s: float) -> None:
    """A detached ``sleep AFTER_S; ip link set LINK up`` that outlives the harness (the shell
    started here backgrounds it and exits at once, so nothing is left to reap)."""
    subprocess.run(["/bin/sh", "-c", '(sleep "$1"; ip link set "$2" up) </dev/null >/dev/null 2>&1 &',
                    "sh", f"{after_s:.0f}", link], check=True, start_new_session=True, timeout=10)


FAULTS = {cls.name: cls for cls in (KillApp, CorruptMysqlDatadir, RedisDataLoss, WipeEverything, PartitionDb)}


def make_fault(inv: DrillInventory, spec: dict) -> Fault:
    """The fault named by ``spec["name"]`` with the other keys as parameters."""
    params = dict(spec)
    name = params.pop("name")
    if name not in FAULTS:
        raise NotDrillable(f"unknown fault '{name}' -- one of {', '.join(sorted(FAULTS))}")
    return FAULTS[name](inv, **params)
