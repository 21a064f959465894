"""The store option layer turns compression options into a Codec."""

from __future__ import annotations

import pytest
import zstandard

from ansible_collections.lifeboat.dr.plugins.module_utils.edge.common import codec_from_params, store_argument_spec
from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import AUTO_THREADS, Codec
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError


def test_zstd_gets_the_requested_worker_threads():
    codec = codec_from_params({"compression": "zstd", "compression_level": 5, "compression_threads": 2})
    assert (codec.algorithm, codec.level, codec.threads) == ("zstd", 5, 2)


def test_unset_threads_leave_the_choice_to_the_engine():
    assert store_argument_spec()["compression_threads"].get("default") is None
    assert codec_from_params({"compression": None}).threads == AUTO_THREADS


def test_an_explicit_zero_is_kept():
    assert codec_from_params({"compression": "zstd", "compression_threads": 0}).threads == 0


def test_a_lone_stream_gets_two_workers_on_a_multi_core_host_only():
    auto = Codec("zstd", 3, AUTO_THREADS)
    assert auto.for_single_stream(cpus=2).workers == 2
    assert auto.for_single_stream(cpus=1).workers == 1
    assert Codec("zstd", 3, 0).for_single_stream(cpus=8).workers == 0
    assert Codec("gzip", 6, AUTO_THREADS).for_single_stream(cpus=8).workers == 0


def test_by_default_zstd_compresses_in_one_worker_thread():
    assert Codec().threads == AUTO_THREADS and Codec().workers == 1
    assert Codec("zstd", 3, 0).workers == 0 and Codec("zstd", 3, 3).workers == 3


@pytest.mark.parametrize("threads", [AUTO_THREADS, 0, 1, 2])
def test_every_thread_setting_makes_a_standard_zstd_stream(threads):
    data = b"lifeboat " * 400_000  # several worker jobs
    compressor = Codec("zstd", 3, threads).compressor()
    stream = b"".join(compressor.compress(data[i:i + 100_000]) for i in range(0, len(data), 100_000))
    stream += compressor.flush()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(stream) == data
    assert Codec.from_id(Codec().codec_id).decompressing_reader(_Bytes(stream)).read(len(data) + 1) == data


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int = -1) -> bytes:
        out, self._data = (self._data, b"") if size < 0 else (self._data[:size], self._data[size:])
        return out


def test_threads_are_ignored_by_gzip():
    assert codec_from_params({"compression": "gzip", "compression_threads": 4}).threads == 0


def test_negative_threads_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="compression_threads must be 0 or more"):
        codec_from_params({"compression": "zstd", "compression_threads": -1})
