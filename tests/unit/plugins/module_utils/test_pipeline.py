"""The streaming pipeline: round trips, atomic publication, bounded memory, progress, verification."""

from __future__ import annotations

import gzip
import os
import random
import stat
import tempfile
import tracemalloc
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline_test_helpers import ARTIFACT, SET_ID, read_artifact, write_artifact

from ansible_collections.lifeboat.dr.plugins.module_utils.format import crypto, pipeline
from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec
from ansible_collections.lifeboat.dr.plugins.module_utils.format.pipeline import (
    TEMP_SUFFIX,
    copy_stream,
    open_artifact_reader,
    open_artifact_writer,
    verify_artifact,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, TamperedData

CODECS = [Codec("none"), Codec("gzip", 1), Codec("zstd", 1), Codec("zstd", 3, threads=2)]


def sql_like(size: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    names = ["alice", "bob", "carol", "dave", "eve", "mallory"]
    lines = []
    total = 0
    while total < size:
        line = (f"INSERT INTO t VALUES ({rnd.randrange(10**9)},'{rnd.choice(names)}{rnd.randrange(1000)}',"
                f"'2025-01-{rnd.randrange(1, 29):02d}',{rnd.random():.6f});\n").encode()
        lines.append(line)
        total += len(line)
    return b"".join(lines)[:size]


@settings(max_examples=25, deadline=None)
@given(data=st.one_of(st.binary(max_size=3000), st.integers(0, 5000).map(lambda n: sql_like(n, n))),
       chunk_size=st.integers(1, 512), codec=st.sampled_from(CODECS),
       pieces=st.integers(1, 5))
def test_round_trip_of_arbitrary_data_chunk_sizes_and_codecs(data, chunk_size, codec, pieces):
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "a"
        with open_artifact_writer(dest, data_key=b"k" * 32, set_id=SET_ID, artifact_path=ARTIFACT, codec=codec,
                                  chunk_size=chunk_size) as writer:
            step = max(1, len(data) // pieces)
            for i in range(0, len(data), step):
                writer.write(bytearray(data[i:i + step]))
        record = writer.close()
        assert record["plaintext_size"] == len(data)
        assert record["stored_size"] == dest.stat().st_size
        with open_artifact_reader(dest, data_key=b"k" * 32, set_id=SET_ID, artifact_path=ARTIFACT,
                                  record=record) as reader:
            assert reader.read() == data
            assert reader.verified


def test_record_describes_the_artifact(tmp_path):
    data = sql_like(300_000)
    art = write_artifact(tmp_path / "a", data, codec=Codec("zstd"), chunk_size=4096)
    import hashlib
    raw = art.path.read_bytes()
    assert art.record == {
        "path": ARTIFACT,
        "stored_size": len(raw),
        "stored_sha256": hashlib.sha256(raw).hexdigest(),
        "plaintext_size": len(data),
        "plaintext_sha256": hashlib.sha256(data).hexdigest(),
        "compression": {"algorithm": "zstd", "level": 3},
        "encryption": {"algorithm": "AES-256-GCM-CHUNKED-v1", "chunk_size": 4096, "kdf": "HKDF-SHA256",
                       "format_version": 1},
        "chunks": art.record["chunks"],
    }
    assert art.record["chunks"] == -(-(len(raw) - crypto.HEADER_SIZE - crypto.TRAILER_SIZE) // (4096 + 16))


@pytest.mark.parametrize("codec", CODECS[1:3])
def test_decrypted_stream_is_a_standard_container(tmp_path, codec):
    """Break-glass: decrypting the chunks gives plain gzip / zstd data the usual tools read."""
    data = sql_like(50_000)
    art = write_artifact(tmp_path / "a", data, codec=codec, chunk_size=1000)
    raw = art.path.read_bytes()
    opener = crypto.ChunkOpener(raw[:crypto.HEADER_SIZE], art.key, SET_ID, ARTIFACT)
    body = raw[crypto.HEADER_SIZE:-crypto.TRAILER_SIZE]
    records = [body[i:i + 1016] for i in range(0, len(body), 1016)]
    compressed = b"".join(opener.open(r, at_end=(i == len(records) - 1)) for i, r in enumerate(records))
    plain = gzip.decompress(compressed) if codec.algorithm == "gzip" else \
        zstandard.ZstdDecompressor().decompressobj().decompress(compressed)
    assert plain == data


def test_destination_appears_only_on_close_and_files_are_0600(tmp_path):
    dest = tmp_path / "a"
    writer = open_artifact_writer(dest, data_key=os.urandom(32), set_id=SET_ID, artifact_path=ARTIFACT)
    writer.write(b"x" * 3_000_000)
    temps = list(tmp_path.iterdir())
    assert not dest.exists()
    assert len(temps) == 1 and temps[0].name.startswith(".a.") and temps[0].name.endswith(TEMP_SUFFIX)
    assert stat.S_IMODE(temps[0].stat().st_mode) == 0o600
    writer.close()
    assert list(tmp_path.iterdir()) == [dest]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_exception_inside_with_leaves_nothing(tmp_path):
    dest = tmp_path / "a"
    with pytest.raises(RuntimeError):
        with open_artifact_writer(dest, data_key=os.urandom(32), set_id=SET_ID, artifact_path=ARTIFACT) as writer:
            writer.write(b"y" * 2_000_000)
            raise RuntimeError("source tool died")
    assert list(tmp_path.iterdir()) == []


def test_abort_removes_the_temp_file_and_is_idempotent(tmp_path):
    writer = open_artifact_writer(tmp_path / "a", data_key=os.urandom(32), set_id=SET_ID, artifact_path=ARTIFACT)
    writer.write(b"z" * 10)
    writer.abort()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        writer.write(b"more")


def test_existing_destination_is_never_overwritten(tmp_path):
    (tmp_path / "a").write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="already exists"):
        open_artifact_writer(tmp_path / "a", data_key=os.urandom(32), set_id=SET_ID, artifact_path=ARTIFACT)
    assert (tmp_path / "a").read_bytes() == b"keep me"


def test_writer_copies_mutable_buffers(tmp_path):
    buf = bytearray(b"A" * 70_000)
    with open_artifact_writer(tmp_path / "a", data_key=b"k" * 32, set_id=SET_ID, artifact_path=ARTIFACT) as writer:
        for _round in range(40):  # 2.8 MB through one reused buffer, as readinto loops do
            writer.write(buf)
            buf[:] = b"B" * len(buf)
    art_data = read_artifact(type("A", (), {"path": tmp_path / "a", "key": b"k" * 32, "record": writer.record,
                                            "set_id": SET_ID, "artifact_path": ARTIFACT})())
    assert art_data == b"A" * 70_000 + b"B" * 70_000 * 39


@pytest.mark.parametrize("lead", [0, 10])  # 10: not at a block boundary, hand_over falls back to a copy
def test_handed_over_blocks_make_the_same_artifact_as_written_bytes(tmp_path, lead):
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.pipeline import BLOCK_SIZE

    data = sql_like(3 * BLOCK_SIZE + 1000)
    records = []
    for name, hand in (("written", False), ("handed", True)):
        with open_artifact_writer(tmp_path / name, data_key=b"k" * 32, set_id=SET_ID, artifact_path=ARTIFACT) as w:
            w.write(data[:lead])
            pos = lead
            while pos < len(data):
                piece = bytearray(data[pos:pos + BLOCK_SIZE])
                assert (w.hand_over if hand else w.write)(piece) == len(piece)
                pos += len(piece)
        records.append(w.record)
        art = type("A", (), {"path": tmp_path / name, "key": b"k" * 32, "record": w.record, "set_id": SET_ID,
                             "artifact_path": ARTIFACT})()
        assert read_artifact(art) == data
    assert records[0]["plaintext_sha256"] == records[1]["plaintext_sha256"]
    assert records[0]["plaintext_size"] == records[1]["plaintext_size"] == len(data)


def test_progress_reports_bytes_and_a_final_report(tmp_path):
    reports = []
    with open_artifact_writer(tmp_path / "a", data_key=b"k" * 32, set_id=SET_ID, artifact_path=ARTIFACT,
                              total_bytes=2_000_000, progress=reports.append) as writer:
        writer.write(sql_like(2_000_000))
    final = reports[-1]
    assert final.final and final.done_bytes == 2_000_000 and final.total_bytes == 2_000_000
    assert final.written_bytes == writer.record["stored_size"]
    read_reports = []
    with open_artifact_reader(tmp_path / "a", data_key=b"k" * 32, set_id=SET_ID, artifact_path=ARTIFACT,
                              record=writer.record, progress=read_reports.append) as reader:
        copy_stream(reader, open(os.devnull, "wb"))
    assert read_reports[-1].final and read_reports[-1].done_bytes == 2_000_000
    assert read_reports[-1].total_bytes == 2_000_000


def test_verify_artifact_checks_hashes_against_the_record(tmp_path):
    art = write_artifact(tmp_path / "a", sql_like(100_000), codec=Codec("zstd"), chunk_size=1024)
    report = verify_artifact(art.path, data_key=art.key, set_id=SET_ID, artifact_path=ARTIFACT, record=art.record)
    assert report["ok"] and report["plaintext_sha256"] == art.record["plaintext_sha256"]
    for field, value in [("plaintext_sha256", "0" * 64), ("plaintext_size", 5), ("stored_sha256", "1" * 64)]:
        bad = dict(art.record, **{field: value})
        with pytest.raises(TamperedData):
            verify_artifact(art.path, data_key=art.key, set_id=SET_ID, artifact_path=ARTIFACT, record=bad)
    with pytest.raises(TamperedData, match="manifest says gzip"):
        verify_artifact(art.path, data_key=art.key, set_id=SET_ID, artifact_path=ARTIFACT,
                        record=dict(art.record, compression={"algorithm": "gzip", "level": 6}))


def test_reader_can_be_closed_early(tmp_path):
    art = write_artifact(tmp_path / "a", sql_like(3_000_000), codec=Codec("zstd"), chunk_size=4096)
    reader = open_artifact_reader(art.path, data_key=art.key, set_id=SET_ID, artifact_path=ARTIFACT)
    assert len(reader.read(10)) == 10
    reader.close()
    with pytest.raises(ValueError):
        reader.read(1)


def test_reader_supports_readinto_and_small_reads(tmp_path):
    data = sql_like(200_000)
    art = write_artifact(tmp_path / "a", data, codec=Codec("gzip"), chunk_size=999)
    with open_artifact_reader(art.path, data_key=art.key, set_id=SET_ID, artifact_path=ARTIFACT,
                              record=art.record) as reader:
        buf = bytearray(777)
        out = bytearray()
        while n := reader.readinto(buf):
            out += buf[:n]
    assert bytes(out) == data


@pytest.mark.parametrize("codec", [Codec("none"), Codec("zstd", 1), Codec("gzip", 1)])
def test_memory_stays_bounded_while_streaming(tmp_path, codec):
    """48 MiB through writer and reader: Python-heap peak stays far below the data size.

    Highly compressible input is the hard case for the reader (a 1 MiB chunk may expand to
    a lot of plaintext), so half of it is zeros.
    """
    block = sql_like(1 << 20) if codec.algorithm != "none" else os.urandom(1 << 20)
    zeros = bytes(1 << 20)
    tracemalloc.start()
    try:
        with open_artifact_writer(tmp_path / "a", data_key=b"k" * 32, set_id=SET_ID, artifact_path=ARTIFACT,
                                  codec=codec) as writer:
            for i in range(48):
                writer.write(block if i % 2 else zeros)
        write_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        with open_artifact_reader(tmp_path / "a", data_key=b"k" * 32, set_id=SET_ID, artifact_path=ARTIFACT,
                                  record=writer.record) as reader:
            while reader.read1(1 << 16):
                pass
        read_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert write_peak < 16 << 20, write_peak
    assert read_peak < 16 << 20, read_peak


def test_the_disk_write_of_each_whole_window_is_started_while_writing(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "_sync_file_range", lambda: lambda fd, start, size, flags: calls.append(
        (start, size, flags)) or 0)
    data = os.urandom(3 * pipeline.WRITEBACK_WINDOW + 12345)  # incompressible: stored about as big
    with open_artifact_writer(tmp_path / "a", data_key=b"k" * 32, set_id=SET_ID, artifact_path=ARTIFACT,
                              codec=Codec("none")) as writer:
        writer.write(data)
    record = writer.close()
    window = pipeline.WRITEBACK_WINDOW
    ends = [start + size for start, size, _flags in calls]
    assert [start for start, _size, _flags in calls] == [0, *ends[:-1]]  # contiguous, each byte once
    assert all(end % window == 0 for end in ends) and {flags for *_x, flags in calls} == {2}  # _WRITE only
    assert ends[-1] == record["stored_size"] - record["stored_size"] % window  # up to the last whole window
    assert _read(tmp_path / "a", record) == data


def test_a_refused_early_write_is_not_asked_again_and_the_artifact_is_still_written(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "_sync_file_range", lambda: lambda *args: calls.append(args) or -1)
    data = os.urandom(3 * pipeline.WRITEBACK_WINDOW)
    with open_artifact_writer(tmp_path / "a", data_key=b"k" * 32, set_id=SET_ID, artifact_path=ARTIFACT,
                              codec=Codec("none")) as writer:
        writer.write(data)
    record = writer.close()
    assert len(calls) == 1
    assert _read(tmp_path / "a", record) == data


def _read(path: Path, record: dict) -> bytes:
    with open_artifact_reader(path, data_key=b"k" * 32, set_id=SET_ID, artifact_path=ARTIFACT,
                              record=record) as reader:
        return reader.read()


def test_early_writeback_works_on_this_machine(tmp_path):
    # the real call (Linux): a file written through it reads back the same
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        starter = pipeline.EarlyWriteback(fd)
        os.write(fd, b"x" * (2 * pipeline.WRITEBACK_WINDOW))
        starter.written(2 * pipeline.WRITEBACK_WINDOW)
        if pipeline._sync_file_range() is not None:
            assert starter._started == 2 * pipeline.WRITEBACK_WINDOW
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"x" * (2 * pipeline.WRITEBACK_WINDOW)
