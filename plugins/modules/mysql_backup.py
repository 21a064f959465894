#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.mysql_backup: consistent, encrypted logical backup of MySQL/MariaDB."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: mysql_backup
short_description: Consistent, parallel, encrypted logical backup of MariaDB/MySQL
version_added: 0.1.0
description:
  - Dumps all (or selected) databases of a MariaDB/MySQL server, including views, routines,
    triggers and events, from ONE consistent snapshot shared by O(parallel) connections,
    into a new backup set of the store (compressed, encrypted, hashed while streaming;
    plaintext never touches the disk).
  - Records the binary log file/position and GTID position of exactly that snapshot
    (C(mysql/binlog_position.json)), and per-table row counts and content checksums
    computed in the same pass (C(mysql/mysql_backup_metadata.json)).
  - Users and grants go to a separate artifact (restored only on request).
  - Credentials reach the dump tool through a temporary 0600 option file, never argv.
  - Any failure (server error, dump tool exit code or error message, stream error) fails
    the task and publishes nothing.
  - Tested on MariaDB 10.11; MySQL 8 code paths are untested (see docs/mysql.md).
  - Without C(set_id) (a set of its own), each run appends a C(backup) job record and an audit record to
    the store; with C(set_id) the set's record is written when M(lifeboat.dr.backup_set) publishes or aborts it.
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.set_member
  - lifeboat.dr.mysql
options:
  databases:
    description:
      - Databases to back up. Default is every database except C(mysql),
        C(information_schema), C(performance_schema) and C(sys), and except the schemas
        Lifeboat's own restores leave behind (C(<db>__lbprev_<time>) kept-aside copies and
        C(<db>__lbrestore) staging schemas); name one here to back it up anyway.
      - A name that does not exist fails the task.
    type: list
    elements: str
  parallel:
    description:
      - Number of connections dumping tables at the same time. With more than one, a
        global read lock (needs RELOAD) is held only while the connections open their
        snapshots; with C(1) no lock at all is taken (MariaDB).
    type: int
    default: 2
  include_users:
    description:
      - Also back up accounts and grants as CREATE USER/GRANT statements.
    type: bool
    default: true
  method:
    description:
      - How each table's rows are dumped. All methods share the one consistent snapshot.
      - C(native) - the server renders every row as a SQL tuple, written as multi-row INSERTs; row count and a
        content checksum are computed on the way. A restore re-reads every restored table and compares
        its checksum with the recorded one. Portable, and the slower method for big tables.
      - C(tsv) - a C(mariadb) client process (batch mode, on the host running this module) streams each table as
        tab-separated text with NULL bit masks; the checksum is the SHA-256 of that stream. A restore loads it
        with C(LOAD DATA LOCAL INFILE) (the target server must allow C(local_infile)) and verifies it from the
        stream (checksum, row counts, no load warning), without re-reading the table; a value the server
        stored differently without a warning would not be caught. Tested on MariaDB 10.11 only.
        Sets holding C(tsv) tables are written with metadata format 2, which Lifeboat versions
        without C(tsv) support refuse to restore (with a clear error) instead of misreading.
      - C(auto) - C(tsv) for tables of at least 8 MiB (information_schema size), C(native) for smaller ones;
        with O(parallel=1) every table uses C(tsv) as soon as one is big (one connection does everything).
    type: str
    default: auto
    choices: [auto, native, tsv]
  set_type:
    description:
      - Type of the new set.
    type: str
    default: mysql
    choices: [mysql, full]
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reports the databases, table counts and approximate sizes that would be dumped; dumps nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode with the same arguments, the second run reports no change.
    support: none
    details: Every run creates a new backup set.
seealso:
  - module: lifeboat.dr.mysql_restore
'''

EXAMPLES = r'''
- name: Back up every database of the local MariaDB
  lifeboat.dr.mysql_backup:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    login_user: lifeboat_backup
    login_password: "{{ vault_backup_password }}"
  register: backup

- name: Back up two databases with four connections
  lifeboat.dr.mysql_backup:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    login_host: db1.example.com
    login_user: lifeboat_backup
    login_password: "{{ vault_backup_password }}"
    databases: [shop, crm]
    parallel: 4

- name: Back up with the portable per-row method only (a restore re-reads and checksums every table)
  lifeboat.dr.mysql_backup:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    login_user: lifeboat_backup
    login_password: "{{ vault_backup_password }}"
    method: native
'''

RETURN = r'''
set_id:
  description: Identifier of the published set.
  returned: success, not in check mode
  type: str
  sample: mysql_20250129T020000Z_a1b2c3
path:
  description: Folder of the published set.
  returned: success, not in check mode
  type: str
databases:
  description: Databases backed up (in check mode, per database the table count and approximate bytes).
  returned: always
  type: raw
tables:
  description: Number of tables dumped.
  returned: always
  type: int
rows:
  description: Number of rows dumped.
  returned: success, not in check mode
  type: int
stored_bytes:
  description: Bytes the set takes in the store.
  returned: success, not in check mode
  type: int
plaintext_bytes:
  description: Bytes of dump text before compression and encryption.
  returned: success, not in check mode
  type: int
approx_bytes:
  description: Approximate data size from information_schema.
  returned: check mode
  type: int
duration_s:
  description: Seconds the dump took.
  returned: success, not in check mode
  type: float
binlog_position:
  description: Binary log coordinates of the snapshot (null when binary logging is off).
  returned: success, not in check mode
  type: dict
  sample: {"file": "mysql-bin.000003", "position": 1234, "gtid": "0-1-42"}
gtid:
  description: GTID position of the snapshot (MariaDB gtid_binlog_pos form, MySQL gtid_executed form).
  returned: success, not in check mode
  type: str
  sample: 0-1-42
methods:
  description: Number of tables dumped with each method.
  returned: success, not in check mode
  type: dict
  sample: {"native": 12, "tsv": 3}
server_identity:
  description: Which server the position belongs to (MariaDB server_id + gtid_domain_id, MySQL server_uuid).
  returned: always
  type: str
  sample: mariadb:server_id=1:domain=0
'''

from ansible_collections.lifeboat.dr.plugins.module_utils import oplog
from ansible_collections.lifeboat.dr.plugins.module_utils.common import (
    LifeboatModule,
    codec_from_params,
    keyring_from_params,
    merge_specs,
    mysql_argument_spec,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.mysql import ConnParams
from ansible_collections.lifeboat.dr.plugins.module_utils.mysql_backup import (
    backup_mysql_into,
    plan_backup,
    run_backup,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.orchestrate import write_component
from ansible_collections.lifeboat.dr.plugins.module_utils.progress import log_progress


def argument_spec():
    """The module's options: store + mysql layers and its own."""
    return merge_specs(store_argument_spec(), mysql_argument_spec(), dict(
        databases=dict(type="list", elements="str"),
        parallel=dict(type="int", default=2),
        include_users=dict(type="bool", default=True),
        method=dict(type="str", default="auto", choices=["auto", "native", "tsv"]),
        set_type=dict(type="str", default="mysql", choices=["mysql", "full"]),
        set_id=dict(type="str"),
    ))


def backup(module):
    """Check mode: the plan; else one backup run into a new, published set."""
    p = module.params
    conn = ConnParams.from_module_params(p)
    if module.check_mode:
        plan = plan_backup(conn, p["databases"])
        return dict(changed=True, **plan)
    if p["set_id"]:
        keyring = keyring_from_params(p)
        result = write_component(p["store"], p["set_id"], "mysql", keyring, lambda writer: backup_mysql_into(
            writer, conn, databases=p["databases"], parallel=p["parallel"], include_users=p["include_users"],
            progress=log_progress(), method=p["method"]))
        return dict(changed=True, **result)
    result = oplog.run_recorded(p["store"], "backup", lambda handle: run_backup(
        p["store"], keyring_from_params(p), conn, codec=codec_from_params(p), databases=p["databases"],
        parallel=p["parallel"], include_users=p["include_users"], set_type=p["set_type"], progress=log_progress(),
        method=p["method"]),
        describe=oplog.backup_fields, components=["mysql"])
    return dict(changed=True, **result)


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="mysql")
    run_module(module, backup)


if __name__ == "__main__":
    main()
