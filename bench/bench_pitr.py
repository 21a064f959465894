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

from ansible_collections.lifeboat.dr.plugins.module_utils import backupset, binlog, keys, mysql, pitr

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", "--size", type=int, default=500_000, help="row events to replay")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    import lab
    env = lab.env()
    admin = mysql.ConnParams.from_lab_env(env)
    backup_user = mysql.ConnParams.from_lab_env(env, backup_user=True)
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "kek"
        keys.create_key_file(key)
        keyring = keys.KeyRing(keys.FileKEK.load(key))
        store = backupset.Store(Path(tmp) / "store")
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
