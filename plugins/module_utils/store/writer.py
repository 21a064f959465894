# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writing a backup set (:class:`SetWriter`): artifacts, metadata, the manifest and the atomic publish.

A set is built in ``<store>/.partial/<set_id>/`` and renamed into place only after every
file and the manifest are written and fsynced (files, folders, parents). The rename is the
commit point: a run killed at any moment leaves either nothing under the store's set
folders or a complete set. Files are created 0600, folders 0700. A set written by several
processes (steps of a run) is detached between steps under a lease.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.store import locks, runstatus
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import (
    LEASE_FILE,
    LOCK_DIR,
    MAIN_WRITER,
    METADATA_COMPONENT,
    STATE_DIR,
    check_relative,
    format_time,
    parse_time,
    utc_now,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import (
    FORMAT_VERSION,
    MAC_ALGORITHM,
    MANIFEST_NAME,
    Manifest,
    json_bytes,
    manifest_mac,
    plain_json_copy,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.verification import (
    pipeline_module,
    verification_report,
    verify_artifact_file,
    verify_records,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    BackupFailed,
    ConfigError,
    LifeboatError,
    VerificationFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import (
    fsync_dir,
    make_private_dirs,
    write_file_atomic,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    ProgressFn,
    get_logger,
    human_bytes,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.version import TOOL_NAME, __version__

RESUME_WAIT_S = 5.0


# A resumed writer (a step of a multi-process run) renews its set's lease this often while it works.
RENEW_EVERY_S = 60.0


# A detached set's lease: every step of the run renews it (resume and detach); a step in
# progress holds the set's own flock, so the lease only covers the gaps between steps.
DEFAULT_LEASE_S = 5 * 60


if TYPE_CHECKING:
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

log = get_logger("store.writer")


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder below ``root`` (folders bottom-up), then ``root``."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


class _RecordingWriter:
    """Wraps a pipeline ArtifactWriter: on ``close()`` its record goes into the set."""

    def __init__(self, owner: SetWriter, inner: Any, component: str, name: str, rel: str, dest: Path) -> None:
        self._owner = owner
        self._inner = inner
        self.component = component
        self.name = name
        self.artifact_path = rel
        self.dest = dest
        self.record: Optional[dict[str, Any]] = None
        self._done = False

    def write(self, data: Any) -> int:
        return self._inner.write(data)

    def writelines(self, lines: Iterable[Any]) -> None:
        self._inner.writelines(lines)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        flush = getattr(self._inner, "flush", None)
        if flush:
            flush()

    @property
    def closed(self) -> bool:
        return self._done

    def close(self) -> dict[str, Any]:
        """Finish the artifact (fsynced, renamed into the partial set) and record it."""
        if self._done:
            return dict(self.record or {})
        self._done = True
        try:
            record = self._inner.close()
        except BaseException:
            self._owner._forget_writer(self, failed=True)
            raise
        self.record = self._owner._artifact_closed(self, record)
        return dict(self.record)

    def abort(self) -> None:
        """Drop the artifact (its file is removed; nothing is recorded)."""
        if self._done:
            return
        self._done = True
        try:
            self._inner.abort()
        finally:
            self._owner._forget_writer(self)

    def __enter__(self) -> _RecordingWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SetWriter:
    """Writes into one partial set ``<store>/.partial/<set_id>/``; :meth:`publish` commits it.

    Two roles:

    * the *main* writer, from :meth:`Store.begin_set`: may write every component;
    * a *component* writer, from :meth:`Store.resume_set` with ``component``: writes
      only that component's folder (and ``metadata/``), possibly in another process
      and in parallel with other component writers.

    Every writer keeps its records (artifacts, JSON files, sources, metadata) in its
    own state file ``.state/<mysql|...|main>.json``, saved by :meth:`detach`;
    :meth:`publish` (in whichever process runs last) merges them all into the manifest.

    As a context manager, leaving the block by an exception calls :meth:`abort`;
    leaving it normally without publishing detaches a resumed writer and discards
    a main writer that was never detached (nothing is ever published implicitly).
    ``path`` is the partial folder until publish, the final folder after it.
    Artifact writers may run in several threads at once.
    """

    def __init__(self, store: Store, info: dict[str, Any], data_key: bytes, *, component: Optional[str],
                 set_lock: locks.HeldLock, writer_lock: Optional[locks.HeldLock] = None, owns_lock: bool = False,
                 created: bool = False, replace: bool = False, progress: Optional[ProgressFn] = None,
                 early_read_back: bool = True) -> None:
        self.store = store
        self.info = info
        self.set_id: str = info["set_id"]
        self.set_type: str = info["type"]
        self.components: list[str] = list(info["components"])
        self.parent: Optional[str] = info.get("parent")
        self.codec = codec_from(info.get("codec"))
        self.component = component
        self.state_name = component or MAIN_WRITER
        self.final_path = store.set_path(self.set_id, self.parent)
        self.partial_path = store.partial_root / self.set_id
        self.path = self.partial_path
        self.started = parse_time(info["started"])
        self.published = False
        self.aborted = False
        self.detached = False
        self.verification: Optional[dict[str, Any]] = None
        self._created = created
        self._data_key: Optional[bytes] = data_key
        self._set_lock = set_lock
        self._writer_lock = writer_lock
        self._owns_lock = owns_lock
        self._progress = progress
        self._mutex = threading.RLock()
        self._open: list[_RecordingWriter] = []
        self._failed: list[str] = []
        self._early_read_back = early_read_back
        self._read_backs: dict[str, tuple[str, Any]] = {}  # path -> (stored_sha256, Future of the error)
        self._read_back_pool: Any = None
        self._state: dict[str, Any] = {"artifacts": [], "files": [], "sources": [], "metadata": {}}
        self._state_lock = locks.acquire_file(self._state_dir / f"writer-{self.state_name}.lock", None,
                                              what=f"the {self.state_name} writer of set {self.set_id}")
        self._load_own_state(replace)
        self._renewal_stop = threading.Event()
        self._cancel_on_abandon: Optional[Any] = None
        if not created and info.get("lock_kind"):
            threading.Thread(target=self._renew_lease_while_attached, daemon=True,
                             name=f"lease-{self.set_id}-{self.state_name}").start()
            self._cancel_on_abandon = runstatus.on_abandon(self._abandon_lease)

    def _abandon_lease(self, reason: str) -> None:
        """This process stops itself because the run's controller is gone (runstatus.end_this_run):
        give up the set's lease, so that the next backup takes the set over at once even where this
        host cannot judge the controller's process. Takes no lock of this writer (an engine thread may
        hold them); waits at most 2 s for the lock file."""
        locks.abandon_lease(self.store.root / LOCK_DIR, self.info["lock_kind"], self.set_id, reason, wait_s=2.0)

    def _renew_lease_while_attached(self) -> None:
        """Every :data:`RENEW_EVERY_S` seconds until this writer detaches, publishes or aborts:
        renew the set's lease (``.state/lease.json`` and the writer lock's record), so that
        the lease of a live run never depends on how long one step takes. A failure is logged."""
        lease_s = float(self.info.get("lease_s") or DEFAULT_LEASE_S)
        while not self._renewal_stop.wait(RENEW_EVERY_S):
            with self._mutex:
                if self._renewal_stop.is_set() or self.published or self.aborted or self.detached:
                    return
                try:
                    write_lease(self.partial_path, self.info, lease_s)
                    locks.refresh_lease(self.store.root / LOCK_DIR, self.info["lock_kind"], self.set_id, lease_s)
                except (LifeboatError, OSError) as err:
                    log.warning("backup set %s: could not renew its lease: %s", self.set_id, err)

    @property
    def _state_dir(self) -> Path:
        return self.partial_path / STATE_DIR

    @property
    def _state_file(self) -> Path:
        return self._state_dir / f"writer-{self.state_name}.json"

    def _load_own_state(self, replace: bool) -> None:
        previous = read_json_file(self._state_file)
        if not previous:
            return
        if not replace:
            for key in self._state:
                self._state[key] = previous.get(key, self._state[key])
            return
        for record in previous.get("artifacts", []) + previous.get("files", []):
            (self.partial_path / record["path"]).unlink(missing_ok=True)
        self._state_file.unlink(missing_ok=True)
        log.info("backup set %s: earlier %s attempt discarded; writing it again", self.set_id, self.state_name)

    # -- context manager
    def __enter__(self) -> SetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.published or self.aborted or self.detached:
            return
        if exc_type is not None:
            log.warning("backup set %s: %s writer stopped by %s", self.set_id, self.state_name, exc_type.__name__)
            self.abort()
        elif self._created:
            log.warning("backup set %s: left without publish() or detach(); discarded", self.set_id)
            self.abort()
        else:
            self.detach()

    # -- content
    def _check_writable(self) -> None:
        if self.published or self.aborted or self.detached:
            state = "published" if self.published else "aborted" if self.aborted else "detached"
            raise BackupFailed(f"this writer of backup set {self.set_id} is {state}; it cannot take more data",
                               hint="resume the set with Store.resume_set to write more")

    def _claimed(self) -> set[str]:
        return {r["path"] for r in self._state["artifacts"] + self._state["files"]} | {
            w.artifact_path for w in self._open}

    def _claim(self, component: str, name: str) -> str:
        """Reserve ``component/name`` (unique within the set) and create its folders."""
        allowed = [self.component] if self.component else self.components
        if component != METADATA_COMPONENT and component not in allowed:
            raise ConfigError(f"component {component!r} is not writable by this writer of set {self.set_id}",
                              hint=f"it may write {', '.join(allowed)} and {METADATA_COMPONENT}")
        rel = "/".join([component, *check_relative(name, "artifact name")])
        with self._mutex:
            self._check_writable()
            if rel in self._claimed() or (self.partial_path / rel).exists():
                raise ConfigError(f"set {self.set_id} already has a file {rel}", hint="use a distinct name")
            make_private_dirs((self.partial_path / rel).parent)
            return rel

    def artifact(self, component: str, name: str, *, codec: Any = None, total_bytes: Optional[int] = None):
        """An encrypting, compressing binary writer for ``<component>/<name>``.

        Its ``close()`` returns the ArtifactRecord, which is added to the manifest;
        an artifact never closed blocks :meth:`publish` / :meth:`detach`.
        """
        with self._mutex:
            rel = self._claim(component, name)
            dest = self.partial_path / rel
            kwargs: dict[str, Any] = {"data_key": self._data_key, "set_id": self.set_id, "artifact_path": rel,
                                      "total_bytes": total_bytes, "progress": self._progress}
            if (codec or self.codec) is not None:
                kwargs["codec"] = codec or self.codec
            inner = pipeline_module().open_artifact_writer(dest, **kwargs)
            writer = _RecordingWriter(self, inner, component, name, rel, dest)
            self._open.append(writer)
            return writer

    def _forget_writer(self, writer: _RecordingWriter, failed: bool = False) -> None:
        with self._mutex:
            if writer in self._open:
                self._open.remove(writer)
            if failed:
                self._failed.append(writer.artifact_path)

    def _artifact_closed(self, writer: _RecordingWriter, record: dict[str, Any]) -> dict[str, Any]:
        if writer.dest.exists():
            os.chmod(writer.dest, 0o600)
        full = dict(record)
        if full.get("path") != writer.artifact_path:
            raise BackupFailed(f"pipeline returned a record for {full.get('path')!r}, expected {writer.artifact_path}")
        full.update(component=writer.component, name=writer.name)
        with self._mutex:
            self._forget_writer(writer)
            self._state["artifacts"].append(full)
            if self._early_read_back:
                self._start_read_back(full)
        return full

    # -- early read-back
    def _start_read_back(self, record: dict[str, Any]) -> None:
        """Read a just-closed artifact back in the background, as publish's check would.

        A closed artifact never changes, so checking it now gives the same answer as at
        publish, but uses the cores while the other artifacts are still being produced (for
        a MySQL dump: while its biggest table is still streaming alone). One artifact at a time.
        """
        if self._read_back_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._read_back_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lifeboat-read-back")
        future = self._read_back_pool.submit(verify_artifact_file, self.partial_path, self.set_id,
                                             self._data_key or b"", dict(record))
        self._read_backs[record["path"]] = (record["stored_sha256"], future)

    def _finished_read_backs(self) -> dict[str, dict[str, Any]]:
        """``path -> {"stored_sha256", "error"}`` of this writer's read-backs (waits for them)."""
        return {path: {"stored_sha256": digest, "error": future.result()}
                for path, (digest, future) in self._read_backs.items()}

    def _stop_read_backs(self, wait: bool = True) -> None:
        """End the read-back thread: after its work (``wait``), or at once, dropping what is
        queued (the set is being given up; a check still running ends with its file)."""
        if self._read_back_pool is not None:
            self._read_back_pool.shutdown(wait=wait, cancel_futures=True)
            self._read_back_pool = None
        if not wait:
            self._read_backs.clear()

    def write_json(self, component: str, name: str, obj: Any, *, compact: bool = False) -> None:
        """Write a non-secret plaintext JSON file ``<component>/<name>`` (0600, atomic),
        recorded in the manifest with its size and SHA-256; ``compact`` for large,
        machine-read documents (see :func:`json_bytes`)."""
        if compact:
            try:
                data = json_bytes(obj, compact=True)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{component}/{name} is not JSON-serialisable: {err}") from None
        else:
            data = json_bytes(plain_json_copy(obj, f"{component}/{name}"))
        with self._mutex:
            rel = self._claim(component, name)
            write_file_atomic(self.partial_path / rel, data)
            self._state["files"].append({"component": component, "name": name, "path": rel, "size": len(data),
                                         "sha256": hashlib.sha256(data).hexdigest()})

    def _check_own_component(self, component: str) -> None:
        allowed = [self.component] if self.component else self.components
        if component not in allowed:
            raise ConfigError(f"component {component!r} is not writable by this writer of set {self.set_id}")

    def set_component_metadata(self, component: str, meta: dict[str, Any]) -> None:
        """Merge ``meta`` (JSON-serialisable, non-secret) into the component's manifest metadata."""
        self._check_own_component(component)
        copy = plain_json_copy(meta, f"metadata of {component}")
        if not isinstance(copy, dict):
            raise ConfigError(f"metadata of {component} must be a dict")
        with self._mutex:
            self._check_writable()
            self._state["metadata"].setdefault(component, {}).update(copy)

    def add_source(self, component: str, host: str, server_version: Optional[str], **extra: Any) -> None:
        """Record a source server of ``component`` (host, server version, extra non-secret fields)."""
        self._check_own_component(component)
        entry = plain_json_copy({"component": component, "host": host, "server_version": server_version, **extra},
                                f"source of {component}")
        with self._mutex:
            self._check_writable()
            self._state["sources"].append(entry)

    # -- hand-over between processes
    def _save_state(self) -> None:
        state = dict(self._state, writer=self.state_name, component=self.component, pid=os.getpid(),
                     host=socket.gethostname(), updated=format_time(utc_now()))
        write_file_atomic(self._state_file, json_bytes(state))

    def _check_no_open(self, action: str) -> None:
        if self._failed:
            raise BackupFailed(f"backup set {self.set_id}: artifact(s) {', '.join(self._failed)} failed while "
                               "being finished; the set cannot be completed", hint="abort it and back up again")
        if self._open:
            names = ", ".join(w.artifact_path for w in self._open)
            raise BackupFailed(f"backup set {self.set_id}: artifact(s) {names} were never closed",
                               hint=f"close every artifact writer before {action}")

    def detach(self, lease_s: Optional[float] = None) -> str:
        """Save this writer's records and let go of the set without publishing it, so that
        other processes (:meth:`Store.resume_set`) continue it. The set stays protected
        from :meth:`Store.clean_stale_partials` and its writer lock stays leased for
        ``lease_s`` seconds (default: the set's lease), renewed by every resume.
        Returns the set id."""
        with self._mutex:
            self._check_writable()
            self._check_no_open("detach()")
            lease_s = float(lease_s or self.info.get("lease_s") or DEFAULT_LEASE_S)
            if self._read_backs:
                self._state["read_back"] = self._finished_read_backs()
            self._stop_read_backs()
            self._save_state()
            write_lease(self.partial_path, self.info, lease_s)
            if self._owns_lock and self._writer_lock is not None and self._writer_lock.held:
                self._writer_lock.detach_as_lease(lease_s, set_id=self.set_id, owner=self.info.get("owner"),
                                                  run_owner=self.info.get("run_owner"))
            elif self.info.get("lock_kind"):
                locks.refresh_lease(self.store.root / LOCK_DIR, self.info["lock_kind"], self.set_id, lease_s)
            self.detached = True
            self._release_writer_locks()
        log.info("backup set %s: %s writer detached", self.set_id, self.state_name)
        return self.set_id

    # -- commit
    def _merged_state(self) -> dict[str, Any]:
        """Every writer's records: this one's (in memory) and the saved ones of the others."""
        merged: dict[str, Any] = {"artifacts": [], "files": [], "sources": [], "metadata": {}, "read_back": {}}
        states = [self._state]
        for path in sorted(self._state_dir.glob("writer-*.json")):
            if path != self._state_file:
                states.append(read_json_file(path) or {})
        for state in states:
            merged["artifacts"] += state.get("artifacts", [])
            merged["files"] += state.get("files", [])
            merged["sources"] += state.get("sources", [])
            merged["read_back"].update(state.get("read_back", {}))
            for component, meta in state.get("metadata", {}).items():
                merged["metadata"].setdefault(component, {}).update(meta)
        paths = [r["path"] for r in merged["artifacts"] + merged["files"]]
        duplicates = sorted({p for p in paths if paths.count(p) > 1})
        if duplicates:
            raise BackupFailed(f"backup set {self.set_id}: {', '.join(duplicates)} written by more than one writer")
        return merged

    def build_manifest(self, merged: dict[str, Any], end: datetime) -> Manifest:
        """The manifest for ``merged`` records (MAC included); does not write it."""
        artifacts, files = merged["artifacts"], merged["files"]
        stored = sum(r["stored_size"] for r in artifacts) + sum(f["size"] for f in files)
        plain = sum(r["plaintext_size"] for r in artifacts) + sum(f["size"] for f in files)
        manifest: Manifest = {
            "format_version": FORMAT_VERSION,
            "id": self.set_id,
            "type": self.set_type,
            "parent": self.parent,
            "components": list(self.components),
            "start_time": format_time(self.started),
            "end_time": format_time(end),
            "tool": {"name": TOOL_NAME, "version": __version__},
            "created_on": self.info.get("created_on"),
            "owner": self.info.get("owner"),
            "sources": merged["sources"],
            "encryption": {"data_key_wraps": [dict(w) for w in self.info["data_key_wraps"]]},
            "artifacts": sorted(artifacts, key=lambda r: r["path"]),
            "files": sorted(files, key=lambda r: r["path"]),
            "component_metadata": {k: merged["metadata"][k] for k in sorted(merged["metadata"])},
            "totals": {"artifacts": len(artifacts), "files": len(files), "stored_bytes": stored,
                       "plaintext_bytes": plain},
        }
        manifest["manifest_mac"] = {"algorithm": MAC_ALGORITHM, "value": manifest_mac(manifest, self._data_key or b"")}
        return manifest

    def publish(self, quick_verify: bool = True, wait_s: float = 0.0) -> Manifest:
        """Commit the set: merge every writer's records, optionally quick-verify every
        artifact, write the manifest last, fsync every file and folder, rename the partial
        folder to its final place (the atomic commit point), fsync both parents, release
        the writer lock (or its lease). Returns the manifest.

        Fails with :class:`BackupFailed` (set left as it is) while other processes still
        write into the set (waits up to ``wait_s`` seconds for them). Any other failure
        discards the whole partial set and raises; nothing is published. A passing quick
        verification is stored with :meth:`Store.record_verification`.
        """
        with self._mutex:
            self._check_writable()
            self._check_no_open("publish()")
            if not self._set_lock.upgrade(wait_s):
                raise BackupFailed(f"backup set {self.set_id}: other processes are still writing into it",
                                   hint="publish after every component writer has finished (detached)")
            try:
                merged = self._merged_state()
                if not quick_verify:
                    self._stop_read_backs(wait=False)
                report = self._verify_partial(merged) if quick_verify else None
                manifest = self.build_manifest(merged, utc_now())
                _remove_unlisted(self.partial_path, [r["path"] for r in manifest["artifacts"] + manifest["files"]])
                write_file_atomic(self.partial_path / MANIFEST_NAME, json_bytes(manifest))
                _fsync_tree(self.partial_path)
                make_private_dirs(self.final_path.parent)
                _rename_into_place(self.partial_path, self.final_path)
                fsync_dir(self.store.partial_root)
                fsync_dir(self.final_path.parent)
            except BaseException:
                self._discard_set()
                raise
            self.published = True
            self.path = self.final_path
            self._end_set()
        log.info("backup set %s: published at %s (%s stored)", self.set_id, self.final_path,
                 human_bytes(manifest["totals"]["stored_bytes"]))
        if report is not None:
            self.verification = report
            try:
                self.store.record_verification(self.set_id, report)
            except (LifeboatError, OSError) as err:
                log.warning("backup set %s: could not store its verification record: %s", self.set_id, err)
        return manifest

    def _verify_partial(self, merged: dict[str, Any]) -> dict[str, Any]:
        entries = verify_records(self.partial_path, self.set_id, self._data_key, merged["artifacts"],
                                 merged["files"], progress=self._progress, known=self._known_read_backs(merged))
        report = verification_report(self.set_id, "quick", entries)
        report["trigger"] = "publish"
        if not report["ok"]:
            failed = "; ".join(f"{e['path']}: {e['error']}" for e in entries if not e["ok"])
            raise VerificationFailed(f"backup set {self.set_id} failed its read-back check before publish: {failed}",
                                     hint="the set was discarded; check the disk and retry the backup")
        return report

    def _known_read_backs(self, merged: dict[str, Any]) -> dict[str, Optional[str]]:
        """Results of early read-backs (this writer's, and those other writers saved at detach)
        that checked exactly the artifact the manifest will list (same path and stored SHA-256)."""
        done = dict(merged.get("read_back") or {})
        done.update(self._finished_read_backs())
        self._stop_read_backs()
        known: dict[str, Optional[str]] = {}
        for record in merged["artifacts"]:
            result = done.get(record["path"])
            if isinstance(result, dict) and result.get("stored_sha256") == record.get("stored_sha256"):
                known[record["path"]] = result.get("error")
        return known

    def abort(self) -> None:
        """Give up (idempotent). The main writer of a set never detached discards the whole
        partial set. A resumed writer discards only its own work (its files and state) and
        leaves the set partial, for a retry, a publish, or an abort (``lifeboat abort``)."""
        with self._mutex:
            if self.published or self.aborted or self.detached:
                return
            self.aborted = True
            self._stop_read_backs(wait=False)
            for writer in list(self._open):
                try:
                    writer.abort()
                except Exception as err:  # noqa: BLE001 - keep cleaning up
                    log.warning("backup set %s: aborting %s failed: %s", self.set_id, writer.artifact_path, err)
            if self._created:
                self._discard_set()
                return
            for record in self._state["artifacts"] + self._state["files"]:
                (self.partial_path / record["path"]).unlink(missing_ok=True)
            self._state_file.unlink(missing_ok=True)
            self._release_writer_locks()
        log.warning("backup set %s: %s work discarded; the set stays partial", self.set_id, self.state_name)

    def _discard_set(self) -> None:
        """Remove the partial set, end its locks/lease (this writer holds it exclusively or is its creator)."""
        self.aborted = True
        self._stop_read_backs(wait=False)
        shutil.rmtree(self.partial_path, ignore_errors=True)
        self._end_set()
        log.warning("backup set %s: discarded, nothing published", self.set_id)

    def _end_set(self) -> None:
        """The set left ``.partial`` (published or removed): drop its lock file and writer lock/lease."""
        self._data_key = None
        (self.store.partial_root / f"{self.set_id}.lock").unlink(missing_ok=True)
        if self._owns_lock and self._writer_lock is not None and self._writer_lock.held:
            self._writer_lock.release()
        elif self.info.get("lock_kind"):
            try:
                locks.clear_lease(self.store.root / LOCK_DIR, self.info["lock_kind"], self.set_id)
            except LifeboatError as err:
                log.warning("backup set %s: could not end its lock lease: %s", self.set_id, err)
        self._release_writer_locks()

    def _release_writer_locks(self) -> None:
        self._renewal_stop.set()
        if self._cancel_on_abandon is not None:
            self._cancel_on_abandon()
        self._data_key = None
        self._state_lock.release()
        self._set_lock.release()


def codec_state(codec: Any) -> Optional[dict[str, Any]]:
    """The set state's codec entry: the manifest form plus the worker threads (which the
    manifest does not record, but every writer of this set, resumed ones too, should use)."""
    if codec is None:
        return None
    return dict(codec.to_manifest(), threads=codec.threads)


def codec_from(data: Optional[dict[str, Any]]) -> Any:
    """Inverse of :func:`codec_state` (an entry without ``threads``, written before they were
    kept, gets the default: automatic)."""
    if not data:
        return None
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec

    codec = Codec.from_manifest(data)
    return replace(codec, threads=int(data["threads"])) if data.get("threads") is not None else codec


def read_json_file(path: Path) -> Optional[dict[str, Any]]:
    """The JSON object in ``path``; ``None`` if missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_lease(partial: Path, info: dict[str, Any], lease_s: float) -> None:
    """Write the lease file of a detached partial set: its holder and when the lease ends (now + ``lease_s``)."""
    lease = {"owner": info.get("owner"), "run_owner": info.get("run_owner"),
             "lease_until": locks.lease_until_iso(lease_s), "updated": format_time(utc_now()),
             "pid": os.getpid(), "host": socket.gethostname()}
    write_file_atomic(partial / STATE_DIR / LEASE_FILE, json_bytes(lease))


def _remove_unlisted(partial: Path, listed: list[str]) -> None:
    """Delete the writers' state and any file no record lists (temp files of killed writers)."""
    shutil.rmtree(partial / STATE_DIR, ignore_errors=True)
    keep = set(listed)
    for file in [p for p in partial.rglob("*") if p.is_file() or p.is_symlink()]:
        if file.relative_to(partial).as_posix() not in keep:
            file.unlink()


def _rename_into_place(src: Path, dst: Path) -> None:
    """The commit point of a set: rename its finished partial folder to its final name."""
    if dst.exists():
        raise BackupFailed(f"{dst} already exists; a set id must be unique", hint="retry with a new set id")
    os.rename(src, dst)
