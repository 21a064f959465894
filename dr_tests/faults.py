"""Real faults a drill injects, through the inventory's hosts (pytest-testinfra).

Each fault is a class with ``inject()`` (does the damage, returns a one-line
description for the report), ``verify_effect()`` (checks the damage is really there --
service down, files changed, keys gone -- and raises :class:`FaultHadNoEffect` if not, so
a drill never "recovers" from a fault that did nothing), ``heal()`` (optional: the harness's own part of recovery,
for faults that last a set time, e.g. a partition) and ``cleanup()`` (undo anything that
would keep the lab broken after a failed drill; safe to call twice). Processes are
found by the TCP port they listen on (``ss -ltnp``), so other labs on this machine are
never touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from dr_tests.measure import SERVICES, DrillInventory, NotDrillable, listener_pid


class FaultHadNoEffect(NotDrillable):
    """The fault did not do its damage (the message says what is missing): the drill errors."""


class Fault:
    """Base: ``params`` come from the scenario's ``fault`` mapping."""

    name = "fault"

    def __init__(self, inv: DrillInventory, **params) -> None:
        self.inv = inv
        self.params = params

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

    def inject(self) -> str:
        raise NotImplementedError

    def verify_effect(self) -> None:
        """Raise :class:`FaultHadNoEffect` unless the damage of :meth:`inject` is in place."""
        raise NotImplementedError

    def service_down_problems(self, *services: str) -> list[str]:
        """``service still listens on port N`` for each of ``services`` that is still up."""
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
        """Undo whatever would keep the stack broken (safe to call twice)."""


class KillApp(Fault):
    """kill -9 the application process (a crashed container)."""

    name = "kill_app"

    def inject(self) -> str:
        return f"kill -9 app (pid {self.kill9('app')})"

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
        pid = self.kill9("mysql")
        self.datadir = datadir
        return f"random bytes over {len(damaged)} InnoDB files ({', '.join(damaged[:4])}...), kill -9 mariadbd ({pid})"

    def verify_effect(self) -> None:
        problems = self.service_down_problems("mysql")
        if not self.damaged:
            problems.append("no InnoDB file was changed")
        self.require(problems)

    def cleanup(self) -> None:
        """If recovery did not bring a server back, move the damaged datadir aside (kept as
        ``<datadir>.drill-broken-<time>``) so that ``lab up`` initialises and seeds a fresh one."""
        datadir = self.datadir
        if datadir is None or not datadir.exists():
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
    """kill -9 every service, then delete the contents of every data folder."""

    name = "wipe_everything"

    def inject(self) -> str:
        killed = [f"{service} ({self.kill9(service)})" for service in ("app", "vault", "redis", "mysql")]
        folders = self.folders()
        for group, folder in folders:
            if not folder or str(folder) in ("/", ""):
                raise NotDrillable(f"data folder of {group} is not set in the inventory")
            self.host(group).run_expect([0], f"find '{folder}' -mindepth 1 -delete")
        return f"kill -9 {', '.join(killed)}; emptied {', '.join(str(f) for _, f in folders)}"

    def folders(self) -> list[tuple[str, str]]:
        return [
            ("mysql", self.inv.var("mysql", "lifeboat_mysql_datadir")),
            ("redis", self.inv.var("redis", "lifeboat_redis_dir")),
            ("vault", self.inv.var("vault", "lifeboat_vault_datadir")),
            ("app", self.inv.var("app", "lifeboat_app_storage")),
        ]

    def verify_effect(self) -> None:
        problems = self.service_down_problems("app", "vault", "redis", "mysql")
        for group, folder in self.folders():
            left = self.host(group).run(f"find '{folder}' -mindepth 1 -maxdepth 1 | head -3").stdout.split()
            if left:
                problems.append(f"{folder} is not empty ({', '.join(left)})")
        self.require(problems)


class PartitionDb(Fault):
    """Cut the database off for ``duration_s`` seconds.

    Multi-host lab (the mysql host sets ``lifeboat_drill_veth``: the controller-side end of
    its veth pair, which must be a member of the lab bridge): ``ip link set VETH down`` on
    this machine, then up again after ``duration_s``. The host's own sshd is behind that
    link, so the link is switched from the controller, never over SSH; a detached
    ``sleep; ip link set VETH up`` (``duration_s`` + :attr:`BACKSTOP_S`) heals it even if the
    harness dies. Otherwise (single-host lab) emulated: SIGSTOP mariadbd -- a hung peer,
    which is what a partition looks like to its clients -- then SIGCONT. :attr:`mode` says which.
    """

    name = "partition_db"
    BACKSTOP_S = 60.0

    def __init__(self, inv: DrillInventory, duration_s: float = 8, **params) -> None:
        super().__init__(inv, **params)
        self.duration_s = float(duration_s)
        self.veth = inv.var("mysql", "lifeboat_drill_veth")
        self.pid: int | None = None
        self.started = 0.0

    @property
    def mode(self) -> str:
        return f"veth down ({self.veth})" if self.veth else "emulated: SIGSTOP"

    def inject(self) -> str:
        if self.veth:
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
        if self.veth:
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
        return f"connectivity restored ({f'ip link set {self.veth} up' if self.veth else 'SIGCONT'})"

    def cleanup(self) -> None:
        if self.veth:
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
