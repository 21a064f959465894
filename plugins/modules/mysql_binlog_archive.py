#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.mysql_binlog_archive: archive closed binlogs (or salvage them)."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: mysql_binlog_archive
short_description: Archive MariaDB/MySQL binary logs into a Lifeboat store (the RPO of PITR)
version_added: 0.1.0
description:
  - Reads the server's binary logs over the replication protocol (COM_BINLOG_DUMP), so it
    needs no access to the database host's files, and stores every closed binlog file not
    archived yet as an encrypted set of type C(binlog) under
    C(<store>/binlogs/<server identity>/g<generation>/), byte-identical to the server's file.
  - Keeps an archive index (C(<store>/binlogs/<identity>/index.json)) with each file's size,
    positions, first/last event time and GTID. Already archived files are skipped - also after a
    PITR or restore started a new generation - a file is shipped once, into the generation whose
    time it was written in (files closed before the new generation's first file belong to the older one).
  - A binlog purged from the server before it was archived is reported in RV(gaps) and
    recorded in the index, never skipped silently. When the server's binlog history
    restarts (restore, RESET MASTER) a new generation starts.
  - With O(salvage_dir) it reads the binlog files of a dead server from disk instead,
    including the active file up to its last complete event.
  - Takes the store's C(binlog) lock; it never waits for a running full backup.
  - Tested on MariaDB 10.11; MySQL 8 code paths are untested (see docs/pitr.md).
  - Each run (outside check mode) appends a C(binlog_archive) job record (files and bytes archived,
    gaps) and an audit record to the store.
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.mysql
  - lifeboat.dr.attributes
options:
  flush:
    description:
      - Run C(FLUSH BINARY LOGS) first so the newest events are in a closed, archivable
        file (needs RELOAD or BINLOG ADMIN).
    type: bool
    default: false
  salvage_dir:
    description:
      - Datadir or log_bin folder of a dead server. When set, binlogs are read from its
        files (read-only) instead of from a server; run it before anything else touches
        the datadir.
    type: path
  salvage_basename:
    description:
      - Binlog base name (e.g. C(mysql-bin)) when O(salvage_dir) holds several series.
    type: str
  identity:
    description:
      - Server identity the salvaged files belong to; default is the only identity archived
        in the store or, when nothing was archived yet, the C(server_identity) of the newest
        base backup (set with a C(mysql) component) in the store.
    type: str
attributes:
  check_mode:
    support: full
    details: Reports what would be archived (RV(would_archive)); does not flush or write.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: Without O(flush) a second run archives nothing new; with O(flush) every run closes a new file.
seealso:
  - module: lifeboat.dr.mysql_pitr
  - module: lifeboat.dr.mysql_backup
'''

EXAMPLES = r'''
- name: Archive the closed binlogs every few minutes (run from cron/systemd timer)
  lifeboat.dr.mysql_binlog_archive:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/backup.key
    login_user: lifeboat_backup
    login_password: "{{ vault_lifeboat_backup_password }}"
    login_port: 3306
    flush: true

- name: Salvage the binlogs of a crashed server from its disk
  lifeboat.dr.mysql_binlog_archive:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/backup.key
    salvage_dir: /var/lib/mysql
'''

RETURN = r'''
identity:
  description: Server identity the archive is keyed by.
  returned: always
  type: str
  sample: "mariadb:server_id=1:domain=0"
generation:
  description: Archive generation written to.
  returned: always
  type: int
  sample: 1
new_generation:
  description: Why a new generation started in this run, or null.
  returned: always
  type: str
  sample: null
archived:
  description: Index entries of the files archived by this run.
  returned: always
  type: list
  elements: dict
  sample: [{"file": "mysql-bin.000042", "size": 1048576, "first_gtid": "0-1-100", "last_gtid": "0-1-180"}]
skipped:
  description: Closed files already archived.
  returned: always
  type: list
  elements: str
gaps:
  description: Missing binlog ranges detected in this run (purged before archiving).
  returned: always
  type: list
  elements: dict
  sample: [{"after": "mysql-bin.000041", "missing_from": "mysql-bin.000042", "missing_to": "mysql-bin.000043",
            "resumes_at": "mysql-bin.000044"}]
would_archive:
  description: In check mode, the files a run would archive.
  returned: always
  type: list
  elements: str
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.binlog import (
    archive_binlogs,
    salvage_from_files,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.conn import ConnParams
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    codec_from_params,
    keyring_from_params,
    merge_specs,
    mysql_argument_spec,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store import oplog
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import log_progress


def argument_spec():
    """The module's options: store + mysql layers and its own."""
    return merge_specs(store_argument_spec(), mysql_argument_spec(), dict(
        flush=dict(type="bool", default=False),
        salvage_dir=dict(type="path"),
        salvage_basename=dict(type="str"),
        identity=dict(type="str"),
    ))


def archive(module):
    """One archive (or salvage) run; check mode decides before any side effect."""
    p = module.params
    store = Store(p["store"])
    return oplog.run_recorded(p["store"], "binlog_archive", lambda handle: _archive(module, store),
                              check_mode=module.check_mode, describe=oplog.binlog_archive_fields,
                              components=["mysql"], salvage=bool(p["salvage_dir"]))


def _archive(module, store):
    p = module.params
    keyring = None if module.check_mode else keyring_from_params(p)
    if p["salvage_dir"]:
        return salvage_from_files(p["salvage_dir"], store, keyring, identity=p["identity"],
                                  basename=p["salvage_basename"], codec=codec_from_params(p),
                                  check_mode=module.check_mode, progress=log_progress())
    return archive_binlogs(ConnParams.from_module_params(p), store, keyring, flush=p["flush"],
                           codec=codec_from_params(p), check_mode=module.check_mode, progress=log_progress())


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="mysql binlog",
                            progress_kind="archive")
    run_module(module, archive)


if __name__ == "__main__":
    main()
