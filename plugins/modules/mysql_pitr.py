#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module lifeboat.dr.mysql_pitr: recovery points and point-in-time recovery."""

from __future__ import annotations

DOCUMENTATION = r'''
---
module: mysql_pitr
short_description: Analyze recovery points and run point-in-time recovery of MariaDB/MySQL
version_added: 0.1.0
description:
  - C(analyze) lists base backups, archived binlog coverage with gaps, the recoverable
    window of each base and (with O(start)/O(end)) the transactions in a time range.
  - C(find) searches the archived statements (Query events and the SQL of row events)
    with a case-insensitive regular expression.
  - C(plan) computes a recovery plan for one target (base, binlog ranges with exact
    positions, expected data loss, estimated duration, risks, rollback) without changing
    anything. Impossible targets (before the oldest base, inside a gap, in the future,
    not archived yet) fail with C(RecoveryTargetInvalid).
  - C(execute) restores the base with the mysql restore, then replays the archived
    binlogs in one client session up to the target and starts a new archive generation.
  - Target semantics (see docs/pitr.md) - O(target_time) T applies every transaction whose
    binlog timestamp (whole seconds, UTC) is <= T and none after; O(target_position)
    C(file:N) applies events starting before byte N (exclusive); O(target_gtid) is
    inclusive; O(before) stops just before the matched event (by position); O(latest)
    replays everything archived.
  - Tested on MariaDB 10.11; MySQL 8 code paths are untested.
  - C(execute) (outside check mode) appends a C(pitr) job record (base set, stop point, kept-aside
    C(<db>__lbprev_*) schemas) and an audit record to the store.
author:
  - Lifeboat contributors (!UNKNOWN)
extends_documentation_fragment:
  - lifeboat.dr.store
  - lifeboat.dr.mysql
options:
  mode:
    description: What to do.
    type: str
    choices: [analyze, find, plan, execute]
    default: analyze
  identity:
    description: Server identity (by default the only one archived in the store).
    type: str
  target_time:
    description: Recover to this time (ISO 8601; UTC when no zone is given).
    type: str
  target_position:
    description: Recover to C(<binlog file>:<byte offset>), exclusive; the offset must be an event start.
    type: str
  target_gtid:
    description: Recover through this GTID (inclusive).
    type: str
  before:
    description:
      - Case-insensitive regular expression; recover to just before the matching event.
        More than one match is an error listing them unless O(match_index) is given.
    type: str
  match_index:
    description: 0-based index of the match of O(before) to use.
    type: int
  latest:
    description: Recover everything archived (including salvaged binlogs).
    type: bool
    default: false
  pattern:
    description: Regular expression searched by C(find).
    type: str
  start:
    description: Lower time bound (inclusive) for C(analyze) events, C(find) and O(before).
    type: str
  end:
    description: Upper time bound (inclusive) for C(analyze) events, C(find) and O(before).
    type: str
  databases:
    description:
      - Restore and replay only these databases (C(mariadb-binlog --database) semantics - statements
        are selected by their default database).
    type: list
    elements: str
  log_replayed:
    description: Write the restore and the replayed events to the server's binary log.
    type: bool
    default: false
  restore_mode:
    description:
      - How C(execute) restores the base (see M(lifeboat.dr.mysql_restore) O(lifeboat.dr.mysql_restore#module:mode)).
      - C(in_place_swap) restores into the running server (live tables kept aside in C(<db>__lbprev_*)).
      - C(reinit_datadir) is for a server that no longer starts, in ONE restore - stop the service, move
        the datadir aside (kept as C(<datadir>.lbbroken_<time>)), initialise a fresh one, start it, restore
        the base's accounts as OS root over O(root_socket), restore the base, replay. Needs
        O(service_manager), O(datadir), O(root_socket). Salvage the dead server's binlogs first
        (M(lifeboat.dr.mysql_binlog_archive) O(lifeboat.dr.mysql_binlog_archive#module:salvage_dir)).
    type: str
    choices: [in_place_swap, reinit_datadir]
    default: in_place_swap
  service_manager:
    description: With O(restore_mode=reinit_datadir), what stops and starts the server (see M(lifeboat.dr.service)).
    type: str
    choices: [lab, systemd, docker, command]
  service_name:
    description: With O(restore_mode=reinit_datadir), the service name.
    type: str
    default: mysql
  service_settings:
    description:
      - With O(restore_mode=reinit_datadir), the manager's settings as for M(lifeboat.dr.service)
        (the roles pass C(lifeboat_service_settings)). No secrets here.
    type: dict
    default: {}
  datadir:
    description: With O(restore_mode=reinit_datadir), the server's data directory (moved aside, kept).
    type: path
  root_socket:
    description: With O(restore_mode=reinit_datadir), the server's unix socket (root login of the fresh datadir).
    type: path
  start_timeout:
    description: With O(restore_mode=reinit_datadir), seconds the fresh server may take to accept the root login.
    type: float
    default: 120
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: In check mode C(execute) returns the plan and changes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode with the same arguments, the second run reports no change.
    support: partial
    details: C(analyze), C(find) and C(plan) never change anything; C(execute) always restores again.
seealso:
  - module: lifeboat.dr.mysql_binlog_archive
  - module: lifeboat.dr.mysql_restore
'''

EXAMPLES = r'''
- name: Which statement dropped the table?
  lifeboat.dr.mysql_pitr:
    mode: find
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/backup.key
    pattern: 'drop\s+table\s+`?orders'

- name: Recover the shop database to just before the DROP
  lifeboat.dr.mysql_pitr:
    mode: execute
    store: /var/backups/lifeboat
    key_file: /etc/lifeboat/backup.key
    login_user: root
    login_password: "{{ vault_mysql_root_password }}"
    before: 'drop\s+table\s+`?orders'
    databases: [shop]
'''

RETURN = r'''
identity:
  description: Server identity worked on (analyze).
  returned: mode is analyze
  type: str
windows:
  description: Recoverable window of each base backup (analyze).
  returned: mode is analyze
  type: list
  elements: dict
matches:
  description: Matching transactions (find) with time, file, position, gtid, statement.
  returned: mode is find
  type: list
  elements: dict
plan:
  description: The recovery plan (plan, execute).
  returned: mode is plan or execute
  type: dict
restore:
  description:
    - The base restore's result (execute) - verified tables, C(kept_aside) schemas and, with
      O(restore_mode=reinit_datadir), C(broken_datadir_kept_at) (where the old datadir was moved).
  returned: mode is execute and not check mode
  type: dict
replay:
  description: Bytes replayed and seconds taken (execute).
  returned: mode is execute and not check mode
  type: dict
'''

from ansible_collections.lifeboat.dr.plugins.module_utils import oplog, pitr
from ansible_collections.lifeboat.dr.plugins.module_utils.backupset import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.common import (
    LifeboatModule,
    keyring_from_params,
    merge_specs,
    mysql_argument_spec,
    run_module,
    store_argument_spec,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.errors import ConfigError
from ansible_collections.lifeboat.dr.plugins.module_utils.mysql import ConnParams
from ansible_collections.lifeboat.dr.plugins.module_utils.service import get_service

RESTORE_MODES = ("in_place_swap", "reinit_datadir")

TARGETS = ("target_time", "target_position", "target_gtid", "before", "latest")


def argument_spec():
    """The module's options: store + mysql layers and its own."""
    return merge_specs(store_argument_spec(), mysql_argument_spec(), dict(
        mode=dict(type="str", default="analyze", choices=["analyze", "find", "plan", "execute"]),
        identity=dict(type="str"),
        target_time=dict(type="str"), target_position=dict(type="str"), target_gtid=dict(type="str"),
        before=dict(type="str"), match_index=dict(type="int"), latest=dict(type="bool", default=False),
        pattern=dict(type="str"), start=dict(type="str"), end=dict(type="str"),
        databases=dict(type="list", elements="str"),
        log_replayed=dict(type="bool", default=False),
        restore_mode=dict(type="str", default="in_place_swap", choices=list(RESTORE_MODES)),
        service_manager=dict(type="str", choices=["lab", "systemd", "docker", "command"]),
        service_name=dict(type="str", default="mysql"),
        service_settings=dict(type="dict", default={}),
        datadir=dict(type="path"),
        root_socket=dict(type="path"),
        start_timeout=dict(type="float", default=120.0),
    ))


def restore_kwargs_from_params(p):
    """Extra keyword arguments of the base restore (restore_mysql_from) for the chosen restore_mode.

    ConfigError (before anything is changed) when reinit_datadir lacks its settings.
    """
    if p["restore_mode"] != "reinit_datadir":
        return {"mode": p["restore_mode"]}
    missing = [k for k in ("service_manager", "datadir", "root_socket") if not p[k]]
    if missing:
        raise ConfigError(f"restore_mode reinit_datadir needs {', '.join(missing)}",
                          hint="the roles pass lifeboat_service_manager/_settings, lifeboat_mysql_datadir and "
                               "lifeboat_mysql_socket")
    service = get_service(p["service_manager"], p["service_name"], **(p["service_settings"] or {}))
    return {"mode": "reinit_datadir", "service": service, "datadir": p["datadir"], "root_socket": p["root_socket"],
            "start_timeout_s": p["start_timeout"]}


def target_from_params(p):
    """The one recovery target the options name."""
    given = [name for name in TARGETS if p.get(name)]
    if len(given) != 1:
        raise ConfigError(f"give exactly one of {', '.join(TARGETS)} (got {', '.join(given) or 'none'})")
    if p["latest"]:
        return "latest"
    if p["before"]:
        return {"before": p["before"], "match_index": p["match_index"], "start": p["start"], "end": p["end"]}
    key = given[0].replace("target_", "")
    return {key: p[given[0]]}


def run(module):
    p = module.params
    store = Store(p["store"])
    mode = p["mode"]
    keyring = keyring_from_params(p) if (p.get("key_file") or p.get("transit_url")) else None
    if mode == "analyze":
        return dict(changed=False, **pitr.analyze(store, keyring, identity=p["identity"], start=p["start"],
                                                  end=p["end"]))
    if keyring is None:
        raise ConfigError(f"mode {mode} reads the archived binlogs: give key_file or transit_url")
    if mode == "find":
        if not p["pattern"]:
            raise ConfigError("mode find needs pattern")
        return dict(changed=False, matches=pitr.find(store, keyring, p["pattern"], identity=p["identity"],
                                                     start=p["start"], end=p["end"]))
    target = target_from_params(p)
    if isinstance(target, dict) and target.get("before"):
        target = pitr.resolve_before_target(store, keyring, target, p["identity"])
    restore_kwargs = restore_kwargs_from_params(p) if mode == "execute" else {}
    if mode == "plan" or module.check_mode:
        return dict(changed=mode == "execute",
                    plan=pitr.plan(store, keyring, target, identity=p["identity"], databases=p["databases"]))
    return oplog.run_recorded(p["store"], "pitr", lambda handle: pitr.execute(
        store, keyring, target, ConnParams.from_module_params(p), identity=p["identity"], databases=p["databases"],
        log_replayed=p["log_replayed"], restore_kwargs=restore_kwargs), describe=oplog.pitr_fields,
        components=["mysql"], identity=p["identity"], target=str(target), restore_mode=p["restore_mode"])


def main():
    module = LifeboatModule(argument_spec=argument_spec(), supports_check_mode=True, component="mysql pitr")
    run_module(module, run)


if __name__ == "__main__":
    main()
