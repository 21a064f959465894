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
    backup set, keeping modes, numeric owners, mtimes, symlinks of any target (stored as symlinks,
    never followed), hard links (tar link members), extended attributes and POSIX ACLs
    (C(SCHILY.xattr.*) pax headers) and holes of sparse files (GNU sparse 1.0 members, only the data is read).
  - Devices, fifos and sockets hold no data to copy and are skipped; the task warns once per folder,
    naming them and their kind, and RV(folders) lists them as C(skipped_special).
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
  - lifeboat.dr.attributes
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
    support: full
    details: Walks the folders and reports entry counts and bytes; writes nothing.
  diff_mode:
    support: none
  idempotent:
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
  description:
    - Per folder name, counts of entries, stored files and bytes, deletions, files that changed while read
      (C(changed_during_backup)), special files skipped (C(skipped_special), path and kind), further names of
      hard-linked files (C(hard_links)) and files stored with holes (C(sparse_files)).
  returned: always
  type: dict
stored_bytes:
  description: Bytes the set takes in the store.
  returned: success, not in check mode
  type: int
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.components.files.engine import (
    backup_files_into,
    describe_skipped,
    plan_files_backup,
    resolve_parent,
    run_files_backup,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.backup import run_backup_module
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    codec_from_params,
    merge_specs,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import log_progress


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
    walk = dict(include=p["include"], exclude=p["exclude"])
    result = run_backup_module(
        module, "app",
        plan=lambda: plan_files_backup(paths, **walk),
        write_into=lambda writer, ring: backup_files_into(
            writer, paths, parent=resolve_parent(Store(p["store"]), p["incremental_from"]), progress=log_progress(),
            **walk),
        own_set=lambda ring: run_files_backup(p["store"], ring, paths, incremental_from=p["incremental_from"],
                                              codec=codec_from_params(p), set_type=p["set_type"],
                                              progress=log_progress(), **walk))
    return result if module.check_mode else warn_about(module, result)


def warn_about(module, result):
    """Warn (task output) once per file that changed while read and once per folder with skipped special files."""
    for name, folder in result["folders"].items():
        for path in folder.get("changed_during_backup") or ():
            module.warn(f"{name}: {path} changed while it was read")
        if folder.get("skipped_special"):
            module.warn(f"{name}: {describe_skipped(folder['skipped_special'])}")
    return result


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="app",
                            progress_kind="backup")
    run_module(module, backup)


if __name__ == "__main__":
    main()
