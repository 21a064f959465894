# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup sets: layout, manifest, atomic publish, writer locks and the catalog.

A *store* is a folder. Each published *set* is a folder named by its id
(``full_20250129T020000Z_a1b2c3``) holding ``backup_manifest.json``, one folder
per component (``mysql/``, ``redis/``, ``vault/``, ``app/``) and ``metadata/``.
Binary-log archives are sets too, published under a ``parent`` sub-folder
(``binlogs/<server_uuid>/g<generation>/<set_id>``). The full byte-level
description is ``docs/format.md``; the artifact byte format ``docs/format-crypto.md``.

Contracts:

* A set is built in ``<store>/.partial/<set_id>/`` and renamed into place only
  after every file and the manifest are written and fsynced (files, folders,
  parents). The rename is the commit point: a run killed at any moment leaves
  either nothing under the store's set folders or a complete set.
* The manifest is written last. A folder without a complete, parseable manifest
  is not a backup: :func:`load_manifest` raises :class:`IncompleteBackup`.
* Published sets are never modified; verification results live beside them in
  ``<store>/verifications/<set_id>/<UTC time>.json``.
* Files are created 0600, folders 0700. Names, manifests, logs and errors never
  carry key material: the data key appears only wrapped (``data_key_wraps``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import secrets
import shutil
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils import locks
from ansible_collections.lifeboat.dr.plugins.module_utils.errors import (
    BackupFailed,
    ConfigError,
    IncompleteBackup,
    InsufficientSpace,
    LifeboatError,
    NotFound,
    TamperedData,
    UnknownFormatVersion,
    VerificationFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.progress import (
    ProgressFn,
    ProgressMeter,
    get_logger,
    human_bytes,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.version import TOOL_NAME, __version__

FORMAT_VERSION = 1
READABLE_FORMAT_VERSIONS = (1,)
MANIFEST_NAME = "backup_manifest.json"
SET_TYPES = ("full", "mysql", "redis", "vault", "app", "binlog")
STANDARD_COMPONENTS = ("mysql", "redis", "vault", "app")
METADATA_COMPONENT = "metadata"
PARTIAL_DIR = ".partial"
LOCK_DIR = "locks"
VERIFICATION_DIR = "verifications"
BINLOG_DIR = "binlogs"
RESERVED_TOP_NAMES = (PARTIAL_DIR, LOCK_DIR, VERIFICATION_DIR)
MAC_ALGORITHM = "HMAC-SHA256"
MAC_CONTEXT = b"lifeboat/v1 manifest\0"
DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024
SPACE_FACTOR = 1.10
STATUSES = ("complete", "partial", "verified", "failed")
STATE_DIR = ".state"
SET_STATE_FILE = "set.json"
LEASE_FILE = "lease.json"
MAIN_WRITER = "main"
DEFAULT_LEASE_S = 6 * 3600

SET_ID_RE = re.compile(r"^(full|mysql|redis|vault|app|binlog)_(\d{8}T\d{6}Z)_([0-9a-f]{6})$")
_COMPONENT_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_ID_TIME_FORMAT = "%Y%m%dT%H%M%SZ"

Manifest = dict[str, Any]

log = get_logger("backupset")


def _pipeline():
    """The pipeline module, imported on first use (it needs cryptography + zstandard)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils import pipeline

    return pipeline


# --------------------------------------------------------------------------- ids, times


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
    _check_set_type(set_type)
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


def _check_set_type(set_type: str) -> None:
    if set_type not in SET_TYPES:
        raise ConfigError(f"unknown backup set type {set_type!r}", hint=f"use one of {', '.join(SET_TYPES)}")


def _check_component(component: str) -> None:
    if not _COMPONENT_RE.match(component or "") or component == METADATA_COMPONENT:
        raise ConfigError(f"invalid component name {component!r}",
                          hint=f"use a lower-case name such as {', '.join(STANDARD_COMPONENTS)}")


def _check_relative(path: str, what: str) -> list[str]:
    """Split a ``/``-separated relative path whose every segment is a safe name."""
    parts = (path or "").split("/")
    if not path or not all(_SEGMENT_RE.match(p) for p in parts):
        raise ConfigError(f"invalid {what} {path!r}",
                          hint="use /-separated names of letters, digits, '.', '_', '+', '-' (no leading dot)")
    return parts


def _check_parent(parent: Optional[str]) -> Optional[str]:
    if parent is None:
        return None
    parts = _check_relative(parent, "parent folder")
    if parts[0] in RESERVED_TOP_NAMES or any(SET_ID_RE.match(p) for p in parts):
        raise ConfigError(f"parent folder {parent!r} is reserved", hint="use e.g. binlogs/<server_uuid>/g<generation>")
    return "/".join(parts)


# --------------------------------------------------------------------------- files


def fsync_dir(path: Path) -> None:
    """fsync a folder so that the names in it (creations, renames) are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and missing parents 0700; fsync the parent of each one created."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)
        fsync_dir(folder.parent)
    if not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder", hint="point the store at a folder")


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) atomically: temp name, fsync, rename, fsync folder."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def sha256_file(path: Path, bufsize: int = 1 << 20) -> tuple[int, str]:
    """``(size in bytes, hex SHA-256)`` of a file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while True:
            block = handle.read(bufsize)
            if not block:
                return size, digest.hexdigest()
            size += len(block)
            digest.update(block)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder below ``root`` (folders bottom-up), then ``root``."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def _json_bytes(obj: Any, compact: bool = False) -> bytes:
    """UTF-8 JSON with sorted keys and a final newline: indented, or ``compact`` (one line,
    no spaces; several times faster for large documents such as a folder's file list)."""
    if compact:
        text = json.dumps(obj, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    else:
        text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def _plain_json_copy(obj: Any, what: str) -> Any:
    """A deep copy of ``obj`` through JSON; :class:`ConfigError` if it is not JSON-serialisable."""
    try:
        return json.loads(json.dumps(obj, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{what} is not JSON-serialisable: {err}") from None


# --------------------------------------------------------------------------- manifest


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


# --------------------------------------------------------------------------- catalog records


@dataclass(frozen=True)
class SetInfo:
    """One catalog entry. Times are manifest strings (UTC ISO 8601 ``Z``); sizes in bytes.

    ``status``: ``complete`` (published, never verified), ``verified`` (latest
    verification passed; ``verified_mode`` is ``full`` if a full verification
    passed since the last failure, else ``quick``), ``failed`` (latest
    verification failed) or ``partial`` (not published; only with ``include_partial``).
    ``age_s``: seconds since the end (partial: start) time.
    """

    set_id: str
    type: str
    components: tuple[str, ...]
    start: Optional[str]
    end: Optional[str]
    status: str
    verified_mode: Optional[str]
    stored_bytes: int
    plaintext_bytes: int
    age_s: Optional[float]
    path: Path
    parent: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (path as a string, components as a list)."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["components"] = list(self.components)
        return data


def verification_status(records: list[dict[str, Any]]) -> tuple[Optional[str], Optional[str]]:
    """``(status, verified_mode)`` from verification records (oldest first); ``(None, None)`` if none."""
    if not records:
        return None, None
    if not records[-1].get("ok"):
        return "failed", None
    since_failure: list[dict[str, Any]] = []
    for record in reversed(records):
        if not record.get("ok"):
            break
        since_failure.append(record)
    modes = {r.get("mode") for r in since_failure}
    return "verified", ("full" if "full" in modes else "quick")


# --------------------------------------------------------------------------- verification


def _entry(kind: str, path: str, error: Optional[str]) -> dict[str, Any]:
    return {"path": path, "kind": kind, "ok": error is None, "error": error}


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".replace("\n", " ")


VERIFY_THREADS = 2  # artifacts checked at once by verify_records (each reader has its own stage threads)


def verify_records(base: Path, set_id: str, data_key: Optional[bytes], artifacts: list[dict[str, Any]],
                   files: list[dict[str, Any]], key_error: Optional[str] = None,
                   progress: Optional[ProgressFn] = None,
                   known: Optional[dict[str, Optional[str]]] = None) -> list[dict[str, Any]]:
    """Check every artifact (size, SHA-256, every chunk authenticated, plaintext hash) and
    every JSON file (size, SHA-256) below ``base``; nothing is written to disk.

    Artifacts are checked :data:`VERIFY_THREADS` at a time. ``known``: artifact path ->
    error (``None``: passed) of the same check already done on exactly that file (an early
    read-back, see :meth:`Store.begin_set`); those are not read again. Returns one
    ``{"path", "kind", "ok", "error"}`` per entry, in the order given (artifacts, then
    files); never raises for a bad entry.
    """
    from concurrent.futures import ThreadPoolExecutor

    total = sum(int(r.get("stored_size", 0)) for r in artifacts)
    meter = ProgressMeter(f"quick verify {set_id}", progress, total_bytes=total)
    lock = threading.Lock()
    done = 0

    def check(record: dict[str, Any]) -> dict[str, Any]:
        nonlocal done
        error = key_error and f"not checked: {key_error}"
        if error is None and known is not None and record["path"] in known:
            error = known[record["path"]]
        elif error is None:
            error = _verify_artifact_file(base, set_id, data_key or b"", record)
        with lock:
            done += int(record.get("stored_size", 0))
            meter.update(done, done)
        return _entry("artifact", record["path"], error)

    biggest_first = sorted(range(len(artifacts)), key=lambda i: -int(artifacts[i].get("stored_size", 0)))
    with ThreadPoolExecutor(max_workers=VERIFY_THREADS, thread_name_prefix="lifeboat-verify") as pool:
        checked = list(pool.map(check, [artifacts[i] for i in biggest_first]))
    entries: list[dict[str, Any]] = [{}] * len(artifacts)
    for k, i in enumerate(biggest_first):
        entries[i] = checked[k]
    for record in files:
        entries.append(_entry("json", record["path"], _verify_plain_file(base, record)))
    meter.finish()
    return entries


def _verify_artifact_file(base: Path, set_id: str, data_key: bytes, record: dict[str, Any]) -> Optional[str]:
    src = base / record["path"]
    if not src.is_file():
        return f"IncompleteBackup: {record['path']} is listed in the manifest but missing from the set"
    try:
        result = _pipeline().verify_artifact(src, data_key=data_key, set_id=set_id,
                                             artifact_path=record["path"], record=dict(record))
    except (LifeboatError, OSError) as err:
        return _describe(err)
    if isinstance(result, dict) and result.get("ok") is False:
        return str(result.get("error") or "verification failed")
    return None


def _verify_plain_file(base: Path, record: dict[str, Any]) -> Optional[str]:
    try:
        size, digest = sha256_file(base / record["path"])
    except FileNotFoundError:
        return f"IncompleteBackup: {record['path']} is listed in the manifest but missing from the set"
    except OSError as err:
        return _describe(err)
    if size != record["size"] or digest != record["sha256"]:
        return (f"TamperedData: {record['path']} has size {size} and sha256 {digest[:16]}..., the manifest says "
                f"size {record['size']} and sha256 {record['sha256'][:16]}...")
    return None


def _report(set_id: str, mode: str, entries: list[dict[str, Any]], error: Optional[str] = None) -> dict[str, Any]:
    return {"ok": error is None and all(e["ok"] for e in entries), "set_id": set_id, "mode": mode,
            "checked_at": format_time(utc_now()), "tool_version": __version__, "host": socket.gethostname(),
            "error": error, "artifacts": entries}


# --------------------------------------------------------------------------- reading


class BackupSet:
    """A published set, opened read-only. ``manifest`` is validated on open."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        self.manifest: Manifest = load_manifest(self.path)
        self.set_id: str = self.manifest["id"]
        self._key_cache: tuple[Any, bytes] | None = None

    @property
    def type(self) -> str:
        """The set type (``full``, ``mysql``, ..., ``binlog``)."""
        return self.manifest["type"]

    @property
    def components(self) -> list[str]:
        """The components the set holds."""
        return list(self.manifest["components"])

    def artifacts(self, component: Optional[str] = None) -> list[dict[str, Any]]:
        """Copies of the artifact records (optionally of one component), in manifest order."""
        return [dict(r) for r in self.manifest["artifacts"] if component in (None, r["component"])]

    def files(self, component: Optional[str] = None) -> list[dict[str, Any]]:
        """Copies of the plaintext JSON file records (optionally of one component)."""
        return [dict(r) for r in self.manifest["files"] if component in (None, r["component"])]

    def component_metadata(self, component: str) -> dict[str, Any]:
        """The free-form metadata an engine stored for ``component`` (``{}`` if none)."""
        return json.loads(json.dumps(self.manifest["component_metadata"].get(component, {})))

    def artifact_record(self, component: str, name: str) -> dict[str, Any]:
        """The record of artifact ``component/name``; :class:`NotFound` if the set has none."""
        for record in self.manifest["artifacts"]:
            if record["component"] == component and record["name"] == name:
                return dict(record)
        have = ", ".join(r["path"] for r in self.manifest["artifacts"]) or "none"
        raise NotFound(f"set {self.set_id} has no artifact {component}/{name} (it has: {have})")

    def data_key(self, keyring: Any) -> bytes:
        """Unwrap the set's data key with ``keyring`` and authenticate the manifest with it.

        Raises :class:`KeyUnavailable` / :class:`WrongKey` (from the keyring) or
        :class:`TamperedData` (manifest modified). Cached per keyring object.
        """
        if self._key_cache and self._key_cache[0] is keyring:
            return self._key_cache[1]
        key = keyring.unwrap(self.manifest["encryption"]["data_key_wraps"])
        check_manifest_mac(self.manifest, key)
        self._key_cache = (keyring, key)
        return key

    def open_artifact(self, component: str, name: str, keyring: Any, progress: Optional[ProgressFn] = None):
        """A binary reader of the artifact's plaintext (authenticated chunk by chunk; the
        size and SHA-256 of the whole are checked against the manifest at EOF)."""
        record = self.artifact_record(component, name)
        src = self.path / record["path"]
        if not src.is_file():
            raise IncompleteBackup(f"set {self.set_id} lacks {record['path']}, which its manifest lists",
                                   hint="the set is damaged; use another set")
        return _pipeline().open_artifact_reader(src, data_key=self.data_key(keyring), set_id=self.set_id,
                                                artifact_path=record["path"], record=record, progress=progress)

    def read_json(self, component: str, name: str) -> Any:
        """The parsed JSON file ``component/name``, after checking its size and SHA-256."""
        for record in self.manifest["files"]:
            if record["component"] == component and record["name"] == name:
                error = _verify_plain_file(self.path, record)
                if error:
                    raise TamperedData(f"set {self.set_id}: {error}", hint="the set is damaged; use another set")
                return json.loads((self.path / record["path"]).read_text(encoding="utf-8"))
        raise NotFound(f"set {self.set_id} has no JSON file {component}/{name}")

    def quick_verify(self, keyring: Any, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
        """Check every artifact's size and SHA-256 and authenticate every chunk, writing no
        plaintext to disk. Returns ``{ok, set_id, mode: "quick", checked_at, error,
        artifacts: [{path, kind, ok, error}]}``; never raises for a bad artifact or key."""
        key: Optional[bytes] = None
        key_error: Optional[str] = None
        try:
            key = self.data_key(keyring)
        except LifeboatError as err:
            key_error = _describe(err)
        entries = verify_records(self.path, self.set_id, key, self.manifest["artifacts"], self.manifest["files"],
                                 key_error=key_error, progress=progress)
        return _report(self.set_id, "quick", entries, key_error)


# --------------------------------------------------------------------------- writing


class _RecordingWriter:
    """Wraps a pipeline ArtifactWriter: on ``close()`` its record goes into the set."""

    def __init__(self, owner: SetWriter, inner: Any, component: str, name: str, rel: str, dest: Path) -> None:
        self._owner = owner
        self._inner = inner
        self.component = component
        self.name = name
        self.artifact_path = rel
        self.dest = dest
        self.record: Optional[dict[str, Any]] = None
        self._done = False

    def write(self, data: Any) -> int:
        return self._inner.write(data)

    def writelines(self, lines: Iterable[Any]) -> None:
        self._inner.writelines(lines)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        flush = getattr(self._inner, "flush", None)
        if flush:
            flush()

    @property
    def closed(self) -> bool:
        return self._done

    def close(self) -> dict[str, Any]:
        """Finish the artifact (fsynced, renamed into the partial set) and record it."""
        if self._done:
            return dict(self.record or {})
        self._done = True
        try:
            record = self._inner.close()
        except BaseException:
            self._owner._forget_writer(self, failed=True)
            raise
        self.record = self._owner._artifact_closed(self, record)
        return dict(self.record)

    def abort(self) -> None:
        """Drop the artifact (its file is removed; nothing is recorded)."""
        if self._done:
            return
        self._done = True
        try:
            self._inner.abort()
        finally:
            self._owner._forget_writer(self)

    def __enter__(self) -> _RecordingWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SetWriter:
    """Writes into one partial set ``<store>/.partial/<set_id>/``; :meth:`publish` commits it.

    Two roles:

    * the *main* writer, from :meth:`Store.begin_set`: may write every component;
    * a *component* writer, from :meth:`Store.resume_set` with ``component``: writes
      only that component's folder (and ``metadata/``), possibly in another process
      and in parallel with other component writers.

    Every writer keeps its records (artifacts, JSON files, sources, metadata) in its
    own state file ``.state/<mysql|...|main>.json``, saved by :meth:`detach`;
    :meth:`publish` (in whichever process runs last) merges them all into the manifest.

    As a context manager, leaving the block by an exception calls :meth:`abort`;
    leaving it normally without publishing detaches a resumed writer and discards
    a main writer that was never detached (nothing is ever published implicitly).
    ``path`` is the partial folder until publish, the final folder after it.
    Artifact writers may run in several threads at once.
    """

    def __init__(self, store: Store, info: dict[str, Any], data_key: bytes, *, component: Optional[str],
                 set_lock: locks.HeldLock, writer_lock: Optional[locks.HeldLock] = None, owns_lock: bool = False,
                 created: bool = False, replace: bool = False, progress: Optional[ProgressFn] = None,
                 early_read_back: bool = True) -> None:
        self.store = store
        self.info = info
        self.set_id: str = info["set_id"]
        self.set_type: str = info["type"]
        self.components: list[str] = list(info["components"])
        self.parent: Optional[str] = info.get("parent")
        self.codec = _codec_from(info.get("codec"))
        self.component = component
        self.state_name = component or MAIN_WRITER
        self.final_path = store.set_path(self.set_id, self.parent)
        self.partial_path = store.partial_root / self.set_id
        self.path = self.partial_path
        self.started = parse_time(info["started"])
        self.published = False
        self.aborted = False
        self.detached = False
        self.verification: Optional[dict[str, Any]] = None
        self._created = created
        self._data_key: Optional[bytes] = data_key
        self._set_lock = set_lock
        self._writer_lock = writer_lock
        self._owns_lock = owns_lock
        self._progress = progress
        self._mutex = threading.RLock()
        self._open: list[_RecordingWriter] = []
        self._failed: list[str] = []
        self._early_read_back = early_read_back
        self._read_backs: dict[str, tuple[str, Any]] = {}  # path -> (stored_sha256, Future of the error)
        self._read_back_pool: Any = None
        self._state: dict[str, Any] = {"artifacts": [], "files": [], "sources": [], "metadata": {}}
        self._state_lock = locks.acquire_file(self._state_dir / f"writer-{self.state_name}.lock", None,
                                              what=f"the {self.state_name} writer of set {self.set_id}")
        self._load_own_state(replace)

    @property
    def _state_dir(self) -> Path:
        return self.partial_path / STATE_DIR

    @property
    def _state_file(self) -> Path:
        return self._state_dir / f"writer-{self.state_name}.json"

    def _load_own_state(self, replace: bool) -> None:
        previous = _read_json(self._state_file)
        if not previous:
            return
        if not replace:
            for key in self._state:
                self._state[key] = previous.get(key, self._state[key])
            return
        for record in previous.get("artifacts", []) + previous.get("files", []):
            (self.partial_path / record["path"]).unlink(missing_ok=True)
        self._state_file.unlink(missing_ok=True)
        log.info("backup set %s: earlier %s attempt discarded; writing it again", self.set_id, self.state_name)

    # -- context manager
    def __enter__(self) -> SetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.published or self.aborted or self.detached:
            return
        if exc_type is not None:
            log.warning("backup set %s: %s writer stopped by %s", self.set_id, self.state_name, exc_type.__name__)
            self.abort()
        elif self._created:
            log.warning("backup set %s: left without publish() or detach(); discarded", self.set_id)
            self.abort()
        else:
            self.detach()

    # -- content
    def _check_writable(self) -> None:
        if self.published or self.aborted or self.detached:
            state = "published" if self.published else "aborted" if self.aborted else "detached"
            raise BackupFailed(f"this writer of backup set {self.set_id} is {state}; it cannot take more data",
                               hint="resume the set with Store.resume_set to write more")

    def _claimed(self) -> set[str]:
        return {r["path"] for r in self._state["artifacts"] + self._state["files"]} | {
            w.artifact_path for w in self._open}

    def _claim(self, component: str, name: str) -> str:
        """Reserve ``component/name`` (unique within the set) and create its folders."""
        allowed = [self.component] if self.component else self.components
        if component != METADATA_COMPONENT and component not in allowed:
            raise ConfigError(f"component {component!r} is not writable by this writer of set {self.set_id}",
                              hint=f"it may write {', '.join(allowed)} and {METADATA_COMPONENT}")
        rel = "/".join([component, *_check_relative(name, "artifact name")])
        with self._mutex:
            self._check_writable()
            if rel in self._claimed() or (self.partial_path / rel).exists():
                raise ConfigError(f"set {self.set_id} already has a file {rel}", hint="use a distinct name")
            make_private_dirs((self.partial_path / rel).parent)
            return rel

    def artifact(self, component: str, name: str, *, codec: Any = None, total_bytes: Optional[int] = None):
        """An encrypting, compressing binary writer for ``<component>/<name>``.

        Its ``close()`` returns the ArtifactRecord, which is added to the manifest;
        an artifact never closed blocks :meth:`publish` / :meth:`detach`.
        """
        with self._mutex:
            rel = self._claim(component, name)
            dest = self.partial_path / rel
            kwargs: dict[str, Any] = {"data_key": self._data_key, "set_id": self.set_id, "artifact_path": rel,
                                      "total_bytes": total_bytes, "progress": self._progress}
            if (codec or self.codec) is not None:
                kwargs["codec"] = codec or self.codec
            inner = _pipeline().open_artifact_writer(dest, **kwargs)
            writer = _RecordingWriter(self, inner, component, name, rel, dest)
            self._open.append(writer)
            return writer

    def _forget_writer(self, writer: _RecordingWriter, failed: bool = False) -> None:
        with self._mutex:
            if writer in self._open:
                self._open.remove(writer)
            if failed:
                self._failed.append(writer.artifact_path)

    def _artifact_closed(self, writer: _RecordingWriter, record: dict[str, Any]) -> dict[str, Any]:
        if writer.dest.exists():
            os.chmod(writer.dest, 0o600)
        full = dict(record)
        if full.get("path") != writer.artifact_path:
            raise BackupFailed(f"pipeline returned a record for {full.get('path')!r}, expected {writer.artifact_path}")
        full.update(component=writer.component, name=writer.name)
        with self._mutex:
            self._forget_writer(writer)
            self._state["artifacts"].append(full)
            if self._early_read_back:
                self._start_read_back(full)
        return full

    # -- early read-back
    def _start_read_back(self, record: dict[str, Any]) -> None:
        """Read a just-closed artifact back in the background, as publish's check would.

        A closed artifact never changes, so checking it now gives the same answer as at
        publish, but uses the cores while the other artifacts are still being produced (for
        a MySQL dump: while its biggest table is still streaming alone). One artifact at a time.
        """
        if self._read_back_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._read_back_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lifeboat-read-back")
        future = self._read_back_pool.submit(_verify_artifact_file, self.partial_path, self.set_id,
                                             self._data_key or b"", dict(record))
        self._read_backs[record["path"]] = (record["stored_sha256"], future)

    def _finished_read_backs(self) -> dict[str, dict[str, Any]]:
        """``path -> {"stored_sha256", "error"}`` of this writer's read-backs (waits for them)."""
        return {path: {"stored_sha256": digest, "error": future.result()}
                for path, (digest, future) in self._read_backs.items()}

    def _stop_read_backs(self, wait: bool = True) -> None:
        """End the read-back thread: after its work (``wait``), or at once, dropping what is
        queued (the set is being given up; a check still running ends with its file)."""
        if self._read_back_pool is not None:
            self._read_back_pool.shutdown(wait=wait, cancel_futures=True)
            self._read_back_pool = None
        if not wait:
            self._read_backs.clear()

    def write_json(self, component: str, name: str, obj: Any, *, compact: bool = False) -> None:
        """Write a non-secret plaintext JSON file ``<component>/<name>`` (0600, atomic),
        recorded in the manifest with its size and SHA-256; ``compact`` for large,
        machine-read documents (see :func:`_json_bytes`)."""
        if compact:
            try:
                data = _json_bytes(obj, compact=True)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{component}/{name} is not JSON-serialisable: {err}") from None
        else:
            data = _json_bytes(_plain_json_copy(obj, f"{component}/{name}"))
        with self._mutex:
            rel = self._claim(component, name)
            write_file_atomic(self.partial_path / rel, data)
            self._state["files"].append({"component": component, "name": name, "path": rel, "size": len(data),
                                         "sha256": hashlib.sha256(data).hexdigest()})

    def _check_own_component(self, component: str) -> None:
        allowed = [self.component] if self.component else self.components
        if component not in allowed:
            raise ConfigError(f"component {component!r} is not writable by this writer of set {self.set_id}")

    def set_component_metadata(self, component: str, meta: dict[str, Any]) -> None:
        """Merge ``meta`` (JSON-serialisable, non-secret) into the component's manifest metadata."""
        self._check_own_component(component)
        copy = _plain_json_copy(meta, f"metadata of {component}")
        if not isinstance(copy, dict):
            raise ConfigError(f"metadata of {component} must be a dict")
        with self._mutex:
            self._check_writable()
            self._state["metadata"].setdefault(component, {}).update(copy)

    def add_source(self, component: str, host: str, server_version: Optional[str], **extra: Any) -> None:
        """Record a source server of ``component`` (host, server version, extra non-secret fields)."""
        self._check_own_component(component)
        entry = _plain_json_copy({"component": component, "host": host, "server_version": server_version, **extra},
                                 f"source of {component}")
        with self._mutex:
            self._check_writable()
            self._state["sources"].append(entry)

    # -- hand-over between processes
    def _save_state(self) -> None:
        state = dict(self._state, writer=self.state_name, component=self.component, pid=os.getpid(),
                     host=socket.gethostname(), updated=format_time(utc_now()))
        write_file_atomic(self._state_file, _json_bytes(state))

    def _check_no_open(self, action: str) -> None:
        if self._failed:
            raise BackupFailed(f"backup set {self.set_id}: artifact(s) {', '.join(self._failed)} failed while "
                               "being finished; the set cannot be completed", hint="abort it and back up again")
        if self._open:
            names = ", ".join(w.artifact_path for w in self._open)
            raise BackupFailed(f"backup set {self.set_id}: artifact(s) {names} were never closed",
                               hint=f"close every artifact writer before {action}")

    def detach(self, lease_s: Optional[float] = None) -> str:
        """Save this writer's records and let go of the set without publishing it, so that
        other processes (:meth:`Store.resume_set`) continue it. The set stays protected
        from :meth:`Store.clean_stale_partials` and its writer lock stays leased for
        ``lease_s`` seconds (default: the set's lease), renewed by every resume.
        Returns the set id."""
        with self._mutex:
            self._check_writable()
            self._check_no_open("detach()")
            lease_s = float(lease_s or self.info.get("lease_s") or DEFAULT_LEASE_S)
            if self._read_backs:
                self._state["read_back"] = self._finished_read_backs()
            self._stop_read_backs()
            self._save_state()
            _write_lease(self.partial_path, self.info.get("owner"), lease_s)
            if self._owns_lock and self._writer_lock is not None and self._writer_lock.held:
                self._writer_lock.detach_as_lease(lease_s, set_id=self.set_id, owner=self.info.get("owner"))
            elif self.info.get("lock_kind"):
                locks.refresh_lease(self.store.root / LOCK_DIR, self.info["lock_kind"], self.set_id, lease_s)
            self.detached = True
            self._release_writer_locks()
        log.info("backup set %s: %s writer detached", self.set_id, self.state_name)
        return self.set_id

    # -- commit
    def _merged_state(self) -> dict[str, Any]:
        """Every writer's records: this one's (in memory) and the saved ones of the others."""
        merged: dict[str, Any] = {"artifacts": [], "files": [], "sources": [], "metadata": {}, "read_back": {}}
        states = [self._state]
        for path in sorted(self._state_dir.glob("writer-*.json")):
            if path != self._state_file:
                states.append(_read_json(path) or {})
        for state in states:
            merged["artifacts"] += state.get("artifacts", [])
            merged["files"] += state.get("files", [])
            merged["sources"] += state.get("sources", [])
            merged["read_back"].update(state.get("read_back", {}))
            for component, meta in state.get("metadata", {}).items():
                merged["metadata"].setdefault(component, {}).update(meta)
        paths = [r["path"] for r in merged["artifacts"] + merged["files"]]
        duplicates = sorted({p for p in paths if paths.count(p) > 1})
        if duplicates:
            raise BackupFailed(f"backup set {self.set_id}: {', '.join(duplicates)} written by more than one writer")
        return merged

    def build_manifest(self, merged: dict[str, Any], end: datetime) -> Manifest:
        """The manifest for ``merged`` records (MAC included); does not write it."""
        artifacts, files = merged["artifacts"], merged["files"]
        stored = sum(r["stored_size"] for r in artifacts) + sum(f["size"] for f in files)
        plain = sum(r["plaintext_size"] for r in artifacts) + sum(f["size"] for f in files)
        manifest: Manifest = {
            "format_version": FORMAT_VERSION,
            "id": self.set_id,
            "type": self.set_type,
            "parent": self.parent,
            "components": list(self.components),
            "start_time": format_time(self.started),
            "end_time": format_time(end),
            "tool": {"name": TOOL_NAME, "version": __version__},
            "created_on": self.info.get("created_on"),
            "owner": self.info.get("owner"),
            "sources": merged["sources"],
            "encryption": {"data_key_wraps": [dict(w) for w in self.info["data_key_wraps"]]},
            "artifacts": sorted(artifacts, key=lambda r: r["path"]),
            "files": sorted(files, key=lambda r: r["path"]),
            "component_metadata": {k: merged["metadata"][k] for k in sorted(merged["metadata"])},
            "totals": {"artifacts": len(artifacts), "files": len(files), "stored_bytes": stored,
                       "plaintext_bytes": plain},
        }
        manifest["manifest_mac"] = {"algorithm": MAC_ALGORITHM, "value": manifest_mac(manifest, self._data_key or b"")}
        return manifest

    def publish(self, quick_verify: bool = True, wait_s: float = 0.0) -> Manifest:
        """Commit the set: merge every writer's records, optionally quick-verify every
        artifact, write the manifest last, fsync every file and folder, rename the partial
        folder to its final place (the atomic commit point), fsync both parents, release
        the writer lock (or its lease). Returns the manifest.

        Fails with :class:`BackupFailed` (set left as it is) while other processes still
        write into the set (waits up to ``wait_s`` seconds for them). Any other failure
        discards the whole partial set and raises; nothing is published. A passing quick
        verification is stored with :meth:`Store.record_verification`.
        """
        with self._mutex:
            self._check_writable()
            self._check_no_open("publish()")
            if not self._set_lock.upgrade(wait_s):
                raise BackupFailed(f"backup set {self.set_id}: other processes are still writing into it",
                                   hint="publish after every component writer has finished (detached)")
            try:
                merged = self._merged_state()
                if not quick_verify:
                    self._stop_read_backs(wait=False)
                report = self._verify_partial(merged) if quick_verify else None
                manifest = self.build_manifest(merged, utc_now())
                _remove_unlisted(self.partial_path, [r["path"] for r in manifest["artifacts"] + manifest["files"]])
                write_file_atomic(self.partial_path / MANIFEST_NAME, _json_bytes(manifest))
                _fsync_tree(self.partial_path)
                make_private_dirs(self.final_path.parent)
                _rename_into_place(self.partial_path, self.final_path)
                fsync_dir(self.store.partial_root)
                fsync_dir(self.final_path.parent)
            except BaseException:
                self._discard_set()
                raise
            self.published = True
            self.path = self.final_path
            self._end_set()
        log.info("backup set %s: published at %s (%s stored)", self.set_id, self.final_path,
                 human_bytes(manifest["totals"]["stored_bytes"]))
        if report is not None:
            self.verification = report
            try:
                self.store.record_verification(self.set_id, report)
            except (LifeboatError, OSError) as err:
                log.warning("backup set %s: could not store its verification record: %s", self.set_id, err)
        return manifest

    def _verify_partial(self, merged: dict[str, Any]) -> dict[str, Any]:
        entries = verify_records(self.partial_path, self.set_id, self._data_key, merged["artifacts"],
                                 merged["files"], progress=self._progress, known=self._known_read_backs(merged))
        report = _report(self.set_id, "quick", entries)
        report["trigger"] = "publish"
        if not report["ok"]:
            failed = "; ".join(f"{e['path']}: {e['error']}" for e in entries if not e["ok"])
            raise VerificationFailed(f"backup set {self.set_id} failed its read-back check before publish: {failed}",
                                     hint="the set was discarded; check the disk and retry the backup")
        return report

    def _known_read_backs(self, merged: dict[str, Any]) -> dict[str, Optional[str]]:
        """Results of early read-backs (this writer's, and those other writers saved at detach)
        that checked exactly the artifact the manifest will list (same path and stored SHA-256)."""
        done = dict(merged.get("read_back") or {})
        done.update(self._finished_read_backs())
        self._stop_read_backs()
        known: dict[str, Optional[str]] = {}
        for record in merged["artifacts"]:
            result = done.get(record["path"])
            if isinstance(result, dict) and result.get("stored_sha256") == record.get("stored_sha256"):
                known[record["path"]] = result.get("error")
        return known

    def abort(self) -> None:
        """Give up (idempotent). The main writer of a set never detached discards the whole
        partial set. A resumed writer discards only its own work (its files and state) and
        leaves the set partial, for a retry, a publish, or :meth:`Store.abort_set`."""
        with self._mutex:
            if self.published or self.aborted or self.detached:
                return
            self.aborted = True
            self._stop_read_backs(wait=False)
            for writer in list(self._open):
                try:
                    writer.abort()
                except Exception as err:  # noqa: BLE001 - keep cleaning up
                    log.warning("backup set %s: aborting %s failed: %s", self.set_id, writer.artifact_path, err)
            if self._created:
                self._discard_set()
                return
            for record in self._state["artifacts"] + self._state["files"]:
                (self.partial_path / record["path"]).unlink(missing_ok=True)
            self._state_file.unlink(missing_ok=True)
            self._release_writer_locks()
        log.warning("backup set %s: %s work discarded; the set stays partial", self.set_id, self.state_name)

    def _discard_set(self) -> None:
        """Remove the partial set, end its locks/lease (this writer holds it exclusively or is its creator)."""
        self.aborted = True
        self._stop_read_backs(wait=False)
        shutil.rmtree(self.partial_path, ignore_errors=True)
        self._end_set()
        log.warning("backup set %s: discarded, nothing published", self.set_id)

    def _end_set(self) -> None:
        """The set left ``.partial`` (published or removed): drop its lock file and writer lock/lease."""
        self._data_key = None
        (self.store.partial_root / f"{self.set_id}.lock").unlink(missing_ok=True)
        if self._owns_lock and self._writer_lock is not None and self._writer_lock.held:
            self._writer_lock.release()
        elif self.info.get("lock_kind"):
            try:
                locks.clear_lease(self.store.root / LOCK_DIR, self.info["lock_kind"], self.set_id)
            except LifeboatError as err:
                log.warning("backup set %s: could not end its lock lease: %s", self.set_id, err)
        self._release_writer_locks()

    def _release_writer_locks(self) -> None:
        self._data_key = None
        self._state_lock.release()
        self._set_lock.release()


def _codec_state(codec: Any) -> Optional[dict[str, Any]]:
    """The set state's codec entry: the manifest form plus the worker threads (which the
    manifest does not record, but every writer of this set, resumed ones too, should use)."""
    if codec is None:
        return None
    return dict(codec.to_manifest(), threads=codec.threads)


def _codec_from(data: Optional[dict[str, Any]]) -> Any:
    """Inverse of :func:`_codec_state` (an entry without ``threads``, written before they were
    kept, gets the default: automatic)."""
    if not data:
        return None
    from ansible_collections.lifeboat.dr.plugins.module_utils.compression import Codec

    codec = Codec.from_manifest(data)
    return replace(codec, threads=int(data["threads"])) if data.get("threads") is not None else codec


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    """The JSON object in ``path``; ``None`` if missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_lease(partial: Path, owner: Optional[str], lease_s: float) -> None:
    lease = {"owner": owner, "lease_until": locks.lease_until_iso(lease_s), "updated": format_time(utc_now()),
             "pid": os.getpid(), "host": socket.gethostname()}
    write_file_atomic(partial / STATE_DIR / LEASE_FILE, _json_bytes(lease))


def _remove_unlisted(partial: Path, listed: list[str]) -> None:
    """Delete the writers' state and any file no record lists (temp files of killed writers)."""
    shutil.rmtree(partial / STATE_DIR, ignore_errors=True)
    keep = set(listed)
    for file in [p for p in partial.rglob("*") if p.is_file() or p.is_symlink()]:
        if file.relative_to(partial).as_posix() not in keep:
            file.unlink()


def _rename_into_place(src: Path, dst: Path) -> None:
    """The commit point of a set: rename its finished partial folder to its final name."""
    if dst.exists():
        raise BackupFailed(f"{dst} already exists; a set id must be unique", hint="retry with a new set id")
    os.rename(src, dst)


# --------------------------------------------------------------------------- store


class Store:
    """A backup store folder: writers, catalog, verification records, locks.

    ``reserve_bytes``: free space kept in addition to the estimate of a new set.
    Folders are created (0700) on first write; reading a missing store lists nothing.
    """

    def __init__(self, root: Union[str, Path], *, reserve_bytes: int = DEFAULT_RESERVE_BYTES) -> None:
        self.root = Path(root)
        self.reserve_bytes = reserve_bytes

    @property
    def partial_root(self) -> Path:
        """``<root>/.partial``: sets being written (or left by killed runs)."""
        return self.root / PARTIAL_DIR

    def set_path(self, set_id: str, parent: Optional[str] = None) -> Path:
        """Where set ``set_id`` is (or will be) published."""
        parse_set_id(set_id)
        parent = _check_parent(parent)
        return (self.root / parent / set_id) if parent else (self.root / set_id)

    # -- locks
    def lock(self, kind: str, *, wait_s: float = 0.0, set_id: Optional[str] = None) -> locks.HeldLock:
        """Take writer lock ``kind`` (``create``, ``binlog``, ``prune``); use as a context manager.

        Fails at once (or after ``wait_s`` seconds) with :class:`LockHeld` naming the holder
        (or the detached set holding its lease). Different kinds never block each other.
        """
        make_private_dirs(self.root)
        return locks.acquire(self.root / LOCK_DIR, kind, wait_s=wait_s, set_id=set_id, store=str(self.root),
                             lease_valid=self._lease_valid)

    def _lease_valid(self, record: dict[str, Any]) -> bool:
        """A lease counts only while its set is still partial."""
        set_id = record.get("set_id")
        return isinstance(set_id, str) and bool(SET_ID_RE.match(set_id)) and (self.partial_root / set_id).is_dir()

    # -- space
    def stored_ratio(self, set_type: Optional[str] = None) -> float:
        """stored/plaintext bytes of the newest published set (of ``set_type`` if there is one), else 1.0."""
        sets = [s for s in self.list_sets() if s.plaintext_bytes > 0]
        same = [s for s in sets if s.type == set_type]
        pick = (same or sets)[-1:]
        return pick[0].stored_bytes / pick[0].plaintext_bytes if pick else 1.0

    def check_free_space(self, estimated_bytes: int, set_type: Optional[str] = None) -> dict[str, int]:
        """Raise :class:`InsufficientSpace` unless the store has room for a set of
        ``estimated_bytes`` plaintext bytes: needed = ceil(estimate × ratio × 1.10) + reserve.

        Returns ``{"needed", "available"}`` in bytes.
        """
        ratio = self.stored_ratio(set_type)
        needed = int(math.ceil(estimated_bytes * ratio * SPACE_FACTOR)) + self.reserve_bytes
        available = shutil.disk_usage(self.root).free
        if available < needed:
            raise InsufficientSpace(
                f"store {self.root} has {available} bytes ({human_bytes(available)}) free but a new "
                f"{set_type or ''} set needs about {needed} bytes ({human_bytes(needed)}): {estimated_bytes} "
                f"estimated plaintext bytes x stored/plaintext ratio {ratio:.2f} x {SPACE_FACTOR} + "
                f"{self.reserve_bytes} reserve",
                hint="free space (prune old sets) or use a store on a larger volume",
                needed=needed, available=available, store=str(self.root))
        return {"needed": needed, "available": available}

    # -- writing
    def begin_set(self, set_type: str, components: list[str], keyring: Any, *, codec: Any = None,
                  set_id: Optional[str] = None, estimated_bytes: Optional[int] = None,
                  progress: Optional[ProgressFn] = None, lock: Union[str, locks.HeldLock, None] = "create",
                  parent: Optional[str] = None, owner: Optional[str] = None,
                  lease_s: float = DEFAULT_LEASE_S, early_read_back: bool = True) -> SetWriter:
        """Start a set: take the writer lock, check free space, make a fresh data key,
        create ``<root>/.partial/<set_id>/`` (0700) with one folder per component + ``metadata/``.

        ``lock``: a kind to take now (released at publish/abort, leased on detach), a
        :class:`HeldLock` the caller already holds, or ``None`` (no writer lock).
        ``parent``: sub-folder of the root to publish into (e.g. ``binlogs/<uuid>/g1``).
        ``owner``: who drives a multi-process set (e.g. an Ansible run id), recorded
        with its lease; ``lease_s``: how long a detached set stays protected without a resume.
        ``early_read_back``: read every artifact back as soon as it is closed (the check
        :meth:`SetWriter.publish` makes with ``quick_verify``, done ahead; publish then only
        collects the results); pass False when the set will be published without that check.
        """
        _check_set_type(set_type)
        if not components:
            raise ConfigError("a backup set needs at least one component")
        for component in components:
            _check_component(component)
        parent = _check_parent(parent)
        set_id = set_id or new_set_id(set_type)
        if parse_set_id(set_id)[0] != set_type:
            raise ConfigError(f"set id {set_id} does not start with its type {set_type!r}")
        make_private_dirs(self.root)
        held, owns = (self.lock(lock, set_id=set_id), True) if isinstance(lock, str) else (lock, False)
        set_lock = None
        try:
            if self._find_set_dir(set_id) or (self.partial_root / set_id).exists():
                raise ConfigError(f"backup set {set_id} already exists in {self.root}", hint="use a new set id")
            if estimated_bytes is not None:
                self.check_free_space(estimated_bytes, set_type)
            data_key, wraps = keyring.new_data_key()
            make_private_dirs(self.partial_root)
            set_lock = locks.acquire_file(self.partial_root / f"{set_id}.lock", None, what=f"partial set {set_id}",
                                          shared=True)
            info = {"set_id": set_id, "type": set_type, "components": list(components), "parent": parent,
                    "codec": _codec_state(codec), "data_key_wraps": wraps,
                    "started": format_time(utc_now()), "created_on": socket.gethostname(), "owner": owner,
                    "lease_s": lease_s, "lock_kind": held.kind if owns and held is not None else None}
            self._create_partial(info)
            writer = SetWriter(self, info, data_key, component=None, set_lock=set_lock, writer_lock=held,
                               owns_lock=owns, created=True, progress=progress, early_read_back=early_read_back)
        except BaseException:
            if set_lock is not None:
                shutil.rmtree(self.partial_root / set_id, ignore_errors=True)
                (self.partial_root / f"{set_id}.lock").unlink(missing_ok=True)
                set_lock.release()
            if owns and held is not None:
                held.release()
            raise
        log.info("backup set %s: writing to %s", set_id, writer.partial_path)
        return writer

    def _create_partial(self, info: dict[str, Any]) -> None:
        partial = self.partial_root / info["set_id"]
        for folder in [partial, *(partial / c for c in [*info["components"], METADATA_COMPONENT, STATE_DIR])]:
            folder.mkdir(mode=0o700)
            os.chmod(folder, 0o700)
        write_file_atomic(partial / STATE_DIR / SET_STATE_FILE, _json_bytes(info))
        fsync_dir(self.partial_root)

    def resume_set(self, set_id: str, keyring: Any, *, component: Optional[str] = None,
                   replace: Optional[bool] = None, progress: Optional[ProgressFn] = None,
                   early_read_back: bool = True) -> SetWriter:
        """Continue a partial set begun (and detached) elsewhere, e.g. in another process.

        ``component``: write only that component (in parallel with writers of other
        components); ``None``: act as the main writer. ``replace``: discard what an earlier
        attempt of the same writer recorded, so a retried step starts clean (default: True
        for a component writer, False for the main writer, which continues). The data key is
        unwrapped with ``keyring``; the set's lease is renewed. :class:`NotFound` if there is
        no such partial set; :class:`LockHeld` if the same writer is active elsewhere or the
        set is being published/removed. ``early_read_back`` as for :meth:`begin_set`; a
        detaching writer saves its results for the writer that publishes.
        """
        parse_set_id(set_id)
        partial = self.partial_root / set_id
        if not partial.is_dir():
            if self._find_set_dir(set_id):
                raise BackupFailed(f"backup set {set_id} is already published; it cannot be written to")
            raise NotFound(f"no partial backup set {set_id} in store {self.root}",
                           hint="it was never begun, was aborted, or was removed as stale")
        set_lock = locks.acquire_file(self.partial_root / f"{set_id}.lock", None, what=f"partial set {set_id}",
                                      shared=True)
        try:
            info = _read_json(partial / STATE_DIR / SET_STATE_FILE)
            if not partial.is_dir() or not info:
                raise IncompleteBackup(f"partial backup set {set_id} lacks its state; it cannot be resumed",
                                       hint=f"abort it (Store.abort_set) and start a new set; {partial}")
            if component is not None and component not in info["components"]:
                raise ConfigError(f"set {set_id} has no component {component!r} ({', '.join(info['components'])})")
            data_key = keyring.unwrap(info["data_key_wraps"])
            lease_s = float(info.get("lease_s") or DEFAULT_LEASE_S)
            _write_lease(partial, info.get("owner"), lease_s)
            if info.get("lock_kind"):
                locks.refresh_lease(self.root / LOCK_DIR, info["lock_kind"], set_id, lease_s)
            if replace is None:
                replace = component is not None
            writer = SetWriter(self, info, data_key, component=component, set_lock=set_lock, replace=replace,
                               progress=progress, early_read_back=early_read_back)
        except BaseException:
            set_lock.release()
            raise
        log.info("backup set %s: resumed by the %s writer", set_id, writer.state_name)
        return writer

    def abort_set(self, set_id: str, reason: str, wait_s: float = 0.0) -> None:
        """Remove partial set ``set_id`` and end its lock lease; ``reason`` is logged.

        :class:`LockHeld` if a writer is still active in it (after ``wait_s`` seconds);
        :class:`NotFound` if there is no such partial set.
        """
        parse_set_id(set_id)
        partial = self.partial_root / set_id
        if not partial.is_dir():
            raise NotFound(f"no partial backup set {set_id} in store {self.root}")
        with locks.acquire_file(self.partial_root / f"{set_id}.lock", None, what=f"partial set {set_id}",
                                wait_s=wait_s):
            info = _read_json(partial / STATE_DIR / SET_STATE_FILE) or {}
            shutil.rmtree(partial, ignore_errors=True)
            (self.partial_root / f"{set_id}.lock").unlink(missing_ok=True)
            self._end_lease(info, set_id)
        log.warning("backup set %s: aborted (%s); nothing published", set_id, reason)

    def _end_lease(self, info: dict[str, Any], set_id: str) -> None:
        if info.get("lock_kind"):
            try:
                locks.clear_lease(self.root / LOCK_DIR, info["lock_kind"], set_id, wait_s=0)
            except LifeboatError:
                pass  # a live holder of that kind: its record is not our lease

    # -- catalog
    def _find_set_dir(self, set_id: str, parent: Optional[str] = None) -> Optional[Path]:
        """The published folder of ``set_id`` (top level, ``parent``, or any binlog archive)."""
        candidates = [self.set_path(set_id, parent)]
        if parent is None and set_id.startswith("binlog_"):
            candidates += sorted((self.root / BINLOG_DIR).glob(f"*/*/{set_id}"))
        for path in candidates:
            if path.is_dir():
                return path
        return None

    def open_set(self, set_id: str, parent: Optional[str] = None) -> BackupSet:
        """Open a published set (manifest validated). :class:`NotFound` if absent;
        :class:`IncompleteBackup` if it only exists as a partial (being written or killed)."""
        path = self._find_set_dir(set_id, parent)
        if path is None:
            if (self.partial_root / set_id).exists():
                raise IncompleteBackup(f"backup set {set_id} was never published (it is still being written, or "
                                       "its run died)", hint="use another set; clean_stale_partials removes it")
            raise NotFound(f"no backup set {set_id} in store {self.root}", hint="list the store's sets")
        return BackupSet(path)

    def list_sets(self, include_partial: bool = False, parent: Optional[str] = None) -> list[SetInfo]:
        """The sets directly in the root (or in ``parent``), ordered by manifest start time
        (then id). Folders without a complete manifest and partials appear only with
        ``include_partial`` (status ``partial``); sets of an unknown format are skipped (logged)."""
        parent = _check_parent(parent)
        base = self.root / parent if parent else self.root
        infos: list[SetInfo] = []
        for entry in _set_folders(base):
            try:
                manifest = load_manifest(entry)
            except UnknownFormatVersion as err:
                log.warning("skipping set %s: %s", entry.name, err)
                continue
            except IncompleteBackup:
                if include_partial:
                    infos.append(self._partial_info(entry, {}, parent))
                continue
            infos.append(self._complete_info(entry, manifest, parent))
        if include_partial:
            for entry in _set_folders(self.partial_root):
                state = _read_json(entry / STATE_DIR / SET_STATE_FILE) or {}
                if state.get("parent") == parent:
                    infos.append(self._partial_info(entry, state, parent))
        return sorted(infos, key=_catalog_order)

    def _complete_info(self, path: Path, manifest: Manifest, parent: Optional[str]) -> SetInfo:
        status, mode = verification_status(self.verifications(manifest["id"]))
        end = parse_time(manifest["end_time"])
        return SetInfo(manifest["id"], manifest["type"], tuple(manifest["components"]), manifest["start_time"],
                       manifest["end_time"], status or "complete", mode, int(manifest["totals"].get("stored_bytes", 0)),
                       int(manifest["totals"].get("plaintext_bytes", 0)), (utc_now() - end).total_seconds(), path,
                       parent)

    def _partial_info(self, path: Path, state: dict[str, Any], parent: Optional[str]) -> SetInfo:
        set_type, when = parse_set_id(path.name)
        start = state.get("started") or format_time(when)
        stored = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return SetInfo(path.name, set_type, tuple(state.get("components", ())), start, None, "partial", None,
                       stored, 0, (utc_now() - parse_time(start)).total_seconds(), path, parent)

    def latest_set(self, component: Optional[str] = None, verified_only: bool = False,
                   set_type: Optional[str] = None, parent: Optional[str] = None) -> Optional[BackupSet]:
        """The newest published set (by start time) holding ``component`` / of ``set_type``;
        with ``verified_only`` only sets whose latest verification passed. ``None`` if none."""
        for info in reversed(self.list_sets(parent=parent)):
            if component and component not in info.components:
                continue
            if set_type and info.type != set_type:
                continue
            if verified_only and info.status != "verified":
                continue
            return BackupSet(info.path)
        return None

    # -- verification records
    def record_verification(self, set_id: str, report: dict[str, Any]) -> Path:
        """Store a verification report as ``<root>/verifications/<set_id>/<UTC time>.json``
        (0600, atomic), never inside the set. The report needs ``ok`` (bool) and ``mode``."""
        if self._find_set_dir(set_id) is None:
            raise NotFound(f"no published backup set {set_id} in store {self.root}")
        if not isinstance(report.get("ok"), bool) or not report.get("mode"):
            raise ConfigError("a verification report needs 'ok' (bool) and 'mode' (quick/full)")
        record = _plain_json_copy({**report, "set_id": set_id}, "verification report")
        record.setdefault("checked_at", format_time(utc_now()))
        folder = self.root / VERIFICATION_DIR / set_id
        make_private_dirs(folder)
        stamp = format_time(utc_now()).replace("-", "").replace(":", "")
        path = folder / f"{stamp}.json"
        counter = 1
        while path.exists():
            path = folder / f"{stamp}-{counter}.json"
            counter += 1
        write_file_atomic(path, _json_bytes(record))
        log.info("backup set %s: %s verification %s recorded", set_id, record["mode"],
                 "passed" if record["ok"] else "FAILED")
        return path

    def verifications(self, set_id: str) -> list[dict[str, Any]]:
        """Stored verification reports of ``set_id``, oldest first (unreadable ones skipped, logged)."""
        folder = self.root / VERIFICATION_DIR / set_id
        if not folder.is_dir():
            return []
        records = []
        for path in sorted(folder.glob("*.json")):
            try:
                records.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as err:
                log.warning("skipping unreadable verification record %s: %s", path, err)
        return records

    # -- cleaning
    def clean_stale_partials(self, older_than_s: float) -> list[str]:
        """Remove partial sets that no live process writes (their lock is free), that hold
        no active lease (detached multi-process sets), and whose newest change is older than
        ``older_than_s`` seconds. Returns the removed set ids."""
        removed: list[str] = []
        if not self.partial_root.is_dir():
            return removed
        for folder in _set_folders(self.partial_root):
            if self._remove_if_stale(folder, older_than_s):
                removed.append(folder.name)
        for lock_file in self.partial_root.glob("*.lock"):  # lock files of partials that are gone
            if not (self.partial_root / lock_file.stem).exists():
                try:
                    with locks.acquire_file(lock_file, None, what="orphan lock"):
                        if not (self.partial_root / lock_file.stem).exists():
                            lock_file.unlink(missing_ok=True)
                except LifeboatError:
                    continue
        if removed:
            fsync_dir(self.partial_root)
        return removed

    def _remove_if_stale(self, folder: Path, older_than_s: float) -> bool:
        try:
            probe = locks.acquire_file(self.partial_root / f"{folder.name}.lock", None,
                                       what=f"partial set {folder.name}")
        except LifeboatError:
            log.info("partial set %s: a writer is active in it; kept", folder.name)
            return False
        with probe:
            if not folder.is_dir():
                return False
            if locks.lease_active(_read_json(folder / STATE_DIR / LEASE_FILE)):
                log.info("partial set %s: detached, its lease is active; kept", folder.name)
                return False
            if time.time() - _newest_mtime(folder) < older_than_s:
                return False
            info = _read_json(folder / STATE_DIR / SET_STATE_FILE) or {}
            shutil.rmtree(folder)
            (self.partial_root / f"{folder.name}.lock").unlink(missing_ok=True)
            self._end_lease(info, folder.name)
        log.info("partial set %s: removed (no writer, no lease)", folder.name)
        return True


def _catalog_order(info: SetInfo) -> tuple[datetime, str]:
    """Sort key: manifest start time (parsed, so any fraction compares right), then id."""
    return (parse_time(info.start) if info.start else parse_set_id(info.set_id)[1], info.set_id)


def _newest_mtime(folder: Path) -> float:
    """The newest mtime of ``folder``, its sub-folders and its state files."""
    times = [folder.stat().st_mtime]
    for path in folder.rglob("*"):
        try:
            times.append(path.stat().st_mtime)
        except FileNotFoundError:
            continue
    return max(times)


def _set_folders(base: Path) -> Iterator[Path]:
    """Folders in ``base`` named like a set id (nothing if ``base`` is missing)."""
    if not base.is_dir():
        return iter(())
    return (p for p in sorted(base.iterdir()) if SET_ID_RE.match(p.name) and p.is_dir())
