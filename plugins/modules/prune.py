#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.prune: apply the retention policy to a store."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: prune
short_description: Apply a retention policy (GFS) to a Lifeboat store
version_added: 0.1.0
description:
  - Decides for every backup set whether to keep it (grandfather-father-son rules per set
    type, as C(restic forget)) and deletes the rest, with the reasons for each decision.
  - Never deletes the newest verified full backup, the newest set of each type, a set a kept
    incremental set depends on, sets younger than O(min_age_hours), or binary-log archives a
    kept base backup needs to roll forward.
  - Also removes verification records older than O(verification_days) (never the latest, nor
    the latest passed full one, of a kept set), drill report files older than O(drill_report_days),
    data kept aside by earlier restores (C(*.lbprev-*) folders in O(kept_aside_roots), kept-aside
    vault sets) older than O(kept_aside_days) once that restore is recorded as verified, and
    unfinished sets untouched for O(stale_partial_hours) with no live writer.
  - Takes the store's C(prune) lock. In check mode it lists exactly what would go and why.
  - Each run (outside check mode) appends a C(prune) job record and an audit record (a failed run too).
author:
  - Lifeboat contributors (!UNKNOWN)
options:
  store:
    description: Path of the backup store.
    type: path
    required: true
  keep_last:
    description: Keep this many newest sets of each type.
    type: int
    default: 0
  keep_daily:
    description: Keep the newest set of each of the last N days that have one.
    type: int
    default: 7
  keep_weekly:
    description: Keep the newest set of each of the last N ISO weeks that have one.
    type: int
    default: 4
  keep_monthly:
    description: Keep the newest set of each of the last N months that have one.
    type: int
    default: 3
  keep_within_days:
    description: Keep every set started within this many days of the newest set of its type.
    type: float
    default: 7
  per_type:
    description:
      - Rules for one set type (C(full), C(mysql), C(redis), C(vault), C(app)), same keys as the
        top-level ones (C(keep_last), C(keep_daily), C(keep_weekly), C(keep_monthly),
        C(keep_within_days)); missing keys take the top-level values.
    type: dict
    default: {}
  min_age_hours:
    description: Never delete a set younger than this.
    type: float
    default: 1
  binlog_keep_days:
    description: Keep binary-log archives younger than this even when no base backup needs them.
    type: float
    default: 7
  verification_days:
    description: Remove verification records older than this.
    type: float
    default: 30
  drill_report_days:
    description: Remove drill report files older than this.
    type: float
    default: 90
  kept_aside_days:
    description: Remove data kept aside by a verified restore after this many days.
    type: float
    default: 7
  kept_aside_roots:
    description: Folders holding restore targets whose C(<name>.lbprev-<UTC>) siblings are kept-aside data.
    type: list
    elements: path
    default: []
  stale_partial_hours:
    description: Remove unfinished sets untouched for this long (only without a live writer or lease).
    type: float
    default: 24
  lock_wait:
    description: Seconds to wait for another prune to finish.
    type: float
    default: 0
extends_documentation_fragment:
  - lifeboat.dr.attributes
attributes:
  check_mode:
    support: full
    details: Lists what would be deleted and why; deletes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
seealso:
  - module: lifeboat.dr.store_info
'''

EXAMPLES = r'''
- name: Show what the retention policy would delete
  lifeboat.dr.prune:
    store: /var/backups/lifeboat
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 6
  check_mode: true
  register: preview

- name: Prune, keeping app sets longer
  lifeboat.dr.prune:
    store: /var/backups/lifeboat
    per_type:
      app: {keep_daily: 14}
    kept_aside_roots: [/srv/app]
'''

RETURN = r'''
deleted_sets:
  description: Sets deleted (in check mode, that would be deleted), each with C(set_id), C(type), C(path), C(reasons).
  returned: always
  type: list
  elements: dict
kept_sets:
  description: Sets kept, each with the reasons that keep it.
  returned: always
  type: list
  elements: dict
deleted_side:
  description: Verification records, drill reports, kept-aside data and stale partial sets removed, with reasons.
  returned: always
  type: list
  elements: dict
kept_side:
  description: Side data kept, with reasons.
  returned: always
  type: list
  elements: dict
freed_bytes:
  description: Bytes freed (0 in check mode).
  returned: always
  type: int
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import LifeboatModule, run_module
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import retention
from ansible_collections.lifeboat.dr.plugins.module_utils.store import oplog


def argument_spec():
    """The module's options."""
    return dict(
        store=dict(type="path", required=True),
        keep_last=dict(type="int", default=0),
        keep_daily=dict(type="int", default=7),
        keep_weekly=dict(type="int", default=4),
        keep_monthly=dict(type="int", default=3),
        keep_within_days=dict(type="float", default=7.0),
        per_type=dict(type="dict", default={}),
        min_age_hours=dict(type="float", default=1.0),
        binlog_keep_days=dict(type="float", default=7.0),
        verification_days=dict(type="float", default=30.0),
        drill_report_days=dict(type="float", default=90.0),
        kept_aside_days=dict(type="float", default=7.0),
        kept_aside_roots=dict(type="list", elements="path", default=[]),
        stale_partial_hours=dict(type="float", default=24.0),
        lock_wait=dict(type="float", default=0.0),
    )


def run_prune(module):
    """Build the policy from the options and prune (check mode: plan only)."""
    params = module.params
    policy = retention.policy_from_options(params)
    return oplog.run_recorded(params["store"], "prune", lambda handle: retention.prune(
        params["store"], policy, check_mode=module.check_mode, kept_aside_roots=params["kept_aside_roots"],
        lock_wait_s=params["lock_wait"]), check_mode=module.check_mode, record_success=False,
        target=params["store"])


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="prune")
    run_module(module, run_prune)


if __name__ == "__main__":
    main()
