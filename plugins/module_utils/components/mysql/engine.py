# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MySQL/MariaDB component engine (:class:`components.ComponentEngine` for ``mysql``).

Internal API of ``lifeboat.dr``. Binds the logical dump (:mod:`mysql_backup`), the restore
(:mod:`mysql_restore`) and the scratch server (:mod:`mysql_scratch`) to the one engine
interface, and holds the MySQL verification checks: :func:`verify_mysql_dump` (recompute
every table from its artifact, no server) and :func:`verify_mysql_scratch` (restore into a
scratch MariaDB with the very code path of a real restore).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.components.base import Check, check, register
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import VerificationFailed
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import ProgressFn

if TYPE_CHECKING:
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.scratch import ScratchMariaDB
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.writer import SetWriter

COMPONENT = "mysql"


def verify_mysql_dump(backup_set: BackupSet, keyring: KeyRing) -> list[Check]:
    """Recompute every table's row count and checksum from its artifact alone (no server); compare.

    Both dump methods (:func:`mysql_backup.recompute_from_artifact`). Cheaper and weaker
    than :func:`verify_mysql_scratch` (proves the dump matches its record, not that it loads).
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.backup import recompute_from_artifact

    meta = backup_set.read_json("mysql", "mysql_backup_metadata.json")
    checks = []
    for table in meta.get("tables", []):
        with backup_set.open_artifact("mysql", table["artifact"], keyring) as reader:
            got = recompute_from_artifact(reader, table)
        ok = got["rows"] == table.get("rows") and got["checksum"] == table.get("checksum")
        checks.append(check(f"mysql {table['db']}.{table['table']} rows and checksum", ok,
                            f"{got['rows']} rows (recorded {table.get('rows')})", f"mysql/{table['artifact']}"))
    return checks


def _failed_table_artifact(meta: dict[str, Any], message: str) -> str:
    """``mysql/<artifact>`` of the table a restore error names (``... (from db.table) ...``), else ``mysql``."""
    for table in meta.get("tables", []):
        if f"(from {table['db']}.{table['table']})" in message:
            return f"mysql/{table['artifact']}"
    return "mysql"


def verify_mysql_scratch(backup_set: BackupSet, keyring: KeyRing, options: dict[str, Any],
                         measured: dict[str, float]) -> list[Check]:
    """Restore the set's MySQL component into a scratch MariaDB and check it; the scratch is always removed.

    One check per table (row count + checksum against the recorded values, verified by
    the restore itself) and one for the recreated views/routines/triggers/events. A
    table that differs fails the check naming its artifact (the restore stops at the
    first one). On success ``measured["mysql"]`` = wall seconds of the restore alone.
    ``options``: ``work_dir`` (parent of the scratch folder), ``mysql_parallel`` (load
    connections, default 2). Raises DependencyMissing if no MariaDB server is installed.
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.restore import (
        read_backup_metadata,
        restore_mysql_from,
    )
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.scratch import ScratchMariaDB

    meta = read_backup_metadata(backup_set)
    boot_started = time.monotonic()
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.scratch import launcher_for

    with ScratchMariaDB(base_dir=options.get("work_dir"), launcher=launcher_for(options, "mysql")) as scratch:
        boot_s = time.monotonic() - boot_started
        started = time.monotonic()
        try:
            result = restore_mysql_from(backup_set, keyring, scratch.params, mode="in_place_swap",
                                        include_users=False, parallel=int(options.get("mysql_parallel") or 2),
                                        write_binlog=False)
        except VerificationFailed as err:
            return [check("mysql restore into a scratch MariaDB", False, err.message,
                          _failed_table_artifact(meta, err.message))]
        restore_s = time.monotonic() - started
    measured["mysql"] = round(restore_s, 3)
    verified = result.get("verified") or {}
    checks = []
    for table in meta.get("tables", []):
        key = f"{table['db']}.{table['table']}"
        got = verified.get(key) or {}
        ok = got.get("rows") == table.get("rows") and got.get("checksum") == table.get("checksum")
        how = "from the load stream" if got.get("verified_by") == "stream" else "read back"
        checks.append(check(f"mysql {key} restored with the recorded rows and checksum", ok,
                            f"{got.get('rows')} rows (recorded {table.get('rows')}), {how}",
                            f"mysql/{table['artifact']}"))
    wanted = {k: v for k, v in (meta.get("objects") or {}).items() if v}
    made = {k: v for k, v in (result.get("objects") or {}).items() if v}
    checks.append(check("mysql views, routines, triggers and events recreated", wanted == made,
                        f"{made or 'none'} (recorded {wanted or 'none'}); scratch server {scratch.launcher.where} "
                        f"up in {boot_s:.1f} s, "
                        f"restore {restore_s:.1f} s", "mysql/" + meta.get("objects_artifact", "objects")))
    return checks


def _physical(backup_set: BackupSet) -> bool:
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.physical import is_physical

    return is_physical(backup_set)


def verify_physical_quick(store: Store, backup_set: BackupSet) -> list[Check]:
    """A physical set's quick check: its chain is whole (every parent published, not failed, LSNs continue)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.physical import resolve_chain
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError

    try:
        chain = resolve_chain(store, backup_set)
    except LifeboatError as err:
        return [check("mysql physical chain complete", False, err.message, "mysql")]
    return [check("mysql physical chain complete", True, " -> ".join(s.set_id for s, _parent in chain), "mysql")]


class MysqlEngine:
    """``mysql``: a logical dump per table (native or tsv), restored by the same format code; or a
    physical mariabackup stream (``method: physical``, :mod:`physical`), restored by files.

    Backup ``options``: ``databases``, ``parallel``, ``include_users``, ``method``; physical:
    ``incremental``, ``parent``, ``target`` (deployment target), ``datadir``, ``work_dir``.
    Restore ``options``: the keyword arguments of :func:`mysql_restore.restore_mysql_from`
    (logical) or :func:`physical.restore_physical` (physical; the set decides).
    Verify: quick = nothing beyond the artifact read-back (physical: the chain is whole);
    full = :func:`verify_mysql_scratch` (physical: :func:`physical.verify_physical_full`).
    """

    name = COMPONENT
    set_noun = "a MySQL backup"
    backup_module = "lifeboat.dr.mysql_backup"
    restore_method = "scratch-restore"
    progress_from_writer = False

    def codec(self, requested: Optional[Codec]) -> Optional[Codec]:
        return requested

    def plan_backup(self, source: my.ConnParams, options: dict[str, Any]) -> dict[str, Any]:
        from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.backup import plan_backup

        return plan_backup(source, options.get("databases"))

    def prepare_backup(self, store: Store, keyring: KeyRing, source: my.ConnParams,
                       options: dict[str, Any]) -> Optional[int]:
        if options.get("method") == "physical":
            from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.physical import (
                plan_physical_backup,
            )

            options["store"] = store
            plan = plan_physical_backup(store, source, options)  # fails early: tool, versions, parent chain
            return None if plan["incremental"] else plan["approx_bytes"]
        return self.plan_backup(source, options)["approx_bytes"]  # also fails early: auth, reachability, names

    def backup_into(self, writer: SetWriter, source: my.ConnParams, options: dict[str, Any], *,
                    keyring: KeyRing, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
        if options.get("method") == "physical":
            from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.physical import (
                backup_physical_into,
            )

            return backup_physical_into(writer, source, store=options.get("store"), target=options.get("target"),
                                        datadir=options.get("datadir"), incremental=bool(options.get("incremental")),
                                        parent=options.get("parent"), progress=progress,
                                        work_dir=options.get("work_dir"), known=options.get("known"))
        from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.backup import backup_mysql_into

        return backup_mysql_into(writer, source, databases=options.get("databases"),
                                 parallel=options.get("parallel", 2), include_users=options.get("include_users", True),
                                 progress=progress, method=options.get("method", "auto"))

    def backup_summary(self, meta: dict[str, Any]) -> dict[str, Any]:
        return dict(meta)

    def restore_from(self, store: Store, backup_set: BackupSet, keyring: KeyRing, target: my.ConnParams,
                     options: dict[str, Any], *, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
        if _physical(backup_set):
            from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.physical import restore_physical

            return restore_physical(store, backup_set, keyring, target, progress=progress, **options)
        from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.restore import restore_mysql_from

        return restore_mysql_from(backup_set, keyring, target, progress=progress, **options)

    def verify(self, store: Store, backup_set: BackupSet, keyring: KeyRing, mode: str, options: dict[str, Any],
               measured: dict[str, float]) -> list[Check]:
        if _physical(backup_set):
            if mode != "full":
                return verify_physical_quick(store, backup_set)
            from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.physical import (
                verify_physical_full,
            )

            return verify_physical_full(store, backup_set, keyring, options, measured)
        if mode != "full":
            return []
        return verify_mysql_scratch(backup_set, keyring, options, measured)

    def scratch_server(self, options: dict[str, Any]) -> ScratchMariaDB:
        from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.scratch import ScratchMariaDB
        from ansible_collections.lifeboat.dr.plugins.module_utils.util.scratch import launcher_for

        return ScratchMariaDB(base_dir=options.get("work_dir"), launcher=launcher_for(options, COMPONENT))


ENGINE = register(MysqlEngine())
