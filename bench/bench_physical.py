"""Benchmark: physical MySQL backups (issue 20) against the bare tools, and against the logical restore.

    .venv/bin/python -m bench.bench_physical --size 1000 --pairs 3

Generates ``--size`` MB of InnoDB row data in ``lbbench`` (``bench.bench_mysql``'s tables; ``--reuse``
keeps an existing one), then, each figure with the 1-minute load average when it was taken:

* backup, ``--pairs`` paired runs: Lifeboat ``mysql_backup method: physical`` (mariabackup stream ->
  zstd -> AES-256-GCM -> SHA-256 -> store) vs ``mariabackup --backup --stream=mbstream | zstd -3 > file``;
* restore, paired runs: Lifeboat's physical restore (decrypt -> mbstream -x -> prepare -> stop ->
  exchange -> start -> health gate) vs ``zstd -d | mbstream -x``, ``mariabackup --prepare``, stop,
  datadir aside, ``mariabackup --move-back``, start, wait for the port;
* the logical restore of the same database (``lbbench`` into ``lbbench_lb``, side by side) from a
  logical backup, vs the physical restore's median;
* an incremental after ~1 % of the rows changed (0.5 % appended, 0.5 % updated in one primary-key
  range): its stored size relative to the full's, and its time (no goal: 10.11 reads every page);
* peak RSS: Lifeboat's own process (``RUSAGE_SELF``) apart from its children (mariabackup, mbstream).

Ratios are peer time / Lifeboat time (medians). The server is settled before every run; the order
inside a pair alternates. Every kept datadir a run leaves is deleted by the bench. Results go to
``bench/results/physical.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import bench_mysql as bm

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "physical.json"


def child_main(argv: list[str]) -> None:
    """One Lifeboat operation in this (child) process; prints its own and its children's peak RSS as JSON."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import backup as mb
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import physical as mp
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import restore as mr
    from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import get_service

    op, store, key_file = argv[0], argv[1], argv[2]
    ring = keys.KeyRing.from_options(key_file=key_file)
    params = bm.lab_params()
    out: dict = {}
    if op == "backup":
        out = mb.run_backup(store, ring, params, method="physical")
    elif op == "incremental":
        out = mb.run_backup(store, ring, params, method="physical", physical={"incremental": True})
    elif op == "logical-backup":
        out = mb.run_backup(store, ring, params, databases=[bm.DB], include_users=False)
    elif op == "restore":
        import lab

        st = Store(store)
        out = mp.restore_physical(st, st.open_set(argv[3]), ring, params,
                                  service=get_service("lab", "mysql", repo_dir=str(REPO)),
                                  datadir=lab.env()["LAB_MYSQL_DATADIR"])
    elif op == "logical-restore":
        bm.run_sql(params, f"DROP DATABASE IF EXISTS {bm.DB}_lb")
        mr.restore_mysql_from(Store(store).open_set(argv[3]), ring, params, databases=[bm.DB], mode="side_by_side",
                              rename_to={bm.DB: f"{bm.DB}_lb"}, parallel=2)
        bm.run_sql(params, f"DROP DATABASE IF EXISTS {bm.DB}_lb")
    print(json.dumps({"self_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "children_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
                      "set_id": out.get("set_id"), "stored_bytes": out.get("stored_bytes"),
                      "kept": out.get("kept_datadir")}))


def child(*args: str) -> tuple[float, dict]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bench.bench_physical", "--child", *args], cwd=REPO,
                          capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed: {proc.stderr[-3000:]}")
    return elapsed, json.loads(proc.stdout.strip().splitlines()[-1])


def env() -> dict[str, str]:
    import lab

    return lab.env()


def option_file(tmp: Path) -> str:
    """A 0600 option file of the backup user (the peer's credentials, as Lifeboat's)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
    from lab.params import lab_mysql_params

    path = tmp / "peer.cnf"
    path.write_text(my.option_file_text(lab_mysql_params(env(), backup_user=True)))
    path.chmod(0o600)
    return str(path)


def peer_backup(tmp: Path, cnf: str, out: Path) -> float:
    start = time.monotonic()
    datadir = env()["LAB_MYSQL_DATADIR"]
    bm.shell(f"mariabackup --defaults-extra-file={cnf} --backup --stream=mbstream --datadir={datadir}"
             f" --target-dir={tmp} 2>/dev/null | zstd -3 -q -f -o {out}")
    return time.monotonic() - start


def peer_restore(tmp: Path, archive: Path) -> float:
    """zstd -d | mbstream -x, prepare, stop, datadir aside, --move-back, start, wait for the port."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import get_service

    service = get_service("lab", "mysql", repo_dir=str(REPO))
    datadir = Path(env()["LAB_MYSQL_DATADIR"])
    work = datadir.with_name(f"{datadir.name}.peer")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    start = time.monotonic()
    bm.shell(f"zstd -d -q -c {archive} | mbstream -x -C {work}")
    bm.shell(f"mariabackup --prepare --target-dir={work} 2>/dev/null")
    service.stop()
    aside = datadir.with_name(f"{datadir.name}.peer_aside")
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(datadir, aside)
    datadir.mkdir(mode=0o700)
    bm.shell(f"mariabackup --move-back --target-dir={work} --datadir={datadir} 2>/dev/null")
    service.start()
    service.wait_healthy(120)
    elapsed = time.monotonic() - start
    shutil.rmtree(aside, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return elapsed


def settle() -> None:
    bm.settle(bm.lab_params(), bm.server_pid())


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1000, help="dataset size in MB (row data)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    params = bm.lab_params()
    t0 = time.monotonic()
    rows = bm.existing_rows(params) if args.reuse else bm.generate(params, args.size)
    generated_s = round(time.monotonic() - t0, 1)
    settle()
    result: dict = {"size_mb": args.size, "rows": rows, "generate_s": generated_s, "pairs": args.pairs,
                    "backup": [], "restore": [], "logical_restore": [], "cpus": os.cpu_count()}
    datadir = Path(env()["LAB_MYSQL_DATADIR"])
    result["datadir_bytes"] = sum(f.stat().st_size for f in datadir.rglob("*") if f.is_file())
    with tempfile.TemporaryDirectory(prefix="lbbench-phys-", dir=str(REPO / ".lab")) as tmp_name:
        tmp = Path(tmp_name)
        key = tmp / "kek.key"
        from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys

        keys.create_key_file(key)
        cnf = option_file(tmp)
        store = tmp / "store"
        archive = tmp / "peer.mbstream.zst"
        full_set = None
        for i in range(args.pairs):
            row: dict = {"load_before": bm.load_average()}
            for side in (["lifeboat", "peer"] if i % 2 == 0 else ["peer", "lifeboat"]):
                settle()
                if side == "lifeboat":
                    row["lifeboat_s"], info = child("backup", str(store), str(key))
                    row.update(lifeboat_self_rss=info["self_rss"], mariabackup_rss=info["children_rss"],
                               stored_bytes=info["stored_bytes"])
                    if full_set is not None:
                        shutil.rmtree(store / full_set, ignore_errors=True)
                    full_set = info["set_id"]
                else:
                    peer_dir = tmp / "peer-target"
                    peer_dir.mkdir(exist_ok=True)
                    row["peer_s"] = round(peer_backup(peer_dir, cnf, archive), 3)
                    row["peer_bytes"] = archive.stat().st_size
            row["load_after"] = bm.load_average()
            row["ratio"] = round(row["peer_s"] / row["lifeboat_s"], 2)
            result["backup"].append(row)
            print("backup", row, flush=True)
        for i in range(args.pairs):
            row = {"load_before": bm.load_average()}
            for side in (["lifeboat", "peer"] if i % 2 == 0 else ["peer", "lifeboat"]):
                settle()
                if side == "lifeboat":
                    row["lifeboat_s"], info = child("restore", str(store), str(key), full_set)
                    row.update(lifeboat_self_rss=info["self_rss"], children_rss=info["children_rss"])
                    if info.get("kept"):
                        shutil.rmtree(info["kept"], ignore_errors=True)
                else:
                    row["peer_s"] = round(peer_restore(tmp, archive), 3)
            row["load_after"] = bm.load_average()
            row["ratio"] = round(row["peer_s"] / row["lifeboat_s"], 2)
            result["restore"].append(row)
            print("restore", row, flush=True)
        # logical restore of the same data
        settle()
        _s, logical = child("logical-backup", str(store), str(key))
        for _ in range(max(1, args.pairs - 1)):
            settle()
            load = bm.load_average()
            seconds, info = child("logical-restore", str(store), str(key), logical["set_id"])
            result["logical_restore"].append({"seconds": round(seconds, 3), "load_before": load,
                                              "self_rss": info["self_rss"]})
            print("logical restore", result["logical_restore"][-1], flush=True)
        # an incremental after ~1 % changed
        settle()
        _s, full = child("backup", str(store), str(key))
        n = rows["orders"]
        changed = max(1, n // 200)
        bm.run_sql(params, f"INSERT INTO {bm.DB}.orders (customer_id, status, amount, created, note) SELECT seq, 'new',"
                           f" 1, NOW(), 'appended' FROM {bm.DB}.seq_1_to_{changed}",
                   f"UPDATE {bm.DB}.orders SET amount = amount + 1 WHERE id BETWEEN 1 AND {changed}")
        for name, change in (("customers", "balance = balance + 1"), ("events", "kind = kind + 1")):
            bm.run_sql(params, f"UPDATE {bm.DB}.{name} SET {change} WHERE id BETWEEN 1 AND {max(1, rows[name] // 100)}")
        settle()
        load = bm.load_average()
        seconds, incr = child("incremental", str(store), str(key))
        result["incremental"] = {"seconds": round(seconds, 3), "stored_bytes": incr["stored_bytes"],
                                 "full_stored_bytes": full["stored_bytes"],
                                 "share_of_full": round(incr["stored_bytes"] / full["stored_bytes"], 4),
                                 "load_before": load}
        print("incremental", result["incremental"], flush=True)
    backup_l = [r["lifeboat_s"] for r in result["backup"]]
    backup_p = [r["peer_s"] for r in result["backup"]]
    restore_l = [r["lifeboat_s"] for r in result["restore"]]
    restore_p = [r["peer_s"] for r in result["restore"]]
    logical = [r["seconds"] for r in result["logical_restore"]]
    result["summary"] = {
        "backup_lifeboat_median_s": median(backup_l), "backup_peer_median_s": median(backup_p),
        "backup_ratio_median": median([r["ratio"] for r in result["backup"]]),
        "restore_lifeboat_median_s": median(restore_l), "restore_peer_median_s": median(restore_p),
        "restore_ratio_median": median([r["ratio"] for r in result["restore"]]),
        "logical_restore_median_s": median(logical),
        "physical_over_logical_restore": round(median(restore_l) / median(logical), 3),
        "incremental_share_of_full": result["incremental"]["share_of_full"],
        "lifeboat_peak_self_rss_mb": round(max(r["lifeboat_self_rss"] for r in result["backup"] + result["restore"])
                                           / 1e6, 1),
        "load_average_range": [min(r["load_before"] for r in result["backup"] + result["restore"]),
                               max(r["load_after"] for r in result["backup"] + result["restore"])],
        "total_s": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(result["summary"], indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
    else:
        main()
