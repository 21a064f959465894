"""docs/files.md, "Reading a set without Lifeboat": the documented lifeboat-decrypt | tar
pipeline, run as written, gives back the folder (content, links, hard links, holes, xattrs)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from ansible_collections.lifeboat.dr.plugins.module_utils.components.files import engine as fe
from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import FileKEK, KeyRing, create_key_file

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
MARKER = "<!-- example: files-break-glass"


def documented_example() -> str:
    """The shell block that follows the example marker in docs/files.md."""
    text = (REPO / "docs" / "files.md").read_text()
    assert MARKER in text, "docs/files.md lost its tested break-glass example"
    match = re.search(r"```sh\n(.*?)```", text[text.index(MARKER):], re.S)
    assert match
    return match.group(1)


def listing(root: Path) -> list[str]:
    """``find -printf`` of the issue (mtimes to the second: tar headers carry seconds) + xattrs."""
    found = subprocess.run(["find", ".", "-printf", r"%p %y %m %U %G %s %TY%Tm%Td%TH%TM%TS %l\n"], cwd=root,
                           capture_output=True, text=True, check=True).stdout
    lines = sorted(re.sub(r"(\d{14})\.\d+", r"\1", line) for line in found.splitlines() if not line.startswith(". "))
    attrs = subprocess.run(["getfattr", "-R", "-d", "-m", "-", "-h", "."], cwd=root, capture_output=True, text=True,
                           check=True).stdout
    return lines + [attrs]


def test_the_documented_decrypt_and_untar_pipeline_restores_the_folder(tmp_path):
    example = documented_example()
    assert "zstd -d" not in example  # lifeboat-decrypt already decompresses
    src = tmp_path / "storage"
    (src / "uploads").mkdir(parents=True)
    (src / "uploads" / "a.jpg").write_bytes(os.urandom(100_000))
    os.setxattr(src / "uploads" / "a.jpg", "user.mime_type", b"image/jpeg")
    os.link(src / "uploads" / "a.jpg", src / "uploads" / "same.jpg")
    os.symlink("/etc/hostname", src / "abs-link")
    with open(src / "holes.img", "wb") as f:
        f.truncate(64 << 20)
        f.seek(8 << 20)
        f.write(b"data" * 1024)
    key = tmp_path / "kek.key"
    create_key_file(key)
    result = fe.run_files_backup(str(tmp_path / "store"), KeyRing(FileKEK.load(key)), {"storage": str(src)})
    dest = tmp_path / "restored"
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", KEY=str(key), SET=result["path"], DEST=str(dest))
    proc = subprocess.run(["bash", "-euc", example], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert listing(dest) == listing(src)
    assert os.lstat(dest / "uploads" / "same.jpg").st_ino == os.lstat(dest / "uploads" / "a.jpg").st_ino
    assert os.lstat(dest / "holes.img").st_blocks == os.lstat(src / "holes.img").st_blocks


def test_a_damaged_artifact_fails_the_documented_pipeline(tmp_path):
    src = tmp_path / "storage"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(3 << 20))
    key = tmp_path / "kek.key"
    create_key_file(key)
    result = fe.run_files_backup(str(tmp_path / "store"), KeyRing(FileKEK.load(key)), {"storage": str(src)})
    artifact = Path(result["path"]) / "app" / "storage.tar.zst.enc"
    with open(artifact, "r+b") as f:
        f.seek(artifact.stat().st_size // 2)
        f.write(b"\xff" * 16)
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", KEY=str(key), SET=result["path"],
               DEST=str(tmp_path / "restored"))
    proc = subprocess.run(["bash", "-euc", documented_example()], env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0 and "lifeboat-decrypt: error: TamperedData" in proc.stderr
