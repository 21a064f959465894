"""Benchmark: Compose adds a transport, not work (issue 19) - a MySQL backup and a restore on the
compose lab against the same operations on the process lab, side by side in one run.

    python -m bench.bench_compose --size 1000 --pairs 3

Needs both labs up: the process lab (``make lab-up``; ``LAB_STATE_DIR``/``LAB_PORT_BASE`` as usual)
and the compose lab (``python -m lab up --kind compose``; ``LAB_COMPOSE_STATE_DIR``). Both MariaDB
servers have the same settings (lab/svc_mysql.py and lab/compose/mariadb.cnf; the bench records
and compares the ones that change the speed) and their data on the same disk. On each server
``lbbench`` gets about ``--size`` MB of row data (``bench_mysql.generate``, not binlogged).

Then ``--pairs`` paired runs, the order alternating from pair to pair, every run a child process
(start-up included, as a module run), each server settled before each timed run
(``bench_mysql.settle``: no dirty pages, idle):

* backup: the mysql backup of ``lbbench`` (method ``auto``, ``parallel`` 2) into a store of its own,
  reached over the network on both labs (the compose service over its project network);
* restore: that set restored beside the original (``lbbench_lb``, staged load + verification).

The ratio per pair is compose seconds / process seconds; the goal is a median <= 1.1 for each.
Results: ``bench/results/compose_<size>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from bench import bench_mysql
from lab.params import lab_mysql_params

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
KINDS = ("process", "compose")
SETTINGS = ("version", "innodb_buffer_pool_size", "innodb_log_file_size", "innodb_flush_log_at_trx_commit",
            "innodb_flush_method", "innodb_io_capacity", "sync_binlog", "log_bin", "binlog_format")


def lab_env(kind: str) -> dict[str, str]:
    """The ``LAB_*`` values of the process or the compose lab (secrets inside: never printed)."""
    if kind == "compose":
        from lab.compose import lab as compose_lab

        return compose_lab.env()
    import lab

    return lab.env()


def params_of(kind: str) -> my.ConnParams:
    return lab_mysql_params(lab_env(kind))


def mariadbd_pid(kind: str) -> int:
    """The host pid of the lab's mariadbd: the process lab's pid file, or the process named
    ``mariadbd`` below the compose service's container (found through the Docker API)."""
    if kind == "process":
        return bench_mysql.server_pid()
    from lab.compose import lab as compose_lab

    layout = compose_lab.load_compose_layout()
    container = compose_lab.docker_client(layout).containers.get(compose_lab.container_name(layout, "db"))
    todo = [int(container.attrs["State"]["Pid"])]
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}/comm").read_text().strip() == "mariadbd":
            return pid
        for task in Path(f"/proc/{pid}/task").iterdir():
            todo += [int(c) for c in (task / "children").read_text().split()]
    raise SystemExit("no mariadbd below the compose db container")


def server_settings(params: my.ConnParams) -> dict[str, str]:
    conn = my.connect(params)
    try:
        row = my.query_all(conn, "SELECT " + ", ".join(f"@@{name}" for name in SETTINGS))[0]
    finally:
        conn.close()
    return {name: str(value) for name, value in zip(SETTINGS, row, strict=True)}


def child(op: str, kind: str, store: Path, key_file: Path) -> float:
    """One Lifeboat operation in a child process; wall seconds."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "bench.bench_compose", "--child", op, kind, str(store), str(key_file)],
                   cwd=REPO, check=True)
    return round(time.monotonic() - start, 3)


def child_main(op: str, kind: str, store: str, key_file: str) -> None:
    """The Lifeboat operations, run in a child process (as the modules run them)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mb
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import restore as mr

    params = params_of(kind)
    ring = keys.KeyRing.from_options(key_file=key_file)
    if op == "backup":
        mb.run_backup(store, ring, params, databases=[bench_mysql.DB], parallel=2, include_users=False)
    else:
        bench_mysql.run_sql(params, f"DROP DATABASE IF EXISTS {bench_mysql.DB}_lb")
        mr.restore_mysql_from(mr.open_backup_set(store), ring, params, databases=[bench_mysql.DB],
                              mode="side_by_side", rename_to={bench_mysql.DB: f"{bench_mysql.DB}_lb"}, parallel=2)


def timed_run(op: str, kind: str, work: Path, key_file: Path, pids: dict[str, int]) -> dict[str, Any]:
    params = params_of(kind)
    settled = bench_mysql.settle(params, pids[kind])
    load = bench_mysql.load_average()
    store = work / f"store-{kind}"
    if op == "backup":
        subprocess.run(["rm", "-rf", str(store)], check=True)
    seconds = child(op, kind, store, key_file)
    return {"op": op, "kind": kind, "seconds": seconds, "settled_s": settled, "load_before": load}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1000, help="MB of row data on each server")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--reuse", action="store_true", help="keep an existing lbbench on both servers")
    ap.add_argument("--child", nargs=4, metavar=("OP", "KIND", "STORE", "KEY_FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(*args.child)
        return 0
    settings = {kind: server_settings(params_of(kind)) for kind in KINDS}
    differ = {name for name in SETTINGS if settings["process"][name] != settings["compose"][name]}
    out: dict[str, Any] = {"size_mb": args.size, "pairs": args.pairs, "cpus": os.cpu_count(),
                           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "settings": settings, "settings_differ": sorted(differ)}
    if differ:
        print(f"warning: server settings differ: {sorted(differ)}", file=sys.stderr)
    started = time.monotonic()
    out["rows"] = {kind: (bench_mysql.existing_rows(params_of(kind)) if args.reuse
                          else bench_mysql.generate(params_of(kind), args.size)) for kind in KINDS}
    out["generate_s"] = round(time.monotonic() - started, 1)
    pids = {kind: mariadbd_pid(kind) for kind in KINDS}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lifeboat-bench-compose-") as tmp:
        work = Path(tmp)
        key_file = work / "backup.key"
        key_file.write_bytes(os.urandom(32))
        key_file.chmod(0o600)
        for pair in range(args.pairs):
            order = KINDS if pair % 2 == 0 else tuple(reversed(KINDS))
            for op in ("backup", "restore"):
                for kind in order:
                    run = dict(timed_run(op, kind, work, key_file, pids), pair=pair)
                    runs.append(run)
                    print(json.dumps(run), flush=True)
    for kind in KINDS:
        bench_mysql.run_sql(params_of(kind), f"DROP DATABASE IF EXISTS {bench_mysql.DB}_lb",
                            f"DROP DATABASE IF EXISTS {bench_mysql.DB}")
    out["runs"] = runs
    out["summary"] = summarise(runs, args.pairs)
    path = RESULTS / f"compose_{args.size}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["summary"], indent=2))
    print(f"written {path}")
    return 0


def summarise(runs: list[dict[str, Any]], pairs: int) -> dict[str, Any]:
    """Per operation: the median seconds of each lab and the median of the per-pair ratios compose/process."""
    summary = {}
    for op in ("backup", "restore"):
        seconds = {kind: [r["seconds"] for r in runs if r["op"] == op and r["kind"] == kind] for kind in KINDS}
        ratios = []
        for pair in range(pairs):
            by_kind = {r["kind"]: r["seconds"] for r in runs if r["op"] == op and r["pair"] == pair}
            ratios.append(round(by_kind["compose"] / by_kind["process"], 3))
        summary[op] = {"process_median_s": statistics.median(seconds["process"]),
                       "compose_median_s": statistics.median(seconds["compose"]),
                       "ratios": ratios, "ratio_median": statistics.median(ratios), "goal": 1.1,
                       "met": statistics.median(ratios) <= 1.1}
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
