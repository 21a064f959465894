#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: files_restore
short_description: Restore application folders from a backup set, swapping them in atomically
version_added: 0.1.0
description:
  - Assembles the set's chain (full set, then each incremental in order) into
    C(<target>.lbrestore-<time>) next to the target, removes what the final file list does not
    hold, checks every file's SHA-256 and every hard-link group against the list and applies
    owners, extended attributes and ACLs, modes and mtimes.
  - Only then renames the old target to C(<target>.lbprev-<time>) (kept) and the new tree into place.
  - Symlinks come back verbatim whatever their target (absolute or relative, inside or outside), files
    with holes come back with their holes. Extraction never follows a link (descriptor-relative,
    C(O_NOFOLLOW); links are created last). Archive members whose own path escapes the target
    (absolute names, C(..)), members under a folder the archive made a link, hard links to anything
    but a file extracted earlier, and device files or fifos fail the task naming the member; the
    target is not touched.
  - Owners are restored when running as root.
  - Each run (outside check mode) appends a C(restore) job record to C(<store>/jobs/history.jsonl) and an
    audit record; a restore that passed its check is recorded with C(details.verified=true) and
    C(details.kept_aside) (the C(.lbprev-*) folders); M(lifeboat.dr.prune) removes kept-aside data
    only after such a verified restore.
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.attributes
options:
  set_id:
    description:
      - Set to restore; C(latest) picks the newest set with application files.
    type: str
    default: latest
  names:
    description:
      - Folder names to restore (default every folder of the set).
    type: list
    elements: str
  targets:
    description:
      - Folder to restore into, per name (default the folder recorded at backup time).
    type: dict
  docker_host:
    description:
      - On a Compose deployment, the Docker API address (C(unix://...)). A restored folder that is a named
        volume's folder then has its replaced tree moved on into a new volume C(<volume>-lifeboat-kept-<time>)
        labelled C(lifeboat.kept-from)/C(lifeboat.kept-at), instead of staying beside the volume's folder.
      - The app_files role passes it on Compose inventories.
    type: str
attributes:
  check_mode:
    support: full
    details: Returns the chain, targets and entry counts; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run restores and keeps the previous tree aside.
seealso:
  - module: lifeboat.dr.files_backup
'''

EXAMPLES = r'''
- name: Restore the newest app files where they were
  lifeboat.dr.files_restore:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key

- name: Restore only storage, into a scratch folder
  lifeboat.dr.files_restore:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    set_id: app_20250129T020000Z_a1b2c3
    names: [storage]
    targets:
      storage: /srv/restore-test/storage
'''

RETURN = r'''
set_id:
  description: The set restored.
  returned: always
  type: str
folders:
  description:
    - Per folder name, target, chain of set ids, entry counts and where the previous tree was kept.
    - C(xattrs_not_restored) lists extended attributes or ACLs the restoring user may not set (e.g. C(trusted.*)
      or C(security.*) without root); each is also a warning. The rest of the folder is restored.
  returned: always
  type: dict
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.components.files.engine import run_files_restore
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    keyring_from_params,
    merge_specs,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store import oplog
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import log_progress


def argument_spec():
    """The module's options: store layer and its own."""
    return merge_specs(store_argument_spec(), dict(
        set_id=dict(type="str", default="latest"),
        names=dict(type="list", elements="str"),
        targets=dict(type="dict"),
        docker_host=dict(type="str"),
    ))


def restore(module):
    """Check mode: the plan; else restore each folder aside, verify, swap in."""
    p = module.params
    targets = {str(k): str(v) for k, v in (p["targets"] or {}).items()}
    result = oplog.run_recorded(p["store"], "restore", lambda handle: run_files_restore(
        p["store"], keyring_from_params(p), p["set_id"], targets=targets or None, names=p["names"],
        check_mode=module.check_mode, progress=log_progress(), docker_host=p["docker_host"]),
        check_mode=module.check_mode,
        describe=oplog.files_restore_fields, components=["app"], backup_id=oplog.named_set(p["set_id"]))
    for name, folder in (result.get("folders") or {}).items():
        for problem in folder.get("xattrs_not_restored") or ():
            module.warn(f"{name}: {problem}")
    return result


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="app",
                            progress_kind="restore")
    run_module(module, restore)


if __name__ == "__main__":
    main()
