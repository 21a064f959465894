# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis RDB files: an exact structural walk and the CRC64 trailer check.

:func:`check_rdb` reads an RDB stream once, front to back, in bounded memory
and returns an :class:`RdbReport`; it never raises for bad *data* (only for I/O
errors of the reader). The walk follows ``rdbLoadRio`` of Redis 7.0 (RDB
versions 1..10): the ``REDIS`` magic and 4-digit version, every opcode (AUX,
MODULE_AUX, FUNCTION2, SELECTDB, RESIZEDB, EXPIRETIME, EXPIRETIME_MS, FREQ,
IDLE, EOF) and every value type up to ``RDB_TYPE_STREAM_LISTPACKS_2`` (19).
String payloads and encoded blobs (ziplist, listpack, intset, zipmap, LZF) are
skipped by their length encoding: their inner bytes are covered by the CRC64
(and by a full verify, which loads the file into a scratch redis-server); every
length, opcode and type byte is checked exactly. The walk also counts keys and
expiry times per database.

The trailer is CRC-64-Jones as Redis computes it (polynomial
``0xad93d23594c935a9``, reflected, initial value 0, no final xor) over every
byte before the 8-byte little-endian checksum; a stored checksum of 0 means the
file was written with ``rdbchecksum no`` and is reported as not checked, as
Redis does. Bytes after the checksum are counted (``trailing_bytes``) but, as
for ``redis-check-rdb``, do not make the file invalid.

When numpy is importable the CRC runs over many lanes at once and the lanes are
combined with GF(2) shift operators; otherwise a table-driven pure-Python loop
computes the same value (slower, about 10 MB/s).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Optional

try:
    import numpy as np

    HAS_NUMPY = True
except ImportError:  # pragma: no cover - exercised by the sanity import test
    np = None
    HAS_NUMPY = False

# ---------------------------------------------------------------------------------------------
# CRC-64-Jones, as src/crc64.c of Redis
# ---------------------------------------------------------------------------------------------

CRC64_POLY = 0xAD93D23594C935A9
_REFLECTED_POLY = int(f"{CRC64_POLY:064b}"[::-1], 2)
_MASK64 = (1 << 64) - 1


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _i in range(8):
            crc = (crc >> 1) ^ _REFLECTED_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()


def _crc64_py(crc: int, data: bytes) -> int:
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


# A 64x64 GF(2) matrix is a list of 64 ints: column i is the image of bit i.
def _mat_apply(mat: list[int], vec: int) -> int:
    out = 0
    i = 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _mat_mul(a: list[int], b: list[int]) -> list[int]:
    return [_mat_apply(a, col) for col in b]


def _zero_byte_matrix() -> list[int]:
    """The operator "feed one zero byte" on the CRC register (linear since init=0, no xorout)."""
    return [_TABLE[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(64)]


_ZERO_POW2: list[list[int]] = [_zero_byte_matrix()]  # _ZERO_POW2[k] feeds 2**k zero bytes


def _zeros_matrix(nbytes: int) -> list[int]:
    """Operator feeding ``nbytes`` zero bytes (square-and-multiply over cached powers of two)."""
    result: Optional[list[int]] = None
    k = 0
    while nbytes:
        while len(_ZERO_POW2) <= k:
            last = _ZERO_POW2[-1]
            _ZERO_POW2.append(_mat_mul(last, last))
        if nbytes & 1:
            result = _ZERO_POW2[k] if result is None else _mat_mul(_ZERO_POW2[k], result)
        nbytes >>= 1
        k += 1
    return result if result is not None else [1 << i for i in range(64)]


def crc64_combine(crc_a: int, crc_b: int, len_b: int) -> int:
    """CRC64 of ``A || B`` from ``crc64(A)``, ``crc64(B)`` and ``len(B)`` in bytes."""
    return _mat_apply(_zeros_matrix(len_b), crc_a) ^ crc_b


_NP_MIN = 1 << 16  # below this the pure-Python loop is used
_NP_MAX_BLOCK = 1 << 22
_NP_LANES = 1 << 14  # lanes computed side by side (tuned: fits the CPU caches)
_np_cache: dict = {}


def _np_shift_tables(nbytes: int):
    """8x256 tables applying "feed ``nbytes`` zero bytes" to uint64 registers, one byte at a time."""
    key = ("shift", nbytes)
    if key not in _np_cache:
        mat = _zeros_matrix(nbytes)
        tabs = [[0] * 256 for _i in range(8)]
        for j in range(8):
            row = tabs[j]
            for v in range(1, 256):
                low = v & -v
                row[v] = row[v ^ low] ^ mat[8 * j + low.bit_length() - 1]
        _np_cache[key] = np.array(tabs, dtype=np.uint64)
    return _np_cache[key]


def _np_apply_shift(tabs, vec):
    k = vec.shape[0]
    as_bytes = vec.view(np.uint8).reshape(k, 8)  # little-endian: byte j = bits 8j..8j+7
    out = tabs[0][as_bytes[:, 0]]
    for j in range(1, 8):
        out ^= tabs[j][as_bytes[:, j]]
    return out


def _np_slice8_tables():
    """Slice-by-8 tables: row k maps a byte to its CRC contribution followed by k zero bytes."""
    if "slice8" not in _np_cache:
        rows = [_TABLE]
        for _i in range(7):
            prev = rows[-1]
            rows.append([(v >> 8) ^ _TABLE[v & 0xFF] for v in prev])
        _np_cache["slice8"] = [np.array(r, dtype=np.uint64) for r in rows]
    return _np_cache["slice8"]


def _crc64_np_block(data) -> int:
    """CRC64 (from 0) of ``data``, a power-of-two length >= _NP_MIN: contiguous lanes hashed
    side by side 8 bytes at a time (slice-by-8), then combined pairwise with shift operators."""
    lanes = min(_NP_LANES, len(data) // 64)
    lane = len(data) // lanes
    rows = _np_slice8_tables()
    words = np.frombuffer(data, dtype="<u8").reshape(lanes, lane // 8).T.copy()
    crc = np.zeros(lanes, dtype=np.uint64)
    for i in range(lane // 8):
        crc ^= words[i]
        as_bytes = crc.view(np.uint8).reshape(lanes, 8)  # byte j of each register (little-endian)
        out = rows[7][as_bytes[:, 0]]
        for j in range(1, 8):
            out ^= rows[7 - j][as_bytes[:, j]]
        crc = out
    seg = lane
    while crc.shape[0] > 1:
        crc = _np_apply_shift(_np_shift_tables(seg), np.ascontiguousarray(crc[0::2])) ^ crc[1::2]
        seg *= 2
    return int(crc[0])


def crc64(crc: int, data) -> int:
    """Continue CRC-64-Jones ``crc`` over ``data`` (start with 0); same value as Redis's crc64()."""
    n = len(data)
    if not HAS_NUMPY or n < _NP_MIN:
        return _crc64_py(crc, data)
    view = memoryview(data)
    pos = 0
    block = _NP_MAX_BLOCK
    while n - pos >= _NP_MIN:
        while block > n - pos:
            block >>= 1
        crc = crc64_combine(crc, _crc64_np_block(view[pos:pos + block]), block)
        pos += block
    return _crc64_py(crc, view[pos:])


# ---------------------------------------------------------------------------------------------
# RDB format constants (src/rdb.h of Redis 7.0)
# ---------------------------------------------------------------------------------------------

RDB_MAX_VERSION = 10
RDB_CHECKSUM_MIN_VERSION = 5

OP_FUNCTION_PRE_GA = 0xF6
OP_FUNCTION2 = 0xF5
OP_MODULE_AUX = 0xF7
OP_IDLE = 0xF8
OP_FREQ = 0xF9
OP_AUX = 0xFA
OP_RESIZEDB = 0xFB
OP_EXPIRETIME_MS = 0xFC
OP_EXPIRETIME = 0xFD
OP_SELECTDB = 0xFE
OP_EOF = 0xFF

TYPE_NAMES = {
    0: "string", 1: "list", 2: "set", 3: "zset", 4: "hash", 5: "zset-v2", 6: "module-pre-ga",
    7: "module-v2", 9: "hash-zipmap", 10: "list-ziplist", 11: "set-intset", 12: "zset-ziplist",
    13: "hash-ziplist", 14: "quicklist", 15: "stream", 16: "hash-listpack", 17: "zset-listpack",
    18: "quicklist-v2", 19: "stream-v2",
}
_BLOB_TYPES = {9, 10, 11, 12, 13, 16, 17}  # one encoded string holds the whole value
_MODULE_OPCODE = {"eof": 0, "sint": 1, "uint": 2, "float": 3, "double": 4, "string": 5}


class _Corrupt(Exception):
    """Internal: the walk found damage at ``offset``."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


class _Truncated(_Corrupt):
    pass


@dataclass
class DbStats:
    """Per-database counts from the walk: keys, keys with an expiry, RESIZEDB hints."""

    keys: int = 0
    expires: int = 0
    resize_keys: Optional[int] = None
    resize_expires: Optional[int] = None


@dataclass
class RdbReport:
    """What :func:`check_rdb` found.

    ``ok`` is True when the structure is intact and the CRC64 matches (or was
    disabled when written: ``crc_checked`` False). On failure ``error`` says what
    is wrong and ``error_offset`` is the byte offset (0-based, from the start of
    the RDB) where the damage was detected; for a checksum mismatch that is the
    offset of the checksum, and the damage lies somewhere before it.
    ``expiring`` lists (db, unix ms) of keys whose expiry is at or before
    ``expiring_horizon_ms`` -- used to tell which keys a later load may drop.
    """

    ok: bool = False
    version: Optional[int] = None
    size: int = 0
    error: Optional[str] = None
    error_offset: Optional[int] = None
    aux: dict = field(default_factory=dict)
    dbs: dict = field(default_factory=dict)
    functions: int = 0
    module_values: int = 0
    crc_stored: Optional[int] = None
    crc_computed: Optional[int] = None
    crc_checked: bool = False
    eof_offset: Optional[int] = None
    trailing_bytes: int = 0
    expiring: list = field(default_factory=list)
    expiring_horizon_ms: Optional[int] = None

    @property
    def keys_per_db(self) -> dict:
        """``{db_number: key_count}`` for every database holding at least one key."""
        return {db: s.keys for db, s in sorted(self.dbs.items()) if s.keys}

    @property
    def total_keys(self) -> int:
        return sum(s.keys for s in self.dbs.values())

    def expected_keys_after_load(self, now_ms: int) -> dict:
        """Per-db key counts a server loading this file at ``now_ms`` keeps (it drops expired keys).

        Exact only for ``now_ms <= expiring_horizon_ms``.
        """
        counts = dict(self.keys_per_db)
        for db, when in self.expiring:
            if when <= now_ms:
                counts[db] -= 1
        return {db: n for db, n in counts.items() if n}

    def to_dict(self) -> dict:
        """JSON-friendly summary (no key names or values)."""
        return {
            "ok": self.ok, "version": self.version, "size": self.size, "error": self.error,
            "error_offset": self.error_offset,
            "aux": {k: v for k, v in self.aux.items() if k in _PUBLIC_AUX},
            "keys_per_db": {str(db): n for db, n in self.keys_per_db.items()},
            "expires_per_db": {str(db): s.expires for db, s in sorted(self.dbs.items()) if s.keys},
            "total_keys": self.total_keys, "functions": self.functions,
            "crc_stored": None if self.crc_stored is None else f"{self.crc_stored:016x}",
            "crc_computed": None if self.crc_computed is None else f"{self.crc_computed:016x}",
            "crc_checked": self.crc_checked, "trailing_bytes": self.trailing_bytes,
        }


_PUBLIC_AUX = {"redis-ver", "redis-bits", "ctime", "used-mem", "aof-base", "repl-stream-db", "repl-offset"}


class _Source:
    """Buffered pull reader that tracks the absolute offset and feeds the CRC and a tee.

    ``on_chunk(bytes)`` (if given) receives every chunk read from ``reader`` in order,
    before the walk looks at it -- so a backup can stream the RDB to its artifact
    while checking it.
    """

    def __init__(self, reader: BinaryIO, on_chunk: Optional[Callable[[bytes], object]],
                 chunk_size: int) -> None:
        self.reader = reader
        self.on_chunk = on_chunk
        self.chunk_size = chunk_size
        self.buf = b""
        self.pos = 0  # position in buf
        self.base = 0  # absolute offset of buf[0]
        self.crc = 0
        self.crc_pos = 0  # position in buf up to which crc is computed
        self.crc_on = True
        self.crc_pending = b""  # bytes consumed but not yet hashed (keeps the fast path block-aligned)
        self.eof = False

    def _hash(self, view) -> None:
        data = self.crc_pending + bytes(view) if self.crc_pending else bytes(view)
        aligned = len(data) - len(data) % _NP_MIN if HAS_NUMPY else len(data)
        if aligned:
            self.crc = crc64(self.crc, memoryview(data)[:aligned])
        self.crc_pending = data[aligned:]

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def _fill(self, need: int) -> None:
        """Make ``need`` bytes available at ``pos``; raise _Truncated if the stream ends first."""
        if self.crc_on:
            self._hash(memoryview(self.buf)[self.crc_pos:self.pos])
        rest = self.buf[self.pos:]
        self.base += self.pos
        parts = [rest]
        have = len(rest)
        while have < need and not self.eof:
            chunk = self.reader.read(max(self.chunk_size, need - have))
            if not chunk:
                self.eof = True
                break
            if self.on_chunk is not None:
                self.on_chunk(chunk)
            parts.append(chunk)
            have += len(chunk)
        self.buf = b"".join(parts) if len(parts) > 1 else rest
        self.pos = 0
        self.crc_pos = 0
        if have < need:
            raise _Truncated(self.base + have,
                             f"unexpected end of data at offset {self.base + have} "
                             f"(needed {need - have} more bytes)")

    def read(self, n: int) -> bytes:
        if len(self.buf) - self.pos < n:
            self._fill(n)
        start = self.pos
        self.pos += n
        return self.buf[start:self.pos]

    def u8(self) -> int:
        if self.pos >= len(self.buf):
            self._fill(1)
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def skip(self, n: int) -> None:
        """Skip ``n`` bytes without keeping them (large values pass through chunk by chunk)."""
        avail = len(self.buf) - self.pos
        while n > avail:
            self.pos = len(self.buf)
            n -= avail
            self._fill(min(n, self.chunk_size))
            avail = len(self.buf)
        self.pos += n

    def stop_crc(self) -> int:
        """Finish the CRC at the current offset and return it."""
        self.crc = crc64(self.crc, self.crc_pending + bytes(memoryview(self.buf)[self.crc_pos:self.pos]))
        self.crc_pending = b""
        self.crc_pos = self.pos
        self.crc_on = False
        return self.crc

    def drain(self) -> int:
        """Read to the end of the stream; return how many bytes were left after ``pos``."""
        extra = len(self.buf) - self.pos
        self.pos = len(self.buf)
        while not self.eof:
            chunk = self.reader.read(self.chunk_size)
            if not chunk:
                self.eof = True
                break
            if self.on_chunk is not None:
                self.on_chunk(chunk)
            extra += len(chunk)
        return extra


class _Walker:
    def __init__(self, src: _Source, report: RdbReport, horizon_ms: int) -> None:
        self.src = src
        self.r = report
        self.horizon_ms = horizon_ms

    # -- primitives ---------------------------------------------------------------------------
    def length(self) -> tuple[int, bool]:
        """RDB length encoding: (value, is_special_encoding)."""
        src = self.src
        at = src.offset
        b = src.u8()
        kind = b >> 6
        if kind == 0:
            return b & 0x3F, False
        if kind == 1:
            return ((b & 0x3F) << 8) | src.u8(), False
        if kind == 3:
            return b & 0x3F, True
        if b == 0x80:
            return struct.unpack(">I", src.read(4))[0], False
        if b == 0x81:
            return struct.unpack(">Q", src.read(8))[0], False
        raise _Corrupt(at, f"unknown length encoding byte 0x{b:02x} at offset {at}")

    def plain_length(self, what: str) -> int:
        at = self.src.offset
        n, special = self.length()
        if special:
            raise _Corrupt(at, f"{what} at offset {at} uses a string encoding where a length is required")
        return n

    def skip_string(self) -> None:
        src = self.src
        buf, pos = src.buf, src.pos
        if pos + 2 < len(buf):  # fast path: 6- or 14-bit plain length, payload already buffered
            b = buf[pos]
            if b < 0x40:
                end = pos + 1 + b
            elif b < 0x80:
                end = pos + 2 + (((b & 0x3F) << 8) | buf[pos + 1])
            else:
                end = -1
            if 0 <= end <= len(buf):
                src.pos = end
                return
        at = src.offset
        n, special = self.length()
        if not special:
            src.skip(n)
        elif n == 0:
            src.skip(1)
        elif n == 1:
            src.skip(2)
        elif n == 2:
            src.skip(4)
        elif n == 3:
            clen = self.plain_length("LZF compressed length")
            ulen = self.plain_length("LZF uncompressed length")
            if ulen == 0:
                raise _Corrupt(at, f"LZF string at offset {at} has uncompressed length 0")
            src.skip(clen)
        else:
            raise _Corrupt(at, f"unknown string encoding {n} at offset {at}")

    def read_string(self, limit: int = 1 << 16) -> bytes:
        """A (short) string value as bytes: integer encodings become their decimal text."""
        src = self.src
        at = src.offset
        n, special = self.length()
        if not special:
            if n > limit:
                src.skip(n)
                return b""
            return src.read(n)
        if n == 0:
            return str(struct.unpack("<b", src.read(1))[0]).encode()
        if n == 1:
            return str(struct.unpack("<h", src.read(2))[0]).encode()
        if n == 2:
            return str(struct.unpack("<i", src.read(4))[0]).encode()
        if n == 3:
            clen = self.plain_length("LZF compressed length")
            self.plain_length("LZF uncompressed length")
            src.skip(clen)
            return b""
        raise _Corrupt(at, f"unknown string encoding {n} at offset {at}")

    def skip_double_text(self) -> None:
        n = self.src.u8()
        if n < 253:
            self.src.skip(n)

    # -- values -------------------------------------------------------------------------------
    def skip_value(self, rdbtype: int, at: int) -> None:
        src = self.src
        if rdbtype == 0:
            self.skip_string()
        elif rdbtype in (1, 2):
            for _i in range(self.plain_length("list/set length")):
                self.skip_string()
        elif rdbtype == 3:
            for _i in range(self.plain_length("zset length")):
                self.skip_string()
                self.skip_double_text()
        elif rdbtype == 5:
            for _i in range(self.plain_length("zset length")):
                self.skip_string()
                src.skip(8)
        elif rdbtype == 4:
            for _i in range(self.plain_length("hash length")):
                self.skip_string()
                self.skip_string()
        elif rdbtype in _BLOB_TYPES:
            self.skip_string()
        elif rdbtype == 14:
            for _i in range(self.plain_length("quicklist length")):
                self.skip_string()
        elif rdbtype == 18:
            for _i in range(self.plain_length("quicklist length")):
                cat = src.offset
                container = self.plain_length("quicklist container")
                if container not in (1, 2):
                    raise _Corrupt(cat, f"quicklist node container {container} at offset {cat} is neither "
                                        "PLAIN (1) nor PACKED (2)")
                self.skip_string()
        elif rdbtype in (15, 19):
            self.skip_stream(rdbtype)
        elif rdbtype == 7:
            self.plain_length("module id")
            self.skip_module_value()
            self.r.module_values += 1
        elif rdbtype == 6:
            raise _Corrupt(at, f"pre-release module value format (type 6) at offset {at} is not supported")
        else:
            raise _Corrupt(at, f"invalid object type {rdbtype} at offset {at}")

    def skip_stream(self, rdbtype: int) -> None:
        src = self.src
        for _i in range(self.plain_length("stream listpacks count")):
            kat = src.offset
            n, special = self.length()
            if special or n != 16:
                raise _Corrupt(kat, f"stream node key at offset {kat} is not a 16-byte stream ID")
            src.skip(16)
            self.skip_string()
        self.plain_length("stream length")
        self.plain_length("stream last id ms")
        self.plain_length("stream last id seq")
        if rdbtype == 19:
            for what in ("first id ms", "first id seq", "max deleted id ms", "max deleted id seq",
                         "entries added"):
                self.plain_length(f"stream {what}")
        for _i in range(self.plain_length("stream consumer groups count")):
            self.skip_string()
            self.plain_length("group last id ms")
            self.plain_length("group last id seq")
            if rdbtype == 19:
                self.plain_length("group entries read")
            for _i in range(self.plain_length("group PEL size")):
                src.skip(16 + 8)  # raw stream ID, delivery time (ms)
                self.plain_length("delivery count")
            for _i in range(self.plain_length("consumers count")):
                self.skip_string()
                src.skip(8)  # seen time (ms)
                for _i in range(self.plain_length("consumer PEL size")):
                    src.skip(16)

    def skip_module_value(self) -> None:
        while True:
            at = self.src.offset
            opcode = self.plain_length("module opcode")
            if opcode == 0:
                return
            if opcode in (1, 2):
                self.plain_length("module integer")
            elif opcode == 3:
                self.src.skip(4)
            elif opcode == 4:
                self.src.skip(8)
            elif opcode == 5:
                self.skip_string()
            else:
                raise _Corrupt(at, f"unknown module value opcode {opcode} at offset {at}")

    # -- the file -----------------------------------------------------------------------------
    def walk(self) -> None:
        src, r = self.src, self.r
        magic = src.read(9)
        if magic[:5] != b"REDIS":
            raise _Corrupt(0, "not an RDB file: it does not start with the magic 'REDIS'")
        if not magic[5:].isdigit():
            raise _Corrupt(5, f"RDB version field {magic[5:]!r} is not 4 digits")
        r.version = int(magic[5:])
        if not 1 <= r.version <= RDB_MAX_VERSION:
            raise _Corrupt(5, f"RDB format version {r.version} is not supported (1..{RDB_MAX_VERSION}: "
                              "Redis up to 7.0)")
        db = 0
        expire_ms = -1
        while True:
            at = src.offset
            op = src.u8()
            if op == OP_EXPIRETIME_MS:
                expire_ms = struct.unpack("<q", src.read(8))[0]
            elif op == OP_EXPIRETIME:
                expire_ms = struct.unpack("<i", src.read(4))[0] * 1000
            elif op == OP_FREQ:
                src.u8()
            elif op == OP_IDLE:
                self.plain_length("LRU idle time")
            elif op == OP_SELECTDB:
                db = self.plain_length("database number")
                r.dbs.setdefault(db, DbStats())
            elif op == OP_RESIZEDB:
                stats = r.dbs.setdefault(db, DbStats())
                stats.resize_keys = self.plain_length("RESIZEDB size")
                stats.resize_expires = self.plain_length("RESIZEDB expires size")
            elif op == OP_AUX:
                key = self.read_string(256)
                value = self.read_string(4096)
                r.aux[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
            elif op == OP_MODULE_AUX:
                self.plain_length("module id")
                when_opcode = self.plain_length("module aux when opcode")
                self.plain_length("module aux when")
                if when_opcode != _MODULE_OPCODE["uint"]:
                    raise _Corrupt(at, f"module AUX at offset {at} has a bad 'when' opcode {when_opcode}")
                self.skip_module_value()
            elif op == OP_FUNCTION2:
                self.skip_string()
                r.functions += 1
            elif op == OP_FUNCTION_PRE_GA:
                raise _Corrupt(at, f"pre-release function format (opcode 0xf6) at offset {at} is not supported")
            elif op == OP_EOF:
                r.eof_offset = at
                break
            elif op in TYPE_NAMES:
                self.skip_string()  # the key
                self.skip_value(op, at)
                stats = r.dbs.setdefault(db, DbStats())
                stats.keys += 1
                if expire_ms != -1:
                    stats.expires += 1
                    if expire_ms <= self.horizon_ms:
                        r.expiring.append((db, expire_ms))
                expire_ms = -1
            else:
                raise _Corrupt(at, f"invalid opcode or object type 0x{op:02x} at offset {at}")
        computed = src.stop_crc()
        if r.version >= RDB_CHECKSUM_MIN_VERSION:
            crc_at = src.offset
            stored = struct.unpack("<Q", src.read(8))[0]
            r.crc_stored, r.crc_computed = stored, computed
            if stored != 0:
                r.crc_checked = True
                if stored != computed:
                    raise _Corrupt(crc_at, f"CRC64 mismatch: the file stores {stored:016x} at offset {crc_at} but "
                                           f"bytes 0..{crc_at - 1} hash to {computed:016x}: the data is damaged "
                                           "somewhere before the checksum")


def check_rdb(reader: BinaryIO, *, on_chunk: Optional[Callable[[bytes], object]] = None,
              chunk_size: int = 1 << 20, expiring_horizon_s: float = 3600.0) -> RdbReport:
    """Walk and checksum one RDB stream read from ``reader`` (binary, read(n) -> bytes).

    Reads the whole stream (also bytes after the checksum, counted in
    ``trailing_bytes``) unless damage stops the walk; ``on_chunk`` receives every
    chunk read, in order. Keys expiring within ``expiring_horizon_s`` seconds of now
    (or already expired) are listed in ``report.expiring``. Never raises for bad
    data: see ``report.ok`` / ``report.error`` / ``report.error_offset``.
    """
    report = RdbReport()
    report.expiring_horizon_ms = int((time.time() + expiring_horizon_s) * 1000)
    src = _Source(reader, on_chunk, chunk_size)
    try:
        _Walker(src, report, report.expiring_horizon_ms).walk()
        end = src.offset
        report.trailing_bytes = src.drain()
        report.size = end + report.trailing_bytes
        report.ok = True
    except _Corrupt as err:
        report.error = err.message
        report.error_offset = err.offset
        report.size = src.base + len(src.buf)
    return report


def check_rdb_file(path: str, **kwargs) -> RdbReport:
    """:func:`check_rdb` on a file; ``report.size`` is the file's size."""
    with open(path, "rb") as fh:
        report = check_rdb(fh, **kwargs)
        if not report.ok:
            fh.seek(0, 2)
            report.size = fh.tell()
    return report
