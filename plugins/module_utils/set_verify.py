# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verify a whole backup set (every component) and record the result beside it.

``quick``: every artifact and JSON file is read back (size, SHA-256, every chunk
authenticated; nothing written to disk), plus each engine's quick check (Redis RDB walk,
Vault snapshot check). ``full``: additionally each component is restored where it can be
compared -- MySQL: restored into a scratch MariaDB (:mod:`mysql_scratch`, started and
removed here) with :func:`mysql_restore.restore_mysql_from`, the very code path of a real
restore, which verifies every table against the row count and checksum recorded at backup
time (native tables: read back from the server; tsv tables: from the load stream, see
docs/mysql.md), then the recreated objects are counted; Redis: restored into a scratch
redis-server, key counts compared; Vault: restored into a scratch OpenBao, unsealed with
the escrowed keys, a secret read and compared; app files: every stored file hashed
against its list. Both modes report the capture-time spread of the components and run
the per-application reference checks (:mod:`consistency`).

The report is stored with :meth:`backupset.Store.record_verification` as
``<store>/verifications/<set_id>/<UTC time>.json`` (a published set is never modified);
the latest record decides the set's catalog status (verified / failed). A full
verification records ``restore_durations_s`` ``{component: seconds}``, read by
:mod:`health` as the measured restore time of each component (MySQL: the wall time of
``restore_mysql_from`` into the scratch server, without the scratch server's start-up).
"""

from __future__ import annotations

import time
from typing import Any, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils import backupset as bs
from ansible_collections.lifeboat.dr.plugins.module_utils import consistency
from ansible_collections.lifeboat.dr.plugins.module_utils.errors import LifeboatError, VerificationFailed
from ansible_collections.lifeboat.dr.plugins.module_utils.progress import get_logger

log = get_logger("verify")


RESTORE_METHODS = {
    "mysql": "scratch-restore",
    "redis": "restored into a scratch redis-server and key counts compared",
    "vault": "restored into a scratch OpenBao and unsealed",
    "app": "every file decrypted and hashed against its list",
}


def _check(name: str, ok: bool, detail: str = "", artifact: Optional[str] = None) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "detail": detail, "artifact": artifact}


def verify_mysql_dump(backup_set: Any, keyring: Any) -> list[dict[str, Any]]:
    """Recompute every table's row count and checksum from its artifact alone (no server); compare.

    Both dump methods (:func:`mysql_backup.recompute_from_artifact`). Cheaper and weaker
    than :func:`verify_mysql_scratch` (proves the dump matches its record, not that it loads).
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.mysql_backup import recompute_from_artifact

    meta = backup_set.read_json("mysql", "mysql_backup_metadata.json")
    checks = []
    for table in meta.get("tables", []):
        with backup_set.open_artifact("mysql", table["artifact"], keyring) as reader:
            got = recompute_from_artifact(reader, table)
        ok = got["rows"] == table.get("rows") and got["checksum"] == table.get("checksum")
        checks.append(_check(f"mysql {table['db']}.{table['table']} rows and checksum", ok,
                             f"{got['rows']} rows (recorded {table.get('rows')})", f"mysql/{table['artifact']}"))
    return checks


def _failed_table_artifact(meta: dict[str, Any], message: str) -> str:
    """``mysql/<artifact>`` of the table a restore error names (``... (from db.table) ...``), else ``mysql``."""
    for table in meta.get("tables", []):
        if f"(from {table['db']}.{table['table']})" in message:
            return f"mysql/{table['artifact']}"
    return "mysql"


def verify_mysql_scratch(backup_set: Any, keyring: Any, options: dict[str, Any],
                         measured: dict[str, float]) -> list[dict[str, Any]]:
    """Restore the set's MySQL component into a scratch MariaDB and check it; the scratch is always removed.

    One check per table (row count + checksum against the recorded values, verified by
    the restore itself) and one for the recreated views/routines/triggers/events. A
    table that differs fails the check naming its artifact (the restore stops at the
    first one). On success ``measured["mysql"]`` = wall seconds of the restore alone.
    ``options``: ``work_dir`` (parent of the scratch folder), ``mysql_parallel`` (load
    connections, default 2). Raises DependencyMissing if no MariaDB server is installed.
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.mysql_restore import (
        read_backup_metadata,
        restore_mysql_from,
    )
    from ansible_collections.lifeboat.dr.plugins.module_utils.mysql_scratch import ScratchMariaDB

    meta = read_backup_metadata(backup_set)
    boot_started = time.monotonic()
    with ScratchMariaDB(base_dir=options.get("work_dir")) as scratch:
        boot_s = time.monotonic() - boot_started
        started = time.monotonic()
        try:
            result = restore_mysql_from(backup_set, keyring, scratch.params, mode="in_place_swap",
                                        include_users=False, parallel=int(options.get("mysql_parallel") or 2),
                                        write_binlog=False)
        except VerificationFailed as err:
            return [_check("mysql restore into a scratch MariaDB", False, err.message,
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
        checks.append(_check(f"mysql {key} restored with the recorded rows and checksum", ok,
                             f"{got.get('rows')} rows (recorded {table.get('rows')}), {how}",
                             f"mysql/{table['artifact']}"))
    wanted = {k: v for k, v in (meta.get("objects") or {}).items() if v}
    made = {k: v for k, v in (result.get("objects") or {}).items() if v}
    checks.append(_check("mysql views, routines, triggers and events recreated", wanted == made,
                         f"{made or 'none'} (recorded {wanted or 'none'}); scratch server up in {boot_s:.1f} s, "
                         f"restore {restore_s:.1f} s", "mysql/" + meta.get("objects_artifact", "objects")))
    return checks


def verify_component(store: Any, backup_set: Any, keyring: Any, component: str, mode: str,
                     options: dict[str, Any], measured: Optional[dict[str, float]] = None) -> list[dict[str, Any]]:
    """The engine checks of one component (``quick`` or ``full``); never raises for bad data.

    ``measured`` receives ``{component: seconds}`` where the check measures a restore
    itself (MySQL: the scratch restore alone, without the scratch server's start-up).
    """
    try:
        if component == "mysql":
            if mode != "full":
                return []
            return verify_mysql_scratch(backup_set, keyring, options, measured if measured is not None else {})
        if component == "redis":
            from ansible_collections.lifeboat.dr.plugins.module_utils.redis_engine import verify_redis_set

            report = verify_redis_set(backup_set, keyring, mode=mode, work_dir=options.get("work_dir"))
            return [_check(f"redis {c['name']}", c["ok"], c.get("detail", ""), "redis/dump.rdb.zst.enc")
                    for c in report["checks"]]
        if component == "vault":
            from ansible_collections.lifeboat.dr.plugins.module_utils.vault_engine import verify_vault_set

            scratch = mode == "full"
            report = verify_vault_set(backup_set, keyring, scratch=scratch,
                                      unseal_keys_file=options.get("vault_unseal_keys_file"),
                                      token=options.get("vault_token"), check_path=options.get("vault_check_path"))
            detail = "restored into a scratch OpenBao and unsealed" if scratch else "snapshot checksums and index"
            if report.get("check_path_read"):
                detail += f"; {options.get('vault_check_path')} read"
            return [_check(f"vault {report['mode']}", report.get("ok", False), detail, "vault/raft.snap.enc")]
        if component == "app":
            from ansible_collections.lifeboat.dr.plugins.module_utils.files_engine import verify_files_from

            report = verify_files_from(store, backup_set, keyring, deep=mode == "full")
            return [_check(f"app folder {name}", not f["problems"], "; ".join(f["problems"]) or
                           f"chain {', '.join(f['chain'])}", f"app/{name}") for name, f in report["folders"].items()]
    except LifeboatError as err:
        if type(err).__name__ in ("KeyUnavailable", "WrongKey", "DependencyMissing", "ConfigError"):
            raise
        return [_check(f"{component} {mode} verification", False, f"{type(err).__name__}: {err}", component)]
    return []


def verify_set(store_root: str, set_id: str, keyring: Any, *, mode: str = "quick",
               reference_checks: Optional[list[str]] = None, options: Optional[dict[str, Any]] = None,
               record: bool = True) -> dict[str, Any]:
    """Verify set ``set_id``; returns ``{ok, set_id, mode, checks, failed, consistency, record, duration_s}``.

    ``failed`` names each failed check with its artifact. With ``record`` the report is
    stored as the set's verification record (its path in ``record``). In ``full`` mode it
    also holds ``restore_durations_s`` (``{component: seconds}``, wall-clock time of each
    component's full check -- for MySQL of its restore into the scratch server --,
    measured with a monotonic clock; how each was measured in ``restore_methods``,
    ``"scratch-restore"`` for MySQL) -- the measured restore times the health report's
    RTO adds up. ``options`` also takes ``work_dir`` and ``mysql_parallel``.
    """
    started = time.monotonic()
    options = dict(options or {})
    store = bs.Store(store_root)
    backup_set = store.open_set(set_id)
    quick = backup_set.quick_verify(keyring)
    checks = [_check(f"artifact {e['path']} reads back", e["ok"], e.get("error") or "", e["path"])
              for e in quick["artifacts"]]
    if quick.get("error"):
        checks.append(_check("data key unwraps and the manifest authenticates", False, quick["error"], "manifest"))
    durations: dict[str, float] = {}
    if quick["ok"]:
        measured: dict[str, float] = {}
        for component in backup_set.components:
            component_started = time.monotonic()
            checks += verify_component(store, backup_set, keyring, component, mode, options, measured)
            durations[component] = measured.get(component, round(time.monotonic() - component_started, 3))
        refs = consistency.run_reference_checks(backup_set, keyring, reference_checks or [], options)
    else:
        refs = []
    checks += [_check(f"reference check {r['name']}", r["ok"], r.get("skipped") or "; ".join(r["problems"][:5])
                      or f"{r['checked']} checked", "consistency") for r in refs]
    report = {"ok": all(c["ok"] for c in checks), "set_id": set_id, "mode": mode, "checks": checks,
              "failed": [f"{c['artifact']}: {c['name']}: {c['detail']}" for c in checks if not c["ok"]],
              "consistency": {**consistency.capture_spread(backup_set), "reference_checks": refs},
              "duration_s": round(time.monotonic() - started, 3)}
    if mode == "full" and durations:
        report["restore_durations_s"] = durations
        report["restore_methods"] = {c: RESTORE_METHODS.get(c, "full check") for c in durations}
    if record:
        report["record"] = str(store.record_verification(set_id, report))
    log.info("set %s: %s verification %s", set_id, mode, "passed" if report["ok"] else "FAILED")
    return report
