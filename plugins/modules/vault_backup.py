#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: vault_backup
short_description: Raft snapshot of Vault/OpenBao into an encrypted backup set
version_added: 0.1.0
description:
  - Streams a raft snapshot (C(sys/storage/raft/snapshot)) of a Vault/OpenBao cluster into a
    new backup set as C(vault/raft.snap.enc), checking the snapshot's own C(SHA256SUMS) and
    C(meta.json) while it streams. The snapshot is already gzip'd, so it is stored uncompressed.
  - Records cluster id and name, server version and the snapshot's raft index and term.
  - Only integrated storage (raft) is supported; other storage backends are refused with what to do.
  - The set must be encrypted with a key file only; a transit KEK (O(transit_url)) is refused,
    because that Vault would be needed to read the backup that rebuilds it.
  - The token needs C(read) on C(sys/storage/raft/snapshot) (see docs/vault.md).
  - Without C(set_id) (a set of its own), each run appends a C(backup) job record and an audit record to
    the store; with C(set_id) the set's record is written when M(lifeboat.dr.backup_set) publishes or aborts it.
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.set_member
  - lifeboat.dr.vault
  - lifeboat.dr.attributes
options:
  set_type:
    description:
      - Type of the new set.
    type: str
    default: vault
    choices: [vault, full]
attributes:
  check_mode:
    support: full
    details: Checks the storage type, the key ring and the connection, and returns the cluster facts; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run creates a new backup set.
seealso:
  - module: lifeboat.dr.vault_restore
'''

EXAMPLES = r'''
- name: Snapshot the local OpenBao
  lifeboat.dr.vault_backup:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    escrow_key_file: /etc/lifeboat/escrow.key
    url: https://127.0.0.1:8200
    ca_cert: /etc/openbao/ca.pem
    token: "{{ lifeboat_vault_token }}"
  register: vault_backup

- name: Same with AppRole
  lifeboat.dr.vault_backup:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    url: https://vault.example.com:8200
    auth_method: approle
    role_id: "{{ lifeboat_role_id }}"
    secret_id: "{{ lifeboat_secret_id }}"
'''

RETURN = r'''
set_id:
  description: Identifier of the published set.
  returned: success, not in check mode
  type: str
  sample: vault_20250129T020000Z_a1b2c3
path:
  description: Folder of the published set.
  returned: success, not in check mode
  type: str
cluster_id:
  description: Cluster id of the source.
  returned: always
  type: str
version:
  description: Server version of the source.
  returned: always
  type: str
raft_index:
  description: Raft index the snapshot was taken at.
  returned: success, not in check mode
  type: int
snapshot_size:
  description: Bytes of the snapshot (gzip'd tar as the server sent it).
  returned: success, not in check mode
  type: int
stored_bytes:
  description: Bytes the set takes in the store.
  returned: success, not in check mode
  type: int
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.components.vault.conn import connect_params
from ansible_collections.lifeboat.dr.plugins.module_utils.components.vault.engine import (
    backup_vault_into,
    plan_vault_backup,
    run_vault_backup,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.backup import run_backup_module
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    keyring_from_params,
    merge_specs,
    run_module,
    store_argument_spec,
    vault_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import log_progress


def argument_spec():
    """The module's options: store + vault layers and its own."""
    return merge_specs(store_argument_spec(), vault_argument_spec(), dict(
        set_type=dict(type="str", default="vault", choices=["vault", "full"]),
        set_id=dict(type="str"),
    ))


def backup(module):
    """Check mode: refusals and cluster facts; else one snapshot into a new, published set."""
    p = module.params
    keyring = keyring_from_params(p)  # check mode checks the key ring too
    conn = connect_params(p)
    return run_backup_module(
        module, "vault", keyring=keyring,
        plan=lambda: plan_vault_backup(conn, keyring),
        write_into=lambda writer, ring: backup_vault_into(writer, conn, keyring=ring, progress=log_progress()),
        own_set=lambda ring: run_vault_backup(p["store"], ring, conn, set_type=p["set_type"],
                                              progress=log_progress()))


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="vault",
                            progress_kind="backup")
    run_module(module, backup)


if __name__ == "__main__":
    main()
