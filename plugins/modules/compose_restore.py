#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: compose_restore
short_description: Bring a Compose project's stored definition back into a new folder, and optionally create the project
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
    supply when bringing the project up (docs/runbook.md, "Compose - bring a project back on an empty host").
  - With O(up=true) it then rebuilds the project on the engine (an engine that lost it - every
    container and volume gone) by running the Compose command there with C(up --no-start) - the
    project's network, empty named volumes and containers are created and nothing is started, so
    that no service runs on empty data; C(restore.yml) then fills the volumes and starts the services
    in C(depends_on) order, gated on their healthchecks. Before anything is written it proves the
    engine answers, the project has no container there (an existing project is restored, never
    rebuilt over), every stored image is on the engine, every variable to supply is given in
    O(compose_environment) (or this host's environment) and the command is found; else it fails
    listing every problem, having changed nothing.
  - A rebuild killed after its files were written blocks no later run - when O(dest) already holds every
    file of the set byte for byte and the project's containers, if any, were only created (never started),
    a new run with O(up=true) continues it (C(up --no-start) again creates what is missing).
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
      - Default - the project's own folder as the set recorded it (the Compose working folder);
        it too must not exist or be empty.
    type: path
  up:
    description:
      - After writing the files, create the project on the engine with C(COMMAND -p PROJECT -f FILE... up --no-start)
        run in O(dest) (see the description).
    type: bool
    default: false
  docker_host:
    description:
      - The Docker API of the engine (C(unix://...), C(ssh://...)); default C(DOCKER_HOST). Given to the Compose
        command as C(DOCKER_HOST).
    type: str
  compose_command:
    description:
      - The Compose implementation to run with O(up=true), as a list (e.g. V([docker, compose]),
        V([docker-compose]) or V([podman-compose])).
    type: list
    elements: str
    default: [docker, compose]
  compose_environment:
    description:
      - Variables for the Compose command with O(up=true) - the variables to supply, and whatever the
        implementation needs (e.g. C(CONTAINERS_CONF) for podman). Given in its environment, never in argv;
        never logged.
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
    details: Reads the set's project.json, checks the destination and, with O(up=true), the engine; writes nothing.
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

- name: Rebuild the project on an engine that lost it (files back in its own folder, containers created)
  lifeboat.dr.compose_restore:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    up: true
    docker_host: unix:///run/docker.sock
    compose_environment:
      SHOP_DOMAIN: shop.example.com
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
created:
  description: With O(up=true) - each service's container state after C(up --no-start) (check mode - empty).
  returned: when up
  type: dict
continued:
  description:
    - With O(up=true) - true when an interrupted rebuild was continued - O(dest) already held every file of the set,
      byte for byte, and the project's containers, if any, were only created - so the files were not written again.
  returned: when up
  type: bool
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.components.base import open_set
from ansible_collections.lifeboat.dr.plugins.module_utils.components.compose import rebuild
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
from ansible_collections.lifeboat.dr.plugins.module_utils.util.compose_volumes import client_for
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError


def argument_spec():
    """The module's options: store layer and its own."""
    return merge_specs(store_argument_spec(), dict(
        set_id=dict(type="str", default="latest"),
        dest=dict(type="path"),
        up=dict(type="bool", default=False),
        docker_host=dict(type="str"),
        compose_command=dict(type="list", elements="str", default=list(rebuild.DEFAULT_COMMAND)),
        compose_environment=dict(type="dict", default={}, no_log=True),
    ))


def plan(backup_set, dest, continuing=False):
    """Check mode (and a continued rebuild): what would be written where (the destination is checked as
    a real run would, but for a folder that already holds the set's files)."""
    if not continuing:
        check_destination(dest)
    project = backup_set.read_json(COMPONENT, PROJECT_JSON)
    files = [{"path": str(restored_path(e, project["working_dir"])), "role": e["role"], "original": e["path"]}
             for e in project["files"]]
    return {"dest": dest, "project": project["project"], "files": files, "images": project["images"],
            "compose_files": project["compose_files"],
            "variables_to_supply": variables_to_supply(project)}


def prove_rebuild(client, project, p, continuing):
    """With up: every problem of the rebuild at once (ConfigError), before anything is written."""
    problems = rebuild.rebuild_problems(client, project, p["compose_command"], p["compose_environment"],
                                        continuing)
    if problems:
        raise ConfigError(f"cannot rebuild Compose project {project['project']!r}, nothing was changed: "
                          + "; ".join(problems))


def restore(module):
    """Check mode: the plan; else the project's files into ``dest`` (default: the project's own
    folder), then with ``up`` the project created on the engine (nothing started)."""
    p = module.params
    keyring = keyring_from_params(p)
    backup_set = open_set(Store(p["store"]), COMPONENT, p["set_id"])
    project = backup_set.read_json(COMPONENT, PROJECT_JSON)
    dest = p["dest"] or project["working_dir"]
    client = client_for(p["docker_host"]) if p["up"] else None
    # a rebuild killed after publishing its files is continued, not refused (nothing else is)
    continuing = client is not None and rebuild.folder_holds_the_set(backup_set, keyring, project, dest)
    if client is not None:
        if not continuing:
            check_destination(dest)
        prove_rebuild(client, project, p, continuing)
    if module.check_mode:
        return dict(changed=False, set_id=backup_set.set_id, **plan(backup_set, dest, continuing),
                    **({"created": {}, "continued": continuing} if p["up"] else {}))

    def restore_and_create(handle):
        if continuing:
            result = dict(plan(backup_set, dest, continuing=True), continued=True)
        else:
            result = restore_project_files(backup_set, keyring, dest)
        if client is not None:
            rebuild.create_project(project, result["dest"], p["compose_command"], p["compose_environment"],
                                   p["docker_host"])
            result["created"] = rebuild.created_services(client, project["project"])
        return result

    result = oplog.run_recorded(p["store"], "restore", restore_and_create, components=[COMPONENT],
                                backup_id=backup_set.set_id, target=dest)
    return dict(changed=True, set_id=backup_set.set_id, **result)


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="compose")
    run_module(module, restore)


if __name__ == "__main__":
    main()
