# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The set manifest (``backup_manifest.json``): its format version, MAC, validation and loading.

The manifest is written last. A folder without a complete, parseable manifest is not a
backup: :func:`load_manifest` raises :class:`IncompleteBackup`. Its MAC (HMAC-SHA256 under a
key derived from the set's data key) proves it was not edited (:func:`check_manifest_mac`).
Names, manifests, logs and errors never carry key material.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import SET_ID_RE, SET_TYPES, parse_time
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    IncompleteBackup,
    TamperedData,
    UnknownFormatVersion,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    get_logger,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.version import TOOL_NAME, __version__

FORMAT_VERSION = 1


READABLE_FORMAT_VERSIONS = (1,)


MANIFEST_NAME = "backup_manifest.json"


MAC_ALGORITHM = "HMAC-SHA256"


MAC_CONTEXT = b"lifeboat/v1 manifest\0"


Manifest = dict[str, Any]


log = get_logger("store.manifest")


def json_bytes(obj: Any, compact: bool = False) -> bytes:
    """UTF-8 JSON with sorted keys and a final newline: indented, or ``compact`` (one line,
    no spaces; several times faster for large documents such as a folder's file list)."""
    if compact:
        text = json.dumps(obj, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    else:
        text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def plain_json_copy(obj: Any, what: str) -> Any:
    """A deep copy of ``obj`` through JSON; :class:`ConfigError` if it is not JSON-serialisable."""
    try:
        return json.loads(json.dumps(obj, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{what} is not JSON-serialisable: {err}") from None


def manifest_mac(manifest: Manifest, data_key: bytes) -> str:
    """HMAC-SHA256 (hex) authenticating a manifest under the set's data key.

    Key: ``HMAC-SHA256(data_key, b"lifeboat/v1 manifest\\0" + set_id)``. Message: the
    canonical JSON (sorted keys, ``","``/``":"`` separators, ASCII) of the manifest
    without ``manifest_mac`` and without ``encryption.data_key_wraps`` (wraps
    authenticate themselves, so a key rotation may rewrite them).
    """
    body = {k: v for k, v in manifest.items() if k != "manifest_mac"}
    body["encryption"] = {k: v for k, v in body.get("encryption", {}).items() if k != "data_key_wraps"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    mac_key = hmac.new(data_key, MAC_CONTEXT + str(manifest["id"]).encode("utf-8"), hashlib.sha256).digest()
    return hmac.new(mac_key, canonical, hashlib.sha256).hexdigest()


def check_manifest_mac(manifest: Manifest, data_key: bytes) -> None:
    """Raise :class:`TamperedData` unless the manifest's MAC matches under ``data_key``."""
    stored = manifest.get("manifest_mac") or {}
    if stored.get("algorithm") != MAC_ALGORITHM or not isinstance(stored.get("value"), str):
        raise TamperedData(f"manifest of set {manifest.get('id')} has no valid {MAC_ALGORITHM} manifest_mac",
                           hint="the manifest was edited; restore it from a copy or treat the set as damaged")
    if not hmac.compare_digest(stored["value"], manifest_mac(manifest, data_key)):
        raise TamperedData(f"manifest of set {manifest.get('id')} fails authentication: it was modified after "
                           "the backup was written", hint="treat the set as damaged; use another set")


_REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format_version": int, "id": str, "type": str, "components": list, "start_time": str, "end_time": str,
    "tool": dict, "sources": list, "encryption": dict, "artifacts": list, "files": list,
    "component_metadata": dict, "totals": dict, "manifest_mac": dict,
}


_ARTIFACT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "component": str, "name": str, "path": str, "stored_size": int, "stored_sha256": str,
    "plaintext_size": int, "plaintext_sha256": str, "compression": dict, "encryption": dict,
}


_FILE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "component": str, "name": str, "path": str, "size": int, "sha256": str,
}


_WRAP_FIELDS: dict[str, type | tuple[type, ...]] = {"kind": str, "key_id": str, "algorithm": str, "wrapped": str}


def _require(obj: dict[str, Any], fields: dict[str, Any], where: str, source: Path) -> None:
    for name, kind in fields.items():
        if not isinstance(obj.get(name), kind) or isinstance(obj.get(name), bool) and kind is int:
            raise IncompleteBackup(f"manifest {source} is incomplete: {where}field {name!r} is missing or "
                                   f"not a {getattr(kind, '__name__', kind)}",
                                   hint="this folder is not a usable backup set; use another set")


def validate_manifest(manifest: Any, source: Path) -> Manifest:
    """Check a parsed manifest's version and required fields; return it.

    Raises :class:`UnknownFormatVersion` for a ``format_version`` this release does
    not read and :class:`IncompleteBackup` for anything missing or malformed.
    """
    if not isinstance(manifest, dict) or "format_version" not in manifest:
        raise IncompleteBackup(f"manifest {source} has no format_version", hint="this folder is not a backup set")
    version = manifest["format_version"]
    if version not in READABLE_FORMAT_VERSIONS or isinstance(version, bool):
        readable = ", ".join(str(v) for v in READABLE_FORMAT_VERSIONS)
        raise UnknownFormatVersion(
            f"manifest {source} has format_version {version!r}; {TOOL_NAME} {__version__} reads format "
            f"version(s) {readable}", hint="read this set with the Lifeboat release that wrote it (or newer)",
            found=version, readable=list(READABLE_FORMAT_VERSIONS))
    _require(manifest, _REQUIRED_FIELDS, "", source)
    if not SET_ID_RE.match(manifest["id"]) or manifest["type"] not in SET_TYPES:
        raise IncompleteBackup(f"manifest {source} has an invalid id or type", hint="this is not a usable backup set")
    for field in ("start_time", "end_time"):
        try:
            parse_time(manifest[field])
        except ValueError:
            raise IncompleteBackup(f"manifest {source}: {field} is not a UTC ISO 8601 time") from None
    wraps = manifest["encryption"].get("data_key_wraps")
    if not isinstance(wraps, list) or not wraps:
        raise IncompleteBackup(f"manifest {source} has no encryption.data_key_wraps",
                               hint="without a wrapped data key the set cannot be decrypted")
    for index, wrap in enumerate(wraps):
        _require(wrap if isinstance(wrap, dict) else {}, _WRAP_FIELDS, f"data_key_wraps[{index}] ", source)
    for index, record in enumerate(manifest["artifacts"]):
        _require(record if isinstance(record, dict) else {}, _ARTIFACT_FIELDS, f"artifacts[{index}] ", source)
    for index, record in enumerate(manifest["files"]):
        _require(record if isinstance(record, dict) else {}, _FILE_FIELDS, f"files[{index}] ", source)
    return manifest


def load_manifest(path: Union[str, Path]) -> Manifest:
    """Read and validate the manifest of a set folder (or the manifest file itself).

    :class:`IncompleteBackup` when it is missing, empty, unparseable or lacks a
    field; :class:`UnknownFormatVersion` when its ``format_version`` is unknown.
    """
    path = Path(path)
    file = path / MANIFEST_NAME if path.is_dir() else path
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IncompleteBackup(f"{file.parent} has no {MANIFEST_NAME}: it is not a complete backup set",
                               hint="a run that was killed or failed leaves no manifest; use another set") from None
    try:
        manifest = json.loads(text)
    except ValueError as err:
        raise IncompleteBackup(f"{file} is not parseable JSON ({err.__class__.__name__} at char "
                               f"{getattr(err, 'pos', '?')}): the set is not complete",
                               hint="use another set") from None
    return validate_manifest(manifest, file)
