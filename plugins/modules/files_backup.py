#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: files_backup
short_description: Back up application folders as encrypted pax tar streams, full or incremental
version_added: 0.1.0
description:
  - Each named folder of O(paths) becomes one pax tar stream C(app/<name>.tar.zst.enc) in a new
    backup set, keeping modes, numeric owners, mtimes and symlinks (stored as symlinks, never
    followed). Hard links are stored as separate files; devices, fifos and sockets are skipped.
  - A per-file SHA-256 list is computed while streaming and stored as C(app/<name>_files.json).
  - A file whose size or mtime changes while it is read is stored as read and reported in
    RV(folders) C(changed_during_backup).
  - With O(incremental_from), only files new or changed since that set (size and mtime, confirmed
    by hash when only the mtime moved) are stored, deletions are recorded, and the manifest names
    the parent set and the whole chain.
  - Without C(set_id) (a set of its own), each run appends a C(backup) job record and an audit record to
    the store; with C(set_id) the set's record is written when M(lifeboat.dr.backup_set) publishes or aborts it.
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.set_member
options:
  paths:
    description:
      - Folders to back up, as name -> folder path (names become artifact names, e.g. C(storage), C(logs)).
    type: dict
    required: true
  include:
    description:
      - Glob patterns (matched against the path relative to the folder, or the base name) selecting
        files and symlinks. Folders are always walked. Default is everything.
    type: list
    elements: str
  exclude:
    description:
      - Glob patterns of entries to leave out; an excluded folder is not entered. Wins over O(include).
    type: list
    elements: str
  incremental_from:
    description:
      - Set id to be incremental against, or C(latest) for the newest set with application files.
        Unset means a full backup.
    type: str
  set_type:
    description:
      - Type of the new set.
    type: str
    default: app
    choices: [app, full]
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Walks the folders and reports entry counts and bytes; writes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode with the same arguments, the second run reports no change.
    support: none
    details: Every run creates a new backup set.
seealso:
  - module: lifeboat.dr.files_restore
'''

EXAMPLES = r'''
- name: Full backup of the app's storage and config
  lifeboat.dr.files_backup:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    paths:
      storage: /srv/app/storage
      config: /etc/app
    exclude: ["*.tmp", "cache"]

- name: Nightly incremental against the newest files set
  lifeboat.dr.files_backup:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    paths:
      storage: /srv/app/storage
    incremental_from: latest
'''

RETURN = r'''
set_id:
  description: Identifier of the published set.
  returned: success, not in check mode
  type: str
  sample: app_20250129T020000Z_a1b2c3
incremental:
  description: Whether the set is incremental.
  returned: success, not in check mode
  type: bool
folders:
  description: Per folder name, counts of entries, stored files and bytes, deletions and files that changed while read.
  returned: always
  type: dict
stored_bytes:
  description: Bytes the set takes in the store.
  returned: success, not in check mode
  type: int
'''

from ansible_collections.lifeboat.dr.plugins.module_utils import oplog
from ansible_collections.lifeboat.dr.plugins.module_utils.backupset import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.common import (
    LifeboatModule,
    codec_from_params,
    keyring_from_params,
    merge_specs,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.files_engine import (
    backup_files_into,
    plan_files_backup,
    resolve_parent,
    run_files_backup,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.orchestrate import write_component
from ansible_collections.lifeboat.dr.plugins.module_utils.progress import log_progress


def argument_spec():
    """The module's options: store layer and its own."""
    return merge_specs(store_argument_spec(), dict(
        paths=dict(type="dict", required=True),
        include=dict(type="list", elements="str"),
        exclude=dict(type="list", elements="str"),
        incremental_from=dict(type="str"),
        set_type=dict(type="str", default="app", choices=["app", "full"]),
        set_id=dict(type="str"),
    ))


def backup(module):
    """Check mode: the walk's counts; else one backup into a new, published set."""
    p = module.params
    paths = {str(k): str(v) for k, v in p["paths"].items()}
    if module.check_mode:
        return dict(changed=True, **plan_files_backup(paths, include=p["include"], exclude=p["exclude"]))
    if p["set_id"]:
        result = write_component(p["store"], p["set_id"], "app", keyring_from_params(p), lambda writer: (
            backup_files_into(writer, paths, include=p["include"], exclude=p["exclude"],
                              parent=resolve_parent(Store(p["store"]), p["incremental_from"]),
                              progress=log_progress())))
        return dict(changed=True, **result)
    result = oplog.run_recorded(p["store"], "backup", lambda handle: run_files_backup(
        p["store"], keyring_from_params(p), paths, include=p["include"], exclude=p["exclude"],
        incremental_from=p["incremental_from"], codec=codec_from_params(p), set_type=p["set_type"],
        progress=log_progress()), describe=oplog.backup_fields, components=["app"])
    warnings = [f"{name}: {path} changed while it was read" for name, f in result["folders"].items()
                for path in f["changed_during_backup"]]
    for warning in warnings:
        module.warn(warning)
    return dict(changed=True, **result)


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="app")
    run_module(module, backup)


if __name__ == "__main__":
    main()
