# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore of a ``mysql`` component written by :mod:`backup` (format: :mod:`dumpformat`): stage, verify, swap.

Live data is never destroyed first:

1. every restored table is created and loaded in a fresh staging schema
   ``<db>__lbrestore`` (parallel, one table per connection, big multi-row
   INSERTs, ``FOREIGN_KEY_CHECKS=0`` / ``UNIQUE_CHECKS=0`` in the load sessions);
2. every staged table is verified (row count + content checksum against the values
   recorded at backup time, see :mod:`mysql_backup`); any difference drops the
   staging schema and fails, the live server untouched;
3. ``in_place_swap``: ONE ``RENAME TABLE`` statement (atomic) moves the live tables
   aside into ``<db>__lbprev_<UTC time>`` (kept; never deleted by Lifeboat; live
   objects that must be dropped are saved there in ``_lifeboat_saved_objects``) and
   the staged ones in; then views, routines, triggers and events are recreated.
   ``side_by_side``: staged tables are renamed to new names beside the originals
   (``orders`` -> ``orders_restored``; default suffix ``_restored``), without
   foreign keys (their constraint names would clash with the originals').
   ``reinit_datadir``: for a server that no longer starts: stop it, move the
   datadir aside (kept), initialise a fresh one, start it, restore users, then
   restore everything as ``in_place_swap``.

Binary log: by default the restore is written to the binary log like any other
change (replicas and the binlog archive stay consistent; PITR from a later base
works). ``write_binlog=False`` sets ``sql_log_bin=0`` in every restore session
(needs BINLOG ADMIN / SUPER): for a restore followed by a binlog replay (PITR) on a
server without replicas, so the replay is not mixed with a huge load.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import conn as my
from ansible_collections.lifeboat.dr.plugins.module_utils.components.mysql import dumpformat
from ansible_collections.lifeboat.dr.plugins.module_utils.util import rundirs
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    LifeboatError,
    NotFound,
    RestoreFailed,
    VerificationFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import write_all
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    ProgressFn,
    ProgressMeter,
    get_logger,
    set_step,
)

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet

try:
    import pymysql
    import pymysql.converters
except ImportError:  # pragma: no cover - mysql.require_pymysql() raises DependencyMissing
    pass

MODES = ("in_place_swap", "side_by_side", "reinit_datadir")
STAGING_SUFFIX = my.STAGING_SUFFIX
PREV_SUFFIX = my.KEPT_ASIDE_SUFFIX
SAVED_OBJECTS_TABLE = "_lifeboat_saved_objects"
COMMIT_BYTES = 64 << 20     # commit a table's load every this many bytes of statements
READ_BYTES = 1 << 20
MAX_NAME = 64
SESSION_TIME_ZONE = my.SESSION_TIME_ZONE
LOAD_DIR_PREFIX = "lifeboat-load-"  # + <pid>-<start ticks>-<random>: see rundirs

log = get_logger("mysql.restore")


# --------------------------------------------------------------------------- plan
@dataclass
class TablePlan:
    """One table to restore: backup record, staging place and final place."""

    spec: dumpformat.TableSpec
    rows: int
    checksum: str
    artifact: str
    target_db: str
    target_table: str
    staging_db: str
    deferred_keys: list[str] = field(default_factory=list)


@dataclass
class RestorePlan:
    """What a restore will do (check mode returns :meth:`describe`)."""

    set_id: str
    mode: str
    whole_databases: dict[str, str]          # source db -> target db (whole-database restores)
    tables: list[TablePlan]
    include_users: bool
    prev_suffix: str
    schema: list[tuple[dict, str]] = field(default_factory=list)
    objects: list[tuple[dict, str]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"set_id": self.set_id, "mode": self.mode, "databases": dict(self.whole_databases),
                "tables": [{"source": t.spec.key, "target": f"{t.target_db}.{t.target_table}", "rows": t.rows,
                            "staging": t.staging_db} for t in self.tables],
                "include_users": self.include_users,
                "kept_aside_in": sorted({prev_name(t.target_db, self.prev_suffix) for t in self.tables})
                if self.mode != "side_by_side" else []}


def staging_name(db: str) -> str:
    """The staging schema of ``db`` (at most 64 characters)."""
    return _fit(db, STAGING_SUFFIX)


def prev_name(db: str, suffix: str) -> str:
    """The schema the live tables of ``db`` are kept in (``<db>__lbprev_<time>``, <= 64 characters)."""
    return _fit(db, PREV_SUFFIX + suffix)


def _fit(db: str, suffix: str) -> str:
    if len(db) + len(suffix) <= MAX_NAME:
        return db + suffix
    import hashlib

    digest = hashlib.sha256(db.encode()).hexdigest()[:8]
    return db[: MAX_NAME - len(suffix) - 9] + "_" + digest + suffix


def parse_table_name(name: str, default_db: Optional[str] = None) -> tuple[str, str]:
    """``"db.table"`` -> (db, table); a bare ``"table"`` needs ``default_db``."""
    if "." in name:
        db, table = name.split(".", 1)
        return db, table
    if default_db is None:
        raise ConfigError(f"table {name!r} must be given as <database>.<table>")
    return default_db, name


def build_plan(meta: dict[str, Any], set_id: str, *, databases: Optional[Sequence[str]] = None,
               tables: Optional[Sequence[str]] = None, rename_to: Optional[dict[str, str]] = None,
               mode: str = "in_place_swap", include_users: bool = False,
               now: Optional[datetime] = None) -> RestorePlan:
    """Decide what goes where. Pure: reads only the backup metadata.

    ``tables`` ("db.table") restores single tables; else ``databases`` (default: every
    database of the backup) restores whole databases. ``rename_to`` (side_by_side
    only) maps ``"db.table"`` -> ``"new_table"`` or ``"new_db.new_table"`` and ``"db"``
    -> ``"new_db"``; unmapped items get the suffix ``_restored``.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown restore mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
    rename_to = dict(rename_to or {})
    if rename_to and mode != "side_by_side":
        raise ConfigError("rename_to is only used with mode: side_by_side",
                          hint="set mode: side_by_side to restore beside the originals")
    by_key = {f"{t['db']}.{t['table']}": t for t in meta["tables"]}
    backup_dbs = list(meta["databases"])
    whole: dict[str, str] = {}
    chosen: list[dict] = []
    if tables:
        for name in tables:
            db, table = parse_table_name(name)
            if f"{db}.{table}" not in by_key:
                raise NotFound(f"table {db}.{table} is not in backup set {set_id}",
                               hint=f"the set has: {', '.join(sorted(by_key)) or 'no tables'}")
            chosen.append(by_key[f"{db}.{table}"])
        if mode == "reinit_datadir":
            raise ConfigError("mode reinit_datadir restores the whole server; do not give tables")
    else:
        wanted = list(databases or backup_dbs)
        missing = [d for d in wanted if d not in backup_dbs]
        if missing:
            raise NotFound(f"database(s) {', '.join(missing)} not in backup set {set_id}",
                           hint=f"the set has: {', '.join(backup_dbs)}")
        for db in wanted:
            whole[db] = rename_to.get(db, db + "_restored") if mode == "side_by_side" else db
        chosen = [t for t in meta["tables"] if t["db"] in whole]
    plans = []
    for t in chosen:
        target_db, target_table = _target(t, whole, rename_to, mode)
        plans.append(TablePlan(dumpformat.TableSpec.from_dict(t), int(t["rows"]), t["checksum"], t["artifact"],
                               target_db, target_table, staging_name(target_db)))
    _check_unique_targets(plans)
    suffix = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S")  # noqa: UP017
    return RestorePlan(set_id, mode, whole, plans, include_users or mode == "reinit_datadir", suffix)


def _target(t: dict, whole: dict[str, str], rename_to: dict[str, str], mode: str) -> tuple[str, str]:
    key = f"{t['db']}.{t['table']}"
    if mode != "side_by_side":
        return t["db"], t["table"]
    if t["db"] in whole:
        return whole[t["db"]], t["table"]
    new = rename_to.get(key, t["table"] + "_restored")
    return parse_table_name(new, default_db=t["db"])


def _check_unique_targets(plans: list[TablePlan]) -> None:
    seen: set[tuple[str, str]] = set()
    for p in plans:
        if (p.target_db, p.target_table) in seen:
            raise ConfigError(f"two tables would be restored as {p.target_db}.{p.target_table}",
                              hint="give distinct rename_to names")
        seen.add((p.target_db, p.target_table))


def read_backup_metadata(backup_set: BackupSet) -> dict[str, Any]:
    """The mysql metadata of a set; NotFound if the set has no mysql component."""
    if dumpformat.COMPONENT not in getattr(backup_set, "components", [dumpformat.COMPONENT]):
        raise NotFound(f"set {backup_set.set_id} has no mysql component")
    meta = backup_set.read_json(dumpformat.COMPONENT, dumpformat.METADATA_JSON)
    if meta.get("format") not in (dumpformat.METADATA_FORMAT, dumpformat.TSV_METADATA_FORMAT):
        raise my.ConfigError(f"mysql metadata format {meta.get('format')!r} of set {backup_set.set_id} "
                             "is not readable by this version of Lifeboat")
    return meta


def read_artifact(backup_set: BackupSet, keyring: KeyRing, name: str) -> bytes:
    """A small artifact's whole plaintext (schema, objects, users)."""
    with backup_set.open_artifact(dumpformat.COMPONENT, name, keyring) as reader:
        return reader.read()


# --------------------------------------------------------------------------- loading
def iter_statements(reader: Any, bufsize: int = READ_BYTES) -> Iterator[bytes]:
    """Split a data artifact's plaintext into statements (each ends with ``;\\n``; see mysql_backup)."""
    buf = b""
    while True:
        chunk = reader.read(bufsize)
        if not chunk:
            break
        buf += chunk
        start = 0
        while True:
            end = buf.find(b";\n", start)
            if end < 0:
                break
            yield buf[start:end]
            start = end + 2
        buf = buf[start:]
    if any(line.strip() and not line.startswith(b"-- ") for line in buf.split(b"\n")):
        raise RestoreFailed("a data artifact ends inside a statement", hint="the set is damaged; use another set")


def session_setup(conn: Any, write_binlog: bool, flavor: my.Flavor) -> None:
    """Fast-load settings for a restore session (this session only)."""
    my.execute(conn, "SET SESSION foreign_key_checks = 0, unique_checks = 0,"
               " sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO')")
    if not write_binlog:
        my.execute(conn, "SET SESSION sql_log_bin = 0",
                   doing=f"disabling the binary log for the restore session (needs {flavor.skip_binlog_privilege})")


def load_table(conn: Any, plan: TablePlan, reader: Any, meter_add: Optional[Any] = None) -> int:
    """Run a table's INSERT statements into its staging table, committing every COMMIT_BYTES."""
    my.execute(conn, f"USE {my.quote_ident(plan.staging_db)}")
    since_commit = 0
    total = 0
    try:
        for stmt in iter_statements(reader):
            conn.query(stmt)
            since_commit += len(stmt)
            total += len(stmt)
            if meter_add:
                meter_add(len(stmt))
            if since_commit >= COMMIT_BYTES:
                conn.commit()
                since_commit = 0
        conn.commit()
    except LifeboatError:
        raise
    except Exception as err:
        raise _translate(err, f"loading {plan.spec.key} into {plan.staging_db}") from None
    return total


def verify_table(conn: Any, plan: TablePlan, db: Optional[str] = None, table: Optional[str] = None) -> dict:
    """Recompute count + checksum of a restored table; VerificationFailed naming it on a difference."""
    hasher = dumpformat.RowHasher(plan.spec.hash_mode)
    where = f"{db or plan.staging_db}.{table or plan.spec.table}"
    try:
        dumpformat.stream_table_rows(conn, dumpformat.row_select_sql(plan.spec, db=db or plan.staging_db, table=table),
                                     hasher.update)
        conn.commit()
    except Exception as err:
        raise _translate(err, f"verifying {where}") from None
    got = {"rows": hasher.rows, "checksum": hasher.hexdigest()}
    if got["rows"] != plan.rows or got["checksum"] != plan.checksum:
        raise VerificationFailed(
            f"restored table {where} (from {plan.spec.key}) differs from the backup: rows {got['rows']} vs "
            f"recorded {plan.rows}, checksum {'equal' if got['checksum'] == plan.checksum else 'different'}",
            hint="the live data was left untouched; check the server version/sql_mode or use another set")
    return got


def connect_for_load(params: my.ConnParams) -> Any:
    """A raw, non-autocommit connection like ``mysql.connect`` that may also run ``LOAD DATA LOCAL INFILE``.

    The client only ever sends the files named in statements Lifeboat itself builds
    (its own FIFOs); the server must allow ``local_infile`` (MariaDB's default).
    """
    my.require_pymysql()
    kwargs: dict[str, Any] = dict(
        host=params.host, port=params.port, user=params.user, password=params.password or "",
        unix_socket=params.unix_socket, connect_timeout=params.connect_timeout, charset="utf8mb4",
        autocommit=False, use_unicode=False, init_command=f"SET time_zone = '{SESSION_TIME_ZONE}'", local_infile=True,
        conv={k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)})
    if params.ca_cert:
        kwargs["ssl"] = {"ca": params.ca_cert, "check_hostname": bool(params.check_hostname)}
    try:
        return pymysql.connect(**kwargs)
    except pymysql.err.MySQLError as err:
        raise my.translate_error(err, f"connecting to {params.where}") from None


class _FifoFeeder:
    """Copies a decrypting artifact reader into a FIFO (a kernel pipe: no plaintext on disk) in a thread.

    Counts the LF bytes it passes (= rows of a tsv stream). ``error`` holds what
    stopped it early (a damaged artifact, or the reader side closing).
    """

    def __init__(self, reader: Any, path: str, meter_add: Optional[Any]) -> None:
        self.reader, self.path, self.meter_add = reader, path, meter_add
        self.rows = self.bytes = 0
        self.opened = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="mysql-fifo", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError as err:
            self.error = err
            self.opened.set()
            return
        self.opened.set()
        try:
            while True:
                chunk = self.reader.read(dumpformat.READ_CHUNK)
                if not chunk:
                    break
                self.rows += chunk.count(b"\n")
                write_all(fd, chunk)
                self.bytes += len(chunk)
                if self.meter_add:
                    self.meter_add(len(chunk))
        except BaseException as err:  # noqa: BLE001 - reported by finish()
            self.error = err
        finally:
            os.close(fd)

    def finish(self) -> None:
        """Wait for the copy to end; unblocks a writer whose reader never opened the FIFO."""
        if not self.opened.wait(0.05):
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
                self.opened.wait(5)
                os.close(fd)
            except OSError:
                pass
        self.thread.join()


def load_tsv_table(conn: Any, plan: TablePlan, reader: Any, work_dir: str, record: dict[str, Any],
                   meter_add: Optional[Any] = None) -> dict[str, Any]:
    """Load a ``tsv`` artifact with one ``LOAD DATA LOCAL INFILE`` fed through a FIFO; verify from the stream.

    Verified, with no read-back of the table: the artifact's plaintext sha256 (checked by
    the reader at its end) equals the recorded ``tsv-sha256``; the stream's LF count, the
    rows the server reports as inserted and the recorded row count are equal; the load
    raised no warning (a truncated, converted, duplicate or skipped value always warns).
    Raises VerificationFailed naming the table otherwise.
    """
    where = f"{plan.staging_db}.{plan.spec.table}"
    fifo = os.path.join(work_dir, f"load-{threading.get_ident()}.tsv")
    os.mkfifo(fifo, 0o600)
    try:
        feeder = _FifoFeeder(reader, fifo, meter_add)
        try:
            inserted = conn.query(dumpformat.tsv_load_sql(plan.spec, fifo, plan.staging_db))
            warnings = conn._result.warning_count if conn._result else 0
            first_warnings = my.query_all(conn, "SHOW WARNINGS LIMIT 3") if warnings else []
            conn.commit()
        except Exception as err:
            feeder.finish()
            raise _translate(err, f"loading {plan.spec.key} into {where}") from None
        feeder.finish()
    finally:
        os.unlink(fifo)
    if feeder.error is not None:
        raise _translate(feeder.error, f"reading the artifact of {plan.spec.key}")
    recorded_sha = plan.checksum.split(":", 1)[-1]
    problems = []
    if record.get("plaintext_sha256") and record["plaintext_sha256"] != recorded_sha:
        problems.append("the artifact's sha256 differs from the recorded checksum")
    if not feeder.rows == inserted == plan.rows:
        problems.append(f"{feeder.rows} rows in the stream, {inserted} inserted, {plan.rows} recorded")
    if warnings:
        problems.append(f"{warnings} warning(s) while loading, e.g. "
                        + "; ".join(dumpformat.text_of(w[2]) for w in first_warnings))
    if problems:
        raise VerificationFailed(f"restored table {where} (from {plan.spec.key}) differs from the backup: "
                                 + "; ".join(problems),
                                 hint="the live data was left untouched; check the server version/sql_mode "
                                      "or use another set")
    return {"rows": inserted, "checksum": plan.checksum, "verified_by": "stream"}


def _translate(err: BaseException, doing: str) -> LifeboatError:
    if isinstance(err, LifeboatError):
        return err
    if type(err).__module__.startswith("pymysql"):
        out = my.translate_error(err, doing)
        if out.__class__ is LifeboatError:  # generic: a restore failure; subclasses (auth...) kept
            return RestoreFailed(out.message, hint="the live data was left untouched")
        return out
    return RestoreFailed(f"{doing} failed: {type(err).__name__}: {err}")


def artifact_sizes(backup_set: BackupSet) -> dict[str, int]:
    """artifact name -> plaintext bytes (from the manifest)."""
    if not hasattr(backup_set, "artifacts"):
        return {}
    return {r["name"]: int(r.get("plaintext_size", 0)) for r in backup_set.artifacts(dumpformat.COMPONENT)}


@dataclass
class _LoadState:
    queue: list[TablePlan]
    results: dict[str, dict] = field(default_factory=dict)
    error: Optional[BaseException] = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: int = 0


def load_and_verify(backup_set: BackupSet, keyring: KeyRing, params: my.ConnParams, flavor: my.Flavor,
                    plans: list[TablePlan], parallel: int, write_binlog: bool,
                    progress: Optional[ProgressFn]) -> dict[str, dict]:
    """Load every table into staging and verify it; ``parallel`` connections, biggest tables first."""
    sizes = artifact_sizes(backup_set)
    state = _LoadState(queue=sorted(plans, key=lambda p: -sizes.get(p.artifact, 0)))
    meter = ProgressMeter("mysql restore", progress, sum(sizes.get(p.artifact, 0) for p in plans) or None)
    n = max(1, min(parallel, len(plans)))
    uses_tsv = any(p.spec.method == "tsv" for p in plans)
    conns = [connect_for_load(params) if uses_tsv else my.connect(params, raw=True, autocommit=False)
             for _conn_no in range(n)]
    rundirs.remove_dead_owned_tmpdirs(LOAD_DIR_PREFIX)  # what restores killed mid-way left behind
    work_dir = rundirs.make_owned_tmpdir(LOAD_DIR_PREFIX)  # 0700: holds only the FIFOs
    try:
        for conn in conns:
            session_setup(conn, write_binlog, flavor)
        threads = [threading.Thread(target=_load_worker, args=(backup_set, keyring, c, state, meter, work_dir),
                                    daemon=True, name=f"mysql-load-{i}") for i, c in enumerate(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for conn in conns:
            dumpformat.close_quietly(conn)
        shutil.rmtree(work_dir, ignore_errors=True)
    if state.error is not None:
        raise state.error
    meter.finish()
    return state.results


def _artifact_record(backup_set: BackupSet, plan: TablePlan) -> dict[str, Any]:
    if not hasattr(backup_set, "artifact_record"):
        return {}
    return backup_set.artifact_record(dumpformat.COMPONENT, plan.artifact)


def _load_worker(backup_set: BackupSet, keyring: KeyRing, conn: Any, state: _LoadState, meter: ProgressMeter,
                 work_dir: str) -> None:
    def add(n: int) -> None:
        with state.lock:
            state.done += n
            meter.update(state.done)

    while True:
        with state.lock:
            if state.error is not None or not state.queue:
                return
            plan = state.queue.pop(0)
        set_step(f"table {plan.spec.key}")
        try:
            with backup_set.open_artifact(dumpformat.COMPONENT, plan.artifact, keyring) as reader:
                if plan.spec.method == "tsv":
                    result = load_tsv_table(conn, plan, reader, work_dir, _artifact_record(backup_set, plan), add)
                else:
                    load_table(conn, plan, reader, add)
            if plan.deferred_keys:  # sorted index build after the load: much faster than row by row
                my.execute(conn, f"ALTER TABLE {my.qualified(plan.staging_db, plan.spec.table)} "
                           + ", ".join("ADD " + k for k in plan.deferred_keys),
                           doing=f"building the secondary indexes of {plan.spec.key}")
            if plan.spec.method != "tsv":
                result = verify_table(conn, plan)
            with state.lock:
                state.results[plan.spec.key] = result
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            with state.lock:
                if state.error is None:
                    state.error = _translate(err, f"restoring {plan.spec.key}")
            return


# --------------------------------------------------------------------------- DDL
def create_database_sql(create_stmt: str, new_name: str) -> str:
    """Re-target a ``CREATE DATABASE IF NOT EXISTS `x` <options>`` statement to ``new_name``."""
    m = re.match(r"CREATE DATABASE (?:IF NOT EXISTS )?(`(?:[^`]|``)+`)(.*)$", create_stmt, re.S)
    options = m.group(2) if m else ""
    return f"CREATE DATABASE IF NOT EXISTS {my.quote_ident(new_name)}{options}"


def strip_foreign_keys(create_table: str) -> str:
    """Remove ``CONSTRAINT ... FOREIGN KEY`` lines from SHOW CREATE TABLE output."""
    lines = create_table.split("\n")
    kept = [line for line in lines if not re.match(r"\s*(CONSTRAINT\s+`(?:[^`]|``)+`\s+)?FOREIGN KEY", line)]
    for i in range(len(kept) - 1, 0, -1):  # the last column/key line before ")" loses its comma
        if kept[i].startswith(")"):
            kept[i - 1] = kept[i - 1].rstrip().rstrip(",")
            break
    return "\n".join(kept)


DEFER_INDEX_BYTES = 4 << 20  # tables whose data artifact is bigger get secondary indexes after the load
_KEY_LINE = re.compile(r"^\s*(UNIQUE )?KEY `(?:[^`]|``)+` \(.*\),?$")


def split_secondary_keys(create_table: str) -> tuple[str, list[str]]:
    """(DDL without plain/UNIQUE secondary keys, the key definitions) for building them after the load.

    Tables with FOREIGN KEYs (which need their indexes) and FULLTEXT/SPATIAL keys are left whole.
    """
    lines = create_table.split("\n")
    if any("FOREIGN KEY" in line for line in lines):
        return create_table, []
    keys = [line.strip().rstrip(",") for line in lines if _KEY_LINE.match(line)]
    if not keys:
        return create_table, []
    kept = [line for line in lines if not _KEY_LINE.match(line)]
    for i in range(len(kept) - 1, 0, -1):
        if kept[i].startswith(")"):
            kept[i - 1] = kept[i - 1].rstrip().rstrip(",")
            break
    return "\n".join(kept), keys


_FK_RE = re.compile(r"FOREIGN KEY \(((?:`(?:[^`]|``)+`(?:, )?)+)\) REFERENCES "
                    r"(`(?:[^`]|``)+`)(?:\.(`(?:[^`]|``)+`))? \(((?:`(?:[^`]|``)+`(?:, )?)+)\)")
_IDENT_RE = re.compile(r"`((?:[^`]|``)+)`")


def _idents(text: str) -> list[str]:
    return [m.group(1).replace("``", "`") for m in _IDENT_RE.finditer(text)]


def foreign_keys(create_table: str, own_db: str) -> list[dict[str, Any]]:
    """The FOREIGN KEYs of a SHOW CREATE TABLE statement: columns, referenced db (``own_db``
    when the reference is unqualified), referenced table and columns."""
    out = []
    for m in _FK_RE.finditer(create_table):
        db, table = (_idents(m.group(2))[0], _idents(m.group(3))[0]) if m.group(3) else (own_db, _idents(m.group(2))[0])
        out.append({"columns": _idents(m.group(1)), "db": db, "table": table, "ref_columns": _idents(m.group(4))})
    return out


def qualify_foreign_keys(create_table: str, restored: set[str], target_db: str) -> str:
    """Point the unqualified FOREIGN KEY references of a table restored WITHOUT its parent at the
    live parent (``target_db``.parent): created in the staging schema, an unqualified reference
    would name a staging table that does not exist and stay so after the swap. References to
    tables in ``restored`` (restored with it, moved in by the same RENAME) stay unqualified."""
    def fix(m: re.Match) -> str:
        if m.group(3) or _idents(m.group(2))[0] in restored:
            return m.group(0)
        return m.group(0).replace(f" REFERENCES {m.group(2)} (", f" REFERENCES {my.quote_ident(target_db)}."
                                  f"{m.group(2)} (", 1)
    return _FK_RE.sub(fix, create_table)


def check_live_references(control: Any, plan: RestorePlan) -> None:
    """ConfigError (before anything is created) when an in-place restore of only some tables would
    leave a live table's FOREIGN KEY pointing at a table being replaced: RENAME TABLE moves the
    reference with the live table into ``<db>__lbprev_*``, and its rows may name rows the
    restored table has not. Whole databases move all their tables together."""
    partial = [t for t in plan.tables if t.target_db not in plan.whole_databases.values()]
    if plan.mode == "side_by_side" or not partial:
        return
    replaced = {(t.target_db, t.target_table) for t in plan.tables}
    problems = []
    for t in partial:
        rows = my.query_all(control, "SELECT DISTINCT TABLE_SCHEMA, TABLE_NAME, CONSTRAINT_NAME FROM "
                            "information_schema.KEY_COLUMN_USAGE WHERE REFERENCED_TABLE_SCHEMA=%s AND "
                            "REFERENCED_TABLE_NAME=%s", (t.target_db, t.target_table))
        problems += [f"{db}.{table} references {t.target_db}.{t.target_table} ({name})"
                     for db, table, name in rows if (db, table) not in replaced]
    if problems:
        names = sorted({p.split(" references ")[0] for p in problems})
        raise ConfigError(
            "an in-place table restore would leave live foreign keys pointing at the tables kept aside: "
            + "; ".join(sorted(problems)),
            hint=f"restore the referencing tables with them (tables: add {', '.join(names)}), or restore "
                 "beside the originals (rename_to / mode side_by_side); nothing was changed")


def check_parent_rows(control: Any, plan: RestorePlan) -> None:
    """VerificationFailed (before the swap; the staging schemas are then dropped) when a staged
    table restored without its parent holds rows whose FOREIGN KEY names no live parent row:
    swapped in, they would break the constraint (the load runs with foreign_key_checks=0)."""
    if plan.mode == "side_by_side":
        return
    for t in plan.tables:
        if t.target_db in plan.whole_databases.values():
            continue  # a whole database: its references are as they were at backup time
        ddl = my.query_all(control, f"SHOW CREATE TABLE {my.qualified(t.staging_db, t.spec.table)}")[0][1]
        for fk in foreign_keys(ddl, t.staging_db):
            if fk["db"] == t.staging_db:
                continue  # restored with it
            cols, refs = fk["columns"], fk["ref_columns"]
            child = " AND ".join(f"c.{my.quote_ident(c)} IS NOT NULL" for c in cols)
            match = " AND ".join(f"p.{my.quote_ident(r)} = c.{my.quote_ident(c)}" for c, r in zip(cols, refs,
                                                                                                  strict=True))
            orphans = my.query_all(control, f"SELECT COUNT(*) FROM {my.qualified(t.staging_db, t.spec.table)} c "
                                   f"WHERE {child} AND NOT EXISTS (SELECT 1 FROM "
                                   f"{my.qualified(fk['db'], fk['table'])} p WHERE {match})")[0][0]
            if orphans:
                raise VerificationFailed(
                    f"{orphans} restored row(s) of {t.target_db}.{t.target_table} reference rows of "
                    f"{fk['db']}.{fk['table']} ({', '.join(cols)} -> {', '.join(refs)}) that the live table no "
                    "longer has; nothing was swapped in",
                    hint=f"restore {fk['db']}.{fk['table']} with it (tables), or restore beside the original "
                         "(rename_to) and copy the rows you need")


def create_staging(control: Any, plan: RestorePlan, sizes: Optional[dict[str, int]] = None) -> None:
    """Drop leftovers of earlier runs, create staging schemas and (empty) tables."""
    db_stmt = {h["db"]: s for h, s in plan.schema if h["kind"] == "database"}
    table_stmt = {(h["db"], h["name"]): s for h, s in plan.schema if h["kind"] == "table"}
    for staging, source_db in sorted({(t.staging_db, t.spec.db) for t in plan.tables}):
        my.execute(control, f"DROP DATABASE IF EXISTS {my.quote_ident(staging)}")
        my.execute(control, create_database_sql(db_stmt.get(source_db, ""), staging),
                   doing=f"creating the staging schema {staging}")
    my.execute(control, "SET SESSION foreign_key_checks = 0")
    restored = {(t.spec.db, t.spec.table) for t in plan.tables}
    for t in plan.tables:
        ddl = table_stmt[(t.spec.db, t.spec.table)]
        if plan.mode == "side_by_side":
            ddl = strip_foreign_keys(ddl)
        else:
            ddl = qualify_foreign_keys(ddl, {tb for db, tb in restored if db == t.spec.db}, t.target_db)
        if (sizes or {}).get(t.artifact, 0) > DEFER_INDEX_BYTES:
            ddl, t.deferred_keys = split_secondary_keys(ddl)
        my.execute(control, f"USE {my.quote_ident(t.staging_db)}")
        my.execute(control, ddl, doing=f"creating {t.staging_db}.{t.spec.table}")


def drop_staging(control: Any, plan: RestorePlan) -> None:
    """Remove staging schemas (only ever Lifeboat's own ``__lbrestore`` ones)."""
    for staging in sorted({t.staging_db for t in plan.tables}):
        try:
            my.execute(control, f"DROP DATABASE IF EXISTS {my.quote_ident(staging)}")
        except LifeboatError as err:
            log.warning("could not drop staging schema %s: %s", staging, err)


def existing_tables(control: Any, db: str) -> dict[str, str]:
    """name -> TABLE_TYPE of the live schema ``db``."""
    rows = my.query_all(control, "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA=%s",
                        (db,))
    return {r[0]: r[1] for r in rows}


def live_objects(control: Any, db: str, tables: Optional[set[str]] = None) -> list[tuple[str, str, str]]:
    """(kind, name, CREATE statement) of the live triggers (of ``tables``, or all), and when ``tables``
    is None also the views, routines and events of ``db``."""
    out: list[tuple[str, str, str]] = []
    for name, table in my.query_all(control, "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS"
                                    " WHERE TRIGGER_SCHEMA=%s", (db,)):
        if tables is None or table in tables:
            out.append(("trigger", name, my.query_all(control, f"SHOW CREATE TRIGGER {my.qualified(db, name)}")[0][2]))
    if tables is not None:
        return out
    for (name,) in my.query_all(control, "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA=%s",
                                (db,)):
        out.append(("view", name, my.query_all(control, f"SHOW CREATE VIEW {my.qualified(db, name)}")[0][1]))
    for name, rtype in my.query_all(control, "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES"
                                    " WHERE ROUTINE_SCHEMA=%s", (db,)):
        out.append((rtype.lower(), name, my.query_all(control, f"SHOW CREATE {rtype} {my.qualified(db, name)}")[0][2]))
    for (name,) in my.query_all(control, "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA=%s",
                                (db,)):
        out.append(("event", name, my.query_all(control, f"SHOW CREATE EVENT {my.qualified(db, name)}")[0][3]))
    return out


def drop_object_sql(db: str, kind: str, name: str) -> str:
    return f"DROP {kind.upper()} IF EXISTS {my.qualified(db, name)}"


def save_objects(control: Any, prev_db: str, objects: list[tuple[str, str, str]]) -> None:
    """Keep the definitions of live objects about to be dropped in ``prev_db``.``_lifeboat_saved_objects``."""
    if not objects:
        return
    table = my.qualified(prev_db, SAVED_OBJECTS_TABLE)
    my.execute(control, f"CREATE TABLE IF NOT EXISTS {table} (kind VARCHAR(16) NOT NULL, name VARCHAR(64) NOT NULL,"
               " create_sql LONGTEXT NOT NULL, PRIMARY KEY (kind, name)) DEFAULT CHARSET=utf8mb4")
    for kind, name, sql in objects:
        my.execute(control, f"REPLACE INTO {table} VALUES (%s, %s, %s)", (kind, name, sql))


def create_objects(control: Any, blocks: list[tuple[dict, str]], source_db: str, target_db: str,
                   tables: Optional[set[str]] = None, with_events: bool = True) -> dict[str, int]:
    """Create the backed-up views/routines/triggers/events of ``source_db`` in ``target_db``.

    ``tables`` limits to triggers of those tables (single-table restore). Views are
    created in dependency order (retried until no progress). Returns counts by kind.
    """
    counts: dict[str, int] = {}
    mine = [(h, s) for h, s in blocks if h["db"] == source_db]
    if tables is not None:
        mine = [(h, s) for h, s in mine if h["kind"] == "trigger" and h.get("table") in tables]
    if not with_events:
        mine = [(h, s) for h, s in mine if h["kind"] != "event"]
    my.execute(control, f"USE {my.quote_ident(target_db)}")
    views = [(h, _retarget_view(s, source_db, target_db)) for h, s in mine if h["kind"] == "view"]
    _create_views(control, views, counts)
    for kind in ("function", "procedure", "trigger", "event"):
        for header, stmt in mine:
            if header["kind"] != kind:
                continue
            my.execute(control, "SET SESSION sql_mode = %s", (header.get("sql_mode", ""),))
            if header.get("charset"):
                my.execute(control, f"SET NAMES {header['charset']}")
            if kind == "event":  # an event keeps the time zone of the session that created it
                my.execute(control, "SET SESSION time_zone = %s", (header.get("time_zone") or SESSION_TIME_ZONE,))
            my.execute(control, stmt, doing=f"creating {kind} {target_db}.{header['name']}")
            counts[kind] = counts.get(kind, 0) + 1
    my.execute(control, "SET NAMES utf8mb4")
    my.execute(control, "SET SESSION sql_mode = DEFAULT")
    my.execute(control, "SET SESSION time_zone = %s", (SESSION_TIME_ZONE,))
    return counts


def _retarget_view(stmt: str, source_db: str, target_db: str) -> str:
    if source_db == target_db:
        return stmt
    return stmt.replace(my.quote_ident(source_db) + ".", my.quote_ident(target_db) + ".")


def _create_views(control: Any, views: list[tuple[dict, str]], counts: dict[str, int]) -> None:
    pending = list(views)
    while pending:
        failed: list[tuple[dict, str]] = []
        last_error: Optional[LifeboatError] = None
        for header, stmt in pending:
            try:
                my.execute(control, stmt, doing=f"creating view {header['name']}")
                counts["view"] = counts.get("view", 0) + 1
            except LifeboatError as err:
                failed.append((header, stmt))
                last_error = err
        if len(failed) == len(pending):
            raise RestoreFailed(f"cannot create view(s) {', '.join(h['name'] for h, _stmt in failed)}: {last_error}")
        pending = failed


def swap_in(control: Any, plan: RestorePlan) -> dict[str, Any]:
    """``in_place_swap``: live tables aside into ``<db>__lbprev_<time>``, staged ones in (one RENAME TABLE)."""
    pairs: list[str] = []
    kept: dict[str, list[str]] = {}
    saved: dict[str, list[tuple[str, str, str]]] = {}
    by_db: dict[str, list[TablePlan]] = {}
    for t in plan.tables:
        by_db.setdefault(t.target_db, []).append(t)
    db_stmt = {h["db"]: s for h, s in plan.schema if h["kind"] == "database"}
    plan.prev_suffix = _free_prev_suffix(control, list(by_db), plan.prev_suffix)
    for db, tables in sorted(by_db.items()):
        prev = prev_name(db, plan.prev_suffix)
        my.execute(control, create_database_sql(db_stmt.get(tables[0].spec.db, ""), db))
        live = existing_tables(control, db)
        whole = db in plan.whole_databases.values()
        restored = {t.target_table for t in tables}
        objects = live_objects(control, db, None if whole else restored)
        move = sorted(name for name, kind in live.items() if kind != "VIEW" and (whole or name in restored))
        if move or objects:
            my.execute(control, f"CREATE DATABASE IF NOT EXISTS {my.quote_ident(prev)}")
            save_objects(control, prev, objects)
            kept[prev] = move
            saved[prev] = objects
        pairs += [f"{my.qualified(db, name)} TO {my.qualified(prev, name)}" for name in move]
        pairs += [f"{my.qualified(t.staging_db, t.spec.table)} TO {my.qualified(db, t.target_table)}" for t in tables]
    for prev, objects in saved.items():
        db = next(db for db in by_db if prev_name(db, plan.prev_suffix) == prev)
        for kind, name, _sql in objects:
            my.execute(control, drop_object_sql(db, kind, name), doing=f"dropping live {kind} {db}.{name}")
    try:
        if pairs:  # a set whose databases hold no table has nothing to swap (RENAME TABLE needs a pair)
            my.execute(control, "RENAME TABLE " + ", ".join(pairs),
                       doing="swapping the restored tables in (RENAME TABLE)")
    except LifeboatError:
        _put_back_objects(control, saved, by_db, plan.prev_suffix)
        raise
    for db in by_db:
        if db not in plan.whole_databases.values() and prev_name(db, plan.prev_suffix) in kept:
            release_kept_references(control, prev_name(db, plan.prev_suffix))
    return {"kept_aside": dict(kept),
            "saved_objects": {k: [f"{kind} {name}" for kind, name, _sql in v] for k, v in saved.items() if v}}


def release_kept_references(control: Any, prev: str) -> None:
    """Drop the FOREIGN KEYs by which tables kept aside in ``prev`` (after a restore of some tables)
    still reference live tables: they would go on restricting the live server (e.g. refuse the
    DELETE of a live parent row). Each table's definition before is kept in
    ``prev``.``_lifeboat_saved_objects`` (kind ``table``)."""
    rows = my.query_all(control, "SELECT DISTINCT TABLE_NAME, CONSTRAINT_NAME FROM information_schema.KEY_COLUMN_USAGE "
                        "WHERE TABLE_SCHEMA=%s AND REFERENCED_TABLE_NAME IS NOT NULL AND REFERENCED_TABLE_SCHEMA<>%s",
                        (prev, prev))
    by_table: dict[str, list[str]] = {}
    for table, name in rows:
        by_table.setdefault(table, []).append(name)
    for table, names in sorted(by_table.items()):
        ddl = my.query_all(control, f"SHOW CREATE TABLE {my.qualified(prev, table)}")[0][1]
        save_objects(control, prev, [("table", table, ddl)])
        my.execute(control, f"ALTER TABLE {my.qualified(prev, table)} "
                   + ", ".join(f"DROP FOREIGN KEY {my.quote_ident(n)}" for n in sorted(names)),
                   doing=f"releasing the live references of the kept-aside {prev}.{table}")


def _free_prev_suffix(control: Any, dbs: list[str], suffix: str) -> str:
    """``suffix``, or ``suffix_N``, such that no ``<db>__lbprev_<suffix>`` exists yet (never reuse one)."""
    existing = {r[0] for r in my.query_all(control, "SHOW DATABASES")}
    candidate, n = suffix, 1
    while any(prev_name(db, candidate) in existing for db in dbs):
        n += 1
        candidate = f"{suffix}_{n}"
    return candidate


def _put_back_objects(control: Any, saved: dict[str, list[tuple[str, str, str]]], by_db: dict[str, Any],
                      suffix: str) -> None:
    """Best effort after a failed swap: recreate the live objects dropped for it."""
    for prev, objects in saved.items():
        db = next(db for db in by_db if prev_name(db, suffix) == prev)
        for kind, name, sql in objects:
            try:
                my.execute(control, f"USE {my.quote_ident(db)}")
                my.execute(control, sql)
            except LifeboatError as err:
                log.error("could not recreate live %s %s.%s after a failed swap (definition kept in %s.%s): %s",
                          kind, db, name, prev, SAVED_OBJECTS_TABLE, err)


def check_side_by_side_targets(control: Any, plan: RestorePlan) -> None:
    """ConfigError if any side_by_side target table already exists (checked before anything is created)."""
    for t in plan.tables:
        if t.target_table in existing_tables(control, t.target_db):
            raise ConfigError(f"{t.target_db}.{t.target_table} already exists; side_by_side never overwrites",
                              hint="choose another name with rename_to, or drop it first")


def place_side_by_side(control: Any, plan: RestorePlan) -> None:
    """``side_by_side``: rename staged tables to their new names; refuse to overwrite anything."""
    db_stmt = {h["db"]: s for h, s in plan.schema if h["kind"] == "database"}
    check_side_by_side_targets(control, plan)
    for t in plan.tables:
        my.execute(control, create_database_sql(db_stmt.get(t.spec.db, ""), t.target_db))
    pairs = [f"{my.qualified(t.staging_db, t.spec.table)} TO {my.qualified(t.target_db, t.target_table)}"
             for t in plan.tables]
    my.execute(control, "RENAME TABLE " + ", ".join(pairs), doing="placing the restored tables (RENAME TABLE)")


# --------------------------------------------------------------------------- users
_CREATE_ACCOUNT = re.compile(rb"^([ \t]*CREATE[ \t]+)(USER|ROLE)([ \t]+)(?!IF[ \t]+NOT[ \t]+EXISTS\b)",
                             re.IGNORECASE | re.MULTILINE)


def idempotent_users_sql(sql: bytes) -> bytes:
    """The users artifact with every ``CREATE USER``/``CREATE ROLE`` made ``... IF NOT EXISTS``.

    ``mariadb-dump --system=users`` writes plain ``CREATE USER`` for every account,
    including those a fresh datadir (``mariadb-install-db``) already has --
    ``mariadb.sys@localhost``, ``root@localhost``, ``mysql@localhost`` -- and those that
    still exist on a live server; plain CREATE fails on them. With ``IF NOT EXISTS``
    an existing account is kept and the artifact's ``GRANT`` statements that follow
    still apply: on MariaDB they carry the authentication (``IDENTIFIED BY PASSWORD``/
    ``VIA``), so every account ends up with the backup's authentication and at least
    the backup's privileges. Privileges an existing account has beyond the backup's
    are not revoked (a fresh datadir's built-in accounts have exactly the defaults).
    ``CREATE OR REPLACE`` and statements already saying ``IF NOT EXISTS`` are left as
    they are. Only lines starting with the statement are changed (one statement per
    line, as the dump and :func:`mysql_backup.users_sql_from_grants` write them).
    """
    return _CREATE_ACCOUNT.sub(rb"\1\2 IF NOT EXISTS\3", sql)


_OBJECT_GRANT = re.compile(
    rb"^[ \t]*GRANT\b.*?\bON[ \t]+(?:(?:PROCEDURE|FUNCTION|PACKAGE(?:[ \t]+BODY)?)[ \t]|"
    rb"`(?:[^`]|``)*`\.`(?:[^`]|``)*`[ \t]+TO[ \t])", re.IGNORECASE)


def split_users_sql(sql: bytes) -> tuple[bytes, bytes]:
    """(accounts, object grants): the users artifact in two parts, run before and after the data.

    The second part holds the ``GRANT ... ON `db`.`table``` (table/column privileges)
    and ``GRANT ... ON PROCEDURE|FUNCTION|PACKAGE`` lines: the server refuses them
    while the table or routine does not exist yet (a fresh datadir). Everything
    else -- accounts, roles, global and database grants, role grants, default roles,
    the dump's session set-up -- is in the first part, in its original order. Lines
    are classified one by one (the dump writes one statement per line).
    """
    accounts: list[bytes] = []
    objects: list[bytes] = []
    for line in sql.splitlines(keepends=True):
        (objects if _OBJECT_GRANT.match(line) else accounts).append(line)
    return b"".join(accounts), b"".join(objects)


def restore_users(params: my.ConnParams, flavor: my.Flavor, sql: bytes, write_binlog: bool = True) -> None:
    """Run the users artifact (CREATE USER/GRANT statements) through the command line client.

    The statements go through :func:`idempotent_users_sql` first, so accounts that
    already exist (a fresh datadir's built-in ones, or live ones) do not fail the run.
    """
    with my.option_file(params) as cnf:
        argv = my.tool_argv(flavor.client_tool, cnf, "--batch")
        prefix = b"" if write_binlog else b"SET SESSION sql_log_bin = 0;\n"
        proc = subprocess.run(argv, input=prefix + idempotent_users_sql(sql), capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise dumpformat.tool_failure("restoring users and grants", argv[0], proc.returncode, err)


# --------------------------------------------------------------------------- reinit datadir
def reinit_datadir(datadir: str, service: Any, *, install_db: str = "mariadb-install-db",
                   now: Optional[datetime] = None) -> str:
    """Stop the server, move ``datadir`` aside (kept), initialise a fresh one, start the server.

    Returns the path the old datadir was moved to. The fresh datadir has only
    ``root@localhost`` (unix socket authentication).
    """
    path = Path(datadir)
    if not path.is_absolute():
        raise ConfigError("datadir must be an absolute path")
    try:
        service.stop()
    except LifeboatError as err:
        log.warning("stopping the MySQL service failed (%s); continuing, the datadir is moved aside", err)
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")  # noqa: UP017 (as fresh_server.yml)
    aside = path.with_name(f"{path.name}.lbbroken_{stamp}")
    owner = path.stat().st_uid if path.exists() else os.getuid()
    if path.exists():
        os.rename(path, aside)
    path.mkdir(mode=0o750)
    os.chown(path, owner, -1)
    tool = shutil.which(install_db) or install_db
    argv = [tool, "--no-defaults", f"--datadir={path}", "--auth-root-authentication-method=socket",
            "--skip-test-db"]
    if os.geteuid() == 0:
        import pwd

        argv.append(f"--user={pwd.getpwuid(owner).pw_name}")
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RestoreFailed(f"{install_db} failed (exit {proc.returncode}): "
                            f"{proc.stderr.decode('utf-8', 'replace')[-400:]}",
                            hint=f"the old datadir is kept at {aside}")
    log.info("mysql: datadir %s moved aside to %s; a fresh one was initialised", path, aside)
    service.start()
    return str(aside)


def wait_for_login(params: my.ConnParams, timeout_s: float = 120.0, interval_s: float = 0.5) -> float:
    """Retry logging in with ``params`` until it works; return the seconds waited.

    Tries at least once; after ``timeout_s`` seconds (monotonic) the last connection
    error is raised. Used after a (re)start: a service manager may report "started"
    before the server accepts connections.
    """
    started = time.monotonic()
    while True:
        try:
            my.connect(params).close()
            return time.monotonic() - started
        except LifeboatError:
            if time.monotonic() - started + interval_s > timeout_s:
                raise
        time.sleep(interval_s)


# --------------------------------------------------------------------------- run
def plan_restore(backup_set: BackupSet, **options: Any) -> RestorePlan:
    """The plan for ``restore_mysql_from(backup_set, ..., **options)`` (no server access)."""
    meta = read_backup_metadata(backup_set)
    keys = ("databases", "tables", "rename_to", "mode", "include_users")
    return build_plan(meta, backup_set.set_id, **{k: options[k] for k in keys if k in options})


def restore_mysql_from(backup_set: BackupSet, keyring: KeyRing, params: my.ConnParams, *,
                       databases: Optional[Sequence[str]] = None, tables: Optional[Sequence[str]] = None,
                       rename_to: Optional[dict[str, str]] = None, mode: str = "in_place_swap",
                       include_users: bool = False, parallel: int = 2, write_binlog: bool = True,
                       service: Any = None, datadir: Optional[str] = None, root_socket: Optional[str] = None,
                       start_timeout_s: float = 120.0, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Restore (part of) the ``mysql`` component of ``backup_set`` into the server ``params`` reaches.

    See the module docstring for the modes. ``reinit_datadir`` needs ``service``
    (service.get_service(...)), ``datadir`` and ``root_socket`` (the server's unix
    socket, used as OS root to restore the users first; the fresh server must accept
    that login within ``start_timeout_s`` seconds of the service start). It returns
    ``broken_datadir_kept_at`` too. Returns the plan plus
    ``verified`` (table -> rows/checksum), ``objects`` (counts), ``kept_aside`` and
    ``duration_s``. Raises VerificationFailed / RestoreFailed / connection errors;
    before the swap nothing live has changed.
    """
    started = time.monotonic()
    meta = read_backup_metadata(backup_set)
    plan = build_plan(meta, backup_set.set_id, databases=databases, tables=tables, rename_to=rename_to,
                      mode=mode, include_users=include_users)
    plan.schema = dumpformat.parse_blocks(read_artifact(backup_set, keyring, dumpformat.SCHEMA_ARTIFACT))
    plan.objects = dumpformat.parse_blocks(read_artifact(backup_set, keyring, dumpformat.OBJECTS_ARTIFACT))
    result: dict[str, Any] = {"plan": plan.describe()}
    account_sql, grants_after, users_as = b"", b"", params  # users: accounts before the data, object grants after
    if mode == "reinit_datadir":
        if service is None or not datadir or not root_socket:
            raise ConfigError("mode reinit_datadir needs service, datadir and root_socket")
        users_sql = _users_sql(backup_set, keyring, meta)  # before anything is stopped: the set must have users
        result["broken_datadir_kept_at"] = reinit_datadir(datadir, service)
        root = my.ConnParams(user="root", unix_socket=root_socket, connect_timeout=params.connect_timeout)
        wait_for_login(root, start_timeout_s)
        conn = my.connect(root)
        try:
            flavor = my.detect_flavor(conn)
        finally:
            conn.close()
        account_sql, grants_after = split_users_sql(users_sql)
        restore_users(root, flavor, account_sql, write_binlog)
        users_as = root
    elif plan.include_users:
        account_sql, grants_after = split_users_sql(_users_sql(backup_set, keyring, meta))
        users_as = params
    control = my.connect(params)
    try:
        flavor = my.detect_flavor(control)
        if not write_binlog:
            session_setup(control, write_binlog, flavor)
        if mode == "side_by_side":
            check_side_by_side_targets(control, plan)
        else:
            check_live_references(control, plan)
        if plan.include_users and mode != "reinit_datadir":
            restore_users(params, flavor, account_sql, write_binlog)
        create_staging(control, plan, artifact_sizes(backup_set))
        try:
            result["verified"] = load_and_verify(backup_set, keyring, params, flavor, plan.tables, parallel,
                                                 write_binlog, progress)
            check_parent_rows(control, plan)
            if mode == "side_by_side":
                place_side_by_side(control, plan)
            else:
                result.update(swap_in(control, plan))
        finally:
            drop_staging(control, plan)
        result["objects"] = _recreate_objects(control, plan)
        if plan.include_users and grants_after.strip():
            restore_users(users_as, flavor, grants_after, write_binlog)
    finally:
        dumpformat.close_quietly(control)
    result["duration_s"] = round(time.monotonic() - started, 3)
    result["binlog_position"] = meta.get("binlog_position")
    return result


def _users_sql(backup_set: BackupSet, keyring: KeyRing, meta: dict[str, Any]) -> bytes:
    if not meta.get("users_artifact"):
        raise NotFound(f"set {backup_set.set_id} has no users artifact (backup taken with include_users: false)")
    return read_artifact(backup_set, keyring, meta["users_artifact"])


def _recreate_objects(control: Any, plan: RestorePlan) -> dict[str, int]:
    """After the swap: objects of whole databases; triggers of single in-place tables."""
    counts: dict[str, int] = {}
    try:
        if plan.whole_databases:
            for source, target in plan.whole_databases.items():
                c = create_objects(control, plan.objects, source, target,
                                   with_events=plan.mode != "side_by_side")
                for k, v in c.items():
                    counts[k] = counts.get(k, 0) + v
        elif plan.mode != "side_by_side":
            by_db: dict[str, set[str]] = {}
            for t in plan.tables:
                by_db.setdefault(t.spec.db, set()).add(t.spec.table)
            for db, names in by_db.items():
                for k, v in create_objects(control, plan.objects, db, db, tables=names).items():
                    counts[k] = counts.get(k, 0) + v
    except LifeboatError as err:
        raise RestoreFailed(f"tables were restored and swapped in, but recreating objects failed: {err}",
                            hint="the previous tables and saved object definitions are in the *__lbprev_* schema"
                            ) from None
    return counts


def open_backup_set(store_root: str, backup_id: Optional[str] = None) -> Any:
    """The named set, or the newest complete set holding a mysql component (NotFound if none)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

    store = Store(store_root)
    if backup_id:
        return store.open_set(backup_id)
    found = store.latest_set(component=dumpformat.COMPONENT)
    if found is None:
        raise NotFound(f"no complete backup set with a mysql component in {store_root}",
                       hint="run lifeboat.dr.mysql_backup first, or give backup_id")
    return found
