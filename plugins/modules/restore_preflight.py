#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.restore_preflight: prove the set, the keys and the credentials before a restore."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: restore_preflight
short_description: Prove a backup set, its keys and the Vault token good before a restore changes anything
version_added: 0.1.0
description:
  - Run by C(restore.yml) and C(pitr.yml) before any safety copy is taken or any service is stopped;
    changes nothing.
  - With O(backup_id) (and each of O(sets)) - the set opens (its manifest is valid), holds O(components),
    its data key unwraps with EACH key given (O(key_file), O(escrow_key_file) and the transit key, each
    on its own, so a wrong escrow key is found now and not when the escrow key is needed), the manifest
    authenticates, and every artifact and file of O(components) reads back (size, SHA-256, every chunk
    authenticated; nothing is written to disk).
  - With O(url) - C(sys/capabilities-self) shows the token may C(read) C(sys/storage/raft/snapshot) (the
    safety copy) and C(update) C(sys/storage/raft/snapshot-force) (the restore); a missing capability is
    named with its path and the policy line that grants it. A sealed or uninitialised Vault cannot answer;
    that is reported in RV(vault_note), not refused (the restore unseals it).
  - Fails naming every failed check; RV(duration_s) is the time the checks took.
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.attributes
options:
  backup_id:
    description:
      - The set to check. Unset checks no set (only the Vault token, with O(url)).
    type: str
  sets:
    description:
      - Further sets the run reads whole (e.g. the binlog sets a PITR replays), each checked as O(backup_id)
        is (every component it holds).
    type: list
    elements: dict
    default: []
    suboptions:
      set_id:
        description: The set id.
        type: str
        required: true
      parent:
        description: The folder below the store holding the set (binlog sets), as the PITR plan names it.
        type: str
  store_keys:
    description:
      - Also prove that the keys given are the store's own (they will write the pre-restore safety copy),
        each must open the data key of the newest set in O(store). For restores from another store
        (C(lifeboat_source_store)), where the set check used that store's keys.
    type: bool
    default: false
  components:
    description:
      - The components the restore reads from O(backup_id).
    type: list
    elements: str
    default: [mysql, redis, vault, app]
  url:
    description:
      - Vault/OpenBao address whose token's raft snapshot capabilities are checked; unset skips that check.
    type: str
  token:
    description:
      - The token whose capabilities are checked.
    type: str
  vault_uses:
    description:
      - What O(token) is used for, which sets the capabilities checked - C(safety_copy) needs C(read) on
        C(sys/storage/raft/snapshot), C(restore) needs C(update) on C(sys/storage/raft/snapshot-force).
    type: list
    elements: str
    choices: [safety_copy, restore]
    default: [safety_copy, restore]
  ca_cert:
    description:
      - CA bundle for O(url).
    type: path
  validate_certs:
    description:
      - Verify the TLS certificate of O(url).
    type: bool
    default: true
  namespace:
    description:
      - Vault namespace.
    type: str
  timeout:
    description:
      - Seconds one Vault request may take.
    type: int
    default: 30
attributes:
  check_mode:
    support: full
    details: Only reads; the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
seealso:
  - module: lifeboat.dr.backup_verify
'''

EXAMPLES = r'''
- name: Prove the set and the keys before anything is stopped
  lifeboat.dr.restore_preflight:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/backup.key
    escrow_key_file: /etc/lifeboat/escrow.key
    backup_id: full_20250101T000000Z_abcdef
    components: [mysql, redis]

- name: A PITR's base and every binlog set it replays, before the app is stopped
  lifeboat.dr.restore_preflight:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/backup.key
    backup_id: "{{ plan.base.set_id }}"
    components: [mysql]
    sets: "{{ plan.replay | map('dict2items') | map('selectattr', 'key', 'in', ['set_id', 'parent'])
              | map('items2dict') | list }}"

- name: The Vault token may take and force-restore raft snapshots
  lifeboat.dr.restore_preflight:
    store: /var/backups/lifeboat
    url: https://vault.example.com:8200
    token: "{{ vault_token }}"
'''

RETURN = r'''
ok:
  description: Whether every check passed (the module fails otherwise).
  returned: success
  type: bool
  sample: true
checks:
  description: Every check, with its name, result and detail.
  returned: success
  type: list
  elements: dict
  sample: [{"name": "key /etc/lifeboat/backup.key (key id 1a2b) unwraps the data key", "ok": true, "detail": ""}]
bytes_checked:
  description: Stored bytes of the artifacts read back.
  returned: success
  type: int
  sample: 1073741824
duration_s:
  description: Seconds the checks took.
  returned: success
  type: float
  sample: 2.4
vault_note:
  description: Why the Vault token was not checked (sealed or uninitialised Vault), else empty.
  returned: success
  type: str
  sample: ""
'''

import time

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    keyring_from_params,
    merge_specs,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.ops.restore_preflight import (
    check_set,
    check_store_keys,
    check_vault_capabilities,
    refuse_unless_ok,
    vault_capabilities_for,
)


def argument_spec():
    """The module's options: the store layer and its own (Vault connection optional)."""
    return merge_specs(store_argument_spec(), dict(
        backup_id=dict(type="str"),
        sets=dict(type="list", elements="dict", default=[], options=dict(
            set_id=dict(type="str", required=True),
            parent=dict(type="str"),
        )),
        components=dict(type="list", elements="str", default=["mysql", "redis", "vault", "app"]),
        store_keys=dict(type="bool", default=False),
        url=dict(type="str"),
        token=dict(type="str", no_log=True),
        vault_uses=dict(type="list", elements="str", choices=["safety_copy", "restore"],
                        default=["safety_copy", "restore"]),
        ca_cert=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
        namespace=dict(type="str"),
        timeout=dict(type="int", default=30),
    ))


def vault_checks(params):
    """The token's capability checks, or ([], why not) for a sealed/uninitialised Vault."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.vault.conn import connect_params

    conn = connect_params(dict(params, auth_method="token", role_id=None, secret_id=None))
    health = conn.health()
    if not health.get("initialized") or health.get("sealed"):
        state = "sealed" if health.get("initialized") else "not initialised"
        return [], (f"{params['url']} is {state}: the token's capabilities are checked once the restore has "
                    "unsealed it")
    return check_vault_capabilities(conn, vault_capabilities_for(params["vault_uses"])), ""


def preflight(module):
    """Run the checks the options ask for; fail naming every failed one."""
    params = module.params
    started = time.monotonic()
    checks, note, bytes_checked, what = [], "", 0, "the restore"
    if params["backup_id"] or params["sets"]:
        keyring = keyring_from_params(params)
        reports = [check_set(params["store"], params["backup_id"], keyring, params["components"])
                   ] if params["backup_id"] else []
        reports += [check_set(params["store"], s["set_id"], keyring, parent=s["parent"]) for s in params["sets"]]
        checks += [c for r in reports for c in r["checks"]]
        bytes_checked = sum(r["bytes_checked"] for r in reports)
        what = f"the restore of {params['backup_id'] or params['sets'][0]['set_id']}"
    if params["store_keys"]:
        checks += check_store_keys(params["store"], keyring_from_params(params))
    if params["url"]:
        found, note = vault_checks(params)
        checks += found
    refuse_unless_ok(what, checks)
    return dict(changed=False, ok=True, checks=checks, bytes_checked=bytes_checked, vault_note=note,
                duration_s=round(time.monotonic() - started, 3))


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="preflight")
    run_module(module, preflight)


if __name__ == "__main__":
    main()
