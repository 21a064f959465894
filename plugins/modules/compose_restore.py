#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: compose_restore
short_description: Write a Compose project's stored definition (compose, env and secret files) into a new folder
version_added: 0.1.0
description:
  - Decrypts the project files a backup stored with M(lifeboat.dr.compose_backup) into O(dest), a
    new (or empty) folder - never over an existing project. Files of the project's folder keep
    their relative paths; files elsewhere (e.g. secrets kept outside it) go under
    C(outside/<their absolute path>); env and secret files get mode 0600. Everything is written
    into C(<dest>.lifeboat-partial) first and renamed into place at the end, so a failed or
    killed run leaves no half-written project at O(dest).
  - Also writes C(lifeboat-project.json) (images, compose files, variables) and returns the
    image references and the variables the compose files use that no stored file defines, to
    supply when bringing the project up (docs/compose.md, "Bring a project back on an empty host").
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.attributes
options:
  set_id:
    description:
      - The set to restore from; C(latest) = the newest set holding a Compose project definition.
    type: str
    default: latest
  dest:
    description:
      - The folder to create (or an empty one) for the project's files.
    type: path
    required: true
attributes:
  check_mode:
    support: full
    details: Reads the set's project.json and checks the destination; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: A second run refuses the folder the first one filled.
seealso:
  - module: lifeboat.dr.compose_backup
'''

EXAMPLES = r'''
- name: Bring the project's files back from the newest set
  lifeboat.dr.compose_restore:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    dest: /srv/shop-restored
  register: project
'''

RETURN = r'''
dest:
  description: The folder written.
  returned: always
  type: str
set_id:
  description: The set the files came from.
  returned: always
  type: str
files:
  description: Each file written (check mode - that would be), with its role and original path.
  returned: always
  type: list
  elements: dict
images:
  description: Each container's image reference, image id and repo digests at backup time.
  returned: always
  type: list
  elements: dict
variables_to_supply:
  description: Variables the compose files use that no stored file defines.
  returned: always
  type: list
  elements: str
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.components.base import open_set
from ansible_collections.lifeboat.dr.plugins.module_utils.components.compose.engine import (
    COMPONENT,
    PROJECT_JSON,
    check_destination,
    restore_project_files,
    restored_path,
    variables_to_supply,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    keyring_from_params,
    merge_specs,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store import oplog
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store


def argument_spec():
    """The module's options: store layer and its own."""
    return merge_specs(store_argument_spec(), dict(
        set_id=dict(type="str", default="latest"),
        dest=dict(type="path", required=True),
    ))


def plan(backup_set, dest):
    """Check mode: what would be written where (the destination is checked as a real run would)."""
    check_destination(dest)
    project = backup_set.read_json(COMPONENT, PROJECT_JSON)
    files = [{"path": str(restored_path(e, project["working_dir"])), "role": e["role"], "original": e["path"]}
             for e in project["files"]]
    return {"dest": dest, "project": project["project"], "files": files, "images": project["images"],
            "compose_files": project["compose_files"],
            "variables_to_supply": variables_to_supply(project)}


def restore(module):
    """Check mode: the plan; else the project's files into ``dest``."""
    p = module.params
    keyring = keyring_from_params(p)
    backup_set = open_set(Store(p["store"]), COMPONENT, p["set_id"])
    if module.check_mode:
        return dict(changed=False, set_id=backup_set.set_id, **plan(backup_set, p["dest"]))
    result = oplog.run_recorded(p["store"], "restore", lambda handle: restore_project_files(
        backup_set, keyring, p["dest"]), components=[COMPONENT], backup_id=backup_set.set_id, target=p["dest"])
    return dict(changed=True, set_id=backup_set.set_id, **result)


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="compose")
    run_module(module, restore)


if __name__ == "__main__":
    main()
