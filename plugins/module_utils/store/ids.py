# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Set ids, times and the names of a store's folder layout.

A set id is ``<type>_<UTC time>_<6 hex>`` (``full_20250129T020000Z_a1b2c3``); times in
manifests are UTC ISO 8601 with ``Z``. The folder names here (``.partial``, ``locks``,
``verifications``, ``binlogs``, ``.state``) are the store layout of ``docs/format.md``.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone
from typing import Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    get_logger,
)

SET_TYPES = ("full", "mysql", "redis", "vault", "app", "binlog", "compose")


STANDARD_COMPONENTS = ("mysql", "redis", "vault", "app")
"""The stack's data components: what a full backup holds and what health reports expect."""

OPTIONAL_COMPONENTS = ("compose",)
"""Components a set may hold besides the data: ``compose``, a Compose project's definition."""

KNOWN_COMPONENTS = STANDARD_COMPONENTS + OPTIONAL_COMPONENTS


METADATA_COMPONENT = "metadata"


PARTIAL_DIR = ".partial"


LOCK_DIR = "locks"


VERIFICATION_DIR = "verifications"


BINLOG_DIR = "binlogs"


RESERVED_TOP_NAMES = (PARTIAL_DIR, LOCK_DIR, VERIFICATION_DIR)


STATUSES = ("complete", "partial", "verified", "failed")


STATE_DIR = ".state"


SET_STATE_FILE = "set.json"


LEASE_FILE = "lease.json"


MAIN_WRITER = "main"


SET_ID_RE = re.compile(r"^(full|mysql|redis|vault|app|binlog)_(\d{8}T\d{6}Z)_([0-9a-f]{6})$")


_COMPONENT_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


_ID_TIME_FORMAT = "%Y%m%dT%H%M%SZ"


log = get_logger("store.ids")


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)  # noqa: UP017 - datetime.UTC needs 3.11 on targets


def format_time(when: datetime) -> str:
    """ISO 8601 UTC with microseconds and ``Z``: ``2025-01-29T02:00:00.000000Z``."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)  # noqa: UP017
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: UP017


def parse_time(text: str) -> datetime:
    """Parse a manifest time (ISO 8601 ending in ``Z``, fraction optional) to aware UTC."""
    if not isinstance(text, str) or not text.endswith("Z"):
        raise ValueError(f"not a UTC ISO 8601 time ending in Z: {text!r}")
    return datetime.fromisoformat(text[:-1] + "+00:00").astimezone(timezone.utc)  # noqa: UP017


def new_set_id(set_type: str, when: Optional[datetime] = None) -> str:
    """A fresh set id ``<type>_<YYYYmmddTHHMMSS>Z_<6 hex>`` (UTC; naive ``when`` is taken as UTC)."""
    check_set_type(set_type)
    when = when or utc_now()
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)  # noqa: UP017
    stamp = when.astimezone(timezone.utc).strftime(_ID_TIME_FORMAT)  # noqa: UP017
    return f"{set_type}_{stamp}_{secrets.token_hex(3)}"


def parse_set_id(set_id: str) -> tuple[str, datetime]:
    """``(type, UTC time)`` of a set id; :class:`ConfigError` if it is not one."""
    match = SET_ID_RE.match(set_id or "")
    if not match:
        raise ConfigError(f"{set_id!r} is not a backup set id",
                          hint="set ids look like full_20250129T020000Z_a1b2c3")
    when = datetime.strptime(match.group(2), _ID_TIME_FORMAT).replace(tzinfo=timezone.utc)  # noqa: UP017
    return match.group(1), when


def check_set_type(set_type: str) -> None:
    """ConfigError unless ``set_type`` is one of :data:`SET_TYPES`."""
    if set_type not in SET_TYPES:
        raise ConfigError(f"unknown backup set type {set_type!r}", hint=f"use one of {', '.join(SET_TYPES)}")


def check_component(component: str) -> None:
    """ConfigError unless ``component`` is a valid component name (lower case, digits, ``_``; up to 32)."""
    if not _COMPONENT_RE.match(component or "") or component == METADATA_COMPONENT:
        raise ConfigError(f"invalid component name {component!r}",
                          hint=f"use a lower-case name such as {', '.join(STANDARD_COMPONENTS)}")


def check_relative(path: str, what: str) -> list[str]:
    """Split a ``/``-separated relative path whose every segment is a safe name."""
    parts = (path or "").split("/")
    if not path or not all(_SEGMENT_RE.match(p) for p in parts):
        raise ConfigError(f"invalid {what} {path!r}",
                          hint="use /-separated names of letters, digits, '.', '_', '+', '-' (no leading dot)")
    return parts


def check_parent(parent: Optional[str]) -> Optional[str]:
    """A set's ``parent`` sub-folder (relative, safe segments) or None; ConfigError if it is not one."""
    if parent is None:
        return None
    parts = check_relative(parent, "parent folder")
    if parts[0] in RESERVED_TOP_NAMES or any(SET_ID_RE.match(p) for p in parts):
        raise ConfigError(f"parent folder {parent!r} is reserved", hint="use e.g. binlogs/<server_uuid>/g<generation>")
    return "/".join(parts)
