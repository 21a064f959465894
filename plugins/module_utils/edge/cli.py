# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``lifeboat``: the operator's command line for a backup store.

Commands (``--store`` defaults to the environment variable ``LIFEBOAT_STORE``;
``--json`` prints machine-readable JSON instead of tables)::

    lifeboat list [--type T] [--partial]        sets with status, size, age, verification
    lifeboat show SET_ID                        manifest summary of one set
    lifeboat verify SET_ID --quick              authenticate every artifact (needs a key)
    lifeboat jobs [--limit 10] [--kind K]       job history
    lifeboat health [--html FILE] [--metrics FILE]   exit 0 ok, 1 warning, 2 critical
    lifeboat schedules                          installed schedules and their next runs
    lifeboat recovery-points [--identity ID]    MySQL point-in-time windows and gaps
    lifeboat audit verify                       check the audit trail's hash chain
    lifeboat prune [--dry-run]                  apply the default retention policy
    lifeboat abort SET_ID [--reason R] [--force]   remove an open (partial) set left by a dead run
                                                and end its lease (--force: even while it may be alive)
    lifeboat key create FILE                    new 32-byte key file (0600); prints its key id
    lifeboat key id FILE                        the key id of a key file
    lifeboat key rotate --key-file OLD --new-key-file NEW [--escrow-key-file E] [--keep-old] [--dry-run]
                                                rewrap every set's data key under NEW (no data rewritten)
    lifeboat decrypt ...                        the break-glass reader (lifeboat-decrypt)

Keys for ``verify``: ``--key-file`` / ``--escrow-key-file`` or ``LIFEBOAT_KEY_FILE``.
Exit status: 0 success; 1 failure (health: warning); 2 usage error (health: critical);
3 key problem; 4 integrity failure (a verification that failed); 5 no usable set.
Nothing printed contains key material.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit, jobs
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import load_manifest
from ansible_collections.lifeboat.dr.plugins.module_utils.store.runstatus import describe_run, read_run_statuses
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    LifeboatError,
    LockHeld,
    NotFound,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import human_bytes, progress_bar

PROG = "lifeboat"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_KEY, EXIT_INTEGRITY, EXIT_MANIFEST = 0, 1, 2, 3, 4, 5


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(f"{PROG}: {text}\n")


def _json(obj: Any) -> None:
    _out(json.dumps(obj, indent=2, sort_keys=True, default=str))


def format_age(seconds: Optional[float]) -> str:
    """``3d 4h`` / ``2h 5m`` / ``12m`` / ``42s``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d {s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60}m"
    if s >= 60:
        return f"{s // 60}m"
    return f"{s}s"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain text table with left-aligned columns."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _store(args: argparse.Namespace) -> Store:
    root = args.store or os.environ.get("LIFEBOAT_STORE")
    if not root:
        raise ConfigError("no store given", hint="pass --store PATH or set LIFEBOAT_STORE")
    if not Path(root).is_dir():
        raise ConfigError(f"backup store {root} does not exist or is not a folder", hint="check --store")
    return Store(root)


# --------------------------------------------------------------------------- commands
def cmd_list(args: argparse.Namespace) -> int:
    infos = _store(args).list_sets(include_partial=args.partial)
    if args.type:
        infos = [i for i in infos if i.type in args.type]
    if args.json:
        _json([i.to_dict() for i in infos])
        return EXIT_OK
    rows = [[i.set_id, i.type, ",".join(i.components), i.status,
             i.verified_mode or ("-" if i.status != "failed" else "FAILED"), human_bytes(i.stored_bytes),
             format_age(i.age_s)] for i in infos]
    headers = ["SET", "TYPE", "COMPONENTS", "STATUS", "VERIFIED", "SIZE", "AGE"]
    chains = [physical_chain_label(i) for i in infos]
    if any(chains):  # physical MySQL sets: the chain each belongs to
        headers.append("CHAIN")
        for row, label in zip(rows, chains, strict=True):
            row.append(label or "-")
    _out(table(headers, rows))
    _out(f"{len(infos)} set(s)")
    return EXIT_OK


def physical_chain_label(info: Any) -> Optional[str]:
    """``physical full`` / ``physical incr 2 <- <parent>`` for a physical MySQL set (its manifest), else None."""
    if info.status == "partial" or "mysql" not in info.components:
        return None
    try:
        meta = (load_manifest(info.path).get("component_metadata") or {}).get("mysql") or {}
    except LifeboatError:
        return None
    if meta.get("method") != "physical":
        return None
    if meta.get("backup_type") != "incremental":
        return "physical full"
    return f"physical incr {len(meta.get('chain') or [])} <- {meta.get('parent')}"


def cmd_show(args: argparse.Namespace) -> int:
    store = _store(args)
    bset = store.open_set(args.set_id)
    m = bset.manifest
    records = store.verifications(args.set_id)
    summary = {
        "id": m["id"], "type": m["type"], "parent": m.get("parent"), "components": m["components"],
        "start_time": m["start_time"], "end_time": m["end_time"], "created_on": m.get("created_on"),
        "tool": m.get("tool"), "totals": m.get("totals"),
        "key_ids": [w.get("key_id") for w in (m.get("encryption") or {}).get("data_key_wraps", [])],
        "sources": m.get("sources"), "component_metadata": m.get("component_metadata"),
        "artifacts": [{"path": a["path"], "stored_size": a["stored_size"], "plaintext_size": a["plaintext_size"],
                       "compression": (a.get("compression") or {}).get("algorithm")} for a in m["artifacts"]],
        "files": [f["path"] for f in m.get("files", [])],
        "verifications": [{"checked_at": r.get("checked_at"), "mode": r.get("mode"), "ok": r.get("ok"),
                           "trigger": r.get("trigger")} for r in records],
        "path": str(bset.path),
    }
    if args.json:
        _json(summary)
        return EXIT_OK
    for key in ("id", "type", "parent", "start_time", "end_time", "created_on", "path"):
        _out(f"{key:12} {summary[key]}")
    _out(f"{'components':12} {', '.join(summary['components'])}")
    _out(f"{'key ids':12} {', '.join(str(k) for k in summary['key_ids'])}")
    mysql = (summary["component_metadata"] or {}).get("mysql") or {}
    if mysql.get("method") == "physical":
        chain = list(mysql.get("chain") or []) + [summary["id"]]
        _out(f"{'mysql':12} physical {mysql.get('backup_type')}, LSN {mysql.get('from_lsn')}..{mysql.get('to_lsn')}")
        _out(f"{'chain':12} {' -> '.join(chain)}")
    totals = summary["totals"] or {}
    _out(f"{'size':12} {human_bytes(totals.get('stored_bytes', 0))} stored, "
         f"{human_bytes(totals.get('plaintext_bytes', 0))} plaintext")
    _out("")
    _out(table(["ARTIFACT", "STORED", "PLAINTEXT", "COMPRESSION"],
               [[a["path"], human_bytes(a["stored_size"]), human_bytes(a["plaintext_size"]), a["compression"]]
                for a in summary["artifacts"]]))
    if summary["verifications"]:
        _out("")
        _out(table(["VERIFIED AT", "MODE", "RESULT", "TRIGGER"],
                   [[v["checked_at"], v["mode"], "passed" if v["ok"] else "FAILED", v["trigger"] or "-"]
                    for v in summary["verifications"]]))
    return EXIT_OK


def _keyring(args: argparse.Namespace) -> Any:
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    key_file = args.key_file or os.environ.get("LIFEBOAT_KEY_FILE")
    escrow = args.escrow_key_file or os.environ.get("LIFEBOAT_ESCROW_KEY_FILE")
    if not key_file and not escrow:
        raise ConfigError("no key given", hint="pass --key-file / --escrow-key-file or set LIFEBOAT_KEY_FILE")
    if not key_file:
        key_file, escrow = escrow, None
    return KeyRing.from_options(key_file=key_file, escrow_key_file=escrow)


def cmd_verify(args: argparse.Namespace) -> int:
    if not args.quick:
        raise ConfigError("only quick verification runs from the command line",
                          hint="use --quick; full verification (restore to scratch) runs from the playbooks")
    store = _store(args)
    ring = _keyring(args)
    bset = store.open_set(args.set_id)
    progress = None if args.json or not sys.stderr.isatty() else progress_bar()
    with jobs.job(store, "verify", args.set_id, backup_id=args.set_id, mode="quick") as handle:
        report = bset.quick_verify(ring, progress=progress)
        report.setdefault("trigger", "cli")
        store.record_verification(args.set_id, report)
        handle.update(ok=bool(report.get("ok")))
    if args.json:
        _json(report)
    else:
        for entry in report.get("artifacts", []):
            _out(f"{'ok    ' if entry.get('ok') else 'FAILED'} {entry.get('path')}"
                 f"{'  ' + str(entry.get('error')) if entry.get('error') else ''}")
        if report.get("error"):
            _out(f"error: {report['error']}")
        _out(f"set {args.set_id}: quick verification {'passed' if report.get('ok') else 'FAILED'}")
    return EXIT_OK if report.get("ok") else EXIT_INTEGRITY


def _running_rows(runs: list[dict[str, Any]]) -> list[list[Any]]:
    return [[r.get("component"), r.get("kind"), r.get("liveness"), r.get("host"), r.get("pid"), r.get("started"),
             human_bytes(int(r.get("done_bytes") or 0)),
             human_bytes(int(r["total_bytes"])) if r.get("total_bytes") else "?",
             f"{human_bytes(int(r.get('rate_bps') or 0))}/s",
             "-" if r.get("eta_s") is None else format_age(r["eta_s"]), r.get("step") or "-"] for r in runs]


def _bar_line(run: dict[str, Any], width: int = 24) -> str:
    total = run.get("total_bytes")
    if not total:
        return describe_run(run)
    frac = min(1.0, int(run.get("done_bytes") or 0) / int(total))
    return f"[{'#' * int(frac * width)}{'-' * (width - int(frac * width))}] {describe_run(run)}"


def follow_runs(store: Store, interval_s: float, stream: Any = None, max_rounds: int = 0) -> int:
    """Refresh the runs in progress every ``interval_s`` until none is running: redrawn in place
    as bars on a terminal, one plain line per run and refresh when piped. Returns ``EXIT_OK``."""
    import time

    out = stream or sys.stdout
    tty = out.isatty()
    drawn, rounds = 0, 0
    while True:
        runs = read_run_statuses(store.root)
        active = [r for r in runs if r.get("liveness") in ("running", "stalled", "unknown")]
        lines = [_bar_line(r) if tty else f"{time.strftime('%H:%M:%S')} {describe_run(r)}" for r in runs]
        if tty and drawn:
            out.write(f"\x1b[{drawn}F\x1b[J")
        if not runs and not drawn:
            lines = ["no run in progress"]
        out.write("".join(line + "\n" for line in lines))
        out.flush()
        drawn = len(lines)
        rounds += 1
        if not active or (max_rounds and rounds >= max_rounds):
            return EXIT_OK
        time.sleep(interval_s)


def cmd_running(args: argparse.Namespace) -> int:
    """``lifeboat jobs --running`` / ``lifeboat status``: the runs in progress (their status files)."""
    store = _store(args)
    if getattr(args, "follow", False):
        return follow_runs(store, args.interval)
    runs = read_run_statuses(store.root)
    if args.json:
        _json(runs)
        return EXIT_OK
    if not runs:
        _out("no run in progress")
        return EXIT_OK
    _out(table(["COMPONENT", "KIND", "STATE", "HOST", "PID", "STARTED", "DONE", "TOTAL", "RATE", "ETA", "STEP"],
               _running_rows(runs)))
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    if getattr(args, "running", False) or getattr(args, "follow", False):
        return cmd_running(args)
    records = jobs.read_jobs(_store(args), limit=args.limit, kind=args.kind)
    if args.json:
        _json(records)
        return EXIT_OK
    rows = [[j.get("start"), j.get("kind"), j.get("result"), format_age(j.get("duration_s")), j.get("backup_id") or "-",
             human_bytes(sum(v for v in (j.get("sizes") or {}).values() if isinstance(v, int))), j.get("host"),
             (j.get("error") or "")[:60]] for j in records]
    _out(table(["START", "KIND", "RESULT", "TOOK", "BACKUP", "SIZE", "HOST", "ERROR"], rows))
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    from ansible_collections.lifeboat.dr.plugins.module_utils.ops import health, metrics
    thresholds = health.Thresholds(max_backup_age_s=args.max_age_hours * 3600.0, progress_stall_s=args.stall_after_s)
    report = health.build_report(_store(args), thresholds)
    if args.html:
        Path(args.html).write_text(health.render_html(report), encoding="utf-8")
    if args.metrics:
        metrics.write_textfile(args.metrics, metrics.render(report))
    if args.json:
        _json(report)
    else:
        _out(f"status: {report['status'].upper()}")
        dn = report["disaster_now"]
        _out(f"if disaster struck now: RTO {health.format_seconds(dn['rto_s'])}, "
             f"worst-case RPO {health.format_seconds(dn['rpo_s'])}")
        rows = [[v["component"], (v["latest"] or {}).get("set_id", "none"), format_age(v["age_s"]),
                 "-" if v["verification"] is None else ("passed" if v["verification"]["ok"] else "FAILED"),
                 "-" if v["success_rate"] is None else f"{v['success_rate']:.0%}",
                 health.format_seconds(v["measured_rto_s"]), health.format_seconds(v["rpo_s"])]
                for v in report["components"]]
        _out(table(["COMPONENT", "NEWEST", "AGE", "VERIFIED", "SUCCESS", "RESTORE", "RPO"], rows))
        for p in report["problems"]:
            _out(f"{p['level']}: {p['component']}: {p['message']}")
    return health.EXIT_CODES[report["status"]]


def cmd_schedules(args: argparse.Namespace) -> int:
    from ansible_collections.lifeboat.dr.plugins.module_utils.ops import schedule
    entries = schedule.installed(cron_file=args.cron_file, systemd_dir=args.systemd_dir)
    if args.json:
        _json(entries)
        return EXIT_OK
    _out(table(["NAME", "BACKEND", "SCHEDULE", "NEXT RUN (UTC)", "USER", "COMMAND"],
               [[e["name"], e["backend"], e["spec"], e["next_run"] or "-", e["user"], e["command"][:60]]
                for e in entries]))
    if not entries:
        _out(f"no Lifeboat schedule installed in {args.cron_file} or {args.systemd_dir}")
    return EXIT_OK


def cmd_recovery_points(args: argparse.Namespace) -> int:
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import pitr
    result = pitr.analyze(_store(args), identity=args.identity)
    if args.json:
        _json(result)
        return EXIT_OK
    _out(f"server {result['identity']}")
    _out(table(["GEN", "STARTED", "BRANCHED FROM", "FILES", "RECOVERABLE ON ITS LINE"],
               [_generation_row(gen) for gen in result["generations"]]))
    _out(f"current line of history (generation {result.get('current_generation')}):")
    rows = []
    for w in result["windows"]:
        to = w.get("to") or {}
        rows.append([w["base"], (w.get("from") or {}).get("time"),
                     f"{to.get('time')} (gen {to.get('generation')})" if w.get("recoverable") else "-",
                     "yes" if w.get("recoverable") else f"no: {w.get('reason')}",
                     (w.get("gap_after") or {}).get("missing_from", "-")])
    _out(table(["BASE", "FROM", "TO", "RECOVERABLE", "GAP AFTER"], rows))
    for gen in result["generations"]:
        for gap in gen.get("gaps", []):
            _out(f"gap in generation {gen['generation']}: {json.dumps(gap, sort_keys=True)}")
    if result.get("base_backup_needed"):
        _out(f"warning: {result['base_backup_needed']}")
    return EXIT_OK


def _generation_row(gen: dict) -> list:
    """One row of the generations table of recovery-points."""
    branch = gen.get("branch") or {}
    branched = (f"gen {branch.get('parent_generation')} at {branch.get('file')}:{branch.get('position')} "
                f"(last {branch.get('gtid') or '-'} {branch.get('last_applied_time') or ''}; "
                f"{branch.get('by') or 'recovery'} {branch.get('at')})") if branch else \
        ("-" if gen["generation"] == 1 else f"unknown ({gen.get('reason')})")
    rec = gen.get("recoverable")
    recoverable = (f"{rec['from'].get('time')} .. {rec['to'].get('time')} from {rec['from_base']}" if rec
                   else f"no: {gen.get('not_recoverable_because')}")
    return [f"{gen['generation']}{' *' if gen.get('current') else ''}", gen.get("started_at"), branched,
            gen.get("files"), recoverable]


def cmd_audit(args: argparse.Namespace) -> int:
    report = audit.verify(_store(args))
    if args.json:
        _json(report)
    else:
        for p in report["problems"]:
            _out(f"line {p['line']}: {p['problem']}")
        _out(f"audit trail {report['path']}: {report['records']} record(s), "
             f"{'intact' if report['ok'] else 'TAMPERED'}")
    return EXIT_OK if report["ok"] else EXIT_INTEGRITY


def cmd_prune(args: argparse.Namespace) -> int:
    from ansible_collections.lifeboat.dr.plugins.module_utils.ops import retention
    result = retention.prune(_store(args), retention.RetentionPolicy(), check_mode=args.dry_run)
    if args.json:
        _json(result)
        return EXIT_OK
    verb = "would delete" if args.dry_run else "deleted"
    for d in result["deleted_sets"]:
        _out(f"{verb} {d['set_id']}: {'; '.join(d['reasons'])}")
    for item in result["deleted_side"]:
        _out(f"{verb} {item['kind']} {item['path']}: {'; '.join(item['reasons'])}")
    _out(f"{len(result['deleted_sets'])} set(s) {verb}, {len(result['kept_sets'])} kept")
    return EXIT_OK


def cmd_abort(args: argparse.Namespace) -> int:
    """Remove the open set ``args.set_id`` (a run that died without publishing or aborting it),
    end its lease and record it (job ``failed`` with ``aborted: ...``, audit record).

    Refused (:class:`LockHeld`) while a step is writing the set, and without ``--force``
    while its lease still holds (its run may be alive); :class:`NotFound` for no such open set.
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.ops import orchestrate
    store = _store(args)
    if not (store.partial_root / args.set_id).is_dir():
        raise NotFound(f"no open (partial) backup set {args.set_id} in store {store.root}",
                       hint="lifeboat list --partial shows the open sets")
    lease = next((entry for entry in store.lease_status() if entry["set_id"] == args.set_id), None)
    if lease and lease["state"] == "writing":
        raise LockHeld(f"a step is writing set {args.set_id} right now",
                       hint="wait for it to end (its run may be alive), then abort again")
    if lease and lease["state"] == "held" and not args.force:
        owner = lease.get("run_owner") or {}
        raise LockHeld(f"set {args.set_id} is leased until {lease.get('lease_until')} to {lease.get('owner')} "
                       f"(pid {owner.get('pid')} on host {owner.get('host')}, {lease.get('run_owner_state')})",
                       hint=f"if that run is dead (or you have cancelled it): lifeboat abort {args.set_id} --force")
    reason = f"aborted by the operator ({audit.current_actor().get('user')}): {args.reason}"
    result = orchestrate.abort_multi_set_recorded(str(store.root), args.set_id, reason[:300])
    if args.json:
        _json(result)
    else:
        _out(f"set {args.set_id}: aborted, nothing published; its lease ended ({args.reason})")
    return EXIT_OK


def cmd_key_create(args: argparse.Namespace) -> int:
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import create_key_file
    key_id = create_key_file(args.file)
    if args.json:
        _json({"path": args.file, "key_id": key_id})
    else:
        _out(key_id)
    return EXIT_OK


def cmd_key_id(args: argparse.Namespace) -> int:
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import FileKEK
    key_id = FileKEK.load(args.file).key_id
    if args.json:
        _json({"path": args.file, "key_id": key_id})
    else:
        _out(key_id)
    return EXIT_OK


def cmd_key_rotate(args: argparse.Namespace) -> int:
    from ansible_collections.lifeboat.dr.plugins.module_utils.store import keyrotation
    params = {"store": str(_store(args).root), "key_file": args.key_file, "escrow_key_file": args.escrow_key_file,
              "new_key_file": args.new_key_file, "keep_old": args.keep_old, "lock_wait": args.lock_wait,
              "retire_key_ids": args.retire_key_id, "verify": not args.no_verify}
    result = keyrotation.rotate_from_options(params, check_mode=args.dry_run)
    if args.json:
        _json(result)
    else:
        verb = "would rotate" if args.dry_run else "rotated"
        for entry in result["rotated"]:
            _out(f"{verb} {entry['set_id']}: now {', '.join(entry['key_ids'])}"
                 f"{'' if args.dry_run else '; quick verify ' + entry['quick_verify']}")
        for entry in result["failed_sets"]:
            _out(f"FAILED {entry['set_id']}: {entry['error']}")
        for set_id in result["pending_partials"]:
            _out(f"pending {set_id}: still being written under the old keys; rotate again after it is published")
        _out(f"{len(result['rotated'])} set(s) {verb}, {len(result['already_rotated'])} already under key "
             f"{result['new_key_id']}, {len(result['failed_sets'])} failed")
    if result["ok"]:
        return EXIT_OK
    if result["verify_failed"]:
        return EXIT_INTEGRITY
    return EXIT_KEY if keyrotation.is_key_failure(result) else EXIT_FAILURE


def _add_key_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    key = sub.add_parser("key", help="key files and key rotation")
    key_sub = key.add_subparsers(dest="key_command", required=True)
    p = key_sub.add_parser("create", parents=[common], help="create a 32-byte key file (0600); prints its key id")
    p.add_argument("file")
    p.set_defaults(func=cmd_key_create)
    p = key_sub.add_parser("id", parents=[common], help="print the key id of a key file")
    p.add_argument("file")
    p.set_defaults(func=cmd_key_id)
    p = key_sub.add_parser("rotate", parents=[common],
                           help="rewrap every set's data key under a new key (artifacts are not rewritten)")
    p.add_argument("--key-file", help="the old key file (omit when it is lost: give --escrow-key-file)")
    p.add_argument("--escrow-key-file", help="escrow key file (kept as a recipient)")
    p.add_argument("--new-key-file", required=True, help="the new key file")
    p.add_argument("--keep-old", action="store_true", help="keep the old key's wrap too")
    p.add_argument("--retire-key-id", action="append", help="also remove the wrap of this key id (repeatable)")
    p.add_argument("--no-verify", action="store_true", help="skip the quick verification after each rewrite")
    p.add_argument("--lock-wait", type=float, default=0.0, help="seconds to wait for a running prune/rotation")
    p.add_argument("--dry-run", action="store_true", help="list what would change, change nothing")
    p.set_defaults(func=cmd_key_rotate)


# --------------------------------------------------------------------------- parsing
def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every sub-command accepts ``--store`` and ``--json``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", help="backup store folder (default: $LIFEBOAT_STORE)")
    common.add_argument("--json", action="store_true", help="print JSON")
    parser = argparse.ArgumentParser(prog=PROG, description="Operate a Lifeboat backup store.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", parents=[common], help="list backup sets")
    p.add_argument("--type", action="append", help="only sets of this type (repeatable)")
    p.add_argument("--partial", action="store_true", help="include unfinished sets")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", parents=[common], help="show one set's manifest summary")
    p.add_argument("set_id")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("verify", parents=[common], help="verify one set")
    p.add_argument("set_id")
    p.add_argument("--quick", action="store_true", help="authenticate every artifact (no restore)")
    p.add_argument("--key-file", help="primary key file (default: $LIFEBOAT_KEY_FILE)")
    p.add_argument("--escrow-key-file", help="escrow key file")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("jobs", parents=[common], help="job history")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--kind", choices=jobs.KINDS)
    p.add_argument("--running", action="store_true", help="the runs in progress (from their status files)")
    p.add_argument("--follow", action="store_true",
                   help="with --running: refresh until none runs (a bar on a terminal, plain lines when piped)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between --follow refreshes")
    p.set_defaults(func=cmd_jobs)
    p = sub.add_parser("status", parents=[common], help="the runs in progress (as jobs --running)")
    p.add_argument("--follow", action="store_true", help="refresh until none runs")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between --follow refreshes")
    p.set_defaults(func=cmd_running)
    p = sub.add_parser("health", parents=[common], help="health status (exit 0 ok, 1 warning, 2 critical)")
    p.add_argument("--html", help="also write the HTML report here")
    p.add_argument("--metrics", help="also write Prometheus textfile metrics here")
    p.add_argument("--max-age-hours", type=float, default=24.0)
    p.add_argument("--stall-after-s", type=float, default=0.0,
                   help="flag a run in progress whose bytes have not moved this long (0: 4 x its interval, >= 60 s)")
    p.set_defaults(func=cmd_health)
    p = sub.add_parser("schedules", parents=[common], help="installed schedules and next run times")
    p.add_argument("--cron-file", default=os.environ.get("LIFEBOAT_CRON_FILE", "/etc/cron.d/lifeboat"))
    p.add_argument("--systemd-dir", default=os.environ.get("LIFEBOAT_SYSTEMD_DIR", "/etc/systemd/system"))
    p.set_defaults(func=cmd_schedules)
    p = sub.add_parser("recovery-points", parents=[common], help="MySQL point-in-time recovery windows and gaps")
    p.add_argument("--identity", help="server identity (needed when the store archives several servers)")
    p.set_defaults(func=cmd_recovery_points)
    p = sub.add_parser("audit", parents=[common], help="audit trail")
    p.add_argument("action", choices=["verify"])
    p.set_defaults(func=cmd_audit)
    p = sub.add_parser("prune", parents=[common], help="apply the default retention policy")
    p.add_argument("--dry-run", action="store_true", help="list what would go, change nothing")
    p.set_defaults(func=cmd_prune)
    p = sub.add_parser("abort", parents=[common], help="remove an open set left by a dead run and end its lease")
    p.add_argument("set_id")
    p.add_argument("--reason", default="the run that opened it is dead", help="why (recorded in jobs and audit)")
    p.add_argument("--force", action="store_true", help="abort even while its lease holds (its run may be alive)")
    p.set_defaults(func=cmd_abort)
    _add_key_parsers(sub, common)
    sub.add_parser("decrypt", help="break-glass reader: lifeboat decrypt --key-file K [-o OUT] ARTIFACT",
                   add_help=False)
    return parser


def _exit_code(err: BaseException) -> int:
    from ansible_collections.lifeboat.dr.plugins.module_utils.edge.breakglass import exit_code_for
    return exit_code_for(err)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``lifeboat``; returns the exit status (the console shim exits with it)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["decrypt"]:
        from ansible_collections.lifeboat.dr.plugins.module_utils.edge import breakglass
        return breakglass.main(args_list[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as stop:
        return EXIT_OK if stop.code in (0, None) else EXIT_USAGE
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except LifeboatError as err:
        _err(f"{type(err).__name__}: {err}")
        return _exit_code(err)
    except OSError as err:
        _err(f"{type(err).__name__}: {err}")
        return EXIT_FAILURE
