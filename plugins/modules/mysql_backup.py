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
  - lifeboat.dr.attributes
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
      - C(physical) - the whole server's files, streamed by C(mariabackup --backup --stream=mbstream) (MariaDB only;
        C(mariadb-backup) of the server's major version must be installed where the server runs) into one
        artifact C(mysql/physical.mbstream.zst.enc) through the same compress, encrypt and hash pipeline
        (never on disk unencrypted). Credentials reach mariabackup in a 0600 option file. The manifest
        records the from/to LSN, the binlog file/position/GTID of the consistency point, the server version and
        the InnoDB settings (C(mysql/mysql_physical.json)). O(databases), O(parallel) and O(include_users) do not
        apply (every database and account is in the files). Restored by M(lifeboat.dr.mysql_restore) as a whole
        datadir; see docs/mysql.md.
    type: str
    default: auto
    choices: [auto, native, tsv, physical]
  incremental:
    description:
      - With O(method=physical), back up only the pages changed since the newest physical backup of this server
        in the store (its to-LSN, C(mariabackup --incremental-lsn)). The parent's whole chain must be in the
        store, published and not failed verification, else the task fails naming the reason.
    type: bool
    default: false
  parent:
    description:
      - With O(method=physical), the set id of the parent of an incremental (implies O(incremental=true)).
    type: str
  datadir:
    description:
      - With O(method=physical), the server's data directory (default the server's C(@@datadir)).
    type: path
  service_manager:
    description:
      - With O(method=physical), where mariabackup runs - the server's deployment target (see
        M(lifeboat.dr.service)). Default this host (the process lab, a server on the same machine).
      - C(docker) runs mariabackup inside the server's container (exec through the Docker API, its
        stdout streamed out; the credentials reach it on its stdin, never in a file there). The image
        must contain mariadb-backup of the server's version. A host-side mariabackup cannot back up a
        container's server - it reads the datadir the server names, a path inside the container.
    type: str
    choices: [lab, systemd, docker, command]
  service_name:
    description:
      - With O(service_manager), the service name.
    type: str
    default: mysql
  service_settings:
    description:
      - With O(service_manager), the manager's settings, as for M(lifeboat.dr.service).
    type: dict
    default: {}
  set_type:
    description:
      - Type of the new set.
    type: str
    default: mysql
    choices: [mysql, full]
attributes:
  check_mode:
    support: full
    details: Reports the databases, table counts and approximate sizes that would be dumped; dumps nothing.
      With O(method=physical) the datadir and its size, and for an incremental the parent and its LSN.
  diff_mode:
    support: none
  idempotent:
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

- name: Physical backup (mariabackup stream), then an incremental on top of it
  lifeboat.dr.mysql_backup:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    login_user: lifeboat_backup
    login_password: "{{ vault_backup_password }}"
    method: physical
    incremental: "{{ not (full | default(false)) }}"
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
backup_type:
  description: With O(method=physical), C(full) or C(incremental).
  returned: success with method physical
  type: str
chain:
  description: With O(method=physical), the set ids this backup builds on (the full first; empty for a full).
  returned: success with method physical
  type: list
  elements: str
from_lsn:
  description: With O(method=physical), the LSN the backup starts at (0 for a full).
  returned: success with method physical
  type: int
to_lsn:
  description: With O(method=physical), the checkpoint LSN the next incremental starts at.
  returned: success with method physical
  type: int
server_identity:
  description: Which server the position belongs to (MariaDB server_id + gtid_domain_id, MySQL server_uuid).
  returned: always
  type: str
  sample: mariadb:server_id=1:domain=0
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.backup import (
    backup_mysql_into,
    plan_backup,
    run_backup,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.conn import ConnParams
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.physical import (
    backup_physical_into,
    plan_physical_backup,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.backup import run_backup_module
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    codec_from_params,
    merge_specs,
    mysql_argument_spec,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import log_progress
from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import get_service


def argument_spec():
    """The module's options: store + mysql layers and its own."""
    return merge_specs(store_argument_spec(), mysql_argument_spec(), dict(
        databases=dict(type="list", elements="str"),
        parallel=dict(type="int", default=2),
        include_users=dict(type="bool", default=True),
        method=dict(type="str", default="auto", choices=["auto", "native", "tsv", "physical"]),
        incremental=dict(type="bool", default=False),
        parent=dict(type="str"),
        datadir=dict(type="path"),
        service_manager=dict(type="str", choices=["lab", "systemd", "docker", "command"]),
        service_name=dict(type="str", default="mysql"),
        service_settings=dict(type="dict", default={}),
        set_type=dict(type="str", default="mysql", choices=["mysql", "full"]),
        set_id=dict(type="str"),
    ))


def physical_options(p):
    """The physical method's options (mariabackup's deployment target, datadir, incremental/parent)."""
    target = None
    if p["service_manager"]:
        target = get_service(p["service_manager"], p["service_name"], **(p["service_settings"] or {}))
    return {"incremental": p["incremental"], "parent": p["parent"], "datadir": p["datadir"], "target": target}


def backup(module):
    """Check mode: the plan; else one backup run into a new, published set."""
    p = module.params
    conn = ConnParams.from_module_params(p)
    physical = p["method"] == "physical"
    if (p["incremental"] or p["parent"]) and not physical:
        raise ConfigError("incremental and parent apply to method physical only",
                          hint="set method: physical, or drop incremental/parent")
    logical = dict(databases=p["databases"], parallel=p["parallel"], include_users=p["include_users"],
                   method=p["method"])

    def plan():
        if physical:
            return plan_physical_backup(Store(p["store"]), conn, physical_options(p))
        return plan_backup(conn, p["databases"])

    def write_into(writer, keyring):
        if physical:
            return backup_physical_into(writer, conn, store=Store(p["store"]), progress=log_progress(),
                                        **physical_options(p))
        return backup_mysql_into(writer, conn, progress=log_progress(), **logical)

    return run_backup_module(
        module, "mysql", plan=plan, write_into=write_into,
        own_set=lambda keyring: run_backup(p["store"], keyring, conn, codec=codec_from_params(p),
                                           set_type=p["set_type"], progress=log_progress(),
                                           physical=physical_options(p) if physical else None, **logical))


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="mysql",
                            progress_kind="backup")
    run_module(module, backup)


if __name__ == "__main__":
    main()
