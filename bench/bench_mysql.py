"""Benchmark: Lifeboat MySQL backup/restore against the usual tools, on the lab MariaDB.

    .venv/bin/python -m bench.bench_mysql --size 100 --repeat 3

Generates ``--size`` MB of data in the database ``lbbench`` (several InnoDB tables,
mixed types, secondary indexes), then times, each ``--repeat`` times (medians):

* ``mariadb-dump --single-transaction | zstd -3``   and   ``mariadb-dump | gzip``
* ``mydumper`` / ``myloader`` when installed (noted as absent otherwise)
* ``mariadb < dump.sql`` into a fresh database
* Lifeboat backup (compression + encryption + hashing on) and restore
  (staged load + verification, into a fresh database)

Each Lifeboat run is a child process, so its peak RSS is measured alone.
Goals: backup >= 0.9x the speed of dump|zstd, restore >= 1.5x ``mariadb < dump.sql``,
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

    op, store, key_file, parallel = argv[0], argv[1], argv[2], int(argv[3])
    params = lab_params()
    ring = keys.KeyRing.from_options(key_file=key_file)
    if op == "backup":
        mb.run_backup(store, ring, params, databases=[DB], parallel=parallel, include_users=False)
    else:
        run_sql(params, f"DROP DATABASE IF EXISTS {DB}_lb")
        mr.restore_mysql_from(mr.open_backup_set(store), ring, params, databases=[DB], mode="side_by_side",
                              rename_to={DB: f"{DB}_lb"}, parallel=parallel)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=100, help="dataset size in MB (row data)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the bench databases afterwards")
    args = ap.parse_args()
    params = lab_params()
    rows = generate(params, args.size)
    work = Path(tempfile.mkdtemp(prefix="lbbench-"))
    times: dict[str, list[float]] = {}
    rss: dict[str, int] = {}
    key_file = work / "kek.key"
    keys.create_key_file(key_file)
    with my.option_file(params) as cnf:
        dump = f"mariadb-dump --defaults-extra-file={cnf} --single-transaction --routines --triggers --events"
        client = f"mariadb --defaults-extra-file={cnf}"
        for i in range(args.repeat):
            times.setdefault("mariadb-dump|zstd-3", []).append(
                timed(lambda: shell(f"{dump} {DB} | zstd -3 -q > {work}/dump.sql.zst")))
            times.setdefault("mariadb-dump|gzip", []).append(
                timed(lambda: shell(f"{dump} {DB} | gzip > {work}/dump.sql.gz")))
            shell(f"zstd -d -q -f {work}/dump.sql.zst -o {work}/dump.sql")
            run_sql(params, f"DROP DATABASE IF EXISTS {DB}_plain", f"CREATE DATABASE {DB}_plain")
            times.setdefault("mariadb < dump.sql", []).append(
                timed(lambda: shell(f"{client} {DB}_plain < {work}/dump.sql")))
            store = work / f"store{i}"
            t, peak = child(["_child", "backup", str(store), str(key_file), str(args.parallel)])
            times.setdefault("lifeboat backup", []).append(t)
            rss["lifeboat backup"] = max(rss.get("lifeboat backup", 0), peak)
            t, peak = child(["_child", "restore", str(store), str(key_file), str(args.parallel)])
            times.setdefault("lifeboat restore (load+verify)", []).append(t)
            rss["lifeboat restore (load+verify)"] = max(rss.get("lifeboat restore (load+verify)", 0), peak)
            shutil.rmtree(store)
        if shutil.which("mydumper") and shutil.which("myloader"):
            times["mydumper"] = [timed(lambda: shell(
                f"mydumper --defaults-extra-file={cnf} -B {DB} -o {work}/mydumper -t {args.parallel} -c"))]
    have_mydumper = bool(shutil.which("mydumper") and shutil.which("myloader"))
    medians = {k: round(statistics.median(v), 3) for k, v in times.items()}
    result = {
        "size_mb": args.size, "rows": rows, "repeat": args.repeat, "parallel": args.parallel,
        "cpus": os.cpu_count(), "median_s": medians, "runs_s": times,
        "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in rss.items()},
        "dump_bytes": {"zstd": (work / "dump.sql.zst").stat().st_size, "gzip": (work / "dump.sql.gz").stat().st_size,
                       "plain": (work / "dump.sql").stat().st_size},
        "mydumper": "measured" if have_mydumper else "not installed (apt package mydumper); not measured",
        "ratios": {
            "backup_speed_vs_dump_zstd": round(medians["mariadb-dump|zstd-3"] / medians["lifeboat backup"], 2),
            "restore_speed_vs_mariadb_load": round(medians["mariadb < dump.sql"]
                                                   / medians["lifeboat restore (load+verify)"], 2),
        },
        "goals": {"backup_speed_vs_dump_zstd": ">= 0.9", "restore_speed_vs_mariadb_load": ">= 1.5",
                  "peak_rss_mb": "< 150"},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("size_mb", "median_s", "ratios", "peak_rss_mb")}, indent=2))
    shutil.rmtree(work)
    if not args.keep:
        run_sql(params, *[f"DROP DATABASE IF EXISTS {d}" for d in (DB, f"{DB}_plain", f"{DB}_lb")])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child_main(sys.argv[2:])
    else:
        main()
