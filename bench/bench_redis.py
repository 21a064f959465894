"""Benchmark: Lifeboat's network Redis backup against ``redis-cli --rdb`` + ``zstd -3``.

    python -m bench.bench_redis --size 100 --runs 3

Input: a scratch redis-server (free port on 127.0.0.1, temp dir, removed afterwards)
filled with about ``--size`` MB of data: ~70 % strings of 200 B - 4 KiB (text-like,
compressible, some random), the rest hashes, lists and sorted sets of small
elements, a few keys with TTLs. ``repl-diskless-sync-delay 0`` on the server.

Compared, median of ``--runs`` (wall time, both sides make the server fork and
serialise the whole dataset):

* ``redis-cli --rdb FILE`` then ``zstd -3 -T1 -q FILE`` (password via REDISCLI_AUTH);
* ``redis_engine.run_redis_backup`` (mode network) into a fresh store: SYNC stream ->
  RDB structure walk + CRC64 -> zstd 3 -> AES-256-GCM -> SHA-256 -> publish, without the
  read-back check (``quick_verify=False``). It runs in a child process so that its peak
  RSS (``ru_maxrss``) is its own.

``ratio`` = baseline_time / lifeboat_time (goal >= 1.0); ``lifeboat_peak_rss_mb`` goal < 100.
Client CPU seconds (user+sys of redis-cli+zstd, of the Lifeboat process; the server's
fork excluded) and the load average are recorded too: on a shared machine wall time
is noisy, CPU time much less so.
Results: a table on stdout and JSON in ``bench/results/redis.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1 << 20
RESULTS = Path(__file__).resolve().parent / "results" / "redis.json"
WORDS = ("order invoice customer shipped storage upload thumbnail session cache config release error warning "
         "info debug request response latency user account payment refund avatar report export").split()


def _text(rnd: random.Random, n: int) -> bytes:
    words = []
    size = 0
    while size < n:
        w = rnd.choice(WORDS)
        words.append(w)
        size += len(w) + 1
    return " ".join(words).encode()[:n]


def fill(port: int, password: str, size_mb: int, seed: int = 11) -> dict:
    """Fill db 0 and db 1 with about ``size_mb`` MB of values; return counts."""
    import redis

    rnd = random.Random(seed)
    target = size_mb * MB
    done = keys = 0
    conn = redis.Redis(port=port, password=password, socket_timeout=60)
    pipe = conn.pipeline(transaction=False)
    while done < target * 0.7:
        n = rnd.randint(200, 4096)
        value = os.urandom(n) if rnd.random() < 0.2 else _text(rnd, n)
        pipe.set(f"str:{keys:08d}", value, ex=86400 if keys % 50 == 0 else None)
        done += n
        keys += 1
        if keys % 2000 == 0:
            pipe.execute()
    db1 = redis.Redis(port=port, password=password, db=1, socket_timeout=60).pipeline(transaction=False)
    i = 0
    while done < target:
        kind = i % 3
        if kind == 0:
            db1.hset(f"hash:{i}", mapping={f"field{j}": _text(rnd, 40) for j in range(50)})
        elif kind == 1:
            db1.rpush(f"list:{i}", *[_text(rnd, 30) for _ in range(60)])
        else:
            db1.zadd(f"zset:{i}", {f"member:{j}:{rnd.random()}": rnd.random() for j in range(60)})
        done += 2200
        keys += 1
        i += 1
        if i % 500 == 0:
            db1.execute()
    pipe.execute()
    db1.execute()
    return {"keys": keys, "approx_bytes": done}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_baseline(port: int, password: str, out: Path, cpu: list | None = None) -> float:
    """``redis-cli --rdb`` then ``zstd -3``; the password goes through the environment.
    Returns wall seconds; appends the two programs' CPU seconds (user+sys) to ``cpu``."""
    for p in (out, out.with_suffix(out.suffix + ".zst")):
        p.unlink(missing_ok=True)
    env = {**os.environ, "REDISCLI_AUTH": password}
    cpu_before = _children_cpu_s()
    start = time.perf_counter()
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--rdb", str(out)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["zstd", "-3", "-T1", "-q", "-f", str(out)], check=True)
    elapsed = time.perf_counter() - start
    if cpu is not None:
        cpu.append(_children_cpu_s() - cpu_before)
    return elapsed


def child_backup(args: argparse.Namespace) -> int:
    """Child process: one Lifeboat backup; prints JSON {seconds, stored_bytes, peak_rss_mb}."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis.conn import RedisParams
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis.engine import run_redis_backup
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import FileKEK, KeyRing

    # imports happen before timing (as in the other benches); first-use costs (CRC tables) are timed
    __import__("ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog")
    __import__("ansible_collections.lifeboat.dr.plugins.module_utils.format.pipeline")

    password = sys.stdin.readline().strip()
    keyring = KeyRing(FileKEK.load(args.key))
    shutil.rmtree(args.store, ignore_errors=True)
    params = RedisParams(port=args.port, password=password, timeout=60)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = run_redis_backup(args.store, keyring, params, codec=Codec("zstd", 3), quick_verify=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"seconds": elapsed, "cpu_s": cpu, "stored_bytes": result["stored_bytes"],
                      "rdb_size": result["rdb_size"], "peak_rss_mb": after.ru_maxrss / 1024}))
    return 0


def run_lifeboat(port: int, password: str, store: Path, key: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench.bench_redis", "--child", "--port", str(port),
                           "--store", str(store), "--key", str(key)], input=password + "\n", text=True,
                          capture_output=True, check=False, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"lifeboat backup failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=100, help="dataset size in MB (default 100)")
    ap.add_argument("--runs", type=int, default=3, help="runs per side; the median is reported")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_backup(args)

    from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis.engine import ScratchRedis
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import create_key_file

    work = Path(tempfile.mkdtemp(prefix="lb-bench-redis-"))
    try:
        create_key_file(work / "kek.key")
        with ScratchRedis(base_dir=str(work), appendonly=False) as server:
            server.start()
            t0 = time.perf_counter()
            counts = fill(server.port, server.password, args.size)
            fill_s = time.perf_counter() - t0
            out = work / "dump.rdb"
            run_baseline(server.port, server.password, out)  # warm-up (first fork, page cache)
            base_times, base_cpu, lb_runs = [], [], []
            load_before = os.getloadavg()[0]
            for _ in range(args.runs):
                base_times.append(run_baseline(server.port, server.password, out, base_cpu))
                lb_runs.append(run_lifeboat(server.port, server.password, work / "store", work / "kek.key"))
            zst = out.with_suffix(".rdb.zst")
            base_med = statistics.median(base_times)
            lb_med = statistics.median(r["seconds"] for r in lb_runs)
            result = {
                "size_mb": args.size, "keys": counts["keys"], "runs": args.runs, "cpus": os.cpu_count(),
                "fill_s": round(fill_s, 1), "rdb_bytes": lb_runs[-1]["rdb_size"],
                "redis_cli_zstd_s": round(base_med, 3), "lifeboat_s": round(lb_med, 3),
                "ratio": round(base_med / lb_med, 3), "goal_ratio": 1.0,
                "lifeboat_peak_rss_mb": round(max(r["peak_rss_mb"] for r in lb_runs), 1), "goal_rss_mb": 100,
                "redis_cli_zstd_cpu_s": round(statistics.median(base_cpu), 3),
                "lifeboat_cpu_s": round(statistics.median(r["cpu_s"] for r in lb_runs), 3),
                "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "redis_cli_zstd_bytes": zst.stat().st_size, "lifeboat_stored_bytes": lb_runs[-1]["stored_bytes"],
                "redis_cli_zstd_all_s": [round(t, 3) for t in base_times],
                "lifeboat_all_s": [round(r["seconds"], 3) for r in lb_runs],
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"redis bench, {args.size} MB ({result['keys']} keys, RDB {result['rdb_bytes']} B), median of {args.runs}:")
    print(f"  redis-cli --rdb + zstd -3 : {result['redis_cli_zstd_s']:7.2f} s  {result['redis_cli_zstd_bytes']} B")
    print(f"  lifeboat (network)        : {result['lifeboat_s']:7.2f} s  {result['lifeboat_stored_bytes']} B, "
          f"peak RSS {result['lifeboat_peak_rss_mb']} MB")
    print(f"  ratio (baseline/lifeboat time): {result['ratio']:.2f}  (goal >= 1.0)")
    print(f"  client CPU (user+sys, server excluded): redis-cli+zstd {result['redis_cli_zstd_cpu_s']:.2f} s, "
          f"lifeboat {result['lifeboat_cpu_s']:.2f} s; load average {result['load_average']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
