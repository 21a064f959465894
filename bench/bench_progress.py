"""Benchmark: the cost of live progress (issue 22) on a MySQL backup of the lab MariaDB.

    .venv/bin/python -m bench.bench_progress --size 1000 --pairs 5 --interval 1

Generates ``--size`` MB of row data in ``lbbench`` (as ``bench.bench_mysql``; ``--reuse`` keeps
an existing one), then runs ``--pairs`` pairs of Lifeboat backups of it, each in a child process
as a module runs it: *on* = with the run status file (``runstatus.activate_run_status``: the
file rewritten every ``interval / 2`` s, the watchdog thread checking the run owner every 5 s);
*off* = without it (``progress_interval_s: 0``). Both log progress as modules always did. The
order inside a pair alternates; the server is left to settle before every run. Reports per run
the wall time and the child's CPU time (user + system), and the median of the paired
differences (on - off) relative to the median *off* time. Goal: <= 2 %. As those whole-process
differences are within the noise of a shared machine, each *on* run also measures the CPU of the
feature itself (``own_cpu_s``: thread CPU time spent in the run status's ``report``, ``flush``
and owner checks, counted in the child), reported as a share of the run's CPU. Results go to
``bench/results/progress.json``.
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

from bench import bench_mysql as bm

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "progress.json"


def child_main(argv: list[str]) -> None:
    """One backup, as the module runs it (``on``: with the run status file)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mb
    from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
    from ansible_collections.lifeboat.dr.plugins.module_utils.store import locks, runstatus
    from ansible_collections.lifeboat.dr.plugins.module_utils.util import progress

    mode, store, key_file, interval = argv[0], argv[1], argv[2], float(argv[3])
    run = None
    own = account_own_cpu(runstatus) if mode == "on" else None
    if mode == "on":
        run = runstatus.activate_run_status(store, "bench-mysql-backup", kind="backup", component="mysql",
                                            run_owner=locks.process_identity(os.getppid()), interval_s=interval)
    try:
        mb.run_backup(store, keys.KeyRing.from_options(key_file=key_file), bm.lab_params(), databases=[bm.DB],
                      parallel=2, include_users=False, progress=progress.log_progress())
    finally:
        if run is not None:
            run.end()
    if own is not None:
        print(f"OWN_CPU_S {sum(own.values()):.4f}", flush=True)


def account_own_cpu(runstatus) -> dict[str, float]:
    """Wrap the run status's entry points (the engines' reports and steps, the watchdog's writes
    and owner checks) to add up the thread CPU time spent in them; returns the running totals."""
    import functools

    own: dict[str, float] = {}

    def wrap(holder, name: str) -> None:
        fn = getattr(holder, name)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                own[name] = own.get(name, 0.0) + time.thread_time() - start
        setattr(holder, name, timed)

    for name in ("report", "flush", "set_step", "set_counts", "heartbeat"):
        wrap(runstatus.RunStatus, name)
    wrap(runstatus, "owner_state")
    return own


def one_run(mode: str, store: Path, key_file: str, interval: float) -> dict[str, float]:
    """Wall and CPU seconds of one child backup; the set is deleted afterwards."""
    store.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_progress", "--child", mode, str(store), key_file,
                             str(interval)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the {mode} backup failed")
    shutil.rmtree(store)
    result = {"wall_s": round(wall, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}
    for line in out.splitlines():
        if line.startswith("OWN_CPU_S "):
            result["own_cpu_s"] = round(float(line.split()[1]), 4)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1000, help="dataset size in MB (row data)")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--interval", type=float, default=1.0, help="progress_interval_s of the 'on' runs")
    ap.add_argument("--reuse", action="store_true", help="reuse an existing lbbench database")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child)
        return
    import lab

    params = bm.lab_params()
    rows = bm.existing_rows(params) if args.reuse else bm.generate(params, args.size)
    key_file = lab.env()["LAB_KEY_FILE"]
    server = bm.server_pid()
    work = Path(tempfile.mkdtemp(prefix="lb-bench-progress-"))
    pairs = []
    load_before = bm.load_average()
    try:
        for i in range(args.pairs):
            pair = {}
            for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):
                bm.settle(params, server)
                pair[mode] = one_run(mode, work / f"store-{i}-{mode}", key_file, args.interval)
                print(f"pair {i + 1} {mode}: {pair[mode]}", flush=True)
            pairs.append(pair)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    off_wall = statistics.median(p["off"]["wall_s"] for p in pairs)
    off_cpu = statistics.median(p["off"]["cpu_s"] for p in pairs)
    d_wall = statistics.median(p["on"]["wall_s"] - p["off"]["wall_s"] for p in pairs)
    d_cpu = statistics.median(p["on"]["cpu_s"] - p["off"]["cpu_s"] for p in pairs)
    own_pct = statistics.median(100 * p["on"]["own_cpu_s"] / p["on"]["cpu_s"] for p in pairs)
    result = {
        "what": "MySQL backup of lbbench with and without the run status file (issue 22)",
        "size_mb": args.size, "rows": rows, "pairs": pairs, "interval_s": args.interval,
        "median_off_wall_s": round(off_wall, 3), "median_off_cpu_s": round(off_cpu, 3),
        "median_paired_diff_wall_s": round(d_wall, 3), "median_paired_diff_cpu_s": round(d_cpu, 3),
        "median_paired_diff_wall_pct": round(100 * d_wall / off_wall, 2),
        "median_paired_diff_cpu_pct": round(100 * d_cpu / off_cpu, 2),
        "median_own_cpu_s": round(statistics.median(p["on"]["own_cpu_s"] for p in pairs), 4),
        "median_own_cpu_pct": round(own_pct, 3),
        "goal_pct": 2.0, "load_average_before": load_before, "load_average_after": bm.load_average(),
        "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "pairs"}, indent=2))


if __name__ == "__main__":
    main()
