"""Run every benchmark in turn at the sizes the issues name (``make bench``).

Each benchmark writes its own JSON into ``bench/results/`` and prints a table of
medians and ratios against its peer tool; ``docs/performance.md`` quotes them.
Sizes can be scaled down for a quick check with ``BENCH_SCALE`` (e.g. 0.1).
"""

from __future__ import annotations

import os
import subprocess
import sys

SCALE = float(os.environ.get("BENCH_SCALE", "1"))

BENCHES: list[tuple[str, list[str]]] = [
    ("bench.bench_pipeline", ["--size", str(int(2000 * SCALE)),
                              "--rss-sizes", f"{int(100 * SCALE)},{int(2000 * SCALE)}"]),
    ("bench.bench_mysql", ["--size", str(int(1000 * SCALE))]),
    ("bench.bench_pitr", ["--events", str(int(500_000 * SCALE))]),
    ("bench.bench_redis", ["--size", str(int(500 * SCALE))]),
    ("bench.bench_files", ["--size", str(int(1000 * SCALE))]),
    # physical MySQL backups against mariabackup | zstd (issue 20)
    ("bench.bench_physical", ["--size", str(int(1000 * SCALE)), "--pairs", "3"]),
    # full system through the playbooks, on a private lab (ports +7000); one round at 1 GB, the
    # physical MySQL base's restore.yml beside the logical one
    ("bench.bench_system", ["--size", str(int(1000 * SCALE)), "--runs", "1", "--mysql-physical"]),
]


def main() -> int:
    """Run the benchmarks; return non-zero if any of them failed to run."""
    failed = []
    for module, args in BENCHES:
        print(f"== {module} {' '.join(args)}", flush=True)
        if subprocess.run([sys.executable, "-m", module, *args], check=False).returncode != 0:
            failed.append(module)
    if failed:
        print("benchmarks that failed to run: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
