"""Benchmark: binlog replay by Lifeboat PITR against ``mariadb-binlog files | mariadb``.

    python -m bench.bench_pitr --events 500000 --runs 3

Needs the lab (``make lab-up``). Generates ``--events`` single-row autocommit INSERTs
(one Write_rows event each) with a server-side loop in database ``lbbench_pitr``,
archives the binlogs (flush) into a temporary store, then replays exactly that range
into the emptied table, median of ``--runs`` (wall time):

* baseline: ``mariadb-binlog --database=lbbench_pitr --start-position=P --stop-position=S
  <the server's plaintext binlog files> | grep -v gtid_seq_no | mariadb`` (shell pipe);
* Lifeboat: ``pitr.replay`` of the archived (zstd + AES-256-GCM) files: pipeline reader ->
  ``mariadb-binlog -`` per file -> one ``mariadb`` session.

``ratio`` = baseline_time / lifeboat_time (1.0 = as fast). JSON in ``bench/results/pitr.json``.

    python -m bench.bench_pitr --applier --events 100000 --clients 4 --runs 3

compares the parallel applier (``relay_replay``, issue 21) with ``mariadb-binlog | mariadb``
on the same binlogs: ``--clients`` concurrent clients (one table each, server-side loops of
single-row autocommit INSERTs) write ``--events`` row events on the lab; both engines replay
that range into the SAME fresh scratch MariaDB (binary log off, identical durability:
``innodb_flush_log_at_trx_commit=0``), tables truncated between runs, paired runs (baseline
then applier), medians; the CPU seconds of the server and of the client tools per run are
recorded (where the time goes). JSON in ``bench/results/pitr_applier_<clients>c_<events/1000>k.json``.
``--serial``: the applier's SQL thread alone (``slave_parallel_threads=0``, its session not
binlogged: what ``auto`` uses on a server with ``log_slave_updates`` ON); JSON ``..._serial.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog, pitr, relay_replay
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import scratch as mysql_scratch
from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from lab.params import lab_mysql_params

RESULTS = Path(__file__).resolve().parent / "results" / "pitr.json"
DB = "lbbench_pitr"


def generate(admin: mysql.ConnParams, events: int) -> tuple[str, int, str, int]:
    """Write ``events`` row events; return (start file, start pos, stop file, stop pos)."""
    conn = mysql.connect(admin)
    try:
        mysql.execute(conn, f"DROP DATABASE IF EXISTS {DB}")
        mysql.execute(conn, f"CREATE DATABASE {DB}")
        mysql.execute(conn, f"CREATE TABLE {DB}.t (id INT PRIMARY KEY, v VARCHAR(32))")
        mysql.execute(conn, "FLUSH BINARY LOGS")
        start = mysql.query_all(conn, "SHOW BINLOG STATUS")[0]
        mysql.execute(conn, f"USE {DB}")
        mysql.execute(conn, f"BEGIN NOT ATOMIC FOR i IN 1..{int(events)} DO "
                            "INSERT INTO t VALUES (i, 'row'); END FOR; END")
        stop = mysql.query_all(conn, "SHOW BINLOG STATUS")[0]
        mysql.execute(conn, "FLUSH BINARY LOGS")
        return str(start[0]), int(start[1]), str(stop[0]), int(stop[1])
    finally:
        conn.close()


def reset(admin: mysql.ConnParams) -> None:
    conn = mysql.connect(admin)
    try:
        mysql.execute(conn, f"TRUNCATE TABLE {DB}.t")
    finally:
        conn.close()


def count(admin: mysql.ConnParams) -> int:
    conn = mysql.connect(admin)
    try:
        return int(mysql.query_value(conn, f"SELECT COUNT(*) FROM {DB}.t"))
    finally:
        conn.close()


def run_baseline(admin: mysql.ConnParams, datadir: str, files: list[str], start: int, stop: int) -> float:
    with mysql.option_file(admin) as opt:
        paths = " ".join(f"'{datadir}/{f}'" for f in files)
        cmd = (f"set -o pipefail; mariadb-binlog --database={DB} --start-position={start} --stop-position={stop} "
               f"{paths} | grep -v 'SET @@session.gtid_seq_no' | "
               f"mariadb --defaults-extra-file='{opt}' --binary-mode --init-command='SET sql_log_bin=0'")
        t0 = time.monotonic()
        subprocess.run(["bash", "-c", cmd], check=True)
        return time.monotonic() - t0


def generate_concurrent(admin: mysql.ConnParams, events: int, clients: int) -> tuple[str, int, str, int]:
    """``clients`` concurrent sessions write ``events`` row events in all (table t<c> each);
    return (start file, start pos, stop file, stop pos) of exactly that range."""
    import threading
    conn = mysql.connect(admin)
    try:
        mysql.execute(conn, f"DROP DATABASE IF EXISTS {DB}")
        mysql.execute(conn, f"CREATE DATABASE {DB}")
        for c in range(clients):
            mysql.execute(conn, f"CREATE TABLE {DB}.t{c} (id INT PRIMARY KEY, v VARCHAR(32))")
        mysql.execute(conn, "FLUSH BINARY LOGS")
        start = mysql.query_all(conn, "SHOW BINLOG STATUS")[0]

        def writer(c: int) -> None:
            w = mysql.connect(admin, database=DB)
            try:
                mysql.execute(w, f"BEGIN NOT ATOMIC FOR i IN 1..{events // clients} DO "
                                 f"INSERT INTO t{c} VALUES (i, 'row'); END FOR; END")
            finally:
                w.close()

        threads = [threading.Thread(target=writer, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop = mysql.query_all(conn, "SHOW BINLOG STATUS")[0]
        mysql.execute(conn, "FLUSH BINARY LOGS")
        return str(start[0]), int(start[1]), str(stop[0]), int(stop[1])
    finally:
        conn.close()


def _cpu_s(pid: int) -> float:
    """utime + stime (seconds) of a process from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    """CPU seconds of this process (decrypt, decode, copy) and its children (client tools)."""
    import resource
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


def _scratch_rows(scratch: mysql_scratch.ScratchMariaDB, clients: int, prepare: bool) -> int:
    conn = mysql.connect(scratch.params)
    try:
        if prepare:
            mysql.execute(conn, f"CREATE DATABASE IF NOT EXISTS {DB}")
            for c in range(clients):
                mysql.execute(conn, f"CREATE TABLE IF NOT EXISTS {DB}.t{c} (id INT PRIMARY KEY, v VARCHAR(32))")
                mysql.execute(conn, f"TRUNCATE TABLE {DB}.t{c}")
            return 0
        return sum(int(mysql.query_value(conn, f"SELECT COUNT(*) FROM {DB}.t{c}")) for c in range(clients))
    finally:
        conn.close()


def _timed(scratch: mysql_scratch.ScratchMariaDB, run: Any) -> tuple[float, float, float]:
    """(wall s, server CPU s, client-tool CPU s) of ``run()``."""
    server0, tools0 = _cpu_s(scratch.proc.pid), _children_cpu_s()
    t0 = time.monotonic()
    run()
    wall = time.monotonic() - t0
    return wall, _cpu_s(scratch.proc.pid) - server0, _children_cpu_s() - tools0


def main_applier(args: argparse.Namespace) -> int:
    """The parallel applier vs ``mariadb-binlog | mariadb`` on the same binlogs (issue 21)."""
    import lab
    env = lab.env()
    admin = lab_mysql_params(env)
    backup_user = lab_mysql_params(env, backup_user=True)
    workers = args.workers or relay_replay.default_workers()
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "kek"
        keys.create_key_file(key)
        keyring = keys.KeyRing(keys.FileKEK.load(key))
        store = Store(Path(tmp) / "store")
        t0 = time.monotonic()
        start_file, start_pos, stop_file, stop_pos = generate_concurrent(admin, args.events, args.clients)
        gen_s = time.monotonic() - t0
        binlog.archive_binlogs(backup_user, store, keyring, flush=False)
        index = binlog.load_index(store, binlog.archived_identities(store)[0])
        _gen, run = pitr.run_of(index, start_file)
        files = [e for e in run if binlog.binlog_sequence(e["file"]) <= binlog.binlog_sequence(stop_file)]
        replay_files = [{"file": e["file"], "set_id": e["set_id"], "parent": e["parent"],
                         "start": start_pos if e["file"] == start_file else 4,
                         "stop": stop_pos if e["file"] == stop_file else e["complete_end"],
                         "bytes": e["size"]} for e in files]
        expected = (args.events // args.clients) * args.clients
        pairs = []
        opts = relay_replay.ApplierOptions(workers=workers, mode=args.mode, serial=True if args.serial else None)
        with mysql_scratch.ScratchMariaDB(base_dir=tmp, buffer_pool_mb=256) as scratch:
            for _ in range(args.runs):
                _scratch_rows(scratch, args.clients, prepare=True)
                base = _timed(scratch, lambda: run_baseline(scratch.params, env["LAB_MYSQL_DATADIR"],
                                                            [e["file"] for e in files], start_pos, stop_pos))
                assert _scratch_rows(scratch, args.clients, prepare=False) == expected, "baseline incomplete"
                _scratch_rows(scratch, args.clients, prepare=True)
                done: list[dict[str, Any]] = []

                def apply(into: list[dict[str, Any]] = done) -> None:
                    into.append(relay_replay.replay_with_applier(store, keyring, replay_files, scratch.params,
                                                                 options=opts, databases=[DB]))

                appl = (*_timed(scratch, apply), done[0]["install_s"], done[0]["apply_s"])
                assert _scratch_rows(scratch, args.clients, prepare=False) == expected, "applier incomplete"
                pairs.append({"baseline": [round(x, 3) for x in base], "applier": [round(x, 3) for x in appl]})
                print(f"run: baseline {base[0]:.1f} s (server cpu {base[1]:.1f}, tools cpu {base[2]:.1f}); "
                      f"applier {appl[0]:.1f} s (server cpu {appl[1]:.1f}, lifeboat cpu {appl[2]:.1f}; install "
                      f"{appl[3]:.1f} s, SQL thread {appl[4]:.1f} s)", flush=True)
        conn = mysql.connect(admin)
        mysql.execute(conn, f"DROP DATABASE {DB}")
        conn.close()
    med = {side: [statistics.median(p[side][k] for p in pairs) for k in range(len(pairs[0][side]))]
           for side in ("baseline", "applier")}
    load = os.getloadavg()
    out = {"events": expected, "clients": args.clients, "runs": args.runs, "workers": 1 if args.serial else workers,
           "parallel_mode": "serial (the SQL thread alone)" if args.serial else args.mode,
           "binlog_files": len(files), "binlog_bytes": sum(r["stop"] - r["start"] for r in replay_files),
           "generate_s": round(gen_s, 2), "target": "fresh scratch MariaDB, binlog off, "
                                                     "innodb_flush_log_at_trx_commit=0 (both engines)",
           "baseline_median_s": round(med["baseline"][0], 3), "applier_median_s": round(med["applier"][0], 3),
           "ratio": round(med["baseline"][0] / med["applier"][0], 3),
           "baseline_server_cpu_s": round(med["baseline"][1], 2), "baseline_tools_cpu_s": round(med["baseline"][2], 2),
           "applier_server_cpu_s": round(med["applier"][1], 2), "applier_lifeboat_cpu_s": round(med["applier"][2], 2),
           "applier_install_s": round(med["applier"][3], 3), "applier_sql_thread_s": round(med["applier"][4], 3),
           "cpu_note": "server = the scratch mariadbd's utime+stime; tools/lifeboat = this process "
                       "(decrypt, decode, copy) + its children (mariadb-binlog, grep, mariadb)",
           "pairs": pairs, "loadavg_after": [round(x, 2) for x in load],
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count()}
    path = RESULTS.parent / f"pitr_applier_{args.clients}c_{expected // 1000}k{'_serial' if args.serial else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "pairs"}, indent=2))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", "--size", type=int, default=500_000, help="row events to replay")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--applier", action="store_true", help="compare the parallel applier with the client replay")
    ap.add_argument("--clients", type=int, default=4, help="--applier: concurrent writing clients")
    ap.add_argument("--workers", type=int, default=0, help="--applier: applier workers (0: one per CPU)")
    ap.add_argument("--mode", default="optimistic", choices=["optimistic", "conservative"])
    ap.add_argument("--serial", action="store_true", help="--applier: the SQL thread alone (log_slave_updates ON)")
    args = ap.parse_args()
    if args.applier:
        return main_applier(args)
    import lab
    env = lab.env()
    admin = lab_mysql_params(env)
    backup_user = lab_mysql_params(env, backup_user=True)
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "kek"
        keys.create_key_file(key)
        keyring = keys.KeyRing(keys.FileKEK.load(key))
        store = Store(Path(tmp) / "store")
        t0 = time.monotonic()
        start_file, start_pos, stop_file, stop_pos = generate(admin, args.events)
        gen_s = time.monotonic() - t0
        t0 = time.monotonic()
        result = binlog.archive_binlogs(backup_user, store, keyring, flush=False)
        archive_s = time.monotonic() - t0
        index = binlog.load_index(store, result["identity"])
        gen, run = pitr.run_of(index, start_file)
        files = [e for e in run if binlog.binlog_sequence(e["file"]) <= binlog.binlog_sequence(stop_file)]
        replay_files = [{"file": e["file"], "set_id": e["set_id"], "parent": e["parent"],
                         "start": start_pos if e["file"] == start_file else 4,
                         "stop": stop_pos if e["file"] == stop_file else e["complete_end"],
                         "bytes": e["size"]} for e in files]
        base_times, lb_times = [], []
        for _ in range(args.runs):
            reset(admin)
            base_times.append(run_baseline(admin, env["LAB_MYSQL_DATADIR"], [e["file"] for e in files],
                                           start_pos, stop_pos))
            assert count(admin) == args.events, "baseline replay incomplete"
            reset(admin)
            t0 = time.monotonic()
            pitr.replay(store, keyring, replay_files, admin, databases=[DB])
            lb_times.append(time.monotonic() - t0)
            assert count(admin) == args.events, "lifeboat replay incomplete"
        conn = mysql.connect(admin)
        mysql.execute(conn, f"DROP DATABASE {DB}")
        conn.close()
    binlog_bytes = sum(e["size"] for e in files)
    out = {"events": args.events, "runs": args.runs, "binlog_files": len(files), "binlog_bytes": binlog_bytes,
           "generate_s": round(gen_s, 2), "archive_s": round(archive_s, 2),
           "baseline_median_s": round(statistics.median(base_times), 3),
           "lifeboat_median_s": round(statistics.median(lb_times), 3),
           "ratio": round(statistics.median(base_times) / statistics.median(lb_times), 3),
           "baseline_s": [round(x, 3) for x in base_times], "lifeboat_s": [round(x, 3) for x in lb_times],
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'events':>10} {'baseline s':>11} {'lifeboat s':>11} {'ratio':>6}")
    print(f"{args.events:>10} {out['baseline_median_s']:>11} {out['lifeboat_median_s']:>11} {out['ratio']:>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
