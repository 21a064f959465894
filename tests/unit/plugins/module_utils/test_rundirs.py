"""Temporary folders named after their owner process: a later run removes a dead run's, never a live one's.

The leftovers are made by real processes (a child that creates its folder and is
then SIGKILLed, as a killed restore is; a child that keeps running).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.util import rundirs

PREFIX = "lifeboat-load-"

_CHILD = """
import os, signal, sys
from ansible_collections.lifeboat.dr.plugins.module_utils.util import rundirs
path = rundirs.make_owned_tmpdir(sys.argv[1], root=sys.argv[2])
os.mkfifo(os.path.join(path, "load-1.tsv"))  # what a killed load leaves inside
print(path, flush=True)
if sys.argv[3] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()  # a live run: until the test closes stdin
"""


def start_owner(root: Path, fate: str) -> tuple[subprocess.Popen, Path]:
    """A real process that makes its owned folder in ``root``; ``fate`` 'die' (SIGKILL) or 'live'."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, PREFIX, str(root), fate], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    path = Path(proc.stdout.readline().strip())
    assert path.parent == root and path.is_dir()
    if fate == "die":
        assert proc.wait(timeout=30) == -signal.SIGKILL
    return proc, path


@pytest.fixture()
def live_owner(tmp_path):
    proc, path = start_owner(tmp_path, "live")
    yield proc, path
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_folder_name_carries_pid_and_start_time_and_is_private(tmp_path):
    path = Path(rundirs.make_owned_tmpdir(PREFIX, root=str(tmp_path)))
    pid, start, _rest = path.name[len(PREFIX):].split("-", 2)
    assert int(pid) == os.getpid() and int(start) == rundirs.process_start_ticks(os.getpid()) > 0
    assert path.stat().st_mode & 0o777 == 0o700


def test_dead_runs_folder_is_removed_and_live_runs_folder_kept(tmp_path, live_owner):
    live_proc, live_path = live_owner
    _dead_proc, dead_path = start_owner(tmp_path, "die")
    mine = Path(rundirs.make_owned_tmpdir(PREFIX, root=str(tmp_path)))

    removed = rundirs.remove_dead_owned_tmpdirs(PREFIX, root=str(tmp_path))

    assert removed == [str(dead_path)]
    assert not dead_path.exists()
    assert live_path.is_dir() and (live_path / "load-1.tsv").exists() and mine.is_dir()

    # once the live run has ended (killed too), its folder goes the next time
    live_proc.kill()
    live_proc.wait(timeout=30)
    assert rundirs.remove_dead_owned_tmpdirs(PREFIX, root=str(tmp_path)) == [str(live_path)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name]


def test_reused_pid_does_not_keep_a_dead_runs_folder(tmp_path):
    """The pid lives again, but as a process started at another time: the folder's owner is gone."""
    start = rundirs.process_start_ticks(os.getpid())
    stale = tmp_path / f"{PREFIX}{os.getpid()}-{start - 1}-abcd1234"
    stale.mkdir()
    assert rundirs.remove_dead_owned_tmpdirs(PREFIX, root=str(tmp_path)) == [str(stale)]


def test_folders_without_an_owner_or_of_other_tools_are_left_alone(tmp_path):
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
    keep = [tmp_path / f"{PREFIX}k2_x9abc",                      # made by an older version: owner unknown
            tmp_path / f"lifeboat-redis-verify-{dead_pid}-1-x",  # another prefix
            tmp_path / f"{PREFIX}notapid-1-x"]
    for path in keep:
        path.mkdir()
    (tmp_path / f"{PREFIX}{dead_pid}-1-file").write_text("a file, not a folder")
    link_target = tmp_path / "elsewhere"
    link_target.mkdir()
    (tmp_path / f"{PREFIX}{dead_pid}-1-link").symlink_to(link_target)

    assert rundirs.remove_dead_owned_tmpdirs(PREFIX, root=str(tmp_path)) == []
    assert all(p.exists() for p in keep) and link_target.is_dir()


def test_owner_alive_check_follows_the_real_process(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    start = rundirs.process_start_ticks(proc.pid)
    assert start and rundirs.owner_is_alive(proc.pid, start)
    assert not rundirs.owner_is_alive(proc.pid, start + 1)
    proc.kill()
    proc.wait(timeout=30)
    assert rundirs.process_start_ticks(proc.pid) is None and not rundirs.owner_is_alive(proc.pid, start)
