"""Keeping a Compose volume's content aside (lifeboat.dr.volume_keep) on the compose lab's engine.

The volume keeps its name (Compose adopts volumes by name) and ends up empty; the old content is
in a new volume ``<volume>-lifeboat-kept-<time>`` labelled with its origin, with the old folder's
owner and mode; nothing is deleted.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.util import compose_volumes
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import NotFound

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def scratch_volume(docker_client):
    """A throw-away volume holding a folder and a file owned by uid 999 (mode 0750); removed afterwards
    with every volume kept aside from it."""
    name = f"lbtest-keep-{secrets.token_hex(3)}"
    volume = docker_client.volumes.create(name=name)
    root = Path(volume.attrs["Mountpoint"])
    (root / "demo").mkdir()
    (root / "demo" / "t.ibd").write_bytes(b"x" * 4096)
    (root / "ibdata1").write_bytes(b"y" * 1024)
    for path in (root, root / "demo", root / "demo" / "t.ibd", root / "ibdata1"):
        os.chown(path, 999, 999)
    root.chmod(0o750)
    yield volume
    for found in docker_client.volumes.list(filters={"label": f"{compose_volumes.KEPT_FROM_LABEL}={name}"}):
        found.remove(force=True)
    volume.remove(force=True)


def test_the_content_moves_into_a_labelled_volume_and_the_original_keeps_its_name_empty(docker_client,
                                                                                        scratch_volume):
    at = datetime(2026, 12, 4, 14, 15, 0, tzinfo=UTC)
    kept = compose_volumes.keep_volume_content(docker_client, scratch_volume.attrs["Mountpoint"], now=at)

    assert kept.kept_volume == f"{scratch_volume.name}-lifeboat-kept-20261204T141500Z"
    assert kept.entries == 2
    original = docker_client.volumes.get(scratch_volume.name)
    assert list(Path(original.attrs["Mountpoint"]).iterdir()) == [], "the original volume is left empty"
    new = docker_client.volumes.get(kept.kept_volume)
    assert new.attrs["Labels"][compose_volumes.KEPT_FROM_LABEL] == scratch_volume.name
    assert new.attrs["Labels"][compose_volumes.KEPT_AT_LABEL].startswith("2026-12-04T14:15:00")
    moved = Path(new.attrs["Mountpoint"])
    assert (moved / "demo" / "t.ibd").read_bytes() == b"x" * 4096
    assert (moved / "ibdata1").stat().st_uid == 999
    assert (moved.stat().st_uid, moved.stat().st_mode & 0o7777) == (999, 0o750), "the old folder's owner and mode"


def test_an_empty_volume_is_left_alone(docker_client, scratch_volume):
    path = scratch_volume.attrs["Mountpoint"]
    assert compose_volumes.keep_volume_content(docker_client, path) is not None
    assert compose_volumes.keep_volume_content(docker_client, path) is None
    kept = docker_client.volumes.list(filters={"label": f"{compose_volumes.KEPT_FROM_LABEL}={scratch_volume.name}"})
    assert len(kept) == 1, "no second, empty kept volume"


def test_a_folder_that_is_no_volume_is_refused_naming_the_fix(docker_client, tmp_path):
    (tmp_path / "keep-me").write_text("data")
    with pytest.raises(NotFound, match="no volume of the engine has its folder at") as err:
        compose_volumes.keep_volume_content(docker_client, str(tmp_path))
    assert "bind mount" in err.value.hint
    assert (tmp_path / "keep-me").read_text() == "data", "nothing was moved"


def test_the_module_in_check_mode_says_what_would_move_and_moves_nothing(compose_lab, scratch_volume):
    path = scratch_volume.attrs["Mountpoint"]
    run = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible"), "localhost", "-c", "local", "--check",
         "-m", "lifeboat.dr.volume_keep",
         "-a", json.dumps({"path": path, "docker_host": compose_lab.docker_host}), "-o"],
        capture_output=True, text=True, cwd=REPO, check=False,
        env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
                 ANSIBLE_PYTHON_INTERPRETER=str(REPO / ".venv" / "bin" / "python")))
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.split("=>", 1)[1])
    assert (result["changed"], result["volume"], result["entries"], result["kept_volume"]) == (
        True, scratch_volume.name, 2, None)
    assert sorted(p.name for p in Path(path).iterdir()) == ["demo", "ibdata1"]


def test_a_whole_replaced_folder_beside_the_volume_becomes_a_labelled_volume_in_one_rename(
        docker_client, scratch_volume):
    """A physical restore's replaced datadir (a folder beside the volume's ``_data``) moves into a kept
    volume of its own: same inode (a rename, not a copy), owner and mode kept, nothing left beside."""
    root = Path(scratch_volume.attrs["Mountpoint"])
    replaced = root.with_name("_data.lbprev_20261204T141500Z")
    replaced.mkdir(mode=0o750)
    (replaced / "ibdata1").write_bytes(b"old" * 100)
    os.chown(replaced, 999, 999)
    inode = replaced.stat().st_ino
    at = datetime(2026, 12, 4, 14, 15, 0, tzinfo=UTC)

    kept = compose_volumes.keep_folder_as_volume(docker_client, scratch_volume.name, replaced, now=at)

    assert kept.kept_volume == f"{scratch_volume.name}-lifeboat-kept-20261204T141500Z" and kept.entries == 1
    new = docker_client.volumes.get(kept.kept_volume)
    moved = Path(new.attrs["Mountpoint"])
    assert new.attrs["Labels"][compose_volumes.KEPT_FROM_LABEL] == scratch_volume.name
    assert (moved / "ibdata1").read_bytes() == b"old" * 100
    assert moved.stat().st_ino == inode, "renamed, not copied"
    assert (moved.stat().st_uid, moved.stat().st_mode & 0o7777) == (999, 0o750)
    assert not replaced.exists()
    assert sorted(p.name for p in root.iterdir()) == ["demo", "ibdata1"], "the volume's own content is untouched"
