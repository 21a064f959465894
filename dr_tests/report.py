"""Drill results: the record, the timeline table, the canary plot, the drill history."""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import asdict, dataclass, field

from dr_tests.measure import Step


@dataclass
class DrillRecord:
    """Everything one drill measured. Times in epoch seconds; durations in seconds."""

    scenario: str
    title: str
    severity: str
    rto_target_s: float
    rpo_target_s: float
    fault_mode: str = ""
    backup_id: str | None = None
    backup_at: float | None = None
    backup_point_source: str = ""
    fault_at: float | None = None
    newest_recovered_at: float | None = None
    loss_window_end: float | None = None
    rpo_basis: str = ""
    promise_at: float | None = None
    recovered_at: float | None = None
    healthy_at: float | None = None
    rto_s: float | None = None
    rpo_s: float | None = None
    lost: int = 0
    data_equal: bool | None = None
    differences: list[str] = field(default_factory=list)
    canary: dict[str, str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    writes: list = field(default_factory=list)
    health: list[tuple[float, bool]] = field(default_factory=list)
    outcome: str = "error"
    message: str = ""
    mysql_base: str = "logical"
    variant_of: str | None = None
    deployment: str = "process"

    def slowest_step(self) -> Step | None:
        recovery = [s for s in self.steps if s.kind in ("recovery", "fault")] or self.steps
        return max(recovery, key=lambda s: s.duration_s, default=None)

    def history_entry(self) -> dict:
        """The drill history fields (``health.record_drill`` writes them to ``<store>/drills/history.jsonl``)."""
        return {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "scenario": self.scenario,
                "rto_s": rnd(self.rto_s), "rto_target_s": self.rto_target_s, "rpo_s": rnd(self.rpo_s),
                "rpo_target_s": self.rpo_target_s, "passed": self.outcome == "passed", "lost": self.lost,
                "data_equal": self.data_equal, "outcome": self.outcome, "fault_mode": self.fault_mode,
                "backup_id": self.backup_id, "backup_at": iso(self.backup_at), "fault_at": iso(self.fault_at),
                "newest_recovered_at": iso(self.newest_recovered_at), "rpo_basis": self.rpo_basis,
                "mysql_base": self.mysql_base, "variant_of": self.variant_of, "deployment": self.deployment}

    def rpo_explanation(self) -> str:
        """How the RPO was obtained: fault time, newest recovered write (and from what), backup time."""
        if self.rpo_s is None:
            return "RPO not measured"
        backup = (f"; backup {self.backup_id} captured at {iso(self.backup_at)}"
                  f"{f' ({self.backup_point_source})' if self.backup_point_source else ''}") if self.backup_at else ""
        if self.rpo_s == 0 and self.newest_recovered_at is None:
            return f"RPO 0 s: {self.rpo_basis or 'nothing acknowledged was lost'}{backup}"
        return (f"RPO {self.rpo_s:.1f} s = fault at {iso(self.fault_at)} - newest recovered write at "
                f"{iso(self.newest_recovered_at)} ({self.rpo_basis}){backup}")

    def summary(self) -> dict:
        data = self.history_entry()
        data.update(canary_from=iso(self.writes[0].sent_at) if self.writes else None,
                    loss_window_end=iso(self.loss_window_end))
        data.update(title=self.title, severity=self.severity, backup_id=self.backup_id, message=self.message,
                    differences=self.differences, canary=self.canary,
                    steps=[{k: v for k, v in asdict(s).items() if k != "tasks"} | {"duration_s": rnd(s.duration_s)}
                           for s in self.steps])
        return data


def iso(when: float | None) -> str | None:
    """Epoch seconds as ``2026-01-01T00:00:00.123Z`` (None stays None)."""
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"


def rnd(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


# --- RTO of the MySQL base methods side by side ----------------------------------------------
def method_families(scenarios: list[dict]) -> dict[str, dict[str, str]]:
    """``{original id: {mysql base: scenario id}}`` for every scenario that has variants by MySQL base
    (``variant_of`` / ``mysql_base`` in scenarios.yml; the original's base is ``logical``)."""
    families: dict[str, dict[str, str]] = {}
    for scenario in scenarios:
        if scenario.get("variant_of"):
            families.setdefault(scenario["variant_of"], {})[scenario.get("mysql_base", "logical")] = scenario["id"]
    for scenario in scenarios:
        if scenario["id"] in families:
            families[scenario["id"]].setdefault(scenario.get("mysql_base", "logical"), scenario["id"])
    return families


def _measurement(scenario_id: str, this_run: list[dict], history: list[dict]) -> dict | None:
    """The RTO of ``scenario_id``: this run's drill if it ran, else the newest drill of the history
    that measured one; ``{rto_s, passed, source, time}`` or None when never measured."""
    for entry in reversed(this_run):
        if entry.get("scenario") == scenario_id and entry.get("outcome") != "skipped":
            return {"rto_s": entry.get("rto_s"), "passed": bool(entry.get("passed")), "source": "this run",
                    "time": entry.get("time")}
    for entry in reversed(history):
        if entry.get("scenario") == scenario_id and entry.get("rto_s") is not None:
            return {"rto_s": entry["rto_s"], "passed": bool(entry.get("passed")), "source": "drill history",
                    "time": entry.get("time")}
    return None


def rto_by_mysql_base(scenarios: list[dict], this_run: list[dict], history: list[dict]) -> list[dict]:
    """One row per scenario drilled with several kinds of MySQL base: ``{scenario, bases: {base:
    {scenario_id, measured}}, ratio}`` -- ``measured`` from :func:`_measurement` (this run first,
    else the drill history), ``ratio`` = physical RTO / logical RTO when both were measured."""
    rows = []
    for original, bases in method_families(scenarios).items():
        cells = {base: {"scenario_id": sid, "measured": _measurement(sid, this_run, history)}
                 for base, sid in sorted(bases.items())}
        rto = {b: (c["measured"] or {}).get("rto_s") for b, c in cells.items()}
        ratio = (round(rto["physical"] / rto["logical"], 2)
                 if rto.get("physical") is not None and rto.get("logical") else None)
        rows.append({"scenario": original, "bases": cells, "ratio": ratio})
    return rows


def rto_by_mysql_base_html(rows: list[dict]) -> str:
    """The side-by-side table of :func:`rto_by_mysql_base` (HTML for the report's summary)."""
    if not rows:
        return ""
    bases = sorted({b for row in rows for b in row["bases"]}, key=lambda b: (b != "logical", b))

    def cell(entry: dict | None) -> str:
        measured = (entry or {}).get("measured")
        if not measured:
            return f"<td>not measured<br><small>{html.escape((entry or {}).get('scenario_id', ''))}</small></td>"
        verdict = "passed" if measured["passed"] else "FAILED"
        return (f"<td><b>{fmt_s(measured['rto_s'])}</b> ({verdict})<br><small>"
                f"{html.escape(entry['scenario_id'])}, {html.escape(measured['source'])}"
                f"{', ' + html.escape(str(measured['time'])) if measured['source'] != 'this run' else ''}"
                "</small></td>")

    def ratio(row: dict) -> str:
        return "—" if row["ratio"] is None else f"{row['ratio']:.2f}"

    head = "".join(f"<th>RTO, {html.escape(b)} MySQL base</th>" for b in bases)
    body = "".join(
        f"<tr><td>{html.escape(row['scenario'])}</td>" + "".join(cell(row["bases"].get(b)) for b in bases)
        + f"<td>{ratio(row)}</td></tr>" for row in rows)
    return ("<h2>RTO by MySQL base method</h2><p>The same disaster recovered from a logical (dump) and a physical "
            "(mariabackup) MySQL base backup; a method not drilled in this run shows its newest measurement from "
            "the drill history (<code>make drills-full</code> drills both).</p>"
            "<table border='1' cellpadding='4' style='border-collapse:collapse'>"
            f"<tr><th>scenario</th>{head}<th>physical / logical</th></tr>{body}</table>")


def timeline_html(record: DrillRecord, plot_png: str | None = None) -> str:
    """An HTML table of the drill's steps (and each playbook's five slowest tasks), the canary
    summary, data differences and (``plot_png``: base64) the canary plot at a readable size."""
    origin = record.fault_at or (record.steps[0].start if record.steps else 0.0)
    rows = []
    for step in record.steps:
        colour = "#2e7d32" if step.ok else "#c62828"
        rows.append(
            f"<tr><td>{html.escape(step.kind)}</td><td><b>{html.escape(step.name)}</b>"
            f"<br><small>{html.escape(step.detail[:300])}</small></td>"
            f"<td style='text-align:right'>{step.start - origin:+.1f}</td>"
            f"<td style='text-align:right'>{step.duration_s:.1f}</td>"
            f"<td style='color:{colour}'>{'ok' if step.ok else 'FAILED'}</td></tr>")
        slowest = sorted(step.tasks, key=lambda t: t.get("duration_s", 0), reverse=True)[:5]
        for task in slowest:
            rows.append(
                f"<tr style='color:#555'><td></td><td><small>&nbsp;&nbsp;↳ {html.escape(task['task'])} "
                f"[{html.escape(task['host'])}]</small></td><td style='text-align:right'>"
                f"<small>{task['start'] - origin:+.1f}</small></td><td style='text-align:right'>"
                f"<small>{task['duration_s']:.1f}</small></td><td><small>{html.escape(task['status'])}</small></td></tr>")
    canary = "".join(f"<li>{html.escape(text)}</li>" for text in record.canary.values())
    differences = "".join(f"<li>{html.escape(d)}</li>" for d in record.differences[:20])
    return (
        "<div style='font-family:sans-serif;font-size:13px'>"
        f"<p><b>{html.escape(record.title)}</b> — fault: {html.escape(record.fault_mode)}; backup: "
        f"{html.escape(str(record.backup_id))}; RTO {fmt_s(record.rto_s)} (target {record.rto_target_s:.0f} s), "
        f"RPO {fmt_s(record.rpo_s)} (target {record.rpo_target_s:.0f} s)</p>"
        f"<p><b>How the RPO was obtained:</b> {html.escape(record.rpo_explanation())}</p>"
        "<table style='border-collapse:collapse' border='1' cellpadding='3'>"
        "<tr><th>kind</th><th>step</th><th>start (s from fault)</th><th>duration (s)</th><th>result</th></tr>"
        + "".join(rows) + "</table>"
        + (f"<p>Canary:</p><ul>{canary}</ul>" if canary else "")
        + (f"<p>Data differences:</p><ul>{differences}</ul>" if differences else "")
        + (f"<img style='max-width:1000px;width:100%' alt='canary writes over time' "
           f"src='data:image/png;base64,{plot_png}'>" if plot_png else "")
        + "</div>")


def canary_plot_png(record: DrillRecord) -> str | None:
    """Base64 PNG: canary writes over time (acknowledged / failed / unanswered), health, fault, recovery."""
    if not record.writes:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origin = record.fault_at or record.writes[0].sent_at
    fig, ax = plt.subplots(figsize=(11, 3.6), dpi=100)
    groups = {"acknowledged": ([], [], "#2e7d32"), "failed (503)": ([], [], "#ef6c00"),
              "no answer": ([], [], "#c62828")}
    for w in record.writes:
        key = "no answer" if w.status is None else "acknowledged" if w.status == 200 else "failed (503)"
        groups[key][0].append(w.sent_at - origin)
        groups[key][1].append(w.seq - record.writes[0].seq)
    for label, (xs, ys, colour) in groups.items():
        if xs:
            ax.scatter(xs, ys, s=4, color=colour, label=f"{label} ({len(xs)})")
    for t, ok in record.health:
        if not ok:
            ax.axvspan(t - origin - 0.25, t - origin + 0.25, color="#ffcdd2", alpha=0.5, lw=0)
    ax.axvline(0, color="#c62828", ls="--", label="fault")
    if record.promise_at and record.promise_at != record.fault_at:
        ax.axvline(record.promise_at - origin, color="#6a1b9a", ls=":", label="promise point")
    if record.backup_at and record.backup_at >= record.writes[0].sent_at - 60:
        ax.axvline(record.backup_at - origin, color="#8e24aa", ls="-", lw=0.8, label="backup captured")
    if record.newest_recovered_at:
        ax.axvline(record.newest_recovered_at - origin, color="#00838f", ls=":", label="newest recovered write")
    if record.recovered_at:
        ax.axvline(record.recovered_at - origin, color="#1565c0", ls="--", label="recovery done")
    if record.healthy_at:
        ax.axvline(record.healthy_at - origin, color="#2e7d32", ls="-.", label="healthy")
    ax.set_xlabel("seconds from fault (red band: /health failing)")
    ax.set_ylabel("canary seq")
    ax.set_title(f"{record.scenario}: canary writes")
    ax.legend(fontsize=7, loc="upper left", markerscale=3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()
