"""The RDB walker and CRC64: behaviour on hand-built RDB files (no server needed).

Files written by a real Redis, and agreement with redis-check-rdb, are covered in
tests/integration/test_redis_engine.py.
"""

from __future__ import annotations

import io
import os
import struct

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis import rdb


def enc_len(n: int) -> bytes:
    if n < 64:
        return bytes([n])
    if n < 16384:
        return bytes([0x40 | (n >> 8), n & 0xFF])
    return b"\x80" + struct.pack(">I", n)


def enc_str(s: bytes) -> bytes:
    return enc_len(len(s)) + s


def finish(body: bytes, checksum: bool = True) -> bytes:
    body += b"\xff"
    return body + struct.pack("<Q", rdb.crc64(0, body) if checksum else 0)


def sample_body(version: int = 10) -> bytes:
    """A small RDB body: AUX, two dbs, strings (plain, int-encoded, LZF), a hash, a zset, expiries."""
    out = b"REDIS%04d" % version
    out += b"\xfa" + enc_str(b"redis-ver") + enc_str(b"7.0.15")
    out += b"\xfa" + enc_str(b"ctime") + b"\xc2" + struct.pack("<i", 1700000000)
    out += b"\xfe\x00\xfb\x03\x01"
    out += b"\x00" + enc_str(b"plain") + enc_str(b"value")
    out += b"\x00" + enc_str(b"int8") + b"\xc0\x7f"
    out += b"\xfc" + struct.pack("<q", 4102444800000) + b"\x00" + enc_str(b"ttl") + b"\xc1\x01\x02"
    out += b"\xfe\x03"
    out += b"\x04" + enc_str(b"hash") + enc_len(2) + enc_str(b"f1") + enc_str(b"v1") + enc_str(b"f2") + enc_str(b"v2")
    out += b"\x05" + enc_str(b"zset") + enc_len(1) + enc_str(b"m") + struct.pack("<d", 1.5)
    out += b"\x00" + enc_str(b"lzf") + b"\xc3" + enc_len(4) + enc_len(30) + b"\x00abc"  # skipped by length
    out += b"\xf9\x05\x00" + enc_str(b"freq") + enc_str(b"x")
    return out


def check(data: bytes, **kw) -> rdb.RdbReport:
    return rdb.check_rdb(io.BytesIO(data), chunk_size=kw.pop("chunk_size", 7), **kw)


def test_crc64_matches_the_redis_reference_vector():
    assert rdb.crc64(0, b"123456789") == 0xE9C6D914C4B8D9CA


@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 16) + 13, (1 << 20) * 3 + 5])
def test_crc64_fast_path_equals_the_bytewise_definition(size):
    data = os.urandom(size)
    assert rdb.crc64(0, data) == rdb._crc64_py(0, data)


def test_crc64_can_be_continued_and_combined():
    a, b = os.urandom(70001), os.urandom(12345)
    whole = rdb.crc64(0, a + b)
    assert rdb.crc64(rdb.crc64(0, a), b) == whole
    assert rdb.crc64_combine(rdb.crc64(0, a), rdb.crc64(0, b), len(b)) == whole


def test_a_valid_file_is_accepted_and_counted_per_db():
    data = finish(sample_body())
    report = check(data)
    assert report.ok, report.error
    assert report.version == 10
    assert report.keys_per_db == {0: 3, 3: 4}
    assert report.dbs[0].expires == 1 and report.dbs[0].resize_keys == 3
    assert report.aux["redis-ver"] == "7.0.15" and report.aux["ctime"] == "1700000000"
    assert report.crc_checked and report.crc_stored == report.crc_computed
    assert report.size == len(data) and report.trailing_bytes == 0


def test_every_byte_is_passed_to_the_tee_in_order():
    data = finish(sample_body()) + b"tail"
    seen = []
    report = check(data, on_chunk=seen.append)
    assert report.ok and report.trailing_bytes == 4
    assert b"".join(seen) == data


def test_checksum_zero_means_not_checked_as_in_redis():
    report = check(finish(sample_body(), checksum=False))
    assert report.ok and not report.crc_checked


def test_old_versions_without_checksum_are_walked():
    body = b"REDIS0004\xfe\x00" + b"\x00" + enc_str(b"k") + enc_str(b"v") + b"\x02" + enc_str(b"s") + enc_len(1)
    body += enc_str(b"m")
    report = check(body + b"\xff")
    assert report.ok, report.error
    assert report.version == 4 and report.keys_per_db == {0: 2}
    assert report.crc_stored is None


def test_expiring_keys_are_listed_for_the_load_time_check():
    body = b"REDIS0010\xfe\x00" + b"\xfc" + struct.pack("<q", 1000) + b"\x00" + enc_str(b"old") + enc_str(b"v")
    body += b"\x00" + enc_str(b"keep") + enc_str(b"v")
    report = check(finish(body))
    assert report.expiring == [(0, 1000)]
    assert report.expected_keys_after_load(2000) == {0: 1}
    assert report.expected_keys_after_load(999) == {0: 2}


def test_a_flipped_byte_is_caught_by_the_checksum_with_its_offset():
    data = bytearray(finish(sample_body()))
    pos = data.index(b"value") + 2
    data[pos] ^= 0x20
    report = check(bytes(data))
    assert not report.ok
    assert "CRC64 mismatch" in report.error
    assert report.error_offset == len(data) - 8


@pytest.mark.parametrize("cut", [3, 9, 20, 45, 60])
def test_truncation_is_reported_at_the_end_of_the_data(cut):
    data = finish(sample_body())[:cut]
    report = check(data)
    assert not report.ok
    assert report.error_offset == cut or cut < 9
    assert "end of data" in report.error or "magic" in report.error


def test_bad_magic_and_unsupported_versions_are_rejected():
    assert "magic" in check(b"NOTREDIS0010\xff").error
    report = check(finish(sample_body(version=11)))
    assert not report.ok and report.error_offset == 5 and "version 11" in report.error


def test_an_unknown_type_is_reported_at_its_offset_even_with_a_fixed_checksum():
    body = sample_body()
    pos = body.index(b"\x04" + enc_str(b"hash"))
    bad = body[:pos] + b"\x08" + body[pos + 1:]  # type 8 does not exist
    report = check(finish(bad))
    assert not report.ok
    assert report.error_offset == pos
    assert "0x08" in report.error


def test_a_length_running_past_the_end_is_truncation_even_with_a_fixed_checksum():
    body = sample_body()
    pos = body.index(enc_str(b"value"))
    bad = body[:pos] + b"\x80\x00\x10\x00\x00" + body[pos + 6:]
    report = check(finish(bad))
    assert not report.ok and "end of data" in report.error


def listpack(*strings: bytes) -> bytes:
    """A valid listpack of short strings (6-bit length entries, 1-byte back lengths)."""
    body = b"".join(bytes([0x80 | len(v)]) + v + bytes([1 + len(v)]) for v in strings)
    return struct.pack("<IH", 6 + len(body) + 1, len(strings)) + body + b"\xff"


def test_streams_and_quicklists_are_walked_exactly():
    node = b"\x00" * 8 + b"\x00" * 7 + b"\x01"
    body = b"REDIS0010\xfe\x00"
    body += b"\x12" + enc_str(b"list") + enc_len(2) + enc_len(2) + enc_str(listpack(b"a", b"b")) + enc_len(1)
    body += enc_str(b"x")
    body += b"\x13" + enc_str(b"stream") + enc_len(1) + enc_str(node) + enc_str(listpack(b"entry"))
    body += enc_len(1) + enc_len(1) + enc_len(1)  # length, last id
    body += enc_len(1) + enc_len(1) + enc_len(0) + enc_len(0) + enc_len(1)  # first id, max deleted, added
    body += enc_len(1) + enc_str(b"group") + enc_len(1) + enc_len(1) + enc_len(1)  # one group
    body += enc_len(1) + node + struct.pack("<q", 1) + enc_len(1)  # PEL
    body += enc_len(1) + enc_str(b"consumer") + struct.pack("<q", 1) + enc_len(1) + node
    report = check(finish(body))
    assert report.ok, report.error
    assert report.keys_per_db == {0: 2}
    bad = body.replace(enc_len(2) + enc_str(listpack(b"a", b"b")), enc_len(7) + enc_str(listpack(b"a", b"b")))
    report = check(finish(bad))
    assert not report.ok and "container 7" in report.error


def test_functions_are_counted_and_prerelease_format_rejected():
    body = b"REDIS0010" + b"\xf5" + enc_str(b"#!lua name=x\n") + b"\xfe\x00" + b"\x00" + enc_str(b"k") + enc_str(b"v")
    report = check(finish(body))
    assert report.ok and report.functions == 1
    assert "pre-release function" in check(finish(b"REDIS0010\xf6" + enc_str(b"x"))).error


@pytest.mark.parametrize("chunk", [7, 65537, 100_003, 1 << 20])
def test_large_values_checksum_the_same_whatever_the_chunking(chunk):
    big = os.urandom(300_001)
    body = b"REDIS0010\xfe\x00" + b"\x00" + enc_str(b"big") + enc_str(big) + b"\x00" + enc_str(b"k") + enc_str(b"v")
    report = check(finish(body), chunk_size=chunk)
    assert report.ok, report.error
    assert report.keys_per_db == {0: 2}
    damaged = bytearray(finish(body))
    damaged[200_000] ^= 1
    assert "CRC64 mismatch" in check(bytes(damaged), chunk_size=chunk).error


def test_without_numpy_the_same_checksums_come_out(monkeypatch):
    big = os.urandom(200_003)
    data = finish(b"REDIS0010\xfe\x00" + b"\x00" + enc_str(b"big") + enc_str(big))
    with_numpy = check(data, chunk_size=65_000)
    monkeypatch.setattr(rdb, "HAS_NUMPY", False)
    without = check(data, chunk_size=65_000)
    assert with_numpy.ok and without.ok
    assert with_numpy.crc_computed == without.crc_computed == rdb._crc64_py(0, data[:-8])
