#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.mysql_restore: staged, verified restore of a MySQL/MariaDB backup."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: mysql_restore
short_description: Restore MariaDB/MySQL databases or tables from a Lifeboat set, verified, without destroying live data
version_added: 0.1.0
description:
  - Restores the whole server, selected databases or single tables from the C(mysql)
    component of a backup set written by M(lifeboat.dr.mysql_backup).
  - Tables are first loaded into staging schemas C(<db>__lbrestore) (parallel, fast-load
    session settings) and verified (row count and content checksum against the values
    recorded at backup time). Only then are they swapped in with one atomic
    C(RENAME TABLE); the previous tables are kept in C(<db>__lbprev_<time>) and never deleted.
  - Views, routines, triggers and events of restored databases are recreated after the swap.
  - Tested on MariaDB 10.11; MySQL 8 is untested (see docs/mysql.md).
  - Each run (outside check mode) appends a C(restore) job record to C(<store>/jobs/history.jsonl) and an
    audit record; a restore that passed its check is recorded with C(details.verified=true) and
    C(details.kept_aside) (the C(<db>__lbprev_*) schemas; Lifeboat never drops them).
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.mysql
options:
  backup_id:
    description:
      - Set to restore from. Default is the newest complete set holding a C(mysql) component.
    type: str
  databases:
    description:
      - Databases to restore whole. Default (with O(tables) unset) is every database of the set.
    type: list
    elements: str
  tables:
    description:
      - Single tables to restore, as C(<database>.<table>). Overrides O(databases).
    type: list
    elements: str
  rename_to:
    description:
      - With O(mode=side_by_side), new names, C(<db>.<table>) -> C(<new_table>) or
        C(<new_db>.<new_table>), and C(<db>) -> C(<new_db>). Items not listed get the suffix C(_restored).
    type: dict
  mode:
    description:
      - C(in_place_swap) replaces the live tables (kept aside) with the restored ones.
      - C(side_by_side) puts the restored tables beside the originals under new names
        (without foreign keys); it never overwrites anything.
      - C(reinit_datadir) is for a server that no longer starts. It stops the server, moves the datadir
        aside (kept), initialises a fresh one, starts the server, restores users, then everything.
    type: str
    default: in_place_swap
    choices: [in_place_swap, side_by_side, reinit_datadir]
  include_users:
    description:
      - Also restore accounts and grants (CREATE USER IF NOT EXISTS / GRANT). Always done for C(reinit_datadir).
    type: bool
    default: false
  parallel:
    description:
      - Number of connections loading tables at the same time.
    type: int
    default: 2
  write_binlog:
    description:
      - Write the restore to the binary log (default; keeps replicas and the binlog archive consistent).
        C(false) sets C(sql_log_bin=0) in the restore sessions (needs BINLOG ADMIN).
    type: bool
    default: true
  service_manager:
    description:
      - For O(mode=reinit_datadir), how the server is started/stopped (C(lab), C(systemd), C(docker)
        or C(command); see M(lifeboat.dr.service)). Required with O(mode=reinit_datadir).
    type: str
    choices: [lab, systemd, docker, command]
  service_name:
    description:
      - For O(mode=reinit_datadir), the service name.
    type: str
    default: mysql
  service_settings:
    description:
      - For O(mode=reinit_datadir), the manager's settings, as for M(lifeboat.dr.service) (the roles pass
        C(lifeboat_service_settings)); e.g. C(repo_dir) for the C(lab) manager, C(unit) for C(systemd).
        Unknown settings are an error. No secrets here.
    type: dict
    default: {}
  start_timeout:
    description:
      - For O(mode=reinit_datadir), seconds the fresh server may take to accept the root login over
        O(root_socket) after the service start.
    type: float
    default: 120
  datadir:
    description:
      - For O(mode=reinit_datadir), the server's data directory.
    type: path
  root_socket:
    description:
      - For O(mode=reinit_datadir), the unix socket of the server; the fresh datadir's
        C(root@localhost) (socket authentication, run as OS root) restores the users through it.
    type: path
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Returns the plan (what goes where, what is kept aside) and checks that the server is reachable.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode with the same arguments, the second run reports no change.
    support: none
    details: Every run restores again (the previous tables are kept aside each time).
seealso:
  - module: lifeboat.dr.mysql_backup
'''

EXAMPLES = r'''
- name: Restore everything from the newest set, swapping the live tables aside
  lifeboat.dr.mysql_restore:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    login_user: lifeboat_admin
    login_password: "{{ vault_admin_password }}"

- name: Restore one table beside the original as orders_restored
  lifeboat.dr.mysql_restore:
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/kek.key
    login_user: lifeboat_admin
    login_password: "{{ vault_admin_password }}"
    backup_id: mysql_20250129T020000Z_a1b2c3
    tables: [shop.orders]
    mode: side_by_side
    rename_to:
      shop.orders: orders_restored
'''

RETURN = r'''
plan:
  description: What was (check mode - would be) restored where.
  returned: always
  type: dict
verified:
  description: Per restored table, the row count and checksum found after loading (equal to the recorded ones).
  returned: success, not in check mode
  type: dict
kept_aside:
  description: Schema -> tables moved aside from the live server.
  returned: success with mode in_place_swap or reinit_datadir
  type: dict
objects:
  description: Counts of recreated views, routines, triggers and events.
  returned: success, not in check mode
  type: dict
binlog_position:
  description: Binary log position of the restored snapshot (the start point of a point-in-time replay).
  returned: success, not in check mode
  type: dict
broken_datadir_kept_at:
  description: With O(mode=reinit_datadir), where the old datadir was moved (kept; Lifeboat never deletes it).
  returned: success with mode reinit_datadir
  type: str
service:
  description: With O(mode=reinit_datadir) in check mode, how the service would be controlled (no secrets).
  returned: check mode with mode reinit_datadir
  type: dict
duration_s:
  description: Seconds the restore took.
  returned: success, not in check mode
  type: float
'''

from ansible_collections.lifeboat.dr.plugins.module_utils import oplog
from ansible_collections.lifeboat.dr.plugins.module_utils.common import (
    LifeboatModule,
    keyring_from_params,
    merge_specs,
    mysql_argument_spec,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.errors import ConfigError
from ansible_collections.lifeboat.dr.plugins.module_utils.mysql import ConnParams, connect, detect_flavor
from ansible_collections.lifeboat.dr.plugins.module_utils.mysql_restore import (
    MODES,
    open_backup_set,
    plan_restore,
    restore_mysql_from,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.progress import log_progress
from ansible_collections.lifeboat.dr.plugins.module_utils.service import get_service


def argument_spec():
    """The module's options: store + mysql layers and its own."""
    return merge_specs(store_argument_spec(), mysql_argument_spec(), dict(
        backup_id=dict(type="str"),
        databases=dict(type="list", elements="str"),
        tables=dict(type="list", elements="str"),
        rename_to=dict(type="dict"),
        mode=dict(type="str", default="in_place_swap", choices=list(MODES)),
        include_users=dict(type="bool", default=False),
        parallel=dict(type="int", default=2),
        write_binlog=dict(type="bool", default=True),
        service_manager=dict(type="str", choices=["lab", "systemd", "docker", "command"]),
        service_name=dict(type="str", default="mysql"),
        service_settings=dict(type="dict", default={}),
        start_timeout=dict(type="float", default=120.0),
        datadir=dict(type="path"),
        root_socket=dict(type="path"),
    ))


def restore(module):
    """Check mode: the plan (+ reachability); else the staged, verified restore."""
    p = module.params
    conn = ConnParams.from_module_params(p)
    backup_set = open_backup_set(p["store"], p["backup_id"])
    options = dict(databases=p["databases"], tables=p["tables"], rename_to=p["rename_to"], mode=p["mode"],
                   include_users=p["include_users"])
    if module.check_mode:
        plan = plan_restore(backup_set, **options)
        if p["mode"] == "reinit_datadir":
            service = service_from_params(p)
            return dict(changed=True, plan=plan.describe(), service=service.describe())
        server = connect(conn)
        try:
            flavor = detect_flavor(server)
        finally:
            server.close()
        return dict(changed=True, plan=plan.describe(), server=flavor.to_dict())
    return oplog.run_recorded(p["store"], "restore", lambda handle: _restore(p, conn, backup_set, options),
                              describe=oplog.mysql_restore_fields, components=["mysql"], backup_id=backup_set.set_id,
                              mode=p["mode"])


def service_from_params(p):
    """The MySQL service for mode reinit_datadir, built like the other modules build theirs."""
    if not p["service_manager"] or not p["datadir"] or not p["root_socket"]:
        raise ConfigError("mode reinit_datadir needs service_manager, datadir and root_socket",
                          hint="the roles pass lifeboat_service_manager/_settings, lifeboat_mysql_datadir and "
                               "lifeboat_mysql_socket")
    return get_service(p["service_manager"], p["service_name"], **(p["service_settings"] or {}))


def _restore(p, conn, backup_set, options):
    """The staged, verified restore (outside check mode)."""
    service = None
    if p["mode"] == "reinit_datadir":
        service = service_from_params(p)
    result = restore_mysql_from(backup_set, keyring_from_params(p), conn, parallel=p["parallel"],
                                write_binlog=p["write_binlog"], service=service, datadir=p["datadir"],
                                root_socket=p["root_socket"], start_timeout_s=p["start_timeout"],
                                progress=log_progress(), **options)
    return dict(changed=True, set_id=backup_set.set_id, **result)


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="mysql")
    run_module(module, restore)


if __name__ == "__main__":
    main()
