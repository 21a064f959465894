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
  - C(analyze) lists base backups, archived binlog coverage with gaps, the generations
    (timelines) with their branch points and what is recoverable on each, the recoverable
    window of each base on the current line of history and (with O(start)/O(end)) the
    transactions in a time range.
  - C(find) searches the archived statements (Query events and the SQL of row events)
    with a case-insensitive regular expression, and numbers the matches as a O(before) target of the same
    pattern chooses among them (C(match_index); O(generation), O(start) and O(end) count as they do there).
  - C(plan) computes a recovery plan for one target (base, binlog ranges with exact
    positions, expected data loss, estimated duration, risks, rollback) without changing
    anything. Impossible targets (before the oldest base, inside a gap, in the future,
    not archived yet) fail with C(RecoveryTargetInvalid).
  - C(execute) restores the base with the mysql restore, then replays the archived
    binlogs up to the target - by default (O(replay_method=auto)) through the server's own parallel
    replication applier where it applies (MariaDB on this host, the SQL thread not binlogging the
    replay), else in one client session (C(mariadb-binlog | mariadb)) - and starts a new archive generation
    that records its branch point (parent generation, exclusive position, last applied
    GTID, time). The result says when a new base backup is needed (C(base_backup_needed)).
  - Targets follow the CURRENT line of history, as PostgreSQL timelines do - a base from an
    earlier generation, that generation's binlogs up to the branch point, then the newer
    generation's binlogs. A target that lies only on history a PITR abandoned is refused
    unless O(generation) names it; a line that cannot be followed is refused naming what is missing.
  - C(plan) and C(execute) need exactly one target - O(target_time), O(target_position), O(target_gtid),
    O(before) or O(latest=true); C(find), C(plan) and C(execute) read the archived binlogs, so they need
    O(key_file) or O(transit_url). Ansible refuses other combinations before the module runs.
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
  - lifeboat.dr.attributes
options:
  mode:
    description: What to do.
    type: str
    choices: [analyze, find, plan, execute]
    default: analyze
  identity:
    description: Server identity (by default the only one archived in the store).
    type: str
  generation:
    description:
      - Follow the line of history of this archive generation instead of the current (newest) one, e.g. to
        recover a target on a branch an earlier PITR abandoned. C(analyze) lists the generations.
    type: int
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
    description:
      - 0-based index of the match of O(before) to use, as C(find) lists it (C(match_index) of each match).
    type: int
  latest:
    description:
      - Recover everything archived (including salvaged binlogs). Like the other targets, give it only as
        the one target (O(latest=true)); C(latest=false) beside another target is refused as two targets.
    type: bool
  pattern:
    description:
      - Regular expression searched by C(find) (default O(before), so that C(find) lists what O(before) chooses among).
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
    description:
      - With O(restore_mode=reinit_datadir), what stops and starts the server (see M(lifeboat.dr.service)).
      - Also needed when the base is a physical backup (M(lifeboat.dr.mysql_backup) with
        O(lifeboat.dr.mysql_backup#module:method=physical)), whatever O(restore_mode) - its restore replaces the
        whole datadir (see M(lifeboat.dr.mysql_restore)); give O(datadir) unless the manager knows it. A physical base
        restores the whole server, so O(databases) must not be given.
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
  replay_method:
    description:
      - How C(execute) replays the binlogs.
      - C(applier) - the server's parallel replication applier - the range is installed as the relay log of the
        replication connection C(lifeboat_pitr) (decrypted into the datadir, 0600, removed afterwards), only
        the SQL thread runs, with O(applier_workers) workers, until the exact stop position. Needs MariaDB, the
        module running on the DB host (write access to the datadir) and no running replication connection.
        Where C(log_bin) and C(log_slave_updates) are both ON (parallel workers would binlog the replay) the
        SQL thread applies alone, its session not binlogged (C(init_slave); C(gtid_strict_mode) OFF during the
        replay; both put back); C(auto) uses that only when the replay runs with
        C(innodb_flush_log_at_trx_commit) other than 1 (O(relax_durability)), as it is no faster than the
        client with an fsync per commit. With O(log_replayed) only a server whose SQL thread binlogs qualifies.
        Fails naming what is missing otherwise. An existing connection named
        C(lifeboat_pitr) is refused; other replication connections are never touched.
      - C(client) - C(mariadb-binlog | mariadb) in one session (the reference).
      - C(auto) - C(applier) where it applies, else C(client). The result's C(replay.method) and C(replay.why) say
        which one ran and why.
    type: str
    choices: [auto, applier, client]
    default: auto
  applier_workers:
    description: Parallel workers of the applier (C(slave_parallel_threads)); default one per CPU of the DB host.
    type: int
  applier_parallel_mode:
    description: C(slave_parallel_mode) of the applier's connection.
    type: str
    choices: [optimistic, conservative]
    default: optimistic
  applier_timeout:
    description: Seconds the applier may take to reach the stop point before the task fails.
    type: float
    default: 21600
  relax_durability:
    description:
      - For the replay only (either engine) set C(innodb_flush_log_at_trx_commit=2) and C(sync_binlog=0) on the
        server - no fsync per replayed commit. Only for a server the recovery owns (nothing else writes to it,
        e.g. C(pitr.yml) stops the app) or a build-aside instance.
      - The originals are recorded in the store first, put back and flushed (C(FLUSH ENGINE LOGS)) when the
        replay ends, also when it fails; after a killed run the next C(execute) puts them back before anything
        else. A crash during the replay means running C(execute) again (it restores the base again).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: In check mode C(execute) returns the plan and changes nothing.
  diff_mode:
    support: none
  idempotent:
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
  description:
    - Matching transactions (find), oldest first, with time, generation, file, position, gtid, statement,
      C(on_line) (on the line of history followed) and C(match_index) (what O(match_index) chooses it with,
      null when a O(before) target cannot choose it).
  returned: mode is find
  type: list
  elements: dict
listing:
  description: One line per match of C(matches) - C([match_index] time generation file:position gtid statement).
  returned: mode is find
  type: list
  elements: str
generations:
  description:
    - Each archive generation (analyze) with C(branch) (parent generation, file, exclusive position, last
      applied GTID and time, when, by what), C(line) (the generations its history follows, each up to
      where the next branched off), C(current), C(recoverable) (best base and window on its line) or
      C(not_recoverable_because).
  returned: mode is analyze
  type: list
  elements: dict
base_backup_needed:
  description: Why a new base backup is needed (the newest generation has none since its PITR/restore), or null.
  returned: mode is analyze or execute
  type: str
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
  description:
    - Bytes replayed and seconds taken (execute); C(method) (C(applier) or C(client)) and C(why) it was chosen;
      with the applier also C(workers), C(parallel_mode) and C(applied_to) (the verified stop point);
      C(durability) - C(unchanged), or the relaxed settings and the originals put back.
  returned: mode is execute and not check mode
  type: dict
timing:
  description:
    - Seconds of the execute - C(restore_s) (the base), C(replay_s), C(binlog_fetch_s) and C(apply_s) (applier
      only - the binlogs decrypted from the store into relay files, then the SQL thread), C(new_generation_s),
      C(total_s).
  returned: mode is execute and not check mode
  type: dict
'''

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import pitr, relay_replay
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.conn import ConnParams
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
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import get_service

RESTORE_MODES = ("in_place_swap", "reinit_datadir")

TARGETS = ("target_time", "target_position", "target_gtid", "before", "latest")

KEY_OPTIONS = ("key_file", "transit_url")

MUTUALLY_EXCLUSIVE = [TARGETS]
"""At most one recovery target, in every mode."""

REQUIRED_IF = [
    ("mode", "plan", TARGETS, True),
    ("mode", "execute", TARGETS, True),
    ("mode", "find", ("pattern", "before"), True),
    ("mode", "find", KEY_OPTIONS, True),
    ("mode", "plan", KEY_OPTIONS, True),
    ("mode", "execute", KEY_OPTIONS, True),
    ("restore_mode", "reinit_datadir", ("service_manager", "datadir", "root_socket")),
]
"""plan/execute need a target; find a pattern; every mode but analyze reads the archived binlogs
(a key); reinit_datadir needs the service, the datadir and the root socket. Ansible's messages
name the missing options (e.g. ``mode is plan but any of the following are missing: target_time,
target_position, target_gtid, before, latest``)."""


def argument_spec():
    """The module's options: store + mysql layers and its own."""
    return merge_specs(store_argument_spec(), mysql_argument_spec(), dict(
        mode=dict(type="str", default="analyze", choices=["analyze", "find", "plan", "execute"]),
        identity=dict(type="str"), generation=dict(type="int"),
        target_time=dict(type="str"), target_position=dict(type="str"), target_gtid=dict(type="str"),
        before=dict(type="str"), match_index=dict(type="int"), latest=dict(type="bool"),
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
        replay_method=dict(type="str", default="auto", choices=["auto", "applier", "client"]),
        applier_workers=dict(type="int"),
        applier_parallel_mode=dict(type="str", default="optimistic", choices=["optimistic", "conservative"]),
        applier_timeout=dict(type="float", default=21600.0),
        relax_durability=dict(type="bool", default=False),
    ))


def restore_kwargs_from_params(p):
    """Extra keyword arguments of the base restore (restore_mysql_from) for the chosen restore_mode.

    reinit_datadir's settings are required by the argument spec (REQUIRED_IF); empty ones are
    refused by the restore before anything is changed.
    """
    if p["restore_mode"] != "reinit_datadir":
        if p["service_manager"]:  # a physical base: its restore stops and starts the server
            return {"mode": p["restore_mode"], "datadir": p["datadir"], "start_timeout_s": p["start_timeout"],
                    "service": get_service(p["service_manager"], p["service_name"], **(p["service_settings"] or {}))}
        return {"mode": p["restore_mode"]}
    service = get_service(p["service_manager"], p["service_name"], **(p["service_settings"] or {}))
    return {"mode": "reinit_datadir", "service": service, "datadir": p["datadir"], "root_socket": p["root_socket"],
            "start_timeout_s": p["start_timeout"]}


def applier_options_from_params(p):
    """The parallel applier's options (validated: ConfigError naming a bad one)."""
    return relay_replay.ApplierOptions(workers=p["applier_workers"], mode=p["applier_parallel_mode"],
                                       timeout_s=p["applier_timeout"]).checked()


def target_from_params(p):
    """The one recovery target the options name (the argument spec lets at most one through).

    The one given may still name nothing (``latest: false``, an empty string): ConfigError naming the fix.
    """
    if p["latest"]:
        return "latest"
    if p["before"]:
        return {"before": p["before"], "match_index": p["match_index"], "start": p["start"], "end": p["end"]}
    for name in ("target_time", "target_position", "target_gtid"):
        if p[name]:
            return {name.replace("target_", ""): p[name]}
    raise ConfigError("no recovery target: the one given is empty or latest: false",
                      hint=f"give latest: true or one of {', '.join(TARGETS[:-1])}")


def run(module):
    p = module.params
    store = Store(p["store"])
    mode = p["mode"]
    if mode == "analyze":  # the key is optional here (REQUIRED_IF asks for it in the other modes)
        keyring = keyring_from_params(p) if (p["key_file"] or p["transit_url"]) else None
        return dict(changed=False, **pitr.analyze(store, keyring, identity=p["identity"], start=p["start"],
                                                  end=p["end"]))
    keyring = keyring_from_params(p)
    if mode == "find":
        pattern = p["pattern"] or p["before"]
        matches = pitr.before_candidates(store, keyring, pattern, identity=p["identity"], generation=p["generation"],
                                         start=p["start"], end=p["end"])
        return dict(changed=False, matches=matches, listing=[pitr.describe_match(m) for m in matches])
    target = target_from_params(p)
    if isinstance(target, dict) and target.get("before"):
        target = pitr.resolve_before_target(store, keyring, target, p["identity"], p["generation"])
    restore_kwargs = restore_kwargs_from_params(p) if mode == "execute" else {}
    if mode == "plan" or module.check_mode:
        return dict(changed=mode == "execute",
                    plan=pitr.plan(store, keyring, target, identity=p["identity"], databases=p["databases"],
                                   generation=p["generation"]))
    return oplog.run_recorded(p["store"], "pitr", lambda handle: pitr.execute(
        store, keyring, target, ConnParams.from_module_params(p), identity=p["identity"], databases=p["databases"],
        log_replayed=p["log_replayed"], restore_kwargs=restore_kwargs, generation=p["generation"],
        replay_method=p["replay_method"], applier=applier_options_from_params(p),
        relax_durability=p["relax_durability"]),
        describe=oplog.pitr_fields,
        components=["mysql"], identity=p["identity"], target=str(target), restore_mode=p["restore_mode"])


def main():
    module = LifeboatModule(argument_spec=argument_spec(), mutually_exclusive=MUTUALLY_EXCLUSIVE,
                            required_if=REQUIRED_IF, supports_check_mode=True, component="mysql pitr",
                            progress_kind="pitr")
    run_module(module, run)


if __name__ == "__main__":
    main()
