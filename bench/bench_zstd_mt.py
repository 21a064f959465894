"""Benchmark: the codec's zstd settings, single- and multi-threaded, on the same input.

    python -m bench.bench_zstd_mt --size 500 --runs 3

Input (generated once into memory, in 1 MiB blocks as the pipeline hands them on): a tar
like the files benchmark's tree (text files and half-random blobs, ``--kind files``) or
SQL-dump-like text (``--kind sql``). Compared, median of ``--runs`` (level 3 each):

* ``single``: zstd's streaming compressor in the calling thread (``threads=0``);
* ``mt1``: one zstd worker, :data:`compression.ZSTD_MT_JOB_SIZE` jobs, no overlap -- the
  codec's default (automatic threads);
* ``mt2``: two such workers -- what a files backup's lone tar stream gets;
* ``mt2-4MiB-overlap-default``: two workers, 4 MiB jobs and zstd's default job overlap (the
  codec's earlier setting for ``threads > 0``).

For each: wall seconds, CPU seconds (all threads of the process) and compressed bytes. It
shows what the workers cost in CPU and size, the reason for the codec's choice of small jobs
without overlap.
Results: a table on stdout and JSON in ``bench/results/zstd_mt.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Optional

import zstandard

from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import (
    ZSTD_MT_JOB_SIZE,
    ZSTD_MT_OVERLAP_LOG,
)
from bench.bench_files import text_bytes
from bench.bench_pipeline import sql_blocks

MB = 1 << 20
RESULTS = Path(__file__).resolve().parent / "results" / "zstd_mt.json"
SETTINGS: dict[str, Optional[dict[str, Any]]] = {
    "single": None,
    "mt1": {"threads": 1, "job_size": ZSTD_MT_JOB_SIZE, "overlap_log": ZSTD_MT_OVERLAP_LOG},
    "mt2": {"threads": 2, "job_size": ZSTD_MT_JOB_SIZE, "overlap_log": ZSTD_MT_OVERLAP_LOG},
    "mt2-4MiB-overlap-default": {"threads": 2, "job_size": 4 * MB},
}


def files_like(total: int, seed: int = 7) -> list[bytes]:
    """~``total`` bytes: 30 % small text files, the rest half-random blobs, as 1 MiB blocks."""
    rnd = random.Random(seed)
    data = bytearray()
    while len(data) < total * 0.3:
        data += text_bytes(rnd, rnd.randint(1024, 64 * 1024))
    while len(data) < total:
        n = rnd.randint(5, 20) * MB
        data += os.urandom(n // 2) + text_bytes(rnd, n - n // 2)
    return [bytes(data[i:i + MB]) for i in range(0, total, MB)]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def compress(blocks: list[bytes], params: Optional[dict[str, Any]]) -> tuple[float, float, int]:
    """(wall s, CPU s, compressed bytes) of one level-3 stream over ``blocks``."""
    if params is None:
        cctx = zstandard.ZstdCompressor(level=3)
    else:
        cctx = zstandard.ZstdCompressor(compression_params=zstandard.ZstdCompressionParameters.from_level(3, **params))
    cpu, start = cpu_s(), time.perf_counter()
    obj = cctx.compressobj()
    size = sum(len(obj.compress(b)) for b in blocks) + len(obj.flush())
    return time.perf_counter() - start, cpu_s() - cpu, size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=500, help="input size in MB (default 500)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kind", choices=["files", "sql"], default="files")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    total = args.size * MB
    blocks = files_like(total) if args.kind == "files" else list(sql_blocks(total))
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in SETTINGS}
    load = [round(x, 2) for x in os.getloadavg()]
    for _ in range(args.runs):
        for name, params in SETTINGS.items():  # interleaved: each setting sees the same machine
            runs[name].append(compress(blocks, params))
    result: dict[str, Any] = {"size_mb": args.size, "kind": args.kind, "runs": args.runs, "cpus": os.cpu_count(),
                              "load_average_1m_before_after": [load[0], round(os.getloadavg()[0], 2)],
                              "zstandard": zstandard.__version__, "backend": zstandard.backend, "settings": {}}
    print(f"zstd level 3 on {args.size} MB of {args.kind}-like input, median of {args.runs}:")
    for name, values in runs.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        size = values[-1][2]
        result["settings"][name] = {"params": SETTINGS[name], "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                                    "bytes": size, "all_wall_s": [round(v[0], 3) for v in values]}
        print(f"  {name:20s} wall {wall:6.2f} s  CPU {cpu:6.2f} s  {size} B")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
