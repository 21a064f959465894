"""Benchmark: the artifact pipeline against the zstd CLI, side by side in one run.

    python -m bench.bench_pipeline --size 300 --runs 3 [--rss-sizes 100,2000]

Input: generated SQL-dump-like text (INSERT statements with random-ish ids, names,
e-mails, dates, amounts; compresses like a real dump, ~3.3x with zstd -3), written once
to a work file. Each measurement runs in its own child process (so ``ru_maxrss`` is that
run's peak). Compared, median of ``--runs``:

* compress: ``zstd -3 -T1`` vs pipeline (zstd 3 + AES-256-GCM + SHA-256, threads=0), and
  ``zstd -3 -T2`` vs pipeline threads=2;
* decompress: ``zstd -d`` vs pipeline reader (decrypt + decompress + verify hashes);
* peak RSS (VmHWM) of the pipeline writer for each of ``--rss-sizes`` MB of input (generated
  in the child from an 8 MiB pool, which is included; no input file), which must stay flat
  and < 100 MB.

Pipeline times are measured inside the child around the work (interpreter start-up
excluded); zstd times are the wall time of the CLI process. Each run measures the CLI and
the pipeline back to back, so besides the ratio of the medians the *median of the per-run
ratios* is reported (the two sides of a pair see about the same load from other work on a
shared machine). CPU seconds (user+sys, all threads) are reported too: on a loaded machine
they show the work done, independently of how much of the CPU the run was given. The load
average before and after the run is recorded. Results: a table on stdout and JSON in
``bench/results/pipeline.json``.
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

from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec
from ansible_collections.lifeboat.dr.plugins.module_utils.format.pipeline import (
    open_artifact_reader,
    open_artifact_writer,
)

MB = 1 << 20
KEY = b"bench-key-not-secret-32-bytes!!!"
SET_ID = "full_20250101T000000Z_bench0"
ARTIFACT = "mysql/dump.sql"
RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.json"

FIRST = ["Anna", "Bruno", "Chen", "Dara", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lena", "Mateo",
         "Nadia", "Omar", "Petra", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Vera", "Wen", "Xavier", "Yara", "Zoe"]
LAST = ["Novak", "Silva", "Müller", "Okafor", "Tanaka", "Kowalski", "García", "Ivanova", "Haddad", "Lindqvist",
        "O'Brien", "Nguyen", "Rossi", "Dubois", "Kaya", "Jensen", "Papadopoulos", "Horvat", "Moreau", "Singh"]
CITIES = ["Zagreb", "Lisbon", "Osaka", "Lagos", "Lyon", "Kraków", "Toronto", "Pune", "Oslo", "Quito", "Cairo"]
STATUS = ["new", "paid", "shipped", "cancelled", "refunded", "on_hold"]


def sql_blocks(total_bytes: int, seed: int = 42, block: int = MB):
    """Yield ~``block``-byte pieces of a deterministic SQL dump, ``total_bytes`` in all."""
    rnd = random.Random(seed)
    produced = 0
    table = 0
    while produced < total_bytes:
        lines = []
        size = 0
        if rnd.random() < 0.02:
            table += 1
            lines.append(f"\n--\n-- Dumping data for table `orders_{table}`\n--\n\n"
                         f"LOCK TABLES `orders_{table}` WRITE;\n"
                         f"/*!40000 ALTER TABLE `orders_{table}` DISABLE KEYS */;\n")
        while size < block:
            rows = []
            for _ in range(rnd.randint(20, 60)):
                first, last = rnd.choice(FIRST), rnd.choice(LAST)
                rows.append(
                    f"({rnd.randint(1, 9_999_999)},'{first} {last}','{first.lower()}.{last.lower()}"
                    f"{rnd.randint(1, 999)}@example.org','{rnd.choice(CITIES)}','20{rnd.randint(10, 25)}-"
                    f"{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d} {rnd.randint(0, 23):02d}:"
                    f"{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}',{rnd.randint(0, 99999)}."
                    f"{rnd.randint(0, 99):02d},'{rnd.choice(STATUS)}',"
                    f"{'NULL' if rnd.random() < 0.3 else rnd.randint(1, 500)})")
            line = f"INSERT INTO `orders_{table}` VALUES " + ",".join(rows) + ";\n"
            lines.append(line)
            size += len(line)
        data = "".join(lines).encode("utf-8")[: total_bytes - produced]
        produced += len(data)
        yield data


POOL_MB = 32
RSS_POOL_MB = 8  # smaller pool in the RSS child: it counts in that process's peak


def peak_rss_kb() -> int:
    """This process's peak RSS in KiB: VmHWM (Linux; ru_maxrss would include the forking
    parent's peak, which Linux carries over exec) or ru_maxrss elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def dump_stream(total_bytes: int, seed: int = 42, pool_mb: int = POOL_MB):
    """Yield 1 MiB pieces of SQL text, ``total_bytes`` in all, fast: after a ``pool_mb`` pool of
    unique generated text, pieces are cut at random offsets from the pool. Repeats are far
    apart (beyond zstd -3's 2 MiB window), so the data compresses like fresh text."""
    pieces = []
    produced = 0
    for piece in sql_blocks(min(total_bytes, pool_mb * MB), seed=seed):
        pieces.append(piece)
        produced += len(piece)
        yield piece
    rnd = random.Random(seed + 1)
    view = memoryview(b"".join(pieces))
    del pieces
    while produced < total_bytes:
        size = min(MB, total_bytes - produced)
        start = rnd.randrange(0, len(view) - size + 1)
        produced += size
        yield view[start:start + size].tobytes()


def make_input(path: Path, size_mb: int) -> None:
    if path.exists() and path.stat().st_size == size_mb * MB:
        return
    with open(path, "wb") as out:
        for piece in dump_stream(size_mb * MB):
            out.write(piece)


# -- children ------------------------------------------------------------------------------
def child_write(src: Path, dest: Path, threads: int, record_out: Path) -> dict:
    cpu = time.process_time()
    start = time.perf_counter()
    with open(src, "rb", buffering=0) as inp, open_artifact_writer(
            dest, data_key=KEY, set_id=SET_ID, artifact_path=ARTIFACT, codec=Codec("zstd", 3, threads)) as writer:
        while piece := inp.read(MB):
            writer.write(piece)
    record = writer.record
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    record_out.write_text(json.dumps(record))
    return {"elapsed_s": elapsed, "cpu_s": cpu, "stored_size": record["stored_size"]}


def child_read(src: Path, record_in: Path) -> dict:
    record = json.loads(record_in.read_text())
    cpu = time.process_time()
    start = time.perf_counter()
    with open_artifact_reader(src, data_key=KEY, set_id=SET_ID, artifact_path=ARTIFACT, record=record) as reader, \
            open(os.devnull, "wb") as sink:
        while piece := reader.read1(MB):
            sink.write(piece)
        assert reader.verified
    return {"elapsed_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}


def child_rss(size_mb: int, dest: Path, threads: int) -> dict:
    start = time.perf_counter()
    with open_artifact_writer(dest, data_key=KEY, set_id=SET_ID, artifact_path=ARTIFACT,
                              codec=Codec("zstd", 3, threads)) as writer:
        for piece in dump_stream(size_mb * MB, seed=size_mb, pool_mb=RSS_POOL_MB):
            writer.write(piece)
    dest.unlink()
    return {"elapsed_s": time.perf_counter() - start}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.bench_pipeline", "--child", *args], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_cli(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+sys) of one CLI run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def machine() -> dict:
    """Date, CPUs and load average, for the record of the conditions of a run."""
    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(), "cpu_model": model,
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


# -- parent --------------------------------------------------------------------------------
def bench(size_mb: int, runs: int, rss_sizes: list[int], work: Path) -> dict:
    if not shutil.which("zstd"):
        raise SystemExit("the zstd CLI is needed (apt-get install zstd)")
    src = work / f"dump-{size_mb}MB.sql"
    make_input(src, size_mb)
    nbytes = src.stat().st_size
    keys = ("zstd_T1", "pipe_T0", "zstd_T2", "pipe_T2", "zstd_d", "pipe_read")
    times: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    sizes = {}
    peaks: dict[str, int] = {}
    conditions = {"before": machine()}
    for _ in range(runs):
        for name, threads, cli in (("T1", 0, "-T1"), ("T2", 2, "-T2")):
            zst = work / "out.zst"
            wall, used = time_cli(["zstd", "-3", cli, "-q", "-f", str(src), "-o", str(zst)])
            times[f"zstd_{name}"].append(wall)
            cpu[f"zstd_{name}"].append(used)
            sizes["zstd"] = zst.stat().st_size
            art = work / f"out-{name}.lba"
            art.unlink(missing_ok=True)
            res = run_child("write", str(src), str(art), str(threads), str(work / f"record-{name}.json"))
            times[f"pipe_T{threads}"].append(res["elapsed_s"])
            cpu[f"pipe_T{threads}"].append(res["cpu_s"])
            peaks[f"pipe_T{threads}"] = max(peaks.get(f"pipe_T{threads}", 0), res["maxrss_kb"])
            sizes["pipeline"] = res["stored_size"]
        wall, used = time_cli(["zstd", "-d", "-q", "-f", str(work / "out.zst"), "-o", os.devnull])
        times["zstd_d"].append(wall)
        cpu["zstd_d"].append(used)
        res = run_child("read", str(work / "out-T1.lba"), str(work / "record-T1.json"))
        times["pipe_read"].append(res["elapsed_s"])
        cpu["pipe_read"].append(res["cpu_s"])
        peaks["pipe_read"] = max(peaks.get("pipe_read", 0), res["maxrss_kb"])
    conditions["after"] = machine()
    med = {k: statistics.median(v) for k, v in times.items()}
    pairs = {"compress_T1": ("zstd_T1", "pipe_T0"), "compress_T2": ("zstd_T2", "pipe_T2"),
             "decompress": ("zstd_d", "pipe_read")}
    rss = {}
    for mb in rss_sizes:
        res = run_child("rss", str(mb), str(work / "rss.lba"), "0")
        rss[mb] = {"maxrss_mb": round(res["maxrss_kb"] / 1024, 1), "elapsed_s": round(res["elapsed_s"], 2)}
    mbps = {k: round(nbytes / MB / v, 1) for k, v in med.items()}
    return {
        "input_mb": round(nbytes / MB, 1), "runs": runs, "conditions": conditions,
        "compressed_mb": {k: round(v / MB, 1) for k, v in sizes.items()},
        "median_s": {k: round(v, 3) for k, v in med.items()}, "throughput_mb_s": mbps,
        "all_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "median_cpu_s": {k: round(statistics.median(v), 3) for k, v in cpu.items()},
        "median_of_paired_ratios": {
            name: round(statistics.median(c / p for c, p in zip(times[cli], times[pipe], strict=True)), 2)
            for name, (cli, pipe) in pairs.items()},
        "cpu_ratios": {name: round(statistics.median(cpu[cli]) / statistics.median(cpu[pipe]), 2)
                       for name, (cli, pipe) in pairs.items()},
        "ratios": {
            "compress_T1 (pipeline threads=0 / zstd -3 -T1)": round(med["zstd_T1"] / med["pipe_T0"], 2),
            "compress_T2 (pipeline threads=2 / zstd -3 -T2)": round(med["zstd_T2"] / med["pipe_T2"], 2),
            "decompress (pipeline read+verify / zstd -d)": round(med["zstd_d"] / med["pipe_read"], 2),
        },
        "peak_rss_by_input_mb": rss,
        "peak_rss_mb_at_input_size": {k: round(v / 1024, 1) for k, v in peaks.items()},
        "goals": {"throughput_ratio_min": 0.8, "rss_max_mb": 100},
    }


def print_table(result: dict) -> None:
    cond = result["conditions"]
    print(f"input {result['input_mb']} MB of SQL-dump-like text, median of {result['runs']} runs, "
          f"{cond['before']['date']}, load average {cond['before']['loadavg']} -> {cond['after']['loadavg']}")
    print(f"{'step':<12}{'seconds':>10}{'MB/s':>10}{'CPU s':>10}")
    for key, secs in result["median_s"].items():
        print(f"{key:<12}{secs:>10.3f}{result['throughput_mb_s'][key]:>10.1f}{result['median_cpu_s'][key]:>10.3f}")
    print("ratios (>= 0.8 is the goal):")
    for key, ratio in result["ratios"].items():
        print(f"  {key:<52}{ratio:>6.2f}")
    print("median of per-run ratios: " + ", ".join(f"{k} {v}" for k, v in result["median_of_paired_ratios"].items()))
    print("CPU-time ratios (CLI / pipeline): " + ", ".join(f"{k} {v}" for k, v in result["cpu_ratios"].items()))
    peaks = result["peak_rss_mb_at_input_size"]
    print("peak RSS at the input size: " + ", ".join(f"{k} {v} MB" for k, v in peaks.items()))
    print("peak RSS of the writer process (< 100 MB and flat is the goal):")
    for mb, row in result["peak_rss_by_input_mb"].items():
        print(f"  {mb:>6} MB input: {row['maxrss_mb']:>6.1f} MB RSS ({row['elapsed_s']} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=300, help="input size in MB (default 300)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--rss-sizes", default="100,2000", help="comma-separated input sizes (MB) for the RSS check")
    parser.add_argument("--workdir", type=Path, help="where input/output files go (default: a temp dir)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, *rest = args.child
        if mode == "write":
            res = child_write(Path(rest[0]), Path(rest[1]), int(rest[2]), Path(rest[3]))
        elif mode == "read":
            res = child_read(Path(rest[0]), Path(rest[1]))
        else:
            res = child_rss(int(rest[0]), Path(rest[1]), int(rest[2]))
        res["maxrss_kb"] = peak_rss_kb()
        print(json.dumps(res))
        return 0
    rss_sizes = [int(x) for x in args.rss_sizes.split(",") if x.strip()]
    with tempfile.TemporaryDirectory(prefix="lifeboat-bench-", dir=args.workdir) as tmp:
        result = bench(args.size, args.runs, rss_sizes, Path(tmp))
    print_table(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
