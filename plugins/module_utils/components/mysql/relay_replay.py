# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PITR binlog replay through the server's own parallel replication applier (MariaDB).

The plan's archived binlog range is installed as the relay log of a dedicated, named
replication connection (:data:`CONNECTION`, ``lifeboat_pitr``) on the target server and
applied by its SQL thread alone (no IO thread, no master) with ``slave_parallel_threads``
workers, stopped with ``START SLAVE SQL_THREAD UNTIL RELAY_LOG_FILE/RELAY_LOG_POS`` at the
plan's exclusive stop position. Every target kind (time, position, GTID, before, latest)
is resolved by the planner to such an exclusive position, which is always a transaction
boundary, so ``UNTIL`` expresses each of them exactly; no client-replay tail is needed.

How the range is installed (verified on MariaDB 10.11, see docs/pitr.md):

* ``CHANGE MASTER 'lifeboat_pitr' TO MASTER_HOST='lifeboat-pitr.invalid'`` (a marker:
  never connected to) creates the connection's relay log ``<relay-log>-lifeboat_pitr``;
  ``FLUSH RELAY LOGS 'lifeboat_pitr'`` once per file makes the server list N+1 relay
  files in its own index (the server caches its index: files it did not list are not
  found). Each of the first N is atomically replaced (0600, owned like the datadir) by the
  decrypted archived file cut at its stop position -- the binlogs of several generations
  thus renumbered into one relay index; the last (active) one is left alone. The copies
  keep the binlogs' byte offsets, so positions are the archive's.
* The connection's master coordinates are set to the first file's name and start (a copied
  binlog lacks the Rotate event an IO thread writes first; without a master log name the
  parallel workers of MariaDB 10.11.19 crash the server, found by experiment).
* The SQL thread skips events carrying its own ``server_id`` (a restored server keeps
  the original's): ``server_id`` is set to a temporary value (dynamic) and put back.
* The replayed transactions must not enter the server's binlog a second time under their
  original GTIDs (refused by ``gtid_strict_mode``, applied twice by a later PITR, shipped
  again by the archiver). Where the SQL thread does not binlog (``log_bin`` OFF or
  ``log_slave_updates`` OFF; both static) the parallel workers apply. Where it would
  (``log_bin`` and ``log_slave_updates`` ON, e.g. the lab), the SQL thread applies ALONE
  (``slave_parallel_threads=0``) with ``init_slave='SET SESSION sql_log_bin = 0'`` (run by
  the SQL thread, never by parallel workers) and ``gtid_strict_mode`` OFF during the replay
  (the GTID event's strict-order check runs whenever ``log_slave_updates`` is ON, even for
  a session that does not binlog): verified on 10.11.19, nothing reaches the binlog. Where
  the caller asks for a binlogged replay (``log_replayed``) only a server whose SQL thread
  binlogs qualifies.
* Afterwards: ``RESET SLAVE 'lifeboat_pitr' ALL`` (removes the connection, its relay
  files and info files) and every changed global (``server_id``,
  ``slave_parallel_threads``, ``gtid_slave_pos``; ``init_slave`` and ``gtid_strict_mode``
  in the single-thread case; the relaxed durability settings) back to its value
  (``gtid_slave_pos`` while ``gtid_strict_mode`` is still OFF: with a binlog, strict mode
  refuses a slave position lacking a domain the binlog has, e.g. the original empty one). The originals are
  written first to ``lifeboat_pitr_applier.json`` (0600) in the datadir, so a run killed
  midway is cleaned up by the next one.

An existing replication setup is never touched: a connection of the same name that is
not Lifeboat's is refused, and any running replication connection makes the applier
inapplicable (the globals it needs can only change while all connections are stopped).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import binlog as bl
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as mysql
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, LifeboatError, RestoreFailed
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

LOG = get_logger("pitr.applier")
CONNECTION = "lifeboat_pitr"
MARKER_HOST = "lifeboat-pitr.invalid"
STATE_NAME = "lifeboat_pitr_applier.json"
METHODS = ("auto", "applier", "client")
PARALLEL_MODES = ("optimistic", "conservative")
DEFAULT_TIMEOUT_S = 6 * 3600.0
POLL_S = 0.2
_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_MAX_SERVER_ID = 4294967295


def default_workers() -> int:
    """Parallel workers by default: one per CPU of this machine, at least 2."""
    return max(2, os.cpu_count() or 2)


@dataclass
class ApplierOptions:
    """How to run the applier: ``workers`` (``slave_parallel_threads``), ``mode``
    (``slave_parallel_mode``), ``timeout_s`` (the whole apply), ``connection`` (its name)."""

    workers: Optional[int] = None
    mode: str = "optimistic"
    timeout_s: float = DEFAULT_TIMEOUT_S
    connection: str = CONNECTION
    serial: Optional[bool] = None
    """None: decided from the server (the SQL thread alone where it would binlog the replay);
    True: the SQL thread alone anyway (benchmarks); False: parallel workers."""

    def checked(self) -> ApplierOptions:
        """These options validated (ConfigError naming the bad one); workers defaulted."""
        if not _NAME_RE.match(self.connection or ""):
            raise ConfigError(f"invalid replication connection name {self.connection!r}",
                              hint="use letters, digits and _ (at most 64)")
        if self.mode not in PARALLEL_MODES:
            raise ConfigError(f"invalid applier_parallel_mode {self.mode!r}", hint="use optimistic or conservative")
        workers = default_workers() if self.workers in (None, 0) else int(self.workers)
        if not 1 <= workers <= 1000:
            raise ConfigError(f"invalid applier_workers {self.workers!r}", hint="give 1..1000 (default: CPUs)")
        if self.timeout_s <= 0:
            raise ConfigError(f"invalid applier_timeout {self.timeout_s!r}", hint="give seconds > 0")
        return ApplierOptions(workers, self.mode, float(self.timeout_s), self.connection, self.serial)


# --------------------------------------------------------------------------- server facts
def _status_rows(conn: Any, sql: str) -> list[dict[str, Any]]:
    cur = conn.cursor()
    try:
        cur.execute(sql)
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, (mysql._text(v) for v in row), strict=True)) for row in cur.fetchall()]
    finally:
        cur.close()


def all_slaves_status(conn: Any) -> list[dict[str, Any]]:
    """``SHOW ALL SLAVES STATUS`` as dicts (one per replication connection)."""
    return _status_rows(conn, "SHOW ALL SLAVES STATUS")


def connection_status(conn: Any, name: str) -> Optional[dict[str, Any]]:
    """``SHOW SLAVE 'name' STATUS`` of one connection, None if it does not exist."""
    for row in all_slaves_status(conn):
        if str(row.get("Connection_name", "")).lower() == name.lower():
            return row
    return None


def _globals(conn: Any) -> dict[str, Any]:
    row = mysql.query_all(conn, "SELECT @@server_id, @@slave_parallel_threads, @@gtid_slave_pos, @@datadir, "
                                "@@log_bin, @@log_slave_updates, @@version, @@gtid_strict_mode, @@init_slave, "
                                "@@innodb_flush_log_at_trx_commit, @@hostname")[0]
    return {"server_id": int(row[0]), "slave_parallel_threads": int(row[1]), "gtid_slave_pos": str(row[2] or ""),
            "datadir": str(row[3]), "log_bin": bool(int(row[4])), "log_slave_updates": bool(int(row[5])),
            "version": str(row[6]), "gtid_strict_mode": bool(int(row[7])), "init_slave": str(row[8] or ""),
            "innodb_flush_log_at_trx_commit": int(row[9]), "hostname": str(row[10] or "")}


def server_on_another_host(facts: dict[str, Any]) -> Optional[str]:
    """Why the server's own paths (``@@datadir``) are not this host's (None: same host name).

    A server in a container (its own host name, the container's id) or on another machine may name
    a datadir that also exists here - another server's (e.g. a system MariaDB's ``/var/lib/mysql``):
    the applier would write its relay and state files there. The host name, which a container gets
    from its own UTS namespace, tells them apart without changing anything."""
    here = socket.gethostname()
    if facts["hostname"] and facts["hostname"] != here:
        return (f"the server runs on host {facts['hostname']!r} (another machine or a container), not on this "
                f"host {here!r}: its datadir {facts['datadir']} is not this host's folder")
    return None


def sql_thread_binlogs(facts: dict[str, Any]) -> bool:
    """Would the server's SQL thread write what it applies into the binlog (both static)?"""
    return bool(facts["log_bin"] and facts["log_slave_updates"])


def why_not_applicable(conn: Any, *, log_replayed: bool, databases: Optional[list[str]],
                       connection: str = CONNECTION) -> Optional[str]:
    """Why the applier cannot replay into this server (None: it can). Nothing is changed."""
    facts = _globals(conn)
    if "mariadb" not in facts["version"].lower():
        return f"the server is not MariaDB ({facts['version']}): the applier path is implemented for MariaDB only"
    if any("," in db or "'" in db for db in databases or []):
        return "a database name in databases: contains ',' or a quote (replicate_do_db cannot name it)"
    if facts["log_bin"] and not facts["log_slave_updates"] and log_replayed:
        return "log_replayed: true, but with log_slave_updates OFF the SQL thread would not binlog the replay"
    elsewhere = server_on_another_host(facts)
    if elsewhere:
        return elsewhere + " (the applier needs the DB host)"
    datadir = Path(facts["datadir"])
    if not datadir.is_dir() or not os.access(datadir, os.W_OK | os.X_OK):
        return f"the server's datadir {datadir} is not a writable folder on this host (the applier needs the DB host)"
    running = [r.get("Connection_name") or "''" for r in all_slaves_status(conn)
               if (r.get("Slave_IO_Running") == "Yes" or r.get("Slave_SQL_Running") == "Yes")
               and r.get("Master_Host") != MARKER_HOST]
    if running:
        return (f"replication connection(s) {', '.join(running)} are running (slave_parallel_threads and "
                "gtid_slave_pos can change only while all are stopped; an existing setup is never touched)")
    return None


def choose_method(conn_params: Any, requested: str, *, log_replayed: bool, databases: Optional[list[str]],
                  connection: str = CONNECTION) -> tuple[str, str]:
    """(method, why): ``applier`` where it applies, else ``client``. ``requested=applier``
    on a server where it does not apply raises ConfigError naming why."""
    if requested not in METHODS:
        raise ConfigError(f"invalid replay_method {requested!r}", hint="use auto, applier or client")
    if requested == "client":
        return "client", "replay_method: client"
    try:
        conn = mysql.connect(conn_params)
    except LifeboatError as err:
        if requested == "applier":
            raise
        return "client", f"cannot inspect the server for the applier ({err.message})"
    facts: dict[str, Any] = {}
    try:
        why = why_not_applicable(conn, log_replayed=log_replayed, databases=databases, connection=connection)
        facts = _globals(conn)
    except LifeboatError as err:
        why = f"cannot inspect the server for the applier ({err.message})"
    finally:
        conn.close()
    if why is None:
        if log_replayed:
            return "applier", "MariaDB on this host, log_replayed: the parallel workers binlog the replay"
        if sql_thread_binlogs(facts) and requested == "auto" and facts["innodb_flush_log_at_trx_commit"] == 1:
            return "client", ("log_bin and log_slave_updates ON (only the SQL thread alone can replay unbinlogged) "
                              "and innodb_flush_log_at_trx_commit=1: one fsync per replayed commit makes the SQL "
                              "thread alone no faster than the client (measured 0.88x); relax_durability: true "
                              "lets auto use it (measured 2.95x)")
        if sql_thread_binlogs(facts):
            return "applier", ("MariaDB on this host with log_bin and log_slave_updates ON: the SQL thread alone "
                               "(parallel workers would binlog the replay), init_slave sql_log_bin=0")
        return "applier", "MariaDB on this host, replay not binlogged by the SQL thread: parallel applier"
    if requested == "applier":
        raise ConfigError(f"replay_method: applier cannot be used: {why}", hint="use replay_method: auto or client")
    return "client", why


# --------------------------------------------------------------------------- state / cleanup
def _state_path(datadir: str) -> Path:
    return Path(datadir) / STATE_NAME


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _refuse_or_clean_existing(conn: Any, name: str, datadir: str) -> None:
    """A connection named ``name`` that is not Lifeboat's: refuse. Lifeboat's own (left by a
    killed run, marker host): remove it and put back the globals the killed run recorded."""
    status = connection_status(conn, name)
    state_file = _state_path(datadir)
    if status is None and not state_file.exists():
        return
    if status is not None and status.get("Master_Host") != MARKER_HOST:
        raise ConfigError(f"the replication connection name {name!r} is taken on this server "
                          f"(master {status.get('Master_Host')}:{status.get('Master_Port')})",
                          hint="an existing replication setup is never touched: give applier_connection "
                               "another name, or use replay_method: client")
    LOG.warning("removing the applier connection %r left by an interrupted PITR run", name)
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.exists() else {}
    _teardown(conn, name, state)
    state_file.unlink(missing_ok=True)


def _teardown(conn: Any, name: str, state: dict[str, Any]) -> list[str]:
    """Stop and remove the connection (relay files included), restore the recorded globals.
    Returns the problems met (each logged); every step is tried."""
    problems = []
    steps = [f"STOP SLAVE '{name}' SQL_THREAD", f"RESET SLAVE '{name}' ALL"]
    if "slave_parallel_threads" in state:
        steps.append(f"SET GLOBAL slave_parallel_threads = {int(state['slave_parallel_threads'])}")
    if "server_id" in state:
        steps.append(f"SET GLOBAL server_id = {int(state['server_id'])}")
    for sql in steps:
        try:
            if sql.startswith("STOP") and connection_status(conn, name) is None:
                continue
            if sql.startswith("RESET") and connection_status(conn, name) is None:
                continue
            mysql.execute(conn, sql)
        except LifeboatError as err:
            problems.append(f"{sql}: {err.message}")
    if "gtid_slave_pos" in state:  # before gtid_strict_mode: strict refuses a position lacking a binlog domain
        try:
            if str(mysql.query_value(conn, "SELECT @@gtid_slave_pos") or "") != state["gtid_slave_pos"]:
                mysql.execute(conn, "SET GLOBAL gtid_slave_pos = %s", (state["gtid_slave_pos"],))
        except LifeboatError as err:
            problems.append(f"restoring gtid_slave_pos: {err.message}")
    later = []
    if "init_slave" in state:
        later.append(("SET GLOBAL init_slave = %s", (str(state["init_slave"]),)))
    if "gtid_strict_mode" in state:
        later.append((f"SET GLOBAL gtid_strict_mode = {1 if state['gtid_strict_mode'] else 0}", None))
    for sql, args in later:
        try:
            mysql.execute(conn, sql, args)
        except LifeboatError as err:
            problems.append(f"{sql.split('=')[0].strip()}: {err.message}")
    for leftover in state.get("tmp_files", []):
        Path(leftover).unlink(missing_ok=True)
    for problem in problems:
        LOG.error("applier clean-up: %s", problem)
    return problems


def clean_interrupted_run(conn_params: Any, name: str = CONNECTION) -> bool:
    """Before anything else of a PITR touches the server: remove what a killed applier run left
    (its marked connection -- possibly with its SQL thread still applying -- and the recorded
    globals). Returns True when something was cleaned. A connection of that name that is not
    Lifeboat's is left alone (the applier refuses it later); a server this host cannot inspect
    is skipped (the client replay needs none of this)."""
    try:
        conn = mysql.connect(conn_params)
    except LifeboatError:
        return False
    try:
        status = connection_status(conn, name)
        datadir = _globals(conn)["datadir"]
        ours = status is not None and status.get("Master_Host") == MARKER_HOST
        if not ours and not (status is None and _state_path(datadir).exists()):
            return False
        _refuse_or_clean_existing(conn, name, datadir)
        return True
    except (LifeboatError, OSError) as err:
        LOG.warning("could not check for an interrupted applier run (%s)", err)
        return False
    finally:
        conn.close()


# --------------------------------------------------------------------------- install
def _temporary_server_id(original: int, avoid: set[int]) -> int:
    """A server_id for the replay that no replayed event carries (the SQL thread skips its own)."""
    candidate = _MAX_SERVER_ID
    while candidate in avoid or candidate == original:
        candidate -= 1
    return candidate


def server_ids_of(gtids: list[Optional[str]], identity: str = "") -> set[int]:
    """Server ids named by GTIDs (``d-s-n``, comma lists) and an identity ``...server_id=N...``."""
    ids: set[int] = set()
    for text in gtids:
        for part in str(text or "").split(","):
            bits = part.strip().split("-")
            if len(bits) == 3 and bits[1].isdigit():
                ids.add(int(bits[1]))
    found = re.search(r"server_id=(\d+)", identity or "")
    if found:
        ids.add(int(found.group(1)))
    return ids


def _relay_index(datadir: str, relay_file: str) -> Path:
    base = relay_file.rsplit(".", 1)[0]
    path = Path(base + ".index")
    return path if path.is_absolute() else Path(datadir) / path


def _indexed_files(index_path: Path, datadir: str) -> list[Path]:
    out = []
    for line in index_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            p = Path(line.strip())
            out.append(p if p.is_absolute() else Path(datadir) / p)
    return out


def _install_copy(store: Store, keyring: KeyRing, rf: dict[str, Any], dest: Path, owner: os.stat_result,
                  tmp_files: list[str]) -> int:
    """Replace ``dest`` atomically by the decrypted archived file cut at its stop (0600,
    owned like the datadir). Returns the bytes written."""
    tmp = dest.with_name(f".{dest.name}.lbtmp-{secrets.token_hex(4)}")
    tmp_files.append(str(tmp))
    limit = int(rf["stop"])
    written = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, bl.open_archived(store, keyring, rf) as src:
            while written < limit:
                chunk = src.read(min(1 << 20, limit - written))
                if not chunk:
                    break
                out.write(chunk)
                written += len(chunk)
        if written != limit:
            raise RestoreFailed(f"archived binlog {rf['file']} ends at {written}, before the replay stop {limit}",
                                hint="verify the binlog set " + str(rf.get("set_id")))
        if os.geteuid() == 0:
            os.chown(tmp, owner.st_uid, owner.st_gid)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return written


def _install_relay_logs(conn: Any, store: Store, keyring: KeyRing, replay_files: list[dict[str, Any]], name: str,
                        datadir: str, tmp_files: list[str]) -> list[Path]:
    """Create the connection and install the replay files as its relay log (renumbered)."""
    # the master coordinates a copied binlog lacks (no IO thread wrote its Rotate event): without
    # them MariaDB 10.11's parallel workers crash comparing an empty master log name
    mysql.execute(conn, f"CHANGE MASTER '{name}' TO MASTER_HOST = '{MARKER_HOST}', MASTER_PORT = 1, "
                        "MASTER_LOG_FILE = %s, MASTER_LOG_POS = %s, MASTER_USE_GTID = no",
                  (str(replay_files[0]["file"]), max(4, int(replay_files[0]["start"]))),
                  doing="creating the applier's replication connection")
    relay_file = str((connection_status(conn, name) or {}).get("Relay_Log_File") or "")
    index_path = _relay_index(datadir, relay_file)
    if not relay_file or not index_path.is_file():
        raise RestoreFailed(f"the relay log index of connection {name!r} ({index_path}) is not on this host",
                            hint="run the PITR on the DB host, or use replay_method: client")
    for _file in replay_files:
        mysql.execute(conn, f"FLUSH RELAY LOGS '{name}'")
    files = _indexed_files(index_path, datadir)
    if len(files) < len(replay_files) + 1:
        raise RestoreFailed(f"the relay index {index_path} lists {len(files)} files, expected "
                            f"{len(replay_files) + 1}")
    owner = os.stat(datadir)
    for rf, dest in zip(replay_files, files, strict=False):
        _install_copy(store, keyring, rf, dest, owner, tmp_files)
    return files[:len(replay_files)]


# --------------------------------------------------------------------------- run
def _wait_until_stopped(conn: Any, name: str, relay_files: list[Path], replay_files: list[dict[str, Any]],
                        timeout_s: float, progress: Optional[Callable[[int, int], None]]) -> dict[str, Any]:
    """Poll the connection until its SQL thread stops; RestoreFailed on error or timeout."""
    total = sum(int(rf["stop"]) - int(rf["start"]) for rf in replay_files)
    offsets = {p.name: (i, sum(int(r["stop"]) - int(r["start"]) for r in replay_files[:i]))
               for i, p in enumerate(relay_files)}
    started = time.monotonic()
    last_log = started
    while True:
        status = connection_status(conn, name) or {}
        done = _applied_bytes(status, offsets, replay_files)
        if progress is not None:
            progress(done, total)
        if status.get("Slave_SQL_Running") != "Yes":
            return status
        if time.monotonic() - started > timeout_s:
            mysql.execute(conn, f"STOP SLAVE '{name}' SQL_THREAD")
            raise RestoreFailed(f"the parallel applier did not reach the stop point within {timeout_s:.0f} s "
                                f"({done} of {total} bytes applied)",
                                hint="raise applier_timeout, or use replay_method: client; re-run execute (it "
                                     "restores the base again)")
        if time.monotonic() - last_log > 10:
            LOG.info("applier: %d of %d binlog bytes applied (%.0f%%)", done, total, 100.0 * done / max(total, 1))
            last_log = time.monotonic()
        time.sleep(POLL_S)


def _applied_bytes(status: dict[str, Any], offsets: dict[str, tuple[int, int]],
                   replay_files: list[dict[str, Any]]) -> int:
    name = Path(str(status.get("Relay_Log_File") or "")).name
    if name not in offsets:
        return 0
    i, before = offsets[name]
    return before + max(0, int(status.get("Relay_Log_Pos") or 0) - int(replay_files[i]["start"]))


def _next_relay_name(path: Path) -> str:
    """The relay file the server creates after ``path`` (``<base>.NNNNNN`` numbered on)."""
    base, _dot, seq = path.name.rpartition(".")
    return f"{base}.{int(seq) + 1:0{len(seq)}d}" if seq.isdigit() else ""


def _check_end_state(status: dict[str, Any], relay_files: list[Path], replay_files: list[dict[str, Any]],
                     gtid_after: str, expect_gtid: Optional[str]) -> None:
    """The SQL thread stopped without error exactly at the stop position (and GTID)."""
    if int(status.get("Last_SQL_Errno") or 0) != 0:
        raise RestoreFailed(f"the parallel applier failed: {status.get('Last_SQL_Error')}",
                            hint="the server is between the base and the target; fix the cause and re-run execute "
                                 "(it restores the base again)")
    where = (Path(str(status.get("Relay_Log_File") or "")).name, int(status.get("Relay_Log_Pos") or 0))
    want = (relay_files[-1].name, int(replay_files[-1]["stop"]))
    # the last copy ends AT the stop: the SQL thread alone (no parallel workers) opens the next
    # relay file before it checks UNTIL and reports its start -- the same point
    if where != want and where != (_next_relay_name(relay_files[-1]), 4):
        raise RestoreFailed(f"the parallel applier stopped at {where[0]}:{where[1]}, not at the stop point "
                            f"{want[0]}:{want[1]} ({replay_files[-1]['file']}:{want[1]})",
                            hint="re-run execute with replay_method: client")
    if expect_gtid:
        have = {p.split("-")[0]: p for p in gtid_after.split(",") if p}
        domain = expect_gtid.split("-")[0]
        if have.get(domain) != expect_gtid:
            raise RestoreFailed(f"after the parallel applier gtid_slave_pos is {gtid_after!r}, expected the last "
                                f"applied transaction {expect_gtid}", hint="re-run execute with replay_method: client")


def replay_with_applier(store: Store, keyring: KeyRing, replay_files: list[dict[str, Any]], conn_params: Any, *,
                        options: Optional[ApplierOptions] = None, databases: Optional[list[str]] = None,
                        expect_gtid: Optional[str] = None,
                        avoid_server_ids: Optional[set[int]] = None, log_replayed: bool = False,
                        progress: Optional[Callable[[int, int], None]] = None) -> dict[str, Any]:
    """Apply the plan's ``replay_files`` (file, set_id, parent, start, stop: exclusive) with
    the server's parallel applier; return what was done (method, workers, mode, bytes, seconds).

    ``log_replayed``: the caller wants the replay in the server's binlog (only with
    ``log_slave_updates`` ON); otherwise, on a server whose SQL thread binlogs, the SQL
    thread applies alone with its session's binlog off (``options.serial`` overrides).

    ``databases``: only those (``replicate_do_db`` of the connection: row events by their
    table's database, statements by their default database, as ``mariadb-binlog --database``).

    Contract: on return every transaction from the first file's ``start`` to the last file's
    ``stop`` is applied once and nothing after; the connection, its relay files and the
    state file are gone and ``server_id``, ``slave_parallel_threads``, ``gtid_slave_pos``
    (and ``init_slave``, ``gtid_strict_mode``) are as before; unless ``log_replayed``,
    the server's binlog did not receive the replay. On failure RestoreFailed (the SQL thread's error text) with the same
    clean-up; a killed run is cleaned up by the next one.
    """
    opts = (options or ApplierOptions()).checked()
    name = opts.connection
    workers = opts.workers
    total = sum(int(rf["stop"]) - int(rf["start"]) for rf in replay_files)
    started = time.monotonic()
    result = {"method": "applier", "workers": opts.workers, "parallel_mode": opts.mode, "connection": name,
              "bytes": total}
    if not replay_files or total <= 0:
        return dict(result, seconds=0.0, applied_to=None, install_s=0.0, apply_s=0.0)
    conn = mysql.connect(conn_params)
    state: dict[str, Any] = {}
    state_file: Optional[Path] = None
    try:
        _refuse_or_clean_existing(conn, name, _globals(conn)["datadir"])
        facts = _globals(conn)  # after a killed run's clean-up: the originals are back
        serial = opts.serial if opts.serial is not None else (sql_thread_binlogs(facts) and not log_replayed)
        state = {"server_id": facts["server_id"], "slave_parallel_threads": facts["slave_parallel_threads"],
                 "gtid_slave_pos": facts["gtid_slave_pos"], "tmp_files": []}
        if serial:  # the SQL thread alone, its session not binlogged (the workers would ignore init_slave)
            state.update(init_slave=facts["init_slave"], gtid_strict_mode=facts["gtid_strict_mode"])
            workers = 0
            result.update(workers=1, parallel_mode="serial (SQL thread alone, init_slave sql_log_bin=0)")
        state_file = _state_path(facts["datadir"])
        _write_state(state_file, state)
        relay_files = _install_relay_logs(conn, store, keyring, replay_files, name, facts["datadir"],
                                          state["tmp_files"])
        installed = time.monotonic()
        temp_id = _temporary_server_id(facts["server_id"], set(avoid_server_ids or ()))
        mysql.execute(conn, f"SET GLOBAL server_id = {temp_id}")
        mysql.execute(conn, f"SET GLOBAL slave_parallel_threads = {workers}")
        if serial:
            mysql.execute(conn, "SET GLOBAL init_slave = 'SET SESSION sql_log_bin = 0'")
            mysql.execute(conn, "SET GLOBAL gtid_strict_mode = 0")
        else:
            mysql.execute(conn, f"SET GLOBAL {name}.slave_parallel_mode = '{opts.mode}'")
        if databases:
            mysql.execute(conn, f"SET GLOBAL {name}.replicate_do_db = %s", (",".join(databases),))
        mysql.execute(conn, f"CHANGE MASTER '{name}' TO RELAY_LOG_FILE = %s, RELAY_LOG_POS = %s",
                      (relay_files[0].name, int(replay_files[0]["start"])))
        mysql.execute(conn, f"START SLAVE '{name}' SQL_THREAD UNTIL RELAY_LOG_FILE = %s, RELAY_LOG_POS = %s",
                      (relay_files[-1].name, int(replay_files[-1]["stop"])))
        LOG.info("applier: %d file(s), %d bytes, %s, server_id %d during the replay", len(replay_files), total,
                 "the SQL thread alone (log_slave_updates ON)" if serial else f"{workers} workers ({opts.mode})",
                 temp_id)
        status = _wait_until_stopped(conn, name, relay_files, replay_files, opts.timeout_s, progress)
        gtid_after = str(mysql.query_value(conn, "SELECT @@gtid_slave_pos") or "")
        _check_end_state(status, relay_files, replay_files, gtid_after, expect_gtid)
        applied_to = {"file": replay_files[-1]["file"], "position": int(replay_files[-1]["stop"]),
                      "gtid": expect_gtid}
        timing = {"install_s": round(installed - started, 3), "apply_s": round(time.monotonic() - installed, 3)}
    finally:
        try:
            problems = _teardown(conn, name, state) if state else []
            if state_file is not None and not problems:
                state_file.unlink(missing_ok=True)
        finally:
            conn.close()
    if problems:
        raise RestoreFailed("the replay finished but the applier's clean-up failed: " + "; ".join(problems),
                            hint=f"the next PITR run cleans up connection {name!r}; or run RESET SLAVE '{name}' ALL")
    return dict(result, seconds=round(time.monotonic() - started, 3), applied_to=applied_to, **timing)


__all__ = ["ApplierOptions", "choose_method", "clean_interrupted_run", "replay_with_applier", "why_not_applicable",
           "CONNECTION"]
