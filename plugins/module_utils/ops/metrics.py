# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus metrics in the text exposition format, for node_exporter's textfile collector.

:func:`render` turns a health report (:func:`health.build_report`) into text;
:func:`write_textfile` writes it atomically (temp file in the same folder, fsync,
rename), so the collector never reads a half-written file. Names follow the Prometheus
conventions: ``lifeboat_`` prefix, base units (seconds, bytes), ``_timestamp_seconds``
for Unix times, gauges only (every value is a current state read from the store).
Missing measurements are omitted, never written as 0.
"""

from __future__ import annotations

import math
import os
import secrets
from pathlib import Path
from typing import Any, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.ops.health import EXIT_CODES
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import parse_time

HELP = {
    "lifeboat_backup_last_success_timestamp_seconds": "Unix time the newest published backup of the component ended.",
    "lifeboat_backup_age_seconds": "Seconds since the newest published backup of the component ended.",
    "lifeboat_backup_size_bytes": "Stored (compressed, encrypted) bytes of the newest backup set of the component.",
    "lifeboat_backup_success_ratio": "Share of backup jobs of the component that succeeded in the window.",
    "lifeboat_backup_jobs_failed": "Backup jobs of the component that failed in the window.",
    "lifeboat_verification_ok": "1 if the latest verification of the newest backup passed, 0 if it failed.",
    "lifeboat_restore_measured_seconds": "Restore time measured by the last full verification of the newest backup.",
    "lifeboat_rpo_seconds": "Current worst-case data loss of the component if it were lost now.",
    "lifeboat_binlog_archive_lag_seconds": "Seconds since the last archived binlog transaction of the server.",
    "lifeboat_disaster_rto_seconds": "Measured time to restore every component one after another.",
    "lifeboat_disaster_rpo_seconds": "Current worst-case data loss over all components.",
    "lifeboat_drill_rto_seconds": "Recovery time measured by the last drill.",
    "lifeboat_drill_rpo_seconds": "Data loss measured by the last drill.",
    "lifeboat_drill_rto_target_seconds": "Recovery time target of the last drill.",
    "lifeboat_drill_rpo_target_seconds": "Data loss target of the last drill.",
    "lifeboat_drill_passed": "1 if the last drill met its targets, else 0.",
    "lifeboat_drill_last_timestamp_seconds": "Unix time of the last drill.",
    "lifeboat_lock_lease_stale": "Per writer lock leased to an open set: 1 if the lease is stale (dead or silent run), "
                                 "0 while it holds.",
    "lifeboat_lock_lease_since_timestamp_seconds": "Unix time the run holding the lease took the lock.",
    "lifeboat_backups_refused": "Backups refused in the window because the create lock was held or leased.",
    "lifeboat_health_status": "Overall health: 0 ok, 1 warning, 2 critical.",
}


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Builder:
    def __init__(self) -> None:
        self.samples: dict[str, list[str]] = {}

    def add(self, name: str, value: Optional[float], **labels: str) -> None:
        if value is None:
            return
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        self.samples.setdefault(name, []).append(f"{name}{{{label_text}}} {_num(value)}" if labels
                                                 else f"{name} {_num(value)}")

    def text(self) -> str:
        out = []
        for name in HELP:
            if name in self.samples:
                out += [f"# HELP {name} {HELP[name]}", f"# TYPE {name} gauge", *self.samples[name]]
        return "\n".join(out) + "\n"


def render(report: dict[str, Any]) -> str:
    """The metrics of one health report, as Prometheus text format (version 0.0.4)."""
    b = _Builder()
    for v in report["components"]:
        comp = v["component"]
        latest = v.get("latest") or {}
        b.add("lifeboat_backup_last_success_timestamp_seconds", latest.get("end_timestamp"), component=comp)
        b.add("lifeboat_backup_age_seconds", v.get("age_s"), component=comp)
        b.add("lifeboat_backup_size_bytes", latest.get("stored_bytes"), component=comp)
        b.add("lifeboat_backup_success_ratio", v.get("success_rate"), component=comp)
        if v.get("success_rate") is not None:
            b.add("lifeboat_backup_jobs_failed", v.get("failed_in_window", 0), component=comp)
        ver = v.get("verification")
        b.add("lifeboat_verification_ok", None if ver is None else (1 if ver["ok"] else 0), component=comp)
        b.add("lifeboat_restore_measured_seconds", v.get("measured_rto_s"), component=comp)
        b.add("lifeboat_rpo_seconds", v.get("rpo_s"), component=comp)
    for arch in report.get("binlog_archives", []):
        b.add("lifeboat_binlog_archive_lag_seconds", arch.get("lag_s"), server=arch["identity"])
    b.add("lifeboat_disaster_rto_seconds", report["disaster_now"].get("rto_s"))
    b.add("lifeboat_disaster_rpo_seconds", report["disaster_now"].get("rpo_s"))
    drill = report.get("last_drill")
    if drill:
        scenario = str(drill.get("scenario") or "")
        b.add("lifeboat_drill_rto_seconds", drill.get("rto_s"), scenario=scenario)
        b.add("lifeboat_drill_rpo_seconds", drill.get("rpo_s"), scenario=scenario)
        b.add("lifeboat_drill_rto_target_seconds", drill.get("rto_target_s"), scenario=scenario)
        b.add("lifeboat_drill_rpo_target_seconds", drill.get("rpo_target_s"), scenario=scenario)
        b.add("lifeboat_drill_passed", 1 if drill.get("passed") else 0, scenario=scenario)
        try:
            b.add("lifeboat_drill_last_timestamp_seconds", parse_time(str(drill.get("time"))).timestamp(),
                  scenario=scenario)
        except ValueError:
            pass
    for lease in report.get("leases") or []:
        b.add("lifeboat_lock_lease_stale", 1 if lease["state"] == "stale" else 0, lock=lease["kind"])
        try:
            b.add("lifeboat_lock_lease_since_timestamp_seconds", parse_time(str(lease.get("since"))).timestamp(),
                  lock=lease["kind"])
        except ValueError:
            pass
    b.add("lifeboat_backups_refused", report.get("refused_backups_in_window"))
    b.add("lifeboat_health_status", EXIT_CODES[report["status"]])
    return b.text()


def write_textfile(path: Union[str, Path], text: str) -> bool:
    """Write ``text`` to ``path`` atomically (mode 0644: the collector reads it; no secrets in it).

    Returns False (and writes nothing) when the file already has exactly this content.
    """
    path = Path(path)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True
