"""Benchmark: Lifeboat MySQL backup/restore against the usual tools, on the lab MariaDB.

    .venv/bin/python -m bench.bench_mysql --size 100 --repeat 3

Generates ``--size`` MB of data in the database ``lbbench`` (several InnoDB tables,
mixed types, secondary indexes), then times, each ``--repeat`` times (medians):

* ``mariadb-dump --single-transaction | zstd -3``   and   ``mariadb-dump | gzip``
* ``mydumper -t 2 -c`` / ``myloader -t 2`` when installed (apt package ``mydumper``; noted as absent otherwise)
* ``mariadb < dump.sql`` into a fresh database
* Lifeboat backup (compression + encryption + hashing on, ``--method``, default ``auto``)
  and restore (staged load + verification, into a fresh database)

The tools run one after the other inside each repetition, so they see the same
machine load; ``uptime``'s load average is recorded before and after.
Each Lifeboat run is a child process (start-up included), so its peak RSS is measured alone.
Goals (speed ratios peer time / Lifeboat time): backup >= 0.9x dump|zstd, >= 2.5x dump|gzip,
>= 1.5x mydumper; restore >= 1.0x myloader and about 1.5x ``mariadb < dump.sql``;
peak RSS < 150 MB. Results go to ``bench/results/mysql.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ansible_collections.lifeboat.dr.plugins.module_utils import keys
from ansible_collections.lifeboat.dr.plugins.module_utils import mysql as my

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "mysql.json"
DB = "lbbench"
TABLES = {
    "orders": ("CREATE TABLE orders (id BIGINT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL,"
               " status ENUM('new','paid','shipped','cancelled') NOT NULL, amount DECIMAL(12,2), created DATETIME,"
               " note VARCHAR(200), KEY (customer_id), KEY (created)) ENGINE=InnoDB",
               "INSERT INTO orders (customer_id, status, amount, created, note) SELECT seq % 50000,"
               " ELT(1 + seq % 4, 'new','paid','shipped','cancelled'), (seq % 100000) / 7,"
               " '2024-01-01' + INTERVAL seq SECOND, CONCAT('note ', MD5(seq)) FROM seq_{a}_to_{b}", 130),
    "customers": ("CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100), email VARCHAR(120),"
                  " balance DOUBLE, active TINYINT(1), profile TEXT, UNIQUE KEY (email), KEY (name)) ENGINE=InnoDB",
                  "INSERT INTO customers SELECT seq, CONCAT('Customer ', seq), CONCAT('c', seq, '@example.com'),"
                  " seq * 1.5, seq % 2, REPEAT(SHA1(seq), 4) FROM seq_{a}_to_{b}", 260),
    "events": ("CREATE TABLE events (id BIGINT PRIMARY KEY, kind SMALLINT, payload BLOB, ts TIMESTAMP NULL,"
               " KEY (kind, ts)) ENGINE=InnoDB",
               "INSERT INTO events SELECT seq, seq % 300, UNHEX(CONCAT(SHA2(seq, 256), MD5(seq))),"
               " FROM_UNIXTIME(1700000000 + seq) FROM seq_{a}_to_{b}", 100),
}


def lab_params() -> my.ConnParams:
    import lab

    return my.ConnParams.from_lab_env(lab.env())


def run_sql(params: my.ConnParams, *statements: str) -> None:
    conn = my.connect(params)
    try:
        for s in statements:
            my.execute(conn, s)
    finally:
        conn.close()


def generate(params: my.ConnParams, size_mb: int) -> dict[str, int]:
    """(Re)create ``lbbench`` with about ``size_mb`` MB of row data split over the tables."""
    run_sql(params, f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB}")
    total_weight = sum(w for *_x, w in TABLES.values())
    rows = {}
    conn = my.connect(params, database=DB)
    try:
        my.execute(conn, "SET SESSION sql_log_bin = 0")
        for name, (ddl, fill, weight) in TABLES.items():
            my.execute(conn, ddl)
            avg = {"orders": 95, "customers": 230, "events": 80}[name]
            n = max(1000, int(size_mb * 1e6 * weight / total_weight / avg))
            for a in range(1, n + 1, 200_000):
                my.execute(conn, fill.format(a=a, b=min(n, a + 199_999)))
            rows[name] = n
        my.execute(conn, f"ANALYZE TABLE {', '.join(TABLES)}")
    finally:
        conn.close()
    return rows


def timed(fn: Callable[[], Any]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def shell(cmd: str) -> None:
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, stdout=subprocess.DEVNULL)


def child(args: list[str]) -> tuple[float, int]:
    """Run this script as a child (one Lifeboat operation); return (seconds, peak RSS bytes)."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_mysql", *args], cwd=REPO)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child {args[0]} failed")
    return elapsed, usage.ru_maxrss * 1024


def child_main(argv: list[str]) -> None:
    """The Lifeboat operations, run in a child process."""
    from ansible_collections.lifeboat.dr.plugins.module_utils import mysql_backup as mb
    from ansible_collections.lifeboat.dr.plugins.module_utils import mysql_restore as mr

    op, store, key_file, parallel, method = argv[0], argv[1], argv[2], int(argv[3]), argv[4]
    params = lab_params()
    ring = keys.KeyRing.from_options(key_file=key_file)
    if op == "backup":
        mb.run_backup(store, ring, params, databases=[DB], parallel=parallel, include_users=False, method=method)
    else:
        run_sql(params, f"DROP DATABASE IF EXISTS {DB}_lb")
        mr.restore_mysql_from(mr.open_backup_set(store), ring, params, databases=[DB], mode="side_by_side",
                              rename_to={DB: f"{DB}_lb"}, parallel=parallel)


def load_average() -> float:
    """The 1-minute load average (``uptime``)."""
    return round(os.getloadavg()[0], 2)


def ratio(times: dict[str, float], peer: str, ours: str) -> Any:
    if peer not in times or ours not in times:
        return None
    return round(times[peer] / times[ours], 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=100, help="dataset size in MB (row data)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--method", default="auto", choices=["auto", "native", "tsv"], help="Lifeboat dump method")
    ap.add_argument("--keep", action="store_true", help="keep the bench databases afterwards")
    args = ap.parse_args()
    params = lab_params()
    rows = generate(params, args.size)
    work = Path(tempfile.mkdtemp(prefix="lbbench-"))
    times: dict[str, list[float]] = {}
    rss: dict[str, int] = {}
    loads = [load_average()]
    key_file = work / "kek.key"
    keys.create_key_file(key_file)
    have_mydumper = bool(shutil.which("mydumper") and shutil.which("myloader"))
    backup_key, restore_key = "lifeboat backup", "lifeboat restore (load+verify)"
    with my.option_file(params) as cnf:
        dump = f"mariadb-dump --defaults-extra-file={cnf} --single-transaction --routines --triggers --events"
        client = f"mariadb --defaults-extra-file={cnf}"
        for i in range(args.repeat):
            times.setdefault("mariadb-dump|zstd-3", []).append(
                timed(lambda: shell(f"{dump} {DB} | zstd -3 -q > {work}/dump.sql.zst")))
            times.setdefault("mariadb-dump|gzip", []).append(
                timed(lambda: shell(f"{dump} {DB} | gzip > {work}/dump.sql.gz")))
            if have_mydumper:
                shutil.rmtree(work / "mydumper", ignore_errors=True)
                times.setdefault("mydumper -t 2 -c", []).append(timed(lambda: shell(
                    f"mydumper --defaults-file={cnf} -B {DB} -o {work}/mydumper -t {args.parallel} -c -v 1")))
                run_sql(params, f"DROP DATABASE IF EXISTS {DB}_myl")
                times.setdefault("myloader -t 2", []).append(timed(lambda: shell(
                    f"myloader --defaults-file={cnf} -d {work}/mydumper -B {DB}_myl -t {args.parallel} -v 1")))
            shell(f"zstd -d -q -f {work}/dump.sql.zst -o {work}/dump.sql")
            run_sql(params, f"DROP DATABASE IF EXISTS {DB}_plain", f"CREATE DATABASE {DB}_plain")
            times.setdefault("mariadb < dump.sql", []).append(
                timed(lambda: shell(f"{client} {DB}_plain < {work}/dump.sql")))
            store = work / f"store{i}"
            t, peak = child(["_child", "backup", str(store), str(key_file), str(args.parallel), args.method])
            times.setdefault(backup_key, []).append(t)
            rss[backup_key] = max(rss.get(backup_key, 0), peak)
            t, peak = child(["_child", "restore", str(store), str(key_file), str(args.parallel), args.method])
            times.setdefault(restore_key, []).append(t)
            rss[restore_key] = max(rss.get(restore_key, 0), peak)
            shutil.rmtree(store)
            loads.append(load_average())
    medians = {k: round(statistics.median(v), 3) for k, v in times.items()}
    result = {
        "size_mb": args.size, "rows": rows, "repeat": args.repeat, "parallel": args.parallel,
        "method": args.method, "cpus": os.cpu_count(), "load_average_1m": loads,
        "median_s": medians, "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in rss.items()},
        "dump_bytes": {"zstd": (work / "dump.sql.zst").stat().st_size, "gzip": (work / "dump.sql.gz").stat().st_size,
                       "plain": (work / "dump.sql").stat().st_size},
        "mydumper": "measured (Debian package mydumper 0.10)" if have_mydumper
        else "not installed (apt-get install mydumper); not measured",
        "ratios": {
            "backup_speed_vs_dump_zstd": ratio(medians, "mariadb-dump|zstd-3", backup_key),
            "backup_speed_vs_dump_gzip": ratio(medians, "mariadb-dump|gzip", backup_key),
            "backup_speed_vs_mydumper": ratio(medians, "mydumper -t 2 -c", backup_key),
            "restore_speed_vs_myloader": ratio(medians, "myloader -t 2", restore_key),
            "restore_speed_vs_mariadb_load": ratio(medians, "mariadb < dump.sql", restore_key),
        },
        "goals": {"backup_speed_vs_dump_zstd": ">= 0.9", "backup_speed_vs_dump_gzip": ">= 2.5",
                  "backup_speed_vs_mydumper": ">= 1.5", "restore_speed_vs_myloader": ">= 1.0",
                  "restore_speed_vs_mariadb_load": "~1.5", "peak_rss_mb": "< 150"},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("size_mb", "load_average_1m", "median_s", "ratios", "peak_rss_mb")},
                     indent=2))
    shutil.rmtree(work)
    if not args.keep:
        run_sql(params, *[f"DROP DATABASE IF EXISTS {d}" for d in (DB, f"{DB}_plain", f"{DB}_lb", f"{DB}_myl")])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child_main(sys.argv[2:])
    else:
        main()
