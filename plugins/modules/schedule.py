#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.schedule: install the Lifeboat timetable (cron or systemd timers)."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: schedule
short_description: Install or remove Lifeboat's schedules as a cron.d file or systemd timers
version_added: 0.1.0
description:
  - Writes one cron file (O(backend=cron), default C(/etc/cron.d/lifeboat)) or one
    C(lifeboat-<name>.service) + C(.timer) pair per entry (O(backend=systemd)) for the
    scheduled jobs (daily full backup, binlog archiving, weekly verification, monthly drill...).
  - Idempotent; files are replaced atomically and only when their content differs. Files not
    written by Lifeboat are never overwritten or removed. O(state=absent) removes them.
  - Commands must not hold secrets (refused when they look like C(password=...)).
  - Appends an audit record to O(store) when given and something changed.
author:
  - Lifeboat contributors (!UNKNOWN)
options:
  entries:
    description:
      - The scheduled jobs. Each has C(name) (C([a-z0-9_-])), C(spec) (cron expression
        C(minute hour day month weekday)), C(command), optional C(user) and C(description),
        and C(enabled) (default true).
    type: list
    elements: dict
    default: []
  backend:
    description: Cron file or systemd timers.
    type: str
    choices: [cron, systemd]
    default: cron
  state:
    description: Install or remove.
    type: str
    choices: [present, absent]
    default: present
  cron_file:
    description: The cron file to manage.
    type: path
    default: /etc/cron.d/lifeboat
  systemd_dir:
    description: Folder for the systemd units.
    type: path
    default: /etc/systemd/system
  activate:
    description: With systemd, run C(systemctl daemon-reload) and enable/disable the timers after a change.
    type: bool
    default: true
  user:
    description: Default user entries run as.
    type: str
    default: root
  store:
    description: Store whose audit trail records schedule changes.
    type: path
extends_documentation_fragment:
  - lifeboat.dr.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
'''

EXAMPLES = r'''
- name: Install the default timetable in cron
  lifeboat.dr.schedule:
    entries:
      - {name: backup-full, spec: "0 2 * * *", command: "/opt/lifeboat/run backup"}
      - {name: binlog-archive, spec: "*/15 * * * *", command: "/opt/lifeboat/run binlog"}
      - {name: verify-weekly, spec: "0 3 * * 0", command: "/opt/lifeboat/run verify"}
      - {name: drill-monthly, spec: "0 4 1 * *", command: "/opt/lifeboat/run drill"}

- name: Remove it
  lifeboat.dr.schedule:
    state: absent
'''

RETURN = r'''
files_changed:
  description: Files written (in check mode, that would be written).
  returned: always
  type: list
  elements: str
files_removed:
  description: Files removed (in check mode, that would be removed).
  returned: always
  type: list
  elements: str
installed:
  description: Installed Lifeboat schedules after the run, with C(next_run) (UTC); not in check mode.
  returned: always
  type: list
  elements: dict
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import LifeboatModule, run_module
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import schedule
from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit


def argument_spec():
    """The module's options."""
    return dict(
        entries=dict(type="list", elements="dict", default=[]),
        backend=dict(type="str", choices=["cron", "systemd"], default="cron"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        cron_file=dict(type="path", default=schedule.DEFAULT_CRON_FILE),
        systemd_dir=dict(type="path", default=schedule.DEFAULT_SYSTEMD_DIR),
        activate=dict(type="bool", default=True),
        user=dict(type="str", default="root"),
        store=dict(type="path"),
    )


def install(module):
    """Apply the schedule; list what is installed afterwards."""
    p = module.params
    entries = schedule.entries_from_options(p["entries"], p["user"])
    result = schedule.apply(entries, backend=p["backend"], state=p["state"], cron_file=p["cron_file"],
                            systemd_dir=p["systemd_dir"], activate=p["activate"], check_mode=module.check_mode)
    if result["changed"] and not module.check_mode:
        audit.safe_append(p["store"], "schedule", p["backend"], "changed", state=p["state"],
                          entries=[e.name for e in entries], files=result["files_changed"] + result["files_removed"])
    result["installed"] = [] if module.check_mode else schedule.installed(p["cron_file"], p["systemd_dir"])
    return result


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="schedule")
    run_module(module, install)


if __name__ == "__main__":
    main()
