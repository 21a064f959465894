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
    fault_at: float | None = None
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

    def slowest_step(self) -> Step | None:
        recovery = [s for s in self.steps if s.kind in ("recovery", "fault")] or self.steps
        return max(recovery, key=lambda s: s.duration_s, default=None)

    def history_entry(self) -> dict:
        """The drill history fields (``health.record_drill`` writes them to ``<store>/drills/history.jsonl``)."""
        return {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "scenario": self.scenario,
                "rto_s": rnd(self.rto_s), "rto_target_s": self.rto_target_s, "rpo_s": rnd(self.rpo_s),
                "rpo_target_s": self.rpo_target_s, "passed": self.outcome == "passed", "lost": self.lost,
                "data_equal": self.data_equal, "outcome": self.outcome, "fault_mode": self.fault_mode}

    def summary(self) -> dict:
        data = self.history_entry()
        data.update(title=self.title, severity=self.severity, backup_id=self.backup_id, message=self.message,
                    differences=self.differences, canary=self.canary,
                    steps=[{k: v for k, v in asdict(s).items() if k != "tasks"} | {"duration_s": rnd(s.duration_s)}
                           for s in self.steps])
        return data


def rnd(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


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
    if record.promise_at:
        ax.axvline(record.promise_at - origin, color="#6a1b9a", ls=":", label="backup point")
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
