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
    choices: [full, mysql, redis, vault, app, binlog]
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: The module never changes anything.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode with the same arguments, the second run reports no change.
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
      - store.sets | selectattr('set_type', 'eq', 'full') | list | length > 0
      - (store.sets | selectattr('set_type', 'eq', 'full') | last).age_s < 86400
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
    set_type:
      description: C(full), C(mysql), C(redis), C(vault), C(app) or C(binlog).
      type: str
      sample: full
    components:
      description: Components the set holds.
      type: list
      elements: str
      sample: [mysql, redis, vault, app]
    status:
      description:
        - C(complete) (published, not verified since), C(verified) (latest verification
          passed), C(verify_failed) (latest verification failed), C(partial) (unfinished)
          or C(invalid) (manifest missing or unreadable; see RV(sets[].problem)).
      type: str
      sample: verified
    started:
      description: When the backup started (ISO 8601, UTC), if known.
      type: str
      sample: "2025-01-29T02:00:00Z"
    finished:
      description: When the set was published (ISO 8601, UTC), if known.
      type: str
      sample: "2025-01-29T02:03:12Z"
    age_s:
      description: Seconds since the set was finished (or, if unknown, since its folder last changed).
      type: float
      sample: 3600.5
    size_bytes:
      description: Bytes the set's files take in the store.
      type: int
      sample: 10485760
    path:
      description: Folder of the set.
      type: str
      sample: /var/backups/lifeboat/full_20250129T020000Z_a1b2c3
    problem:
      description: Why the set is C(invalid) or C(verify_failed); absent otherwise.
      type: str
      returned: when status is invalid or verify_failed
count:
  description: Number of sets listed.
  returned: always
  type: int
  sample: 3
'''

import json
import os
import time
from datetime import datetime

from ansible_collections.lifeboat.dr.plugins.module_utils.common import LifeboatModule, run_module
from ansible_collections.lifeboat.dr.plugins.module_utils.errors import NotFound

SET_TYPES = ["full", "mysql", "redis", "vault", "app", "binlog"]
MANIFEST_NAME = "backup_manifest.json"
NOT_SETS = frozenset({"verifications", "locks", "catalog"})


def folder_size(path):
    """Bytes of all regular files under ``path`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def parse_time(value):
    """Epoch seconds of an ISO 8601 time (``Z`` allowed), or ``None``."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def latest_verification(root, set_id):
    """The newest record under ``<root>/verifications/<set_id>/`` as a dict, or ``None``."""
    folder = os.path.join(root, "verifications", set_id)
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    except OSError:
        return None
    for name in reversed(names):
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            continue
    return None


def summarize_folder(root, path, partial, now):
    """One set's summary dict from its folder (manifest, size, age, verification status)."""
    name = os.path.basename(path)
    info = dict(set_id=name[:-len(".partial")] if name.endswith(".partial") else name, set_type=None,
                components=[], status="partial" if partial else "complete", started=None, finished=None,
                size_bytes=folder_size(path), path=path)
    manifest = None
    try:
        with open(os.path.join(path, MANIFEST_NAME), encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        if not partial:
            info.update(status="invalid", problem=f"no {MANIFEST_NAME} in the set folder")
    except (OSError, ValueError) as exc:
        info.update(status="invalid", problem=f"unreadable {MANIFEST_NAME}: {exc}")
    if isinstance(manifest, dict):
        components = manifest.get("components") or []
        info.update(set_id=manifest.get("set_id") or info["set_id"], set_type=manifest.get("set_type"),
                    components=sorted(components) if isinstance(components, (list, dict)) else [],
                    started=manifest.get("started"), finished=manifest.get("finished"))
    if not info["set_type"] and "_" in info["set_id"]:
        info["set_type"] = info["set_id"].split("_", 1)[0]
    if info["status"] == "complete":
        record = latest_verification(root, info["set_id"])
        if record is not None:
            info["status"] = "verified" if record.get("ok") else "verify_failed"
            if not record.get("ok"):
                info["problem"] = str(record.get("summary") or "the latest verification failed")
    finished = parse_time(info["finished"])
    info["age_s"] = round(now - (finished if finished is not None else os.stat(path).st_mtime), 3)
    return info


def list_store(root, include_partial=False, set_types=None):
    """Summaries of the sets in ``root``, oldest start first (read-only)."""
    if not os.path.isdir(root):
        raise NotFound(f"backup store {root} does not exist or is not a folder", hint="check the store path")
    now = time.time()
    found = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name.startswith(".") or name in NOT_SETS or not os.path.isdir(path):
            continue
        partial = name.endswith(".partial")
        if partial and not include_partial:
            continue
        found.append(summarize_folder(root, path, partial, now))
    partial_root = os.path.join(root, ".partial")
    if include_partial and os.path.isdir(partial_root):
        for name in os.listdir(partial_root):
            found.append(summarize_folder(root, os.path.join(partial_root, name), True, now))
    if set_types:
        found = [s for s in found if s["set_type"] in set_types]
    return sorted(found, key=lambda s: (parse_time(s["started"]) or 0.0, s["set_id"]))


def argument_spec():
    """The module's options."""
    return dict(
        store=dict(type="path", required=True),
        include_partial=dict(type="bool", default=False),
        set_type=dict(type="list", elements="str", choices=SET_TYPES),
    )


def describe_store(module):
    """List the sets (read-only, so check mode needs nothing special)."""
    params = module.params
    sets = list_store(params["store"], include_partial=params["include_partial"], set_types=params["set_type"])
    return dict(changed=False, store=params["store"], sets=sets, count=len(sets))


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="store_info")
    run_module(module, describe_store)


if __name__ == "__main__":
    main()
