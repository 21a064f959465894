#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: redis_verify
short_description: Verify the Redis backup in a backup set
version_added: 0.1.0
description:
  - "O(mode=quick): decrypts the RDB artifact in memory (every chunk authenticated, size and
    SHA-256 checked), walks the RDB structure, checks its CRC64 and the integrity of every
    ziplist, listpack, intset and zipmap (empty keys are refused), runs C(redis-check-rdb) over
    the same bytes through a pipe where it is installed, and compares the per-db key counts with
    those recorded at backup time. Writes no plaintext to disk. C(rdb.checks) in the result names the checks
    that ran."
  - "O(mode=full): the same while it writes the RDB to a temporary folder, then
    restores it into a scratch C(redis-server) (free port on 127.0.0.1, temporary folder,
    removed afterwards) with the same code as M(lifeboat.dr.redis_restore), and compares the key
    counts. If the set has an AOF, it is unpacked and checked with C(redis-check-aof)."
  - The result is stored beside the set (C(<store>/verifications/<set_id>/)) unless O(record=false).
  - The module fails when a check fails; the message names the failed checks and the stored
    record holds all of them.
  - Each run (outside check mode) appends a C(verify) job record and an audit record to the store.
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.attributes
options:
  backup_id:
    description:
      - The set to verify. C(latest) (default) is the newest set that holds a Redis backup.
    type: str
    default: latest
  mode:
    description:
      - C(quick) or C(full) (see the description).
    type: str
    default: quick
    choices: [quick, full]
  work_dir:
    description:
      - Folder for the temporary files of O(mode=full) (default the system temp folder).
        Needs room for the uncompressed RDB, twice.
    type: path
  record:
    description:
      - Store the result as a verification record of the set.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: Runs the same checks (temporary files and a scratch server in full mode) but stores no verification record.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: The backup is never changed; each run adds one verification record (reported as changed).
requirements:
  - redis-server and redis-check-aof on the host for O(mode=full); redis-check-rdb is used in both modes where installed
seealso:
  - module: lifeboat.dr.redis_backup
'''

EXAMPLES = r'''
- name: Quick check of the newest Redis backup
  lifeboat.dr.redis_verify:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key

- name: Load a given set into a scratch server
  lifeboat.dr.redis_verify:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    backup_id: redis_20250129T020000Z_a1b2c3
    mode: full
    work_dir: /var/tmp
'''

RETURN = r'''
ok:
  description: Whether every check passed.
  returned: always
  type: bool
set_id:
  description: The set verified.
  returned: always
  type: str
mode:
  description: quick or full.
  returned: always
  type: str
checks:
  description: Each check with C(name), C(ok) and C(detail).
  returned: always
  type: list
  elements: dict
rdb:
  description:
    - What the RDB check found (version, size, keys per db, CRC64, error and its byte offset),
      C(checks) (the checks that ran, C(lifeboat-structural) and, where installed, C(redis-check-rdb))
      and C(reference) (redis-check-rdb's verdict, or null).
  returned: always
  type: dict
record:
  description: Path of the stored verification record.
  returned: when recorded
  type: str
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis.engine import run_redis_verify
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    keyring_from_params,
    merge_specs,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store import oplog
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import VerificationFailed
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import log_progress


def argument_spec():
    """The module's options: store layer and its own."""
    return merge_specs(store_argument_spec(), dict(
        backup_id=dict(type="str", default="latest"),
        mode=dict(type="str", default="quick", choices=["quick", "full"]),
        work_dir=dict(type="path"),
        record=dict(type="bool", default=True),
    ))


def verify(module):
    """Run the checks; record them (not in check mode); fail when one failed."""
    p = module.params
    return oplog.run_recorded(p["store"], "verify", lambda handle: _verify(module, handle),
                              check_mode=module.check_mode, describe=oplog.verify_fields, components=["redis"],
                              mode=p["mode"], backup_id=oplog.named_set(p["backup_id"]))


def _verify(module, handle):
    p = module.params
    record = p["record"] and not module.check_mode
    report = run_redis_verify(p["store"], keyring_from_params(p), set_id=p["backup_id"], mode=p["mode"],
                              work_dir=p["work_dir"], record=record, progress=log_progress())
    handle.update(backup_id=report["set_id"])
    if not report["ok"]:
        failed = "; ".join(f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["ok"])
        raise VerificationFailed(f"Redis backup {report['set_id']} failed {report['mode']} verification: {failed}",
                                 hint="restore from another set; see the checks in the result")
    return dict(changed=record, **report)


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="redis",
                            progress_kind="verify")
    run_module(module, verify)


if __name__ == "__main__":
    main()
