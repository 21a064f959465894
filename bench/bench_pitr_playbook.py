"""Benchmark: where the time of a whole ``pitr.yml mode=execute target=latest`` goes (issue 21).

    LAB_PORT_BASE=... python -m bench.bench_pitr_playbook --base-mb 1000 --events 500000 --clients 4

Needs the lab (``make lab-up``). On the lab's MariaDB: ``lbbench`` gets about ``--base-mb`` MB of
rows (bench_mysql, not binlogged) and ``lbbench_pitr`` one table per client; binlogs archived,
a base backup of both databases (``backup.yml components=mysql``); then ``--clients`` concurrent
sessions write ``--events`` single-row transactions into ``lbbench_pitr``; archived again. Then
``pitr.yml mode=execute target=latest`` for those two databases, once per replay engine
(``--engines``, default ``applier`` then ``client``), each timed from outside (wall) and split
with the execute's own ``timing`` (from the store's job history): base restore, binlog fetch
(the applier decrypts the binlogs from the store into relay files; the client streams fetch,
decode and apply together, so its fetch is inside its replay), replay, new generation, and the
rest of the playbook (Ansible, preflight, stopping/starting the app, ...). The row count after
each run proves the replay. The load average is recorded before and after each run.

The lab's server has ``log_slave_updates`` ON: the applier runs as the SQL thread alone (docs/pitr.md).
pitr.yml relaxes durability during the replay for both engines (``relax_durability``, default on);
``--durable`` runs both with ``-e relax_durability=false`` (JSON ``..._durable.json``).
JSON in ``bench/results/pitr_playbook_<base MB>mb_<events/1000>k.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
from ansible_collections.lifeboat.dr.plugins.module_utils.store import jobs
from bench import bench_mysql
from lab.params import lab_mysql_params

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DB = "lbbench_pitr"
DATABASES = [bench_mysql.DB, DB]


def playbook(name: str, *extra: str) -> float:
    """Run ``playbooks/<name>.yml`` on the lab inventory; wall seconds. Fails loudly."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}")
    args = ["ansible-playbook", "-i", str(REPO / "inventories" / "lab"), str(REPO / "playbooks" / f"{name}.yml"),
            "-e", json.dumps({"lifeboat_mysql_databases": DATABASES}), *extra]
    t0 = time.monotonic()
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-2000:])
        raise SystemExit(f"{name}.yml {' '.join(extra)} failed (rc {proc.returncode})")
    return round(wall, 2)


def write_events(admin: mysql.ConnParams, events: int, clients: int) -> float:
    """``clients`` sessions, ``events // clients`` single-row autocommit INSERTs each; wall seconds."""
    def writer(c: int) -> None:
        w = mysql.connect(admin, database=DB)
        try:
            mysql.execute(w, f"BEGIN NOT ATOMIC FOR i IN 1..{events // clients} DO "
                             f"INSERT INTO t{c} VALUES (i, 'row'); END FOR; END")
        finally:
            w.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=writer, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return round(time.monotonic() - t0, 2)


def last_pitr_record(store: Path) -> dict[str, Any]:
    lines = jobs.history_path(store).read_text(encoding="utf-8").splitlines()
    for line in reversed(lines):
        record = json.loads(line)
        if record.get("kind") == "pitr":
            return record
    raise SystemExit("no pitr record in the store's job history")


def rows(admin: mysql.ConnParams, clients: int) -> int:
    conn = mysql.connect(admin, database=DB)
    try:
        return sum(int(mysql.query_value(conn, f"SELECT COUNT(*) FROM t{c}")) for c in range(clients))
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-mb", type=int, default=1000)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--engines", default="applier,client")
    ap.add_argument("--durable", action="store_true", help="-e relax_durability=false (full durability meanwhile)")
    args = ap.parse_args()
    import lab
    env = lab.env()
    admin = lab_mysql_params(env)
    store = Path(env["LAB_STORE"])
    out: dict[str, Any] = {"base_mb": args.base_mb, "events": (args.events // args.clients) * args.clients,
                           "clients": args.clients, "cpus": os.cpu_count(), "relax_durability": not args.durable,
                           "loadavg_start": os.getloadavg(),
                           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    t0 = time.monotonic()
    out["base_rows"] = bench_mysql.generate(admin, args.base_mb)
    conn = mysql.connect(admin)
    try:
        mysql.execute(conn, f"DROP DATABASE IF EXISTS {DB}")
        mysql.execute(conn, f"CREATE DATABASE {DB}")
        for c in range(args.clients):
            mysql.execute(conn, f"CREATE TABLE {DB}.t{c} (id INT PRIMARY KEY, v VARCHAR(32))")
    finally:
        conn.close()
    out["fill_s"] = round(time.monotonic() - t0, 2)
    out["archive_before_s"] = playbook("archive_binlogs")
    out["backup_s"] = playbook("backup", "-e", "components=mysql")
    out["write_events_s"] = write_events(admin, args.events, args.clients)
    out["archive_after_s"] = playbook("archive_binlogs")
    print(json.dumps(out), flush=True)
    runs = []
    for engine in args.engines.split(","):
        load_before = os.getloadavg()
        wall = playbook("pitr", "-e", "mode=execute", "-e", "target=latest", "-e", f"replay_method={engine}",
                        "-e", f"relax_durability={'false' if args.durable else 'true'}")
        record = last_pitr_record(store)
        timing = (record.get("details") or {}).get("timing") or {}
        got = rows(admin, args.clients)
        assert got == out["events"], f"{engine}: {got} rows after the PITR, expected {out['events']}"
        run = {"engine": engine, "playbook_wall_s": wall, **timing,
               "rest_of_playbook_s": round(wall - float(timing.get("total_s") or 0), 2),
               "replayed_bytes": (record.get("sizes") or {}).get("replayed_bytes"),
               "loadavg_before": [round(x, 2) for x in load_before],
               "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
        runs.append(run)
        print(json.dumps(run), flush=True)
    out["runs"] = runs
    conn = mysql.connect(admin)
    try:
        for name in DATABASES:
            mysql.execute(conn, f"DROP DATABASE IF EXISTS {name}")
    finally:
        conn.close()
    path = RESULTS / f"pitr_playbook_{args.base_mb}mb_{out['events'] // 1000}k{'_durable' if args.durable else ''}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
