"""The store option layer turns compression options into a Codec."""

from __future__ import annotations

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.common import codec_from_params, store_argument_spec
from ansible_collections.lifeboat.dr.plugins.module_utils.errors import ConfigError


def test_zstd_gets_the_requested_worker_threads():
    codec = codec_from_params({"compression": "zstd", "compression_level": 5, "compression_threads": 2})
    assert (codec.algorithm, codec.level, codec.threads) == ("zstd", 5, 2)


def test_threads_default_to_compressing_in_the_pipeline_thread():
    assert store_argument_spec()["compression_threads"]["default"] == 0
    assert codec_from_params({"compression": None}).threads == 0


def test_threads_are_ignored_by_gzip():
    assert codec_from_params({"compression": "gzip", "compression_threads": 4}).threads == 0


def test_negative_threads_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="compression_threads must be 0 or more"):
        codec_from_params({"compression": "zstd", "compression_threads": -1})
