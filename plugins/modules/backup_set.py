#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.backup_set: open, publish, abort or pick a multi-component backup set."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: backup_set
short_description: Open, publish or abort one backup set written by several tasks; pick a set
version_added: 0.1.0
description:
  - A full-system backup is written by several tasks (one per component, possibly on different
    hosts and in parallel) into B(one) set. This module drives the set around them.
  - O(action=open) begins the set in the store (taking the store's C(create) lock, kept as a lease
    while the set is open) and returns its RV(set_id); component modules
    (M(lifeboat.dr.mysql_backup), M(lifeboat.dr.redis_backup), M(lifeboat.dr.vault_backup),
    M(lifeboat.dr.files_backup)) write into it when given C(set_id).
  - O(action=publish) refuses when a component wrote nothing, else reads every artifact back
    (quick verification, unless O(quick_verify=false)), writes the manifest and renames the set into
    place atomically. The verification record goes to C(<store>/verifications/<set_id>/).
  - O(action=abort) removes the open set; nothing is published.
  - Publish and abort append the set's record to the job history (C(<store>/jobs/history.jsonl),
    kind C(backup), one record per set - an abort after a failed publish replaces it) and an
    audit record; a failure to write them is logged, never fails the task.
  - The lease of an open set lasts 5 minutes and every step (each component module, publish)
    renews it. O(action=open) takes over the lease of an earlier run at once when its
    O(run_owner) is provably gone (same host and boot, process dead or its pid reused), else
    when its lease expired; the earlier run's partial set is removed and the takeover is
    recorded in the job history and the audit trail. An open refused because another run
    holds the lease is recorded as a C(refused) backup job.
  - O(action=resolve) picks a published set (O(backup_id), or the newest usable one) and returns
    its summary; it changes nothing.
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.attributes
options:
  action:
    description:
      - What to do, see the description.
    type: str
    required: true
    choices: [open, publish, abort, resolve]
  components:
    description:
      - Components of the set (O(action=open)) or that the set must hold (O(action=resolve)).
    type: list
    elements: str
    default: [mysql, redis, vault, app]
  set_id:
    description:
      - The open set, for O(action=publish) and O(action=abort).
    type: str
  owner:
    description:
      - Who drives the set (e.g. the playbook run), recorded in the set. No secrets.
    type: str
  purpose:
    description:
      - Why the set is taken; C(pre-restore) sets are safety copies that O(action=resolve) never picks by default.
    type: str
    default: backup
    choices: [backup, pre-restore]
  reason:
    description:
      - Why the set is aborted (logged).
    type: str
    default: aborted by the playbook
  quick_verify:
    description:
      - Read back and authenticate every artifact before publishing.
    type: bool
    default: true
  backup_id:
    description:
      - For O(action=resolve), the set to use; unset or C(latest) picks the newest fitting set.
    type: str
  want:
    description:
      - For O(action=resolve) without O(backup_id) - C(restorable) is the newest set whose latest
        verification did not fail; C(unverified_full) the newest such set without a passing full verification.
    type: str
    default: restorable
    choices: [restorable, unverified_full]
attributes:
  check_mode:
    support: full
    details: open, publish and abort report what they would do and change nothing; resolve runs as usual.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: open creates a new set every time; abort of a set already gone reports no change.
seealso:
  - module: lifeboat.dr.backup_verify
'''

EXAMPLES = r'''
- name: Open a set for MySQL and Redis
  lifeboat.dr.backup_set:
    action: open
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    components: [mysql, redis]
  register: opened

- name: Publish it after the component tasks
  lifeboat.dr.backup_set:
    action: publish
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    set_id: "{{ opened.set_id }}"
'''

RETURN = r'''
set_id:
  description: The set opened, published, aborted or picked.
  returned: success
  type: str
  sample: full_20250129T020000Z_a1b2c3
components:
  description: Components of the set.
  returned: success
  type: list
  elements: str
stored_bytes:
  description: Bytes the published set takes in the store.
  returned: publish, resolve
  type: int
per_component:
  description: Per component, stored and plaintext bytes.
  returned: publish, resolve
  type: dict
capture:
  description: Per component, the capture window (started, finished; UTC).
  returned: publish, resolve
  type: dict
methods:
  description: Per component, the backup method its engine recorded (e.g. C(mysql) C(physical)); a
    restore's safety copy of that component is taken the same way.
  returned: publish, resolve
  type: dict
verification:
  description: Result of the quick verification at publish (mode, ok, record path).
  returned: publish
  type: dict
status:
  description: Catalog status of the picked set (complete, verified, failed).
  returned: resolve
  type: str
would:
  description: What the action would do (check mode).
  returned: check mode
  type: str
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    codec_from_params,
    keyring_from_params,
    merge_specs,
    run_module,
    run_owner_from_params,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import orchestrate


def argument_spec():
    """The module's options: the store layer and its own."""
    return merge_specs(store_argument_spec(), dict(
        action=dict(type="str", required=True, choices=["open", "publish", "abort", "resolve"]),
        components=dict(type="list", elements="str", default=["mysql", "redis", "vault", "app"]),
        set_id=dict(type="str"),
        owner=dict(type="str"),
        purpose=dict(type="str", default="backup", choices=["backup", "pre-restore"]),
        reason=dict(type="str", default="aborted by the playbook"),
        quick_verify=dict(type="bool", default=True),
        backup_id=dict(type="str"),
        want=dict(type="str", default="restorable", choices=["restorable", "unverified_full"]),
    ))


def act(module):
    """Run the action (check mode: describe it)."""
    p = module.params
    components = orchestrate.parse_components(p["components"])
    if p["action"] == "resolve":
        return dict(changed=False, **orchestrate.resolve_set(p["store"], components, p["backup_id"], want=p["want"]))
    if p["action"] != "open" and not p["set_id"]:
        module.fail_json(msg=f"action={p['action']} needs set_id")
    if module.check_mode:
        return _describe(p, components)
    if p["action"] == "abort":
        return orchestrate.abort_multi_set_recorded(p["store"], p["set_id"], p["reason"])
    keyring = keyring_from_params(p)
    if p["action"] == "open":
        opened = orchestrate.open_multi_set_recorded(p["store"], components, keyring, codec=codec_from_params(p),
                                                     owner=p["owner"], purpose=p["purpose"],
                                                     run_owner=run_owner_from_params(p))
        return dict(changed=True, **opened)
    return dict(changed=True, **orchestrate.publish_multi_set_recorded(p["store"], p["set_id"], keyring,
                                                                       quick_verify=p["quick_verify"]))


def _describe(p, components):
    if p["action"] == "open":
        return dict(changed=True, set_id=None, components=components,
                    would=f"open a {orchestrate.set_type_for(components)} set for {', '.join(components)} "
                          f"in {p['store']}")
    if p["action"] == "publish":
        missing = orchestrate.missing_components(p["store"], p["set_id"])
        return dict(changed=True, set_id=p["set_id"], missing=missing,
                    would=f"publish set {p['set_id']}" + (f" (but {', '.join(missing)} wrote nothing)" if missing
                                                          else ""))
    return dict(changed=True, set_id=p["set_id"], would=f"abort set {p['set_id']}")


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="set")
    run_module(module, act)


if __name__ == "__main__":
    main()
