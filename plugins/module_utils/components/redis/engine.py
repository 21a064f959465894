# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis engine: back up, verify and restore one Redis server.

Backup (:func:`backup_redis_into`) writes into an open ``writer.SetWriter``:

* ``redis/dump.rdb.zst.enc`` -- the RDB. ``mode="network"`` takes it over the wire
  like ``redis-cli --rdb`` (SYNC, see :mod:`redis_conn`); ``mode="file"`` runs
  ``BGSAVE`` and copies ``<dir>/<dbfilename>`` (needs file access on the Redis host).
  Either way the stream is checked by :func:`rdb.check_rdb` (structure, payload
  integrity, CRC64) on its way into the artifact -- and, where it is installed, by
  ``redis-check-rdb`` reading the same bytes through a pipe (:func:`reference_checker`);
  a damaged RDB fails the backup and the metadata records which checks ran.
* ``redis/appendonly.aof.tar.zst.enc`` (``include_aof``; file access needed) -- the
  Redis 7 multi-part AOF after a ``BGREWRITEAOF``: base and incr files as listed by
  the manifest, the manifest last, in one tar.
* ``redis/redis_backup_metadata.json`` and the component metadata: server version,
  role, INFO keyspace counts, last save time, and the per-db key counts of the RDB.

Restore (:func:`restore_redis_from`) stops the server through a ``service.Service``,
moves its data files aside (kept, never deleted), writes the RDB both as
``<dbfilename>`` *and* as the base of a fresh multi-part AOF (so a server with
``appendonly yes`` loads it instead of starting empty -- Redis 7 ignores the RDB
when AOF is on), starts the server, and compares the per-db key counts with the
RDB's. On a mismatch it puts the previous files back, restarts, and raises
:class:`errors.RestoreFailed`. :func:`verify_redis_set` in ``full`` mode runs the
same restore into a :class:`ScratchRedis` (temporary redis-server on a free port).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.components import base as components
from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis import rdb
from ansible_collections.lifeboat.dr.plugins.module_utils.components.redis.conn import (
    RedisCommandError,
    RedisConnection,
    RedisParams,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util import compose_volumes, rundirs
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    BackupFailed,
    ConfigError,
    ConnectionFailure,
    DependencyMissing,
    LifeboatError,
    NotFound,
    PermissionDenied,
    RestoreFailed,
    VerificationFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import ProgressFn, get_logger
from ansible_collections.lifeboat.dr.plugins.module_utils.util.scratch import (  # noqa: F401 - free_port re-exported
    HOST,
    Launcher,
    ScratchServer,
    find_program,
    free_port,
    launcher_for,
)

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.writer import SetWriter

LOG = get_logger("redis")

COMPONENT = "redis"
RDB_ARTIFACT = "dump.rdb.zst.enc"
AOF_ARTIFACT = "appendonly.aof.tar.zst.enc"
METADATA_JSON = "redis_backup_metadata.json"
MODES = ("network", "file")
DEFAULT_DBFILENAME = "dump.rdb"
DEFAULT_APPENDDIRNAME = "appendonlydir"
DEFAULT_APPENDFILENAME = "appendonly.aof"
KEEP_TAG = "lbprev"
STAGING_TAG = "lbnew"  # <data_dir>.lbnew-<pid>-<start ticks>-<random>: a restore's decrypted RDB
VERIFY_DIR_PREFIX = "lifeboat-redis-verify-"  # + <pid>-<start ticks>-<random>: see rundirs
EXPIRY_SKEW_MS = 2000  # clock slack when deciding which keys with a TTL a load may drop
_UTC = timezone.utc  # noqa: UP017 - datetime.UTC needs Python 3.11 on targets


def _now_utc() -> str:
    return datetime.now(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp() -> str:
    return datetime.now(_UTC).strftime("%Y%m%dT%H%M%SZ")


# =============================================================================================
# facts
# =============================================================================================


def server_facts(conn: RedisConnection) -> dict[str, Any]:
    """Version, role, persistence state and INFO keyspace counts of the connected server."""
    info = conn.info()
    keyspace = {str(db): v for db, v in sorted(conn.keyspace().items())}
    last_save = int(info.get("rdb_last_save_time", "0") or 0)
    return {
        "redis_version": info.get("redis_version"),
        "redis_mode": info.get("redis_mode"),
        "role": info.get("role"),
        "os": info.get("os"),
        "tcp_port": int(info.get("tcp_port", "0") or 0),
        "master_repl_offset": int(info.get("master_repl_offset", "0") or 0),
        "aof_enabled": info.get("aof_enabled") == "1",
        "rdb_last_save_time": last_save,
        "rdb_last_save_time_utc": datetime.fromtimestamp(last_save, _UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if last_save else None,
        "rdb_changes_since_last_save": int(info.get("rdb_changes_since_last_save", "0") or 0),
        "keyspace": keyspace,
        "total_keys": sum(v.get("keys", 0) for v in keyspace.values()),
    }


def _persistence_layout(conn: Optional[RedisConnection], data_dir: Optional[str]) -> dict[str, str]:
    """``dir``, ``dbfilename``, ``appenddirname``, ``appendfilename``: from CONFIG GET when
    allowed, else the defaults; ``data_dir`` (when given) wins over CONFIG GET dir."""
    layout = {"dir": data_dir or "", "dbfilename": DEFAULT_DBFILENAME, "appenddirname": DEFAULT_APPENDDIRNAME,
              "appendfilename": DEFAULT_APPENDFILENAME}
    if conn is not None:
        for name in ("dir", "dbfilename", "appenddirname", "appendfilename"):
            if name == "dir" and data_dir:
                continue
            try:
                value = conn.config_get(name)
            except (PermissionDenied, RedisCommandError) as err:
                LOG.info("redis: CONFIG GET %s not available (%s); using %r", name, err, layout[name])
                continue
            if value:
                layout[name] = value
    return layout


# =============================================================================================
# backup
# =============================================================================================


def reference_checker(enabled: bool = True) -> Optional[str]:
    """Path of ``redis-check-rdb`` when ``enabled`` and installed on this host, else None
    (then only Lifeboat's own check runs, and the result records just that one)."""
    if not enabled:
        return None
    try:
        return find_redis_binary("redis-check-rdb")
    except DependencyMissing:
        LOG.info("redis: redis-check-rdb is not installed here; only the built-in RDB check runs")
        return None


def damage_message(report: rdb.RdbReport) -> str:
    """Where and what: ``damaged at byte N: ...`` (or without the byte when the check names none)."""
    where = f" at byte {report.error_offset}" if report.error_offset is not None else ""
    return f"damaged{where}: {report.error}"


def _stream_rdb_into(source: BinaryIO, set_writer: SetWriter, total_bytes: Optional[int],
                     reference_check: bool = True) -> tuple[rdb.RdbReport, dict]:
    """Copy an RDB stream into the RDB artifact while checking it; abort the artifact if it is bad."""
    writer = set_writer.artifact(COMPONENT, RDB_ARTIFACT, total_bytes=total_bytes)
    try:
        report = rdb.check_rdb(source, on_chunk=writer.write, reference=reference_checker(reference_check))
        if not report.ok:
            raise BackupFailed(f"the RDB received is {damage_message(report)} (checks: {', '.join(report.checks)})",
                               hint="run redis-check-rdb on the server's dump; retry the backup")
        if report.trailing_bytes:
            raise BackupFailed(f"the RDB stream has {report.trailing_bytes} unexpected bytes after its checksum")
        record = writer.close()
    except BaseException:
        writer.abort()
        raise
    return report, record


def _backup_network(params: RedisParams, set_writer: SetWriter,
                    reference_check: bool) -> tuple[rdb.RdbReport, dict, dict]:
    with RedisConnection.connect(params) as conn:
        payload = conn.open_rdb_stream()
        LOG.info("redis: SYNC from %s: %s payload after %.1f s", params.endpoint,
                 "diskless" if payload.diskless else f"{payload.length}-byte", payload.waited_s)
        report, record = _stream_rdb_into(payload, set_writer, payload.length, reference_check)
        how = {"source": "network", "framing": "diskless" if payload.diskless else "length",
               "sync_wait_s": round(payload.waited_s, 3)}
    return report, record, how


def _wait_for(conn: RedisConnection, done: Any, what: str, timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        info = conn.info("persistence")
        if done(info):
            return info
        if time.monotonic() > deadline:
            raise BackupFailed(f"Redis at {conn.params.endpoint}: {what} did not finish within {timeout_s:.0f} s")
        time.sleep(0.1)


def bgsave_and_wait(conn: RedisConnection, timeout_s: float = 3600.0) -> dict[str, str]:
    """Run ``BGSAVE SCHEDULE`` and wait until a save that started after this call has finished OK."""
    before = conn.info("persistence")
    saves_before = int(before.get("rdb_saves", "-1"))
    last_before = int(before.get("rdb_last_save_time", "0"))
    started = time.time()
    deadline = time.monotonic() + timeout_s
    while True:  # a save already running (e.g. a replica's SYNC child) would not include our start
        try:
            conn.command("BGSAVE", "SCHEDULE")
            break
        except RedisCommandError as err:
            if "already in progress" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)

    def finished(info: dict[str, str]) -> bool:
        if info.get("rdb_bgsave_in_progress") != "0":
            return False
        if saves_before >= 0 and "rdb_saves" in info:
            return int(info["rdb_saves"]) > saves_before
        return int(info.get("rdb_last_save_time", "0")) > last_before or \
            int(info.get("rdb_last_save_time", "0")) >= int(started)

    info = _wait_for(conn, finished, "BGSAVE", timeout_s)
    if info.get("rdb_last_bgsave_status") != "ok":
        raise BackupFailed(f"BGSAVE on Redis at {conn.params.endpoint} failed (rdb_last_bgsave_status="
                           f"{info.get('rdb_last_bgsave_status')})", hint="see the Redis log (disk full? permissions?)")
    return info


def _backup_file(params: RedisParams, set_writer: SetWriter, layout: dict[str, str],
                 reference_check: bool) -> tuple[rdb.RdbReport, dict, dict]:
    with RedisConnection.connect(params) as conn:
        bgsave_and_wait(conn)
    path = Path(layout["dir"]) / layout["dbfilename"]
    try:
        fh = open(path, "rb")
    except OSError as err:
        raise PermissionDenied(f"cannot read the RDB file {path}: {err}",
                               hint="run the backup on the Redis host as a user that can read its dir, "
                                    "or use mode=network") from err
    with fh:
        report, record = _stream_rdb_into(fh, set_writer, os.fstat(fh.fileno()).st_size, reference_check)
    return report, record, {"source": "file", "path": str(path)}


def backup_redis_into(set_writer: SetWriter, conn: RedisParams, *, mode: str = "network", include_aof: bool = False,
                      data_dir: Optional[str] = None, progress: Optional[ProgressFn] = None,
                      reference_check: bool = True) -> dict[str, Any]:
    """Back up the Redis server ``conn`` into ``set_writer`` (component ``redis``).

    ``mode``: ``network`` (SYNC, no file access needed) or ``file`` (BGSAVE + copy of the
    RDB file; needs ``data_dir`` or CONFIG GET dir). ``include_aof``: also store the
    multi-part AOF after BGREWRITEAOF (file access needed; ConfigError if AOF is off).
    ``reference_check``: also run ``redis-check-rdb`` over the stream where it is installed
    (``rdb.checks`` in the metadata names the checks that ran).
    Returns the metadata also stored as ``redis/redis_backup_metadata.json``.
    Raises AuthenticationFailed/ConnectionFailure/PermissionDenied/BackupFailed; the
    caller's SetWriter context discards the set on any error.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown Redis backup mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
    started = time.monotonic()
    with RedisConnection.connect(conn) as c:
        facts = server_facts(c)
        layout = _persistence_layout(c, data_dir) if (mode == "file" or include_aof) else {}
    if (mode == "file" or include_aof) and not layout.get("dir"):
        raise ConfigError("the Redis data dir is unknown", hint="set data_dir (CONFIG GET dir is not allowed)")
    if include_aof and not facts["aof_enabled"]:
        raise ConfigError(f"include_aof is set but Redis at {conn.endpoint} runs with appendonly no",
                          hint="drop include_aof, or enable appendonly on the server")
    LOG.info("redis: backing up %s (Redis %s, %s, %d keys) mode=%s", conn.describe(), facts["redis_version"],
             facts["role"], facts["total_keys"], mode)
    if mode == "network":
        report, record, how = _backup_network(conn, set_writer, reference_check)
    else:
        report, record, how = _backup_file(conn, set_writer, layout, reference_check)
    meta: dict[str, Any] = {
        "format": 1, "taken_at": _now_utc(), "mode": mode, "server": conn.describe(), **facts,
        "rdb": {**how, "artifact": RDB_ARTIFACT, "version": report.version, "size": report.size,
                "crc64": None if report.crc_stored is None else f"{report.crc_stored:016x}",
                "keys_per_db": {str(db): n for db, n in report.keys_per_db.items()},
                "expires_per_db": {str(db): s.expires for db, s in sorted(report.dbs.items()) if s.keys},
                "total_keys": report.total_keys, "functions": report.functions,
                "aux": report.to_dict()["aux"], "checks": list(report.checks),
                "reference_check": report.reference},
        "layout": {k: v for k, v in layout.items() if k != "dir"} or None,
    }
    if include_aof:
        meta["aof"] = backup_aof_into(set_writer, conn, Path(layout["dir"]) / layout["appenddirname"],
                                      layout["appendfilename"])
    meta["duration_s"] = round(time.monotonic() - started, 3)
    set_writer.write_json(COMPONENT, METADATA_JSON, meta)
    set_writer.set_component_metadata(COMPONENT, {
        "redis_version": facts["redis_version"], "role": facts["role"], "mode": mode,
        "keyspace": facts["keyspace"], "rdb_keys_per_db": meta["rdb"]["keys_per_db"],
        "rdb_last_save_time": facts["rdb_last_save_time"], "rdb_version": report.version,
        "rdb_checks": list(report.checks), "artifacts": [RDB_ARTIFACT] + ([AOF_ARTIFACT] if include_aof else []),
    })
    set_writer.add_source(COMPONENT, conn.host, facts["redis_version"], port=conn.port, role=facts["role"])
    LOG.info("redis: RDB v%s, %d keys in %d dbs, %d bytes stored as %d; checks passed: %s", report.version,
             report.total_keys, len(report.keys_per_db), report.size, record.get("stored_size", 0),
             ", ".join(report.checks))
    return meta


# ---------------------------------------------------------------------------------------------
# AOF
# ---------------------------------------------------------------------------------------------


@dataclass
class AofEntry:
    """One line of a Redis 7 AOF manifest: file name, sequence number, type (b, i or h)."""

    name: str
    seq: int
    type: str


def parse_aof_manifest(text: str) -> list[AofEntry]:
    """Parse ``file <name> seq <n> type <b|h|i>`` lines (any key order; quoted names allowed)."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        words = shlex.split(line)
        fields = dict(zip(words[0::2], words[1::2]))  # noqa: B905 - odd tail ignored
        if not {"file", "seq", "type"} <= set(fields) or fields["type"] not in ("b", "i", "h"):
            raise BackupFailed(f"AOF manifest line {number} is not understood: {line!r}")
        name = fields["file"]
        if "/" in name or name in (".", ".."):
            raise BackupFailed(f"AOF manifest line {number} names a file outside its folder: {name!r}")
        entries.append(AofEntry(name, int(fields["seq"]), fields["type"]))
    return entries


def complete_commands_length(fh: BinaryIO, size: int) -> int:
    """Bytes at the start of an AOF (RESP commands, ``#`` annotations) that form whole
    commands outside any unfinished MULTI block; a torn last command is left out."""
    reader = io.BufferedReader(_Limited(fh, size), buffer_size=1 << 16)
    pos = good = 0
    in_multi = False
    while True:
        line = reader.readline()
        if not line:
            return good
        if not line.endswith(b"\r\n") and not line.endswith(b"\n"):
            return good
        if line.startswith(b"#"):
            pos += len(line)
            if not in_multi:
                good = pos
            continue
        if not line.startswith(b"*"):
            return good
        pos += len(line)
        argc = int(line[1:].strip())
        name = b""
        for i in range(argc):
            head = reader.readline()
            if not head.endswith(b"\r\n") or not head.startswith(b"$"):
                return good
            n = int(head[1:-2])
            data = reader.read(n + 2)
            if len(data) != n + 2:
                return good
            if i == 0:
                name = data[:-2].upper()
            pos += len(head) + n + 2
        if name == b"MULTI":
            in_multi = True
        elif name in (b"EXEC", b"DISCARD"):
            in_multi = False
        if not in_multi:
            good = pos


class _Limited(io.RawIOBase):
    """The first ``size`` bytes of ``fh`` from its current position (read-only raw stream)."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh = fh
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.left <= 0:
            return 0
        data = self.fh.read(min(len(b), self.left))
        b[:len(data)] = data
        self.left -= len(data)
        return len(data)


def rewrite_aof_and_wait(conn: RedisConnection, timeout_s: float = 3600.0) -> dict[str, str]:
    """``BGREWRITEAOF`` (or join one in progress) and wait until it has finished OK."""
    before = conn.info("persistence")
    rewrites_before = int(before.get("aof_rewrites", "-1"))
    try:
        conn.command("BGREWRITEAOF")
    except RedisCommandError as err:
        if "already in progress" not in str(err):
            raise
        rewrites_before = -1

    def finished(info: dict[str, str]) -> bool:
        if info.get("aof_rewrite_in_progress") != "0" or info.get("aof_rewrite_scheduled") != "0":
            return False
        return rewrites_before < 0 or int(info.get("aof_rewrites", "0")) > rewrites_before

    info = _wait_for(conn, finished, "BGREWRITEAOF", timeout_s)
    if info.get("aof_last_bgrewrite_status") != "ok":
        raise BackupFailed(f"BGREWRITEAOF on Redis at {conn.params.endpoint} failed (aof_last_bgrewrite_status="
                           f"{info.get('aof_last_bgrewrite_status')})", hint="see the Redis log")
    return info


def _open_aof_snapshot(aof_dir: Path, manifest_name: str, attempts: int = 5) -> tuple[bytes, list]:
    """Read the manifest, open every base/incr file it lists, re-read it; retry until both
    reads agree (a rewrite finishing in between changes it). Returns (manifest, [(entry, fh, size)])."""
    manifest_path = aof_dir / manifest_name
    for _i in range(attempts):
        try:
            first = manifest_path.read_bytes()
        except OSError as err:
            raise BackupFailed(f"cannot read the AOF manifest {manifest_path}: {err}",
                               hint="is appendonly on, and is data_dir the server's dir?") from err
        entries = [e for e in parse_aof_manifest(first.decode("utf-8")) if e.type in ("b", "i")]
        opened = []
        try:
            for entry in entries:
                fh = open(aof_dir / entry.name, "rb")
                opened.append((entry, fh, os.fstat(fh.fileno()).st_size))
        except FileNotFoundError:
            for _entry, fh, _size in opened:
                fh.close()
            continue
        if manifest_path.read_bytes() == first:
            return first, opened
        for _entry, fh, _size in opened:
            fh.close()
        time.sleep(0.2)
    raise BackupFailed(f"the AOF in {aof_dir} kept changing while it was being copied",
                       hint="retry when no AOF rewrite is running")


def backup_aof_into(set_writer: SetWriter, params: RedisParams, aof_dir: Path, appendfilename: str) -> dict[str, Any]:
    """BGREWRITEAOF, then store the base + incr files and the manifest (last) as one tar artifact."""
    with RedisConnection.connect(params) as conn:
        rewrite_aof_and_wait(conn)
    manifest, opened = _open_aof_snapshot(aof_dir, appendfilename + ".manifest")
    files = []
    try:
        writer = set_writer.artifact(COMPONENT, AOF_ARTIFACT)
        try:
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for entry, fh, size in opened:
                    if entry.type == "i":
                        size = complete_commands_length(fh, size)
                        fh.seek(0)
                    info = tarfile.TarInfo(f"{aof_dir.name}/{entry.name}")
                    info.size, info.mode, info.mtime = size, 0o600, int(time.time())
                    tar.addfile(info, _Limited(fh, size))
                    files.append({"name": entry.name, "type": entry.type, "seq": entry.seq, "size": size})
                info = tarfile.TarInfo(f"{aof_dir.name}/{appendfilename}.manifest")
                info.size, info.mode, info.mtime = len(manifest), 0o600, int(time.time())
                tar.addfile(info, io.BytesIO(manifest))
            record = writer.close()
        except BaseException:
            writer.abort()
            raise
    finally:
        for _entry, fh, _size in opened:
            fh.close()
    base = next((f["name"] for f in files if f["type"] == "b"), "")
    return {"artifact": AOF_ARTIFACT, "dir": aof_dir.name, "manifest": appendfilename + ".manifest",
            "files": files, "base_format": "rdb" if base.endswith(".rdb") else "aof",
            "stored_size": record.get("stored_size")}


# =============================================================================================
# scratch server
# =============================================================================================


def find_redis_binary(name: str = "redis-server") -> str:
    """Path of a Redis program (PATH, then the usual sbin/bin folders); DependencyMissing if absent."""
    return find_program(name, install_hint="install redis-server (Debian: apt-get install redis-server redis-tools)")


class ScratchRedis(ScratchServer):
    """A throw-away redis-server on 127.0.0.1 (free port, own dir, random password, AOF on).

    Same interface as ``service.Service`` (``start``/``stop``/``is_running``) so the
    restore code treats it like the real server. ``cleanup()`` stops it and removes
    its folder. The config file (holding the password) is 0600 and outside ``data_dir``.
    ``extra_config``: more redis.conf lines (e.g. TLS settings). ``with`` does not start
    it (the restore under test does); it is cleaned up on exit.
    """

    start_on_enter = False

    def __init__(self, base_dir: Optional[str] = None, appendonly: bool = True, port: Optional[int] = None,
                 extra_config: tuple = (), launcher: Launcher = HOST) -> None:
        self.name = "redis-scratch"
        self.launcher = launcher
        self.root = Path(tempfile.mkdtemp(prefix="lifeboat-redis-", dir=base_dir))
        self.data_dir = self.root / "data"
        self.data_dir.mkdir(mode=0o700)
        self.port = port or free_port()
        self.password = secrets.token_hex(16)
        self.appendonly = appendonly
        self.proc: Optional[subprocess.Popen] = None
        self.conf = self.root / "redis.conf"
        self.log_path = self.root / "redis.log"
        fd = os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join([
                "bind 127.0.0.1", f"port {self.port}", "protected-mode yes", "daemonize no",
                f"dir {self.data_dir}", f"logfile {self.log_path}", 'save ""',
                f"appendonly {'yes' if appendonly else 'no'}", f"requirepass {self.password}",
                "repl-diskless-sync-delay 0", "databases 16", *extra_config,
            ]) + "\n")

    @property
    def params(self) -> RedisParams:
        return RedisParams(port=self.port, password=self.password, timeout=5.0)

    def start(self) -> None:
        if self.is_running():
            return
        server = self.launcher.program(["redis-server"], find_redis_binary)
        self.proc = self.launcher.popen([server, str(self.conf)], mounts=[self.root])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RestoreFailed(f"scratch redis-server ({self.launcher.where}) exited with code "
                                    f"{self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise ConnectionFailure(f"scratch redis-server did not open port {self.port} within 30 s")


# =============================================================================================
# restore
# =============================================================================================


def _data_files(data_dir: Path, layout: dict[str, str]) -> list[Path]:
    """The Redis data files present in ``data_dir``: the RDB, the AOF folder, a legacy AOF file."""
    names = [layout["dbfilename"], layout["appenddirname"], layout["appendfilename"]]
    return [data_dir / n for n in names if (data_dir / n).exists() or (data_dir / n).is_symlink()]


def _side_root(data_dir: Path, tag: str) -> tuple[Path, str]:
    """(folder, name prefix) of the side folders ``tag`` of ``data_dir``: siblings
    ``<data_dir>.<tag>-…`` on the same filesystem, else ``<data_dir>/.<tag>-…``."""
    parent = data_dir.parent
    same_fs = os.stat(parent).st_dev == os.stat(data_dir).st_dev and os.access(parent, os.W_OK)
    return (parent, f"{data_dir.name}.{tag}-") if same_fs else (data_dir, f".{tag}-")


def _staging_dir(data_dir: Path) -> Path:
    """A new 0700 staging folder for the decrypted RDB, named after this process
    (``<data_dir>.lbnew-<pid>-<start>-<random>``, see rundirs). The staging folders
    of restores killed mid-way (owner gone) are removed first: they hold a
    plaintext RDB and are never a restore's result."""
    root, prefix = _side_root(data_dir, STAGING_TAG)
    rundirs.remove_dead_owned_tmpdirs(prefix, root=str(root))
    return Path(rundirs.make_owned_tmpdir(prefix, root=str(root)))


def _side_dir(data_dir: Path, tag: str) -> Path:
    """A new folder for files moved out of ``data_dir`` by rename: a sibling
    ``<data_dir>.<tag>-<UTC>`` on the same filesystem, else ``<data_dir>/.<tag>-<UTC>``."""
    root, prefix = _side_root(data_dir, tag)
    base = root / f"{prefix}{_stamp()}"
    path, n = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{n}")
        n += 1
    path.mkdir(mode=0o700)
    return path


def _owner_of(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid


def _give_to(path: Path, owner: tuple[int, int], mode: int) -> None:
    os.chmod(path, mode)
    if os.geteuid() == 0 and owner != (0, 0):
        os.chown(path, *owner)


@dataclass
class _Staged:
    path: Path
    report: rdb.RdbReport
    folder: Path


def _stage_rdb(backup_set: BackupSet, keyring: KeyRing, data_dir: Path, progress: Optional[ProgressFn],
               reference_check: bool = True) -> _Staged:
    """Decrypt the set's RDB into a staging folder beside ``data_dir``, checking it on the way
    (built-in check, and redis-check-rdb over the same stream where installed)."""
    folder = _staging_dir(data_dir)
    dest = folder / "dump.rdb"
    try:
        with backup_set.open_artifact(COMPONENT, RDB_ARTIFACT, keyring, progress=progress) as reader, \
                open(dest, "wb") as out:
            report = rdb.check_rdb(reader, on_chunk=out.write, reference=reference_checker(reference_check))
            out.flush()
            os.fsync(out.fileno())
        if not report.ok:
            raise RestoreFailed(f"the RDB in set {backup_set.set_id} is {damage_message(report)} "
                                f"(checks: {', '.join(report.checks)})",
                                hint="nothing was changed; restore another set")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return _Staged(dest, report, folder)


def _place_rdb(staged: _Staged, data_dir: Path, layout: dict[str, str], owner: tuple[int, int],
               file_mode: int) -> None:
    """Put the staged RDB in ``data_dir`` as the RDB file and as the base of a new AOF."""
    rdb_path = data_dir / layout["dbfilename"]
    aof_dir = data_dir / layout["appenddirname"]
    aof_dir.mkdir(mode=0o700)
    base_name = f"{layout['appendfilename']}.1.base.rdb"
    base = aof_dir / base_name
    try:
        os.link(staged.path, base)
    except OSError:
        shutil.copyfile(staged.path, base)
    manifest = aof_dir / f"{layout['appendfilename']}.manifest"
    with open(manifest, "w", encoding="utf-8") as fh:
        fh.write(f"file {base_name} seq 1 type b\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(staged.path, rdb_path)
    for path, mode in ((rdb_path, file_mode), (base, file_mode), (manifest, file_mode), (aof_dir, 0o700)):
        _give_to(path, owner, mode)
    for folder in (aof_dir, data_dir):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _move_all(paths: list[Path], dest: Path) -> list[str]:
    """Rename every path into ``dest``; all or nothing (a failure moves the moved ones back)."""
    moved: list[Path] = []
    try:
        for path in paths:
            os.rename(path, dest / path.name)
            moved.append(path)
    except OSError as err:
        for path in reversed(moved):
            os.rename(dest / path.name, path)
        raise RestoreFailed(f"cannot move {path} aside to {dest}: {err}",
                            hint="check permissions and free space of the data dir's parent") from err
    return [p.name for p in moved]


def _stop(service: Any, params: RedisParams, timeout_s: float) -> None:
    service.stop()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((params.host, params.port), timeout=0.5):
                pass
        except OSError:
            if not service.is_running():
                return
        if time.monotonic() > deadline:
            raise RestoreFailed(f"Redis at {params.endpoint} still runs {timeout_s:.0f} s after the stop request",
                                hint="stop it by hand; nothing was changed")
        time.sleep(0.1)


def _start_and_count(service: Any, params: RedisParams, timeout_s: float) -> tuple[dict[int, int], int]:
    """Start, wait until loaded; return (INFO keyspace key counts, unix ms when counted)."""
    service.start()
    deadline = time.monotonic() + timeout_s
    last_error: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            with RedisConnection.connect(params) as conn:
                conn.wait_until_loaded(max(1.0, deadline - time.monotonic()))
                counts = {db: v.get("keys", 0) for db, v in conn.keyspace().items()}
                return counts, int(time.time() * 1000)
        except (ConnectionFailure, RedisCommandError) as err:
            last_error = err
            time.sleep(0.2)
    raise RestoreFailed(f"Redis at {params.endpoint} did not come up within {timeout_s:.0f} s: {last_error}")


def expected_key_range(report: rdb.RdbReport, counted_ms: int) -> dict[int, tuple[int, int]]:
    """``{db: (min, max)}`` keys a server that loaded the RDB may hold at ``counted_ms``:
    keys with a TTL that passed by then may already be gone (min), or still be there (max)."""
    most = report.keys_per_db
    least = report.expected_keys_after_load(counted_ms + EXPIRY_SKEW_MS)
    return {db: (least.get(db, 0), n) for db, n in most.items()}


def compare_counts(expected: dict[int, tuple[int, int]], actual: dict[int, int]) -> list[str]:
    """Human-readable differences between expected key ranges and actual counts (empty: match)."""
    problems = []
    for db in sorted(set(expected) | set(actual)):
        low, high = expected.get(db, (0, 0))
        got = actual.get(db, 0)
        if not low <= got <= high:
            want = str(high) if low == high else f"{low}..{high}"
            problems.append(f"db{db}: {got} keys, expected {want}")
    return problems


def _rollback(service: Any, params: RedisParams, data_dir: Path, layout: dict[str, str], kept: Path,
              moved: list[str], timeout_s: float) -> str:
    """Put the kept-aside files back and start the server; returns where the failed restore went."""
    try:
        _stop(service, params, timeout_s)
    except LifeboatError as err:
        LOG.warning("redis: rollback: stop failed: %s", err)
    failed = _side_dir(data_dir, "lbfailed")
    _move_all(_data_files(data_dir, layout), failed)
    for name in moved:
        os.rename(kept / name, data_dir / name)
    try:
        kept.rmdir()
    except OSError:
        pass
    service.start()
    return str(failed)


def _read_metadata(backup_set: BackupSet) -> dict[str, Any]:
    try:
        return backup_set.read_json(COMPONENT, METADATA_JSON)
    except NotFound:
        return {}


def plan_restore(backup_set: BackupSet, data_dir: str, layout: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """What :func:`restore_redis_from` would do, changing nothing (check mode)."""
    record = backup_set.artifact_record(COMPONENT, RDB_ARTIFACT)
    meta = _read_metadata(backup_set)
    layout = {**_persistence_layout(None, data_dir), **(layout or {})}
    present = [p.name for p in _data_files(Path(data_dir), layout)] if Path(data_dir).is_dir() else []
    return {"set_id": backup_set.set_id, "data_dir": str(data_dir), "rdb_size": record.get("plaintext_size"),
            "expected_keys_per_db": (meta.get("rdb") or {}).get("keys_per_db"),
            "would_move_aside": present, "layout": layout}


def restore_redis_from(backup_set: BackupSet, keyring: KeyRing, *, service: Any, data_dir: str, conn: RedisParams,
                       layout: Optional[dict[str, str]] = None, start_timeout_s: float = 300.0,
                       progress: Optional[ProgressFn] = None, reference_check: bool = True) -> dict[str, Any]:
    """Replace the data of the Redis server controlled by ``service`` with the set's RDB.

    ``data_dir``: the server's ``dir``; ``conn``: how to reach it once started (to count
    keys); ``layout``: ``dbfilename``/``appenddirname``/``appendfilename`` if not the
    defaults. Order: decrypt + check the RDB into a staging folder (nothing changed yet
    if this fails) -> stop -> move the data files to ``<data_dir>.lbprev-<UTC>`` (kept)
    -> place RDB + AOF base -> start -> compare per-db key counts with the RDB's. On a
    mismatch or a failed start the previous files are put back, the server is started
    again and RestoreFailed is raised. The check before anything changes is the same as a
    backup's (``reference_check``: also redis-check-rdb where installed); ``rdb_checks`` in
    the returned summary names the checks that ran.
    """
    started = time.monotonic()
    data_path = Path(data_dir)
    if not data_path.is_dir():
        raise ConfigError(f"Redis data dir {data_dir} does not exist", hint="set data_dir to the server's dir")
    layout = {**_persistence_layout(None, data_dir), **(layout or {})}
    volume = compose_volumes.volume_of_service_folder(service, data_path)  # engine reachable: before any change
    staged = _stage_rdb(backup_set, keyring, data_path, progress, reference_check)
    try:
        previous_rdb = data_path / layout["dbfilename"]
        file_mode = (os.stat(previous_rdb).st_mode & 0o777) if previous_rdb.is_file() else 0o600
        owner = _owner_of(data_path)
        LOG.info("redis: restore of set %s into %s: stopping %s", backup_set.set_id, data_dir, service.name)
        _stop(service, conn, start_timeout_s)
        try:
            kept = _side_dir(data_path, KEEP_TAG)
            moved = _move_all(_data_files(data_path, layout), kept)
        except BaseException:
            service.start()  # nothing was changed: bring the server back as it was
            raise
        try:
            _place_rdb(staged, data_path, layout, owner, file_mode)
            counts, counted_ms = _start_and_count(service, conn, start_timeout_s)
            expected = expected_key_range(staged.report, counted_ms)
            problems = compare_counts(expected, counts)
            if problems:
                raise RestoreFailed("key counts after loading differ from the backup's: " + "; ".join(problems))
        except BaseException as err:
            try:
                failed = _rollback(service, conn, data_path, layout, kept, moved, start_timeout_s)
            except Exception as rollback_err:
                raise RestoreFailed(f"restore of set {backup_set.set_id} into {data_dir} failed ({err}) and so did "
                                    f"the rollback ({rollback_err})",
                                    hint=f"the previous data files are in {kept}: stop the server, move them back "
                                         f"into {data_dir}, start it") from err
            if isinstance(err, LifeboatError):
                raise RestoreFailed(f"restore of set {backup_set.set_id} into {data_dir} failed and was rolled "
                                    f"back: {err.message}", hint=f"the previous data is live again; the failed "
                                    f"restore's files are in {failed}") from err
            raise
    finally:
        shutil.rmtree(staged.folder, ignore_errors=True)
    kept_in: dict[str, Any] = {}
    if not moved:
        shutil.rmtree(kept, ignore_errors=True)
    elif volume is not None:        # Compose: the replaced files go into a labelled volume of their own
        kept_in = compose_volumes.keep_replaced_in_volume(getattr(service, "base_url", None), volume, kept,
                                                          "redis data")
    LOG.info("redis: restored set %s into %s: %d keys", backup_set.set_id, data_dir, sum(counts.values()))
    return {"changed": True, "set_id": backup_set.set_id, "data_dir": str(data_dir),
            "previous_data": kept_in.pop("kept_path", str(kept)) if moved else None, "moved_aside": moved, **kept_in,
            "keys_per_db": {str(db): n for db, n in sorted(counts.items())},
            "expected_keys_per_db": {str(db): list(r) for db, r in sorted(expected.items())},
            "rdb_version": staged.report.version, "rdb_size": staged.report.size,
            "rdb_checks": list(staged.report.checks),
            "duration_s": round(time.monotonic() - started, 3)}


# =============================================================================================
# verify
# =============================================================================================


def _check(name: str, ok: bool, detail: str = "") -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "detail": detail}


def _counts_check(report: rdb.RdbReport, meta: dict[str, Any]) -> dict[str, Any]:
    recorded = (meta.get("rdb") or {}).get("keys_per_db")
    if recorded is None:
        return _check("rdb key counts match the backup record", True, "no record to compare (older set)")
    found = {str(db): n for db, n in report.keys_per_db.items()}
    return _check("rdb key counts match the backup record", found == recorded, f"record {recorded}, file {found}")


def run_reference_check(program: str, path: str, timeout_s: float = 600.0) -> tuple[Optional[bool], str]:
    """Run ``redis-check-rdb``/``redis-check-aof`` on ``path``: (ok, last output lines);
    ``(None, reason)`` when the program is not installed."""
    try:
        binary = find_redis_binary(program)
    except DependencyMissing as err:
        return None, str(err)
    proc = subprocess.run([binary, path], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s,
                          check=False)
    text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
    if program == "redis-check-rdb":
        ok = proc.returncode == 0 and "RDB looks OK" in text
    else:
        ok = proc.returncode == 0 and "is valid" in text
    return ok, tail


def _verify_aof(backup_set: BackupSet, keyring: KeyRing, work: Path, checks: list) -> None:
    meta = _read_metadata(backup_set).get("aof") or {}
    folder = work / "aof"
    folder.mkdir()
    with backup_set.open_artifact(COMPONENT, AOF_ARTIFACT, keyring) as reader, \
            tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 2 or ".." in parts:
                raise VerificationFailed(f"AOF archive member {member.name!r} is not a plain AOF file")
            dest = folder / parts[1]
            with open(dest, "wb") as out:
                shutil.copyfileobj(tar.extractfile(member), out)
    manifest = folder / (meta.get("manifest") or f"{DEFAULT_APPENDFILENAME}.manifest")
    listed = {e.name for e in parse_aof_manifest(manifest.read_text())} if manifest.is_file() else set()
    present = {p.name for p in folder.iterdir()} - {manifest.name}
    checks.append(_check("aof archive holds every file its manifest lists", manifest.is_file() and listed <= present,
                         f"listed {sorted(listed)}, present {sorted(present)}"))
    ok, tail = run_reference_check("redis-check-aof", str(manifest))
    if ok is not None:
        checks.append(_check("redis-check-aof accepts the AOF", ok, tail))


def verify_redis_set(backup_set: BackupSet, keyring: KeyRing, *, mode: str = "quick", work_dir: Optional[str] = None,
                     progress: Optional[ProgressFn] = None, reference_check: bool = True,
                     launcher: Launcher = HOST) -> dict[str, Any]:
    """Verify the Redis part of a set; returns ``{ok, mode, component, set_id, checks, rdb}``.

    ``quick``: the RDB artifact is decrypted (every chunk authenticated, size/SHA-256
    checked) and checked in memory (structure, payload integrity, CRC64 -- and by
    ``redis-check-rdb`` through a pipe when installed and ``reference_check``); per-db
    key counts are compared with the backup record; ``rdb.checks`` names the checks that
    ran. ``full``: the same while the RDB is written to a temporary folder, then restored into a scratch
    redis-server with :func:`restore_redis_from` (key counts compared), and an AOF
    artifact, if any, is unpacked and checked with ``redis-check-aof``. The scratch redis-server runs
    where ``launcher`` says (this host, or a container of the service's image). Never raises for
    bad data (the report says what failed); raises for missing keys or programs.
    """
    if mode not in ("quick", "full"):
        raise ConfigError(f"unknown verify mode {mode!r}", hint="use quick or full")
    meta = _read_metadata(backup_set)
    checks: list[dict[str, Any]] = []
    result: dict[str, Any] = {"ok": False, "mode": mode, "component": COMPONENT, "set_id": backup_set.set_id,
                              "checks": checks, "rdb": None}
    started = time.monotonic()
    try:
        if mode == "quick":
            with backup_set.open_artifact(COMPONENT, RDB_ARTIFACT, keyring, progress=progress) as reader:
                report = rdb.check_rdb(reader, reference=reference_checker(reference_check))
            _rdb_checks(report, meta, checks)
        else:
            report = _verify_full(backup_set, keyring, meta, checks, work_dir, progress, reference_check, launcher)
        if report is not None:
            result["rdb"] = report.to_dict()
    except LifeboatError as err:
        if isinstance(err, (DependencyMissing, ConfigError)) or type(err).__name__ in ("KeyUnavailable", "WrongKey"):
            raise
        checks.append(_check("verification ran to the end", False, f"{type(err).__name__}: {err}"))
    result["ok"] = bool(checks) and all(c["ok"] for c in checks)
    result["duration_s"] = round(time.monotonic() - started, 3)
    return result


def _rdb_checks(report: rdb.RdbReport, meta: dict[str, Any], checks: list) -> None:
    """The verdicts of one RDB check as verify checks: Lifeboat's own, redis-check-rdb's (when it
    ran), and the per-db key counts against the backup record."""
    reference = report.reference if report.reference and report.reference.get("ran") else None
    detail = f"RDB v{report.version}, {report.size} bytes, {report.total_keys} keys" if report.structural_ok else \
        damage_message(report)
    checks.append(_check("rdb structure and CRC64", report.structural_ok, detail))
    if reference is not None:
        checks.append(_check("redis-check-rdb accepts the RDB", reference["ok"], reference["detail"]))
    if report.ok:
        checks.append(_counts_check(report, meta))


def _verify_full(backup_set: BackupSet, keyring: KeyRing, meta: dict[str, Any], checks: list, work_dir: Optional[str],
                 progress: Optional[ProgressFn], reference_check: bool,
                 launcher: Launcher = HOST) -> Optional[rdb.RdbReport]:
    report: Optional[rdb.RdbReport] = None
    rundirs.remove_dead_owned_tmpdirs(VERIFY_DIR_PREFIX, root=work_dir)  # a killed verify's plaintext RDB
    work = Path(rundirs.make_owned_tmpdir(VERIFY_DIR_PREFIX, root=work_dir))
    try:
        path = work / "dump.rdb"
        with backup_set.open_artifact(COMPONENT, RDB_ARTIFACT, keyring, progress=progress) as reader, \
                open(path, "wb") as out:
            report = rdb.check_rdb(reader, on_chunk=out.write, reference=reference_checker(reference_check))
        _rdb_checks(report, meta, checks)
        path.unlink()
        if report.ok:
            with ScratchRedis(base_dir=str(work), launcher=launcher) as scratch:
                summary = restore_redis_from(backup_set, keyring, service=scratch, data_dir=str(scratch.data_dir),
                                             conn=scratch.params)
                checks.append(_check("loads into a scratch redis-server with the same key counts", True,
                                     f"keys per db {summary['keys_per_db']} (scratch server {launcher.where})"))
        if any(a.get("name") == AOF_ARTIFACT for a in backup_set.artifacts(COMPONENT)):
            _verify_aof(backup_set, keyring, work, checks)
    except RestoreFailed as err:
        checks.append(_check("loads into a scratch redis-server with the same key counts", False, err.message))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def verification_json(report: dict[str, Any]) -> str:
    """The report as compact JSON (for logs and the CLI)."""
    return json.dumps(report, sort_keys=True)


# =============================================================================================
# module entry points
# =============================================================================================


def plan_redis_backup(conn: RedisParams, *, mode: str = "network", include_aof: bool = False,
                      data_dir: Optional[str] = None) -> dict[str, Any]:
    """Check-mode plan: connect and authenticate, return the server facts and what a backup
    would store; raise the errors a real run would hit first (bad mode, AOF off, no data dir)."""
    if mode not in MODES:
        raise ConfigError(f"unknown Redis backup mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
    with RedisConnection.connect(conn) as c:
        facts = server_facts(c)
        layout = _persistence_layout(c, data_dir) if (mode == "file" or include_aof) else {}
    if (mode == "file" or include_aof) and not layout.get("dir"):
        raise ConfigError("the Redis data dir is unknown", hint="set data_dir (CONFIG GET dir is not allowed)")
    if include_aof and not facts["aof_enabled"]:
        raise ConfigError(f"include_aof is set but Redis at {conn.endpoint} runs with appendonly no",
                          hint="drop include_aof, or enable appendonly on the server")
    artifacts = [f"{COMPONENT}/{RDB_ARTIFACT}"] + ([f"{COMPONENT}/{AOF_ARTIFACT}"] if include_aof else [])
    return {"server": facts, "mode": mode, "artifacts": artifacts}


def run_redis_backup(store_root: str, keyring: KeyRing, conn: RedisParams, *, codec: Any = None, mode: str = "network",
                     include_aof: bool = False, data_dir: Optional[str] = None, set_type: str = "redis",
                     quick_verify: bool = True, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Back up ``conn`` into a new published set of ``set_type`` in the store at ``store_root``
    (:func:`components.run_backup` with this engine)."""
    return components.run_backup(ENGINE, store_root, keyring, conn,
                                 {"mode": mode, "include_aof": include_aof, "data_dir": data_dir},
                                 codec=codec, set_type=set_type, quick_verify=quick_verify, progress=progress)


def open_redis_set(store: Store, set_id: Optional[str]) -> Any:
    """The set ``set_id``, or for ``None``/``'latest'`` the newest set holding ``redis`` (NotFound if none)."""
    return components.open_set(store, ENGINE, set_id)


def discover_layout(conn: RedisParams, data_dir: Optional[str], overrides: dict[str, Optional[str]]) -> dict:
    """Data dir and file names for a restore: explicit values, else CONFIG GET on the running
    server (if reachable and allowed), else the Redis defaults. ``dir`` may stay empty."""
    layout: dict[str, str]
    try:
        with RedisConnection.connect(conn) as c:
            layout = _persistence_layout(c, data_dir)
    except (ConnectionFailure, RedisCommandError) as err:
        LOG.info("redis: server not reachable before the restore (%s); using given/default names", err)
        layout = _persistence_layout(None, data_dir)
    layout.update({k: v for k, v in overrides.items() if v})
    return layout


def run_redis_restore(store_root: str, keyring: KeyRing, conn: RedisParams, *, service: Any,
                      set_id: Optional[str] = None, data_dir: Optional[str] = None,
                      layout_overrides: Optional[dict[str, Optional[str]]] = None, start_timeout_s: float = 300.0,
                      check_mode: bool = False, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Open the store and set (``None``/``'latest'`` = newest redis set) and restore it
    (:func:`restore_redis_from`); in check mode return :func:`plan_restore` instead."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

    backup_set = open_redis_set(Store(store_root), set_id)
    layout = discover_layout(conn, data_dir, layout_overrides or {})
    if not layout.get("dir"):
        raise ConfigError("the Redis data dir is unknown (server down or CONFIG GET not allowed)",
                          hint="set data_dir to the server's dir")
    if check_mode:
        backup_set.data_key(keyring)  # the key ring can open the set
        return {"changed": True, **plan_restore(backup_set, layout["dir"], layout)}
    files = {k: v for k, v in layout.items() if k != "dir"}
    return restore_redis_from(backup_set, keyring, service=service, data_dir=layout["dir"], conn=conn,
                              layout=files, start_timeout_s=start_timeout_s, progress=progress)


def run_redis_verify(store_root: str, keyring: KeyRing, *, set_id: Optional[str] = None, mode: str = "quick",
                     work_dir: Optional[str] = None, record: bool = True,
                     progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Verify the Redis part of a set; store the report (``record``) beside the set."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

    store = Store(store_root)
    backup_set = open_redis_set(store, set_id)
    report = verify_redis_set(backup_set, keyring, mode=mode, work_dir=work_dir, progress=progress)
    if record:
        report["record"] = str(store.record_verification(backup_set.set_id, report))
    return report


# =============================================================================================
# the component engine
# =============================================================================================


class RedisEngine:
    """``redis``: the RDB (from a replica-protocol transfer or the data dir), optionally the AOF.

    Backup ``options``: ``mode``, ``include_aof``, ``data_dir``. Restore ``target``: the
    :class:`RedisParams` of the server; ``options``: ``service``, ``data_dir``, ``layout``,
    ``start_timeout_s`` (:func:`restore_redis_from`). Verify: :func:`verify_redis_set`.
    """

    name = COMPONENT
    set_noun = "a Redis backup"
    backup_module = "lifeboat.dr.redis_backup"
    restore_method = "restored into a scratch redis-server and key counts compared"
    progress_from_writer = True  # backup_redis_into reports no progress of its own

    def codec(self, requested: Any) -> Any:
        return requested

    def plan_backup(self, source: RedisParams, options: dict[str, Any]) -> dict[str, Any]:
        return plan_redis_backup(source, mode=options.get("mode", "network"),
                                 include_aof=options.get("include_aof", False), data_dir=options.get("data_dir"))

    def prepare_backup(self, store: Store, keyring: KeyRing, source: RedisParams,
                       options: dict[str, Any]) -> Optional[int]:
        return None

    def backup_into(self, writer: SetWriter, source: RedisParams, options: dict[str, Any], *, keyring: KeyRing,
                    progress: Optional[ProgressFn] = None) -> dict[str, Any]:
        return backup_redis_into(writer, source, mode=options.get("mode", "network"),
                                 include_aof=options.get("include_aof", False), data_dir=options.get("data_dir"),
                                 progress=progress)

    def backup_summary(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {"redis_version": meta["redis_version"], "role": meta["role"], "keyspace": meta["keyspace"],
                "rdb_keys_per_db": meta["rdb"]["keys_per_db"], "rdb_size": meta["rdb"]["size"],
                "rdb_checks": meta["rdb"]["checks"], "rdb_last_save_time": meta["rdb_last_save_time"],
                "aof": meta.get("aof"), "duration_s": meta["duration_s"]}

    def restore_from(self, store: Store, backup_set: BackupSet, keyring: KeyRing, target: RedisParams,
                     options: dict[str, Any], *, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
        return restore_redis_from(backup_set, keyring, conn=target, progress=progress, **options)

    def verify(self, store: Store, backup_set: BackupSet, keyring: KeyRing, mode: str, options: dict[str, Any],
               measured: dict[str, float]) -> list[dict[str, Any]]:
        report = verify_redis_set(backup_set, keyring, mode=mode, work_dir=options.get("work_dir"),
                                  launcher=launcher_for(options, COMPONENT) if mode == "full" else HOST)
        return [components.check(f"redis {c['name']}", c["ok"], c.get("detail", ""), f"{COMPONENT}/{RDB_ARTIFACT}")
                for c in report["checks"]]

    def scratch_server(self, options: dict[str, Any]) -> ScratchRedis:
        return ScratchRedis(base_dir=options.get("work_dir"), launcher=launcher_for(options, COMPONENT))


ENGINE = components.register(RedisEngine())
