#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.key_rotate: rewrap every set's data key under a new key."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: key_rotate
short_description: Rotate the key-encryption key of a Lifeboat store without rewriting data
version_added: 0.1.0
description:
  - For every published backup set of the store (sets in the store root, kept-aside Vault sets and
    binary-log archive sets under C(binlogs/)), unwraps the set's data key with the old key (or the
    escrow key), wraps it under the new key and rewrites only the set's manifest, atomically
    (temporary file, fsync, rename, fsync of the folder). No artifact is rewritten.
  - The wrap under the old key is removed (O(keep_old=true) keeps it); escrow wraps are always kept.
  - After the rewrite each set must open with only the new key (data key and manifest MAC), else its
    old manifest is put back; with O(verify=true) each rotated set is then quick-verified with only the
    new key.
  - A set that cannot be rotated (no given key unwraps it, tampered manifest, a transit key for a set
    holding Vault) is reported in RV(failed_sets) and does not stop the others; the task then fails, after
    rotating every set it could.
  - Idempotent - a set already wrapped under the new key (with no old wrap left) is skipped.
  - Takes the store's C(rotate) and C(prune) locks; never waits for backups or binary-log archiving
    (sets published meanwhile are picked up by a re-scan; sets still being written are listed in
    RV(pending_partials)).
  - Each run (outside check mode) appends an audit record (action C(key_rotation)), a failed run too.
author:
  - Lifeboat contributors (!UNKNOWN)
options:
  store:
    description: Path of the backup store.
    type: path
    required: true
  key_file:
    description:
      - The old key file (32 bytes, mode 0600), whose wrap is replaced.
      - Omit it when it is lost and give O(escrow_key_file).
    type: path
  escrow_key_file:
    description: The escrow key file; it may unwrap the data keys, and its wraps are kept.
    type: path
  transit_url:
    description: Vault/OpenBao address for transit keys (the old O(transit_key) and/or O(new_transit_key)).
    type: str
  transit_token:
    description: Token allowed to encrypt/decrypt with the transit keys.
    type: str
  transit_mount:
    description: Mount point of the transit engine of the old key.
    type: str
    default: transit
  transit_key:
    description: Name of the old transit key, whose wrap is replaced.
    type: str
  new_key_file:
    description: The new key file (create one with C(lifeboat key create FILE)).
    type: path
  new_transit_key:
    description:
      - Name of a transit key to wrap under instead of O(new_key_file) (same Vault as O(transit_url)).
      - Refused for sets holding a Vault snapshot, which must stay readable while Vault is down.
    type: str
  new_transit_mount:
    description: Mount point of the new transit key (default O(transit_mount)).
    type: str
  keep_old:
    description: Keep the old key's wrap next to the new one (both keys then open the sets).
    type: bool
    default: false
  retire_key_ids:
    description: Also remove the wraps of these key ids (e.g. the lost old key when rotating with the escrow key).
    type: list
    elements: str
    default: []
  verify:
    description: Quick-verify each rotated set with only the new key (reads every artifact once).
    type: bool
    default: true
  lock_wait:
    description: Seconds to wait for a running prune or rotation.
    type: float
    default: 0
extends_documentation_fragment:
  - lifeboat.dr.attributes
attributes:
  check_mode:
    support: full
    details: Unwraps the data keys (proving the old keys work) and lists the sets that would be rotated; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
seealso:
  - module: lifeboat.dr.store_info
'''

EXAMPLES = r'''
- name: Show which sets would be rewrapped
  lifeboat.dr.key_rotate:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/backup.key
    escrow_key_file: /etc/lifeboat/escrow.key
    new_key_file: /etc/lifeboat/backup-2025.key
  check_mode: true

- name: Rotate to the new key (the old key's wraps are removed)
  lifeboat.dr.key_rotate:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/backup.key
    escrow_key_file: /etc/lifeboat/escrow.key
    new_key_file: /etc/lifeboat/backup-2025.key

- name: The old key is lost - rotate with the escrow key and drop the lost key's wraps
  lifeboat.dr.key_rotate:
    store: /var/backups/lifeboat
    escrow_key_file: /etc/lifeboat/escrow.key
    new_key_file: /etc/lifeboat/backup-2025.key
    retire_key_ids: [3f2a9c0d1e4b5a67]
'''

RETURN = r'''
new_key_id:
  description: Key id of the new key.
  returned: always
  type: str
retired_key_ids:
  description: Key ids whose wraps are removed.
  returned: always
  type: list
  elements: str
rotated:
  description:
    - Sets rewrapped (in check mode, that would be), each with C(set_id), C(path), C(key_ids) (after),
      C(removed_key_ids) and C(quick_verify) (C(passed), C(FAILED ...) or C(skipped)).
  returned: always
  type: list
  elements: dict
already_rotated:
  description: Sets already wrapped under the new key, left as they were.
  returned: always
  type: list
  elements: dict
failed_sets:
  description: Sets that could not be rotated, each with C(set_id), C(path), C(error), C(error_type).
  returned: always
  type: list
  elements: dict
skipped:
  description: Folders named like sets without a complete manifest (not backups).
  returned: always
  type: list
  elements: dict
verify_failed:
  description: Ids of rotated sets whose quick verification with the new key failed.
  returned: always
  type: list
  elements: str
pending_partials:
  description: Sets still being written under the old keys; run the rotation again after they are published.
  returned: always
  type: list
  elements: str
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import LifeboatModule, run_module
from ansible_collections.lifeboat.dr.plugins.module_utils.store import keyrotation


def argument_spec():
    """The module's options."""
    return dict(
        store=dict(type="path", required=True),
        key_file=dict(type="path"),
        escrow_key_file=dict(type="path"),
        transit_url=dict(type="str"),
        transit_token=dict(type="str", no_log=True),
        transit_mount=dict(type="str", default="transit"),
        transit_key=dict(type="str", no_log=False),
        new_key_file=dict(type="path"),
        new_transit_key=dict(type="str", no_log=False),
        new_transit_mount=dict(type="str"),
        keep_old=dict(type="bool", default=False),
        retire_key_ids=dict(type="list", elements="str", default=[], no_log=False),
        verify=dict(type="bool", default=True),
        lock_wait=dict(type="float", default=0.0),
    )


def run_rotation(module):
    """Rotate (check mode: list only); fail the task, with the full result, if any set failed."""
    result = keyrotation.rotate_from_options(module.params, check_mode=module.check_mode)
    problem = keyrotation.failure_exit_error(result)
    if problem:
        module.fail_json(msg=f"key rotation incomplete: {problem}", **result)
    return result


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="key_rotate",
                            required_one_of=[("key_file", "escrow_key_file", "transit_key"),
                                             ("new_key_file", "new_transit_key")],
                            mutually_exclusive=[("new_key_file", "new_transit_key")])
    run_module(module, run_rotation)


if __name__ == "__main__":
    main()
