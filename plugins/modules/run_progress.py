#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.run_progress: wait for an async Lifeboat run, printing its progress."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: run_progress
short_description: Wait for a long Lifeboat run started with async, printing its progress while it works
version_added: 0.1.0
description:
  - The roles start long steps (component backups and restores) with C(async) and C(poll) set to 0,
    then hand the registered result to this task. Every O(interval_s) seconds it prints one
    progress line per host (bytes done and total, rate, ETA, current step) read from the run's
    status file C(<store>/progress/<progress_id>.json); when the run ends, the task's result is
    the run's own result - a failure fails this task with the run's error.
  - Before the first line it also polls 1, 3, 7, ... seconds after the start, silently, so a short
    step ends as soon as it is done.
  - The lines go through Ansible's display, so they show with no terminal (cron, AWX). With a
    JSON stdout callback (a C(json) callback) they go to stderr so that stdout stays one JSON document.
  - When O(job) is not an async start (the step ran synchronously, e.g. in check mode or with
    O(interval_s=0)), the task returns O(job) unchanged at once.
  - The action plugin does the waiting; the module is what it runs on the host, once per poll.
  - A run that stops with its controller (backups, copies) on a host that cannot see the controller
    process (the controller is another machine) is tethered to these polls; each poll records itself
    in C(<store>/progress/<progress_id>.poll) and the polls come at least every 8 s (a line still
    every O(interval_s)); once they stop for that beat plus 10 s, the run takes its controller as
    gone and stops itself - within 30 s of the controller's death.
author:
  - Lifeboat contributors (!UNKNOWN)
options:
  job:
    description: The registered result of the async start (its C(ansible_job_id)), or of a synchronous run.
    type: dict
    required: true
  store:
    description: Path of the backup store that holds the run's status file.
    type: path
  progress_id:
    description: The O(lifeboat.dr.mysql_backup#module:progress_id) given to the run.
    type: str
  interval_s:
    description: Seconds between progress lines.
    type: float
    default: 15.0
  label:
    description: What the line calls the run, e.g. C(mysql backup).
    type: str
    default: run
  jid:
    description: Internal (set by the action plugin); the async job id.
    type: str
  async_dir:
    description: Internal (set by the action plugin); the async job folder on the host.
    type: path
  poll_beat_s:
    description: Internal (set by the action plugin); the most seconds until its next poll.
    type: float
extends_documentation_fragment:
  - lifeboat.dr.attributes
attributes:
  action:
    description: Has an action plugin; the waiting runs on the controller.
    support: full
  async:
    description: Supports being used with the C(async) keyword.
    support: none
  check_mode:
    support: full
    details: In check mode the step ran synchronously; its result is returned as it is.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: It only reads.
notes:
  - AWX cannot run on the test machine; there the lines reach the job output as display
    (verbose) events - see C(docs/operations.md).
seealso:
  - module: lifeboat.dr.mysql_backup
'''

EXAMPLES = r'''
- name: Start the mysql backup
  lifeboat.dr.mysql_backup:
    store: /var/backups/lifeboat
    login_user: backup
    login_password: "{{ vault_mysql_backup_password }}"
    progress_id: "db1-mysql-backup"
    progress_interval_s: 15
    run_owner: "{{ lifeboat_run_owner }}"
  async: 86400
  poll: 0
  register: started

- name: Wait for it, a progress line every 15 s
  lifeboat.dr.run_progress:
    job: "{{ started }}"
    store: /var/backups/lifeboat
    progress_id: "db1-mysql-backup"
    interval_s: 15
    label: mysql backup
  register: backup
'''

RETURN = r'''
finished:
  description: True once the run ended (always, when the task returns).
  returned: always
  type: bool
progress:
  description: On a poll while the run works (module only), the run's status file as read, judged (C(liveness)).
  returned: when the run still works
  type: dict
progress_line:
  description: On a poll while the run works (module only), the one-line description printed.
  returned: when the run still works
  type: str
tethered:
  description:
    - On a poll while the run works (module only), true when this host cannot see the run's
      controller, so the run is kept alive by the polls (recorded in its C(.poll) file).
  returned: when the run still works
  type: bool
'''

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lifeboat.dr.plugins.module_utils.store.locks import owner_state
from ansible_collections.lifeboat.dr.plugins.module_utils.store.runstatus import (
    STOP_WITH_OWNER,
    describe_run,
    judge_run,
    poll_path,
    progress_dir,
    record_poll,
    safe_run_id,
)


def read_job(async_dir: str, jid: str):
    """The async job's result file as a dict; ``{}`` while it is not written; ``None`` if absent."""
    path = os.path.join(async_dir, jid)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def status_path(store, progress_id):
    """The path of the run's status file; ``None`` without a store or id."""
    if not store or not progress_id:
        return None
    return progress_dir(store) / f"{safe_run_id(progress_id)}.json"


def read_status(store, progress_id):
    """The run's status file, judged; ``None`` when there is none."""
    path = status_path(store, progress_id)
    if path is None:
        return None
    try:
        return judge_run(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def tether(path, status, beat_s):
    """Record this poll for a run that stops with its controller but cannot see it from this host
    (the controller is another machine); True when it did. A poll that raced the run's end leaves no file."""
    owner = status.get("run_owner")
    if status.get("kind") not in STOP_WITH_OWNER or not owner or owner_state(owner) != "unknown":
        return False
    try:
        record_poll(path, beat_s)
        if not path.exists():
            os.unlink(poll_path(path))
    except OSError:
        return False
    return True


def message_text(entry):
    """The text of one warning or deprecation of a finished job's result: a string, or the
    structured form ansible-core 2.19 writes (a dict with ``msg``, or with ``event.msg``)."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        event = entry.get("event") if isinstance(entry.get("event"), dict) else {}
        text = entry.get("msg") or event.get("msg")
        if isinstance(text, str):
            return text
    return str(entry)


def pass_on_messages(module, data):
    """Re-issue the job's warnings and deprecations through ``module`` (exit_json refuses them
    as result keys in their structured form), so the task shows each of them once."""
    for entry in data.pop("warnings", None) or []:
        module.warn(message_text(entry))
    for entry in data.pop("deprecations", None) or []:
        module.warn(f"deprecated: {message_text(entry)}")


def finished_job(data, async_dir, jid):
    """The run's own result, marked finished; the job file is removed (it is read once)."""
    data["finished"] = True
    data["ansible_job_id"] = jid
    try:
        os.unlink(os.path.join(async_dir, jid))
    except OSError:
        pass
    return data


def main():
    module = AnsibleModule(argument_spec=dict(
        job=dict(type="dict", required=True), store=dict(type="path"), progress_id=dict(type="str"),
        interval_s=dict(type="float", default=15.0), label=dict(type="str", default="run"), jid=dict(type="str"),
        async_dir=dict(type="path"), poll_beat_s=dict(type="float"),
    ), supports_check_mode=True)
    p = module.params
    if not p["jid"] or not p["async_dir"]:
        module.fail_json(msg="run_progress: the module is run by its action plugin, which sets jid and async_dir")
    data = read_job(p["async_dir"], p["jid"])
    if data is None:
        module.fail_json(msg=f"run_progress: no async job {p['jid']} on this host", finished=True)
    if data.get("finished") or (data and "started" not in data):
        pass_on_messages(module, data)
        module.exit_json(**finished_job(data, p["async_dir"], p["jid"]))
    status = read_status(p["store"], p["progress_id"])
    if status and status.get("liveness") in ("dead", "abandoned"):
        time.sleep(1.0)  # the async wrapper writes the result right after its module exits
        data = read_job(p["async_dir"], p["jid"]) or {}
        if data.get("finished") or (data and "started" not in data):
            pass_on_messages(module, data)
            module.exit_json(**finished_job(data, p["async_dir"], p["jid"]))
        module.fail_json(msg=f"{p['label']}: the run's process {status.get('pid')} on {status.get('host')} "
                             f"is gone without a result ({status.get('reason') or 'killed?'}); see its job "
                             f"history and the store's open sets (lifeboat health)", finished=True)
    line = describe_run(status) if status else f"{p['label']}: starting (no progress reported yet)"
    tethered = bool(status) and tether(status_path(p["store"], p["progress_id"]), status,
                                       p["poll_beat_s"] or p["interval_s"])
    module.exit_json(changed=False, finished=False, progress=status, progress_line=line, tethered=tethered)


if __name__ == "__main__":
    main()
