"""lifeboat-decrypt, the break-glass reader, run as a real command."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

SHIM = Path(sys.executable).parent / "lifeboat-decrypt"
PLAINTEXT = os.urandom(1_500_000) + b"the end\n" * 100_000  # several 1 MiB chunks


def decrypt(*args: str | Path) -> subprocess.CompletedProcess:
    command = [str(SHIM)] if SHIM.exists() else [
        sys.executable, "-m", "ansible_collections.lifeboat.dr.plugins.module_utils.edge.breakglass"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A published set written under a primary and an escrow key; returns (artifact, primary, escrow, tmp)."""
    tmp = tmp_path_factory.mktemp("breakglass")
    keys.create_key_file(tmp / "primary.key")
    keys.create_key_file(tmp / "escrow.key")
    ring = keys.KeyRing(keys.FileKEK.load(tmp / "primary.key"), [keys.FileKEK.load(tmp / "escrow.key")])
    store = Store(tmp / "store", reserve_bytes=0)
    with store.begin_set("app", ["app"], ring) as writer:
        with writer.artifact("app", "files.tar") as out:
            out.write(PLAINTEXT)
        writer.write_json("app", "inventory.json", {"files": 3})
        manifest = writer.publish(quick_verify=False)
    return store.root / manifest["id"] / "app" / "files.tar", tmp / "primary.key", tmp / "escrow.key", tmp


def test_decrypts_to_stdout_with_the_primary_or_the_escrow_key(published):
    artifact, primary, escrow = published[:3]
    for key in (primary, escrow):
        result = decrypt("--key-file", key, artifact)
        assert result.returncode == 0, result.stderr
        assert result.stdout == PLAINTEXT and result.stderr == b""


def test_output_file_appears_only_when_everything_authenticates(published, tmp_path):
    artifact, primary = published[:2]
    target = tmp_path / "files.tar"
    assert decrypt("--key-file", primary, "-o", target, artifact).returncode == 0
    assert target.read_bytes() == PLAINTEXT and stat.S_IMODE(target.stat().st_mode) == 0o600


def test_wrong_key_fails_with_one_clear_line_and_no_output(published, tmp_path):
    artifact = published[0]
    keys.create_key_file(tmp_path / "stranger.key")
    result = decrypt("--key-file", tmp_path / "stranger.key", artifact)
    assert result.returncode == 3
    assert result.stdout == b""
    message = result.stderr.decode()
    assert message.count("\n") == 1 and message.startswith("lifeboat-decrypt: error: KeyUnavailable")
    assert "nothing was written" in message


def test_missing_manifest_is_reported(published, tmp_path):
    artifact, primary = published[:2]
    loose = tmp_path / "files.tar"
    loose.write_bytes(artifact.read_bytes())
    result = decrypt("--key-file", primary, loose)
    assert result.returncode == 5 and result.stdout == b""
    assert b"no backup_manifest.json found" in result.stderr


def copy_set(artifact: Path, dest: Path) -> Path:
    """A copy of the artifact's whole set under ``dest``; returns the copied artifact."""
    import shutil

    set_dir = artifact.parents[1]
    shutil.copytree(set_dir, dest / set_dir.name)
    return dest / set_dir.name / artifact.relative_to(set_dir)


def test_tampering_mid_stream_says_output_is_incomplete(published, tmp_path):
    artifact, primary = published[:2]
    copy = copy_set(artifact, tmp_path)
    data = bytearray(copy.read_bytes())
    data[-200] ^= 0x40  # inside the last chunk: earlier chunks are already out
    copy.write_bytes(bytes(data))
    result = decrypt("--key-file", primary, copy)
    assert result.returncode == 4
    message = result.stderr.decode()
    assert message.count("\n") == 1
    assert "TamperedData" in message
    assert len(result.stdout) < len(PLAINTEXT)
    if result.stdout:  # some authenticated chunks went out before the bad one: said loudly
        assert f"OUTPUT IS INCOMPLETE: {len(result.stdout)} bytes were written" in message
    else:
        assert "nothing was written" in message
    target = tmp_path / "out.tar"
    assert decrypt("--key-file", primary, "-o", target, copy).returncode == 4
    assert not target.exists() and not list(tmp_path.glob(".out.tar*"))


def test_truncated_artifact_fails(published, tmp_path):
    artifact, primary = published[:2]
    copy = copy_set(artifact, tmp_path)
    copy.write_bytes(copy.read_bytes()[:-5000])
    result = decrypt("--key-file", primary, copy)
    assert result.returncode == 4 and b"TruncatedData" in result.stderr and result.stdout == b""


def test_plaintext_metadata_file_is_pointed_out(published):
    artifact, primary = published[:2]
    result = decrypt("--key-file", primary, artifact.parent / "inventory.json")
    assert result.returncode == 5 and b"plaintext metadata file" in result.stderr


def test_usage_error_exits_2():
    assert decrypt("--nonsense").returncode == 2
