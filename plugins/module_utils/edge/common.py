# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The module edge: option layers shared by modules, and the one error mapping.

Option layers (each documented by the doc fragment of the same name in
``plugins/doc_fragments/``; keep the two in step):

* ``store_argument_spec()``  -> fragment ``lifeboat.dr.store``: store path, key source, compression.
* ``mysql_argument_spec()``  -> fragment ``lifeboat.dr.mysql``: how to reach a MySQL/MariaDB server.
* ``redis_argument_spec()``  -> fragment ``lifeboat.dr.redis``: how to reach a Redis server.
* ``vault_argument_spec()``  -> fragment ``lifeboat.dr.vault``: how to reach Vault/OpenBao (as community.hashi_vault).

:func:`keyring_from_params` / :func:`codec_from_params` turn the store layer's options
into the key ring and the compression codec every module passes to the engines.

A module builds its spec by merging layers with its own options, creates a
:class:`LifeboatModule`, and hands one function to :func:`run_module`, which
turns any :class:`LifeboatError` into ``fail_json(msg=...)`` naming the host
and component, and attaches the collected log lines.
"""

from __future__ import annotations

import os
import socket
import traceback
from typing import TYPE_CHECKING, Any, Callable

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import capture_logs

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing


def store_argument_spec() -> dict[str, Any]:
    """Options naming the backup store, the key-encryption keys and compression."""
    return dict(
        store=dict(type="path", required=True),
        key_file=dict(type="path"),
        escrow_key_file=dict(type="path"),
        transit_url=dict(type="str"),
        transit_token=dict(type="str", no_log=True),
        transit_mount=dict(type="str", default="transit"),
        transit_key=dict(type="str", no_log=False),
        compression=dict(type="str", default="zstd", choices=["zstd", "gzip", "none"]),
        compression_level=dict(type="int"),
        compression_threads=dict(type="int"),
        run_owner=dict(type="dict"),
        progress_id=dict(type="str"),
        progress_interval_s=dict(type="float", default=15.0),
    )


def mysql_argument_spec() -> dict[str, Any]:
    """Connection options for MySQL/MariaDB (names as in community.mysql)."""
    return dict(
        login_host=dict(type="str", default="127.0.0.1"),
        login_port=dict(type="int", default=3306),
        login_user=dict(type="str"),
        login_password=dict(type="str", no_log=True),
        login_unix_socket=dict(type="str"),
        connect_timeout=dict(type="int", default=10),
        ca_cert=dict(type="path", aliases=["ssl_ca"]),
        check_hostname=dict(type="bool"),
    )


def redis_argument_spec() -> dict[str, Any]:
    """Connection options for Redis (AUTH with optional ACL user, optional TLS)."""
    return dict(
        redis_host=dict(type="str", default="127.0.0.1"),
        redis_port=dict(type="int", default=6379),
        redis_user=dict(type="str"),
        redis_password=dict(type="str", no_log=True),
        redis_tls=dict(type="bool", default=False),
        redis_ca_cert=dict(type="path"),
        redis_validate_certs=dict(type="bool", default=True),
        redis_timeout=dict(type="float", default=10.0),
    )


def vault_argument_spec() -> dict[str, Any]:
    """Connection options for Vault/OpenBao (layered as in community.hashi_vault)."""
    return dict(
        url=dict(type="str", required=True),
        auth_method=dict(type="str", default="token", choices=["token", "approle"]),
        token=dict(type="str", no_log=True),
        role_id=dict(type="str"),
        secret_id=dict(type="str", no_log=True),
        namespace=dict(type="str"),
        ca_cert=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="int", default=30),
    )


def keyring_from_params(params: dict[str, Any]) -> KeyRing:
    """The :class:`keys.KeyRing` the ``lifeboat.dr.store`` options name.

    ``key_file`` (primary KEK), ``escrow_key_file`` (second recipient) and, with
    ``transit_url``, a Vault/OpenBao transit KEK (``transit_token``, ``transit_mount``,
    ``transit_key``). Raises the key errors of :mod:`keys` (e.g. :class:`errors.KeyUnavailable`).
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing

    transit = None
    if params.get("transit_url"):
        transit = {"url": params["transit_url"], "token": params.get("transit_token"),
                   "mount": params.get("transit_mount") or "transit", "key_name": params.get("transit_key")}
    return KeyRing.from_options(key_file=params.get("key_file"), escrow_key_file=params.get("escrow_key_file"),
                                transit=transit)


def run_owner_from_params(params: dict[str, Any]) -> Any:
    """The ``run_owner`` option checked (:func:`locks.check_run_owner`): the identity of the
    controller process driving this run (host, pid, start_ticks, boot_id), or ``None``."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.locks import check_run_owner

    return check_run_owner(params.get("run_owner"))


def codec_from_params(params: dict[str, Any]) -> Codec:
    """The :class:`compression.Codec` of the ``compression`` / ``compression_level`` /
    ``compression_threads`` options (``zstd`` when unset; level ``None`` = the codec's default;
    threads unset = :data:`compression.AUTO_THREADS`, decided per engine)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import AUTO_THREADS, Codec

    algorithm = params.get("compression") or "zstd"
    threads = params.get("compression_threads")
    if threads is not None and int(threads) < 0:
        from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError

        raise ConfigError(f"compression_threads must be 0 or more, not {threads}",
                          hint="use 0 (compress in the pipeline thread), e.g. 2, or leave it unset (automatic)")
    if algorithm != "zstd":
        threads = 0
    return Codec(algorithm, params.get("compression_level"), AUTO_THREADS if threads is None else int(threads))


def merge_specs(*specs: dict[str, Any]) -> dict[str, Any]:
    """Merge option layers; a later layer may not silently redefine an option."""
    merged: dict[str, Any] = {}
    for spec in specs:
        for name, opt in spec.items():
            if name in merged and merged[name] != opt:
                raise ValueError(f"option {name!r} defined twice with different specs")
            merged[name] = opt
    return merged


class LifeboatModule(AnsibleModule):
    """AnsibleModule with the Lifeboat conventions: a component name for messages, and
    ``progress_kind`` (e.g. ``backup``) for the long runs that keep a run status file."""

    def __init__(self, *args: Any, component: str = "", progress_kind: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.component = component
        self.progress_kind = progress_kind


def start_run_status(module: LifeboatModule) -> Any:
    """The active run status (:func:`runstatus.activate_run_status`) of a long module run, or ``None``.

    Only for modules built with ``progress_kind``, outside check mode, with a ``store`` and a
    ``progress_interval_s`` above 0. The file is ``<store>/progress/<progress_id>.json``
    (default id: ``<host>-<component>-<kind>-<pid>``); ``run_owner`` makes the run stop itself
    when its controller dies. A store that cannot take the file is reported, never fatal.
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.runstatus import activate_run_status
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

    p = module.params
    if not module.progress_kind or module.check_mode or not p.get("store") or not p.get("progress_interval_s"):
        return None
    component = module.component.split()[0] if module.component else "run"
    run_id = p.get("progress_id") or f"{socket.gethostname()}-{component}-{module.progress_kind}-{os.getpid()}"
    try:
        return activate_run_status(p["store"], run_id, kind=module.progress_kind, component=module.component,
                                   run_owner=run_owner_from_params(p), interval_s=float(p["progress_interval_s"]))
    except (OSError, LifeboatError) as err:
        get_logger("progress").warning("no run status file: %s", err)
        return None


def _end_run_status(run_status: Any) -> None:
    if run_status is not None:
        run_status.end()


def run_module(module: LifeboatModule, action: Callable[[LifeboatModule], dict[str, Any]]) -> None:
    """Run ``action(module)`` and exit: its dict via ``exit_json``; errors via ``fail_json``.

    ``action`` returns the result dict (must contain ``changed``). A
    :class:`LifeboatError` becomes ``fail_json(msg="<host> <component>: <message> -- <hint>")``;
    any other exception becomes a failure with the traceback in ``exception``.
    """
    logs = capture_logs()
    where = f"{socket.gethostname()} {module.component}".strip()
    run_status = start_run_status(module)
    try:
        result = action(module)
    except LifeboatError as err:
        _end_run_status(run_status)
        module.fail_json(msg=f"{where}: {err}", error_type=type(err).__name__,
                         retryable=err.retryable, log=logs.lines)
    except Exception as err:  # noqa: BLE001 - the edge: report, never hide
        _end_run_status(run_status)
        module.fail_json(msg=f"{where}: unexpected {type(err).__name__}: {err}",
                         exception=traceback.format_exc(), log=logs.lines)
    _end_run_status(run_status)
    result.setdefault("changed", False)
    result.setdefault("log", logs.lines)
    module.exit_json(**result)
