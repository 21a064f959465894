# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Chunked AES-256-GCM: the artifact file format (``LBA1``, format version 1).

Byte layout and construction are specified in ``docs/format-crypto.md``; this
module is the reference implementation. In short::

    header (68 bytes) | chunk 0 | chunk 1 | ... | chunk N-1 (final) | trailer (16 bytes)

* per-artifact keys: ``HKDF-SHA256(ikm=data_key, salt=header.salt, info=b"lifeboat/v1 artifact "
  + set_id + b"\\0" + artifact_path, L=64)`` -> 32-byte AES key || 32-byte header MAC key;
* each chunk is ``AES-256-GCM(key, nonce=nonce_prefix(8) || index(u32 BE), chunk, aad)``
  with ``aad = b"lifeboat/v1 chunk\\0" + set_id + b"\\0" + artifact_path + b"\\0" + index(u32 BE)
  + final(u8)``; every chunk but the last holds exactly ``chunk_size`` input bytes;
* the header is authenticated by a truncated HMAC-SHA256 and carries a key-check value
  so that a wrong data key is told apart from a damaged artifact.

Never reuse (key, nonce): every artifact gets a fresh random salt (so a fresh key) and
a fresh random nonce prefix, and the chunk counter never repeats inside an artifact.

This module does no I/O. :class:`ChunkSealer` encrypts, :class:`ChunkOpener` decrypts and
classifies failures into :class:`TamperedData`, :class:`ReorderedData`,
:class:`TruncatedData`, :class:`WrongKey`, :class:`UnknownFormatVersion`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    DependencyMissing,
    FormatError,
    ReorderedData,
    TamperedData,
    TruncatedData,
    UnknownFormatVersion,
    WrongKey,
)

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - only in the sanity import test
    HAS_CRYPTOGRAPHY = False

    class InvalidTag(Exception):  # type: ignore[no-redef]
        """Stand-in so ``except InvalidTag`` parses without cryptography."""

MAGIC = b"LBA1"
TRAILER_MAGIC = b"LBA1END\0"
FORMAT_VERSION = 1
ALGORITHM = "AES-256-GCM-CHUNKED-v1"
KDF = "HKDF-SHA256"
DATA_KEY_SIZE = 32
SALT_SIZE = 16
NONCE_PREFIX_SIZE = 8
KEY_CHECK_SIZE = 16
HEADER_MAC_SIZE = 16
TAG_SIZE = 16
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 1
MAX_CHUNK_SIZE = 64 << 20
MAX_CHUNKS = 1 << 32  # the u32 counter in the nonce; chunk indexes are 0 .. MAX_CHUNKS-1

# magic(4) version(u16) codec(u8) reserved(u8) chunk_size(u32) nonce_prefix(8) salt(16) key_check(16)
_HEADER_BODY = struct.Struct(">4sHBBI8s16s16s")
HEADER_SIZE = _HEADER_BODY.size + HEADER_MAC_SIZE  # 68
_TRAILER = struct.Struct(">8sQ")  # magic, number of chunks
TRAILER_SIZE: int = struct.calcsize(">8sQ")  # 16, the size of _TRAILER

_KDF_INFO_PREFIX = b"lifeboat/v1 artifact "
_AAD_PREFIX = b"lifeboat/v1 chunk\0"
_KEY_CHECK_LABEL = b"lifeboat/v1 key check"
_NEIGHBOURS = 8  # on a failure, try indexes i-8 .. i+8 to tell reordering from tampering

_FIX_OTHER_SET = "restore from another backup set (or an off-site copy) of this data"


def require_cryptography() -> None:
    """Raise :class:`DependencyMissing` when the cryptography library is not importable."""
    if not HAS_CRYPTOGRAPHY:
        raise DependencyMissing("the Python library 'cryptography' is needed for encryption",
                                hint="pip install cryptography (see requirements.txt)")


def _check_name(what: str, value: str) -> bytes:
    raw = value.encode("utf-8")
    if not raw or b"\0" in raw:
        raise ConfigError(f"{what} must be a non-empty string without NUL bytes, got {value!r}")
    return raw


def key_check_value(data_key: bytes) -> bytes:
    """16 bytes that identify ``data_key`` without revealing it: HMAC-SHA256(key, label)[:16]."""
    return hmac.new(data_key, _KEY_CHECK_LABEL, hashlib.sha256).digest()[:KEY_CHECK_SIZE]


def derive_artifact_keys(data_key: bytes, salt: bytes, set_id: str, artifact_path: str) -> tuple[bytes, bytes]:
    """Return (32-byte AES-GCM key, 32-byte header MAC key) of one artifact (HKDF-SHA256, L=64)."""
    require_cryptography()
    if len(data_key) != DATA_KEY_SIZE:
        raise ConfigError(f"a data key is {DATA_KEY_SIZE} bytes, got {len(data_key)}")
    info = _KDF_INFO_PREFIX + _check_name("set id", set_id) + b"\0" + _check_name("artifact path", artifact_path)
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=info).derive(data_key)
    return okm[:32], okm[32:]


def chunk_aad(set_id: bytes, artifact_path: bytes, index: int, final: bool) -> bytes:
    """The associated data of chunk ``index`` (set id and path as UTF-8 bytes)."""
    return _AAD_PREFIX + set_id + b"\0" + artifact_path + b"\0" + struct.pack(">IB", index, 1 if final else 0)


def chunk_nonce(prefix: bytes, index: int) -> bytes:
    """The 12-byte GCM nonce of chunk ``index``: prefix (8) || index (u32 BE)."""
    return prefix + struct.pack(">I", index)


@dataclass(frozen=True)
class Header:
    """The parsed fixed-size header of an artifact file."""

    version: int
    codec_id: int
    chunk_size: int
    nonce_prefix: bytes
    salt: bytes
    key_check: bytes
    mac: bytes

    def body(self) -> bytes:
        """The header bytes covered by the MAC (everything but the MAC itself)."""
        return _HEADER_BODY.pack(MAGIC, self.version, self.codec_id, 0, self.chunk_size,
                                 self.nonce_prefix, self.salt, self.key_check)

    def to_bytes(self) -> bytes:
        return self.body() + self.mac


def parse_header(raw: bytes) -> Header:
    """Parse (not authenticate) a header: FormatError for bad magic/short data,
    UnknownFormatVersion for a version other than 1, TamperedData for bad fields."""
    if len(raw) < 6:
        raise TruncatedData(f"the artifact is {len(raw)} bytes, shorter than its header",
                            hint=_FIX_OTHER_SET)
    if raw[:4] != MAGIC:
        raise FormatError("this file is not a Lifeboat artifact (bad magic bytes)",
                          hint="check the path; artifacts start with 'LBA1'")
    version = struct.unpack(">H", raw[4:6])[0]
    if version != FORMAT_VERSION:
        raise UnknownFormatVersion(f"artifact format version {version} is not readable by this Lifeboat "
                                   f"(it reads version {FORMAT_VERSION})",
                                   hint="use the Lifeboat version that wrote it, or a newer one")
    if len(raw) < HEADER_SIZE:
        raise TruncatedData(f"the artifact is {len(raw)} bytes, shorter than its {HEADER_SIZE}-byte header",
                            hint=_FIX_OTHER_SET)
    _magic, version, codec_id, reserved, chunk_size, prefix, salt, kcv = _HEADER_BODY.unpack(
        raw[:_HEADER_BODY.size])
    mac = raw[_HEADER_BODY.size:HEADER_SIZE]
    if reserved != 0 or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise TamperedData("the artifact header has invalid fields (reserved byte or chunk size)",
                           hint=_FIX_OTHER_SET)
    return Header(version, codec_id, chunk_size, prefix, salt, kcv, mac)


class ChunkSealer:
    """Encrypts the chunks of one new artifact; :attr:`header` is written first.

    Call :meth:`seal` for chunks 0, 1, ... in order (each exactly ``chunk_size`` bytes
    except the final one, 0..chunk_size bytes), ``final=True`` exactly once, last; then
    write :meth:`trailer`. Not thread-safe (one writer thread).
    """

    def __init__(self, data_key: bytes, set_id: str, artifact_path: str, codec_id: int,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ConfigError(f"chunk size {chunk_size} is out of range",
                              hint=f"use {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes (default 1 MiB)")
        salt = os.urandom(SALT_SIZE)
        enc_key, mac_key = derive_artifact_keys(data_key, salt, set_id, artifact_path)
        self._aead = AESGCM(enc_key)
        self._set_id = set_id.encode("utf-8")
        self._path = artifact_path.encode("utf-8")
        self.chunk_size = chunk_size
        unsigned = Header(FORMAT_VERSION, codec_id, chunk_size, os.urandom(NONCE_PREFIX_SIZE), salt,
                          key_check_value(data_key), b"")
        mac = hmac.new(mac_key, unsigned.body(), hashlib.sha256).digest()[:HEADER_MAC_SIZE]
        self.header = Header(unsigned.version, codec_id, chunk_size, unsigned.nonce_prefix, salt,
                             unsigned.key_check, mac)
        self.next_index = 0
        self.finished = False

    def header_bytes(self) -> bytes:
        return self.header.to_bytes()

    def seal(self, chunk: bytes, final: bool) -> bytes:
        """Encrypt the next chunk (any bytes-like object); returns ciphertext || 16-byte tag."""
        nonce, aad = self._next(len(chunk), final)
        return self._aead.encrypt(nonce, chunk, aad)

    def seal_into(self, chunk: bytes, final: bool, out: bytearray) -> memoryview:
        """Like :meth:`seal`, but write ciphertext || tag into ``out`` (at least
        ``len(chunk) + TAG_SIZE`` bytes, reused by the caller) and return a view of the
        written ``len(chunk) + TAG_SIZE`` bytes; it is overwritten by the next call."""
        nonce, aad = self._next(len(chunk), final)
        view = memoryview(out)[:len(chunk) + TAG_SIZE]
        if hasattr(self._aead, "encrypt_into"):  # cryptography >= 45
            self._aead.encrypt_into(nonce, chunk, aad, view)
        else:  # pragma: no cover - older cryptography
            view[:] = self._aead.encrypt(nonce, chunk, aad)
        return view

    def _next(self, size: int, final: bool) -> tuple[bytes, bytes]:
        """Check the next chunk's size and order; count it; return its (nonce, aad)."""
        if self.finished:
            raise ValueError("the final chunk was already sealed")
        if size > self.chunk_size or (not final and size != self.chunk_size):
            raise ValueError(f"chunk of {size} bytes breaks the chunk size {self.chunk_size}")
        index = self.next_index
        if index >= MAX_CHUNKS:
            raise ConfigError("artifact too large for its chunk size (more than 2**32 chunks)",
                              hint="use a larger chunk size")
        self.next_index += 1
        self.finished = final
        return (chunk_nonce(self.header.nonce_prefix, index),
                chunk_aad(self._set_id, self._path, index, final))

    def trailer(self) -> bytes:
        """The 16-byte end marker: magic + number of chunks (u64 BE)."""
        if not self.finished:
            raise ValueError("trailer before the final chunk")
        return _TRAILER.pack(TRAILER_MAGIC, self.next_index)


class ChunkOpener:
    """Authenticates the header and decrypts the chunks of one artifact, in order.

    Create with the raw header bytes (at least :data:`HEADER_SIZE`); the constructor
    raises FormatError / UnknownFormatVersion / WrongKey / TamperedData / TruncatedData.
    Then call :meth:`open` for each chunk in file order, telling whether the file ends
    right after it (``at_end``), and :meth:`check_trailer` at the end.
    """

    def __init__(self, header_raw: bytes, data_key: bytes, set_id: str, artifact_path: str) -> None:
        require_cryptography()
        self.header = parse_header(header_raw)
        if len(data_key) != DATA_KEY_SIZE:
            raise ConfigError(f"a data key is {DATA_KEY_SIZE} bytes, got {len(data_key)}")
        if not hmac.compare_digest(key_check_value(data_key), self.header.key_check):
            raise WrongKey(f"the data key does not fit artifact {artifact_path!r} (key check failed): the key "
                           "belongs to another backup set, or the artifact header is damaged",
                           hint="unwrap the key from the manifest of the set this artifact belongs to; if that is "
                                "the right one, the artifact is damaged: " + _FIX_OTHER_SET)
        enc_key, mac_key = derive_artifact_keys(data_key, self.header.salt, set_id, artifact_path)
        expected = hmac.new(mac_key, self.header.body(), hashlib.sha256).digest()[:HEADER_MAC_SIZE]
        if not hmac.compare_digest(expected, self.header.mac):
            raise TamperedData(f"the header of artifact {artifact_path!r} fails authentication for set "
                               f"{set_id!r}: it was tampered with, or it is another artifact (renamed or moved)",
                               hint=_FIX_OTHER_SET)
        self._aead = AESGCM(enc_key)
        self._set_id = set_id.encode("utf-8")
        self._path = artifact_path.encode("utf-8")
        self.artifact_path = artifact_path
        self.chunk_size = self.header.chunk_size
        self.record_size = self.chunk_size + TAG_SIZE
        self.next_index = 0
        self.finished = False

    def _try(self, record: bytes, index: int, final: bool) -> Optional[bytes]:
        if not 0 <= index < MAX_CHUNKS:
            return None
        try:
            return self._aead.decrypt(chunk_nonce(self.header.nonce_prefix, index), record,
                                      chunk_aad(self._set_id, self._path, index, final))
        except InvalidTag:
            return None

    def open(self, record: bytes, at_end: bool) -> bytes:
        """Decrypt the next chunk record (ciphertext || tag) and return its plaintext.

        ``at_end``: no chunk data follows this record in the file (only the trailer).
        Raises TruncatedData (the file ends after a non-final chunk, or a record is
        cut short), ReorderedData (this is another chunk of the same artifact),
        TamperedData (data after the final chunk, or authentication fails).
        """
        index = self.next_index
        if self.finished:
            raise TamperedData(f"artifact {self.artifact_path!r} has data after its final chunk",
                               hint=_FIX_OTHER_SET)
        if len(record) < TAG_SIZE or (not at_end and len(record) != self.record_size):
            raise TruncatedData(f"chunk {index} of artifact {self.artifact_path!r} is cut short "
                                f"({len(record)} bytes)", hint=_FIX_OTHER_SET)
        plain = self._try(record, index, at_end)
        if plain is not None:
            self.next_index += 1
            self.finished = at_end
            return plain
        raise self._classify_failure(record, index, at_end)

    def _classify_failure(self, record: bytes, index: int, at_end: bool) -> Exception:
        name = self.artifact_path
        if self._try(record, index, not at_end) is not None:
            if at_end:
                return TruncatedData(f"artifact {name!r} ends after chunk {index}, which is not its final chunk: "
                                     "the file is truncated", hint=_FIX_OTHER_SET)
            return TamperedData(f"artifact {name!r}: chunk {index} is marked final but more data follows "
                                "(chunks dropped after it, or data appended)", hint=_FIX_OTHER_SET)
        for other in self._neighbours(index):
            for final in (False, True):
                if self._try(record, other, final) is not None:
                    what = "duplicated" if other < index else "reordered, or chunks before it were dropped"
                    return ReorderedData(f"artifact {name!r}: position {index} holds chunk {other} ({what})",
                                         hint=_FIX_OTHER_SET)
        return TamperedData(f"chunk {index} of artifact {name!r} failed authentication: tampered, "
                            "reordered, or from another artifact or set", hint=_FIX_OTHER_SET)

    @staticmethod
    def _neighbours(index: int) -> list[int]:
        out = []
        for d in range(1, _NEIGHBOURS + 1):
            out.extend((index - d, index + d))
        return [i for i in out if 0 <= i < MAX_CHUNKS]

    def check_tail(self, tail: bytes) -> None:
        """Explain a file whose last 16 bytes are not an end marker: TamperedData when an end
        marker sits earlier in ``tail`` (the last bytes read) with data after it, else TruncatedData."""
        marker = tail.rfind(TRAILER_MAGIC)
        if marker >= 0 and marker + TRAILER_SIZE < len(tail):
            extra = len(tail) - marker - TRAILER_SIZE
            raise TamperedData(f"artifact {self.artifact_path!r} has {extra} bytes after its end marker "
                               "(data appended)", hint=_FIX_OTHER_SET)
        self.check_trailer(tail[-TRAILER_SIZE:] if len(tail) >= TRAILER_SIZE else tail)

    def check_trailer(self, raw: bytes) -> None:
        """Check the end marker after the final chunk (TruncatedData / TamperedData)."""
        if len(raw) != TRAILER_SIZE or raw[:8] != TRAILER_MAGIC:
            raise TruncatedData(f"artifact {self.artifact_path!r} does not end with its end marker: "
                                "the file is truncated (or its last bytes are damaged)", hint=_FIX_OTHER_SET)
        count = _TRAILER.unpack(raw)[1]
        if not self.finished or count != self.next_index:
            raise TamperedData(f"artifact {self.artifact_path!r}: the end marker counts {count} chunks, "
                               f"the file holds {self.next_index}", hint=_FIX_OTHER_SET)


def looks_like_trailer(raw: bytes) -> bool:
    """True when ``raw`` (16 bytes) starts with the end-marker magic."""
    return len(raw) == TRAILER_SIZE and raw[:8] == TRAILER_MAGIC
