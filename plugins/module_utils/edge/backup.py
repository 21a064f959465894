# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The body every component backup module shares: check mode, a shared set, or a set of its own.

Internal API of ``lifeboat.dr``: used by the collection's own modules; no stability
promise to third parties.

A backup module (``mysql_backup``, ``redis_backup``, ``vault_backup``, ``files_backup``)
builds its connection and options, then hands three callables to :func:`run_backup_module`:

* check mode -> ``plan()``: what a run would hit first and what it would store; writes nothing;
* ``set_id`` given -> ``write_into(writer, keyring)``: the component written into the open
  shared set (:func:`orchestrate.write_component`: resumed as this component's writer,
  retried on connection-level failures, capture window recorded); the set's job record is
  written when ``backup_set`` publishes or aborts it;
* else -> ``own_set(keyring)``: a new set of its own, published all or nothing, recorded as
  one ``backup`` job and audit record (:func:`oplog.run_recorded`).

The result is the branch's dict with ``changed=True``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import LifeboatModule, keyring_from_params
from ansible_collections.lifeboat.dr.plugins.module_utils.ops.orchestrate import write_component
from ansible_collections.lifeboat.dr.plugins.module_utils.store import oplog

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.writer import SetWriter

Result = dict[str, Any]


def run_backup_module(module: LifeboatModule, component: str, *, plan: Callable[[], Result],
                      write_into: Callable[[SetWriter, KeyRing], Result], own_set: Callable[[KeyRing], Result],
                      keyring: Optional[KeyRing] = None) -> Result:
    """Run the branch the module's mode and ``set_id`` option choose (see the module docstring).

    ``component`` is the set folder the module writes (``mysql``, ``redis``, ``vault``,
    ``app``). ``keyring``: the key ring when the module built it already (a module whose
    check mode checks the keys); otherwise it is built from the store options outside
    check mode only -- for a set of its own inside the recorded run, so that a key that
    cannot be loaded is a failed ``backup`` job. Errors of the branch propagate
    (``run_module`` reports them).
    """
    params = module.params
    if module.check_mode:
        return dict(changed=True, **plan())

    def ring() -> KeyRing:
        return keyring if keyring is not None else keyring_from_params(params)

    if params["set_id"]:
        shared_ring = ring()
        result = write_component(params["store"], params["set_id"], component, shared_ring,
                                 lambda writer: write_into(writer, shared_ring))
    else:
        result = oplog.run_recorded(params["store"], "backup", lambda handle: own_set(ring()),
                                    describe=oplog.backup_fields, components=[component])
    return dict(changed=True, **result)
