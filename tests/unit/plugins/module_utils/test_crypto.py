"""The artifact format detects every kind of damage, each with its own error class."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline_test_helpers import read_artifact, split_records, write_artifact

from ansible_collections.lifeboat.dr.plugins.module_utils.format import crypto
from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    FormatError,
    IntegrityError,
    ReorderedData,
    TamperedData,
    TruncatedData,
    UnknownFormatVersion,
    WrongKey,
)

CHUNK = 64
DATA = bytes(range(256)) * 2 + b"tail"  # 516 bytes -> 9 chunks of 64 with codec none (8 full + final of 4)


@pytest.fixture()
def art(tmp_path: Path):
    return write_artifact(tmp_path / "a", DATA, chunk_size=CHUNK)


def rewrite(art, tmp_path: Path, raw: bytes, name: str = "damaged") -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def assemble(header: bytes, records: list[bytes], trailer: bytes) -> bytes:
    return header + b"".join(records) + trailer


def test_layout_is_header_chunks_trailer(art):
    raw = art.path.read_bytes()
    header, records, trailer = split_records(raw, CHUNK)
    assert header[:4] == b"LBA1" and int.from_bytes(header[4:6], "big") == 1
    assert len(records) == 9 == art.record["chunks"]
    assert all(len(r) == CHUNK + 16 for r in records[:-1]) and len(records[-1]) == 4 + 16
    assert trailer == b"LBA1END\0" + (9).to_bytes(8, "big")
    assert art.record["stored_size"] == len(raw)


def test_empty_input_still_has_one_final_chunk(tmp_path):
    art = write_artifact(tmp_path / "e", b"", chunk_size=CHUNK)
    assert art.record["chunks"] == 1
    assert art.record["stored_size"] == crypto.HEADER_SIZE + crypto.TAG_SIZE + crypto.TRAILER_SIZE
    assert read_artifact(art) == b""


def test_plaintext_multiple_of_chunk_size_ends_with_full_final_chunk(tmp_path):
    art = write_artifact(tmp_path / "m", b"x" * (3 * CHUNK), chunk_size=CHUNK)
    assert art.record["chunks"] == 3
    assert read_artifact(art, with_record=False) == b"x" * (3 * CHUNK)


def test_every_single_bit_flip_is_detected(tmp_path):
    art = write_artifact(tmp_path / "tiny", b"0123456789" * 9, chunk_size=32)  # 3 chunks, 218 bytes
    raw = bytearray(art.path.read_bytes())
    target = tmp_path / "flipped"
    for bit in range(len(raw) * 8):
        raw[bit // 8] ^= 1 << (bit % 8)
        target.write_bytes(raw)
        raw[bit // 8] ^= 1 << (bit % 8)
        for with_record in (False, True):
            with pytest.raises((IntegrityError, FormatError, WrongKey)):
                read_artifact(art, path=target, with_record=with_record)


def test_flipped_ciphertext_bit_is_tampered_data_at_that_chunk(art, tmp_path):
    raw = bytearray(art.path.read_bytes())
    raw[crypto.HEADER_SIZE + 3 * (CHUNK + 16) + 5] ^= 0x10
    with pytest.raises(TamperedData, match="chunk 3 .*failed authentication"):
        read_artifact(art, path=rewrite(art, tmp_path, bytes(raw)), with_record=False)


def test_flipped_header_bit_is_tampered_header(art, tmp_path):
    raw = bytearray(art.path.read_bytes())
    raw[25] ^= 1  # inside the salt
    with pytest.raises(TamperedData, match="header"):
        read_artifact(art, path=rewrite(art, tmp_path, bytes(raw)))


@pytest.mark.parametrize("with_record", [False, True])
def test_truncation_at_every_chunk_boundary_and_mid_chunk_is_truncated_data(art, tmp_path, with_record):
    raw = art.path.read_bytes()
    cuts = [0, 3, crypto.HEADER_SIZE - 1, crypto.HEADER_SIZE, len(raw) - 1, len(raw) - crypto.TRAILER_SIZE]
    for k in range(1, 9):
        boundary = crypto.HEADER_SIZE + k * (CHUNK + 16)
        cuts += [boundary, boundary - 7]
    for cut in cuts:
        with pytest.raises(TruncatedData):
            read_artifact(art, path=rewrite(art, tmp_path, raw[:cut]), with_record=with_record)


def test_dropping_the_final_chunk_is_truncated_data(art, tmp_path):
    header, records, trailer = split_records(art.path.read_bytes(), CHUNK)
    damaged = assemble(header, records[:-1], trailer)
    with pytest.raises(TruncatedData, match="not its final chunk"):
        read_artifact(art, path=rewrite(art, tmp_path, damaged), with_record=False)


def test_data_appended_after_the_end_is_detected(art, tmp_path):
    damaged = art.path.read_bytes() + b"more"
    with pytest.raises(TamperedData, match="after its end marker"):
        read_artifact(art, path=rewrite(art, tmp_path, damaged), with_record=False)


@pytest.mark.parametrize("change, message", [
    (lambda r: [r[0], r[2], r[1], *r[3:]], "position 1 holds chunk 2"),  # swapped
    (lambda r: [r[0], r[1], r[1], *r[2:]], "position 2 holds chunk 1 .duplicated"),  # duplicated
    (lambda r: [r[0], *r[2:]], "position 1 holds chunk 2"),  # dropped
    (lambda r: [*r[:3], r[7], *r[3:7], r[8]], "position 3 holds chunk 7"),  # moved 4 places up
])
def test_reordered_duplicated_dropped_chunks_are_reordered_data(art, tmp_path, change, message):
    header, records, trailer = split_records(art.path.read_bytes(), CHUNK)
    damaged = assemble(header, change(records), trailer)
    with pytest.raises(ReorderedData, match=message):
        read_artifact(art, path=rewrite(art, tmp_path, damaged), with_record=False)


@pytest.mark.parametrize("other", [dict(artifact_path="redis/dump.rdb"), dict(set_id="full_20250130T020000Z_ffffff")])
def test_chunk_transplanted_from_another_artifact_or_set_is_detected(art, tmp_path, other):
    donor = write_artifact(tmp_path / "donor", DATA, key=art.key, chunk_size=CHUNK, **other)
    header, records, trailer = split_records(art.path.read_bytes(), CHUNK)
    donor_records = split_records(donor.path.read_bytes(), CHUNK)[1]
    damaged = assemble(header, [*records[:4], donor_records[4], *records[5:]], trailer)
    with pytest.raises(TamperedData, match="chunk 4 .*tampered, reordered, or from another artifact or set"):
        read_artifact(art, path=rewrite(art, tmp_path, damaged), with_record=False)


def test_whole_artifact_read_as_another_artifact_fails_on_its_header(art):
    with pytest.raises(TamperedData, match="another artifact"):
        read_artifact(art, artifact_path="redis/dump.rdb", with_record=False)
    with pytest.raises(TamperedData, match="header"):
        read_artifact(art, set_id="full_20990101T000000Z_000000", with_record=False)


def test_wrong_key_is_wrong_key_with_explanation(art):
    with pytest.raises(WrongKey, match="another backup set, or the artifact header is damaged"):
        read_artifact(art, key=os.urandom(32))


def test_unknown_format_version_is_refused(art, tmp_path):
    raw = bytearray(art.path.read_bytes())
    raw[4:6] = (2).to_bytes(2, "big")
    with pytest.raises(UnknownFormatVersion, match="version 2"):
        read_artifact(art, path=rewrite(art, tmp_path, bytes(raw)), with_record=False)


def test_not_an_artifact_is_format_error(art, tmp_path):
    with pytest.raises(FormatError, match="not a Lifeboat artifact"):
        read_artifact(art, path=rewrite(art, tmp_path, b"-- MariaDB dump\n" * 10), with_record=False)


def test_fresh_salt_and_nonce_prefix_for_every_artifact(tmp_path):
    key = os.urandom(32)
    a = write_artifact(tmp_path / "1", DATA, key=key, chunk_size=CHUNK)
    b = write_artifact(tmp_path / "2", DATA, key=key, chunk_size=CHUNK)  # same key, set, path, data
    ha, hb = crypto.parse_header(a.path.read_bytes()), crypto.parse_header(b.path.read_bytes())
    assert ha.salt != hb.salt and ha.nonce_prefix != hb.nonce_prefix
    assert a.path.read_bytes()[crypto.HEADER_SIZE:] != b.path.read_bytes()[crypto.HEADER_SIZE:]


def test_sealer_refuses_misuse():
    sealer = crypto.ChunkSealer(os.urandom(32), "s", "p", 0, chunk_size=8)
    with pytest.raises(ValueError):
        sealer.seal(b"short", final=False)  # non-final chunks are exactly chunk_size
    sealer.seal(b"last", final=True)
    with pytest.raises(ValueError):
        sealer.seal(b"again", final=True)


@settings(max_examples=15, deadline=None)
@given(data=st.binary(max_size=700), chunk_size=st.integers(1, 200),
       codec=st.sampled_from([Codec("none"), Codec("gzip", 1), Codec("zstd", 1)]),
       cut=st.floats(0, 0.999))
def test_any_truncation_is_detected(data, chunk_size, codec, cut):
    with tempfile.TemporaryDirectory() as tmp:
        art = write_artifact(Path(tmp) / "p", data, chunk_size=chunk_size, codec=codec)
        raw = art.path.read_bytes()
        with pytest.raises(TruncatedData):
            read_artifact(art, path=rewrite(art, Path(tmp), raw[:int(len(raw) * cut)]), with_record=False)


def test_the_by_hand_decryption_in_docs_format_crypto_md_works(tmp_path, monkeypatch):
    """docs/format-crypto.md is precise enough for an independent reader: run its snippet."""
    import re

    import zstandard

    doc = (Path(__file__).resolve().parents[4] / "docs" / "format-crypto.md").read_text()
    snippet = re.search(r"## 6\..*?```python\n(.*?)```", doc, re.S).group(1)
    data = b"INSERT INTO t VALUES (1,'x');\n" * 20000
    art = write_artifact(tmp_path / "dump.sql.zst.enc", data, codec=Codec("zstd"), chunk_size=4096)
    monkeypatch.chdir(tmp_path)
    exec(snippet, {"set_id": art.set_id, "path": art.artifact_path, "data_key": art.key})  # noqa: S102
    assert zstandard.ZstdDecompressor().decompressobj().decompress((tmp_path / "dump.sql.zst").read_bytes()) == data
