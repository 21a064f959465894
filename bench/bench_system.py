"""Benchmark: full-system backup and restore through the playbooks against the peer tools by hand.

    .venv/bin/python -m bench.bench_system --size 300 --runs 3

Brings up a PRIVATE lab (``LAB_STATE_DIR`` = a new temporary folder unless ``--state-dir``,
``LAB_PORT_BASE`` = ``--port-base``, default 7000) so the main lab in ``.lab/`` is never
touched, and takes it down at the end (``--keep-lab`` keeps it). Fills it with about
``--size`` MB (the issue asks >= 1000): 50 % MySQL row data (``bench_mysql``'s tables,
in database ``lbbench``), 20 % Redis values (``bench_redis``'s mix), 30 % app files
(``bench_files``'s tree, under the app storage) and one Vault KV secret.

Each of ``--runs`` rounds times, one after the other (so they see about the same load):

* ``ansible overhead``: an empty play, and a play of one ``ping`` per host, on the
  same inventory -- what Ansible costs before any Lifeboat work;
* ``raw copy``: ``cp -a`` of the four data folders (live, not consistent), for scale;
* Lifeboat backup: ``ansible-playbook -i inventories/lab playbooks/backup.yml``;
* peer backup, component by component: ``mydumper -t 2 -c`` (every non-system database),
  ``redis-cli --rdb`` + ``zstd -3``, ``tar -c | zstd -3`` of the storage, ``bao operator
  raft snapshot save``;
* Lifeboat restore: ``playbooks/restore.yml -e confirm=yes -e backup_id=<that backup>``,
  once as shipped (pre-restore safety copy on) and once with
  ``-e lifeboat_restore_safety_copy=false`` (what the peers do: no safety copy);
* peer restore by hand: ``myloader -t 2 -o`` (and, timed apart, ``-e``: writing the binary
  log as restore.yml does by default -- myloader does not unless asked); Redis stop, RDB copied in as ``dump.rdb`` and
  as the base of a fresh AOF (the lab runs ``appendonly yes``), start (waits for PING);
  the storage emptied then ``zstd -dc | tar -x``; ``bao operator raft snapshot restore
  -force``. App stop/start (which restore.yml also does) is timed apart;
* with ``--mysql-physical`` (issue 20): ``backup.yml -e mysql_method=physical`` and
  ``restore.yml`` of that set (MySQL restored by files, safety copy off), reported beside
  the logical restore.yml (safety copy off).

The inventory is ``inventories/lab`` with ``LAB_STATE_DIR`` in the environment (its
group_vars read it), i.e. it points at the private lab. Goal (issue): full restore
<= 1.2x the sum of the peers' restore times. Medians over the runs; per-task timings of
the playbooks (first run) show where Ansible spends its time. Kept-aside data of each
restore (``*__lbprev_*`` schemas, ``*.lbprev-*`` folders) is removed between rounds.
JSON in ``bench/results/system.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

from lab.params import lab_mysql_params

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "system.json"
PY = sys.executable
SYSTEM_DBS = ("mysql", "sys", "performance_schema", "information_schema")
VAULT_SECRET_PATH = "bench/system"


# ----------------------------------------------------------------------------- helpers

def load_average() -> list[float]:
    """``uptime``'s 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds (monotonic) of ``fn()``."""
    start = time.monotonic()
    fn()
    return round(time.monotonic() - start, 3)


def shell(cmd: str, env: dict[str, str] | None = None) -> None:
    """Run ``cmd`` with bash (pipefail); output discarded, failure raises."""
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, **(env or {})})


def du_mb(path: Path) -> float:
    """Disk usage of ``path`` in MB (``du -sb``), 0 when absent."""
    if not path.exists():
        return 0.0
    out = subprocess.run(["du", "-sb", str(path)], check=True, capture_output=True, text=True).stdout
    return round(int(out.split()[0]) / 1e6, 1)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


# ----------------------------------------------------------------------------- the lab

class PrivateLab:
    """A lab on shifted ports in its own state folder (never the main ``.lab/``)."""

    def __init__(self, state_dir: Path, port_base: int) -> None:
        if state_dir.resolve() == (REPO / ".lab").resolve():
            raise SystemExit("refusing to benchmark in the main lab .lab/: give another --state-dir")
        self.state_dir = state_dir
        os.environ["LAB_STATE_DIR"] = str(state_dir)
        os.environ["LAB_PORT_BASE"] = str(port_base)
        os.environ["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
        os.environ["PATH"] = f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"
        self.env: dict[str, str] = {}

    def up(self) -> None:
        subprocess.run([PY, "-m", "lab", "-q", "up"], cwd=REPO, check=True)
        import lab

        self.env = lab.env()

    def down(self) -> None:
        subprocess.run([PY, "-m", "lab", "-q", "down"], cwd=REPO, check=False)

    def service(self, name: str, action: str) -> None:
        """Start/stop a lab service in this process (no interpreter start-up in the timing)."""
        from lab import services

        getattr(services, action)(name)

    def data_dirs(self) -> dict[str, Path]:
        e = self.env
        return {"mysql": Path(e["LAB_MYSQL_DATADIR"]), "redis": Path(e["LAB_REDIS_DIR"]),
                "app": Path(e["LAB_APP_STORAGE"]), "vault": Path(e["LAB_VAULT_DATADIR"])}

    def mysql_params(self) -> Any:

        return lab_mysql_params(self.env)

    def vault_env(self) -> dict[str, str]:
        """Environment for the ``bao`` CLI (the token never goes into argv)."""
        return {"BAO_ADDR": self.env["LAB_VAULT_ADDR"], "BAO_TOKEN": self.env["LAB_VAULT_TOKEN"],
                "VAULT_ADDR": self.env["LAB_VAULT_ADDR"], "VAULT_TOKEN": self.env["LAB_VAULT_TOKEN"]}

    def remove_kept_aside(self) -> None:
        """Drop what restores keep aside (``*__lbprev_*`` schemas, ``*.lbprev-*`` folders)."""
        from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my

        conn = my.connect(self.mysql_params())
        try:
            for (name,) in my.query_all(conn, "SHOW DATABASES LIKE '%\\_\\_lbprev\\_%'"):
                my.execute(conn, f"DROP DATABASE `{name}`")
        finally:
            conn.close()
        # the physical MySQL restore keeps the replaced datadir as <datadir>.lbprev_<time>
        for path in [*self.state_dir.glob("*.lbprev-*"), *self.state_dir.glob("*/*.lbprev-*"),
                     *self.state_dir.glob("*/*.lbprev_*")]:
            shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------- data

def fill(lab: PrivateLab, size_mb: int, work: Path) -> dict[str, Any]:
    """Put about ``size_mb`` MB into the lab: MySQL 50 %, Redis 20 %, files 30 %, a Vault secret."""
    from bench import bench_files, bench_mysql, bench_redis

    info: dict[str, Any] = {}
    t0 = time.monotonic()
    info["mysql_rows"] = bench_mysql.generate(lab.mysql_params(), max(1, size_mb // 2))
    info["redis"] = bench_redis.fill(int(lab.env["LAB_REDIS_PORT"]), lab.env["LAB_REDIS_PASSWORD"],
                                     max(1, size_mb // 5))
    tree = Path(lab.env["LAB_APP_STORAGE"]) / "bench"
    shutil.rmtree(tree, ignore_errors=True)
    info["files"] = bench_files.make_tree(tree, max(1, size_mb * 3 // 10))
    write_vault_secret(lab)
    import redis

    redis.Redis(host="127.0.0.1", port=int(lab.env["LAB_REDIS_PORT"]),
                password=lab.env["LAB_REDIS_PASSWORD"]).bgrewriteaof()
    time.sleep(2)
    info["fill_s"] = round(time.monotonic() - t0, 1)
    info["data_dirs_mb"] = {k: du_mb(p) for k, p in lab.data_dirs().items()}
    return info


def write_vault_secret(lab: PrivateLab) -> None:
    import hvac

    client = hvac.Client(url=lab.env["LAB_VAULT_ADDR"], token=lab.env["LAB_VAULT_TOKEN"])
    client.secrets.kv.v2.create_or_update_secret(path=VAULT_SECRET_PATH, mount_point="secret",
                                                 secret={"api_key": secrets.token_hex(16)})


def check_restored(lab: PrivateLab, info: dict[str, Any]) -> None:
    """Cheap proof that a restore put the data back (row counts, key count, file count, secret)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my

    conn = my.connect(lab.mysql_params())
    try:
        for table, rows in info["mysql_rows"].items():
            got = int(my.query_value(conn, f"SELECT COUNT(*) FROM lbbench.{table}"))
            if got != rows:
                raise SystemExit(f"after restore lbbench.{table} has {got} rows, expected {rows}")
    finally:
        conn.close()
    import hvac
    import redis

    r0 = redis.Redis(host="127.0.0.1", port=int(lab.env["LAB_REDIS_PORT"]), password=lab.env["LAB_REDIS_PASSWORD"])
    keys = sum(int(v.get("keys", 0)) for k, v in r0.info("keyspace").items() if k.startswith("db"))
    if keys < info["redis"]["keys"]:
        raise SystemExit(f"after restore Redis has {keys} keys, expected >= {info['redis']['keys']}")
    files = sum(1 for p in (Path(lab.env["LAB_APP_STORAGE"]) / "bench").rglob("*") if p.is_file())
    if files != info["files"]["files"]:
        raise SystemExit(f"after restore the storage has {files} bench files, expected {info['files']['files']}")
    client = hvac.Client(url=lab.env["LAB_VAULT_ADDR"], token=lab.env["LAB_VAULT_TOKEN"])
    client.secrets.kv.v2.read_secret_version(path=VAULT_SECRET_PATH, mount_point="secret",
                                             raise_on_deleted_version=True)


# ----------------------------------------------------------------------------- Ansible side

HEADER = re.compile(r"^(PLAY|TASK) \[(.*)\]")


def run_playbook(args: list[str], log: Path) -> tuple[float, list[tuple[str, float]]]:
    """``ansible-playbook -i inventories/lab ARGS``; returns (wall s, [(header, s until the next header)])."""
    cmd = ["ansible-playbook", "-i", str(REPO / "inventories" / "lab"), *args]
    marks: list[tuple[str, float]] = []
    start = time.monotonic()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            match = HEADER.match(line)
            if match:
                marks.append((f"{match.group(1)} {match.group(2)}", time.monotonic()))
        rc = proc.wait()
    end = time.monotonic()
    if rc != 0:
        raise SystemExit(f"ansible-playbook {' '.join(args)} failed (rc {rc}); see {log}")
    steps = [(name, round(((marks[i + 1][1] if i + 1 < len(marks) else end) - t), 3))
             for i, (name, t) in enumerate(marks)]
    return round(end - start, 3), steps


def slowest(steps: list[tuple[str, float]], n: int = 12) -> list[list[Any]]:
    return [[name, s] for name, s in sorted(steps, key=lambda x: -x[1])[:n]]


def newest_set(store: Path, before: set[str]) -> str:
    """The set folder that appeared in ``store`` since ``before`` (a backup made exactly one)."""
    new = sorted(p.name for p in store.iterdir() if p.is_dir() and p.name.startswith("full_")
                 and p.name not in before)
    if len(new) != 1:
        raise SystemExit(f"expected one new set in {store}, found {new}")
    return new[0]


def sets_in(store: Path) -> set[str]:
    return {p.name for p in store.iterdir() if p.is_dir()} if store.exists() else set()


def write_overhead_playbooks(work: Path) -> tuple[Path, Path]:
    empty = work / "empty.yml"
    empty.write_text("- name: Empty play\n  hosts: all\n  gather_facts: false\n  tasks: []\n")
    ping = work / "ping.yml"
    ping.write_text("- name: One ping per host\n  hosts: all\n  gather_facts: false\n  tasks:\n"
                    "    - name: Ping\n      ansible.builtin.ping:\n")
    return empty, ping


# ----------------------------------------------------------------------------- peers

def peer_backup(lab: PrivateLab, work: Path, cnf: str) -> dict[str, float]:
    """The components backed up one by one with the usual tools; wall seconds each."""
    dirs = lab.data_dirs()
    regex = "^(?!(" + "|".join(SYSTEM_DBS) + r")\.)"
    shutil.rmtree(work / "mydumper", ignore_errors=True)
    for name in ("dump.rdb", "dump.rdb.zst", "storage.tar.zst", "vault.snap"):
        (work / name).unlink(missing_ok=True)
    redis_env = {"REDISCLI_AUTH": lab.env["LAB_REDIS_PASSWORD"]}
    port = lab.env["LAB_REDIS_PORT"]
    return {
        "mydumper -t 2 -c": timed(lambda: shell(
            f"mydumper --defaults-file={cnf} --regex '{regex}' -o {work}/mydumper -t 2 -c -v 1")),
        "redis-cli --rdb + zstd -3": timed(lambda: shell(
            f"redis-cli -h 127.0.0.1 -p {port} --rdb {work}/dump.rdb >/dev/null 2>&1 && "
            f"zstd -3 -T1 -q -k -f {work}/dump.rdb", env=redis_env)),
        "tar -c | zstd -3": timed(lambda: shell(
            f"tar -cf - -C {dirs['app']} . | zstd -3 -T1 -q -f -o {work}/storage.tar.zst")),
        "bao operator raft snapshot save": timed(lambda: shell(
            f"bao operator raft snapshot save {work}/vault.snap", env=lab.vault_env())),
    }


def peer_restore_redis(lab: PrivateLab, work: Path) -> None:
    """Stop Redis, put the RDB in as dump.rdb and as the base of a fresh AOF, start (waits for PING)."""
    rdir = lab.data_dirs()["redis"]
    lab.service("redis", "stop")
    shutil.rmtree(rdir / "appendonlydir", ignore_errors=True)
    aof = rdir / "appendonlydir"
    aof.mkdir(mode=0o700)
    shutil.copyfile(work / "dump.rdb", rdir / "dump.rdb")
    os.link(rdir / "dump.rdb", aof / "appendonly.aof.1.base.rdb")
    (aof / "appendonly.aof.manifest").write_text("file appendonly.aof.1.base.rdb seq 1 type b\n")
    lab.service("redis", "start")


MYLOADER_BINLOG = "myloader -t 2 -o -e (binlog on, as restore.yml)"


def peer_restore(lab: PrivateLab, work: Path, cnf: str) -> dict[str, float]:
    """The components restored one by one from the peer backups; wall seconds each."""
    storage = lab.data_dirs()["app"]

    def files() -> None:
        shutil.rmtree(storage)
        storage.mkdir()
        shell(f"zstd -dc -q {work}/storage.tar.zst | tar -xf - -C {storage}")

    times = {"app stop": timed(lambda: lab.service("app", "stop"))}
    times["bao operator raft snapshot restore -force"] = timed(lambda: shell(
        f"bao operator raft snapshot restore -force {work}/vault.snap", env=lab.vault_env()))
    times["myloader -t 2 -o"] = timed(lambda: shell(
        f"myloader --defaults-file={cnf} -d {work}/mydumper -o -t 2 -v 1"))
    # myloader skips the binary log unless -e; restore.yml writes it by default (replicas, PITR)
    times[MYLOADER_BINLOG] = timed(lambda: shell(
        f"myloader --defaults-file={cnf} -d {work}/mydumper -o -t 2 -e -v 1"))
    times["redis stop + RDB copy + start"] = timed(lambda: peer_restore_redis(lab, work))
    times["rm + zstd -dc | tar -x"] = timed(files)
    times["app start"] = timed(lambda: lab.service("app", "start"))
    return times


def raw_copy(lab: PrivateLab, work: Path) -> float:
    """``cp -a`` of the four data folders (live; for scale only), then removed."""
    dest = work / "rawcopy"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    seconds = timed(lambda: shell(" && ".join(f"cp -a {p} {dest}/{k}" for k, p in lab.data_dirs().items())))
    shutil.rmtree(dest)
    return seconds


# ----------------------------------------------------------------------------- one round

PHYSICAL_BACKUP = "lifeboat backup.yml (physical MySQL)"
PHYSICAL_RESTORE = "lifeboat restore.yml (physical MySQL base, safety copy off)"


def physical_round(lab: PrivateLab, work: Path, info: dict[str, Any], out: dict[str, Any]) -> list[Any]:
    """``--mysql-physical``: the same full backup with ``-e mysql_method=physical`` and restore.yml of
    that set (MySQL restored by files), safety copy off as in the logical figure it is set beside."""
    store = Path(lab.env["LAB_STORE"])
    before = sets_in(store)
    out[PHYSICAL_BACKUP], _steps = run_playbook(["playbooks/backup.yml", "-e", "mysql_method=physical"],
                                                work / "backup_physical.log")
    set_id = newest_set(store, before)
    out[PHYSICAL_RESTORE], steps = run_playbook(
        ["playbooks/restore.yml", "-e", "confirm=yes", "-e", f"backup_id={set_id}",
         "-e", "lifeboat_restore_safety_copy=false"], work / "restore_physical.log")
    check_restored(lab, info)
    lab.remove_kept_aside()
    return steps


def one_round(lab: PrivateLab, work: Path, cnf: str, info: dict[str, Any], empty: Path, ping: Path,
              first: bool, physical: bool = False) -> dict[str, Any]:
    """Everything once, in a fixed order; returns wall seconds and (first round) playbook timelines."""
    out: dict[str, Any] = {"load_start": load_average()}
    store = Path(lab.env["LAB_STORE"])
    out["ansible empty play"], _s = run_playbook([str(empty)], work / "empty.log")
    out["ansible one ping per host"], _s = run_playbook([str(ping)], work / "ping.log")
    out["raw cp -a of the data dirs"] = raw_copy(lab, work)
    before = sets_in(store)
    out["lifeboat backup.yml"], backup_steps = run_playbook(["playbooks/backup.yml"], work / "backup.log")
    set_id = newest_set(store, before)
    out["lifeboat backup set MB"] = du_mb(store / set_id)
    out["peer backup"] = peer_backup(lab, work, cnf)
    restore_args = ["playbooks/restore.yml", "-e", "confirm=yes", "-e", f"backup_id={set_id}"]
    out["lifeboat restore.yml (safety copy on)"], restore_steps = run_playbook(restore_args, work / "restore.log")
    check_restored(lab, info)
    lab.remove_kept_aside()
    out["lifeboat restore.yml (safety copy off)"], restore_nosafety_steps = run_playbook(
        [*restore_args, "-e", "lifeboat_restore_safety_copy=false"], work / "restore_nosafety.log")
    check_restored(lab, info)
    lab.remove_kept_aside()
    out["peer restore"] = peer_restore(lab, work, cnf)
    check_restored(lab, info)
    physical_steps = physical_round(lab, work, info, out) if physical else []
    out["load_end"] = load_average()
    if first:
        out["timeline"] = {"backup.yml": slowest(backup_steps), "restore.yml": slowest(restore_steps),
                           "restore.yml safety copy off": slowest(restore_nosafety_steps),
                           "task_headers": {"backup.yml": len(backup_steps), "restore.yml": len(restore_steps)}}
        if physical:
            out["timeline"]["restore.yml physical MySQL base"] = slowest(physical_steps)
    return out


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per measurement, peer sums and the goal ratio."""
    def med(key: str, sub: str | None = None) -> float:
        return median([r[key][sub] if sub else r[key] for r in rounds])

    peer_b = {k: med("peer backup", k) for k in rounds[0]["peer backup"]}
    peer_r = {k: med("peer restore", k) for k in rounds[0]["peer restore"]}
    components_r = [k for k in peer_r if not k.startswith("app ") and k != MYLOADER_BINLOG]
    with_binlog = [MYLOADER_BINLOG if k.startswith("myloader") else k for k in components_r]
    sum_b = median([sum(r["peer backup"].values()) for r in rounds])
    sum_r = median([sum(r["peer restore"][k] for k in components_r) for r in rounds])
    sum_r_binlog = median([sum(r["peer restore"].get(k, 0.0) for k in with_binlog) for r in rounds])
    sum_r_app = median([sum(v for k, v in r["peer restore"].items() if k != MYLOADER_BINLOG) for r in rounds])
    lb_b = med("lifeboat backup.yml")
    lb_r_on = med("lifeboat restore.yml (safety copy on)")
    lb_r_off = med("lifeboat restore.yml (safety copy off)")
    empty = med("ansible empty play")
    return {
        "median_s": {
            "ansible empty play": empty, "ansible one ping per host": med("ansible one ping per host"),
            "raw cp -a of the data dirs": med("raw cp -a of the data dirs"),
            "lifeboat backup.yml": lb_b, "lifeboat restore.yml (safety copy on)": lb_r_on,
            "lifeboat restore.yml (safety copy off)": lb_r_off,
            "peer backup": peer_b, "peer backup sum": sum_b,
            "peer restore": peer_r, "peer restore sum (components)": sum_r,
            "peer restore sum (components + app stop/start)": sum_r_app,
            "peer restore sum (components, myloader writing the binlog as restore.yml does)": sum_r_binlog,
        },
        "ratios": {
            "restore (safety copy off) / peer restore sum": round(lb_r_off / sum_r, 2),
            "restore (safety copy off) / peer restore sum with binlog on both sides": round(lb_r_off / sum_r_binlog, 2),
            "restore (safety copy off) / peer restore sum incl. app stop/start": round(lb_r_off / sum_r_app, 2),
            "restore (safety copy on, as shipped) / peer restore sum": round(lb_r_on / sum_r, 2),
            "backup / peer backup sum": round(lb_b / sum_b, 2),
            "backup minus empty play / peer backup sum": round((lb_b - empty) / sum_b, 2),
            "restore (safety copy off) minus empty play / peer restore sum": round((lb_r_off - empty) / sum_r, 2),
        },
        "goal": "restore.yml <= 1.2x the sum of the peers' restore times (ratio = Lifeboat / peers, lower is better)",
        **physical_summary(rounds, lb_r_off),
    }


def physical_summary(rounds: list[dict[str, Any]], logical_restore_s: float) -> dict[str, Any]:
    """With ``--mysql-physical``: the medians of the physical-base backup and restore, and the restore
    beside the logical one (both safety copy off)."""
    if PHYSICAL_RESTORE not in rounds[0]:
        return {}
    restore = median([r[PHYSICAL_RESTORE] for r in rounds])
    return {"physical_mysql_base": {
        "median_s": {PHYSICAL_BACKUP: median([r[PHYSICAL_BACKUP] for r in rounds]), PHYSICAL_RESTORE: restore,
                     "lifeboat restore.yml (logical MySQL base, safety copy off)": logical_restore_s},
        "restore physical base / logical base": round(restore / logical_restore_s, 2)}}


# ----------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--size", type=int, default=1000, help="dataset size in MB (the issue asks >= 1000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--state-dir", default="", help="private lab state folder (default: a new temp folder)")
    ap.add_argument("--port-base", type=int, default=7000, help="LAB_PORT_BASE of the private lab")
    ap.add_argument("--keep-lab", action="store_true", help="leave the private lab up afterwards")
    ap.add_argument("--output", default=str(RESULTS))
    ap.add_argument("--mysql-physical", action="store_true",
                    help="also back up with a physical MySQL base and time restore.yml of that set (issue 20)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lbsys-"))
    lab = PrivateLab(Path(args.state_dir).resolve() if args.state_dir else work / "lab", args.port_base)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    load_before = load_average()
    lab.up()
    try:
        info = fill(lab, args.size, work)
        print(f"filled: {json.dumps(info)}", flush=True)
        empty, ping = write_overhead_playbooks(work)
        from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my

        rounds = []
        with my.option_file(lab.mysql_params()) as cnf:
            for i in range(args.runs):
                rounds.append(one_round(lab, work, str(cnf), info, empty, ping, first=(i == 0),
                                        physical=args.mysql_physical))
                print(f"round {i + 1}: {json.dumps({k: v for k, v in rounds[-1].items() if k != 'timeline'})}",
                      flush=True)
        result = {"size_mb": args.size, "runs": args.runs, "started": started, "cpus": os.cpu_count(),
                  "load_before_fill": load_before, "data": info, **summarise(rounds), "rounds": rounds,
                  "peer_artifact_mb": {p.name: du_mb(p) for p in work.iterdir()
                                       if p.name in ("mydumper", "dump.rdb", "dump.rdb.zst", "storage.tar.zst",
                                                     "vault.snap")}}
    finally:
        if not args.keep_lab:
            lab.down()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("size_mb", "median_s", "ratios", "physical_mysql_base") if k in result},
                     indent=2))
    if not args.keep_lab:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
