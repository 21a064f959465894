# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Key-encryption keys (KEKs) and the per-set data key (envelope encryption).

Every backup set has a fresh random 32-byte *data key*; artifacts are encrypted
with keys derived from it (see :mod:`crypto`). The data key itself is stored in the
manifest only *wrapped* under one or more KEKs:

* :class:`FileKEK` -- a key file of exactly 32 raw random bytes, mode 0600 or 0400.
  Its ``key_id`` is the hex of the first 8 bytes of SHA-256(key). Wrapping is
  AES-256-GCM: ``wrapped = nonce(12) || ciphertext(32) || tag(16)`` with
  ``aad = b"lifeboat/v1 wrap " + key_id (ASCII)``.
* :class:`TransitKEK` -- Vault/OpenBao transit: the data key (base64) is sent to
  ``<mount>/encrypt/<key>``; ``wrapped`` is the returned ``vault:vN:...`` string (ASCII).
  The KEK never leaves Vault.

A :class:`KeyRing` holds a primary KEK and escrow KEKs; a new data key is wrapped
under every one of them, so any single KEK can restore (break-glass with the escrow key).
Wraps are dicts ``{"kind", "key_id", "algorithm", "wrapped": base64}`` (manifest format).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.util
import os
import stat
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailure,
    FormatError,
    InsecureKeyFile,
    KeyUnavailable,
    PermissionDenied,
    WrongKey,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import write_all

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - only in the sanity import test
    HAS_CRYPTOGRAPHY = False

    class InvalidTag(Exception):  # type: ignore[no-redef]
        """Stand-in so ``except InvalidTag`` parses without cryptography."""

# hvac (and requests) cost ~0.1 s to import: loaded only when a transit KEK is made
HAS_HVAC = importlib.util.find_spec("hvac") is not None

from ansible_collections.lifeboat.dr.plugins.module_utils.format.crypto import require_cryptography

KEY_SIZE = 32
KEY_ID_BYTES = 8
FILE_WRAP_ALGORITHM = "AES-256-GCM"
TRANSIT_WRAP_ALGORITHM = "vault-transit"
_WRAP_AAD_PREFIX = b"lifeboat/v1 wrap "
_NONCE_SIZE = 12
_ALLOWED_MODES = (0o600, 0o400)


def key_id_of(key: bytes) -> str:
    """The public id of a 32-byte key: hex of the first 8 bytes of its SHA-256 (16 hex chars)."""
    return hashlib.sha256(key).digest()[:KEY_ID_BYTES].hex()


def _require_hvac() -> tuple[Any, Any]:
    """Import and return ``(hvac, requests.exceptions)``; ConfigError when hvac is missing."""
    if not HAS_HVAC:
        raise ConfigError("the Python library 'hvac' is needed for a Vault transit key",
                          hint="pip install hvac (see requirements.txt), or use a key file")
    import hvac
    import hvac.exceptions
    import requests.exceptions

    return hvac, requests.exceptions


class KEK(Protocol):
    """A key-encryption key: wraps and unwraps 32-byte data keys."""

    kind: str
    key_id: str
    algorithm: str

    def wrap(self, data_key: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes) -> bytes: ...


def create_key_file(path: Union[str, Path]) -> str:
    """Create a new key file of 32 random bytes with mode 0600; return its key id.

    Refuses (ConfigError) to overwrite an existing file. The file is written with
    O_EXCL and fsynced before this returns.
    """
    path = Path(path)
    key = os.urandom(KEY_SIZE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"key file {path} already exists; refusing to overwrite a key",
                          hint="choose another path (remove an old key only after rotating every set off it)") \
            from None
    except OSError as exc:
        raise ConfigError(f"cannot create key file {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # the umask may have narrowed it further; make it exact
        write_all(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key_id_of(key)


class FileKEK:
    """A KEK held in a local key file (32 raw bytes). ``str()`` never shows the key."""

    kind = "file"
    algorithm = FILE_WRAP_ALGORITHM

    def __init__(self, key: bytes, source: Optional[str] = None) -> None:
        if len(key) != KEY_SIZE:
            raise InsecureKeyFile(f"a key-encryption key is {KEY_SIZE} bytes, got {len(key)}")
        self._key = bytes(key)
        self.key_id = key_id_of(self._key)
        self.source = source

    def __repr__(self) -> str:
        return f"FileKEK(key_id={self.key_id!r}, source={self.source!r})"

    @classmethod
    def load(cls, path: Union[str, Path]) -> FileKEK:
        """Load a key file: KeyUnavailable if missing/unreadable, InsecureKeyFile if its
        mode is not 0600/0400 or its size is not exactly 32 bytes."""
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise KeyUnavailable(f"key file {path} does not exist",
                                 hint="give the right path, or create a key with `lifeboat key create FILE`") from None
        except OSError as exc:
            raise KeyUnavailable(f"key file {path} cannot be read: {exc.strerror}",
                                 hint="run as the key file's owner") from exc
        try:
            info = os.fstat(fd)
            mode = stat.S_IMODE(info.st_mode)
            if not stat.S_ISREG(info.st_mode):
                raise InsecureKeyFile(f"key file {path} is not a regular file")
            if mode not in _ALLOWED_MODES:
                raise InsecureKeyFile(f"key file {path} has mode {mode:04o}; a key file must be readable by its "
                                      "owner only (0600 or 0400)", hint=f"chmod 600 {path}")
            if info.st_size != KEY_SIZE:
                raise InsecureKeyFile(
                    f"key file {path} is {info.st_size} bytes; a Lifeboat key file holds exactly {KEY_SIZE} raw "
                    "random bytes (not hex or base64 text)",
                    hint="create one with `lifeboat key create FILE` (or `head -c 32 /dev/urandom > FILE; "
                         "chmod 600 FILE`)")
            key = os.read(fd, KEY_SIZE + 1)
        finally:
            os.close(fd)
        if len(key) != KEY_SIZE:
            raise InsecureKeyFile(f"key file {path} changed while it was read", hint="retry")
        return cls(key, source=str(path))

    def _aad(self) -> bytes:
        return _WRAP_AAD_PREFIX + self.key_id.encode("ascii")

    def wrap(self, data_key: bytes) -> bytes:
        """nonce(12) || AES-256-GCM(kek, nonce, data_key, aad=b"lifeboat/v1 wrap "+key_id)."""
        require_cryptography()
        nonce = os.urandom(_NONCE_SIZE)
        return nonce + AESGCM(self._key).encrypt(nonce, data_key, self._aad())

    def unwrap(self, wrapped: bytes) -> bytes:
        """Inverse of :meth:`wrap`; WrongKey when authentication fails."""
        require_cryptography()
        try:
            return AESGCM(self._key).decrypt(wrapped[:_NONCE_SIZE], wrapped[_NONCE_SIZE:], self._aad())
        except (InvalidTag, ValueError):
            raise WrongKey(f"key file {self.source or self.key_id} (key id {self.key_id}) does not unwrap this data "
                           "key: the wrapped key in the manifest was altered or damaged",
                           hint="use the escrow key, or restore the manifest from a copy") from None


class TransitKEK:
    """A KEK that stays in Vault/OpenBao: wrap/unwrap through the transit engine.

    ``key_id`` is ``"transit:<mount>/<key_name>"``. Errors: ConnectionFailure (Vault
    unreachable), AuthenticationFailed (token refused), PermissionDenied (policy),
    KeyUnavailable (no such transit key), WrongKey (Vault refuses to decrypt the wrap).
    """

    kind = "transit"
    algorithm = TRANSIT_WRAP_ALGORITHM

    def __init__(self, url: str, token: str, mount: str = "transit", key_name: str = "lifeboat",
                 ca_cert: Optional[str] = None, verify: bool = True, timeout: float = 30.0) -> None:
        hvac, _requests = _require_hvac()
        if not url or not token or not key_name:
            raise ConfigError("a transit KEK needs url, token and key name",
                              hint="set transit_url, transit_token and transit_key")
        self.url = url
        self.mount = mount.strip("/")
        self.key_name = key_name
        self.key_id = f"transit:{self.mount}/{self.key_name}"
        self._client = hvac.Client(url=url, token=token, verify=ca_cert if ca_cert else verify, timeout=timeout)

    def __repr__(self) -> str:
        return f"TransitKEK(url={self.url!r}, key_id={self.key_id!r})"

    def _call(self, action: str, func: Any, **kwargs: Any) -> dict:
        where = f"transit key {self.key_name!r} at {self.url} (mount {self.mount!r})"
        hvac, requests_exceptions = _require_hvac()
        try:
            return func(name=self.key_name, mount_point=self.mount, **kwargs)
        except requests_exceptions.RequestException as exc:
            raise ConnectionFailure(f"cannot reach Vault to {action} with {where}: {type(exc).__name__}",
                                    hint="check transit_url and that Vault is up and unsealed") from None
        except hvac.exceptions.Unauthorized:
            raise AuthenticationFailed(f"Vault refused the token while trying to {action} with {where}",
                                       hint="give a valid, unexpired transit_token") from None
        except hvac.exceptions.Forbidden:
            if not self._token_valid():  # Vault answers 403 for an unknown/expired token too
                raise AuthenticationFailed(f"Vault refused the token (invalid or expired) while trying to {action} "
                                           f"with {where}", hint="give a valid, unexpired transit_token") from None
            raise PermissionDenied(f"the token may not {action} with {where}",
                                   hint=f"grant 'update' on {self.mount}/{action}/{self.key_name}") from None
        except hvac.exceptions.VaultDown:
            raise ConnectionFailure(f"Vault is sealed or down; cannot {action} with {where}",
                                    hint="unseal Vault") from None
        except hvac.exceptions.InvalidPath:
            raise KeyUnavailable(f"{where} does not exist", hint="create it, or check transit_mount/transit_key") \
                from None
        except hvac.exceptions.InvalidRequest as exc:
            if action == "decrypt":
                raise WrongKey(f"Vault could not decrypt the data key with {where}: the wrap was made with "
                               "another transit key or Vault, or was altered",
                               hint="use the Vault/transit key that wrote the set, or the escrow key file") from None
            raise KeyUnavailable(f"Vault refused to {action} with {where}: {'; '.join(exc.errors or [])}",
                                 hint="check that the transit key exists and allows encryption") from None

    def _token_valid(self) -> bool:
        try:
            return bool(self._client.is_authenticated())
        except Exception:  # noqa: BLE001 - only used to choose the error class
            return True

    def wrap(self, data_key: bytes) -> bytes:
        """Return the transit ciphertext (``vault:vN:...``) of ``data_key`` as ASCII bytes."""
        resp = self._call("encrypt", self._client.secrets.transit.encrypt_data,
                          plaintext=base64.b64encode(data_key).decode("ascii"))
        return resp["data"]["ciphertext"].encode("ascii")

    def unwrap(self, wrapped: bytes) -> bytes:
        """Decrypt a transit ciphertext back to the 32-byte data key."""
        resp = self._call("decrypt", self._client.secrets.transit.decrypt_data,
                          ciphertext=wrapped.decode("ascii", errors="replace"))
        key = base64.b64decode(resp["data"]["plaintext"])
        if len(key) != KEY_SIZE:
            raise WrongKey(f"transit key {self.key_name!r} decrypted the wrap to {len(key)} bytes, not a data key",
                           hint="the wrap does not hold a Lifeboat data key")
        return key


def _wrap_entry(kek: KEK, data_key: bytes) -> dict[str, Any]:
    return {"kind": kek.kind, "key_id": kek.key_id, "algorithm": kek.algorithm,
            "wrapped": base64.b64encode(kek.wrap(data_key)).decode("ascii")}


def _decode_wrapped(entry: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode(entry["wrapped"], validate=True)
    except (KeyError, TypeError, binascii.Error):
        raise FormatError(f"wrapped key entry for {entry.get('key_id')!r} is not valid base64",
                          hint="the manifest is damaged") from None


class KeyRing:
    """The KEKs available to this run: one primary plus escrow KEKs.

    New data keys are wrapped under every KEK; unwrapping uses any KEK whose
    ``key_id`` appears in the wraps.
    """

    def __init__(self, primary: KEK, escrow: Optional[Iterable[KEK]] = None) -> None:
        self.primary = primary
        self.escrow = list(escrow or [])
        ids = [k.key_id for k in self.keks]
        if len(set(ids)) != len(ids):
            raise ConfigError("the same key was given twice (primary and escrow must differ)",
                              hint="use a separate escrow key file")

    @property
    def keks(self) -> list[KEK]:
        return [self.primary, *self.escrow]

    @property
    def key_ids(self) -> list[str]:
        return [k.key_id for k in self.keks]

    @property
    def has_transit(self) -> bool:
        return any(k.kind == "transit" for k in self.keks)

    def new_data_key(self) -> tuple[bytes, list[dict[str, Any]]]:
        """A fresh random 32-byte data key and its wraps, one per KEK (primary first)."""
        data_key = os.urandom(KEY_SIZE)
        return data_key, self.wrap(data_key)

    def wrap(self, data_key: bytes) -> list[dict[str, Any]]:
        """Wrap ``data_key`` under every KEK of the ring."""
        return [_wrap_entry(k, data_key) for k in self.keks]

    def unwrap(self, wraps: list[dict[str, Any]]) -> bytes:
        """The data key, from the first wrap one of our KEKs can open.

        KeyUnavailable when no wrap is for a KEK we have (the message lists the key ids the
        set needs and the ones given); WrongKey when every matching KEK fails.
        """
        by_id = {k.key_id: k for k in self.keks}
        matching = [(w, by_id[w.get("key_id")]) for w in wraps if w.get("key_id") in by_id]
        if not matching:
            needed = ", ".join(str(w.get("key_id")) for w in wraps) or "(none recorded)"
            raise KeyUnavailable(f"none of the given keys can unwrap this set's data key: it needs one of "
                                 f"[{needed}], given [{', '.join(self.key_ids)}]",
                                 hint="give the key file (or escrow key file / transit key) with one of the needed "
                                      "key ids")
        # fixed order: local key files before network calls
        matching.sort(key=lambda pair: pair[1].kind != "file")
        failures: list[Exception] = []
        for entry, kek in matching:
            try:
                return kek.unwrap(_decode_wrapped(entry))
            except WrongKey as exc:
                failures.append(exc)
        raise failures[-1]

    def rewrap(self, wraps: list[dict[str, Any]], new_kek: KEK,
               retire: Optional[Iterable[str]] = None) -> list[dict[str, Any]]:
        """Key rotation without touching data: unwrap the data key with this ring, wrap it
        under ``new_kek`` and return the new wrap list.

        The result starts with the wrap under ``new_kek``, followed by the old wraps except
        those whose key id is in ``retire`` (default: this ring's primary, i.e. the KEK being
        rotated out) or equals ``new_kek.key_id``.
        """
        data_key = self.unwrap(wraps)
        retired = set(retire) if retire is not None else {self.primary.key_id}
        retired.add(new_kek.key_id)
        kept = [dict(w) for w in wraps if w.get("key_id") not in retired]
        return [_wrap_entry(new_kek, data_key), *kept]

    @classmethod
    def from_options(cls, key_file: Optional[Union[str, Path]] = None,
                     escrow_key_file: Optional[Union[str, Path, list]] = None,
                     transit: Optional[dict[str, Any]] = None) -> KeyRing:
        """Build the ring from module/CLI options.

        ``transit``: ``{"url", "token", "mount"="transit", "key_name" (or "key"), "ca_cert", "verify"}``.
        Primary: the key file if given, else the transit key, else (break-glass) the first
        escrow key file. ConfigError when no KEK at all is given.
        """
        keks: list[KEK] = []
        if key_file:
            keks.append(FileKEK.load(key_file))
        if transit:
            keks.append(TransitKEK(url=transit.get("url") or "", token=transit.get("token") or "",
                                   mount=transit.get("mount") or "transit",
                                   key_name=transit.get("key_name") or transit.get("key") or "",
                                   ca_cert=transit.get("ca_cert"), verify=transit.get("verify", True)))
        escrow_files = escrow_key_file if isinstance(escrow_key_file, list) else [escrow_key_file]
        keks.extend(FileKEK.load(p) for p in escrow_files if p)
        if not keks:
            raise ConfigError("no key-encryption key given",
                              hint="set key_file (32-byte key file, mode 0600) or transit_url/transit_key")
        return cls(keks[0], keks[1:])
