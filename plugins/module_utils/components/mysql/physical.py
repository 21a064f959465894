# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Physical MariaDB backups: streamed ``mariabackup`` full + incremental chains, restore by files.

Internal API of ``lifeboat.dr`` (the ``physical`` method of the ``mysql`` component).

Backup (:func:`backup_physical_into`): ``mariabackup --backup --stream=mbstream`` runs where
the server lives (:meth:`service.Service.run_command`; the process lab: on this host), with
the credentials in a 0600 option file (``--defaults-extra-file``, never argv). Its stdout is
one artifact, ``mysql/physical.mbstream.zst.enc``, written by the set pipeline (compress ->
encrypt -> hash): the stream never touches the disk unencrypted. ``--extra-lsndir`` (a
private temporary folder, removed afterwards) gives ``xtrabackup_checkpoints`` (from/to LSN)
and ``xtrabackup_info``, whose ``binlog_pos`` line carries the binlog file, position and GTID
of the consistency point. On 10.11 that is where they are: ``xtrabackup_binlog_info`` (same
values, tab separated) travels only inside the stream; ``mariadb_backup_binlog_info`` is the
name 11.x uses. So the manifest and the next incremental need no decryption.

An *incremental* backs up the pages changed since its parent's ``to_lsn``
(``--incremental-lsn``); its metadata names the parent and the whole chain (full first).
:func:`resolve_chain` proves a chain before anything uses it: every set published, none
whose latest verification failed, every link's ``from_lsn`` equal to its parent's
``to_lsn``; otherwise :class:`errors.NotFound` / :class:`errors.IncompleteBackup` /
:class:`errors.VerificationFailed` naming the set and the reason.

Restore (:func:`restore_physical`): inputs proven first (chain, data keys, free space for
the extraction and prepare, server major version equal, ``mariabackup`` usable), then
decrypt -> ``mbstream -x`` of each set into a fresh folder beside the datadir ->
``mariabackup --prepare`` the full, then each incremental in order (``--incremental-dir``)
-> stop the server -> the prepared folder and the live datadir are exchanged in one atomic
``renameat2(RENAME_EXCHANGE)`` (the path names the old datadir or the restored one at every
instant, also after a ``kill -9``) -> the old datadir is kept beside it as
``<datadir>.lbprev_<UTC time>`` (never deleted by Lifeboat) -> start -> health gate -> on a
failed gate the kept datadir is exchanged back and the server started again. The work folder
``<datadir>.lbrestore_<time>`` is locked (``flock``) while its run lives and removed when it ends;
one a ``kill -9`` left is cleaned up by the next restore (:func:`clean_leftovers`; a datadir the
killed run had already replaced is recognised by its inode, recorded in the folder's
``exchange.json`` before the stop, and kept as ``.lbprev_``).

Verification (:func:`verify_physical_full`): prepare the chain in a scratch folder, start a
scratch ``mariadbd`` on it, ``CHECK TABLE`` every table and record row counts and checksums
(mariabackup cannot count rows without a second read of the data, so the figures come from
the scratch server and are recorded in the verification).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import json
import os
import re
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional, Sequence

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.dumpformat import text_of
from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import lone_stream_codec
from ansible_collections.lifeboat.dr.plugins.module_utils.util import compose_volumes, rundirs
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    BackupFailed,
    ConfigError,
    DependencyMissing,
    IncompleteBackup,
    InsufficientSpace,
    LifeboatError,
    LockHeld,
    NotFound,
    PermissionDenied,
    RestoreFailed,
    ServiceControlFailed,
    VerificationFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import write_file_atomic
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    ProgressFn,
    ProgressMeter,
    get_logger,
    human_bytes,
    set_step,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.scratch import find_program

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.writer import SetWriter

COMPONENT = "mysql"
METHOD = "physical"
STREAM_ARTIFACT = "physical.mbstream.zst.enc"
PHYSICAL_JSON = "mysql_physical.json"
POSITION_JSON = "binlog_position.json"          # the same file as a logical set's (pitr reads it)
WORK_STATE = "exchange.json"                    # in a restore's work folder: the datadir it replaces
LSN_DIR_PREFIX = "lifeboat-lsn-"                # + <pid>-<start>-<random>: a backup's --extra-lsndir
PHYSICAL_FORMAT = 1
READ_BLOCK = 1 << 20
PIPE_SIZE = 1 << 20
SPACE_FACTOR = 1.25        # extraction + prepare of a chain: its plaintext size, plus room for prepare
SPACE_RESERVE = 256 << 20
TOOL_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin")
INNODB_SETTINGS = ("innodb_page_size", "innodb_log_file_size", "innodb_data_file_path", "innodb_undo_tablespaces",
                   "innodb_checksum_algorithm", "innodb_data_home_dir", "innodb_log_group_home_dir",
                   "innodb_undo_directory", "lower_case_table_names", "innodb_file_per_table")
# files of the backup tool that a live datadir does not need (moved into the kept metadata folder)
TOOL_FILES = ("backup-my.cnf", "xtrabackup_checkpoints", "xtrabackup_info", "xtrabackup_binlog_info",
              "xtrabackup_binlog_pos_innodb", "mariadb_backup_binlog_info", "mariadb_backup_checkpoints",
              "mariadb_backup_info", "xtrabackup_galera_info", "xtrabackup_slave_info")
SYSTEM_SCHEMAS = ("information_schema", "performance_schema", "sys")

log = get_logger("mysql.physical")


# --------------------------------------------------------------------------- tools and versions
def find_tool(name: str = "mariabackup") -> str:
    """Absolute path of ``mariabackup`` (or ``mariadb-backup``) / ``mbstream``; DependencyMissing naming the package."""
    names = (name, "mariadb-backup") if name == "mariabackup" else (name,)
    for candidate in names:
        with contextlib.suppress(DependencyMissing):
            return find_program(candidate, install_hint="", dirs=TOOL_DIRS)
    raise DependencyMissing(f"{name} is not installed; the physical method of mysql_backup/mysql_restore needs it "
                            "on the database host", hint="install the package mariadb-backup at the server's exact "
                            "version (Debian: apt-get install mariadb-backup)")


def major_minor(version: str) -> str:
    """``"10.11"`` of ``"10.11.19-MariaDB-0+deb12u1-log"``; ConfigError when there is no version number."""
    found = re.match(r"\s*(\d+)\.(\d+)", version or "")
    if not found:
        raise ConfigError(f"cannot read a version number from {version!r}")
    return f"{found.group(1)}.{found.group(2)}"


def tool_version(tool: str, target: Any = None) -> str:
    """The server version a ``mariabackup`` binary is built from (``10.11.19``), run where ``target`` runs."""
    result = _run(target, [tool, "--version"], what="mariabackup --version")
    text = result.stdout.decode("utf-8", "replace") + " " + result.stderr_tail
    found = re.search(r"(?:based on MariaDB server|Ver)\s+(\d+\.\d+\.\d+)", text)
    if not found:
        raise DependencyMissing(f"{tool} --version printed no MariaDB version ({text.strip()[:200]!r})",
                                hint="install mariadb-backup at the server's exact version")
    return found.group(1)


def check_tool_matches(tool_ver: str, server_version: str, tool: str = "mariabackup") -> None:
    """mariabackup reads and writes InnoDB's files: it must be built from the server's major version.

    ConfigError naming both versions otherwise (and the fix).
    """
    if major_minor(tool_ver) != major_minor(server_version):
        raise ConfigError(f"{tool} {tool_ver} cannot back up or prepare MariaDB {server_version} "
                          f"({major_minor(tool_ver)} != {major_minor(server_version)})",
                          hint=f"install mariadb-backup of MariaDB {major_minor(server_version)} "
                               "(the server's exact version) on the database host")


def server_binary_version(target: Any = None) -> str:
    """``mariadbd --version`` where the server runs (the version a restored datadir will be opened by)."""
    mariadbd = find_program("mariadbd", install_hint="install the MariaDB server package",
                            dirs=("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"))
    result = _run(target, [mariadbd, "--version"], what="mariadbd --version")
    return _parse_server_version(result.stdout, mariadbd)


def installed_server_version(service: Any = None, target: Any = None) -> str:
    """The MariaDB version that will open a restored datadir: the service's own server.

    A container (the ``docker`` manager): ``mariadbd --version`` inside it when it runs, else in a
    throwaway container of its image (a stopped or dead server is the usual case; this host's
    binary may belong to another server). Otherwise :func:`server_binary_version` on ``target``.
    """
    if getattr(service, "manager", "") != "docker":
        return server_binary_version(target)
    argv = ["mariadbd", "--version"]
    if service.is_running():
        out = service.run_command(argv, what="mariadbd --version").stdout
    else:
        out = service.run_in_image(argv, what="mariadbd --version")
    return _parse_server_version(out, f"mariadbd of service {service.name!r}'s image")


def _parse_server_version(output: bytes, where: str) -> str:
    found = re.search(r"Ver\s+(\d+\.\d+\.\d+\S*)", output.decode("utf-8", "replace"))
    if not found:
        raise DependencyMissing(f"cannot read the version of {where}")
    return found.group(1)


def in_container(target: Any) -> bool:
    """Whether ``target`` runs its commands in a container (the ``docker`` manager: exec through the API)."""
    return getattr(target, "manager", "") == "docker"


def tool_for(target: Any) -> str:
    """mariabackup's path on this host, or its name in a container (found there on the PATH by exec)."""
    return "mariabackup" if in_container(target) else find_tool()


def datadir_size(datadir: Path, target: Any = None) -> int:
    """Bytes of the datadir's files, where the server runs (``du -sb`` in a container)."""
    if not in_container(target):
        return dir_size(datadir)
    out = _run(target, ["du", "-sb", str(datadir)], what="du -sb of the datadir").stdout.decode()
    return int(out.split()[0]) if out.strip() else 0


class LsnDir:
    """mariabackup's ``--extra-lsndir`` (checkpoints, binlog position) where mariabackup runs.

    On this host: a 0700 folder of this run (:mod:`util.rundirs`; those of killed runs are
    removed first), the option file a 0600 temp file. In a container (:meth:`on` picks
    :class:`ContainerLsnDir`): ``mktemp -d`` there, read back with ``cat``, removed with
    ``rm -rf``; the option file is read from ``/dev/stdin`` (never a file in the container).
    """

    def __init__(self, work_dir: Optional[str]) -> None:
        rundirs.remove_dead_owned_tmpdirs(LSN_DIR_PREFIX, root=work_dir)  # what killed backups left behind
        self.path = rundirs.make_owned_tmpdir(LSN_DIR_PREFIX, root=work_dir)  # 0700, removed by remove()

    @staticmethod
    def on(target: Any, work_dir: Optional[str]) -> LsnDir:
        return ContainerLsnDir(target) if in_container(target) else LsnDir(work_dir)

    @contextlib.contextmanager
    def option_file(self, params: my.ConnParams) -> Iterator[tuple[str, Optional[bytes]]]:
        """``(path for --defaults-extra-file, bytes to give on stdin or None)``."""
        with my.option_file(params) as cnf:
            yield cnf, None

    def read(self) -> dict[str, Any]:
        return read_lsndir(Path(self.path))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class ContainerLsnDir(LsnDir):
    """:class:`LsnDir` inside the server's container (see there)."""

    STALE_MINUTES = 24 * 60     # lsn folders of killed runs older than this are removed by the next backup

    def __init__(self, target: Any) -> None:  # noqa: D107 - see the class
        self.target = target
        _run(target, ["find", "/tmp", "-maxdepth", "1", "-name", f"{LSN_DIR_PREFIX}*", "-mmin",
                      f"+{self.STALE_MINUTES}", "-exec", "rm", "-rf", "{}", "+"], what="removing old lsn folders")
        made = _run(target, ["mktemp", "-d", f"/tmp/{LSN_DIR_PREFIX}XXXXXXXX"], what="mktemp -d")
        self.path = made.stdout.decode().strip()

    @contextlib.contextmanager
    def option_file(self, params: my.ConnParams) -> Iterator[tuple[str, Optional[bytes]]]:
        yield "/dev/stdin", my.option_file_text(params).encode()

    def read(self) -> dict[str, Any]:
        def text(name: str) -> str:
            try:
                return _run(self.target, ["cat", f"{self.path}/{name}"], what=f"reading {name}").stdout.decode()
            except ServiceControlFailed as err:
                raise BackupFailed(f"mariabackup finished without writing {name} into {self.path} in the "
                                   f"container: {err.message}", hint="see mariabackup's messages in the log") from None

        return lsn_facts(text("xtrabackup_checkpoints"), text("xtrabackup_info"))

    def remove(self) -> None:
        with contextlib.suppress(LifeboatError):
            _run(self.target, ["rm", "-rf", self.path], what="removing the lsn folder")


def local_target() -> Any:
    """The deployment target "this host" (its run_command only): the process lab, a server on this machine."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.service import Service

    return Service("mysql")


def _run(target: Any, argv: Sequence[str], *, what: str, **kwargs: Any) -> Any:
    """``target.run_command`` (None: this host)."""
    return (target or local_target()).run_command(list(argv), what=what, **kwargs)


# --------------------------------------------------------------------------- reading mariabackup's files
def parse_kv(text: str) -> dict[str, str]:
    """``key = value`` lines (xtrabackup_checkpoints, xtrabackup_info) as a dict of strings."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


BINLOG_POS_RE = re.compile(r"filename '(?P<file>[^']*)', position '(?P<pos>\d+)'(?:, GTID of the last change "
                           r"'(?P<gtid>[^']*)')?")


def parse_binlog_pos(text: Optional[str]) -> Optional[dict[str, Any]]:
    """``{"file", "position", "gtid"}`` of xtrabackup_info's ``binlog_pos`` value; None when absent (binlog off)."""
    found = BINLOG_POS_RE.search(text or "")
    if not found:
        return None
    return {"file": found.group("file"), "position": int(found.group("pos")), "gtid": found.group("gtid") or ""}


def read_lsndir(lsndir: Path) -> dict[str, Any]:
    """LSNs, binlog position and tool facts from a ``--extra-lsndir`` folder; BackupFailed when incomplete."""
    try:
        return lsn_facts((lsndir / "xtrabackup_checkpoints").read_text(), (lsndir / "xtrabackup_info").read_text())
    except OSError as err:
        raise BackupFailed(f"mariabackup finished without writing its checkpoints into {lsndir}: {err}",
                           hint="see mariabackup's messages in the log") from None


def lsn_facts(checkpoints_text: str, info_text: str) -> dict[str, Any]:
    """:func:`read_lsndir`'s result from the texts of ``xtrabackup_checkpoints`` and ``xtrabackup_info``."""
    checkpoints, info = parse_kv(checkpoints_text), parse_kv(info_text)
    try:
        from_lsn, to_lsn = int(checkpoints["from_lsn"]), int(checkpoints["to_lsn"])
    except (KeyError, ValueError):
        raise BackupFailed(f"unreadable xtrabackup_checkpoints from mariabackup: {checkpoints}") from None
    return {"backup_type": checkpoints.get("backup_type"), "from_lsn": from_lsn, "to_lsn": to_lsn,
            "last_lsn": int(checkpoints.get("last_lsn") or to_lsn),
            "binlog_position": parse_binlog_pos(info.get("binlog_pos")),
            "tool_version": info.get("tool_version"), "server_version": info.get("server_version"),
            "backup_start": info.get("start_time"), "backup_end": info.get("end_time")}


# --------------------------------------------------------------------------- streaming through a program
def _fill(fd: int, buf: bytearray) -> int:
    """Read from ``fd`` until ``buf`` is full or EOF; the number of bytes read."""
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    view.release()
    return got


def _big_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    with contextlib.suppress(OSError, AttributeError):
        import fcntl

        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    return r, w


def stream_command_out(target: Any, argv: Sequence[str], sink: Any, *, what: str,
                       on_bytes: Optional[Callable[[int], None]] = None,
                       stdin: Optional[bytes] = None) -> tuple[Any, int]:
    """Run ``argv`` where ``target`` runs with its stdout streamed into ``sink`` (a binary writer).

    ``stdin``: bytes the program reads on its standard input (an option file read from
    ``/dev/stdin``: a secret that never lands in a file on the target). Returns
    ``(CommandResult, bytes)``. A failing program raises its ServiceControlFailed
    (as BackupFailed naming ``what``); a failing sink raises its own error after the program
    was stopped by the closed pipe (EPIPE).
    """
    r, w = _big_pipe()
    outcome: dict[str, Any] = {}
    extra = {"stdin": io.BytesIO(stdin)} if stdin is not None else {}

    def run() -> None:
        try:
            with os.fdopen(w, "wb", buffering=0) as out:
                outcome["result"] = _run(target, argv, what=what, stdout=out, **extra)
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=run, name=f"lifeboat-{what}", daemon=True)
    thread.start()
    total = 0
    try:
        while True:
            buf = bytearray(READ_BLOCK)
            got = _fill(r, buf)
            if not got:
                break
            total += got
            if got == READ_BLOCK and hasattr(sink, "hand_over"):
                sink.hand_over(buf)
            else:
                sink.write(bytes(buf[:got]))
            if on_bytes:
                on_bytes(total)
    finally:
        os.close(r)  # the program gets EPIPE if we stopped early
        thread.join()
    if "error" in outcome:
        err = outcome["error"]
        if isinstance(err, ServiceControlFailed):
            raise BackupFailed(err.message, hint=err.hint or "see the program's message") from None
        raise err
    return outcome["result"], total


def stream_command_in(target: Any, argv: Sequence[str], source: Any, *, what: str,
                      on_bytes: Optional[Callable[[int], None]] = None) -> int:
    """Run ``argv`` where ``target`` runs with ``source`` (a binary reader) streamed to its stdin.

    The source's own errors (a tampered or truncated artifact) win over the program's
    outcome: a program that read a cut stream and exited 0 does not make the run succeed.
    Returns the bytes fed.
    """
    r, w = _big_pipe()
    fed: dict[str, Any] = {"bytes": 0}

    def feed() -> None:
        try:
            with os.fdopen(w, "wb", buffering=0) as out:
                while True:
                    data = source.read(READ_BLOCK)
                    if not data:
                        return
                    view = memoryview(data)
                    while view:
                        view = view[out.write(view):]
                    fed["bytes"] += len(data)
                    if on_bytes:
                        on_bytes(fed["bytes"])
        except BrokenPipeError:
            fed["broken"] = True
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            fed["error"] = err

    thread = threading.Thread(target=feed, name=f"lifeboat-feed-{what}", daemon=True)
    thread.start()
    try:
        with os.fdopen(r, "rb", buffering=0) as stdin:
            try:
                _run(target, argv, what=what, stdin=stdin)
            except ServiceControlFailed as err:
                thread.join()
                if "error" in fed:
                    raise fed["error"] from None
                raise RestoreFailed(err.message, hint=err.hint or "see the program's message") from None
    finally:
        thread.join()
    if "error" in fed:
        raise fed["error"]
    if fed.get("broken"):
        raise RestoreFailed(f"{what} stopped reading its input before the end")
    return int(fed["bytes"])


# --------------------------------------------------------------------------- server facts
def server_facts(params: my.ConnParams) -> dict[str, Any]:
    """What a physical backup records about its server: version, identity, datadir, InnoDB settings."""
    conn = my.connect(params)
    try:
        flavor = my.detect_flavor(conn)
        if flavor.name != "mariadb":
            raise ConfigError(f"the physical method backs up MariaDB with mariabackup; this server is "
                              f"{flavor.version_string}", hint="use method native/tsv/auto (logical) for MySQL")
        rows = my.query_all(conn, "SHOW GLOBAL VARIABLES WHERE Variable_name IN (" +
                            ",".join(f"'{v}'" for v in INNODB_SETTINGS + ("datadir", "log_bin", "log_bin_basename")) +
                            ")")
        variables = {text_of(k): str(text_of(v)) for k, v in rows}
        return {"flavor": flavor, "server_version": flavor.version_string,
                "server_identity": my.server_identity(conn, flavor), "datadir": variables.get("datadir", ""),
                "innodb": {k: variables.get(k) for k in INNODB_SETTINGS if k in variables},
                "log_bin": variables.get("log_bin")}
    finally:
        conn.close()


def dir_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (PermissionDenied naming the unreadable place)."""
    total = 0
    for root, _dirs, files in os.walk(path, onerror=_raise_walk):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _raise_walk(err: OSError) -> None:
    if err.errno in (errno.EACCES, errno.EPERM):
        raise PermissionDenied(f"cannot read the datadir: {err.filename}: {err.strerror}",
                               hint="run the backup as the server's OS user (or root) on the database host")
    if err.errno != errno.ENOENT:
        raise BackupFailed(f"cannot read the datadir: {err}")


# --------------------------------------------------------------------------- chains
def physical_meta(backup_set: BackupSet) -> Optional[dict[str, Any]]:
    """The set's physical-backup metadata (``mysql/mysql_physical.json``), or None for a logical set."""
    if COMPONENT not in backup_set.components:
        return None
    if backup_set.component_metadata(COMPONENT).get("method") != METHOD:
        return None
    return backup_set.read_json(COMPONENT, PHYSICAL_JSON)


def is_physical(backup_set: BackupSet) -> bool:
    """True when the set's ``mysql`` component is a physical (mariabackup) backup."""
    return COMPONENT in backup_set.components and \
        backup_set.component_metadata(COMPONENT).get("method") == METHOD


def _open_link(store: Store, set_id: str, child: str) -> Any:
    try:
        return store.open_set(set_id)
    except NotFound:
        raise NotFound(f"physical backup {child} needs its parent {set_id}, which is not in {store.root} "
                       "(pruned or deleted): the chain has a gap", hint="restore an older complete chain, or take "
                       "a new full physical backup") from None
    except IncompleteBackup:
        raise IncompleteBackup(f"physical backup {child} needs its parent {set_id}, which was never published",
                               hint="take a new full physical backup") from None


def _check_not_failed(store: Store, backup_set: BackupSet, role: str) -> None:
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import verification_status

    status, _mode = verification_status(store.verifications(backup_set.set_id))
    if status == "failed":
        raise VerificationFailed(f"{role} {backup_set.set_id} failed its latest verification",
                                 hint="take a new full physical backup (or verify the set again if the failure "
                                      "was not the set's)")


def resolve_chain(store: Store, backup_set: BackupSet) -> list[tuple[Any, dict[str, Any]]]:
    """``[(set, physical meta), ...]`` from the full to ``backup_set``, every link proven.

    Raises NotFound (a missing/pruned parent: a gap), IncompleteBackup, VerificationFailed
    (a set whose latest verification failed), ConfigError (not physical, or LSNs that do
    not continue: ``from_lsn`` of a child != ``to_lsn`` of its parent).
    """
    meta = physical_meta(backup_set)
    if meta is None:
        raise ConfigError(f"set {backup_set.set_id} is not a physical MySQL backup")
    chain = [(backup_set, meta)]
    _check_not_failed(store, backup_set, "physical backup")
    seen = {backup_set.set_id}
    while chain[0][1].get("parent"):
        child_set, child = chain[0]
        parent_id = child["parent"]
        if parent_id in seen:
            raise ConfigError(f"physical backup chain of {backup_set.set_id} loops at {parent_id}")
        seen.add(parent_id)
        parent_set = _open_link(store, parent_id, child_set.set_id)
        parent = physical_meta(parent_set)
        if parent is None:
            raise ConfigError(f"physical backup {child_set.set_id} names {parent_id} as its parent, which is not a "
                              "physical backup")
        _check_not_failed(store, parent_set, f"the parent of {child_set.set_id},")
        if int(child["from_lsn"]) != int(parent["to_lsn"]):
            raise ConfigError(f"physical backup {child_set.set_id} starts at LSN {child['from_lsn']} but its parent "
                              f"{parent_id} ends at LSN {parent['to_lsn']}: the chain has a gap",
                              hint="take a new full physical backup")
        chain.insert(0, (parent_set, parent))
    if chain[0][1].get("backup_type") != "full":
        raise ConfigError(f"the chain of {backup_set.set_id} does not start with a full backup")
    return chain


def find_parent(store: Store, parent: Optional[str], server_identity: str) -> tuple[Any, dict[str, Any]]:
    """The parent of a new incremental: ``parent`` (a set id) or the newest physical set of this server.

    Its whole chain is proven (:func:`resolve_chain`); NotFound when there is none.
    """
    if parent and parent != "latest":
        chosen = store.open_set(parent)
        if not is_physical(chosen):
            raise ConfigError(f"set {parent} is not a physical MySQL backup; an incremental needs a physical parent",
                              hint="give a physical set as parent, or take a full one (incremental: false)")
    else:
        chosen = None
        for info in reversed(store.list_sets()):
            if COMPONENT not in info.components:
                continue
            candidate = store.open_set(info.set_id)
            if not is_physical(candidate):
                continue
            if candidate.component_metadata(COMPONENT).get("server_identity") != server_identity:
                continue
            chosen = candidate
            break
        if chosen is None:
            raise NotFound(f"no physical backup of this server ({server_identity}) in {store.root} to base an "
                           "incremental on", hint="take a full physical backup first (incremental: false)")
    chain = resolve_chain(store, chosen)
    meta = chain[-1][1]
    if meta.get("server_identity") != server_identity:
        raise ConfigError(f"parent {chosen.set_id} is a backup of {meta.get('server_identity')}, not of this server "
                          f"({server_identity})", hint="give a parent taken from this server")
    return chosen, meta


# --------------------------------------------------------------------------- backup
def check_lsn_not_behind(params: my.ConnParams, parent_id: str, parent_end_lsn: int) -> None:
    """Refuse an incremental whose parent ends (``last_lsn``) at an LSN the server has not reached.

    The server's redo LSN only grows -- unless its datadir was replaced (a physical restore of an
    older set): then the server's pages are not the parent's, and an incremental from the parent's
    to-LSN, restored on top of the parent, would mix the two histories. ConfigError naming both
    LSNs. (A server restored from an older set that has since written past the parent's end
    cannot be told apart this way.)
    """
    conn = my.connect(params)
    try:
        rows = my.query_all(conn, "SHOW GLOBAL STATUS LIKE 'Innodb_lsn_current'")
    finally:
        conn.close()
    current = int(text_of(rows[0][1])) if rows else None
    if current is not None and current < parent_end_lsn:
        raise ConfigError(f"the server's InnoDB LSN is {current}, behind the end of parent {parent_id} "
                          f"(LSN {parent_end_lsn}): its datadir was replaced since (a physical restore of an older "
                          "set?), so an incremental on that parent would mix two histories",
                          hint="take a full physical backup (incremental: false)")


def plan_physical_backup(store: Store, params: my.ConnParams, options: Mapping[str, Any]) -> dict[str, Any]:
    """Check mode: server, datadir and its size; for an incremental the parent and its to-LSN."""
    facts = server_facts(params)
    datadir = Path(options.get("datadir") or facts["datadir"])
    target = options.get("target")
    tool = tool_for(target)
    tool_ver = tool_version(tool, target)
    check_tool_matches(tool_ver, facts["server_version"])
    plan: dict[str, Any] = {"method": METHOD, "server_version": facts["server_version"],
                            "server_identity": facts["server_identity"], "datadir": str(datadir),
                            "datadir_bytes": datadir_size(datadir, target), "incremental": False, "tool": tool,
                            "tool_version": tool_ver, "runs_in_container": in_container(target)}
    plan["approx_bytes"] = plan["datadir_bytes"]
    if isinstance(options, dict):
        options["known"] = {"facts": facts, "tool_version": tool_ver}  # backup_physical_into does not ask again
    if options.get("incremental") or options.get("parent"):
        parent_set, parent = find_parent(store, options.get("parent"), facts["server_identity"])
        check_lsn_not_behind(params, parent_set.set_id, int(parent.get("last_lsn") or parent["to_lsn"]))
        plan.update(incremental=True, parent=parent_set.set_id, incremental_lsn=int(parent["to_lsn"]),
                    chain=list(parent.get("chain", [])) + [parent_set.set_id])
    return plan


def backup_physical_into(writer: SetWriter, params: my.ConnParams, *, store: Optional[Store] = None, target: Any = None,
                         datadir: Optional[str] = None, incremental: bool = False, parent: Optional[str] = None,
                         progress: Optional[ProgressFn] = None, work_dir: Optional[str] = None,
                         known: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Stream a mariabackup backup of the server ``params`` reaches into the open set ``writer``.

    ``target``: the deployment target mariabackup runs on (None: this host). ``datadir``:
    default the server's ``@@datadir``. ``incremental``/``parent``: an incremental from the
    newest physical set of this server in ``store`` (or from ``parent``), refused with the
    reason when its chain is not whole. ``known``: the server facts and tool version a check
    just made (``{"facts", "tool_version"}``), not asked again. Does not publish (the caller
    does, or aborts the set). Returns the summary (LSNs, binlog position, chain, bytes, duration).
    """
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat()  # noqa: UP017 - datetime.UTC needs 3.11 on targets
    facts = (known or {}).get("facts") or server_facts(params)
    tool = tool_for(target)
    tool_ver = (known or {}).get("tool_version") or tool_version(tool, target)
    check_tool_matches(tool_ver, facts["server_version"])
    data_path = datadir or facts["datadir"]
    parent_set = parent_meta = None
    if incremental or parent:
        if store is None:
            raise ConfigError("an incremental physical backup needs the store holding its parent")
        parent_set, parent_meta = find_parent(store, parent, facts["server_identity"])
        check_lsn_not_behind(params, parent_set.set_id, int(parent_meta.get("last_lsn") or parent_meta["to_lsn"]))
    lsndir = LsnDir.on(target, work_dir)
    try:
        with lsndir.option_file(params) as (cnf, cnf_stdin):
            argv = my.tool_argv(tool, cnf, "--backup", "--stream=mbstream", f"--datadir={data_path}",
                                f"--extra-lsndir={lsndir.path}", f"--target-dir={lsndir.path}")
            if parent_meta is not None:
                argv.append(f"--incremental-lsn={int(parent_meta['to_lsn'])}")
            set_step("mariabackup --backup")
            meter = ProgressMeter("mysql physical backup", progress, None)
            # one stream for the whole server: two zstd workers on a 2-core host (lone_stream_codec)
            codec = lone_stream_codec(getattr(writer, "codec", None))
            with writer.artifact(COMPONENT, STREAM_ARTIFACT, codec=codec) as out:
                try:
                    _result, streamed = stream_command_out(target, argv, out, what="mariabackup --backup",
                                                           on_bytes=meter.update, stdin=cnf_stdin)
                except BackupFailed as err:
                    raise _explained(err, facts["datadir"], target) from None
            meter.finish()
        lsn = lsndir.read()
    finally:
        lsndir.remove()
    if streamed == 0:
        raise BackupFailed("mariabackup --backup streamed nothing", hint="see mariabackup's messages in the log")
    kind = "incremental" if parent_meta is not None else "full"
    if parent_meta is not None and lsn["from_lsn"] != int(parent_meta["to_lsn"]):
        raise BackupFailed(f"mariabackup started the incremental at LSN {lsn['from_lsn']}, not at the parent's "
                           f"{parent_meta['to_lsn']}")
    chain = (list(parent_meta.get("chain", [])) + [parent_set.set_id]) if parent_meta is not None else []
    duration = round(time.monotonic() - started, 3)
    meta = {"format": PHYSICAL_FORMAT, "method": METHOD, "backup_type": kind, "artifact": STREAM_ARTIFACT,
            "parent": parent_set.set_id if parent_set is not None else None, "chain": chain,
            "from_lsn": lsn["from_lsn"], "to_lsn": lsn["to_lsn"], "last_lsn": lsn["last_lsn"],
            "binlog_position": lsn["binlog_position"], "server_version": facts["server_version"],
            "server_identity": facts["server_identity"], "flavor": "mariadb", "datadir": data_path,
            "innodb": facts["innodb"], "tool": "mariabackup", "tool_version": tool_ver,
            "stream_bytes": streamed, "started_at": started_at, "duration_s": duration,
            "backup_start": lsn["backup_start"], "backup_end": lsn["backup_end"]}
    position = dict(lsn["binlog_position"] or {}, binlog_enabled=lsn["binlog_position"] is not None,
                    server_identity=facts["server_identity"], flavor="mariadb", taken_at=started_at, method=METHOD)
    writer.write_json(COMPONENT, PHYSICAL_JSON, meta)
    writer.write_json(COMPONENT, POSITION_JSON, position)
    writer.set_component_metadata(COMPONENT, {
        "server_identity": facts["server_identity"], "flavor": "mariadb", "server_version": facts["server_version"],
        "binlog_position": lsn["binlog_position"], "engine": "mariabackup", "method": METHOD, "backup_type": kind,
        "parent": meta["parent"], "chain": chain, "from_lsn": lsn["from_lsn"], "to_lsn": lsn["to_lsn"]})
    if hasattr(writer, "add_source"):
        writer.add_source(COMPONENT, f"{params.host}:{params.port}", facts["server_version"],
                          server_identity=facts["server_identity"])
    log.info("mysql physical %s backup: LSN %d..%d, %s streamed in %.1f s", kind, lsn["from_lsn"], lsn["to_lsn"],
             human_bytes(streamed), duration)
    return {"method": METHOD, "backup_type": kind, "parent": meta["parent"], "chain": chain,
            "from_lsn": lsn["from_lsn"], "to_lsn": lsn["to_lsn"], "binlog_position": lsn["binlog_position"],
            "gtid": (lsn["binlog_position"] or {}).get("gtid"), "server_identity": facts["server_identity"],
            "server_version": facts["server_version"], "plaintext_bytes": streamed, "duration_s": duration,
            "datadir": data_path}


def _explained(err: BackupFailed, server_datadir: str, target: Any) -> BackupFailed:
    """mariabackup's "only able to copy log" means the redo log it read is not the server's: it
    reads the datadir the server names (``@@datadir``), here another server's files of that path
    (the server runs in a container, or on another host). Says so, with the fix."""
    if "only able to copy log" not in err.message or in_container(target):
        return err
    return BackupFailed(f"{err.message} -- the files at {server_datadir} on this host are not this server's "
                        "(mariabackup reads the datadir the server names)",
                        hint="run the backup where the server runs: on its host, or in its container "
                             "(service_manager: docker; on Compose inventories the mysql role does this)")


# --------------------------------------------------------------------------- extract + prepare
def chain_plaintext_bytes(chain: Sequence[tuple[Any, dict[str, Any]]]) -> int:
    """Plaintext bytes of every stream of the chain (what the extraction writes)."""
    return sum(int(s.artifact_record(COMPONENT, m["artifact"])["plaintext_size"]) for s, m in chain)


def check_space(folder: Path, needed: int, what: str, reclaimable: int = 0) -> dict[str, int]:
    """InsufficientSpace naming the figures unless ``folder``'s file system has ``needed`` bytes free.

    ``reclaimable``: bytes the run frees before it writes (leftover work folders it removes).
    """
    free = shutil.disk_usage(folder).free
    if free + reclaimable < needed:
        also = f" (+ {human_bytes(reclaimable)} of leftover work folders it removes)" if reclaimable else ""
        raise InsufficientSpace(f"{what} needs about {human_bytes(needed)} free in {folder}, only "
                                f"{human_bytes(free)} are free{also}", hint="free space there (old kept datadirs "
                                "*.lbprev_* are never removed by Lifeboat), or restore elsewhere")
    return {"free_bytes": free, "needed_bytes": needed, "reclaimable_bytes": reclaimable}


def extract_and_prepare(chain: Sequence[tuple[Any, dict[str, Any]]], keyring: KeyRing, work: Path, *,
                        target: Any = None, progress: Optional[ProgressFn] = None) -> Path:
    """Decrypt + ``mbstream -x`` every set of ``chain`` under ``work`` and prepare them into ``work/base``.

    The full is prepared first, then each incremental in order (``--incremental-dir``);
    each incremental folder is removed once applied. Returns the prepared folder.
    RestoreFailed (naming the set) when extraction or a prepare fails.
    """
    mbstream, tool = find_tool("mbstream"), find_tool()
    base = work / "base"
    total = chain_plaintext_bytes(chain)
    meter = ProgressMeter("mysql physical extract", progress, total)
    done = 0
    for index, (backup_set, meta) in enumerate(chain):
        dest = base if index == 0 else work / f"incr-{index:03d}"
        dest.mkdir(mode=0o700)
        set_step(f"extract {backup_set.set_id}")
        offset = done
        with backup_set.open_artifact(COMPONENT, meta["artifact"], keyring) as reader:
            done += stream_command_in(target, [mbstream, "-x", "-C", str(dest)], reader,
                                      what=f"mbstream -x of {backup_set.set_id}",
                                      on_bytes=lambda n, o=offset: meter.update(o + n))
        set_step(f"prepare {backup_set.set_id}")
        argv = [tool, "--prepare", f"--target-dir={base}"]
        if index:
            argv.append(f"--incremental-dir={dest}")
        try:
            _run(target, argv, what=f"mariabackup --prepare of {backup_set.set_id}")
        except ServiceControlFailed as err:
            raise RestoreFailed(f"preparing {backup_set.set_id} failed: {err.message}",
                                hint="the set's redo or delta files cannot be applied; the live datadir was not "
                                     "touched; restore an older chain") from None
        if index:
            shutil.rmtree(dest)
    meter.finish()
    return base


# --------------------------------------------------------------------------- the atomic exchange
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange_paths(a: Path, b: Path) -> None:
    """Swap the names ``a`` and ``b`` atomically (Linux ``renameat2(RENAME_EXCHANGE)``, same file system).

    At every instant (also after a ``kill -9``) each name points to one of the two
    folders, never to nothing. RestoreFailed when the system cannot do it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    func = getattr(libc, "renameat2", None)
    if func is None:
        raise RestoreFailed("this system has no renameat2(): the datadir cannot be exchanged atomically",
                            hint="a physical restore needs Linux >= 3.15 and glibc >= 2.28")
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if func(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise RestoreFailed(f"exchanging {a} and {b} failed: {os.strerror(code)}",
                            hint="both must be on the same file system")
    with contextlib.suppress(OSError):
        fd = os.open(a.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _own_like(root: Path, like: os.stat_result) -> None:
    """Give ``root`` and everything in it the owner of ``like``; ``root`` its mode (files stay 0660/0600)."""
    os.chmod(root, like.st_mode & 0o7777)
    if (like.st_uid, like.st_gid) == (os.geteuid(), os.getegid()):
        return
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(folder, name), like.st_uid, like.st_gid)
    os.lchown(root, like.st_uid, like.st_gid)


def _strip_tool_files(prepared: Path, keep_in: Path) -> None:
    """Move mariabackup's own files out of the prepared folder (into ``keep_in``): not part of a datadir."""
    keep_in.mkdir(mode=0o700, exist_ok=True)
    for name in TOOL_FILES:
        src = prepared / name
        if src.exists():
            os.replace(src, keep_in / name)


# --------------------------------------------------------------------------- restore
def health_gate(params: my.ConnParams, target: Any, timeout_s: float) -> dict[str, Any]:
    """The restored server answers: the service is healthy, a login works and reads the system tables."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.restore import wait_for_login

    waited = target.wait_healthy(timeout_s) if hasattr(target, "wait_healthy") else 0.0
    wait_for_login(params, max(5.0, timeout_s - waited))
    conn = my.connect(params)
    try:
        users = int(my.query_value(conn, "SELECT COUNT(*) FROM mysql.user"))
        tables = int(my.query_value(conn, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA NOT IN "
                                          "('information_schema','performance_schema','sys','mysql')"))
        version = str(my.query_value(conn, "SELECT VERSION()"))
    finally:
        conn.close()
    return {"users": users, "tables": tables, "server_version": version}


def plan_physical_restore(store: Store, backup_set: BackupSet, keyring: KeyRing, *, datadir: str, target: Any = None,
                          service: Any = None) -> dict[str, Any]:
    """Prove the inputs of a physical restore; change nothing. Returns the plan.

    Checks: the chain (:func:`resolve_chain`), every data key (WrongKey/KeyUnavailable),
    the datadir (absolute, an existing folder, no tablespace/log folders outside it), the
    server binary's major version equals the backup's (ConfigError naming both; the
    service's own server: :func:`installed_server_version`),
    mariabackup and mbstream present and of that version, free space beside the datadir.
    """
    chain = resolve_chain(store, backup_set)
    for link, _meta in chain:
        link.data_key(keyring)
    path = Path(datadir)
    if not path.is_absolute():
        raise ConfigError(f"datadir must be an absolute path, not {datadir!r}")
    if not path.is_dir():
        raise NotFound(f"datadir {path} does not exist", hint="give the server's datadir (create an empty folder "
                       "for a server whose datadir was lost)")
    if os.path.ismount(path):
        raise ConfigError(f"datadir {path} is a mount point: a physical restore exchanges it with a folder beside "
                          "it, which cannot cross file systems", hint="mount the parent folder instead (datadir one "
                          "level below the mount point), or restore with mariabackup --copy-back by hand")
    meta = chain[-1][1]
    for key in ("innodb_data_home_dir", "innodb_log_group_home_dir", "innodb_undo_directory"):
        value = (meta.get("innodb") or {}).get(key) or ""
        if value not in ("", ".", "./") and os.path.abspath(value) != str(path):
            raise ConfigError(f"the backed-up server kept InnoDB files outside its datadir ({key} = {value}); "
                              "a physical restore places only the datadir", hint="use a logical backup for this "
                              "server, or restore manually with mariabackup --copy-back")
    installed = installed_server_version(service, target)
    if major_minor(installed) != major_minor(meta["server_version"]):
        raise ConfigError(f"set {backup_set.set_id} is a physical backup of MariaDB {meta['server_version']}; "
                          f"the installed server is MariaDB {installed}: a datadir cannot move between major "
                          "versions", hint="restore onto a server of the backup's major version, or use a logical "
                          "backup for a cross-version move")
    tool_ver = tool_version(find_tool(), target)
    check_tool_matches(tool_ver, meta["server_version"])
    find_tool("mbstream")
    leftovers = plan_leftovers(path)
    if leftovers:
        log.warning("work folders of earlier, interrupted physical restores are beside the datadir; this restore "
                    "cleans them up first: %s", "; ".join(f"{x['path']}: {x['action']}" for x in leftovers))
    plain = chain_plaintext_bytes(chain)
    reclaimed = sum(int(x["removed_bytes"]) for x in leftovers)
    space = check_space(path.parent, int(plain * SPACE_FACTOR) + SPACE_RESERVE,
                        f"restoring the physical chain of {backup_set.set_id} ({human_bytes(plain)} of streams)",
                        reclaimable=reclaimed)
    return {"method": METHOD, "set_id": backup_set.set_id, "chain": [s.set_id for s, _parent in chain],
            "datadir": str(path), "server_version": meta["server_version"], "installed_server": installed,
            "tool_version": tool_ver, "binlog_position": meta.get("binlog_position"), "to_lsn": meta["to_lsn"],
            "leftover_work_folders": [x["path"] for x in leftovers], "leftover_cleanup": leftovers, **space}


# --------------------------------------------------------------------------- work folders of killed restores
def _work_lock(work: Path, *, blocking: bool = False) -> Optional[int]:
    """An exclusive ``flock`` on the work folder ``work`` (a running restore holds it until it ends).

    Returns the open descriptor (close it to release), or None when another process holds
    the lock (``blocking`` False). The kernel drops the lock with its holder, also on
    ``kill -9``, so a killed restore's folder is never locked.
    """
    import fcntl

    fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _holds_previous_datadir(work: Path) -> Optional[str]:
    """The stamp of the run when ``work/base`` is the datadir that run replaced, else None.

    A restore writes ``work/WORK_STATE`` (device and inode of the live datadir) just before it
    stops the server: a run killed between the exchange and the renaming of the old datadir to
    ``.lbprev_`` left the OLD datadir in ``base/`` -- recognised by that inode, never deleted.
    """
    try:
        state = json.loads((work / WORK_STATE).read_text())
        found = os.stat(work / "base", follow_symlinks=False)
    except (OSError, ValueError):
        return None
    if (found.st_dev, found.st_ino) == (state.get("datadir_dev"), state.get("datadir_ino")):
        return str(state.get("stamp") or _stamp())
    return None


def plan_leftovers(datadir: Path) -> list[dict[str, Any]]:
    """What :func:`clean_leftovers` would do with each ``<datadir>.lbrestore_*`` folder; change nothing.

    Each entry: ``path``, ``action`` (``remove`` a killed run's partial extraction or prepared
    copy; ``keep base as .lbprev`` when ``base/`` is the datadir a killed run had already
    replaced, the rest removed) and ``removed_bytes``. LockHeld when a folder is locked: another
    physical restore of this datadir is running.
    """
    out = []
    for work in sorted(datadir.parent.glob(f"{datadir.name}.lbrestore_*")):
        if not work.is_dir() or work.is_symlink():
            continue
        fd = _work_lock(work)
        if fd is None:
            raise LockHeld(f"another physical restore of {datadir} is running (its work folder {work} is locked)",
                           hint="wait for it to finish; two restores of one datadir cannot run at once")
        try:
            stamp = _holds_previous_datadir(work)
            total = dir_size(work)
            kept = dir_size(work / "base") if stamp else 0
        finally:
            os.close(fd)
        out.append({"path": str(work), "action": "keep base as .lbprev" if stamp else "remove",
                    "removed_bytes": total - kept})
    return out


def clean_leftovers(datadir: Path) -> list[dict[str, Any]]:
    """Remove the work folders killed physical restores left beside ``datadir``; keep a replaced datadir.

    A folder whose ``base/`` is the datadir a killed run had replaced (:func:`_holds_previous_datadir`)
    has it moved to ``<datadir>.lbprev_<that run's time>`` first (kept, as a finished run would
    have); everything else in it is partial work and is removed. A locked folder (a running
    restore) raises LockHeld and is left alone. Returns ``[{path, action, kept_datadir?}]``.
    """
    done = []
    for work in sorted(datadir.parent.glob(f"{datadir.name}.lbrestore_*")):
        if not work.is_dir() or work.is_symlink():
            continue
        fd = _work_lock(work)
        if fd is None:
            raise LockHeld(f"another physical restore of {datadir} is running (its work folder {work} is locked)",
                           hint="wait for it to finish; two restores of one datadir cannot run at once")
        try:
            entry: dict[str, Any] = {"path": str(work), "action": "removed"}
            stamp = _holds_previous_datadir(work)
            if stamp:
                kept = _free_name(datadir.with_name(f"{datadir.name}.lbprev_{stamp}"))
                os.rename(work / "base", kept)
                entry.update(action="previous datadir kept, rest removed", kept_datadir=str(kept))
            shutil.rmtree(work)
        finally:
            os.close(fd)
        log.warning("mysql: work folder %s of an interrupted physical restore: %s%s", work, entry["action"],
                    f" (the datadir it had replaced is kept at {entry['kept_datadir']})" if stamp else "")
        done.append(entry)
    return done


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")  # noqa: UP017


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}_{n}")
    return candidate


def restore_physical(store: Store, backup_set: BackupSet, keyring: KeyRing, params: my.ConnParams, *, service: Any,
                     datadir: Optional[str] = None, start_timeout_s: float = 120.0,
                     progress: Optional[ProgressFn] = None, **_ignored: Any) -> dict[str, Any]:
    """Restore the physical chain ending at ``backup_set`` as the datadir of ``service``'s server.

    Inputs are proven first (:func:`plan_physical_restore`); then the work folders killed
    restores left beside the datadir are cleaned up (:func:`clean_leftovers`: a datadir one of
    them had already replaced is kept as ``.lbprev_``, the rest removed). The extraction and
    prepare happen in ``<datadir>.lbrestore_<time>`` beside the datadir (locked by this run)
    while the server runs on. Then stop, atomic exchange (:func:`exchange_paths`), old datadir
    kept as ``<datadir>.lbprev_<time>``, start, :func:`health_gate` as ``params``. A failing
    gate exchanges the kept datadir back, starts the server and raises RestoreFailed naming
    where the failed restore was kept (``<datadir>.lbfailed_<time>``). Before the stop nothing
    live has changed. The work folder is removed when the run ends, whatever the outcome;
    only a ``kill -9`` leaves it, for the next run to clean up.
    """
    started = time.monotonic()
    if service is None:
        raise ConfigError("a physical restore stops and starts the server: it needs the service",
                          hint="give service_manager/service_name/service_settings")
    datadir = datadir or (service.data_dir() if hasattr(service, "data_dir") else None)
    if not datadir:
        raise ConfigError("a physical restore needs the server's datadir", hint="give datadir")
    target = service if _runs_commands(service) else None
    plan = plan_physical_restore(store, backup_set, keyring, datadir=datadir, target=target, service=service)
    path = Path(datadir)
    volume = compose_volumes.volume_of_service_folder(service, path)  # engine reachable: before anything changes
    result: dict[str, Any] = {"plan": plan, "method": METHOD, "set_id": backup_set.set_id, "chain": plan["chain"],
                              "cleaned_leftovers": clean_leftovers(path) if plan["leftover_work_folders"] else []}
    stamp = _stamp()
    work = _free_name(path.with_name(f"{path.name}.lbrestore_{stamp}"))
    work.mkdir(mode=0o700)
    lock = _work_lock(work, blocking=True)
    try:
        chain = resolve_chain(store, backup_set)
        t0 = time.monotonic()
        prepared = extract_and_prepare(chain, keyring, work, target=target, progress=progress)
        result["prepare_s"] = round(time.monotonic() - t0, 3)
        _strip_tool_files(prepared, work / "backup-files")
        live = path.stat()
        _own_like(prepared, live)
        _write_work_state(work, path, live, stamp)
        set_step("stop the server")
        t1 = time.monotonic()
        service.stop()
        kept = _free_name(path.with_name(f"{path.name}.lbprev_{stamp}"))
        set_step("exchange the datadir")
        try:
            exchange_paths(prepared, path)      # path: restored; prepared: the old datadir
        except RestoreFailed:
            service.start()                     # nothing was exchanged: the old datadir runs again
            raise
        os.rename(prepared, kept)
        result["kept_datadir"] = str(kept)
        log.info("mysql: datadir %s replaced by the restored chain %s; the old one is kept at %s", path,
                 plan["chain"], kept)
        set_step("start the server")
        try:
            service.start()
            result["health"] = health_gate(params, service, start_timeout_s)
        except LifeboatError as err:
            failed = _roll_back(service, path, kept, stamp, params, start_timeout_s)
            raise RestoreFailed(f"the restored server failed its health gate ({err.message}); the previous datadir "
                                f"was put back and started, the restored one is kept at {failed}",
                                hint="see the server's log") from None
        result["swap_s"] = round(time.monotonic() - t1, 3)
        if volume is not None:
            kept_in = compose_volumes.keep_replaced_in_volume(getattr(service, "base_url", None), volume, kept,
                                                              "mysql datadir")
            result.update(kept_datadir=kept_in.pop("kept_path", str(kept)), **kept_in)
        result["gtid_state"] = continue_gtid(params, plan["binlog_position"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if lock is not None:
            os.close(lock)
        if work.exists():
            log.warning("mysql: could not remove the work folder %s; the next physical restore cleans it up", work)
    result["binlog_position"] = plan["binlog_position"]
    result["duration_s"] = round(time.monotonic() - started, 3)
    return result


def _write_work_state(work: Path, datadir: Path, live: os.stat_result, stamp: str) -> None:
    """Record, durably, which folder is the live datadir before the exchange (see :func:`_holds_previous_datadir`)."""
    state = {"datadir": str(datadir), "datadir_dev": live.st_dev, "datadir_ino": live.st_ino, "stamp": stamp,
             "pid": os.getpid()}
    write_file_atomic(work / WORK_STATE, json.dumps(state).encode())


def continue_gtid(params: my.ConnParams, position: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """Give the restored server the backup's GTID state, so new transactions continue its numbering.

    mariabackup does not copy binary logs: the restored server starts a fresh binlog with an
    empty ``gtid_binlog_state``, and would hand out GTIDs the old history already used. When
    that fresh binlog holds no transaction yet: ``RESET MASTER`` + ``SET GLOBAL
    gtid_binlog_state`` = the backup's GTID. Needs BINLOG ADMIN (or SUPER); a failure is
    returned (and logged), never raised: the restore itself succeeded.
    """
    gtid = (position or {}).get("gtid")
    if not gtid:
        return {"set": False, "reason": "the backup recorded no GTID (binary log off)"}
    try:
        conn = my.connect(params)
        try:
            current = text_of(my.query_value(conn, "SELECT @@GLOBAL.gtid_binlog_pos") or "")
            logs = my.query_all(conn, "SHOW BINARY LOGS")
            if current or len(logs) > 1:
                return {"set": False, "reason": f"the restored server already wrote transactions ({current})"}
            with conn.cursor() as cur:
                cur.execute("RESET MASTER")
                cur.execute("SET GLOBAL gtid_binlog_state = %s", (gtid,))
                cur.execute("SET GLOBAL gtid_slave_pos = %s", (gtid,))
            return {"set": True, "gtid_binlog_state": gtid}
        finally:
            conn.close()
    except LifeboatError as err:
        log.warning("restored server: could not set gtid_binlog_state to %s: %s", gtid, err)
        return {"set": False, "reason": str(err)}
    except Exception as err:  # noqa: BLE001 - pymysql errors: reported, the restore stands
        log.warning("restored server: could not set gtid_binlog_state to %s: %s", gtid, err)
        return {"set": False, "reason": f"{type(err).__name__}: {err}"}


def _runs_commands(service: Any) -> bool:
    """Whether mbstream and the prepare run through the service's run_command.

    Not for a container (the ``docker`` manager): its datadir is a volume whose folder this host
    writes (extraction, prepare and the exchange happen there, beside the volume's ``_data``),
    with this host's mariabackup (checked against the backup's version like any other).
    """
    return bool(getattr(service, "manager", "")) and not in_container(service)


def _roll_back(service: Any, path: Path, kept: Path, stamp: str, params: my.ConnParams, timeout_s: float) -> Path:
    with contextlib.suppress(LifeboatError):
        service.stop()
    failed = _free_name(path.with_name(f"{path.name}.lbfailed_{stamp}"))
    exchange_paths(kept, path)                 # path: the old datadir again; kept: the failed restore
    os.rename(kept, failed)
    service.start()
    with contextlib.suppress(LifeboatError):
        health_gate(params, service, timeout_s)
    return failed


# --------------------------------------------------------------------------- full verification
def _scratch_class() -> type:
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql.scratch import ScratchMariaDB

    class PreparedScratch(ScratchMariaDB):
        """A scratch mariadbd on an already prepared datadir, grant tables off (its accounts are the backup's)."""

        page_size: Optional[str] = None

        def config_text(self) -> str:
            text = super().config_text() + "skip-grant-tables\n"
            if self.page_size:
                text += f"innodb_page_size = {self.page_size}\n"
            return text

    return PreparedScratch


def table_figures(conn: Any) -> dict[str, dict[str, Any]]:
    """``db.table -> {"rows", "checksum", "check"}`` of every base table outside the system schemas."""
    rows = my.query_all(conn, "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = "
                              "'BASE TABLE' AND TABLE_SCHEMA NOT IN ('information_schema','performance_schema','sys')"
                              " ORDER BY 1, 2")
    out: dict[str, dict[str, Any]] = {}
    for db, table in rows:
        db, table = text_of(db), text_of(table)
        name = my.qualified(db, table)
        with conn.cursor() as cur:
            cur.execute(f"CHECK TABLE {name}")
            results = cur.fetchall()
            status = "; ".join(text_of(r[3]) for r in results if text_of(r[2]).lower() in ("status", "error"))
            cur.execute(f"SELECT COUNT(*) FROM {name}")
            count = int(cur.fetchone()[0])
            cur.execute(f"CHECKSUM TABLE {name}")
            checksum = cur.fetchone()[1]
        out[f"{db}.{table}"] = {"rows": count, "checksum": None if checksum is None else int(checksum),
                                "check": status or "OK"}
    return out


def verify_physical_full(store: Store, backup_set: BackupSet, keyring: KeyRing, options: Mapping[str, Any],
                         measured: dict[str, float]) -> list[dict[str, Any]]:
    """Prepare the chain in a scratch folder, start a scratch mariadbd on it, CHECK TABLE every table.

    One check for the chain, one for the prepare + start, one per table (``CHECK TABLE``
    says OK), each table's rows and ``CHECKSUM TABLE`` recorded in the detail (the figures
    of this verification). ``measured["mysql"]`` = seconds of extract + prepare + start.
    """
    from ansible_collections.lifeboat.dr.plugins.module_utils.components.base import check

    try:
        chain = resolve_chain(store, backup_set)
    except (NotFound, IncompleteBackup, VerificationFailed, ConfigError) as err:
        return [check("mysql physical chain complete", False, err.message, "mysql")]
    checks = [check("mysql physical chain complete", True, " -> ".join(s.set_id for s, _parent in chain), "mysql")]
    from ansible_collections.lifeboat.dr.plugins.module_utils.util.scratch import launcher_for

    scratch = _scratch_class()(base_dir=options.get("work_dir"), launcher=launcher_for(options, "mysql"))
    scratch.page_size = (chain[-1][1].get("innodb") or {}).get("innodb_page_size")
    try:
        started = time.monotonic()
        work = scratch.root / "work"
        work.mkdir(mode=0o700)
        try:
            prepared = extract_and_prepare(chain, keyring, work)
        except RestoreFailed as err:
            return checks + [check("mysql physical chain prepared", False, err.message,
                                   f"mysql/{chain[-1][1]['artifact']}")]
        _strip_tool_files(prepared, work / "backup-files")
        os.rename(prepared, scratch.datadir)
        scratch.tmpdir.mkdir(mode=0o700, exist_ok=True)
        scratch.start()
        measured["mysql"] = round(time.monotonic() - started, 3)
        checks.append(check("mysql physical chain prepared and started in a scratch MariaDB", True,
                            f"{measured['mysql']:.1f} s (scratch server {scratch.launcher.where})",
                            f"mysql/{chain[-1][1]['artifact']}"))
        conn = my.connect(scratch.params.replace(user="root"))
        try:
            figures = table_figures(conn)
        finally:
            conn.close()
        for key, fig in figures.items():
            checks.append(check(f"mysql {key} CHECK TABLE", fig["check"] == "OK",
                                f"{fig['check']}; {fig['rows']} rows, CHECKSUM TABLE {fig['checksum']}",
                                f"mysql/{chain[-1][1]['artifact']}"))
    finally:
        scratch.cleanup()
    return checks


def physical_summary(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Module result fields of a physical backup."""
    return dict(meta)
