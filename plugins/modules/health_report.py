#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.health_report: measured health of a store, as JSON/HTML/metrics, with alerts."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: health_report
short_description: Report how well a Lifeboat store protects the stack, and alert on thresholds
version_added: 0.1.0
description:
  - Per component, the newest backup and its age, backup success rate in the window (job
    history), size trend and verification status; binlog archive lag; the last drill's RTO/RPO
    against its targets; and "if disaster struck now" - the restore time measured by the last
    full verification of each newest backup beside the current worst-case RPO (C(unknown)
    when not measured).
  - Overall status C(ok), C(warning) or C(critical) (see the thresholds).
  - Optionally writes the report as JSON, as a self-contained HTML page and as Prometheus
    textfile metrics (atomically), and sends alerts by webhook and e-mail. A failing
    notifier is reported in RV(alerts) and never fails the task.
author:
  - Lifeboat contributors (!UNKNOWN)
options:
  store:
    description: Path of the backup store.
    type: path
    required: true
  components:
    description: Components that must have backups (default those present in the store).
    type: list
    elements: str
  json_path:
    description: Write the report as JSON here.
    type: path
  html_path:
    description: Write the HTML page here.
    type: path
  metrics_path:
    description: Write Prometheus textfile metrics here (for node_exporter's textfile collector).
    type: path
  max_backup_age_hours:
    description: Warning when a component's newest backup is older.
    type: float
    default: 24
  rto_target_hours:
    description: Critical when the measured restore time of all components exceeds it.
    type: float
    default: 4
  rpo_target_hours:
    description: Critical when a component's current worst-case data loss exceeds it.
    type: float
    default: 26
  rpo_targets_hours:
    description:
      - "Per-component RPO targets (component -> hours), for example C({mysql: 0.5})."
    type: dict
    default: {}
  binlog_lag_warning_hours:
    description: Warning when the binlog archive lags more.
    type: float
    default: 0.5
  min_success_rate:
    description: Warning when the share of successful backup jobs in the window is lower (0..1).
    type: float
    default: 0.9
  window_hours:
    description: The window for success rates, trends and drills.
    type: float
    default: 168
  progress_stall_minutes:
    description:
      - Warning for a run in progress (C(<store>/progress/)) whose bytes have not moved for longer
        (a hung dump, a stalled replay). V(0) = per run, 4 times its progress interval and at least 1 minute.
    type: float
    default: 0
  webhooks:
    description: Webhook URLs (Slack/Teams-compatible JSON with a C(text) field).
    type: list
    elements: str
    default: []
  email:
    description: Send alerts by e-mail through this SMTP server.
    type: dict
    suboptions:
      host:
        description: SMTP server.
        type: str
        required: true
      port:
        description: SMTP port.
        type: int
        default: 25
      sender:
        description: From address.
        type: str
        default: lifeboat@localhost
      recipients:
        description: To addresses.
        type: list
        elements: str
        default: []
      username:
        description: SMTP login (no login when unset).
        type: str
      password:
        description: SMTP password.
        type: str
      starttls:
        description: Use STARTTLS when the server offers it (C(auto)), insist on it (C(always)) or never.
        type: str
        choices: [auto, always, never]
        default: auto
      ca_file:
        description: CA bundle to check the server certificate.
        type: path
      validate_certs:
        description: Check the server certificate.
        type: bool
        default: true
  alert_min_level:
    description: Alert from this status on.
    type: str
    choices: [warning, critical]
    default: warning
  fail_on:
    description: Fail the task when the status reaches this level (C(never) to only report).
    type: str
    choices: [never, warning, critical]
    default: never
extends_documentation_fragment:
  - lifeboat.dr.attributes
attributes:
  check_mode:
    support: full
    details: Builds the report; writes no file and sends no alert.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: Ages in the report change with time, so written files usually change.
'''

EXAMPLES = r'''
- name: Health report with HTML and metrics, alerting on critical
  lifeboat.dr.health_report:
    store: /var/backups/lifeboat
    html_path: /var/www/lifeboat/health.html
    metrics_path: /var/lib/node_exporter/textfile/lifeboat.prom
    webhooks: ["{{ slack_webhook_url }}"]
    alert_min_level: critical
  register: health
'''

RETURN = r'''
status:
  description: C(ok), C(warning) or C(critical).
  returned: always
  type: str
problems:
  description: What makes the status, each with C(level), C(component), C(message).
  returned: always
  type: list
  elements: dict
report:
  description: The whole report (components, binlog_archives, disaster_now, jobs_recent, runs_in_progress...).
  returned: always
  type: dict
alerts:
  description: One result per notifier (C(channel), C(target), C(ok), C(error)).
  returned: always
  type: list
  elements: dict
files_changed:
  description: Files written.
  returned: always
  type: list
  elements: str
'''

import json

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import LifeboatModule, run_module
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import alerts, health, metrics
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import VerificationFailed


def argument_spec():
    """The module's options."""
    return dict(
        store=dict(type="path", required=True),
        components=dict(type="list", elements="str"),
        json_path=dict(type="path"),
        html_path=dict(type="path"),
        metrics_path=dict(type="path"),
        max_backup_age_hours=dict(type="float", default=24.0),
        rto_target_hours=dict(type="float", default=4.0),
        rpo_target_hours=dict(type="float", default=26.0),
        rpo_targets_hours=dict(type="dict", default={}),
        binlog_lag_warning_hours=dict(type="float", default=0.5),
        min_success_rate=dict(type="float", default=0.9),
        window_hours=dict(type="float", default=168.0),
        progress_stall_minutes=dict(type="float", default=0.0),
        webhooks=dict(type="list", elements="str", default=[], no_log=True),
        email=dict(type="dict", no_log=False, options=dict(
            host=dict(type="str", required=True), port=dict(type="int", default=25),
            sender=dict(type="str", default="lifeboat@localhost"),
            recipients=dict(type="list", elements="str", default=[]), username=dict(type="str"),
            password=dict(type="str", no_log=True), starttls=dict(type="str", default="auto",
                                                                  choices=["auto", "always", "never"]),
            ca_file=dict(type="path"), validate_certs=dict(type="bool", default=True))),
        alert_min_level=dict(type="str", choices=["warning", "critical"], default="warning"),
        fail_on=dict(type="str", choices=["never", "warning", "critical"], default="never"),
    )


def report_health(module):
    """Build the report; write files and send alerts unless in check mode."""
    p = module.params
    report = health.build_report(p["store"], health.thresholds_from_options(p), components=p["components"])
    changed_files = []
    sent = []
    if not module.check_mode:
        outputs = ((p["json_path"], lambda: json.dumps(report, indent=2, sort_keys=True, default=str) + "\n"),
                   (p["html_path"], lambda: health.render_html(report)),
                   (p["metrics_path"], lambda: metrics.render(report)))
        for path, render in outputs:
            if path and metrics.write_textfile(path, render()):
                changed_files.append(path)
        config = alerts.config_from_options({"webhooks": p["webhooks"], "email": p["email"],
                                             "min_level": p["alert_min_level"]})
        sent = alerts.notify(report, config)
    if p["fail_on"] != "never" and alerts.should_alert(report["status"], p["fail_on"]):
        raise VerificationFailed(f"health is {report['status']}: " + "; ".join(
            f"{x['component']}: {x['message']}" for x in report["problems"]))
    return dict(changed=bool(changed_files), status=report["status"], problems=report["problems"], report=report,
                alerts=sent, files_changed=changed_files)


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="health_report")
    run_module(module, report_health)


if __name__ == "__main__":
    main()
