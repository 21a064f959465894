"""Benchmark: Lifeboat MySQL backup/restore against the usual tools, on the lab MariaDB.

    .venv/bin/python -m bench.bench_mysql --size 100 --repeat 3

Generates ``--size`` MB of data in the database ``lbbench`` (several InnoDB tables,
mixed types, secondary indexes), then times, each ``--repeat`` times (medians):

* ``mariadb-dump --single-transaction | zstd -3``   and   ``mariadb-dump | gzip``
* ``mydumper -t 2 -c`` / ``myloader -t 2`` when installed (apt package ``mydumper``; noted as absent otherwise)
* ``mariadb < dump.sql`` into a fresh database
* Lifeboat backup (compression + encryption + hashing on, ``--method``, default ``auto``)
  and restore (staged load + verification, into a fresh database)

Each repetition runs the backups first, then the restores; inside each phase the order of
the tools rotates from one repetition to the next, and before every timed run the server is
left to settle (``settle``: no dirty InnoDB pages left and the server process idle, at most
2 minutes), so no tool pays for the page flushing and purge that the bulk load before it left
behind. ``uptime``'s load average is recorded before and after.
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

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from lab.params import lab_mysql_params

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

    return lab_mysql_params(lab.env())


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


def existing_rows(params: my.ConnParams) -> dict[str, int]:
    """Row counts of the tables of an existing ``lbbench`` (``--reuse``)."""
    conn = my.connect(params, database=DB)
    try:
        return {name: int(my.query_value(conn, f"SELECT COUNT(*) FROM {name}")) for name in TABLES}
    finally:
        conn.close()


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
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mb
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import restore as mr

    op, store, key_file, parallel, method = argv[0], argv[1], argv[2], int(argv[3]), argv[4]
    params = lab_params()
    ring = keys.KeyRing.from_options(key_file=key_file)
    if op == "backup":
        mb.run_backup(store, ring, params, databases=[DB], parallel=parallel, include_users=False, method=method)
    else:
        run_sql(params, f"DROP DATABASE IF EXISTS {DB}_lb")
        mr.restore_mysql_from(mr.open_backup_set(store), ring, params, databases=[DB], mode="side_by_side",
                              rename_to={DB: f"{DB}_lb"}, parallel=parallel)


def server_pid() -> int:
    """The lab MariaDB's process id (from its pid file)."""
    import lab

    return int((Path(lab.env()["LAB_STATE_DIR"]) / "mysql" / "mariadbd.pid").read_text().split()[0])


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(params: my.ConnParams, pid: int, timeout_s: float = 120.0, idle_share: float = 0.05) -> float:
    """Wait until the server has no dirty InnoDB pages and used under ``idle_share`` of a core over
    half a second (the flushing/purge after a bulk load is done); returns the seconds waited."""
    start = time.monotonic()
    conn = my.connect(params)
    try:
        my.execute(conn, "SET GLOBAL innodb_max_dirty_pages_pct_lwm = 0.001")
        while time.monotonic() - start < timeout_s:
            dirty = int(my.query_all(conn, "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")[0][1])
            before = process_cpu_s(pid)
            time.sleep(0.5)
            if dirty == 0 and process_cpu_s(pid) - before < idle_share * 0.5:
                break
        my.execute(conn, "SET GLOBAL innodb_max_dirty_pages_pct_lwm = DEFAULT")
    finally:
        conn.close()
    return round(time.monotonic() - start, 1)


def rotated(items: list[Any], by: int) -> list[Any]:
    """``items`` rotated left by ``by`` places (a different tool goes first each repetition)."""
    by %= max(1, len(items))
    return items[by:] + items[:by]


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
    ap.add_argument("--reuse", action="store_true", help=f"use the {DB} database left by --keep (no generation)")
    ap.add_argument("--backup-only", action="store_true", help="time the backups only (no restores)")
    ap.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = ap.parse_args()
    params = lab_params()
    rows = existing_rows(params) if args.reuse else generate(params, args.size)
    work = Path(tempfile.mkdtemp(prefix="lbbench-"))
    times: dict[str, list[float]] = {}
    rss: dict[str, int] = {}
    loads = [load_average()]
    key_file = work / "kek.key"
    keys.create_key_file(key_file)
    have_mydumper = bool(shutil.which("mydumper") and shutil.which("myloader"))
    backup_key, restore_key = "lifeboat backup", "lifeboat restore (load+verify)"
    pid = server_pid()
    settled: list[float] = []
    with my.option_file(params) as cnf:
        dump = f"mariadb-dump --defaults-extra-file={cnf} --single-transaction --routines --triggers --events"
        client = f"mariadb --defaults-extra-file={cnf}"

        def run(name: str, fn: Callable[[], Any]) -> None:
            settled.append(settle(params, pid))
            times.setdefault(name, []).append(timed(fn))

        def lifeboat(op: str, key: str, store: Path) -> None:
            settled.append(settle(params, pid))
            t, peak = child(["_child", op, str(store), str(key_file), str(args.parallel), args.method])
            times.setdefault(key, []).append(t)
            rss[key] = max(rss.get(key, 0), peak)

        def mydumper_backup() -> None:
            shutil.rmtree(work / "mydumper", ignore_errors=True)
            run("mydumper -t 2 -c", lambda: shell(
                f"mydumper --defaults-file={cnf} -B {DB} -o {work}/mydumper -t {args.parallel} -c -v 1"))

        def myloader_restore() -> None:
            run_sql(params, f"DROP DATABASE IF EXISTS {DB}_myl")
            run("myloader -t 2", lambda: shell(
                f"myloader --defaults-file={cnf} -d {work}/mydumper -B {DB}_myl -t {args.parallel} -v 1"))

        def plain_restore() -> None:
            shell(f"zstd -d -q -f {work}/dump.sql.zst -o {work}/dump.sql")
            run_sql(params, f"DROP DATABASE IF EXISTS {DB}_plain", f"CREATE DATABASE {DB}_plain")
            run("mariadb < dump.sql", lambda: shell(f"{client} {DB}_plain < {work}/dump.sql"))

        for i in range(args.repeat):
            store = work / f"store{i}"
            backups: list[Callable[[], None]] = [
                lambda: run("mariadb-dump|zstd-3", lambda: shell(f"{dump} {DB} | zstd -3 -q > {work}/dump.sql.zst")),
                lambda: run("mariadb-dump|gzip", lambda: shell(f"{dump} {DB} | gzip > {work}/dump.sql.gz")),
                lambda store=store: lifeboat("backup", backup_key, store)]
            restores: list[Callable[[], None]] = [plain_restore,
                                                  lambda store=store: lifeboat("restore", restore_key, store)]
            if have_mydumper:
                backups.append(mydumper_backup)
                restores.append(myloader_restore)
            for step in rotated(backups, i):
                step()
            if not args.backup_only:
                for step in rotated(restores, i):
                    step()
            shutil.rmtree(store)
            loads.append(load_average())
    medians = {k: round(statistics.median(v), 3) for k, v in times.items()}
    result = {
        "size_mb": args.size, "rows": rows, "repeat": args.repeat, "parallel": args.parallel,
        "method": args.method, "cpus": os.cpu_count(), "load_average_1m": loads,
        "median_s": medians, "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "settle_s": settled, "order": "backups then restores, tool order rotated per repetition, settle before each",
        "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in rss.items()},
        "dump_bytes": {"zstd": (work / "dump.sql.zst").stat().st_size, "gzip": (work / "dump.sql.gz").stat().st_size,
                       "plain": (work / "dump.sql").stat().st_size if (work / "dump.sql").exists() else None},
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
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
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
