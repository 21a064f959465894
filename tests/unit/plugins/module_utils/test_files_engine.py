"""Files engine, pure logic: tar stream writing, filters, safe extraction, swap."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.files import engine as fe
from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import AUTO_THREADS, Codec
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    NotFound,
    RestoreFailed,
    VerificationFailed,
)


def make_tree(root: Path) -> None:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "deep" / "ünï cødé.txt").write_text("unicode name\n")
    (root / "skip.log").write_text("log\n")
    os.symlink("a.txt", root / "link-to-a")
    os.symlink("../a.txt", root / "sub" / "up-link")
    os.chmod(root / "a.txt", 0o640)
    os.utime(root / "a.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def backup_to_bytes(root: Path, **kw) -> tuple[bytes, fe.TreeResult]:
    out = io.BytesIO()
    result = fe.write_tree_tar(out, root, set_id="full_x", **kw)
    return out.getvalue(), result


def restore_bytes(data: bytes, dest: Path, entries) -> fe.SafeExtractor:
    dest.mkdir()
    with fe.SafeExtractor(dest) as ex:
        ex.extract(io.BytesIO(data))
        ex.finish()
    fe.remove_unlisted(dest, entries)
    fe.check_tree(dest, entries, ex.written)
    fe.apply_metadata(dest, entries)
    return ex


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = p.relative_to(root).as_posix()
            content = os.readlink(p) if stat.S_ISLNK(st.st_mode) else (
                p.read_bytes() if stat.S_ISREG(st.st_mode) else None)
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(st.st_mode)
                        else 0, st.st_mtime_ns, content)
    return out


def test_tree_round_trips_with_modes_mtimes_symlinks_and_unicode(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    data, result = backup_to_bytes(src)
    assert tarfile.open(fileobj=io.BytesIO(data)).getmember("link-to-a").issym()  # a real pax tar
    dest = tmp_path / "dest"
    restore_bytes(data, dest, result.entries)
    assert snapshot(dest) == snapshot(src)
    assert result.stored_files == 4 and not result.changed_during_backup


def test_excluded_paths_are_left_out_and_include_selects_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    result = backup_to_bytes(src, path_filter=fe.PathFilter(include=("*.txt", "*.bin"), exclude=("deep",)))[1]
    paths = {e["path"] for e in result.entries}
    assert paths == {"a.txt", "sub", "sub/b.bin"}


def test_incremental_stores_only_changed_files_and_records_deletions(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    full_data, full = backup_to_bytes(src)
    (src / "skip.log").unlink()
    (src / "a.txt").write_text("changed\n")
    (src / "new.txt").write_text("new\n")
    st = os.stat(src / "sub" / "b.bin")  # touched only: same content, new mtime
    os.utime(src / "sub" / "b.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    out = io.BytesIO()
    inc = fe.write_tree_tar(out, src, set_id="inc_y", previous={e["path"]: e for e in full.entries})
    assert inc.deleted == ["skip.log"]
    assert inc.stored_files == 2 and inc.unchanged_files == 2
    by_path = {e["path"]: e for e in inc.entries}
    assert by_path["sub/b.bin"]["stored_in"] == "full_x"
    assert by_path["new.txt"]["stored_in"] == "inc_y"
    # chain restore: full then incremental, unlisted removed, equals the final tree
    dest = tmp_path / "dest"
    dest.mkdir()
    with fe.SafeExtractor(dest) as ex:
        ex.extract(io.BytesIO(full_data))
        ex.extract(io.BytesIO(out.getvalue()))
        ex.finish()
    fe.remove_unlisted(dest, inc.entries)
    fe.check_tree(dest, inc.entries, ex.written)
    fe.apply_metadata(dest, inc.entries)
    assert snapshot(dest) == snapshot(src)


def test_file_changing_during_read_is_reported(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "grow.txt").write_bytes(b"x" * 1000)
    real_fstat = os.fstat

    def lying_fstat(fd):
        st = real_fstat(fd)
        return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid,
                               st.st_size + 1, st.st_atime, st.st_mtime, st.st_ctime))

    monkeypatch.setattr(fe.os, "fstat", lying_fstat)
    result = backup_to_bytes(src)[1]
    assert result.changed_during_backup == ["grow.txt"]


def hostile(member: tarfile.TarInfo, payload: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(payload) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(payload) if member.isreg() else None)
    return buf.getvalue()


def _sym(name, target):
    m = tarfile.TarInfo(name)
    m.type, m.linkname = tarfile.SYMTYPE, target
    return m


def _typed(name, kind, linkname=""):
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, linkname
    return m


@pytest.mark.parametrize("member, needle", [
    (tarfile.TarInfo("../escape.txt"), "'..'"),
    (tarfile.TarInfo("/etc/evil"), "absolute"),
    (tarfile.TarInfo("a/../../escape"), "'..'"),
    (_typed("hard", tarfile.LNKTYPE, "/etc/shadow"), "absolute"),
    (_typed("hard", tarfile.LNKTYPE, "missing"), "hard link"),
    (_typed("dev", tarfile.CHRTYPE), "device"),
    (_typed("fifo", tarfile.FIFOTYPE), "device"),
])
def test_hostile_members_are_refused_with_their_name(tmp_path, member, needle):
    dest = tmp_path / "aside"
    dest.mkdir()
    with pytest.raises(RestoreFailed) as err:
        fe.SafeExtractor(dest).extract(io.BytesIO(hostile(member, b"evil")))
    assert member.name in str(err.value) and needle in str(err.value)
    assert not (tmp_path / "escape.txt").exists()


def test_member_written_through_an_earlier_symlink_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_sym("sub", "."))  # inside, but then used as a parent folder
        f = tarfile.TarInfo("sub/x")
        f.size = 1
        tar.addfile(f, io.BytesIO(b"x"))
    dest = tmp_path / "aside"
    dest.mkdir()
    with pytest.raises(RestoreFailed, match="not a folder"):
        fe.SafeExtractor(dest).extract(io.BytesIO(buf.getvalue()))


def tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    """A tar stream built by hand, members in the order given (payload for regular files)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, payload in members:
            member.size = len(payload) if member.isreg() else 0
            tar.addfile(member, io.BytesIO(payload) if member.isreg() else None)
    return buf.getvalue()


def _file(name):
    return tarfile.TarInfo(name)


def everything_under(folder: Path) -> dict[str, bytes | str]:
    """Every entry below ``folder``: file content or link target (nothing followed)."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[p.relative_to(folder).as_posix()] = (os.readlink(p) if p.is_symlink()
                                                     else p.read_bytes() if p.is_file() else "dir")
    return out


@pytest.fixture()
def outside(tmp_path):
    """A folder next to the restore target holding one file; a hostile archive aims at it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "victim").write_bytes(b"original")
    return folder


def extract_all(dest: Path, *streams: bytes) -> fe.SafeExtractor:
    dest.mkdir(exist_ok=True)
    with fe.SafeExtractor(dest) as ex:
        for data in streams:
            ex.extract(io.BytesIO(data))
        ex.finish()
    return ex


def test_symlinks_of_any_target_come_back_verbatim_as_links(tmp_path, outside):
    dest = tmp_path / "aside"
    extract_all(dest, tar_of((_sym("abs", "/etc/hostname"), b""), (_sym("d/up", "../../outside/victim"), b""),
                             (_sym("dangling", "/nonexistent/x"), b""), (_sym("rel", "d/up"), b"")))
    assert {p: os.readlink(dest / p) for p in ("abs", "d/up", "dangling", "rel")} == {
        "abs": "/etc/hostname", "d/up": "../../outside/victim", "dangling": "/nonexistent/x", "rel": "d/up"}
    assert everything_under(outside) == {"victim": b"original"}


@pytest.mark.parametrize("link_target", ["OUTSIDE", "../outside", "."])
def test_a_member_under_a_folder_the_archive_made_a_link_is_refused(tmp_path, outside, link_target):
    dest = tmp_path / "aside"
    target = str(outside) if link_target == "OUTSIDE" else link_target
    with pytest.raises(RestoreFailed, match=r"'d/victim' refused: its parent 'd' is not a folder"):
        extract_all(dest, tar_of((_sym("d", target), b""), (_file("d/victim"), b"evil")))
    assert everything_under(outside) == {"victim": b"original"}
    assert not (dest / "victim").exists()


def test_a_link_from_an_earlier_set_of_the_chain_cannot_be_written_through(tmp_path, outside):
    dest = tmp_path / "aside"
    with pytest.raises(RestoreFailed, match="parent 'd' is not a folder"):
        extract_all(dest, tar_of((_sym("d", str(outside)), b"")), tar_of((_file("d/victim"), b"evil")))
    assert everything_under(outside) == {"victim": b"original"}


def test_a_link_already_in_the_target_folder_is_never_followed(tmp_path, outside):
    dest = tmp_path / "aside"
    dest.mkdir()
    os.symlink(outside, dest / "d")  # e.g. planted before the extraction
    with pytest.raises(RestoreFailed, match="parent 'd' is not a folder"):
        extract_all(dest, tar_of((_file("d/victim"), b"evil")))
    with pytest.raises(RestoreFailed, match="parent 'd' is not a folder"):
        extract_all(dest, tar_of((_file("d/new"), b"evil")))
    assert everything_under(outside) == {"victim": b"original"}


def test_a_link_then_a_file_of_the_same_name_writes_the_file_not_through_the_link(tmp_path, outside):
    dest = tmp_path / "aside"
    extract_all(dest, tar_of((_sym("f", str(outside / "victim")), b""), (_file("f"), b"mine")))
    assert not (dest / "f").is_symlink() and (dest / "f").read_bytes() == b"mine"
    extract_all(tmp_path / "two", tar_of((_file("g"), b"mine"), (_sym("g", str(outside / "victim")), b"")))
    assert os.readlink(tmp_path / "two" / "g") == str(outside / "victim")
    assert everything_under(outside) == {"victim": b"original"}


def test_a_hard_link_to_a_symlink_or_outside_is_refused(tmp_path, outside):
    with pytest.raises(RestoreFailed, match="hard link to 's' which is not a file extracted before it"):
        extract_all(tmp_path / "a", tar_of((_sym("s", str(outside / "victim")), b""),
                                           (_typed("h", tarfile.LNKTYPE, "s"), b"")))
    with pytest.raises(RestoreFailed, match="absolute"):
        extract_all(tmp_path / "b", tar_of((_typed("h", tarfile.LNKTYPE, str(outside / "victim")), b"")))
    assert everything_under(outside) == {"victim": b"original"}


@pytest.mark.parametrize("name", ["../outside/victim", "/OUTSIDE/victim", "d/../../outside/victim"])
def test_member_names_that_escape_are_refused_before_anything_is_written(tmp_path, outside, name):
    name = name.replace("/OUTSIDE", str(outside))
    with pytest.raises(RestoreFailed, match="refused"):
        extract_all(tmp_path / "aside", tar_of((_file("first"), b"1"), (_file(name), b"evil")))
    assert everything_under(outside) == {"victim": b"original"}


def test_metadata_is_never_applied_through_a_link(tmp_path, outside):
    dest = tmp_path / "aside"
    dest.mkdir()
    os.symlink(outside, dest / "d")
    before = os.stat(outside / "victim")
    entry = {"path": "d/victim", "type": "file", "mode": 0o777, "uid": 0, "gid": 0, "mtime_ns": 5}
    with pytest.raises(RestoreFailed, match="not a folder"):
        fe.apply_metadata(dest, [entry])
    os.symlink(outside / "victim", dest / "f")
    with pytest.raises(VerificationFailed, match="not a link"):
        fe.apply_metadata(dest, [dict(entry, path="f")])
    after = os.stat(outside / "victim")
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)


def test_check_tree_detects_a_content_difference(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("one")
    data, result = backup_to_bytes(src)
    result.entries[0]["sha256"] = "0" * 64
    with pytest.raises(VerificationFailed, match="SHA-256 of f"):
        restore_bytes(data, tmp_path / "dest", result.entries)


def test_swap_keeps_the_previous_tree(tmp_path):
    target, new = tmp_path / "t", tmp_path / "t.lbrestore-1"
    target.mkdir()
    (target / "old").write_text("old")
    new.mkdir()
    (new / "new").write_text("new")
    new_path, prev = fe.aside_paths(target, "1")
    assert new_path == new
    assert fe.swap_into_place(new, target, prev) == prev
    assert (target / "new").exists() and (prev / "old").exists() and not new.exists()


def test_missing_and_non_folder_roots_are_clear_errors(tmp_path):
    with pytest.raises(NotFound, match="does not exist"):
        list(fe.scan_tree(tmp_path / "nope"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        list(fe.scan_tree(tmp_path / "file"))


def test_unreadable_folder_is_a_permission_error_naming_it(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="lb-unreadable-"))  # world-traversable, unlike tmp_path
    os.chmod(base, 0o755)
    locked = base / "tree" / "locked"
    locked.mkdir(parents=True)
    os.chmod(base / "tree", 0o755)
    (locked / "secret").write_text("x")
    os.chmod(locked, 0o700)
    code = ("import sys; from pathlib import Path\n"
            "from ansible_collections.lifeboat.dr.plugins.module_utils.components.files import engine as fe\n"
            "from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import PermissionDenied\n"
            "try:\n    list(fe.scan_tree(Path(sys.argv[1])))\n"
            "except PermissionDenied as e:\n    print(e); sys.exit(3)\n")
    env = None
    if os.geteuid() == 0:
        os.chown(locked, 0, 0)
        # nobody may not reach this checkout (e.g. a clone below a 0700 temp folder): it gets a
        # world-readable copy of module_utils (third-party imports there are guarded) and /usr/bin/python3
        code_root = base / "code" / "ansible_collections" / "lifeboat" / "dr" / "plugins"
        shutil.copytree(Path(fe.__file__).parents[2], code_root / "module_utils",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for folder in [base / "code", *(p for p in (base / "code").rglob("*") if p.is_dir())]:
            os.chmod(folder, 0o755)
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(base / "code")}
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", code,
               str(base / "tree")]
    else:
        os.chmod(locked, 0)
        cmd = [sys.executable, "-c", code, str(base / "tree")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    finally:
        shutil.rmtree(base)
    assert proc.returncode == 3, proc.stderr
    assert str(locked) in proc.stdout and "run the backup as a user" in proc.stdout


def test_folder_names_must_be_artifact_safe():
    with pytest.raises(ConfigError):
        fe.check_folder_name("../x")
    assert fe.artifact_name("storage") == "storage.tar.zst.enc"
    assert fe.artifact_name("logs", "none") == "logs.tar.enc"


@pytest.mark.parametrize(("set_codec", "cpus", "workers"), [
    (None, 2, 2),                                 # no codec given: zstd 3, automatic threads
    (Codec("zstd", 3, AUTO_THREADS), 2, 2),       # compression_threads unset
    (Codec("zstd", 3, AUTO_THREADS), 1, 1),       # one CPU: the default single worker
    (Codec("zstd", 3, 0), 2, 0),                  # an explicit 0 is kept
    (Codec("zstd", 9, 4), 2, 4),                  # so is any explicit count
    (Codec("gzip", 6, AUTO_THREADS), 2, 0),       # gzip has no worker threads
])
def test_a_folders_tar_stream_compresses_on_two_cores_unless_told_otherwise(monkeypatch, set_codec, cpus, workers):
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    writer = type("Writer", (), {"codec": set_codec})()
    codec = fe.tar_codec(writer)
    assert codec.workers == workers
    expected = set_codec or Codec()
    assert (codec.algorithm, codec.effective_level) == (expected.algorithm, expected.effective_level)


# ----------------------------------------------------------------------------- the fast tar header

def tarfile_header(name: str, mode: int, uid: int, gid: int, size: int, mtime: int, kind: bytes,
                   linkname: str = "") -> bytes:
    """What ``tarfile`` writes for the member (the writer's reference)."""
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.size, info.mtime = mode, uid, gid, size, mtime
    info.type, info.linkname, info.uname, info.gname = kind, linkname, "", ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@pytest.mark.parametrize("case", [
    ("a.txt", 0o644, 0, 0, 6, 1_600_000_000, tarfile.REGTYPE, ""),
    ("sub/deep/file", 0o4755, 1000, 1000, 300_000, 1_700_000_000, tarfile.REGTYPE, ""),
    ("zero-mode", 0o0, 65534, 65534, 0, 0, tarfile.REGTYPE, ""),
    ("all-bits", 0o7777, 8 ** 7 - 1, 8 ** 7 - 1, 8 ** 11 - 1, 8 ** 11 - 1, tarfile.REGTYPE, ""),
    ("dir", 0o755, 0, 0, 0, 1_600_000_000, tarfile.DIRTYPE, ""),
    ("dir/", 0o700, 0, 0, 0, 1_600_000_000, tarfile.DIRTYPE, ""),
    ("d" * 99, 0o755, 0, 0, 0, 1, tarfile.DIRTYPE, ""),  # 100 bytes with its "/"
    ("n" * 100, 0o644, 0, 0, 1, 1, tarfile.REGTYPE, ""),
    ("link", 0o777, 0, 0, 0, 1, tarfile.SYMTYPE, "/etc/hostname"),
    ("link2", 0o777, 0, 0, 0, 1, tarfile.SYMTYPE, "x" * 100),
    ("hard", 0o644, 5, 6, 0, 1, tarfile.LNKTYPE, "sub/deep/file"),
    ("with space & 'quote'\ttab", 0o600, 1, 2, 3, 4, tarfile.REGTYPE, ""),
])
def test_ustar_header_is_tarfiles_header_byte_for_byte(case):
    assert fe.ustar_header(*case) == tarfile_header(*case)


@pytest.mark.parametrize("case", [
    ("ünï cødé.txt", 0o644, 0, 0, 1, 1, tarfile.REGTYPE, ""),  # not ASCII: pax 'path'
    ("n" * 101, 0o644, 0, 0, 1, 1, tarfile.REGTYPE, ""),  # longer than 100 bytes
    ("d" * 100, 0o755, 0, 0, 0, 1, tarfile.DIRTYPE, ""),  # 101 bytes with its "/"
    ("link", 0o777, 0, 0, 0, 1, tarfile.SYMTYPE, "x" * 101),
    ("link", 0o777, 0, 0, 0, 1, tarfile.SYMTYPE, "/srv/ü"),
    ("big-uid", 0o644, 8 ** 7, 0, 1, 1, tarfile.REGTYPE, ""),
    ("big-gid", 0o644, 0, 8 ** 7, 1, 1, tarfile.REGTYPE, ""),
    ("huge", 0o644, 0, 0, 8 ** 11, 1, tarfile.REGTYPE, ""),  # 8 GiB and more
    ("future", 0o644, 0, 0, 1, 8 ** 11, tarfile.REGTYPE, ""),
    ("before-1970", 0o644, 0, 0, 1, -1, tarfile.REGTYPE, ""),
])
def test_ustar_header_declines_members_that_need_a_pax_header(case):
    assert fe.ustar_header(*case) is None
    assert len(tarfile_header(*case)) > tarfile.BLOCKSIZE  # tarfile adds one: the writer falls back to it


def test_tar_stream_of_every_entry_kind_is_what_tarfile_writes(tmp_path):
    """The writer's headers (fast path and tarfile fallback mixed) read back with tarfile, member by member."""
    root = tmp_path / "t"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "f.txt").write_text("hi\n")
    (root / ("n" * 100)).write_text("long name")
    (root / ("m" * 101)).write_text("longer name")
    (root / "ünï.txt").write_text("unicode")
    os.symlink("/etc/hostname", root / "abs")
    os.symlink("x" * 101, root / "long-target")
    os.link(root / "a" / "f.txt", root / "a" / "hard")
    os.utime(root / "a" / "f.txt", ns=(-1_500_000_000, -1_500_000_000))  # before 1970: pax mtime
    data, result = backup_to_bytes(root)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {e["path"] for e in result.entries}
    for entry in result.entries:
        member = members[entry["path"]]
        assert member.mtime == entry["mtime_ns"] // 1_000_000_000
        assert (member.uid, member.gid) == (entry["uid"], entry["gid"])
        if entry["type"] == "symlink":
            assert member.issym() and member.linkname == entry["target"]
        elif entry.get("link_to"):
            assert member.islnk() and member.linkname == entry["link_to"]
        elif entry["type"] == "file":
            assert member.isreg() and member.size == entry["size"] and member.mode == entry["mode"]
        else:
            assert member.isdir() and member.mode == entry["mode"]
