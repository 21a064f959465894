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
``flock`` is released but the record stays, with ``lease_until`` (UTC ISO time), an
``owner`` (e.g. an Ansible run id) and, when known, ``run_owner``: the identity of the
process that drives the run (:func:`process_identity`: host, pid, process start time in
clock ticks, boot id, pid namespace). :func:`acquire` asks the caller's ``lease_valid``
whether a lease record still holds (default: until ``lease_until`` passes);
:func:`lease_stale_reason` is the rule the store uses: a ``run_owner`` that is provably
gone (same host, boot and pid namespace, and its pid is gone, a zombie, or reused by a
process with another start time) ends the lease at once; a live one on this host keeps
it; an owner this host cannot see keeps it until ``lease_until``. :func:`refresh_lease`
extends it, :func:`clear_lease` ends it.

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
from typing import Any, Callable, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, LockHeld

STANDARD_KINDS = ("create", "binlog", "prune", "rotate")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_POLL_S = 0.1


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def boot_id() -> Optional[str]:
    """This kernel's boot id (``/proc/sys/kernel/random/boot_id``); ``None`` if unreadable."""
    text = _read_text("/proc/sys/kernel/random/boot_id")
    return text.strip() if text else None


def pid_namespace(pid: Union[int, str] = "self") -> Optional[str]:
    """The pid namespace of ``pid`` (e.g. ``pid:[4026531836]``); ``None`` if unreadable."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def process_stat(pid: int) -> Optional[tuple[str, int, int]]:
    """``(state, parent pid, start time in clock ticks since boot)`` of ``pid`` from
    ``/proc/<pid>/stat``; ``None`` when there is no such process."""
    text = _read_text(f"/proc/{int(pid)}/stat")
    if not text or ")" not in text:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3
    try:
        return fields[0], int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def process_cmdline(pid: int) -> Optional[bytes]:
    """The raw command line of ``pid`` (NUL-separated); ``None`` when there is no such process."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return None


def controller_pid(pid: int) -> int:
    """The topmost process of ``pid``'s parent chain that runs the same command line as ``pid``.

    Ansible's workers are forked from ``ansible-playbook`` without exec (same command line,
    each in its own session), so from a lookup or action running in a worker this is the
    ``ansible-playbook`` process itself; from that process it is ``pid``.
    """
    mine = process_cmdline(pid)
    current = int(pid)
    while mine:
        stat = process_stat(current)
        parent = stat[1] if stat else 0
        if parent <= 1 or process_cmdline(parent) != mine:
            break
        current = parent
    return current


def process_identity(pid: int) -> dict[str, Any]:
    """The identity of process ``pid`` on this host, as recorded in a lease's ``run_owner``:
    ``{"host", "pid", "start_ticks", "boot_id", "pid_ns"}``. :class:`ConfigError` if no such process."""
    stat = process_stat(pid)
    if stat is None:
        raise ConfigError(f"no process {pid} on this host", hint="pass the pid of a running process")
    return {"host": socket.gethostname(), "pid": int(pid), "start_ticks": stat[2], "boot_id": boot_id(),
            "pid_ns": pid_namespace(pid)}


def check_run_owner(owner: Any) -> Optional[dict[str, Any]]:
    """``owner`` (a run owner identity, or ``None``) checked: a dict with ``host`` (str),
    ``pid`` and ``start_ticks`` (ints) and ``boot_id`` (str); ``pid_ns`` optional.
    Returns a clean copy; :class:`ConfigError` naming the bad field."""
    if owner in (None, "", {}):
        return None
    if not isinstance(owner, dict):
        raise ConfigError(f"run_owner must be a dict, not {type(owner).__name__}",
                          hint="pass lookup('lifeboat.dr.run_owner') (host, pid, start_ticks, boot_id)")
    clean: dict[str, Any] = {}
    for name, kind in (("host", str), ("pid", int), ("start_ticks", int), ("boot_id", str)):
        value = owner.get(name)
        try:
            clean[name] = kind(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            clean[name] = None
        if clean[name] is None or (kind is int and clean[name] < (1 if name == "pid" else 0)):
            raise ConfigError(f"run_owner lacks a valid {name!r} ({value!r})",
                              hint="pass lookup('lifeboat.dr.run_owner') (host, pid, start_ticks, boot_id)")
    if owner.get("pid_ns"):
        clean["pid_ns"] = str(owner["pid_ns"])
    return clean


def owner_state(owner: Optional[dict[str, Any]]) -> str:
    """``alive``, ``dead`` or ``unknown`` for a run owner identity (:func:`process_identity`).

    Only an owner on this host (same host name, same boot id, and same pid namespace when
    recorded) can be judged: ``dead`` if its pid is gone, a zombie, or now a process that
    started at another time (pid reuse); else ``alive``. Any other owner: ``unknown``.
    """
    if not owner or not isinstance(owner, dict):
        return "unknown"
    local_boot = boot_id()
    if not local_boot or owner.get("host") != socket.gethostname() or owner.get("boot_id") != local_boot:
        return "unknown"
    if owner.get("pid_ns") and owner.get("pid_ns") != pid_namespace():
        return "unknown"
    try:
        stat = process_stat(int(owner["pid"]))
        start_ticks = int(owner["start_ticks"])
    except (KeyError, TypeError, ValueError):
        return "unknown"
    if stat is None or stat[0] in ("Z", "X") or stat[2] != start_ticks:
        return "dead"
    return "alive"


def describe_owner(owner: Optional[dict[str, Any]]) -> str:
    """``pid 123 on host ctl1 (start tick 456)``, or ``an owner without identity`` for ``None``."""
    if not owner:
        return "an owner without identity"
    return f"pid {owner.get('pid')} on host {owner.get('host')} (start tick {owner.get('start_ticks')})"


def lease_stale_reason(record: Optional[dict[str, Any]], now: Optional[float] = None) -> Optional[str]:
    """Why the lease ``record`` no longer holds, or ``None`` while it holds.

    A lease its run gave up (:func:`abandon_lease`) or whose ``run_owner`` is provably gone
    (:func:`owner_state` ``dead``) ends at once; a live owner on this host keeps it; otherwise it
    holds until ``lease_until``.
    """
    record = record or {}
    if record.get("abandoned"):
        return f"its run stopped itself ({record['abandoned']})"
    owner = record.get("run_owner")
    state = owner_state(owner)
    if state == "dead":
        return f"its run owner {describe_owner(owner)} is gone"
    if state == "alive":
        return None
    if not lease_active(record, now):
        return f"its lease expired at {record.get('lease_until')} without renewal"
    return None


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
    :class:`ConfigError` for a bad kind. A lease record (left by a detached writer)
    counts as held while ``lease_valid(record)`` says so (default: until its
    ``lease_until`` passes); ``lease_valid`` runs while this process holds the lock's
    ``flock``, so it may clean up after a stale lease before the lock is taken over.
    """
    _check_kind(kind)
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    what = f"the {kind!r} lock of store {store or lock_dir.parent}"
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        held = acquire_file(lock_dir / f"{kind}.lock", None, what=what,
                            wait_s=max(0.0, deadline - time.monotonic()))
        previous = read_holder(held.path)
        if not _lease_holds(previous, lease_valid):
            held.kind = kind
            held.update(**holder_record(kind, set_id))
            return held
        held.release(keep_record=True)
        if time.monotonic() >= deadline:
            raise LockHeld(
                f"{what} is leased to set {previous.get('set_id')} (owner {previous.get('owner')}, run owner "
                f"{describe_owner(previous.get('run_owner'))}, taken by {describe_holder(previous)}; lease "
                f"until {previous.get('lease_until')})",
                hint=abort_hint(previous.get("set_id"), store or str(lock_dir.parent)), holder=previous)
        time.sleep(_POLL_S)


def abort_hint(set_id: Any, store: str) -> str:
    """The remedy named by a :class:`LockHeld` for a leased lock: the operator command."""
    return (f"let that run publish or abort its set; a run whose controller died on this host is taken over "
            f"at once, one on another host when its lease expires (5 minutes without renewal); if you know "
            f"it is dead, abort its set now: lifeboat abort {set_id} --store {store}")


def _lease_holds(record: Optional[dict[str, Any]], lease_valid: Optional[Callable[[dict[str, Any]], bool]]) -> bool:
    """True if ``record`` is a lease that still holds (``lease_valid``, default: not expired)."""
    if not record or not (record.get("detached") or record.get("lease_until")):
        return False
    return lease_valid(record) if lease_valid is not None else lease_active(record)


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
        record["renewed"] = utc_now_iso()
        held.update(**record)
        held.release(keep_record=True)
        return True


def abandon_lease(lock_dir: Path, kind: str, set_id: str, reason: str, wait_s: float = 5.0) -> bool:
    """Record that the run holding the lease of ``set_id`` on lock ``kind`` gave it up (one of its
    workers stopped itself because its controller is gone, seen from a host that cannot judge the
    controller's process): :func:`lease_stale_reason` then ends the lease at once, so the next
    writer takes the set over. ``False`` if the lock record names another set (nothing changed)."""
    _check_kind(kind)
    path = lock_dir / f"{kind}.lock"
    if not path.exists():
        return False
    with acquire_file(path, None, what=f"the {kind!r} lock", wait_s=wait_s) as held:
        record = read_holder(path) or {}
        if record.get("set_id") != set_id or not record.get("detached"):
            return False
        record["abandoned"] = str(reason)[:300]
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
