#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.job_record: write job history (and audit) records from playbooks."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: job_record
short_description: Record the start or end of a Lifeboat job in the store's job history
version_added: 0.1.0
description:
  - Appends a record to C(<store>/jobs/history.jsonl) (flock, fsync) for a run of a backup,
    verification, restore, PITR, prune or drill, and a matching record to the hash-chained
    audit trail C(<store>/audit/audit.jsonl).
  - Call it with O(state=started) at the start of a play (it returns the job C(id)) and with
    O(state=finished) and that O(id) at the end (in an C(always:) section), or once with
    O(state=finished) and O(start) for a job that already ran.
  - Details must not contain secrets; keys that look like secrets are replaced by C([redacted]).
author:
  - Lifeboat contributors (!UNKNOWN)
options:
  store:
    description: Path of the backup store.
    type: path
    required: true
  state:
    description: C(started) writes a C(running) record; C(finished) writes the final one.
    type: str
    choices: [started, finished]
    default: finished
  id:
    description: The job id returned by O(state=started) (for O(state=finished)).
    type: str
  kind:
    description: What kind of job (needed unless O(id) names a started job).
    type: str
    choices: [backup, verify, restore, pitr, prune, drill, binlog_archive, key_rotation]
  result:
    description: Outcome, for O(state=finished).
    type: str
    choices: [ok, failed]
    default: ok
  start:
    description: Start time (ISO 8601 UTC ending in Z) for a one-shot O(state=finished) record; default now.
    type: str
  error:
    description: The error message of a failed job (no secrets).
    type: str
  backup_id:
    description: The backup set the job produced or used.
    type: str
  components:
    description: Components the job covered.
    type: list
    elements: str
    default: []
  sizes:
    description: Byte counts by name (for example C(stored_bytes)).
    type: dict
    default: {}
  target:
    description: What the job acted on, for the audit record (default the backup id).
    type: str
  details:
    description:
      - Small, non-secret extra data. For a restore, C(verified) (bool) and C(kept_aside) (paths or
        set ids) let retention prune the data the restore kept aside.
    type: dict
    default: {}
extends_documentation_fragment:
  - lifeboat.dr.attributes
attributes:
  check_mode:
    support: full
    details: Writes nothing in check mode.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every call appends a record.
'''

EXAMPLES = r'''
- name: Job starts
  lifeboat.dr.job_record:
    store: "{{ lifeboat_store }}"
    state: started
    kind: backup
  register: job

- name: Job ends
  lifeboat.dr.job_record:
    store: "{{ lifeboat_store }}"
    id: "{{ job.id }}"
    result: "{{ 'failed' if backup_failed | default(false) else 'ok' }}"
    backup_id: "{{ backup.set_id | default(omit) }}"
'''

RETURN = r'''
id:
  description: The job id.
  returned: success
  type: str
  sample: job_20250129T020000Z_1a2b3c4d
record:
  description: The job record written (or that would be written in check mode).
  returned: success
  type: dict
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import LifeboatModule, run_module
from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit, jobs
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import utc_now
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError


def argument_spec():
    """The module's options."""
    return dict(
        store=dict(type="path", required=True),
        state=dict(type="str", choices=["started", "finished"], default="finished"),
        id=dict(type="str"),
        kind=dict(type="str", choices=list(jobs.KINDS)),
        result=dict(type="str", choices=["ok", "failed"], default="ok"),
        start=dict(type="str"),
        error=dict(type="str"),
        backup_id=dict(type="str"),
        components=dict(type="list", elements="str", default=[]),
        sizes=dict(type="dict", default={}),
        target=dict(type="str"),
        details=dict(type="dict", default={}),
    )


def record(module):
    """Write the record (nothing in check mode)."""
    p = module.params
    fields = dict(backup_id=p["backup_id"], components=p["components"] or None, sizes=p["sizes"] or None)
    fields = {k: v for k, v in fields.items() if v is not None}
    if p["state"] == "started" or not p["id"]:
        if not p["kind"]:
            raise ConfigError("job_record needs kind (or the id of a started job)")
    if module.check_mode:
        return dict(changed=True, id=p["id"], record=dict(kind=p["kind"], state=p["state"], **fields))
    if p["state"] == "started":
        rec = jobs.start_job(p["store"], p["kind"], **fields, **p["details"])
    elif p["id"]:
        rec = jobs.finish_job(p["store"], p["id"], p["result"], error=p["error"], details=p["details"], **fields)
    else:
        rec = jobs.record_job(p["store"], p["kind"], start=p["start"] or utc_now(), result=p["result"],
                              error=p["error"], **fields, **p["details"])
    if p["state"] == "finished":
        audit.safe_append(p["store"], rec["kind"], p["target"] or rec.get("backup_id") or "", p["result"],
                          job_id=rec["id"], error=p["error"])
    return dict(changed=True, id=rec["id"], record=rec)


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="job_record")
    run_module(module, record)


if __name__ == "__main__":
    main()
