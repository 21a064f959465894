"""The lab's secrets: random passwords in ``secrets.json`` and the two key files.

Every file written here is created with mode 0600 (folders 0700) before any
byte is written, and replaced atomically (write a temp file, then rename).
Nothing here prints or logs a secret.
"""

from __future__ import annotations

import json
import os
import secrets as _random
from pathlib import Path
from typing import Any

from lab.layout import Layout

#: Password entries created on the first ``up`` (``vault_token`` is added later).
PASSWORD_NAMES = ("mysql_admin_password", "mysql_backup_password", "mysql_app_password",
                  "redis_password", "redis_backup_password")
KEY_BYTES = 32


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and set it to mode 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private_file(path: Path, data: bytes | str) -> None:
    """Atomically replace ``path`` with ``data``; the file is mode 0600 from its creation."""
    if not path.parent.exists():
        make_private_dir(path.parent)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def random_password() -> str:
    """A 32-character URL-safe random password (no quoting problems in configs)."""
    return _random.token_urlsafe(24)


def load_secrets(layout: Layout) -> dict[str, Any]:
    """The stored secrets, or ``{}`` when the lab was never brought up."""
    try:
        return json.loads(layout.secrets_file.read_text())
    except FileNotFoundError:
        return {}


def ensure_secrets(layout: Layout) -> dict[str, Any]:
    """Load the secrets, creating any missing password; the file stays 0600."""
    stored = load_secrets(layout)
    missing = [name for name in PASSWORD_NAMES if not stored.get(name)]
    for name in missing:
        stored[name] = random_password()
    if missing or not layout.secrets_file.exists():
        write_private_file(layout.secrets_file, json.dumps(stored, indent=2) + "\n")
    os.chmod(layout.secrets_file, 0o600)
    return stored


def update_secrets(layout: Layout, **values: str) -> dict[str, Any]:
    """Set entries in ``secrets.json`` (atomic, 0600) and return the whole mapping."""
    stored = load_secrets(layout)
    stored.update(values)
    write_private_file(layout.secrets_file, json.dumps(stored, indent=2) + "\n")
    return stored


def ensure_key_files(layout: Layout) -> None:
    """Create the backup and escrow keys (32 random bytes, 0600) and the store folder (0700).

    Existing keys are never replaced (backups made with them must stay readable);
    only their permissions are tightened.
    """
    for key in (layout.key_file, layout.escrow_key_file):
        make_private_dir(key.parent)
        if not key.exists():
            write_private_file(key, _random.token_bytes(KEY_BYTES))
        os.chmod(key, 0o600)
    make_private_dir(layout.store_dir)
