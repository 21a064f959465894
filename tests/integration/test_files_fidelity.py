"""Issue 23's "done means": a folder holding every kind of entry goes through backup.yml ->
wipe -> restore.yml and comes back identical — the ``find -printf`` listing, ``getfattr`` and
``getfacl`` output, hard-link groups and the allocation of files with holes — and verify.yml
(full) passes on the set; special files are named once in backup.yml's output."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
FIND_FORMAT = "%p %y %m %U %G %s %T@ %l\\0"


def run_playbook(name: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    proc = subprocess.run(["ansible-playbook", "-i", "inventories/lab", f"playbooks/{name}.yml", *extra], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


def build_fixture(root: Path, outside: Path) -> None:
    """Every kind of entry an application folder holds."""
    (root / "uploads" / "2025").mkdir(parents=True)
    (root / "empty").mkdir(mode=0o750)
    (root / "locked").mkdir()
    (root / "locked" / "inner.txt").write_text("inside a 0000 folder")
    f = root / "uploads" / "2025" / "photo-ñandú-日本.jpg"
    f.write_bytes(os.urandom(200_000))
    os.setxattr(f, "user.mime_type", b"image/jpeg")
    os.setxattr(f, "security.lifeboat_label", b"system_u:object_r:app_t\0")
    os.setxattr(f, "trusted.lifeboat_origin", bytes(range(256)))
    subprocess.run(["setfacl", "-m", "u:4321:rw,g:4321:r", str(f)], check=True)
    subprocess.run(["setfacl", "-d", "-m", "g:4321:rwx", str(root / "uploads")], check=True)
    os.link(f, root / "uploads" / "same-photo.jpg")
    os.link(f, root / "hardlink-at-top.jpg")
    (root / "setuid-tool").write_text("#!/bin/sh\n")
    os.chmod(root / "setuid-tool", 0o4755)
    (root / "no-access").write_text("mode 0000")
    os.chmod(root / "no-access", 0)
    (root / "someone-elses").write_text("owned by 1234:5678")
    os.chown(root / "someone-elses", 1234, 5678)
    (root / "name\nwith newline").write_text("odd name")
    with open(root / "disk.img", "wb") as img:  # 1 GiB holding 1 MiB + 4 KiB
        img.truncate(1 << 30)
        img.seek(256 * MIB)
        img.write(os.urandom(MIB))
        img.seek((1 << 30) - 4096)
        img.write(b"tail" * 1024)
    with open(root / "trailing-hole.db", "wb") as db:
        db.write(b"header" * 700)
        db.truncate(32 * MIB)
    os.symlink("uploads/2025", root / "rel-link")
    os.symlink("/etc/hostname", root / "abs-link")
    os.symlink(str(outside / "elsewhere.txt"), root / "outside-link")
    os.symlink("../../nowhere", root / "uploads" / "dangling")
    os.mkfifo(root / "queue.fifo")
    for path, ns in ((root / "setuid-tool", 1_500_000_000_123_456_789), (root / "disk.img", 1_600_000_000_000_000_001)):
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    os.chmod(root / "locked", 0)


def find_listing(root: Path) -> list[str]:
    out = subprocess.run(["find", ".", "-printf", FIND_FORMAT], cwd=root, capture_output=True, check=True).stdout
    lines = [line.decode("utf-8", "surrogateescape") for line in out.split(b"\0") if line]
    return sorted(line for line in lines if not re.match(r"\S+ [ps] ", line))  # fifos/sockets are not backed up


SPECIAL = ("queue.fifo", "app.sock")  # not backed up: left out of the expected state


def per_file_blocks(text: str) -> list[str]:
    """getfattr/getfacl -R output as sorted per-file blocks (their walk order is readdir order)."""
    blocks = (block.strip() for block in text.split("\n\n") if block.strip())
    return sorted(b for b in blocks if not b.splitlines()[0].endswith(SPECIAL))


def attributes(root: Path) -> tuple[list[str], list[str]]:
    fattr = subprocess.run(["getfattr", "-R", "-d", "-m", "-", "-h", "-e", "hex", "."], cwd=root, capture_output=True,
                           text=True, check=True).stdout
    facl = subprocess.run(["getfacl", "-R", "-n", "-p", "."], cwd=root, capture_output=True, text=True,
                          check=True).stdout
    return per_file_blocks(fattr), per_file_blocks(facl)


def link_groups(root: Path) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if st.st_nlink > 1 and not p.is_symlink():
                groups.setdefault(st.st_ino, []).append(p.relative_to(root).as_posix())
    return sorted(sorted(g) for g in groups.values())


def allocation(root: Path, names: list[str]) -> dict[str, str]:
    return {n: subprocess.run(["du", "-k", str(root / n)], capture_output=True, text=True, check=True).stdout.split()[0]
            for n in names}


def state(root: Path) -> dict:
    return {"find": find_listing(root), "attrs": attributes(root), "links": link_groups(root),
            "du": allocation(root, ["disk.img", "trailing-hole.db"])}


def test_every_kind_of_entry_round_trips_through_backup_wipe_restore(lab_env, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "fixture"
    root.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "app.sock"))
    try:
        build_fixture(root, outside)
        expected = state(root)
        paths = json.dumps({"lifeboat_app_paths": {"fixture": str(root)}})
        before = {s.set_id for s in Store(lab_env["LAB_STORE"]).list_sets()}
        proc = run_playbook("backup", "-e", "components=app", "-e", paths)
    finally:
        sock.close()
    output = proc.stdout + proc.stderr
    assert output.count("special file(s) not backed up") == 1, output[-3000:]
    assert "app.sock (socket)" in output and "queue.fifo (fifo)" in output
    set_id = next(s.set_id for s in Store(lab_env["LAB_STORE"]).list_sets() if s.set_id not in before)
    meta = Store(lab_env["LAB_STORE"]).open_set(set_id).component_metadata("app")["folders"]["fixture"]
    assert meta["total_bytes"] >= 1 << 30  # the 1 GiB image was backed up ...
    stored = Store(lab_env["LAB_STORE"]).open_set(set_id).manifest["totals"]["stored_bytes"]
    assert stored < 8 * MIB  # ... as its data, not its holes

    run_playbook("verify", "-e", "mode=full", "-e", f"backup_id={set_id}", "-e", "components=app")

    for child in list(root.iterdir()):  # wipe: the folder stays, everything in it goes
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    assert not any(root.iterdir())

    run_playbook("restore", "-e", f"backup_id={set_id}", "-e", "components=app", "-e", "confirm=yes", "-e", paths)
    assert state(root) == expected
    assert (root / "hardlink-at-top.jpg").read_bytes() == (root / "uploads" / "same-photo.jpg").read_bytes()
    assert not (outside / "elsewhere.txt").exists() and list(outside.iterdir()) == []
