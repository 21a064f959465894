"""Deterministic RDB fixtures: encoders for every Redis value encoding, and damaged variants of them.

Each damaged fixture is the generated equivalent of a file Redis's own checks refuse
(``corrupt_empty_keys.rdb``: empty aggregates; ``corrupt_ziplist.rdb``: ziplist
integrity), one per encoding the Lifeboat RDB check parses. The encoders write the
formats of Redis 7.0 (``ziplist.c``, ``listpack.c``, ``intset.c``, ``zipmap.c``,
``rdb.c``); the payloads taken from a real server (``DUMP``) are used as they are.
"""

from __future__ import annotations

import struct
from typing import Callable, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis import rdb

Value = Union[bytes, int]

T_STRING, T_LIST, T_SET, T_ZSET, T_HASH, T_ZSET2 = 0, 1, 2, 3, 4, 5
T_ZIPMAP, T_LIST_ZIPLIST, T_INTSET, T_ZSET_ZIPLIST, T_HASH_ZIPLIST, T_QUICKLIST = 9, 10, 11, 12, 13, 14
T_HASH_LISTPACK, T_ZSET_LISTPACK, T_QUICKLIST2, T_STREAM2 = 16, 17, 18, 19


# ------------------------------------------------------------------------------------------ RDB framing


def enc_len(n: int) -> bytes:
    """RDB length encoding (6-, 14- or 32-bit)."""
    if n < 64:
        return bytes([n])
    if n < 16384:
        return bytes([0x40 | (n >> 8), n & 0xFF])
    return b"\x80" + struct.pack(">I", n)


def enc_str(s: bytes) -> bytes:
    return enc_len(len(s)) + s


def rdb_file(entries: list[tuple[int, bytes, bytes]], version: int = 10) -> bytes:
    """A whole RDB (db 0) with a valid CRC64: ``entries`` are (type, key, encoded value)."""
    body = b"REDIS%04d" % version + b"\xfe\x00"
    for rdbtype, key, value in entries:
        body += bytes([rdbtype]) + enc_str(key) + value
    body += b"\xff"
    return body + struct.pack("<Q", rdb.crc64(0, body))


def from_dump(payload: bytes) -> tuple[int, bytes]:
    """(type, encoded value) of a ``DUMP`` reply (type byte + value + 2-byte version + 8-byte CRC)."""
    return payload[0], payload[1:-10]


def read_str(buf: bytes, at: int = 0) -> tuple[bytes, int]:
    """A plain (uncompressed) RDB string at ``at``: (bytes, offset after it)."""
    first = buf[at]
    if first < 0x40:
        n, head = first, 1
    elif first < 0x80:
        n, head = ((first & 0x3F) << 8) | buf[at + 1], 2
    elif first == 0x80:
        n, head = struct.unpack_from(">I", buf, at + 1)[0], 5
    else:
        raise AssertionError(f"not a plain string at {at} (0x{first:02x}): dump with rdbcompression no")
    return buf[at + head:at + head + n], at + head + n


def lzf_literal(data: bytes) -> bytes:
    """``data`` as an RDB LZF string made only of literal runs (valid LZF, not smaller)."""
    runs = b"".join(bytes([len(data[i:i + 32]) - 1]) + data[i:i + 32] for i in range(0, len(data), 32))
    return b"\xc3" + enc_len(len(runs)) + enc_len(len(data)) + runs


# ------------------------------------------------------------------------------------------ encoders


def ziplist_entry(value: Value, prevlen: int) -> bytes:
    prev = bytes([prevlen]) if prevlen < 254 else b"\xfe" + struct.pack("<I", prevlen)
    if isinstance(value, int):
        if 0 <= value <= 12:
            return prev + bytes([0xF1 + value])
        if -128 <= value <= 127:
            return prev + b"\xfe" + struct.pack("<b", value)
        if -32768 <= value <= 32767:
            return prev + b"\xc0" + struct.pack("<h", value)
        return prev + b"\xe0" + struct.pack("<q", value)
    n = len(value)
    if n < 64:
        head = bytes([n])
    elif n < 16384:
        head = bytes([0x40 | (n >> 8), n & 0xFF])
    else:
        head = b"\x80" + struct.pack(">I", n)
    return prev + head + value


def ziplist(values: list[Value]) -> bytes:
    """A valid ziplist of ``values`` (zlbytes, zltail, zllen, entries, 0xff)."""
    body, prevlen, tail = b"", 0, 10
    for value in values:
        entry = ziplist_entry(value, prevlen)
        tail = 10 + len(body)
        body += entry
        prevlen = len(entry)
    size = 10 + len(body) + 1
    return struct.pack("<IIH", size, tail, len(values)) + body + b"\xff"


def _lp_backlen(n: int) -> bytes:
    if n <= 127:
        return bytes([n])
    if n < 16383:
        return bytes([n >> 7, (n & 127) | 128])
    return bytes([n >> 14, ((n >> 7) & 127) | 128, (n & 127) | 128])


def listpack_entry(value: Value) -> bytes:
    if isinstance(value, int):
        if 0 <= value <= 127:
            head = bytes([value])
        elif -4096 <= value <= 4095:
            head = bytes([0xC0 | ((value >> 8) & 0x1F), value & 0xFF])
        else:
            head = b"\xf4" + struct.pack("<q", value)
    elif len(value) < 64:
        head = bytes([0x80 | len(value)]) + value
    else:
        head = bytes([0xE0 | (len(value) >> 8), len(value) & 0xFF]) + value
    return head + _lp_backlen(len(head))


def listpack(values: list[Value]) -> bytes:
    """A valid listpack of ``values`` (total bytes, count, entries with back lengths, 0xff)."""
    body = b"".join(listpack_entry(v) for v in values)
    return struct.pack("<IH", 6 + len(body) + 1, len(values)) + body + b"\xff"


def intset(values: list[int], width: int = 2) -> bytes:
    fmt = {2: "h", 4: "i", 8: "q"}[width]
    return struct.pack("<II", width, len(values)) + struct.pack(f"<{len(values)}{fmt}", *values)


def zipmap(pairs: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(bytes([len(k)]) + k + bytes([len(v)]) + b"\x00" + v for k, v in pairs)
    return bytes([len(pairs)]) + body + b"\xff"


def pairs(n: int, prefix: bytes = b"f") -> list[Value]:
    out: list[Value] = []
    for i in range(n):
        out += [prefix + str(i).encode(), i * 7]
    return out


def quicklist2(nodes: list[bytes], plain: tuple[bytes, ...] = ()) -> bytes:
    """Type-18 value: PACKED listpack ``nodes`` then PLAIN ``plain`` nodes."""
    out = enc_len(len(nodes) + len(plain))
    out += b"".join(enc_len(2) + enc_str(n) for n in nodes)
    return out + b"".join(enc_len(1) + enc_str(p) for p in plain)


def stream2(lp: bytes) -> bytes:
    """A type-19 stream of one node holding listpack ``lp``; no consumer groups."""
    node_key = struct.pack(">QQ", 1, 0)
    out = enc_len(1) + enc_str(node_key) + enc_str(lp)
    out += enc_len(1) + enc_len(1) + enc_len(0)                            # length, last id
    out += enc_len(1) + enc_len(0) + enc_len(0) + enc_len(0) + enc_len(1)  # first id, max deleted, added
    return out + enc_len(0)                                                # consumer groups


def stream_listpack() -> bytes:
    """The listpack of a stream node with one entry (master entry: count, deleted, fields, 0; entry)."""
    return listpack([1, 0, 1, b"f", 0, 2, 0, 0, b"v", 4])


# ------------------------------------------------------------------------------------------ damage


def patched(blob: bytes, at: int, new: bytes) -> bytes:
    if at < 0:
        at += len(blob)
    return blob[:at] + new + blob[at + len(new):]


def with_count(blob: bytes, count_at: int, count: int) -> bytes:
    return patched(blob, count_at, struct.pack("<H", count))


def grown(blob: bytes, extra: bytes, size_fmt: str = "<I") -> bytes:
    """``blob`` with ``extra`` bytes after its terminator, its size field (at 0) updated."""
    data = blob + extra
    return struct.pack(size_fmt, len(data)) + data[4:]


def valid_fixtures() -> dict[str, bytes]:
    """Hand-encoded values of every encoding Redis 7.0 cannot write any more (or writes rarely)."""
    big = b"x" * 300
    plain_node_list = quicklist2([listpack([b"a", 7])], plain=(big,))
    wide_listpack = listpack([b"f", big, b"g", -5000])
    return {
        "list (type 1)": rdb_file([(T_LIST, b"l", enc_len(2) + enc_str(b"a") + enc_str(b"b"))]),
        "zset with text scores (type 3)": rdb_file([(T_ZSET, b"z", enc_len(1) + enc_str(b"m") + b"\x031.5")]),
        "zipmap hash": rdb_file([(T_ZIPMAP, b"h", enc_str(zipmap([(b"a", b"1"), (b"b", b"2")])))]),
        "list ziplist": rdb_file([(T_LIST_ZIPLIST, b"l", enc_str(ziplist([b"a", 5, -300, 1 << 40, big, b"after",
                                                                         70000])))]),
        "zset ziplist": rdb_file([(T_ZSET_ZIPLIST, b"z", enc_str(ziplist([b"m1", b"1.5", b"m2", 2])))]),
        "hash ziplist": rdb_file([(T_HASH_ZIPLIST, b"h", enc_str(ziplist(pairs(5))))]),
        "hash ziplist, LZF": rdb_file([(T_HASH_ZIPLIST, b"h", lzf_literal(ziplist(pairs(40))))]),
        "quicklist of ziplists": rdb_file([(T_QUICKLIST, b"q", enc_len(2) + enc_str(ziplist([b"a", 1]))
                                            + enc_str(ziplist([big])))]),
        "quicklist-v2 with a PLAIN node": rdb_file([(T_QUICKLIST2, b"q", plain_node_list)]),
        "hash listpack, 12-bit strings": rdb_file([(T_HASH_LISTPACK, b"h", enc_str(wide_listpack))]),
        "intset of 8-byte values": rdb_file([(T_INTSET, b"s", enc_str(intset([-(1 << 40), 3, 1 << 40], 8)))]),
        "stream node": rdb_file([(T_STREAM2, b"x", stream2(stream_listpack()))]),
    }


def corrupt_fixtures() -> dict[str, bytes]:
    """name -> a whole RDB (valid CRC64) that Redis refuses: empty aggregates, damaged encodings."""
    zl = ziplist(pairs(3))
    lp = listpack(pairs(3))
    ist = intset([1, 2, 3])
    fixtures: dict[str, Callable[[], bytes]] = {
        # empty aggregates (corrupt_empty_keys.rdb)
        "empty set": lambda: rdb_file([(T_SET, b"set", enc_len(0))]),
        "empty list": lambda: rdb_file([(T_LIST, b"list", enc_len(0))]),
        "empty hash": lambda: rdb_file([(T_HASH, b"hash", enc_len(0))]),
        "empty zset": lambda: rdb_file([(T_ZSET2, b"zset", enc_len(0))]),
        "empty zset (text scores)": lambda: rdb_file([(T_ZSET, b"zset", enc_len(0))]),
        "empty intset": lambda: rdb_file([(T_INTSET, b"set", enc_str(intset([])))]),
        "empty hash listpack": lambda: rdb_file([(T_HASH_LISTPACK, b"hash", enc_str(listpack([])))]),
        "empty zset listpack": lambda: rdb_file([(T_ZSET_LISTPACK, b"zset", enc_str(listpack([])))]),
        "empty hash ziplist": lambda: rdb_file([(T_HASH_ZIPLIST, b"hash", enc_str(ziplist([])))]),
        "empty zset ziplist": lambda: rdb_file([(T_ZSET_ZIPLIST, b"zset", enc_str(ziplist([])))]),
        "empty list ziplist": lambda: rdb_file([(T_LIST_ZIPLIST, b"list", enc_str(ziplist([])))]),
        "empty zipmap": lambda: rdb_file([(T_ZIPMAP, b"hash", enc_str(zipmap([])))]),
        "quicklist without nodes": lambda: rdb_file([(T_QUICKLIST2, b"list", enc_len(0))]),
        "quicklist-v2 of one empty listpack": lambda: rdb_file([(T_QUICKLIST2, b"list", quicklist2([listpack([])]))]),
        "quicklist of one empty ziplist": lambda: rdb_file([(T_QUICKLIST, b"list", enc_len(1) + enc_str(ziplist([])))]),
        "stream node with an empty listpack": lambda: rdb_file([(T_STREAM2, b"x", stream2(listpack([])))]),
        # ziplist integrity (corrupt_ziplist.rdb)
        "hash ziplist: entry count off by one": lambda: rdb_file([(T_HASH_ZIPLIST, b"h", enc_str(
            with_count(zl, 8, 7)))]),
        "hash ziplist: bad prevlen": lambda: rdb_file([(T_HASH_ZIPLIST, b"h", enc_str(
            patched(zl, 10 + len(ziplist_entry(b"f0", 0)), b"\x09")))]),
        "hash ziplist: no terminator": lambda: rdb_file([(T_HASH_ZIPLIST, b"h", enc_str(patched(zl, -1, b"\xfe")))]),
        "hash ziplist: zlbytes too big": lambda: rdb_file([(T_HASH_ZIPLIST, b"h", enc_str(
            patched(zl, 0, struct.pack("<I", len(zl) + 4))))]),
        "hash ziplist: bytes after the terminator": lambda: rdb_file([(T_HASH_ZIPLIST, b"h", enc_str(
            grown(zl, b"\x00\xff")))]),
        "hash ziplist: tail offset wrong": lambda: rdb_file([(T_HASH_ZIPLIST, b"h", enc_str(
            patched(zl, 4, struct.pack("<I", 10))))]),
        "hash ziplist: string longer than the ziplist": lambda: rdb_file([(T_HASH_ZIPLIST, b"h", enc_str(
            patched(zl, 11, b"\x3f")))]),
        "hash ziplist: invalid encoding byte": lambda: rdb_file([(T_HASH_ZIPLIST, b"h", enc_str(
            patched(zl, 11, b"\xc5")))]),
        "hash ziplist: odd entry count": lambda: rdb_file([(T_HASH_ZIPLIST, b"h", enc_str(
            ziplist(pairs(2) + [b"x"])))]),
        "hash ziplist: duplicate field": lambda: rdb_file([(T_HASH_ZIPLIST, b"h", enc_str(
            ziplist([b"f", 1, b"f", 2])))]),
        "zset ziplist: entry count off by one": lambda: rdb_file([(T_ZSET_ZIPLIST, b"z", enc_str(
            with_count(zl, 8, 5)))]),
        "list ziplist: no terminator": lambda: rdb_file([(T_LIST_ZIPLIST, b"l", enc_str(patched(zl, -1, b"\x00")))]),
        "quicklist ziplist node: entry count off by one": lambda: rdb_file([(T_QUICKLIST, b"q", enc_len(1) + enc_str(
            with_count(zl, 8, 2)))]),
        "LZF-compressed hash ziplist: count off by one": lambda: rdb_file([(T_HASH_ZIPLIST, b"h", lzf_literal(
            with_count(zl, 8, 4)))]),
        # listpack integrity
        "hash listpack: no terminator": lambda: rdb_file([(T_HASH_LISTPACK, b"h", enc_str(patched(lp, -1, b"\x01")))]),
        "hash listpack: total bytes wrong": lambda: rdb_file([(T_HASH_LISTPACK, b"h", enc_str(
            patched(lp, 0, struct.pack("<I", len(lp) - 1))))]),
        "hash listpack: element count off by one": lambda: rdb_file([(T_HASH_LISTPACK, b"h", enc_str(
            with_count(lp, 4, 7)))]),
        "hash listpack: back length wrong": lambda: rdb_file([(T_HASH_LISTPACK, b"h", enc_str(
            patched(lp, 6 + 3, b"\x02")))]),
        "hash listpack: string longer than the listpack": lambda: rdb_file([(T_HASH_LISTPACK, b"h", enc_str(
            patched(lp, 6, b"\xbf")))]),
        "hash listpack: invalid encoding byte": lambda: rdb_file([(T_HASH_LISTPACK, b"h", enc_str(
            patched(lp, 6, b"\xf7")))]),
        "hash listpack: bytes after the terminator": lambda: rdb_file([(T_HASH_LISTPACK, b"h", enc_str(
            grown(lp, b"\x01\x01\xff")))]),
        "hash listpack: duplicate field": lambda: rdb_file([(T_HASH_LISTPACK, b"h", enc_str(
            listpack([b"f", 1, b"f", 2])))]),
        "zset listpack: element count off by one": lambda: rdb_file([(T_ZSET_LISTPACK, b"z", enc_str(
            with_count(lp, 4, 5)))]),
        "quicklist-v2 listpack node: no terminator": lambda: rdb_file([(T_QUICKLIST2, b"q", quicklist2(
            [patched(lp, -1, b"\x00")]))]),
        "stream listpack: no terminator": lambda: rdb_file([(T_STREAM2, b"x", stream2(
            patched(stream_listpack(), -1, b"\x00")))]),
        # intset integrity
        "intset: length says 4 values, holds 3": lambda: rdb_file([(T_INTSET, b"s", enc_str(
            patched(ist, 4, struct.pack("<I", 4))))]),
        "intset: encoding 3 bytes": lambda: rdb_file([(T_INTSET, b"s", enc_str(
            patched(ist, 0, struct.pack("<I", 3))))]),
        "intset: values not sorted": lambda: rdb_file([(T_INTSET, b"s", enc_str(intset([1, 3, 2])))]),
        "intset: duplicate value": lambda: rdb_file([(T_INTSET, b"s", enc_str(intset([1, 2, 2])))]),
        # zipmap integrity
        "zipmap: pair count off by one": lambda: rdb_file([(T_ZIPMAP, b"h", enc_str(
            patched(zipmap([(b"a", b"1")]), 0, b"\x02")))]),
        # LZF
        "LZF data expands to less than its recorded length": lambda: rdb_file([(T_HASH_LISTPACK, b"h", (
            b"\xc3" + enc_len(len(lp) + 1) + enc_len(len(lp) + 5) + bytes([len(lp) - 1]) + lp))]),
    }
    return {name: make() for name, make in fixtures.items()}


# What the built-in check must say about each corrupt fixture (a part of its error message).
EXPECTED_ERROR = {
    **{name: "Redis never saves an empty key" for name in (
        "empty set", "empty list", "empty hash", "empty zset", "empty zset (text scores)", "empty hash listpack",
        "empty zset listpack", "empty hash ziplist", "empty zset ziplist", "empty list ziplist", "empty zipmap",
        "quicklist without nodes", "quicklist-v2 of one empty listpack", "quicklist of one empty ziplist")},
    "empty intset": "intset is empty",
    "stream node with an empty listpack": "empty listpack inside the stream node",
    "hash ziplist: entry count off by one": "ziplist header counts 7 entries but it holds 6",
    "hash ziplist: bad prevlen": "records a previous entry of 9 bytes, but the previous entry has 4",
    "hash ziplist: no terminator": "ziplist does not end with the terminator 0xff",
    "hash ziplist: zlbytes too big": "ziplist header says 34 bytes but the payload has 30",
    "hash ziplist: bytes after the terminator": "ziplist entries end at byte 29, not at its terminator",
    "hash ziplist: tail offset wrong": "ziplist tail offset 10 does not point at its last entry",
    "hash ziplist: string longer than the ziplist": "runs past the terminator",
    "hash ziplist: invalid encoding byte": "invalid encoding byte 0xc5",
    "hash ziplist: odd entry count": "hash ziplist holds 5 entries, not field/value pairs",
    "hash ziplist: duplicate field": "hash ziplist holds the same field or member twice",
    "zset ziplist: entry count off by one": "ziplist header counts 5 entries but it holds 6",
    "list ziplist: no terminator": "ziplist does not end with the terminator 0xff",
    "quicklist ziplist node: entry count off by one": "ziplist header counts 2 entries but it holds 6",
    "LZF-compressed hash ziplist: count off by one": "ziplist header counts 4 entries but it holds 6",
    "hash listpack: no terminator": "listpack does not end with the terminator 0xff",
    "hash listpack: total bytes wrong": "listpack header says 24 bytes but the payload has 25",
    "hash listpack: element count off by one": "listpack header counts 7 elements but it holds 6",
    "hash listpack: back length wrong": "back length 2 differs from its size 3",
    "hash listpack: string longer than the listpack": "runs past the terminator",
    "hash listpack: invalid encoding byte": "invalid encoding byte 0xf7",
    "hash listpack: bytes after the terminator": "listpack entries end at byte 24, not at its terminator",
    "hash listpack: duplicate field": "hash listpack holds the same field or member twice",
    "zset listpack: element count off by one": "listpack header counts 5 elements but it holds 6",
    "quicklist-v2 listpack node: no terminator": "listpack does not end with the terminator 0xff",
    "stream listpack: no terminator": "listpack does not end with the terminator 0xff",
    "intset: length says 4 values, holds 3": "intset header says 4 values of 2 bytes",
    "intset: encoding 3 bytes": "intset encoding 3 is not 2, 4 or 8",
    "intset: values not sorted": "intset value 2 (2) is not greater than the one before (3)",
    "intset: duplicate value": "intset value 2 (2) is not greater than the one before (2)",
    "zipmap: pair count off by one": "zipmap header counts 2 pairs but it holds 1",
    "LZF data expands to less than its recorded length": "invalid LZF data",
}
