"""Application files through the real store and pipeline: full, incremental, hostile archives."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components.files import engine as fe
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import NotFound, RestoreFailed


def build_tree(root: Path) -> None:
    (root / "uploads" / "2025").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "config" / "app.ini").write_text("[app]\nname = demo\n")
    os.chmod(root / "config" / "app.ini", 0o600)
    (root / "uploads" / "2025" / "photo-ñandú-日本.jpg").write_bytes(os.urandom(50_000))
    with open(root / "uploads" / "big.bin", "wb") as f:  # ~20 MB, half random half zeros
        f.write(os.urandom(10 << 20))
        f.write(b"\0" * (10 << 20))
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    os.symlink("config/app.ini", root / "current-config")
    os.symlink("../config", root / "uploads" / "cfg")
    (root / "empty-dir").mkdir(mode=0o750)
    os.chmod(root / "empty-dir", 0o750)
    os.utime(root / "run.sh", ns=(1_500_000_000_000_000_001, 1_500_000_000_000_000_001))


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry: type, mode, owner, mtime (ns), content hash or link target."""
    import hashlib

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                body = None
            mode = 0 if stat.S_ISLNK(st.st_mode) else stat.S_IMODE(st.st_mode)
            out[p.relative_to(root).as_posix()] = (stat.S_IFMT(st.st_mode), mode, st.st_uid, st.st_gid,
                                                   st.st_mtime_ns, body)
    return out


def test_full_backup_then_restore_gives_an_identical_tree(tmp_path, keyring):
    src = tmp_path / "app"
    src.mkdir()
    build_tree(src)
    expected = tree_state(src)
    store = str(tmp_path / "store")
    result = fe.run_files_backup(store, keyring, {"storage": str(src)})
    assert not result["incremental"] and result["folders"]["storage"]["stored_files"] == 4
    shutil.rmtree(src)
    restored = fe.run_files_restore(store, keyring, result["set_id"])
    assert tree_state(src) == expected
    assert restored["folders"]["storage"]["previous_kept_at"] is None  # nothing was there to keep
    report = fe.verify_files_from(Store(store), Store(store).open_set(result["set_id"]), keyring)
    assert report["ok"], report


def test_restore_keeps_the_previous_tree_aside(tmp_path, keyring):
    src = tmp_path / "app"
    src.mkdir()
    (src / "a").write_text("backed up")
    store = str(tmp_path / "store")
    set_id = fe.run_files_backup(store, keyring, {"storage": str(src)})["set_id"]
    (src / "a").write_text("changed later")
    out = fe.run_files_restore(store, keyring, set_id)["folders"]["storage"]
    assert (src / "a").read_text() == "backed up"
    assert (Path(out["previous_kept_at"]) / "a").read_text() == "changed later"
    assert ".lbprev-" in out["previous_kept_at"]


def test_check_mode_restore_touches_nothing(tmp_path, keyring):
    src = tmp_path / "app"
    src.mkdir()
    (src / "a").write_text("x")
    store = str(tmp_path / "store")
    fe.run_files_backup(store, keyring, {"storage": str(src)})
    (src / "a").write_text("y")
    plan = fe.run_files_restore(store, keyring, "latest", check_mode=True)
    assert plan["folders"]["storage"]["target"] == str(src) and (src / "a").read_text() == "y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "kek.key", "store"]


def test_incremental_chain_restores_the_final_tree_including_deletions(tmp_path, keyring):
    src = tmp_path / "app"
    src.mkdir()
    build_tree(src)
    store = str(tmp_path / "store")
    full = fe.run_files_backup(store, keyring, {"storage": str(src)})
    # change 1: new file, changed file, deletion
    (src / "new.txt").write_text("new in inc1\n")
    (src / "config" / "app.ini").write_text("[app]\nname = changed\n")
    (src / "uploads" / "2025" / "photo-ñandú-日本.jpg").unlink()
    inc1 = fe.run_files_backup(store, keyring, {"storage": str(src)}, incremental_from="latest")
    s1 = inc1["folders"]["storage"]
    assert inc1["incremental"] and s1["parent_set_id"] == full["set_id"]
    assert s1["stored_files"] == 2 and s1["deleted"] == 1  # big.bin was not stored again
    # change 2: a folder removed, a symlink retargeted, a file touched with the same content
    shutil.rmtree(src / "empty-dir")
    os.unlink(src / "current-config")
    os.symlink("run.sh", src / "current-config")
    st = os.stat(src / "run.sh")
    os.utime(src / "run.sh", ns=(st.st_atime_ns, st.st_mtime_ns + 5))
    inc2 = fe.run_files_backup(store, keyring, {"storage": str(src)}, incremental_from=inc1["set_id"])
    assert inc2["folders"]["storage"]["stored_files"] == 0
    meta = Store(store).open_set(inc2["set_id"]).component_metadata("app")
    assert meta["chain"] == [full["set_id"], inc1["set_id"]] and meta["parent_set_id"] == inc1["set_id"]

    expected = tree_state(src)
    shutil.rmtree(src)
    out = fe.run_files_restore(store, keyring, inc2["set_id"])
    assert out["folders"]["storage"]["chain"] == [full["set_id"], inc1["set_id"], inc2["set_id"]]
    assert tree_state(src) == expected
    report = fe.verify_files_from(Store(store), Store(store).open_set(inc2["set_id"]), keyring)
    assert report["ok"] and report["folders"]["storage"]["chain"] == out["folders"]["storage"]["chain"]
    # a missing member of the chain is reported by verify and refused by restore
    shutil.rmtree(Path(store) / inc1["set_id"])
    report = fe.verify_files_from(Store(store), Store(store).open_set(inc2["set_id"]), keyring)
    assert not report["ok"] and inc1["set_id"] in report["folders"]["storage"]["problems"][0]
    with pytest.raises(NotFound, match=inc1["set_id"]):
        fe.run_files_restore(store, keyring, inc2["set_id"])


def test_hostile_archive_is_refused_and_the_target_left_untouched(tmp_path, keyring):
    target = tmp_path / "app"
    target.mkdir()
    (target / "precious").write_text("do not touch")
    before = tree_state(target)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        ok = tarfile.TarInfo("innocent.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"hi"))
        evil = tarfile.TarInfo("../../escaped.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    store = Store(tmp_path / "store")
    with store.begin_set("app", ["app"], keyring) as writer:
        with writer.artifact("app", fe.artifact_name("storage")) as out:
            out.write(buf.getvalue())
        writer.write_json("app", fe.files_list_name("storage"), {
            "format_version": 1, "name": "storage", "root": str(target), "set_id": writer.set_id,
            "parent_set_id": None, "entries": [], "deleted": []})
        writer.set_component_metadata("app", {"folders": {"storage": {
            "root": str(target), "artifact": fe.artifact_name("storage"), "parent_set_id": None}}})
        writer.publish()
    with pytest.raises(RestoreFailed, match=r"'\.\./\.\./escaped\.txt' refused"):
        fe.run_files_restore(str(store.root), keyring, writer.set_id)
    assert tree_state(target) == before
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "kek.key", "store"]  # aside folder removed


def test_unreadable_or_missing_path_is_a_clear_error(tmp_path, keyring):
    with pytest.raises(NotFound, match="does not exist"):
        fe.run_files_backup(str(tmp_path / "store"), keyring, {"storage": str(tmp_path / "nope")})
    assert not (tmp_path / "store").exists() or not Store(tmp_path / "store").list_sets()


def test_lab_app_storage_round_trips(lab_env, tmp_path, keyring):
    src = Path(lab_env["LAB_APP_STORAGE"])
    store = str(tmp_path / "store")
    result = fe.run_files_backup(store, keyring, {"storage": str(src)})
    target = tmp_path / "restored"
    fe.run_files_restore(store, keyring, result["set_id"], targets={"storage": str(target)})
    listing = Store(store).open_set(result["set_id"]).read_json("app", "storage_files.json")["entries"]
    got, now = tree_state(target), tree_state(src)
    assert set(got) == {e["path"] for e in listing}
    # the app may write while we run: entries unchanged since the backup must be identical
    unchanged = [e["path"] for e in listing if e["path"] in now and now[e["path"]][4] == e["mtime_ns"]]
    assert unchanged
    assert all(got[p] == now[p] for p in unchanged)
