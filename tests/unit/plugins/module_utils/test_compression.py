"""Codecs: validation, manifest form, standard containers, bounded decompression."""

from __future__ import annotations

import gzip
import io
import os

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import AUTO_THREADS, Codec
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, FormatError, TamperedData


def compress_all(codec: Codec, data: bytes, piece: int = 1000) -> bytes:
    comp = codec.compressor()
    out = [comp.compress(data[i:i + piece]) for i in range(0, len(data), piece)]
    out.append(comp.flush())
    return b"".join(out)


def test_defaults_are_zstd_level_3_with_automatic_threads():
    assert Codec() == Codec("zstd", None, AUTO_THREADS)
    assert Codec().to_manifest() == {"algorithm": "zstd", "level": 3}
    assert Codec("gzip").to_manifest() == {"algorithm": "gzip", "level": 6}
    assert Codec("none").to_manifest() == {"algorithm": "none", "level": None}


@pytest.mark.parametrize("codec", [Codec("zstd", 19), Codec("gzip", 1), Codec("none")])
def test_manifest_round_trip(codec):
    assert Codec.from_manifest(codec.to_manifest()).to_manifest() == codec.to_manifest()


@pytest.mark.parametrize("kwargs, message", [
    (dict(algorithm="lz4"), "unknown compression algorithm"),
    (dict(algorithm="zstd", level=23), "out of range"),
    (dict(algorithm="gzip", level=10), "out of range"),
    (dict(algorithm="none", level=3), "level given with compression 'none'"),
    (dict(algorithm="zstd", threads=-2), "threads"),
])
def test_invalid_codecs_are_refused_with_a_fix(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Codec(**kwargs)


def test_unknown_header_codec_id_is_a_format_error():
    with pytest.raises(FormatError):
        Codec.from_id(9)


def test_output_is_readable_by_the_standard_tools():
    data = b"INSERT INTO t VALUES (1,'x');\n" * 5000
    assert gzip.decompress(compress_all(Codec("gzip"), data)) == data
    assert zstandard.ZstdDecompressor().decompressobj().decompress(compress_all(Codec("zstd", threads=2), data)) == data
    assert compress_all(Codec("none"), data) == data


@settings(max_examples=20, deadline=None)
@given(data=st.binary(max_size=20000), codec=st.sampled_from([Codec("zstd", 1), Codec("gzip", 1), Codec("none")]),
       size=st.integers(1, 5000))
def test_decompressing_reader_never_returns_more_than_asked(data, codec, size):
    reader = codec.decompressing_reader(io.BytesIO(compress_all(codec, data)))
    out = []
    while part := reader.read(size):
        assert len(part) <= size
        out.append(part)
    assert b"".join(out) == data


@pytest.mark.parametrize("codec", [Codec("zstd"), Codec("gzip")])
def test_a_decompression_bomb_is_read_in_bounded_pieces(codec):
    bomb = compress_all(codec, bytes(64 << 20), piece=1 << 20)  # 64 MiB of zeros -> a few KiB
    reader = codec.decompressing_reader(io.BytesIO(bomb))
    assert len(reader.read(1 << 16)) == 1 << 16


@pytest.mark.parametrize("codec", [Codec("zstd"), Codec("gzip")])
def test_corrupt_streams_raise_tampered_data(codec):
    good = compress_all(codec, os.urandom(5000) * 3)
    with pytest.raises(TamperedData):
        codec.decompressing_reader(io.BytesIO(good[:10] + bytes(200) + good[210:])).read()


def test_cut_gzip_stream_raises_tampered_data():
    """(A cut zstd stream is caught one level up: chunks are authenticated and the
    plaintext size and SHA-256 are compared with the manifest.)"""
    good = compress_all(Codec("gzip"), os.urandom(5000) * 3)
    with pytest.raises(TamperedData, match="ends before its end marker"):
        Codec("gzip").decompressing_reader(io.BytesIO(good[:-5])).read()
