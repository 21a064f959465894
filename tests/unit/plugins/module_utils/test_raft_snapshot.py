"""Raft snapshot checking: a real OpenBao snapshot passes, tampered copies are named and refused."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.vault import engine as ve
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    FormatError,
    TamperedData,
    TruncatedData,
)

# Taken once from an OpenBao 2.7 single-node raft cluster (KV v2 at secret/, one canary secret).
REAL = Path(__file__).parent / "data" / "raft_snapshot.snap"


def members(data: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        for m in tar:
            out[m.name] = tar.extractfile(m).read()
    return out


def pack(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(buf.getvalue())


def sums(files: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in ("meta.json", "state.bin")).encode()


def check(data: bytes, piece: int = 4096) -> ve.SnapshotInfo:
    checker = ve.RaftSnapshotChecker("test snapshot")
    for i in range(0, len(data), piece):  # fed in pieces, as it streams from the server
        checker.feed(data[i:i + piece])
    return checker.finish()


def test_real_snapshot_passes_and_tells_its_raft_index():
    data = REAL.read_bytes()
    meta = json.loads(members(data)["meta.json"])
    info = check(data, piece=777)
    assert info.index == meta["Index"] > 0 and info.term == meta["Term"]
    assert info.state_size == meta["Size"]
    assert info.compressed_size == len(data)
    assert info.compressed_sha256 == hashlib.sha256(data).hexdigest()
    assert ve.check_snapshot_file(REAL).index == info.index


def test_rebuilt_untampered_copy_passes():
    assert check(pack(members(REAL.read_bytes()))).index > 0


def test_changed_state_is_refused_naming_state_bin():
    files = members(REAL.read_bytes())
    state = bytearray(files["state.bin"])
    state[len(state) // 2] ^= 0x01
    files["state.bin"] = bytes(state)
    with pytest.raises(TamperedData, match="state.bin"):
        check(pack(files))


def test_rewritten_sums_do_not_hide_a_wrong_size_in_meta():
    files = members(REAL.read_bytes())
    meta = json.loads(files["meta.json"])
    meta["Size"] += 1
    files["meta.json"] = json.dumps(meta).encode()
    files["SHA256SUMS"] = sums(files)
    with pytest.raises(TamperedData, match="meta.json says state.bin"):
        check(pack(files))


def test_changed_sums_file_is_refused():
    files = members(REAL.read_bytes())
    files["SHA256SUMS"] = files["SHA256SUMS"].replace(files["SHA256SUMS"][:4], b"0000", 1)
    with pytest.raises(TamperedData, match="differs from its SHA256SUMS"):
        check(pack(files))


def test_truncated_snapshot_is_refused():
    data = REAL.read_bytes()
    with pytest.raises((TruncatedData, FormatError)):
        check(data[: len(data) // 2])


def test_flipped_compressed_byte_is_refused():
    data = bytearray(REAL.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with pytest.raises((TamperedData, FormatError, TruncatedData)):
        check(bytes(data))


def test_not_a_snapshot():
    with pytest.raises(FormatError, match="not a gzip"):
        check(b"this is not a snapshot at all" * 10)
    with pytest.raises(FormatError, match="lacks"):
        check(pack({"hello.txt": b"hi"}))


class _Keyring:
    def __init__(self, transit: bool) -> None:
        self.has_transit = transit


def test_transit_kek_is_refused_for_vault_snapshots():
    with pytest.raises(ConfigError, match="transit") as err:
        ve.refuse_transit_kek(_Keyring(True))
    assert "key_file" in str(err.value)
    ve.refuse_transit_kek(_Keyring(False))
