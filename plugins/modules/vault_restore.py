#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: vault_restore
short_description: Force-restore a Vault/OpenBao raft snapshot from a backup set
version_added: 0.1.0
description:
  - Decrypts the snapshot of a set to a private temporary file and checks its own
    C(SHA256SUMS) and C(meta.json) before touching the cluster.
  - Saves the live cluster first, as its own C(vault) set in the store (metadata
    C(kept_aside_before)), unless O(keep_aside=false).
  - Restores in place through C(sys/storage/raft/snapshot-force). Afterwards the cluster's
    unseal keys, root keys and tokens are those of the snapshot's time; if the cluster seals
    itself it is unsealed with O(unseal_keys_file). A token created after the snapshot no
    longer works (RV(token_valid)); see docs/vault.md.
  - Each run (outside check mode) appends a C(restore) job record to C(<store>/jobs/history.jsonl) and an
    audit record; a restore that passed its check is recorded with C(details.verified=true) and
    C(details.kept_aside) (the kept-aside set id); M(lifeboat.dr.prune) removes kept-aside data
    only after such a verified restore.
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.vault
  - lifeboat.dr.attributes
options:
  set_id:
    description:
      - Set to restore; C(latest) picks the newest set holding a Vault snapshot.
    type: str
    default: latest
  unseal_keys_file:
    description:
      - Escrowed unseal keys of the snapshot's cluster (JSON from C(bao operator init -format=json)),
        mode 0600. Needed when the cluster seals itself after the restore.
    type: path
  keep_aside:
    description:
      - Save the live cluster as a set before restoring over it.
    type: bool
    default: true
  check_path:
    description:
      - A KV v2 secret (C(<mount>/<path>)) to read after the restore as a smoke test.
    type: str
attributes:
  check_mode:
    support: full
    details: Decrypts and checks the snapshot and checks the cluster is raft and unsealed; restores nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run restores (and keeps a copy of the live state aside).
seealso:
  - module: lifeboat.dr.vault_backup
'''

EXAMPLES = r'''
- name: Restore the newest Vault snapshot
  lifeboat.dr.vault_restore:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    url: https://127.0.0.1:8200
    token: "{{ lifeboat_vault_token }}"
    unseal_keys_file: /root/escrow/openbao-init.json
    check_path: secret/lifeboat/canary
'''

RETURN = r'''
set_id:
  description: The set restored.
  returned: always
  type: str
raft_index:
  description: Raft index of the restored snapshot.
  returned: always
  type: int
kept_aside_set_id:
  description: Set holding the cluster's state from just before the restore.
  returned: when keep_aside and not in check mode
  type: str
unsealed_by_lifeboat:
  description: Whether the cluster sealed itself after the restore and was unsealed with O(unseal_keys_file).
  returned: success, not in check mode
  type: bool
token_valid:
  description: Whether the token used is still valid in the restored state.
  returned: success, not in check mode
  type: bool
check_path_ok:
  description: Whether O(check_path) could be read after the restore.
  returned: when check_path is given and the token is valid
  type: bool
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.components.vault.conn import connect_params
from ansible_collections.lifeboat.dr.plugins.module_utils.components.vault.engine import run_vault_restore
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    keyring_from_params,
    merge_specs,
    run_module,
    store_argument_spec,
    vault_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store import oplog
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import log_progress


def argument_spec():
    """The module's options: store + vault layers and its own."""
    return merge_specs(store_argument_spec(), vault_argument_spec(), dict(
        set_id=dict(type="str", default="latest"),
        unseal_keys_file=dict(type="path"),
        keep_aside=dict(type="bool", default=True),
        check_path=dict(type="str"),
    ))


def restore(module):
    """Check mode: decrypt + check the snapshot and the cluster; else keep aside and force-restore."""
    p = module.params
    return oplog.run_recorded(p["store"], "restore", lambda handle: run_vault_restore(
        p["store"], keyring_from_params(p), connect_params(p), p["set_id"], unseal_keys_file=p["unseal_keys_file"],
        keep_aside=p["keep_aside"], check_mode=module.check_mode, check_path=p["check_path"],
        progress=log_progress()), check_mode=module.check_mode,
        describe=lambda result: oplog.vault_restore_fields(result, p["check_path"]), components=["vault"],
        backup_id=oplog.named_set(p["set_id"]))


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="vault",
                            progress_kind="restore")
    run_module(module, restore)


if __name__ == "__main__":
    main()
