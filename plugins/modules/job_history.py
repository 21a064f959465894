#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.job_history: list the job history of a Lifeboat store."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: job_history
short_description: List the job history (backups, verifications, restores, PITR, prunes...) of a Lifeboat store
version_added: 0.1.0
description:
  - Reads C(<store>/jobs/history.jsonl), the history every Lifeboat module and playbook appends to,
    and returns the records oldest first, one per job (a start record completed later counts once).
  - The same list as C(lifeboat jobs --limit N --kind K).
  - Read-only.
author:
  - Lifeboat contributors (!UNKNOWN)
options:
  store:
    description: Path of the backup store.
    type: path
    required: true
  limit:
    description: Return only the newest this many records (0 = all).
    type: int
    default: 10
  kind:
    description: Only records of this kind.
    type: str
    choices: [backup, verify, restore, pitr, prune, drill, binlog_archive, key_rotation]
extends_documentation_fragment:
  - lifeboat.dr.attributes
attributes:
  check_mode:
    support: full
    details: The module never changes anything.
  diff_mode:
    support: none
  idempotent:
    support: full
seealso:
  - module: lifeboat.dr.job_record
  - module: lifeboat.dr.audit_verify
'''

EXAMPLES = r'''
- name: The last five restores
  lifeboat.dr.job_history:
    store: /var/backups/lifeboat
    kind: restore
    limit: 5
  register: restores
'''

RETURN = r'''
jobs:
  description:
    - Job records, oldest first - C(id), C(kind), C(start), C(end) (UTC), C(duration_s), C(result)
      (ok, failed, running), C(error), C(sizes) (bytes), C(backup_id), C(host), C(components),
      C(awx_job_id), C(details). See docs/operations.md.
  returned: always
  type: list
  elements: dict
count:
  description: Number of records returned.
  returned: always
  type: int
path:
  description: The history file read.
  returned: always
  type: str
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import LifeboatModule, run_module
from ansible_collections.lifeboat.dr.plugins.module_utils.store import jobs


def list_jobs(module):
    """Read the history (newest ``limit`` records of ``kind``)."""
    p = module.params
    records = jobs.read_jobs(p["store"], limit=p["limit"] or None, kind=p["kind"])
    return dict(changed=False, jobs=records, count=len(records), path=str(jobs.history_path(p["store"])))


def main():
    module = LifeboatModule(argument_spec=dict(store=dict(type="path", required=True),
                                               limit=dict(type="int", default=10),
                                               kind=dict(type="str", choices=list(jobs.KINDS))),
                            supports_check_mode=True, component="job_history")
    run_module(module, list_jobs)


if __name__ == "__main__":
    main()
