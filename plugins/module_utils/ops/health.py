# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health report: how well protected are we right now, measured from the store.

:func:`build_report` reads the catalog, verification records, the job history
(``<store>/jobs/history.jsonl``), the binlog archive indexes and the drill history
(``<store>/drills/history.jsonl``, records ``{time, scenario, rto_s, rto_target_s,
rpo_s, rpo_target_s, passed}``) and returns a JSON-friendly dict; :func:`render_html`
turns it into one self-contained HTML page (inline CSS, inline SVG charts).

Everything is *measured*: the RTO "if disaster struck now" is the restore time that the
last passed full verification (restore to scratch) of each component's newest backup
recorded (``restore_durations_s`` {component: seconds} in the report, else its
``duration_s`` when the report names one ``component``); with no such measurement the
report says ``unknown``. The current worst-case RPO is, per component, the age of its
newest backup, for MySQL the smaller of that and the binlog archive lag (the time since
the last archived transaction), and overall the worst component.

Status: ``critical`` when a component has no backup, its last backup job failed, the
measured RTO exceeds ``rto_target_s``, the current RPO exceeds its target, or the last
drill failed its targets; ``warning`` when a newest backup is older than
``max_backup_age_s``, its latest verification failed, the binlog lag exceeds
``binlog_lag_warning_s``, the backup success rate in the window is below
``min_success_rate``, or a writer lock is leased to an open set (``leases``: a multi-step
run in progress or one that died -- who, since when, which set, ``held``/``writing``/
``stale`` -- with the number of backups refused because of it); else ``ok``. Times in seconds; timestamps ISO 8601 UTC.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.store import jobs
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import (
    STANDARD_COMPONENTS,
    format_time,
    parse_time,
    utc_now,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import load_manifest
from ansible_collections.lifeboat.dr.plugins.module_utils.store.runstatus import (
    PROGRESS_DIR,
    describe_run,
    read_run_statuses,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger, human_bytes

log = get_logger("health")

STATUSES = ("ok", "warning", "critical")
EXIT_CODES = {"ok": 0, "warning": 1, "critical": 2}
DRILLS_DIR = "drills"
DRILL_HISTORY = "history.jsonl"


@dataclass(frozen=True)
class Thresholds:
    """Health thresholds (seconds unless stated). ``rpo_targets``: per-component overrides."""

    max_backup_age_s: float = 24 * 3600.0
    rto_target_s: float = 4 * 3600.0
    rpo_target_s: float = 26 * 3600.0
    rpo_targets: dict[str, float] = field(default_factory=dict)
    binlog_lag_warning_s: float = 1800.0
    min_success_rate: float = 0.9
    window_s: float = 7 * 86400.0
    # a run in progress whose bytes have not moved for longer is flagged (0 = per run: 4 x its
    # progress interval, at least 60 s; see runstatus.judge_run)
    progress_stall_s: float = 0.0

    def rpo_target(self, component: str) -> float:
        return float(self.rpo_targets.get(component, self.rpo_target_s))


def drill_history_path(store: Union[str, Path, Store]) -> Path:
    """``<store>/drills/history.jsonl``."""
    return jobs.store_root(store) / DRILLS_DIR / DRILL_HISTORY


def read_drills(store: Union[str, Path, Store]) -> list[dict[str, Any]]:
    """Drill records, oldest first (unparseable lines skipped)."""
    path = drill_history_path(store)
    out = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return sorted(out, key=lambda r: str(r.get("time") or ""))


def record_drill(store: Union[str, Path, Store], scenario: str, *, rto_s: Optional[float], rto_target_s: float,
                 rpo_s: Optional[float], rpo_target_s: float, passed: bool, **extra: Any) -> dict[str, Any]:
    """Append a drill record (the drill harness's writer; format in docs/operations.md)."""
    record = {"time": format_time(utc_now()), "scenario": scenario, "rto_s": rto_s, "rto_target_s": rto_target_s,
              "rpo_s": rpo_s, "rpo_target_s": rpo_target_s, "passed": bool(passed), **extra}
    jobs.append_jsonl(drill_history_path(store), record)
    return record


# --------------------------------------------------------------------------- gathering
def _is_kept_aside(manifest: dict[str, Any]) -> bool:
    return bool(((manifest.get("component_metadata") or {}).get("vault") or {}).get("kept_aside_before"))


def _measured_restore_s(records: list[dict[str, Any]], component: str) -> Optional[dict[str, Any]]:
    """The restore time of ``component`` from the newest passed full verification, if measured."""
    for rec in reversed(records):
        if not rec.get("ok") or rec.get("mode") != "full":
            continue
        durations = rec.get("restore_durations_s") or {}
        if isinstance(durations, dict) and isinstance(durations.get(component), (int, float)):
            method = (rec.get("restore_methods") or {}).get(component)
            return {"seconds": float(durations[component]), "checked_at": rec.get("checked_at"), "method": method}
        if rec.get("component") == component and isinstance(rec.get("duration_s"), (int, float)):
            return {"seconds": float(rec["duration_s"]), "checked_at": rec.get("checked_at"),
                    "method": "full verification (scratch restore)"}
    return None


def _backup_jobs_for(all_jobs: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    out = []
    for job in all_jobs:
        if job.get("kind") != "backup" or job.get("result") == "running":
            continue
        comps = job.get("components") or []
        if not comps or component in comps:
            out.append(job)
    return out


def _component_view(store: Store, component: str, infos: list[Any], manifests: dict[str, Any],
                    backup_jobs: list[dict[str, Any]], now: datetime, window_start: datetime) -> dict[str, Any]:
    mine = [i for i in infos if component in i.components and not _is_kept_aside(manifests[i.set_id])]
    view: dict[str, Any] = {"component": component, "latest": None, "age_s": None, "verification": None,
                            "success_rate": None, "jobs_in_window": 0, "failed_in_window": 0,
                            "last_job_result": None, "size_trend": [], "measured_rto_s": None,
                            "measured_rto_at": None, "measured_rto_method": None, "rpo_s": None}
    in_window = [j for j in backup_jobs if j.get("start") and parse_time(j["start"]) >= window_start]
    if in_window:
        ok = sum(1 for j in in_window if j.get("result") == "ok")
        view.update(success_rate=ok / len(in_window), jobs_in_window=len(in_window),
                    failed_in_window=len(in_window) - ok)
    if backup_jobs:
        view["last_job_result"] = backup_jobs[-1].get("result")
        view["last_job_error"] = backup_jobs[-1].get("error")
    view["size_trend"] = [{"time": i.start, "stored_bytes": i.stored_bytes} for i in mine
                          if parse_time(i.start) >= window_start][-60:]
    if not mine:
        return view
    newest = mine[-1]
    end = parse_time(newest.end)
    records = store.verifications(newest.set_id)
    last_ver = records[-1] if records else None
    view.update(latest={"set_id": newest.set_id, "type": newest.type, "end": newest.end, "status": newest.status,
                        "verified_mode": newest.verified_mode, "stored_bytes": newest.stored_bytes,
                        "end_timestamp": end.timestamp()},
                age_s=max(0.0, (now - end).total_seconds()), rpo_s=max(0.0, (now - end).total_seconds()),
                verification=None if last_ver is None else {
                    "ok": bool(last_ver.get("ok")), "mode": last_ver.get("mode"),
                    "checked_at": last_ver.get("checked_at")})
    measured = _measured_restore_s(records, component)
    if measured:
        view.update(measured_rto_s=measured["seconds"], measured_rto_at=measured["checked_at"],
                    measured_rto_method=measured["method"])
    return view


def _binlog_view(store: Store, now: datetime) -> list[dict[str, Any]]:
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog as bl
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import pitr
    out = []
    for identity in bl.archived_identities(store):
        try:
            index = bl.load_index(store, identity)
        except (LifeboatError, OSError, ValueError) as err:
            out.append({"identity": identity, "error": str(err), "lag_s": None})
            continue
        files = [e for g in index.generations[-1:] for e in g["files"]]
        last = max(files, key=lambda e: bl.binlog_sequence(e["file"])) if files else None
        covered = pitr.coverage_end(last) if last else None
        out.append({"identity": identity, "generation": len(index.generations),
                    "last_file": last["file"] if last else None,
                    "covered_until": pitr.iso(covered) if covered else None,
                    "lag_s": max(0.0, now.timestamp() - covered) if covered else None,
                    "gaps": len(index.generations[-1].get("gaps", [])) if index.generations else 0,
                    "base_backup_needed": _base_backup_needed(store, identity, index)})
    return out


def _base_backup_needed(store: Store, identity: str, index: Any) -> Optional[str]:
    """pitr.base_backup_needed, or the error that prevented the check (never raises)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import pitr
    try:
        return pitr.base_backup_needed(store, identity, index)
    except (LifeboatError, OSError, ValueError) as err:
        return f"could not check whether a base backup is needed: {err}"


def build_report(store: Union[str, Path, Store], thresholds: Optional[Thresholds] = None, *,
                 now: Optional[datetime] = None, components: Optional[list[str]] = None) -> dict[str, Any]:
    """The health report (JSON-friendly). ``components``: those expected (default: the
    standard ones present in any set; a named component without backups is critical)."""
    store = store if isinstance(store, Store) else Store(store)
    thresholds = thresholds or Thresholds()
    now = now or utc_now()
    window_start = now - timedelta(seconds=thresholds.window_s)
    infos = store.list_sets()
    manifests = {i.set_id: load_manifest(i.path) for i in infos}
    present = sorted({c for i in infos for c in i.components}, key=_component_order)
    wanted = list(components) if components else [c for c in present if c in STANDARD_COMPONENTS] or present
    all_jobs = jobs.read_jobs(store)
    views = [_component_view(store, c, infos, manifests, _backup_jobs_for(all_jobs, c), now, window_start)
             for c in wanted]
    binlogs = _binlog_view(store, now)
    lags = [b["lag_s"] for b in binlogs if b.get("lag_s") is not None]
    for view in views:
        if view["component"] == "mysql" and lags and view["rpo_s"] is not None:
            view["rpo_s"] = min(view["rpo_s"], max(lags))
            view["rpo_source"] = "binlog archive"
        elif view["rpo_s"] is not None:
            view["rpo_source"] = "newest backup"
    drills = read_drills(store)
    report = {
        "generated_at": format_time(now), "store": str(store.root), "thresholds": asdict(thresholds),
        "components": views, "binlog_archives": binlogs,
        "last_drill": drills[-1] if drills else None,
        "drills_in_window": [d for d in drills if _after(d.get("time"), window_start)],
        "jobs_recent": all_jobs[-20:],
        "disaster_now": _disaster_now(views),
        "leases": _lease_view(store, all_jobs),
        "runs_in_progress": read_run_statuses(store.root, now.timestamp(), thresholds.progress_stall_s or None),
        "refused_backups_in_window": sum(1 for j in all_jobs if j.get("kind") == "backup"
                                         and j.get("result") == "refused" and _after(j.get("start"), window_start)),
    }
    report["status"], report["problems"] = evaluate(report, thresholds)
    return report


def _lease_view(store: Store, all_jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every lease of an open set (:meth:`Store.lease_status`) with ``refused_backups``: the
    backup jobs refused while it was held (``details.blocked_by_set`` names its set)."""
    leases = store.lease_status()
    for lease in leases:
        lease["refused_backups"] = sum(1 for j in all_jobs if j.get("result") == "refused"
                                       and (j.get("details") or {}).get("blocked_by_set") == lease["set_id"])
    return leases


def _describe_lease(lease: dict[str, Any]) -> str:
    owner = lease.get("run_owner") or {}
    who = (f"{lease.get('owner') or 'a run'} (pid {owner.get('pid')} on {owner.get('host')}, "
           f"{lease.get('run_owner_state')})" if owner else f"{lease.get('owner') or 'a run'} (identity unknown)")
    state = {"writing": "a step is writing it", "held": f"held until {lease.get('lease_until')}",
             "stale": f"STALE: {lease.get('reason')}; the next backup takes it over"}[lease["state"]]
    return (f"the {lease['kind']} lock is leased to open set {lease['set_id']} by {who} since "
            f"{lease.get('since')}: {state}; {lease.get('refused_backups', 0)} backup(s) refused because of it "
            f"(if that run is dead: lifeboat abort {lease['set_id']})")


def _after(text: Any, when: datetime) -> bool:
    try:
        return parse_time(str(text)) >= when
    except ValueError:
        return False


def _component_order(name: str) -> tuple[int, str]:
    order = list(STANDARD_COMPONENTS)
    return (order.index(name) if name in order else len(order), name)


def _disaster_now(views: list[dict[str, Any]]) -> dict[str, Any]:
    """RTO (measured restores, one after another) and worst-case RPO if everything were lost now."""
    rto_parts = {v["component"]: v["measured_rto_s"] for v in views}
    unknown_rto = [c for c, s in rto_parts.items() if s is None]
    rpo_parts = {v["component"]: v["rpo_s"] for v in views}
    unknown_rpo = [c for c, s in rpo_parts.items() if s is None]
    return {
        "rto_s": None if unknown_rto or not views else sum(float(s) for s in rto_parts.values()),
        "rto": "unknown" if unknown_rto or not views else "measured",
        "rto_unmeasured_components": unknown_rto, "rto_per_component_s": rto_parts,
        "rpo_s": None if unknown_rpo or not views else max(float(s) for s in rpo_parts.values()),
        "rpo": "unknown" if unknown_rpo or not views else "measured",
        "rpo_per_component_s": rpo_parts,
    }


def evaluate(report: dict[str, Any], th: Thresholds) -> tuple[str, list[dict[str, str]]]:
    """``(status, problems)``; each problem is ``{"level", "component", "message"}``."""
    problems: list[dict[str, str]] = []

    def add(level: str, component: str, message: str) -> None:
        problems.append({"level": level, "component": component, "message": message})

    if not report["components"]:
        add("critical", "-", "the store holds no backup set")
    for v in report["components"]:
        _evaluate_component(v, th, add)
    for b in report["binlog_archives"]:
        if b.get("base_backup_needed"):
            add("warning", "mysql", f"{b['identity']}: {b['base_backup_needed']}")
        if b.get("lag_s") is not None and b["lag_s"] > th.binlog_lag_warning_s:
            add("warning", "mysql", f"binlog archive of {b['identity']} lags {_fmt_s(b['lag_s'])} "
                                    f"(> {_fmt_s(th.binlog_lag_warning_s)})")
    rto = report["disaster_now"]["rto_s"]
    if rto is not None and rto > th.rto_target_s:
        add("critical", "-", f"measured RTO {_fmt_s(rto)} exceeds the target {_fmt_s(th.rto_target_s)}")
    for lease in report.get("leases") or []:
        add("warning", "-", _describe_lease(lease))
    for run in report.get("runs_in_progress") or []:
        _evaluate_run(run, add)
    drill = report.get("last_drill")
    if drill and not drill.get("passed"):
        add("critical", "-", f"the last drill ({drill.get('scenario')}, {drill.get('time')}) failed its targets")
    status = "ok"
    if any(p["level"] == "warning" for p in problems):
        status = "warning"
    if any(p["level"] == "critical" for p in problems):
        status = "critical"
    return status, problems


def _evaluate_run(run: dict[str, Any], add: Any) -> None:
    """A run in progress that stalled, died or stopped itself is a warning (running ones are not)."""
    where = f"{run.get('component')} {run.get('kind')} run {run.get('id')} (pid {run.get('pid')} on {run.get('host')})"
    liveness = run.get("liveness")
    if liveness == "stalled":
        add("warning", str(run.get("component")),
            f"{where} has not moved for {_fmt_s(run.get('idle_s'))} (> {_fmt_s(run.get('stall_after_s'))}) at "
            f"{describe_run(run)} -- a hung dump, a stalled replay or a paused server? check the server and "
            f"the process; it goes on by itself when it moves again")
    elif liveness in ("dead", "abandoned"):
        add("warning", str(run.get("component")),
            f"{where} ended without finishing ({liveness}: {run.get('reason') or 'its process is gone'}); "
            f"its status file {PROGRESS_DIR}/{run.get('id')}.json can be deleted once checked")


def _evaluate_component(v: dict[str, Any], th: Thresholds, add: Any) -> None:
    comp = v["component"]
    if v["latest"] is None:
        add("critical", comp, "no backup of this component")
        return
    if v.get("last_job_result") == "failed":
        add("critical", comp, f"the last backup job failed: {v.get('last_job_error') or 'see the job history'}")
    if v["rpo_s"] is not None and v["rpo_s"] > th.rpo_target(comp):
        add("critical", comp, f"current worst-case RPO {_fmt_s(v['rpo_s'])} exceeds the target "
                              f"{_fmt_s(th.rpo_target(comp))}")
    if v["age_s"] is not None and v["age_s"] > th.max_backup_age_s:
        add("warning", comp, f"newest backup is {_fmt_s(v['age_s'])} old (> {_fmt_s(th.max_backup_age_s)})")
    if v["verification"] is not None and not v["verification"]["ok"]:
        add("warning", comp, f"the latest verification of {v['latest']['set_id']} failed")
    if v["success_rate"] is not None and v["success_rate"] < th.min_success_rate:
        add("warning", comp, f"backup success rate {v['success_rate']:.0%} in the window "
                             f"(< {th.min_success_rate:.0%})")


def _fmt_s(seconds: Optional[float]) -> str:
    """``3d 4h``, ``2h 5m``, ``12m 3s``, ``42s``; ``unknown`` for None."""
    if seconds is None:
        return "unknown"
    s = int(round(seconds))
    days, rem = divmod(s, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


format_seconds = _fmt_s


# --------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#222;background:#fafafa}
h1{margin-bottom:.2em} .meta{color:#666} table{border-collapse:collapse;margin:1em 0;background:#fff}
th,td{border:1px solid #ddd;padding:.35em .7em;text-align:left;vertical-align:top} th{background:#f0f0f0}
.ok{color:#1a7f37;font-weight:bold} .warning{color:#9a6700;font-weight:bold} .critical{color:#cf222e;font-weight:bold}
.badge{display:inline-block;padding:.3em .8em;border-radius:1em;color:#fff}
.badge.ok{background:#1a7f37}.badge.warning{background:#bf8700}.badge.critical{background:#cf222e}
.box{background:#fff;border:1px solid #ddd;padding:1em;margin:1em 0;border-radius:.4em}
.big{font-size:1.6em;font-weight:bold} svg{background:#fff;border:1px solid #eee}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def svg_line_chart(points: list[tuple[float, float]], *, width: int = 360, height: int = 90,
                   label: str = "") -> str:
    """A tiny inline SVG polyline of ``(x, y)`` points (scaled to fit); empty text when < 2 points."""
    if len(points) < 2:
        return '<span class="meta">not enough data</span>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (width - 10) / ((x1 - x0) or 1)
    sy = (height - 20) / ((y1 - y0) or 1)
    coords = " ".join(f"{5 + (x - x0) * sx:.1f},{height - 10 - (y - y0) * sy:.1f}" for x, y in points)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="{_esc(label)}"><polyline fill="none" stroke="#0969da" stroke-width="2" points="{coords}"/>'
            f'<text x="5" y="12" font-size="10" fill="#666">{_esc(label)}</text></svg>')


def svg_result_bars(results: list[str], *, width: int = 360, height: int = 30) -> str:
    """One small bar per job result (green ok, red failed)."""
    if not results:
        return '<span class="meta">no jobs</span>'
    step = width / max(len(results), 1)
    bars = "".join(f'<rect x="{i * step:.1f}" y="4" width="{max(step - 2, 1):.1f}" height="{height - 8}" '
                   f'fill="{"#1a7f37" if r == "ok" else "#cf222e"}"><title>{_esc(r)}</title></rect>'
                   for i, r in enumerate(results))
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{bars}</svg>'


def _unmeasured(now: dict[str, Any]) -> str:
    missing = now.get("rto_unmeasured_components") or []
    return f" &mdash; no restore measured for: {_esc(', '.join(missing))}" if missing else ""


def render_html(report: dict[str, Any]) -> str:
    """One self-contained HTML page (no external resources) for ``report``."""
    status = report["status"]
    now = report["disaster_now"]
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Lifeboat health: {status}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>Lifeboat health <span class=\"badge {status}\">{status.upper()}</span></h1>",
             f"<p class=\"meta\">Store {_esc(report['store'])} &middot; generated {_esc(report['generated_at'])}</p>",
             "<div class=\"box\"><h2>If disaster struck now</h2>",
             f"<p>RTO (measured restore times, one after another): <span class=\"big\">{_fmt_s(now['rto_s'])}"
             f"</span>{_unmeasured(now)}"
             f"<br>Worst-case RPO (data that would be lost): <span class=\"big\">{_fmt_s(now['rpo_s'])}</span></p>"
             f"<p class=\"meta\">Targets: RTO {_fmt_s(report['thresholds']['rto_target_s'])}, "
             f"RPO {_fmt_s(report['thresholds']['rpo_target_s'])}.</p></div>"]
    if report["problems"]:
        parts.append("<h2>Problems</h2><ul>" + "".join(
            f"<li class=\"{p['level']}\">{_esc(p['level'])}: {_esc(p['component'])} &mdash; {_esc(p['message'])}</li>"
            for p in report["problems"]) + "</ul>")
    parts.append("<h2>Components</h2><table><tr><th>component</th><th>newest backup</th><th>age</th>"
                 "<th>verification</th><th>success rate</th><th>measured restore</th><th>RPO now</th>"
                 "<th>size trend</th></tr>")
    for v in report["components"]:
        latest = v["latest"] or {}
        ver = v["verification"]
        ver_text = "never" if ver is None else f"{'passed' if ver['ok'] else 'FAILED'} ({ver['mode']})"
        rate = "n/a" if v["success_rate"] is None else f"{v['success_rate']:.0%} of {v['jobs_in_window']}"
        trend = svg_line_chart([(parse_time(p["time"]).timestamp(), p["stored_bytes"]) for p in v["size_trend"]],
                               label=human_bytes(latest.get("stored_bytes") or 0))
        parts.append(f"<tr><td>{_esc(v['component'])}</td><td>{_esc(latest.get('set_id', 'none'))}</td>"
                     f"<td>{_fmt_s(v['age_s'])}</td><td>{_esc(ver_text)}</td><td>{_esc(rate)}</td>"
                     f"<td>{_fmt_s(v['measured_rto_s'])}</td><td>{_fmt_s(v['rpo_s'])}</td><td>{trend}</td></tr>")
    parts.append("</table>")
    if report["binlog_archives"]:
        parts.append("<h2>Binlog archives</h2><table><tr><th>server</th><th>generation</th><th>last file</th>"
                     "<th>covered until</th><th>lag</th><th>gaps</th></tr>" + "".join(
                         f"<tr><td>{_esc(b['identity'])}</td><td>{_esc(b.get('generation'))}</td>"
                         f"<td>{_esc(b.get('last_file'))}</td><td>{_esc(b.get('covered_until'))}</td>"
                         f"<td>{_fmt_s(b.get('lag_s'))}</td><td>{_esc(b.get('gaps'))}</td></tr>"
                         for b in report["binlog_archives"]) + "</table>")
    drill = report.get("last_drill")
    parts.append("<h2>Last drill</h2>")
    if drill:
        parts.append(f"<table><tr><th>time</th><th>scenario</th><th>RTO / target</th><th>RPO / target</th>"
                     f"<th>result</th></tr><tr><td>{_esc(drill.get('time'))}</td><td>{_esc(drill.get('scenario'))}"
                     f"</td><td>{_fmt_s(drill.get('rto_s'))} / {_fmt_s(drill.get('rto_target_s'))}</td>"
                     f"<td>{_fmt_s(drill.get('rpo_s'))} / {_fmt_s(drill.get('rpo_target_s'))}</td>"
                     f"<td class=\"{'ok' if drill.get('passed') else 'critical'}\">"
                     f"{'passed' if drill.get('passed') else 'FAILED'}</td></tr></table>")
        rtos = [(parse_time(d["time"]).timestamp(), float(d["rto_s"])) for d in report["drills_in_window"]
                if d.get("rto_s") is not None and d.get("time")]
        parts.append(svg_line_chart(rtos, label="drill RTO (s)"))
    else:
        parts.append("<p>No drill recorded.</p>")
    parts.append("<h2>Recent jobs</h2>" + svg_result_bars([j.get("result", "?") for j in report["jobs_recent"]]))
    parts.append("<table><tr><th>start</th><th>kind</th><th>result</th><th>duration</th><th>backup</th>"
                 "<th>error</th></tr>" + "".join(
                     f"<tr><td>{_esc(j.get('start'))}</td><td>{_esc(j.get('kind'))}</td>"
                     f"<td class=\"{'ok' if j.get('result') == 'ok' else 'critical'}\">{_esc(j.get('result'))}</td>"
                     f"<td>{_fmt_s(j.get('duration_s'))}</td><td>{_esc(j.get('backup_id'))}</td>"
                     f"<td>{_esc(j.get('error'))}</td></tr>" for j in reversed(report["jobs_recent"])) + "</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def thresholds_from_options(options: dict[str, Any]) -> Thresholds:
    """Thresholds from module/playbook options (hours unless stated); missing -> defaults."""
    base = Thresholds()

    def hours(key: str, fallback_s: float) -> float:
        value = options.get(key)
        return fallback_s if value is None else float(value) * 3600.0
    return Thresholds(
        max_backup_age_s=hours("max_backup_age_hours", base.max_backup_age_s),
        rto_target_s=hours("rto_target_hours", base.rto_target_s),
        rpo_target_s=hours("rpo_target_hours", base.rpo_target_s),
        rpo_targets={k: float(v) * 3600.0 for k, v in (options.get("rpo_targets_hours") or {}).items()},
        binlog_lag_warning_s=hours("binlog_lag_warning_hours", base.binlog_lag_warning_s),
        min_success_rate=float(options["min_success_rate"]) if options.get("min_success_rate") is not None
        else base.min_success_rate,
        window_s=hours("window_hours", base.window_s),
        progress_stall_s=float(options.get("progress_stall_minutes") or 0) * 60.0,
    )
