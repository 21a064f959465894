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
  - A set taken with O(lifeboat.dr.mysql_backup#module:method=physical) is restored by files, whatever
    O(mode) says - the whole server, from its chain (the full, then each incremental). The inputs are proven first
    (every set of the chain, the keys, free space beside the datadir, the installed server's major version equal to
    the backup's - refused naming both); each stream is decrypted into C(mbstream -x) in a fresh folder beside the
    datadir and prepared (C(mariabackup --prepare), then each C(--incremental-dir)); then the server is stopped, the
    prepared folder and the datadir are exchanged atomically (C(renameat2)), the old datadir is kept as
    C(<datadir>.lbprev_<time>) (never deleted), the server is started and must pass a health gate (login, system
    tables), else the old datadir is put back and started. Needs O(service_manager) and O(datadir) (the lab
    manager knows its datadir). O(databases), O(tables), O(rename_to) and O(include_users) do not apply.
    Work folders C(<datadir>.lbrestore_*) are removed when the run ends, whatever its outcome; those a killed
    run left are cleaned up by the next physical restore (a datadir one of them had already replaced is kept as
    C(<datadir>.lbprev_<time>)). The restored server's binlog history branches at the set's position; when the
    store archives its binlogs, a new archive generation records it (see RV(timeline)).
  - On a Compose deployment (O(service_manager=docker)) whose datadir is a named volume's folder, the version
    checked is the container's own C(mariadbd) (by exec, or in a throwaway container of its image when the
    server is stopped), and once the health gate passed the replaced datadir moves into a new volume
    C(<volume>-lifeboat-kept-<time>) labelled C(lifeboat.kept-from) and C(lifeboat.kept-at) (RV(kept_volume)).
  - Tested on MariaDB 10.11; MySQL 8 is untested (see docs/mysql.md).
  - Each run (outside check mode) appends a C(restore) job record to C(<store>/jobs/history.jsonl) and an
    audit record; a restore that passed its check is recorded with C(details.verified=true) and
    C(details.kept_aside) (the C(<db>__lbprev_*) schemas; Lifeboat never drops them).
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.mysql
  - lifeboat.dr.attributes
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
        C(false) sets C(sql_log_bin=0) in the restore sessions (needs BINLOG ADMIN); the server's history then
        branches at the set's binlog position - when the store archives this server's binlogs, the restore
        (modes C(in_place_swap) and C(reinit_datadir) without O(rename_to)) runs C(FLUSH BINARY LOGS) and
        starts a new archive generation recording that branch point, so later PITRs follow it (see C(timeline)).
    type: bool
    default: true
  service_manager:
    description:
      - For O(mode=reinit_datadir), how the server is started/stopped (C(lab), C(systemd), C(docker)
        or C(command); see M(lifeboat.dr.service)). Required with O(mode=reinit_datadir).
      - Also required to restore a physical set (whatever O(mode)); ignored for a logical set in the other
        modes, so the roles always pass it and the set decides.
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
      - For O(mode=reinit_datadir) and for a physical set (unless the manager knows it), the server's data
        directory.
    type: path
  root_socket:
    description:
      - For O(mode=reinit_datadir), the unix socket of the server; the fresh datadir's
        C(root@localhost) (socket authentication, run as OS root) restores the users through it.
    type: path
attributes:
  check_mode:
    support: full
    details: Returns the plan (what goes where, what is kept aside) and checks that the server is reachable.
  diff_mode:
    support: none
  idempotent:
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
timeline:
  description:
    - After a restore with O(write_binlog=false) into a server whose binlogs the store archives - the new
      archive generation (C(generation)), its C(branch) point and C(base_backup_needed); C(error) when it
      could not be recorded; null otherwise.
    - After a restore of a physical set (never binlogged, the restored server starts a new binlog) into a server
      whose binlogs the store archives, always; the new generation starts at the restored server's current
      binlog file and branches at the set's binlog position.
  returned: success, not in check mode
  type: dict
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
method:
  description: C(physical) for a physical set (C(plan) then holds the proven inputs, C(chain) the restored sets).
  returned: success with a physical set
  type: str
kept_datadir:
  description: For a physical set, where the replaced datadir was moved (kept; Lifeboat never deletes it).
  returned: success with a physical set
  type: str
kept_volume:
  description: For a physical set restored into a Compose service's named volume, the volume now holding
    the replaced datadir.
  returned: success with a physical set and a named volume as datadir
  type: str
cleaned_leftovers:
  description:
    - For a physical set, the work folders C(<datadir>.lbrestore_*) that killed restores had left beside the
      datadir and what this run did with each (C(path), C(action)) - removed, or, when a killed run had already
      exchanged the datadir, the datadir it replaced kept as C(<datadir>.lbprev_<time>) (C(kept_datadir)).
  returned: success with a physical set
  type: list
  elements: dict
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

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import pitr
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.conn import (
    ConnParams,
    connect,
    detect_flavor,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.physical import (
    is_physical,
    plan_physical_restore,
    restore_physical,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.restore import (
    MODES,
    open_backup_set,
    plan_restore,
    restore_mysql_from,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import (
    LifeboatModule,
    keyring_from_params,
    merge_specs,
    mysql_argument_spec,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store import oplog
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, LifeboatError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger, log_progress
from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import get_service

LOG = get_logger("mysql_restore")


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
    if is_physical(backup_set):
        return _restore_physical(module, p, conn, backup_set)
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
    return dict(changed=True, set_id=backup_set.set_id, timeline=_record_timeline(p, conn, backup_set), **result)


def _restore_physical(module, p, conn, backup_set):
    """A physical set: the chain's files become the server's datadir (check mode: the proven inputs)."""
    if not p["service_manager"]:
        raise ConfigError(f"set {backup_set.set_id} is a physical backup: restoring it stops and starts the server",
                          hint="give service_manager (and service_settings), and datadir unless the manager knows it")
    service = get_service(p["service_manager"], p["service_name"], **(p["service_settings"] or {}))
    datadir = p["datadir"] or service.data_dir()
    if not datadir:
        raise ConfigError("a physical restore needs the server's datadir", hint="give datadir")
    store, keyring = Store(p["store"]), keyring_from_params(p)
    if module.check_mode:
        return dict(changed=True, method="physical", plan=plan_physical_restore(store, backup_set, keyring,
                                                                                datadir=datadir, service=service),
                    service=service.describe())

    def run(_handle):
        result = restore_physical(store, backup_set, keyring, conn, service=service, datadir=datadir,
                                  start_timeout_s=p["start_timeout"], progress=log_progress())
        return dict(changed=True, timeline=_record_physical_timeline(store, conn, backup_set), **result)

    return oplog.run_recorded(p["store"], "restore", run, describe=oplog.mysql_restore_fields, components=["mysql"],
                              backup_id=backup_set.set_id, mode="physical")


def _record_physical_timeline(store, conn, backup_set):
    """A physical restore never writes the binlog: the restored server's history always branches at the
    set's binlog position, its current (new) binlog file the first of the new line. Recorded in the
    store's binlog archive like a not-binlogged logical restore (pitr.record_restore_branch); a failure
    is returned as ``error`` (and logged), never raised: the restore itself succeeded."""
    try:
        return pitr.record_restore_branch(store, backup_set, conn, flush=False)
    except LifeboatError as err:
        LOG.error("restore done, but its branch point was not recorded in the binlog archive: %s", err)
        return {"error": f"the branch point was not recorded in the binlog archive: {err}",
                "hint": "a later PITR cannot follow this restore; take a new base backup with backup.yml"}


def _record_timeline(p, conn, backup_set):
    """A restore that was not binlogged replaced history: record the branch point in the
    store's binlog archive (pitr.record_restore_branch). The restore itself succeeded, so a
    failure here is returned as ``error`` (and logged), never raised."""
    if p["write_binlog"] or p["mode"] == "side_by_side" or p["rename_to"]:
        return None
    try:
        return pitr.record_restore_branch(Store(p["store"]), backup_set, conn, databases=p["databases"],
                                          tables=p["tables"])
    except LifeboatError as err:
        LOG.error("restore done, but its branch point was not recorded in the binlog archive: %s", err)
        return {"error": f"the branch point was not recorded in the binlog archive: {err}",
                "hint": "a later PITR cannot follow this restore; take a new base backup with backup.yml"}


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="mysql",
                            progress_kind="restore")
    run_module(module, restore)


if __name__ == "__main__":
    main()
