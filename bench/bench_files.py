"""Benchmark: Lifeboat files backup against ``tar -c | zstd -3``, side by side in one run.

    python -m bench.bench_files --size 200 --runs 3

Input: a generated tree of ``--size`` MB under a temp dir: many small text-like files
(1-64 KiB, compressible, in nested folders) making ~30 % of the bytes, and a few large
files (half random, half repetitive text) making the rest. Written once, then read
from the page cache by every run (both sides see the same warm cache).

Compared, median of ``--runs`` (wall time):

* ``tar -cf - -C tree . | zstd -3 -T1 -q -o out`` (two processes: reading and compressing overlap);
* ``files_engine.run_files_backup`` into a fresh store: walk + pax tar + per-file SHA-256 +
  zstd 3 (the default, automatic worker threads: two for the lone tar stream on a multi-core
  host; ``--threads N`` to force) + AES-256-GCM + SHA-256 of plaintext and stored bytes,
  publish without the read-back check (``quick_verify=False``; that check is an extra read,
  reported separately).

The peer is ``tar --xattrs --acls --sparse`` (Lifeboat keeps xattrs, ACLs and holes too);
``--plain-tar`` drops those flags (the peer of results before 2026-12-03).

``--sparse-case``: instead, a folder holding one 10 GiB file with 1 MiB of data (``--sparse-gib``)
is backed up, against a folder holding just that 1 MiB as a plain file: with holes detected
(``SEEK_DATA``/``SEEK_HOLE``) both take about the same time. Results in ``files_sparse.json``.

``ratio`` = tar_zstd_time / lifeboat_time (>= 0.9 is the goal: Lifeboat at least 0.9x as fast).
Each run times both sides back to back, so the median of the per-run ratios is reported
too (a pair sees about the same load on a shared machine), and CPU seconds (user+sys,
all processes/threads) show the work each side does whatever CPU share it got. The load
average before and after is recorded. Results: a table on stdout and JSON in
``bench/results/files.json``.
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
import tempfile
import time
from pathlib import Path
from typing import Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.components.files import engine as fe
from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec
from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import FileKEK, KeyRing, create_key_file

MB = 1 << 20
RESULTS = Path(__file__).resolve().parent / "results" / "files.json"
WORDS = ("order invoice customer shipped storage upload thumbnail session cache config release error warning "
         "info debug request response latency user account payment refund avatar report export").split()


def text_bytes(rnd: random.Random, n: int) -> bytes:
    out = []
    size = 0
    while size < n:
        line = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 14))) + f" {rnd.randint(0, 10**6)}\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


def make_tree(root: Path, size_mb: int, seed: int = 7) -> dict:
    """Create the tree (deterministic); return counts."""
    rnd = random.Random(seed)
    total = size_mb * MB
    small_budget = int(total * 0.3)
    files = 0
    done = 0
    while done < small_budget:
        folder = root / f"d{rnd.randint(0, 19):02d}" / f"s{rnd.randint(0, 9)}"
        folder.mkdir(parents=True, exist_ok=True)
        n = rnd.randint(1024, 64 * 1024)
        (folder / f"f{files:06d}.txt").write_bytes(text_bytes(rnd, n))
        files += 1
        done += n
    big_dir = root / "big"
    big_dir.mkdir(exist_ok=True)
    left = total - done
    i = 0
    while left > 0:
        n = min(left, rnd.randint(5, 20) * MB)
        with open(big_dir / f"blob{i:02d}.bin", "wb") as f:
            f.write(os.urandom(n // 2))
            f.write(text_bytes(rnd, n - n // 2))
        left -= n
        files += 1
        i += 1
    return {"files": files, "bytes": total}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


PEER_FLAGS = "--xattrs --acls --sparse"


def run_tar_zstd(tree: Path, out: Path, flags: str = PEER_FLAGS) -> tuple[float, float]:
    """(wall s, CPU s of tar + zstd + the shell)."""
    cpu = _children_cpu()
    start = time.perf_counter()
    subprocess.run(f"tar {flags} -cf - -C '{tree}' . | zstd -3 -T1 -q -f -o '{out}'", shell=True, check=True)
    return time.perf_counter() - start, _children_cpu() - cpu


def run_lifeboat(tree: Path, store: Path, keyring: KeyRing, threads: Optional[int] = None) -> tuple[float, float, int]:
    """(wall s, CPU s of this process's threads, stored bytes); ``threads`` = zstd worker threads
    (``None``: the default, automatic -- two workers for the lone tar stream on a multi-core host)."""
    shutil.rmtree(store, ignore_errors=True)
    cpu = time.process_time()
    start = time.perf_counter()
    codec = Codec("zstd", 3) if threads is None else Codec("zstd", 3, threads)
    result = fe.run_files_backup(str(store), keyring, {"tree": str(tree)}, codec=codec, quick_verify=False)
    return time.perf_counter() - start, time.process_time() - cpu, result["stored_bytes"]


def make_sparse_pair(work: Path, gib: int) -> tuple[Path, Path]:
    """``sparse/disk.img``: ``gib`` GiB holding 1 MiB of random data in its middle;
    ``dense/data.bin``: the same 1 MiB as a plain file."""
    data = os.urandom(MB)
    sparse, dense = work / "sparse", work / "dense"
    for folder in (sparse, dense):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    with open(sparse / "disk.img", "wb") as f:
        f.truncate(gib << 30)
        f.seek((gib << 30) // 2)
        f.write(data)
    (dense / "data.bin").write_bytes(data)
    return sparse, dense


def sparse_case(work: Path, gib: int, runs: int, keyring: KeyRing, output: Path) -> dict:
    """Time the backup of a ``gib`` GiB file with 1 MiB of data against that of the 1 MiB alone."""
    sparse, dense = make_sparse_pair(work, gib)
    sparse_times, dense_times, tar_times = [], [], []
    stored = 0
    for _ in range(runs):
        wall, _cpu, stored = run_lifeboat(sparse, work / "store", keyring)
        sparse_times.append(wall)
        dense_times.append(run_lifeboat(dense, work / "store", keyring)[0])
        tar_times.append(run_tar_zstd(sparse, work / "out.tar.zst")[0])
    result = {
        "sparse_file_gib": gib, "data_mib": 1, "runs": runs, "conditions": conditions(),
        "lifeboat_sparse_s": round(statistics.median(sparse_times), 3),
        "lifeboat_1mib_s": round(statistics.median(dense_times), 3),
        "tar_sparse_zstd_s": round(statistics.median(tar_times), 3),
        "lifeboat_sparse_stored_bytes": stored,
        "lifeboat_sparse_all_s": [round(t, 3) for t in sparse_times],
        "lifeboat_1mib_all_s": [round(t, 3) for t in dense_times],
    }
    print(f"sparse case: {gib} GiB file with 1 MiB of data, median of {runs}: Lifeboat {result['lifeboat_sparse_s']} s "
          f"(stores {stored} B), the 1 MiB alone {result['lifeboat_1mib_s']} s, "
          f"tar {PEER_FLAGS} | zstd -3 {result['tar_sparse_zstd_s']} s")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    return result


def conditions() -> dict:
    """Date and load average, for the record of the conditions of a run."""
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=200, help="tree size in MB (default 200)")
    ap.add_argument("--runs", type=int, default=3, help="runs per side; the median is reported")
    ap.add_argument("--workdir", default=None, help="where to build the tree (default: a temp dir)")
    ap.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    ap.add_argument("--threads", type=int, default=None,
                    help="Lifeboat's zstd worker threads (the module option compression_threads; default: unset, "
                         "automatic)")
    ap.add_argument("--plain-tar", action="store_true",
                    help=f"peer without '{PEER_FLAGS}' (as results before 2026-12-03)")
    ap.add_argument("--sparse-case", action="store_true",
                    help="time a sparse file's backup against its data alone (results/files_sparse.json)")
    ap.add_argument("--sparse-gib", type=int, default=10, help="size of the sparse file in GiB (default 10)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lb-bench-files-"))
    tree, store, out = work / "tree", work / "store", work / "out.tar.zst"
    flags = "" if args.plain_tar else PEER_FLAGS
    try:
        if args.sparse_case:
            create_key_file(work / "kek.key") if not (work / "kek.key").exists() else None
            output = args.output if args.output != RESULTS else RESULTS.with_name("files_sparse.json")
            sparse_case(work, args.sparse_gib, args.runs, KeyRing(FileKEK.load(work / "kek.key")), output)
            return 0
        if not tree.exists():
            tree.mkdir(parents=True)
            counts = make_tree(tree, args.size)
        else:
            counts = {"files": sum(len(f) for _, _, f in os.walk(tree)), "bytes": args.size * MB}
        create_key_file(work / "kek.key") if not (work / "kek.key").exists() else None
        keyring = KeyRing(FileKEK.load(work / "kek.key"))
        run_tar_zstd(tree, out, flags)  # warm the page cache
        before = conditions()
        tar_times, lb_times, tar_cpu, lb_cpu, stored = [], [], [], [], 0
        for _ in range(args.runs):
            wall, cpu = run_tar_zstd(tree, out, flags)
            tar_times.append(wall)
            tar_cpu.append(cpu)
            wall, cpu, stored = run_lifeboat(tree, store, keyring, args.threads)
            lb_times.append(wall)
            lb_cpu.append(cpu)
        tar_med, lb_med = statistics.median(tar_times), statistics.median(lb_times)
        paired = statistics.median(t / lb for t, lb in zip(tar_times, lb_times, strict=True))
        result = {
            "size_mb": args.size, "files": counts["files"], "runs": args.runs, "cpus": os.cpu_count(),
            "compression_threads": "automatic" if args.threads is None else args.threads,
            "peer": f"tar {flags} -cf - | zstd -3 -T1".replace("  ", " "),
            "conditions": {"before": before, "after": conditions()},
            "tar_zstd_s": round(tar_med, 3), "lifeboat_s": round(lb_med, 3),
            "tar_zstd_mb_s": round(args.size / tar_med, 1), "lifeboat_mb_s": round(args.size / lb_med, 1),
            "ratio": round(tar_med / lb_med, 3), "median_of_paired_ratios": round(paired, 3), "goal": 0.9,
            "tar_zstd_cpu_s": round(statistics.median(tar_cpu), 3),
            "lifeboat_cpu_s": round(statistics.median(lb_cpu), 3),
            "cpu_ratio": round(statistics.median(tar_cpu) / statistics.median(lb_cpu), 3),
            "tar_zstd_bytes": out.stat().st_size, "lifeboat_stored_bytes": stored,
            "tar_zstd_all_s": [round(t, 3) for t in tar_times], "lifeboat_all_s": [round(t, 3) for t in lb_times],
        }
        print(f"files bench, {args.size} MB, {counts['files']} files, median of {args.runs}, {before['date']}, "
              f"load average {before['loadavg']} -> {result['conditions']['after']['loadavg']}:")
        print(f"  tar | zstd -3 : {tar_med:7.2f} s  {result['tar_zstd_mb_s']:7.1f} MB/s  "
              f"{result['tar_zstd_cpu_s']:6.2f} CPU s  {result['tar_zstd_bytes']} B")
        print(f"  lifeboat      : {lb_med:7.2f} s  {result['lifeboat_mb_s']:7.1f} MB/s  "
              f"{result['lifeboat_cpu_s']:6.2f} CPU s  {stored} B")
        print(f"  ratio (tar/lifeboat time): {result['ratio']:.2f}, median of per-run ratios {paired:.2f}, "
              f"CPU-time ratio {result['cpu_ratio']:.2f}  (goal >= 0.9)")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
