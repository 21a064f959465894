# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Temporary folders that name the process owning them, so a later run can remove a dead run's.

A run killed with SIGKILL (an OOM kill, a cancelled job, a reboot) cannot clean up
its temporary folder. :func:`make_owned_tmpdir` creates the folder as
``<prefix><pid>-<start>-<random>`` (mode 0700), where ``start`` is the owner's
process start time in clock ticks since boot (``/proc/<pid>/stat`` field 22; 0
where there is no ``/proc``). :func:`remove_dead_owned_tmpdirs` removes the folders
with that prefix whose owner is provably gone: no process with that pid, or a
process with that pid that started at another time (the pid was reused). A folder
of a live process -- a concurrent run -- is never touched, nor one of another
user, nor a folder whose name does not carry an owner (made by an older version).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

LOG = get_logger("rundirs")

_OWNER_RE = re.compile(r"^(\d+)-(\d+)-")


def process_start_ticks(pid: int) -> Optional[int]:
    """Start time of process ``pid`` in clock ticks since boot; None if there is no such process.

    Without ``/proc`` (not Linux) the start time is unknown: 0 for a live pid.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
        return 0 if _pid_exists(pid) else None
    except OSError:
        return 0 if _pid_exists(pid) else None
    fields = text[text.rindex(b")") + 2:].split()  # the command name may hold spaces and parentheses
    return int(fields[19])  # field 22 of the line; fields[0] is field 3


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_is_alive(pid: int, start_ticks: int) -> bool:
    """True while the process that created a folder named with (``pid``, ``start_ticks``) runs."""
    now = process_start_ticks(pid)
    if now is None:
        return False
    return now == start_ticks or 0 in (now, start_ticks)


def make_owned_tmpdir(prefix: str, root: Optional[str] = None) -> str:
    """A new 0700 folder ``<root>/<prefix><pid>-<start>-<random>`` owned by this process.

    ``root`` defaults to the system temporary folder (``tempfile.gettempdir()``).
    """
    pid = os.getpid()
    start = process_start_ticks(pid) or 0
    return tempfile.mkdtemp(prefix=f"{prefix}{pid}-{start}-", dir=root)


def remove_dead_owned_tmpdirs(prefix: str, root: Optional[str] = None) -> list[str]:
    """Remove the ``<prefix><pid>-<start>-*`` folders in ``root`` whose owner is gone; return their paths.

    Only folders (not symlinks) owned by this user are considered; errors while
    removing one are logged and skipped (a leftover never blocks a run).
    """
    base = Path(root or tempfile.gettempdir())
    removed = []
    try:
        candidates = sorted(base.glob(f"{glob_escape(prefix)}*"))
    except OSError as err:
        LOG.warning("cannot list %s for leftover %s* folders: %s", base, prefix, err)
        return removed
    for path in candidates:
        match = _OWNER_RE.match(path.name[len(prefix):])
        if match is None or not _is_own_folder(path):
            continue
        if owner_is_alive(int(match.group(1)), int(match.group(2))):
            continue
        try:
            shutil.rmtree(path)
        except OSError as err:
            LOG.warning("cannot remove the leftover folder %s of a dead run: %s", path, err)
            continue
        LOG.info("removed the leftover folder %s of a dead run (pid %s)", path, match.group(1))
        removed.append(str(path))
    return removed


def _is_own_folder(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()


def glob_escape(text: str) -> str:
    """``text`` with the glob wildcards ``*?[`` made literal."""
    return re.sub(r"([*?\[])", r"[\1]", text)
