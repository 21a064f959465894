#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: compose_backup
short_description: Store a Compose project's definition (compose, env, secret files, image references) in a set
version_added: 0.1.0
description:
  - Finds the Compose project O(project) through the Docker API (the labels every Compose
    implementation sets) and stores, encrypted, what it takes to bring the project back on an
    empty host besides its data - its compose file(s) (from the containers' labels
    C(com.docker.compose.project.working_dir) and C(.config_files), or O(compose_files)), the
    C(.env) file of its folder and every service's C(env_file), the secret files its containers
    mount under C(/run/secrets/), every file of the host paths its containers bind-mount read-only
    (configuration; read-write bind mounts are data, the components back them up) - and a plain
    C(compose/project.json) with each file's path, role, mode and owner, each container's image
    reference, image id and repo digests, and the variables the compose files use (marking those no
    file defines).
  - Run it where the project's files are (the Docker host). Restore with M(lifeboat.dr.compose_restore).
  - Without C(set_id) (a set of its own), each run appends a C(backup) job record and an audit record
    to the store; with C(set_id) the set's record is written when M(lifeboat.dr.backup_set) publishes
    or aborts it.
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.set_member
  - lifeboat.dr.attributes
options:
  project:
    description:
      - The Compose project name.
    type: str
    required: true
  docker_host:
    description:
      - The Docker API (C(unix://...), C(ssh://...)); default C(DOCKER_HOST).
    type: str
  compose_files:
    description:
      - The compose file(s), when the engine's containers do not name them (relative paths are
        taken from the first file's folder).
    type: list
    elements: path
attributes:
  check_mode:
    support: full
    details: Finds the project and lists the files it would store; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run stores the files again.
seealso:
  - module: lifeboat.dr.compose_restore
'''

EXAMPLES = r'''
- name: Store the project definition into the set backup.yml opened
  lifeboat.dr.compose_backup:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    escrow_key_file: /etc/lifeboat/escrow.key
    set_id: "{{ lifeboat_set_id }}"
    project: shop
    docker_host: unix:///run/docker.sock
'''

RETURN = r'''
project:
  description: The Compose project stored.
  returned: success, not in check mode
  type: str
  sample: shop
files:
  description: How many files were stored (in check mode, the list of files it would store, each as role and path).
  returned: always
  type: raw
  sample: 6
images:
  description: How many container image references were recorded.
  returned: always
  type: int
variables_not_in_files:
  description: Variables the compose files use that no stored file defines (supply them when bringing the project back).
  returned: success, not in check mode
  type: list
  elements: str
set_id:
  description: The set written into.
  returned: success, not in check mode
  type: str
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.components.base import run_backup
from ansible_collections.lifeboat.dr.plugins.module_utils.components.compose.engine import (
    ENGINE,
    backup_project_into,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.backup import run_backup_module
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    codec_from_params,
    merge_specs,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.compose_volumes import client_for


def argument_spec():
    """The module's options: store layer and its own."""
    return merge_specs(store_argument_spec(), dict(
        project=dict(type="str", required=True),
        docker_host=dict(type="str"),
        compose_files=dict(type="list", elements="path"),
        set_id=dict(type="str"),
    ))


def backup(module):
    """Check mode: the files it would store; else the project's files into the set (or a set of its own)."""
    p = module.params
    source = {"client": client_for(p["docker_host"]), "project": p["project"], "compose_files": p["compose_files"]}
    return run_backup_module(
        module, "compose",
        plan=lambda: ENGINE.plan_backup(source, {}),
        write_into=lambda writer, ring: backup_project_into(writer, source["client"], p["project"], p["compose_files"]),
        own_set=lambda ring: run_backup(ENGINE, p["store"], ring, source, codec=codec_from_params(p)))


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="compose")
    run_module(module, backup)


if __name__ == "__main__":
    main()
