"""Files engine: every kind of entry survives a backup -> restore through the tar stream —
hard links, files with holes, extended attributes and POSIX ACLs — and special files are
reported once, by name and kind."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ansible_collections.lifeboat.dr.plugins.module_utils.components.files import engine as fe

MIB = 1 << 20


def backup_tree(root: Path, **kw) -> tuple[bytes, fe.TreeResult]:
    out = io.BytesIO()
    result = fe.write_tree_tar(out, root, set_id="full_x", **kw)
    return out.getvalue(), result


def restore(streams: list[bytes], dest: Path, entries: list[dict]) -> list[str]:
    dest.mkdir()
    with fe.SafeExtractor(dest) as ex:
        for data in streams:
            ex.extract(io.BytesIO(data))
        ex.finish()
    fe.remove_unlisted(dest, entries)
    fe.check_tree(dest, entries, ex.written)
    return fe.apply_metadata(dest, entries)


def allocated(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def write_sparse(path: Path, size: int, pieces: dict[int, bytes]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in pieces.items():
            f.seek(offset)
            f.write(data)


def inode_groups(root: Path) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            groups.setdefault(os.lstat(p).st_ino, []).append(p.relative_to(root).as_posix())
    return sorted(g for g in groups.values() if len(g) > 1)


def getfattr(root: Path) -> str:
    return subprocess.run(["getfattr", "-R", "-d", "-m", "-", "-h", "--absolute-names", "."], cwd=root,
                          capture_output=True, text=True, check=True).stdout


def getfacl(root: Path) -> str:
    return subprocess.run(["getfacl", "-R", "-n", "-p", "."], cwd=root, capture_output=True, text=True,
                          check=True).stdout


def test_hard_links_are_stored_once_and_come_back_as_one_inode(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "data.bin").write_bytes(os.urandom(3 * MIB))
    os.link(src / "a" / "data.bin", src / "copy.bin")
    os.link(src / "a" / "data.bin", src / "zz.bin")
    (src / "single").write_text("one name")
    data, result = backup_tree(src)
    assert len(data) < 4 * MIB  # the 3 MiB are in the stream once
    assert result.hard_links == 2 and result.stored_files == 2
    by_path = {e["path"]: e for e in result.entries}
    assert by_path["copy.bin"]["link_to"] == "a/data.bin" and by_path["zz.bin"]["link_to"] == "a/data.bin"
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(data))}
    assert members["copy.bin"].islnk() and members["copy.bin"].linkname == "a/data.bin"
    dest = tmp_path / "dest"
    restore([data], dest, result.entries)
    assert inode_groups(dest) == inode_groups(src) == [["a/data.bin", "copy.bin", "zz.bin"]]
    assert (dest / "zz.bin").read_bytes() == (src / "a" / "data.bin").read_bytes()
    assert os.lstat(dest / "zz.bin").st_nlink == 3


def test_a_hard_link_group_survives_an_incremental_chain(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "first").write_bytes(b"v1" * 1000)
    os.link(src / "first", src / "second")
    full_data, full = backup_tree(src)
    (src / "other").write_text("new")  # the group itself is unchanged: not stored again
    out = io.BytesIO()
    inc = fe.write_tree_tar(out, src, set_id="inc_y", previous={e["path"]: e for e in full.entries})
    assert inc.stored_files == 1 and inc.hard_links == 1
    dest = tmp_path / "dest"
    restore([full_data, out.getvalue()], dest, inc.entries)
    assert inode_groups(dest) == [["first", "second"]]


def test_a_file_with_holes_is_stored_as_its_data_and_comes_back_with_the_same_allocation(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_sparse(src / "disk.img", 1 << 30, {0: b"head" * 1024, 512 * MIB: os.urandom(MIB)})
    write_sparse(src / "tail-hole", 64 * MIB, {MIB: b"x" * 4096})
    write_sparse(src / "all-hole", 8 * MIB, {})
    data, result = backup_tree(src)
    assert len(data) < 2 * MIB  # not the GiB of zeros
    assert result.sparse_files == 3
    by_path = {e["path"]: e for e in result.entries}
    assert by_path["disk.img"]["sparse"][0] == [0, 4096] and by_path["all-hole"]["sparse"] == [[8 * MIB, 0]]
    dest = tmp_path / "dest"
    restore([data], dest, result.entries)
    for name in ("disk.img", "tail-hole", "all-hole"):
        assert os.path.getsize(dest / name) == os.path.getsize(src / name)
        assert allocated(dest / name) == allocated(src / name), name
    with open(dest / "disk.img", "rb") as got, open(src / "disk.img", "rb") as want:
        for offset in (0, 4096, 512 * MIB - 10, 512 * MIB, (1 << 30) - 4096):
            got.seek(offset)
            want.seek(offset)
            assert got.read(MIB) == want.read(MIB)


def test_gnu_tar_reads_the_sparse_member_as_the_original_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_sparse(src / "holes", 16 * MIB, {4 * MIB: b"middle"})
    data, _result = backup_tree(src)
    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run(["tar", "-xf", "-", "-C", str(out)], input=data, check=True)
    assert (out / "holes").read_bytes() == (src / "holes").read_bytes()


def test_xattrs_and_acls_are_stored_in_pax_headers_and_restored(tmp_path):
    src = tmp_path / "src"
    (src / "shared").mkdir(parents=True)
    f = src / "shared" / "upload.jpg"
    f.write_bytes(b"jpeg")
    os.setxattr(f, "user.mime_type", b"image/jpeg")
    os.setxattr(f, "user.binary", bytes(range(256)))
    os.setxattr(f, "security.lifeboat_test", b"label\0")
    subprocess.run(["setfacl", "-m", "u:65534:rw,g:65534:r", str(f)], check=True)
    subprocess.run(["setfacl", "-d", "-m", "g:65534:rwx", str(src / "shared")], check=True)
    data, result = backup_tree(src)
    member = next(m for m in tarfile.open(fileobj=io.BytesIO(data)) if m.name == "shared/upload.jpg")
    assert fe.member_xattrs(member)["user.binary"] == bytes(range(256))
    assert "system.posix_acl_access" in fe.member_xattrs(member)
    dest = tmp_path / "dest"
    assert restore([data], dest, result.entries) == []
    assert getfattr(dest) == getfattr(src) and "user.binary" in getfattr(src)
    assert getfacl(dest) == getfacl(src) and "user:65534:rw-" in getfacl(src)


def test_gnu_tar_restores_the_xattrs_lifeboat_stored(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    os.setxattr(src / "f", "user.origin", b"lifeboat")
    data, _result = backup_tree(src)
    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=user.*", "-xf", "-", "-C", str(out)], input=data,
                   check=True)
    assert os.getxattr(out / "f", "user.origin") == b"lifeboat"


def run_as_nobody(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run Python ``code`` as uid/gid 65534 with a world-readable copy of module_utils (this
    checkout may sit below a folder nobody cannot enter)."""
    base = Path(tempfile.mkdtemp(prefix="lb-nobody-"))
    os.chmod(base, 0o755)
    code_root = base / "ansible_collections" / "lifeboat" / "dr" / "plugins"
    module_utils = Path(fe.__file__).parents[2]  # components/files/engine.py -> module_utils
    shutil.copytree(module_utils, code_root / "module_utils", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in [base, *(p for p in base.rglob("*") if p.is_dir())]:
        os.chmod(folder, 0o755)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(base)}
    try:
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                               "-c", code, *args], capture_output=True, text=True, check=False, env=env)
    finally:
        shutil.rmtree(base)


def test_an_xattr_the_restoring_user_may_not_set_is_reported_not_fatal(tmp_path):
    assert os.geteuid() == 0, "this test restores as root and as nobody"
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    os.setxattr(src / "f", "user.ok", b"1")
    os.setxattr(src / "f", "trusted.needs_root", b"2")
    data, result = backup_tree(src)
    dest = Path(tempfile.mkdtemp(prefix="lb-restore-as-nobody-"))
    os.chmod(dest, 0o755)
    try:
        with fe.SafeExtractor(dest) as ex:  # extracted as root, then the tree is handed to nobody
            ex.extract(io.BytesIO(data))
            ex.finish()
        os.chown(dest / "f", 65534, 65534)
        entries = [dict(e, uid=65534, gid=65534) for e in result.entries]
        code = ("import json, sys; from pathlib import Path\n"
                "from ansible_collections.lifeboat.dr.plugins.module_utils.components.files import engine as fe\n"
                "print(json.dumps(fe.apply_metadata(Path(sys.argv[1]), json.loads(sys.argv[2]))))\n")
        proc = run_as_nobody(code, str(dest), json.dumps(entries))
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == ["f: trusted.needs_root not restored (Operation not permitted)"]
        assert os.getxattr(dest / "f", "user.ok") == b"1"
        assert (dest / "f").read_text() == "x" and os.stat(dest / "f").st_mtime_ns == entries[0]["mtime_ns"]
    finally:
        shutil.rmtree(dest)


def test_special_files_are_skipped_and_reported_once_by_name_and_kind(tmp_path, caplog):
    src = tmp_path / "src"
    src.mkdir()
    (src / "data").write_text("kept")
    os.mkfifo(src / "queue.fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "app.sock"))
    try:
        plan = fe.plan_files_backup({"storage": str(src)})
        with caplog.at_level(logging.WARNING):
            _data, result = backup_tree(src)
    finally:
        sock.close()
    assert plan["folders"]["storage"]["entries"] == 1
    assert result.skipped_special == [{"path": "app.sock", "kind": "socket"},
                                      {"path": "queue.fifo", "kind": "fifo"}]
    assert [e["path"] for e in result.entries] == ["data"]
    warnings = [r.getMessage() for r in caplog.records if "special" in r.getMessage()]
    assert len(warnings) == 1 and "queue.fifo (fifo)" in warnings[0] and "app.sock (socket)" in warnings[0]


def test_deep_verify_compares_every_members_metadata_with_the_file_list(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("content")
    os.chmod(src / "d" / "f", 0o4750)
    os.setxattr(src / "d" / "f", "user.tag", b"v1")
    os.link(src / "d" / "f", src / "hard")
    os.symlink("/etc/hostname", src / "abs")
    write_sparse(src / "holes", 8 * MIB, {MIB: b"data"})
    data, result = backup_tree(src)
    expected = {e["path"]: fe.expected_member(e) for e in result.entries}
    assert fe.compare_members(expected, fe.read_tar_members(io.BytesIO(data))) == []
    tampered = {
        "d/f": ("mode", 0o755), "abs": ("target", "/etc/passwd"), "hard": ("target", "holes"),
        "holes": ("sparse", [[0, 4], [8 * MIB, 0]]),
    }
    for path, (key, value) in tampered.items():
        wrong = {p: dict(f) for p, f in expected.items()}
        wrong[path][key] = value
        assert fe.compare_members(wrong, fe.read_tar_members(io.BytesIO(data))) == [
            f"{path}: {key} differs from the file list"]
    wrong = {p: dict(f) for p, f in expected.items()}
    wrong["d/f"]["xattrs"] = {"user.tag": b"v2"}
    problems = fe.compare_members(wrong, fe.read_tar_members(io.BytesIO(data)))
    assert problems == ["d/f: xattrs differs from the file list"]


def test_the_plan_and_space_estimate_count_data_not_holes_or_second_names(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_sparse(src / "vm.img", 4 << 30, {MIB: os.urandom(MIB)})
    (src / "one").write_bytes(b"x" * 10_000)
    os.link(src / "one", src / "two")
    plan = fe.plan_files_backup({"storage": str(src)})["folders"]["storage"]
    assert plan["entries"] == 3
    assert 10_000 + MIB <= plan["bytes"] <= 10_000 + 2 * MIB  # not 4 GiB, and "one" counted once
