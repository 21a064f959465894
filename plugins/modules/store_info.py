#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.store_info: list the backup sets of a store."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: store_info
short_description: List the backup sets of a Lifeboat store
version_added: 0.1.0
description:
  - Lists the backup sets in a store on the managed host, oldest first, with their
    type, components, status, size on disk and age.
  - Reads manifests and verification records only; it decrypts nothing and needs no key.
  - A partial set is one still being written or left behind by a killed run.
author:
  - Lifeboat contributors (!UNKNOWN)
options:
  store:
    description:
      - Path of the backup store (the folder holding one sub-folder per set).
    type: path
    required: true
  include_partial:
    description:
      - Also list unfinished sets (a backup still running, or one that was killed),
        with status C(partial).
    type: bool
    default: false
  set_type:
    description:
      - Only list sets of these types.
    type: list
    elements: str
    choices: [full, mysql, redis, vault, app, binlog, compose]
extends_documentation_fragment:
  - lifeboat.dr.attributes
attributes:
  check_mode:
    support: full
    details: The module never changes anything.
  diff_mode:
    support: none
  idempotent:
    support: full
seealso:
  - module: lifeboat.dr.service
'''

EXAMPLES = r'''
- name: List the sets in the store
  lifeboat.dr.store_info:
    store: /var/backups/lifeboat
  register: store

- name: Fail when the newest full set is older than a day
  ansible.builtin.assert:
    that:
      - store.sets | selectattr('type', 'eq', 'full') | list | length > 0
      - (store.sets | selectattr('type', 'eq', 'full') | last).age_s < 86400
'''

RETURN = r'''
store:
  description: The store path.
  returned: always
  type: str
  sample: /var/backups/lifeboat
sets:
  description: The sets, ordered by start time (oldest first).
  returned: always
  type: list
  elements: dict
  contains:
    set_id:
      description: Identifier of the set (also its folder name).
      type: str
      sample: full_20250129T020000Z_a1b2c3
    type:
      description: C(full), C(mysql), C(redis), C(vault), C(app) or C(binlog).
      type: str
      sample: full
    components:
      description: Components the set holds (empty for a partial set).
      type: list
      elements: str
      sample: [mysql, redis, vault, app]
    status:
      description:
        - C(complete) (published, never verified), C(verified) (latest verification
          passed), C(failed) (latest verification failed) or C(partial) (not published).
      type: str
      sample: verified
    verified_mode:
      description: C(full) if a full verification passed since the last failure, else C(quick); null if never verified.
      type: str
      sample: quick
    start:
      description: When the backup started (ISO 8601, UTC).
      type: str
      sample: "2025-01-29T02:00:00Z"
    end:
      description: When the set was published (ISO 8601, UTC); null for a partial set.
      type: str
      sample: "2025-01-29T02:03:12Z"
    age_s:
      description: Seconds since the set was published (partial set, since it started).
      type: float
      sample: 3600.5
    stored_bytes:
      description: Bytes the set's artifacts take in the store (compressed and encrypted).
      type: int
      sample: 10485760
    plaintext_bytes:
      description: Bytes of the backed-up data before compression and encryption (0 for a partial set).
      type: int
      sample: 52428800
    path:
      description: Folder of the set.
      type: str
      sample: /var/backups/lifeboat/full_20250129T020000Z_a1b2c3
    parent:
      description: Sub-folder of the store the set lives in, or null for the store root.
      type: str
      sample: null
count:
  description: Number of sets listed.
  returned: always
  type: int
  sample: 3
'''

import os

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import LifeboatModule, run_module
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import SET_TYPES
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import NotFound


def argument_spec():
    """The module's options."""
    return dict(
        store=dict(type="path", required=True),
        include_partial=dict(type="bool", default=False),
        set_type=dict(type="list", elements="str", choices=list(SET_TYPES)),
    )


def describe_store(module):
    """List the sets (read-only, so check mode needs nothing special).

    A missing store folder is an error here (a mistyped path must not look like an empty store).
    """
    params = module.params
    if not os.path.isdir(params["store"]):
        raise NotFound(f"backup store {params['store']} does not exist or is not a folder",
                       hint="check the store path (and that this runs on the host holding the store)")
    infos = Store(params["store"]).list_sets(include_partial=params["include_partial"])
    wanted = set(params["set_type"] or SET_TYPES)
    sets = [info.to_dict() for info in infos if info.type in wanted]
    return dict(changed=False, store=params["store"], sets=sets, count=len(sets))


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="store_info")
    run_module(module, describe_store)


if __name__ == "__main__":
    main()
