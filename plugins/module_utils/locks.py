# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writer locks of a backup store: one ``fcntl.flock`` per writer kind.

A lock is the file ``<store>/locks/<kind>.lock`` held with an exclusive
``flock``; while held, the file contains a JSON *holder record*
``{"kind", "pid", "host", "started", "set_id"}`` so that a second writer can name
the holder. The kernel releases a ``flock`` when its holder dies (even on
``kill -9``), so a lock can never be left stale; the record of a dead holder is
simply overwritten by the next one.

A writer whose work spans several processes (a backup set built by several Ansible
module runs) turns its lock into a *lease* (:meth:`HeldLock.detach_as_lease`): the
``flock`` is released but the record stays, with ``lease_until`` (UTC ISO time) and
an ``owner`` (e.g. an Ansible run id). Until that time passes, :func:`acquire`
treats the lock as held (if the caller's ``lease_valid`` check agrees, e.g. the
partial set still exists); :func:`refresh_lease` extends it, :func:`clear_lease`
ends it.

Locks exclude *processes*: ``flock`` locks belong to an open file description, so
two :class:`HeldLock` objects of the same kind exclude each other even within one
process. Different kinds never block each other (``create`` vs ``binlog``).

Standard kinds: ``create`` (full/component backups), ``binlog`` (binary-log
archiving), ``prune`` (retention), ``rotate`` (key rotation, which also takes ``prune``).
Any lower-case identifier is accepted.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.errors import ConfigError, LockHeld

STANDARD_KINDS = ("create", "binlog", "prune", "rotate")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_POLL_S = 0.1


def utc_now_iso() -> str:
    """The current UTC time as ISO 8601 with microseconds and ``Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: UP017 - datetime.UTC is 3.11+


def holder_record(kind: str, set_id: Optional[str] = None) -> dict[str, Any]:
    """The JSON record written into a lock file by its holder (this process)."""
    return {"kind": kind, "pid": os.getpid(), "host": socket.gethostname(),
            "started": utc_now_iso(), "set_id": set_id}


def read_holder(path: Path) -> Optional[dict[str, Any]]:
    """The holder record stored in lock file ``path``, or ``None`` if empty/unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
        record = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def describe_holder(record: Optional[dict[str, Any]]) -> str:
    """``pid 123 on host db1 since 2025-...Z (set full_...)`` or ``an unknown process``."""
    if not record:
        return "an unknown process (its holder record is not written yet)"
    text = f"pid {record.get('pid')} on host {record.get('host')} since {record.get('started')}"
    if record.get("set_id"):
        text += f" (set {record['set_id']})"
    return text


def try_flock(fd: int, shared: bool = False) -> bool:
    """Take a ``flock`` on ``fd`` (exclusive, or shared) without waiting; ``False`` if taken."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def is_locked_by_other(path: Path) -> bool:
    """True if some open file description holds a ``flock`` on ``path`` (a live holder).

    Missing file: ``False``. The probe takes and immediately releases the lock.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        if try_flock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)


def lease_active(record: Optional[dict[str, Any]], now: Optional[float] = None) -> bool:
    """True if ``record`` is a lease whose ``lease_until`` has not passed."""
    until = (record or {}).get("lease_until")
    if not isinstance(until, str):
        return False
    try:
        deadline = datetime.fromisoformat(until.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return False
    return deadline > (time.time() if now is None else now)


def lease_until_iso(lease_s: float) -> str:
    """The UTC ISO time ``lease_s`` seconds from now."""
    stamp = datetime.fromtimestamp(time.time() + lease_s, timezone.utc)  # noqa: UP017
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class HeldLock:
    """A held ``flock``; release with :meth:`release` or by leaving the ``with`` block."""

    def __init__(self, path: Path, kind: str, fd: int, record: dict[str, Any], keep_record: bool = False,
                 shared: bool = False) -> None:
        self.path = path
        self.kind = kind
        self.record = record
        self.shared = shared
        self._keep_record = keep_record
        self._fd: Optional[int] = fd

    @property
    def held(self) -> bool:
        """True until released."""
        return self._fd is not None

    def update(self, **fields: Any) -> None:
        """Rewrite the holder record with ``fields`` changed (e.g. ``set_id``)."""
        if self._fd is None or self.shared:
            return
        self._keep_record = False
        self.record.update(fields)
        _write_record(self._fd, self.record)

    def upgrade(self, wait_s: float = 0.0) -> bool:
        """Turn a shared lock into an exclusive one; ``False`` if others still hold it
        after ``wait_s`` seconds (the lock stays shared then)."""
        if self._fd is None:
            return False
        deadline = time.monotonic() + max(0.0, wait_s)
        while not try_flock(self._fd):
            if time.monotonic() >= deadline:
                fcntl.flock(self._fd, fcntl.LOCK_SH)
                return False
            time.sleep(_POLL_S)
        self.shared = False
        return True

    def detach_as_lease(self, lease_s: float, **fields: Any) -> None:
        """Release the ``flock`` but leave a lease record valid for ``lease_s`` seconds."""
        self.update(lease_until=lease_until_iso(lease_s), detached=True, **fields)
        self.release(keep_record=True)

    def release(self, keep_record: Optional[bool] = None) -> None:
        """Release the lock (idempotent); the holder record is emptied unless kept."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        keep = self._keep_record if keep_record is None else keep_record
        try:
            if not keep and not self.shared:
                os.ftruncate(fd, 0)
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - safety net only
        try:
            self.release()
        except Exception:  # noqa: BLE001 - never raise from __del__
            pass


def _write_record(fd: int, record: dict[str, Any]) -> None:
    data = json.dumps(record, sort_keys=True).encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _check_kind(kind: str) -> None:
    if not _KIND_RE.match(kind or ""):
        raise ConfigError(f"invalid lock kind {kind!r}", hint=f"use one of {', '.join(STANDARD_KINDS)}")


def acquire(lock_dir: Path, kind: str, *, wait_s: float = 0.0, set_id: Optional[str] = None, store: str = "",
            lease_valid: Optional[Callable[[dict[str, Any]], bool]] = None) -> HeldLock:
    """Take the ``kind`` lock in ``lock_dir`` (created 0700 if missing).

    ``wait_s`` = 0 fails at once; otherwise retries every 0.1 s for up to
    ``wait_s`` seconds. Raises :class:`LockHeld` naming the holder (pid, host,
    start time, set id; or the owner of an active lease) when the lock stays taken;
    :class:`ConfigError` for a bad kind. An active lease counts as held unless
    ``lease_valid(record)`` says it is void (e.g. its set is gone).
    """
    _check_kind(kind)
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    what = f"the {kind!r} lock of store {store or lock_dir.parent}"
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        held = acquire_file(lock_dir / f"{kind}.lock", None, what=what,
                            wait_s=max(0.0, deadline - time.monotonic()))
        previous = read_holder(held.path)
        if not (lease_active(previous) and (lease_valid is None or lease_valid(previous or {}))):
            held.kind = kind
            held.update(**holder_record(kind, set_id))
            return held
        held.release(keep_record=True)
        if time.monotonic() >= deadline:
            raise LockHeld(
                f"{what} is leased to set {previous.get('set_id')} (owner {previous.get('owner')}, taken by "
                f"{describe_holder(previous)}) until {previous.get('lease_until')}",
                hint="let that multi-step run publish or abort its set (Store.abort_set), or wait for the lease "
                     "to expire", holder=previous)
        time.sleep(_POLL_S)


def refresh_lease(lock_dir: Path, kind: str, set_id: str, lease_s: float) -> bool:
    """Extend the lease of ``set_id`` on lock ``kind`` to ``lease_s`` seconds from now.

    ``False`` (nothing changed) if the lock record names another set.
    """
    _check_kind(kind)
    path = lock_dir / f"{kind}.lock"
    if not path.exists():
        return False
    with acquire_file(path, None, what=f"the {kind!r} lock", wait_s=5.0) as held:
        record = read_holder(path) or {}
        if record.get("set_id") != set_id or not record.get("detached"):
            return False
        record["lease_until"] = lease_until_iso(lease_s)
        held.update(**record)
        held.release(keep_record=True)
        return True


def clear_lease(lock_dir: Path, kind: str, set_id: str, wait_s: float = 5.0) -> bool:
    """End the lease of ``set_id`` on lock ``kind`` (publish/abort in another process).

    ``False`` if the lock record names another set (nothing changed).
    """
    _check_kind(kind)
    path = lock_dir / f"{kind}.lock"
    if not path.exists():
        return False
    with acquire_file(path, None, what=f"the {kind!r} lock", wait_s=wait_s) as held:
        if (read_holder(path) or {}).get("set_id") != set_id:
            return False
        held.release(keep_record=False)
        return True


def _open_locked(path: Path, shared: bool, deadline: float, what: str, wait_s: float) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        while not try_flock(fd, shared):
            if time.monotonic() >= deadline:
                holder = read_holder(path)
                waited = f" after waiting {wait_s:.2g} s" if wait_s > 0 else ""
                raise LockHeld(
                    f"{what} is held by {describe_holder(holder)}{waited}",
                    hint="wait for that run to finish (or pass a wait timeout); a dead holder releases it itself",
                    holder=holder)
            time.sleep(_POLL_S)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def acquire_file(path: Path, record: Optional[dict[str, Any]], *, what: str, wait_s: float = 0.0,
                 shared: bool = False) -> HeldLock:
    """Take a ``flock`` on ``path`` (created 0600): exclusive (writing ``record`` into it) or shared.

    ``record`` = ``None`` leaves the file's content (the previous holder's record) as it
    is, also on release. ``what`` names the lock in the :class:`LockHeld` message.
    """
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        fd = _open_locked(path, shared, deadline, what, wait_s)
        if _same_file(fd, path):
            break
        os.close(fd)  # the file was removed/replaced while we waited: lock the current one
    if record is None or shared:
        return HeldLock(path, "", fd, {}, keep_record=True, shared=shared)
    _write_record(fd, record)
    return HeldLock(path, str(record.get("kind", "")), fd, record)
