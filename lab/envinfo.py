"""The ``LAB_*`` variables describing a lab (names as in docs/dev/contracts.md)."""

from __future__ import annotations

import os
import shlex

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError
from lab import svc_mysql, svc_redis
from lab.layout import Layout, load_layout
from lab.secrets import load_secrets

ENV_NAMES = (
    "LAB_MYSQL_HOST", "LAB_MYSQL_PORT", "LAB_MYSQL_USER", "LAB_MYSQL_PASSWORD",
    "LAB_MYSQL_BACKUP_USER", "LAB_MYSQL_BACKUP_PASSWORD", "LAB_MYSQL_DATADIR", "LAB_MYSQL_SOCKET",
    "LAB_REDIS_HOST", "LAB_REDIS_PORT", "LAB_REDIS_PASSWORD", "LAB_REDIS_BACKUP_USER",
    "LAB_REDIS_BACKUP_PASSWORD", "LAB_REDIS_DIR",
    "LAB_VAULT_ADDR", "LAB_VAULT_TOKEN", "LAB_VAULT_UNSEAL_KEYS_FILE", "LAB_VAULT_DATADIR",
    "LAB_APP_URL", "LAB_APP_DIR", "LAB_APP_STORAGE", "LAB_STORE", "LAB_KEY_FILE", "LAB_ESCROW_KEY_FILE",
    "LAB_STATE_DIR",
)


def env(state_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """All ``LAB_*`` values of a lab as strings (contains secrets: do not log it).

    Raises :class:`ConfigError` if the lab was never brought up (no secrets yet).
    ``LAB_VAULT_TOKEN`` is '' until OpenBao has been configured.
    """
    return values_for(load_layout(state_dir))


def values_for(layout: Layout) -> dict[str, str]:
    """The ``LAB_*`` values of the lab described by ``layout`` (see :func:`env`)."""
    secrets = load_secrets(layout)
    if not secrets:
        raise ConfigError(f"no lab in {layout.state_dir} (no secrets.json)", hint="run `python -m lab up` first")
    values = {
        "LAB_MYSQL_HOST": layout.host_for("mysql"),
        "LAB_MYSQL_PORT": layout.port("mysql"),
        "LAB_MYSQL_USER": svc_mysql.ADMIN_USER,
        "LAB_MYSQL_PASSWORD": secrets["mysql_admin_password"],
        "LAB_MYSQL_BACKUP_USER": svc_mysql.BACKUP_USER,
        "LAB_MYSQL_BACKUP_PASSWORD": secrets["mysql_backup_password"],
        "LAB_MYSQL_DATADIR": layout.mysql_datadir,
        "LAB_MYSQL_SOCKET": layout.mysql_socket,
        "LAB_REDIS_HOST": layout.host_for("redis"),
        "LAB_REDIS_PORT": layout.port("redis"),
        "LAB_REDIS_PASSWORD": secrets["redis_password"],
        "LAB_REDIS_BACKUP_USER": svc_redis.BACKUP_USER,
        "LAB_REDIS_BACKUP_PASSWORD": secrets["redis_backup_password"],
        "LAB_REDIS_DIR": layout.redis_dir,
        "LAB_VAULT_ADDR": layout.vault_addr,
        "LAB_VAULT_TOKEN": secrets.get("vault_token", ""),
        "LAB_VAULT_UNSEAL_KEYS_FILE": layout.vault_init_file,
        "LAB_VAULT_DATADIR": layout.vault_datadir,
        "LAB_APP_URL": layout.app_url,
        "LAB_APP_DIR": layout.app_dir,
        "LAB_APP_STORAGE": layout.app_storage,
        "LAB_STORE": layout.store_dir,
        "LAB_KEY_FILE": layout.key_file,
        "LAB_ESCROW_KEY_FILE": layout.escrow_key_file,
        "LAB_STATE_DIR": layout.state_dir,
    }
    return {name: str(values[name]) for name in ENV_NAMES}


def export_lines(values: dict[str, str]) -> str:
    """``export NAME='value'`` lines (shell-quoted), one per variable, in contract order."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())
