# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The component-engine interface, its registry, and the operations built once on it.

Internal API of ``lifeboat.dr``: used by the collection's own modules; no stability
promise to third parties.

A *component* is one kind of data a backup set holds (``mysql``, ``redis``, ``vault``,
``app``). Its engine implements :class:`ComponentEngine` -- one implementation per
component, next to the code it wraps:

==========  =============================================  ====================================
component   engine                                         its code (``components/<name>/``)
==========  =============================================  ====================================
``mysql``   ``components.mysql.engine.MysqlEngine``         backup, restore, scratch, binlog, pitr
``redis``   ``components.redis.engine.RedisEngine``         engine, rdb, conn
``vault``   ``components.vault.engine.VaultEngine``         engine, conn
``app``     ``components.files.engine.FilesEngine``         engine
``compose`` ``components.compose.engine.ComposeEngine``     engine (a Compose project's files)
==========  =============================================  ====================================

:func:`get_engine` looks an engine up by component name (the engine module is imported
on first use, so importing this module stays cheap). Built once on the interface:
:func:`run_backup` (a new set holding one component, published all or nothing),
:func:`open_set` (a given set, or the newest holding the component) and
:func:`verify_component` (an engine's quick/full checks with the error policy of a
set verification). A new component is one new engine class plus one line in
:data:`ENGINE_MODULES`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Optional, Protocol, Union, runtime_checkable

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    DependencyMissing,
    KeyUnavailable,
    LifeboatError,
    NotFound,
    WrongKey,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import ProgressFn

if TYPE_CHECKING:  # imported for the annotations only
    from pathlib import Path

    from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.writer import SetWriter
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.scratch import ScratchServer

Check = dict[str, Any]

ENGINE_MODULES = {
    "mysql": "ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.engine",
    "redis": "ansible_collections.lifeboat.dr.plugins.module_utils.components.redis.engine",
    "vault": "ansible_collections.lifeboat.dr.plugins.module_utils.components.vault.engine",
    "app": "ansible_collections.lifeboat.dr.plugins.module_utils.components.files.engine",
    "compose": "ansible_collections.lifeboat.dr.plugins.module_utils.components.compose.engine",
}
r"""Component name -> the module that defines and :func:`register`\ s that component's engine.

Ansible's module packager ships only the module_utils a module imports *statically*:
code that runs inside a module must import the engine module it needs (``set_verify``
imports all four); :func:`get_engine` imports a missing one by name for everything else
(CLI, tests)."""

_REGISTRY: dict[str, ComponentEngine] = {}

VERIFY_RAISES = (KeyUnavailable, WrongKey, DependencyMissing, ConfigError)
"""Errors a component verification raises (the run cannot verify at all) instead of
recording them as a failed check of the set (the set is bad)."""


@runtime_checkable
class ComponentEngine(Protocol):
    """What Lifeboat needs of a component's engine.

    Attributes: ``name`` (the component's folder in a set), ``set_noun`` (what a set of
    it holds, for messages: ``"a Redis backup"``), ``backup_module`` (the module that
    makes one, named in hints), ``restore_method`` (how a full verification restores it,
    recorded in the report), ``progress_from_writer`` (True when ``backup_into`` reports
    no progress itself, so the set writer's byte meter does).
    """

    name: str
    set_noun: str
    backup_module: str
    restore_method: str
    progress_from_writer: bool

    def codec(self, requested: Optional[Codec]) -> Optional[Codec]:
        """The codec of this component's artifacts given the requested one (None: the store's default)."""

    def plan_backup(self, source: Any, options: dict[str, Any]) -> dict[str, Any]:
        """Check-mode plan: connect/scan, raise what a real run would hit first, return what it would store."""

    def prepare_backup(self, store: Store, keyring: KeyRing, source: Any, options: dict[str, Any]) -> Optional[int]:
        """Checks before a new set is begun; the estimated bytes (or None). May add engine entries to ``options``."""

    def backup_into(self, writer: SetWriter, source: Any, options: dict[str, Any], *,
                    keyring: KeyRing, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
        """Write this component into an open set writer; return the component metadata / summary."""

    def backup_summary(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The module result fields of a backup from the metadata ``backup_into`` returned."""

    def restore_from(self, store: Store, backup_set: BackupSet, keyring: KeyRing, target: Any,
                     options: dict[str, Any], *, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
        """Restore this component of ``backup_set`` into ``target`` (connection params / folders)."""

    def verify(self, store: Store, backup_set: BackupSet, keyring: KeyRing, mode: str, options: dict[str, Any],
               measured: dict[str, float]) -> list[Check]:
        """The component's ``quick`` or ``full`` checks; ``measured[name]`` = seconds of a restore it timed."""

    def scratch_server(self, options: dict[str, Any]) -> Optional[ScratchServer]:
        """A throw-away server of this component (not started), or None when it has no server."""


def check(name: str, ok: bool, detail: str = "", artifact: Optional[str] = None) -> Check:
    """One verification check: ``{name, ok, detail, artifact}``."""
    return {"name": name, "ok": bool(ok), "detail": detail, "artifact": artifact}


def components() -> tuple[str, ...]:
    """The registered component names."""
    return tuple(ENGINE_MODULES)


def register(engine: ComponentEngine) -> ComponentEngine:
    """Add ``engine`` to the registry under its ``name`` (engine modules call it at import); return it."""
    _REGISTRY[engine.name] = engine
    return engine


def get_engine(component: Union[str, ComponentEngine]) -> ComponentEngine:
    """The engine of ``component`` (an engine is returned as is); ConfigError naming the known ones."""
    if not isinstance(component, str):
        return component
    if component not in _REGISTRY:
        module_name = ENGINE_MODULES.get(component)
        if module_name is None:
            raise ConfigError(f"unknown component {component!r}", hint=f"use one of: {', '.join(ENGINE_MODULES)}")
        importlib.import_module(module_name)  # registers it
    return _REGISTRY[component]


def open_set(store: Store, component: Union[str, ComponentEngine], set_id: Optional[str]) -> BackupSet:
    """The set ``set_id``, or for ``None``/``'latest'`` the newest set holding ``component``.

    NotFound (naming the backup module to run) when the store has no such set.
    """
    engine = get_engine(component)
    if set_id and set_id != "latest":
        return store.open_set(set_id)
    found = store.latest_set(component=engine.name)
    if found is None:
        raise NotFound(f"no set with {engine.set_noun} in {store.root}", hint=f"run {engine.backup_module} first")
    return found


def run_backup(component: Union[str, ComponentEngine], store_root: Union[str, Path], keyring: KeyRing, source: Any,
               options: Optional[dict[str, Any]] = None, *, codec: Optional[Codec] = None,
               set_type: Optional[str] = None, quick_verify: bool = True,
               progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Back ``source`` up into a new set of ``set_type`` (default: the component name) and publish it.

    All or nothing: a failure leaves no published set. ``options`` are the engine's
    backup options. Returns the engine's :meth:`~ComponentEngine.backup_summary` plus
    ``set_id``, ``path``, ``stored_bytes`` and ``plaintext_bytes`` (manifest totals).
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

    engine = get_engine(component)
    options = dict(options or {})
    store = Store(store_root)
    estimate = engine.prepare_backup(store, keyring, source, options)
    with store.begin_set(set_type or engine.name, [engine.name], keyring, codec=engine.codec(codec),
                         estimated_bytes=estimate, progress=progress if engine.progress_from_writer else None,
                         early_read_back=quick_verify) as writer:
        meta = engine.backup_into(writer, source, options, keyring=keyring, progress=progress)
        manifest = writer.publish(quick_verify=quick_verify)
    result = engine.backup_summary(meta)
    result.update(set_id=writer.set_id, path=str(writer.path), stored_bytes=manifest["totals"]["stored_bytes"],
                  plaintext_bytes=manifest["totals"]["plaintext_bytes"])
    return result


def verify_component(store: Store, backup_set: BackupSet, keyring: KeyRing, component: str, mode: str,
                     options: dict[str, Any], measured: Optional[dict[str, float]] = None) -> list[Check]:
    """The engine checks of one component (``quick`` or ``full``); never raises for bad data.

    A component without a registered engine has no engine checks (``[]``). The errors
    in :data:`VERIFY_RAISES` (and their subclasses) propagate: the run cannot verify.
    Any other :class:`LifeboatError` becomes one failed check naming it.
    """
    if component not in ENGINE_MODULES:
        return []
    try:
        return get_engine(component).verify(store, backup_set, keyring, mode, options,
                                            measured if measured is not None else {})
    except VERIFY_RAISES:
        raise
    except LifeboatError as err:
        return [check(f"{component} {mode} verification", False, f"{type(err).__name__}: {err}", component)]
