# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prove a set and the credentials good before a restore touches anything (issue 17).

:func:`check_set` opens the set (the manifest is validated), unwraps its data key with EVERY
key given (each key file, escrow key and transit key on its own: a safety copy written later
must be readable with each of them), authenticates the manifest and reads back every artifact
and file of the components to restore (size, SHA-256, every chunk authenticated; nothing is
written); a physical MySQL set's whole chain likewise (:func:`check_physical_chain`).
:func:`check_vault_capabilities` asks ``sys/capabilities-self`` whether the token may take and
force-restore raft snapshots. Each returns check entries ``{name, ok, detail}``;
:func:`refuse_unless_ok` raises :class:`errors.VerificationFailed` naming every failed check.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import physical
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import check_manifest_mac
from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet
from ansible_collections.lifeboat.dr.plugins.module_utils.store.verification import verify_records
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError, VerificationFailed

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing

#: What a restore.yml run does with Vault, and the capability each needs.
VAULT_RESTORE_CAPABILITIES: dict[str, tuple[str, str]] = {
    "sys/storage/raft/snapshot": ("read", "take the pre-restore safety copy"),
    "sys/storage/raft/snapshot-force": ("update", "force-restore the snapshot"),
}
#: Which of :data:`VAULT_RESTORE_CAPABILITIES` each use of a token needs.
VAULT_USES: dict[str, str] = {"safety_copy": "sys/storage/raft/snapshot", "restore": "sys/storage/raft/snapshot-force"}


def vault_capabilities_for(uses: Iterable[str]) -> dict[str, tuple[str, str]]:
    """The capabilities the token needs for ``uses`` (``safety_copy``, ``restore``)."""
    return {VAULT_USES[u]: VAULT_RESTORE_CAPABILITIES[VAULT_USES[u]] for u in uses}


def _check(name: str, ok: bool, detail: str = "") -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def _kek_name(kek: Any, role: str) -> str:
    source = getattr(kek, "source", None)
    where = f" {source}" if source else ""
    return f"{role}{where} (key id {kek.key_id})"


def check_keys(backup_set: BackupSet, keyring: KeyRing) -> tuple[Optional[bytes], list[dict[str, Any]]]:
    """Unwrap the set's data key with each KEK of ``keyring`` on its own and authenticate the
    manifest; returns (the data key or None, one check per KEK plus the manifest check)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing

    wraps = backup_set.manifest["encryption"]["data_key_wraps"]
    needed = ", ".join(str(w.get("key_id")) for w in wraps)
    checks: list[dict[str, Any]] = []
    data_key: Optional[bytes] = None
    for index, kek in enumerate(keyring.keks):
        name = _kek_name(kek, "key" if index == 0 else "escrow key")
        try:
            key = KeyRing(kek).unwrap(wraps)
        except LifeboatError as err:
            checks.append(_check(f"{name} unwraps the data key", False,
                                 f"{err} (the set's data key is wrapped for: {needed})"))
            continue
        checks.append(_check(f"{name} unwraps the data key", True))
        data_key = data_key or key
    if data_key is not None:
        try:
            check_manifest_mac(backup_set.manifest, data_key)
            checks.append(_check("the manifest authenticates", True))
        except LifeboatError as err:
            checks.append(_check("the manifest authenticates", False, str(err)))
            data_key = None
    return data_key, checks


def check_artifacts(backup_set: BackupSet, data_key: bytes, components: Iterable[str]) -> list[dict[str, Any]]:
    """Read back every artifact and JSON file of ``components`` (the ones the restore reads)."""
    wanted = set(components)
    artifacts = [r for r in backup_set.artifacts() if r["component"] in wanted]
    files = [r for r in backup_set.files() if r["component"] in wanted]
    entries = verify_records(backup_set.path, backup_set.set_id, data_key, artifacts, files)
    sizes = {r["path"]: int(r.get("stored_size", r.get("size", 0))) for r in artifacts + files}
    return [_check(f"{e['path']} ({sizes.get(e['path'], 0)} bytes) reads back", e["ok"], e.get("error") or "")
            for e in entries]


def check_set(store_root: str, set_id: str, keyring: KeyRing, components: Optional[Iterable[str]] = None,
              parent: Optional[str] = None) -> dict[str, Any]:
    """Every check of the set (``parent``: the folder of a binlog set); ``components`` None = all
    the set holds. Returns ``{set_id, checks, bytes_checked, duration_s}``."""
    started = time.monotonic()
    try:
        backup_set = Store(store_root).open_set(set_id, parent=parent)
    except LifeboatError as err:
        return {"set_id": set_id, "checks": [_check(f"set {set_id} opens (manifest valid)", False, str(err))],
                "bytes_checked": 0, "duration_s": round(time.monotonic() - started, 3)}
    components = list(backup_set.components if components is None else components)
    missing = sorted(set(components) - set(backup_set.components))
    checks = [_check(f"set {set_id} holds {', '.join(components)}", not missing,
                     f"it has no {', '.join(missing)} (it holds {', '.join(backup_set.components)})" if missing
                     else "")]
    data_key, key_checks = check_keys(backup_set, keyring)
    checks += key_checks
    restored = [c for c in components if c in backup_set.components]
    if data_key is not None:
        checks += check_artifacts(backup_set, data_key, restored)
    total = sum(int(r.get("stored_size", 0)) for r in backup_set.artifacts() if r["component"] in restored)
    if "mysql" in restored and physical.is_physical(backup_set):
        chain_checks, chain_bytes = check_physical_chain(Store(store_root), backup_set, keyring)
        checks += chain_checks
        total += chain_bytes
    return {"set_id": set_id, "checks": checks, "bytes_checked": total if data_key is not None else 0,
            "duration_s": round(time.monotonic() - started, 3)}


def check_physical_chain(store: Store, backup_set: BackupSet, keyring: KeyRing) -> tuple[list[dict[str, Any]], int]:
    """A physical MySQL set restores with its whole chain: prove the chain (every parent published, not
    failed, LSNs continuous: :func:`physical.resolve_chain`) and, for each parent, its keys and its
    ``mysql`` artifacts as for the set itself. Returns (checks, bytes of the parents' artifacts read)."""
    try:
        chain = physical.resolve_chain(store, backup_set)
    except LifeboatError as err:
        return [_check(f"the physical MySQL chain of {backup_set.set_id} is whole", False, str(err))], 0
    checks = [_check(f"the physical MySQL chain of {backup_set.set_id} is whole", True,
                     " -> ".join(link.set_id for link, _meta in chain))]
    total = 0
    for link, _meta in chain[:-1]:
        data_key, key_checks = check_keys(link, keyring)
        checks += [dict(c, name=f"chain {link.set_id}: {c['name']}") for c in key_checks]
        if data_key is not None:
            checks += [dict(c, name=f"chain {link.set_id}: {c['name']}")
                       for c in check_artifacts(link, data_key, ["mysql"])]
            total += sum(int(r.get("stored_size", 0)) for r in link.artifacts() if r["component"] == "mysql")
    return checks, total


def check_store_keys(store_root: str, keyring: KeyRing) -> list[dict[str, Any]]:
    """The keys a safety copy will be written with are the store's own: each opens the data key of the
    store's newest set (none when the store holds no set yet: nothing to compare with)."""
    sets = Store(store_root).list_sets()
    if not sets:
        return []
    newest = Store(store_root).open_set(sets[-1].set_id)
    _key, checks = check_keys(newest, keyring)
    return [dict(c, name=f"safety copy keys are the store's ({newest.set_id}): {c['name']}") for c in checks]


def check_vault_capabilities(conn: Any, required: Optional[dict[str, tuple[str, str]]] = None
                             ) -> list[dict[str, Any]]:
    """Ask ``sys/capabilities-self`` for each path of ``required`` (path -> (capability, why));
    one check per path naming the path, the capability, what it is for and what the token has."""
    required = required or VAULT_RESTORE_CAPABILITIES
    try:
        answer = conn.raw("POST", "/v1/sys/capabilities-self", "read the token's capabilities", expect_json=True,
                          data=_json({"paths": sorted(required)}))
    except LifeboatError as err:
        needs = ", ".join(f"'{cap}' on {path} (to {why})" for path, (cap, why) in sorted(required.items()))
        return [_check("the Vault token's capabilities can be read (sys/capabilities-self, in the default policy)",
                       False, f"{err}; the restore needs {needs}")]
    checks = []
    for path, (capability, why) in sorted(required.items()):
        has = list(answer.get(path) or answer.get("data", {}).get(path) or [])
        ok = "root" in has or capability in has
        detail = "" if ok else (f"the token has {has or ['deny']} on {path}; it needs '{capability}' to {why}: "
                                f"add to its policy: path \"{path}\" {{ capabilities = [\"{capability}\"] }}")
        checks.append(_check(f"the Vault token may '{capability}' {path} ({why})", ok, detail))
    return checks


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj)


def refuse_unless_ok(what: str, checks: list[dict[str, Any]]) -> None:
    """Raise :class:`VerificationFailed` naming every failed check of ``what``."""
    failed = [c for c in checks if not c["ok"]]
    if failed:
        reasons = "; ".join(f"{c['name']}: {c['detail']}" if c["detail"] else c["name"] for c in failed)
        raise VerificationFailed(f"preflight refused {what}, nothing was changed: {reasons}",
                                 hint="fix the cause named, or restore another set")
