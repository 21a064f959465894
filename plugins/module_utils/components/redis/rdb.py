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
Every length, opcode and type byte is checked exactly. String payloads are
skipped by their length encoding (their bytes are covered by the CRC64). Encoded
values -- ziplist, listpack, intset, zipmap, quicklist nodes, stream listpacks --
are read (LZF data decompressed) and validated the way Redis 7.0's deep integrity
checks do (``ziplistValidateIntegrity``, ``lpValidateIntegrity``,
``intsetValidateIntegrity``, ``zipmapValidateIntegrity``: header sizes and counts,
every entry's encoding and length, prevlen/back-length fields, the 0xff
terminator, no duplicate hash fields or zset members, sorted intsets), and empty
aggregates are refused as ``redis-check-rdb`` refuses them. So a file whose CRC
was recomputed over damaged payloads still fails. The walk also counts keys and
expiry times per database. Optionally ``redis-check-rdb`` reads the same stream
through a pipe at the same time (:class:`ReferenceCheck`); the report names the
checks that ran.

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

import re
import struct
import subprocess
import threading
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
_MODULE_OPCODE = {"eof": 0, "sint": 1, "uint": 2, "float": 3, "double": 4, "string": 5}


# ---------------------------------------------------------------------------------------------
# Payload integrity: LZF, ziplist, listpack, intset, zipmap (as Redis 7.0 validates them)
# ---------------------------------------------------------------------------------------------


class PayloadError(ValueError):
    """An encoded payload (ziplist, listpack, intset, zipmap, LZF data) is damaged.

    ``at`` is the byte offset inside the (decompressed) payload where the damage was found.
    """

    def __init__(self, at: int, message: str) -> None:
        super().__init__(message)
        self.at = at
        self.message = message


def lzf_decompress(data: bytes, out_len: int) -> bytes:
    """LZF-decompress ``data`` (Redis's lzf_d.c format) into exactly ``out_len`` bytes.

    Raises PayloadError when a back reference points before the start, the data ends inside
    a run or reference, or the output length differs from ``out_len``.
    """
    out = bytearray(out_len)
    i = o = 0
    n = len(data)
    try:
        while i < n:
            ctrl = data[i]
            i += 1
            if ctrl < 32:  # literal run of ctrl + 1 bytes
                run = ctrl + 1
                if i + run > n:
                    raise PayloadError(i, f"LZF literal run of {run} bytes passes the end of the compressed data")
                if o + run > out_len:
                    raise PayloadError(i, f"LZF data expands past its recorded length {out_len}")
                out[o:o + run] = data[i:i + run]
                i += run
                o += run
                continue
            length = ctrl >> 5  # back reference: length (extended by a byte when 7), 13-bit distance
            if length == 7:
                length += data[i]
                i += 1
            ref = o - ((ctrl & 0x1F) << 8) - data[i] - 1
            i += 1
            length += 2
            if ref < 0:
                raise PayloadError(i - 2, "LZF back reference points before the start of the data")
            if o + length > out_len:
                raise PayloadError(i, f"LZF data expands past its recorded length {out_len}")
            if ref + length <= o:
                out[o:o + length] = out[ref:ref + length]
            else:  # overlapping copy: the last o - ref bytes repeat
                pattern = bytes(out[ref:o])
                out[o:o + length] = (pattern * (length // len(pattern) + 1))[:length]
            o += length
    except IndexError:
        raise PayloadError(n, "LZF back reference cut off at the end of the compressed data") from None
    if o != out_len:
        raise PayloadError(n, f"LZF data expands to {o} bytes, not the recorded {out_len}")
    return bytes(out)


ZIPLIST_HEADER = 10  # zlbytes u32, zltail u32, zllen u16 (little-endian)
LISTPACK_HEADER = 6  # total bytes u32, number of elements u16 (little-endian)
INTSET_HEADER = 8  # encoding u32, length u32 (little-endian)
_UNKNOWN_COUNT = 0xFFFF
_ZIP_INT_SIZES = {0xC0: 2, 0xD0: 4, 0xE0: 8, 0xF0: 3, 0xFE: 1}
_ZIP_INT_FORMATS = {0xC0: "<h", 0xD0: "<i", 0xE0: "<q", 0xFE: "<b"}


def _ziplist_value(buf: bytes, enc: int, start: int, length: int) -> bytes:
    """The value of a ziplist entry as Redis compares it: string bytes or an integer's decimal text."""
    if enc < 0xC0:
        return buf[start:start + length]
    if 0xF1 <= enc <= 0xFD:
        return str((enc & 0x0F) - 1).encode()
    if enc == 0xF0:
        return str(int.from_bytes(buf[start:start + 3], "little", signed=True)).encode()
    return str(struct.unpack_from(_ZIP_INT_FORMATS[enc], buf, start)[0]).encode()


def _ziplist_entry(buf: bytes, p: int, end: int) -> tuple[int, int, int, int, int]:
    """Decode the ziplist entry header at ``p``: (prevlen, header size, encoding, data start, data length).

    ``end`` is the offset of the 0xFF terminator; an entry must end at or before it.
    """
    if buf[p] < 254:
        prevlen, prevsize = buf[p], 1
    else:
        if p + 5 > end:
            raise PayloadError(p, f"ziplist entry at byte {p}: its 5-byte previous-length field passes the end")
        prevlen, prevsize = struct.unpack_from("<I", buf, p + 1)[0], 5
    q = p + prevsize
    if q >= end:
        raise PayloadError(p, f"ziplist entry at byte {p} has no encoding byte before the terminator")
    enc = buf[q]
    if enc < 0xC0:
        kind = enc & 0xC0
        if kind == 0x00:
            lensize, length = 1, enc & 0x3F
        elif kind == 0x40:
            if q + 2 > end:
                raise PayloadError(p, f"ziplist entry at byte {p}: its string length passes the end")
            lensize, length = 2, ((enc & 0x3F) << 8) | buf[q + 1]
        else:
            if q + 5 > end:
                raise PayloadError(p, f"ziplist entry at byte {p}: its string length passes the end")
            lensize, length = 5, struct.unpack_from(">I", buf, q + 1)[0]
        enc = kind
    elif enc in _ZIP_INT_SIZES:
        lensize, length = 1, _ZIP_INT_SIZES[enc]
    elif 0xF1 <= enc <= 0xFD:
        lensize, length = 1, 0
    else:
        raise PayloadError(q, f"ziplist entry at byte {p} has an invalid encoding byte 0x{enc:02x}")
    header = prevsize + lensize
    if p + header + length > end:
        raise PayloadError(p, f"ziplist entry at byte {p} ({header + length} bytes) runs past the terminator "
                              f"at byte {end}")
    return prevlen, header, enc, p + header, length


def validate_ziplist(buf: bytes, values: Optional[list] = None) -> int:
    """Check a ziplist as Redis's deep ``ziplistValidateIntegrity`` does; return its entry count.

    Header: zlbytes equals the payload size, zltail inside it, the last byte 0xFF. Every
    entry: a valid encoding, inside the payload, its prevlen equal to the previous entry's
    size; the entries end exactly at the terminator; zltail points at the last entry; the
    count equals zllen (unless zllen is 65535, "unknown"). ``values`` (if given) receives
    each entry's value (bytes; integers as decimal text).
    """
    size = len(buf)
    if size < ZIPLIST_HEADER + 1:
        raise PayloadError(0, f"ziplist of {size} bytes is shorter than its 11-byte minimum")
    zlbytes, zltail, zllen = struct.unpack_from("<IIH", buf, 0)
    if zlbytes != size:
        raise PayloadError(0, f"ziplist header says {zlbytes} bytes but the payload has {size}")
    if buf[-1] != 0xFF:
        raise PayloadError(size - 1, f"ziplist does not end with the terminator 0xff (last byte 0x{buf[-1]:02x})")
    end = size - 1
    if zltail > end:
        raise PayloadError(4, f"ziplist tail offset {zltail} is past its terminator at byte {end}")
    p, count, prev_size, prev_at = ZIPLIST_HEADER, 0, 0, -1
    while p < end and buf[p] != 0xFF:
        prevlen, header, enc, start, length = _ziplist_entry(buf, p, end)
        if prevlen != prev_size:
            raise PayloadError(p, f"ziplist entry {count} at byte {p} records a previous entry of {prevlen} bytes, "
                                  f"but the previous entry has {prev_size}")
        if values is not None:
            values.append(_ziplist_value(buf, enc, start, length))
        prev_at, prev_size = p, header + length
        p += prev_size
        count += 1
    if p != end:
        raise PayloadError(p, f"ziplist entries end at byte {p}, not at its terminator (byte {end})")
    if prev_at >= 0 and zltail != prev_at:
        raise PayloadError(4, f"ziplist tail offset {zltail} does not point at its last entry (byte {prev_at})")
    if zllen != _UNKNOWN_COUNT and zllen != count:
        raise PayloadError(8, f"ziplist header counts {zllen} entries but it holds {count}")
    return count


def _lp_backlen_size(length: int) -> int:
    if length <= 127:
        return 1
    if length < 16383:
        return 2
    if length < 2097151:
        return 3
    if length < 268435455:
        return 4
    return 5


def _lp_entry(buf: bytes, p: int, end: int) -> tuple[int, int, int]:
    """Decode the listpack entry header at ``p``: (header size, data length, kind 0=int/1=string)."""
    b = buf[p]
    if b < 0x80:
        return 1, 0, 0
    if b < 0xC0:
        return 1, b & 0x3F, 1
    if b < 0xE0:
        return 2, 0, 0
    if b < 0xF0:
        if p + 2 > end:
            raise PayloadError(p, f"listpack entry at byte {p}: its string length passes the end")
        return 2, ((b & 0x0F) << 8) | buf[p + 1], 1
    if b == 0xF0:
        if p + 5 > end:
            raise PayloadError(p, f"listpack entry at byte {p}: its string length passes the end")
        return 5, struct.unpack_from("<I", buf, p + 1)[0], 1
    if 0xF1 <= b <= 0xF4:
        return {0xF1: 3, 0xF2: 4, 0xF3: 5, 0xF4: 9}[b], 0, 0
    raise PayloadError(p, f"listpack entry at byte {p} has an invalid encoding byte 0x{b:02x}")


def _lp_value(buf: bytes, p: int, header: int, length: int, kind: int) -> bytes:
    if kind:
        return buf[p + header:p + header + length]
    b = buf[p]
    if b < 0x80:
        return str(b).encode()
    if b < 0xE0:
        raw, bits = ((b & 0x1F) << 8) | buf[p + 1], 13
    else:
        nbytes = header - 1
        raw, bits = int.from_bytes(buf[p + 1:p + header], "little"), 8 * nbytes
    if raw >= 1 << (bits - 1):
        raw -= 1 << bits
    return str(raw).encode()


def validate_listpack(buf: bytes, values: Optional[list] = None) -> int:
    """Check a listpack as Redis's deep ``lpValidateIntegrity`` does; return its element count.

    Header: total bytes equal the payload size, the last byte 0xFF. Every entry: a valid
    encoding, inside the payload, its back-length field equal to the entry's size; the
    entries end exactly at the terminator; the count equals the header's (unless it is
    65535, "unknown"). ``values`` (if given) receives each element (bytes; integers as
    decimal text).
    """
    size = len(buf)
    if size < LISTPACK_HEADER + 1:
        raise PayloadError(0, f"listpack of {size} bytes is shorter than its 7-byte minimum")
    total, declared = struct.unpack_from("<IH", buf, 0)
    if total != size:
        raise PayloadError(0, f"listpack header says {total} bytes but the payload has {size}")
    if buf[-1] != 0xFF:
        raise PayloadError(size - 1, f"listpack does not end with the terminator 0xff (last byte 0x{buf[-1]:02x})")
    end = size - 1
    p, count = LISTPACK_HEADER, 0
    while True:  # the terminator at ``end`` is 0xff, so this stops there at the latest
        b = buf[p]
        if b == 0xFF:
            break
        if b < 0x80:  # the common encodings inline: 7-bit uint, 6-bit string, 13-bit int
            header, length, kind = 1, 0, 0
        elif b < 0xC0:
            header, length, kind = 1, b & 0x3F, 1
        elif b < 0xE0:
            header, length, kind = 2, 0, 0
        else:
            header, length, kind = _lp_entry(buf, p, end)
        entry = header + length
        backlen = 1 if entry <= 127 else _lp_backlen_size(entry)
        nxt = p + entry + backlen
        if nxt > end:
            raise PayloadError(p, f"listpack entry {count} at byte {p} ({entry + backlen} bytes) runs past the "
                                  f"terminator at byte {end}")
        if backlen == 1:
            stored = buf[nxt - 1]
        else:
            stored, shift, q = 0, 0, nxt - 1
            while True:  # the back length, read backwards: 7 bits a byte, high bit = more bytes before
                stored |= (buf[q] & 0x7F) << shift
                if not buf[q] & 0x80 or q == p + entry:
                    break
                shift += 7
                q -= 1
        if stored != entry:
            raise PayloadError(p, f"listpack entry {count} at byte {p}: back length {stored} differs from its "
                                  f"size {entry}")
        if values is not None:
            values.append(_lp_value(buf, p, header, length, kind))
        p = nxt
        count += 1
    if p != end:
        raise PayloadError(p, f"listpack entries end at byte {p}, not at its terminator (byte {end})")
    if declared != _UNKNOWN_COUNT and declared != count:
        raise PayloadError(4, f"listpack header counts {declared} elements but it holds {count}")
    return count


def validate_intset(buf: bytes) -> int:
    """Check an intset as Redis's ``intsetValidateIntegrity`` (deep) does; return its length.

    The encoding is 2, 4 or 8 bytes; header + length x encoding is exactly the payload
    size; the set is not empty; the values are strictly ascending (sorted, no duplicates).
    """
    size = len(buf)
    if size < INTSET_HEADER:
        raise PayloadError(0, f"intset of {size} bytes is shorter than its 8-byte header")
    encoding, length = struct.unpack_from("<II", buf, 0)
    if encoding not in (2, 4, 8):
        raise PayloadError(0, f"intset encoding {encoding} is not 2, 4 or 8 bytes per value")
    if INTSET_HEADER + length * encoding != size:
        raise PayloadError(4, f"intset header says {length} values of {encoding} bytes "
                              f"({INTSET_HEADER + length * encoding} bytes) but the payload has {size}")
    if length == 0:
        raise PayloadError(4, "intset is empty")
    fmt = {2: "h", 4: "i", 8: "q"}[encoding]
    values = struct.unpack_from(f"<{length}{fmt}", buf, INTSET_HEADER)
    for i in range(1, length):
        if values[i] <= values[i - 1]:
            raise PayloadError(INTSET_HEADER + i * encoding, f"intset value {i} ({values[i]}) is not greater than "
                                                             f"the one before ({values[i - 1]})")
    return length


def _zipmap_len(buf: bytes, p: int, what: str) -> tuple[int, int]:
    """(length, size of the length field) of the zipmap length at ``p``."""
    b = buf[p]
    if b < 254:
        return b, 1
    if b == 254:
        if p + 5 > len(buf) - 1:
            raise PayloadError(p, f"zipmap {what} length at byte {p} passes the end")
        return struct.unpack_from("<I", buf, p + 1)[0], 5
    raise PayloadError(p, f"zipmap {what} length byte 0xff at byte {p}")


def validate_zipmap(buf: bytes, values: Optional[list] = None) -> int:
    """Check a zipmap (Redis < 2.6 small hashes) as ``zipmapValidateIntegrity`` does; return its pair count."""
    size = len(buf)
    if size < 2 or buf[-1] != 0xFF:
        raise PayloadError(max(size - 1, 0), "zipmap does not end with the terminator 0xff")
    declared, p, count, end = buf[0], 1, 0, size - 1
    while p < end and buf[p] != 0xFF:
        klen, ksize = _zipmap_len(buf, p, "key")
        kstart = p + ksize
        if kstart + klen >= end:
            raise PayloadError(p, f"zipmap key at byte {p} runs past the terminator")
        vlen, vsize = _zipmap_len(buf, kstart + klen, "value")
        free_at = kstart + klen + vsize
        if free_at >= end:
            raise PayloadError(p, f"zipmap value at byte {kstart + klen} runs past the terminator")
        vstart = free_at + 1
        if vstart + vlen + buf[free_at] > end:
            raise PayloadError(p, f"zipmap value at byte {kstart + klen} runs past the terminator")
        if values is not None:
            values += [buf[kstart:kstart + klen], buf[vstart:vstart + vlen]]
        p = vstart + vlen + buf[free_at]
        count += 1
    if p != end:
        raise PayloadError(p, f"zipmap entries end at byte {p}, not at its terminator (byte {end})")
    if declared < 254 and declared != count:
        raise PayloadError(0, f"zipmap header counts {declared} pairs but it holds {count}")
    return count


def check_pairs(values: list, what: str) -> None:
    """An even number of entries (field/value or member/score) and no field or member twice."""
    if len(values) % 2:
        raise PayloadError(0, f"{what} holds {len(values)} entries, not field/value pairs")
    fields = values[0::2]
    if len(set(fields)) != len(fields):
        raise PayloadError(0, f"{what} holds the same field or member twice")


def _pairs_validator(validate: Callable[..., int], what: str) -> Callable[[bytes], int]:
    def validate_pairs(blob: bytes) -> int:
        values: list = []
        count = validate(blob, values)
        check_pairs(values, what)
        return count
    return validate_pairs


# one encoded string holds the whole value: type -> validator returning the element count
_BLOB_VALIDATORS: dict[int, Callable[[bytes], int]] = {
    9: _pairs_validator(validate_zipmap, "hash zipmap"),
    10: validate_ziplist,
    11: validate_intset,
    12: _pairs_validator(validate_ziplist, "zset ziplist"),
    13: _pairs_validator(validate_ziplist, "hash ziplist"),
    16: _pairs_validator(validate_listpack, "hash listpack"),
    17: _pairs_validator(validate_listpack, "zset listpack"),
}
_BLOB_TYPES = set(_BLOB_VALIDATORS)


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
    ``checks`` names the checks that ran over the whole stream: always
    ``lifeboat-structural`` (this walk), plus ``redis-check-rdb`` when that program was
    given and ran; ``reference`` holds its verdict (``program``, ``ran``, ``ok``,
    ``detail``). ``structural_ok`` is the built-in check's own verdict; ``ok`` needs every
    check that ran to pass. ``payloads`` counts the encoded values the built-in check
    validated and those it left to ``redis-check-rdb`` (``deferred_lzf``: LZF-compressed
    ones, only while that program reads the same stream).
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
    checks: list = field(default_factory=list)
    reference: Optional[dict] = None
    structural_ok: bool = False
    payloads: dict = field(default_factory=lambda: {"validated": 0, "deferred_lzf": 0})

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
            "checks": list(self.checks), "reference": dict(self.reference) if self.reference else None,
            "payloads": dict(self.payloads),
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
    def __init__(self, src: _Source, report: RdbReport, horizon_ms: int, defer_lzf_payloads: bool = False) -> None:
        self.src = src
        self.r = report
        self.horizon_ms = horizon_ms
        self.defer_lzf_payloads = defer_lzf_payloads  # redis-check-rdb validates those (pure-Python LZF is slow)

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

    def read_blob(self, what: str) -> Optional[bytes]:
        """An encoded value (ziplist, listpack, intset, zipmap) as bytes, LZF data decompressed;
        None for LZF data skipped because ``defer_lzf_payloads`` (redis-check-rdb checks it)."""
        src = self.src
        at = src.offset
        n, special = self.length()
        if not special:
            return src.read(n)
        if n in (0, 1, 2):  # an integer where a blob belongs: Redis loads its decimal text, which then fails
            return str(int.from_bytes(src.read(1 << n), "little", signed=True)).encode()
        if n == 3:
            clen = self.plain_length("LZF compressed length")
            ulen = self.plain_length("LZF uncompressed length")
            if ulen == 0:
                raise _Corrupt(at, f"LZF string at offset {at} has uncompressed length 0")
            if self.defer_lzf_payloads:
                src.skip(clen)
                self.r.payloads["deferred_lzf"] += 1
                return None
            try:
                return lzf_decompress(src.read(clen), ulen)
            except PayloadError as err:
                raise _Corrupt(at, f"{what} at offset {at}: invalid LZF data: {err.message}") from None
        raise _Corrupt(at, f"unknown string encoding {n} at offset {at}")

    def checked_blob(self, what: str, validate: Callable[[bytes], int], at: int) -> Optional[int]:
        """Read one encoded value and validate it; returns its element count (0 = empty), None if deferred."""
        blob_at = self.src.offset
        blob = self.read_blob(what)
        if blob is None:
            return None
        self.r.payloads["validated"] += 1
        try:
            return validate(blob)
        except PayloadError as err:
            raise _Corrupt(blob_at, f"{what} of the key at offset {at} fails the integrity check at byte {err.at} "
                                    f"of its payload (value at offset {blob_at}): {err.message}") from None

    def skip_double_text(self) -> None:
        n = self.src.u8()
        if n < 253:
            self.src.skip(n)

    # -- values -------------------------------------------------------------------------------
    def skip_value(self, rdbtype: int, at: int) -> None:
        """Walk one value of ``rdbtype`` (its type byte at ``at``); raise _Corrupt for damage or
        an empty aggregate (Redis refuses empty keys: ``redis-check-rdb`` fails on them)."""
        src = self.src
        if rdbtype == 0:
            self.skip_string()
            return
        if rdbtype in (15, 19):
            self.skip_stream(rdbtype)
            return
        if rdbtype == 7:
            self.plain_length("module id")
            self.skip_module_value()
            self.r.module_values += 1
            return
        if rdbtype == 6:
            raise _Corrupt(at, f"pre-release module value format (type 6) at offset {at} is not supported")
        if rdbtype not in TYPE_NAMES:
            raise _Corrupt(at, f"invalid object type {rdbtype} at offset {at}")
        if rdbtype in (1, 2):
            count = self.plain_length("list/set length")
            for _i in range(count):
                self.skip_string()
        elif rdbtype == 3:
            count = self.plain_length("zset length")
            for _i in range(count):
                self.skip_string()
                self.skip_double_text()
        elif rdbtype == 5:
            count = self.plain_length("zset length")
            for _i in range(count):
                self.skip_string()
                src.skip(8)
        elif rdbtype == 4:
            count = self.plain_length("hash length")
            for _i in range(count):
                self.skip_string()
                self.skip_string()
        elif rdbtype in _BLOB_TYPES:
            count = self.checked_blob(f"{TYPE_NAMES[rdbtype]} value", _BLOB_VALIDATORS[rdbtype], at)
        else:
            count = self.quicklist_elements(rdbtype, at)
        if count == 0:  # None: a deferred LZF payload, checked by redis-check-rdb
            raise _Corrupt(at, f"empty {TYPE_NAMES[rdbtype]} value (type {rdbtype}) for the key at offset {at}: "
                               "Redis never saves an empty key and redis-check-rdb rejects one")

    def quicklist_elements(self, rdbtype: int, at: int) -> Optional[int]:
        """Walk a quicklist (14: ziplist nodes, 18: PLAIN/PACKED listpack nodes); return its element count
        (None when it is 0 but some node was a deferred LZF payload).

        Empty nodes are allowed (Redis skips them on load); an empty list is not."""
        src = self.src
        total, deferred = 0, False
        for _i in range(self.plain_length("quicklist length")):
            if rdbtype == 14:
                count = self.checked_blob("quicklist ziplist node", validate_ziplist, at)
                total, deferred = total + (count or 0), deferred or count is None
                continue
            cat = src.offset
            container = self.plain_length("quicklist container")
            if container == 1:
                self.skip_string()
                total += 1
            elif container == 2:
                count = self.checked_blob("quicklist listpack node", validate_listpack, at)
                total, deferred = total + (count or 0), deferred or count is None
            else:
                raise _Corrupt(cat, f"quicklist node container {container} at offset {cat} is neither "
                                    "PLAIN (1) nor PACKED (2)")
        return None if (total == 0 and deferred) else total

    def skip_stream(self, rdbtype: int) -> None:
        src = self.src
        for _i in range(self.plain_length("stream listpacks count")):
            kat = src.offset
            n, special = self.length()
            if special or n != 16:
                raise _Corrupt(kat, f"stream node key at offset {kat} is not a 16-byte stream ID")
            src.skip(16)
            if self.checked_blob("stream listpack", validate_listpack, kat) == 0:  # None: deferred
                raise _Corrupt(kat, f"empty listpack inside the stream node at offset {kat}: Redis removes a "
                                    "node when its listpack empties")
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


STRUCTURAL_CHECK = "lifeboat-structural"
REFERENCE_CHECK = "redis-check-rdb"
_OFFSET_RE = re.compile(r"^\[offset (\d+)\]")


def summarize_reference_output(text: str) -> tuple[str, Optional[int]]:
    """The error lines of ``redis-check-rdb`` output (key names left out) and the offset it names.

    For an accepted file: its verdict line. The offset is the one on the first line after
    ``--- RDB ERROR DETECTED ---`` (None when there is none).
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "--- RDB ERROR DETECTED ---" not in lines:
        verdict = [line for line in lines if "RDB looks OK" in line or "Checksum OK" in line]
        return (" | ".join(verdict) or " | ".join(lines[-3:])), None
    after = lines[lines.index("--- RDB ERROR DETECTED ---") + 1:]
    kept = [line for line in after if not line.startswith("[info]") and "key '" not in line.lower()
            and "Reading key" not in line]
    match = _OFFSET_RE.match(kept[0]) if kept else None
    return " | ".join(kept[:4]), int(match.group(1)) if match else None


class ReferenceCheck:
    """``redis-check-rdb`` reading the same stream through a pipe (``/dev/stdin``), run side by side.

    :meth:`feed` passes each chunk on (it stops quietly if the program has already quit,
    e.g. on damage); :meth:`finish` closes its input and returns its verdict dict
    (``program``, ``ran``, ``ok``, ``detail``, ``error_offset``). The data never touches
    the disk and nothing secret reaches its argv.
    """

    def __init__(self, binary: str, timeout_s: float = 600.0) -> None:
        self.binary = binary
        self.timeout_s = timeout_s
        self.output = b""
        self.broken = False
        self.proc = subprocess.Popen([binary, "/dev/stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._collect, daemon=True, name="redis-check-rdb-output")
        self._reader.start()

    def _collect(self) -> None:
        self.output = self.proc.stdout.read()

    def feed(self, chunk: bytes) -> None:
        if self.broken:
            return
        try:
            self.proc.stdin.write(chunk)
        except (BrokenPipeError, ValueError):
            self.broken = True

    def finish(self) -> dict:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            code = self.proc.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self.abort()
            return {"program": REFERENCE_CHECK, "ran": True, "ok": False, "error_offset": None,
                    "detail": f"{self.binary} did not finish within {self.timeout_s:.0f} s"}
        self._reader.join(timeout=10)
        self.proc.stdout.close()
        text = self.output.decode("utf-8", "replace")
        detail, offset = summarize_reference_output(text)
        return {"program": REFERENCE_CHECK, "ran": True, "ok": code == 0 and "RDB looks OK" in text,
                "detail": detail, "error_offset": offset}

    def abort(self) -> None:
        """Stop the program (used when the caller gives up half-way)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except (OSError, ValueError):
                pass


def _start_reference(binary: Optional[str], report: RdbReport) -> Optional[ReferenceCheck]:
    if not binary:
        return None
    try:
        return ReferenceCheck(binary)
    except OSError as err:
        report.reference = {"program": REFERENCE_CHECK, "ran": False, "ok": None, "error_offset": None,
                            "detail": f"cannot start {binary}: {err}"}
        return None


def check_rdb(reader: BinaryIO, *, on_chunk: Optional[Callable[[bytes], object]] = None,
              chunk_size: int = 1 << 20, expiring_horizon_s: float = 3600.0,
              reference: Optional[str] = None) -> RdbReport:
    """Walk and checksum one RDB stream read from ``reader`` (binary, read(n) -> bytes).

    Reads the whole stream (also bytes after the checksum, counted in
    ``trailing_bytes``) unless damage stops the walk; ``on_chunk`` receives every
    chunk read, in order. Keys expiring within ``expiring_horizon_s`` seconds of now
    (or already expired) are listed in ``report.expiring``. ``reference``: path of
    ``redis-check-rdb`` to run over the same bytes at the same time (None: only the
    built-in check; ``report.checks`` says which ran). While it runs, the built-in check
    leaves LZF-compressed payloads to it (decompressing them in pure Python costs about
    10x the rest of the check) and validates every uncompressed one; without it, every
    payload is decompressed and validated (``report.payloads``). Never raises for bad data: see
    ``report.ok`` / ``report.error`` / ``report.error_offset``.
    """
    report = RdbReport(checks=[STRUCTURAL_CHECK])
    report.expiring_horizon_ms = int((time.time() + expiring_horizon_s) * 1000)
    ref = _start_reference(reference, report)
    tee = on_chunk
    if ref is not None:
        def tee(chunk: bytes) -> None:
            if on_chunk is not None:
                on_chunk(chunk)
            ref.feed(chunk)
    src = _Source(reader, tee, chunk_size)
    try:
        try:
            _Walker(src, report, report.expiring_horizon_ms, defer_lzf_payloads=ref is not None).walk()
            end = src.offset
            report.trailing_bytes = src.drain()
            report.size = end + report.trailing_bytes
            report.ok = True
        except _Corrupt as err:
            report.error = err.message
            report.error_offset = err.offset
            report.size = src.base + len(src.buf)
    except BaseException:
        if ref is not None:
            ref.abort()
        raise
    report.structural_ok = report.ok
    if ref is not None:
        _add_reference_verdict(report, ref.finish())
    return report


def _add_reference_verdict(report: RdbReport, verdict: dict) -> None:
    """Record redis-check-rdb's verdict; one too old to read this RDB version (a Redis 6
    redis-tools beside a Redis 7 server) did not check it: recorded, not counted as run."""
    if (not verdict["ok"] and report.structural_ok and "Can't handle RDB format version" in verdict["detail"]):
        report.reference = {**verdict, "ran": False, "ok": None,
                            "detail": f"this redis-check-rdb cannot read RDB version {report.version}: "
                                      f"{verdict['detail']}"}
        return
    report.reference = verdict
    report.checks.append(REFERENCE_CHECK)
    if report.ok and not verdict["ok"]:
        report.ok = False
        report.error = f"redis-check-rdb rejects the RDB: {verdict['detail']}"
        report.error_offset = verdict.get("error_offset")


def check_rdb_file(path: str, **kwargs) -> RdbReport:
    """:func:`check_rdb` on a file; ``report.size`` is the file's size."""
    with open(path, "rb") as fh:
        report = check_rdb(fh, **kwargs)
        if not report.ok:
            fh.seek(0, 2)
            report.size = fh.tell()
    return report
