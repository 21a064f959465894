"""Benchmark: the restore preflight's set check (issue 17) at a given size.

    python -m bench.bench_preflight --size 1000 --runs 3

Writes one set into a temporary store (``--size`` MB of SQL-dump-like text as one mysql
artifact, the codec's default zstd settings, a key file and an escrow key), then times
:func:`restore_preflight.check_set` on it ``--runs`` times: the data key unwrapped with each
key, the manifest MAC, and every artifact read back (size, SHA-256, every chunk
authenticated). This is the preflight time that counts in a restore's RTO (peer tools check
nothing, so it is left out of the ratios against them). The page cache is not dropped: the
set was just written, as after a backup on the same host.
Results: a line on stdout and JSON in ``bench/results/preflight.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.ops.restore_preflight import check_set
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from bench.bench_pipeline import sql_blocks

MB = 1 << 20
RESULTS = Path(__file__).resolve().parent / "results" / "preflight.json"


def write_set(root: Path, size_mb: int) -> tuple[str, keys.KeyRing]:
    """A published full set holding ``size_mb`` MB of SQL text as mysql/dump.sql; its id and keys."""
    for name in ("primary.key", "escrow.key"):
        keys.create_key_file(root / name)
    ring = keys.KeyRing.from_options(key_file=root / "primary.key", escrow_key_file=root / "escrow.key")
    store = Store(root / "store", reserve_bytes=0)
    with store.begin_set("full", ["mysql"], ring) as writer:
        with writer.artifact("mysql", "dump.sql", total_bytes=size_mb * MB) as out:
            for block in sql_blocks(size_mb * MB):
                out.write(block)
        return writer.publish()["id"], ring


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000, help="MB of plaintext (default 1000)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lifeboat-bench-preflight-") as tmp:
        root = Path(tmp)
        started = time.monotonic()
        set_id, ring = write_set(root, args.size)
        written_s = time.monotonic() - started
        stored = sum(r["stored_size"] for r in Store(root / "store").open_set(set_id).artifacts())
        times = []
        for _ in range(args.runs):
            report = check_set(str(root / "store"), set_id, ring, ["mysql"])
            assert all(c["ok"] for c in report["checks"]), report["checks"]
            times.append(report["duration_s"])
    median = statistics.median(times)
    result = {"plaintext_mb": args.size, "stored_bytes": stored, "runs": times, "median_s": median,
              "plaintext_mb_per_s": round(args.size / median, 1), "backup_write_s": round(written_s, 2)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"preflight set check, {args.size} MB plaintext ({stored / MB:.0f} MB stored): median {result['median_s']} s "
          f"of {times} ({result['plaintext_mb_per_s']} MB/s)")


if __name__ == "__main__":
    main()
