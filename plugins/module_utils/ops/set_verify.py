# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verify a whole backup set (every component) and record the result beside it.

``quick``: every artifact and JSON file is read back (size, SHA-256, every chunk
authenticated; nothing written to disk), plus each engine's quick check (Redis RDB walk,
Vault snapshot check). ``full``: additionally each component is restored where it can be
compared (each engine's ``verify``, looked up in :mod:`components`) -- MySQL: restored into
a scratch MariaDB (:mod:`mysql_scratch`, started and removed by :mod:`mysql_engine`) with
:func:`mysql_restore.restore_mysql_from`, the very code path of a real restore, which
verifies every table against the row count and checksum recorded at backup time (native
tables: read back from the server; tsv tables: from the load stream, see docs/mysql.md),
then the recreated objects are counted; Redis: restored into a scratch redis-server, key
counts compared; Vault: restored into a scratch OpenBao, unsealed with the escrowed keys, a
secret read and compared; app files: every stored file hashed against its list. Both modes
report the capture-time spread of the components and run the per-application reference
checks (:mod:`consistency`).

The report is stored with :meth:`catalog.Store.record_verification` as
``<store>/verifications/<set_id>/<UTC time>.json`` (a published set is never modified);
the latest record decides the set's catalog status (verified / failed). A full
verification records ``restore_durations_s`` ``{component: seconds}``, read by
:mod:`health` as the measured restore time of each component (MySQL: the wall time of
``restore_mysql_from`` into the scratch server, without the scratch server's start-up).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.components.base import check as _check
from ansible_collections.lifeboat.dr.plugins.module_utils.components.base import get_engine, verify_component
from ansible_collections.lifeboat.dr.plugins.module_utils.components.compose import engine as compose_engine
from ansible_collections.lifeboat.dr.plugins.module_utils.components.files import engine as files_engine
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import engine as mysql_engine
from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis import engine as redis_engine
from ansible_collections.lifeboat.dr.plugins.module_utils.components.vault import engine as vault_engine
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import consistency
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing

log = get_logger("verify")

#: Every engine, imported by name so that Ansible's packager ships them with backup_verify
#: (the registry alone imports them by string, which the packager cannot see).
ENGINES = (mysql_engine.ENGINE, redis_engine.ENGINE, vault_engine.ENGINE, files_engine.ENGINE, compose_engine.ENGINE)
verify_mysql_dump = mysql_engine.verify_mysql_dump  # where callers found them before the engine interface
verify_mysql_scratch = mysql_engine.verify_mysql_scratch


def restore_method(component: str) -> str:
    """How a full verification restores ``component`` (its engine's ``restore_method``; else ``"full check"``)."""
    try:
        return get_engine(component).restore_method
    except LifeboatError:
        return "full check"


def verify_set(store_root: str, set_id: str, keyring: KeyRing, *, mode: str = "quick",
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
    store = Store(store_root)
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
        report["restore_methods"] = {c: restore_method(c) for c in durations}
    if record:
        report["record"] = str(store.record_verification(set_id, report))
    log.info("set %s: %s verification %s", set_id, mode, "passed" if report["ok"] else "FAILED")
    return report
