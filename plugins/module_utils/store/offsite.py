# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Off-site copies of published backup sets, verified by the manifest's hashes.

A set is the folder ``<store>/[<parent>/]<set_id>`` with ``backup_manifest.json``;
what a copy must hold is exactly what the manifest lists: every artifact
(``stored_size``/``stored_sha256``) and every plain file (``size``/``sha256``),
plus the manifest itself. Targets:

* :class:`FolderTarget` - a folder on this host (lab: ``<state>/offsite``).
* :class:`SshFolderTarget` - a folder on another host, copied with ``rsync`` over
  ``ssh`` (key authentication; no secret in argv); hashes re-computed on that host
  with ``sha256sum`` after the copy.
* :class:`S3Target` - S3-compatible object storage through boto3 (streamed
  multipart uploads; each object's size and S3 ETag, computed locally with the same
  part size, are compared after upload; ``verify='download'`` also reads every object
  back and compares SHA-256).

Contracts:

* :func:`push_set` first checks the local set against its manifest (a corrupt local
  set is never copied), copies the listed files, verifies the copy, and only then
  makes it visible (folders: copy under ``.incoming/`` and rename; S3: manifest
  object written last, so a prefix without a manifest is not a set). A copy that
  is already present and verifies is left alone (``changed=False``).
* :func:`fetch_set` copies a set back into a store under ``<store>/.incoming/``,
  re-verifies every manifest hash (and the manifest MAC when a keyring is given)
  and renames it into place only if all match; a set already in the store is
  never overwritten.
* Sizes are bytes; hashes lowercase hex SHA-256.
* Progress: with ``progress`` (a callback of :mod:`progress`, e.g. ``log_progress``),
  :func:`push_set` reports ``offsite check <set>`` (hashing the local set), ``offsite copy
  <set>`` (bytes sent to the target, the manifest included; a folder and S3 per block, rsync
  once it is done) and
  :func:`fetch_set` ``offsite fetch <set>`` then ``offsite check <set>``, and both name the
  current step (``progress.set_step``) - so a long copy shows in the run status file.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import SET_ID_RE
from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import (
    MANIFEST_NAME,
    load_manifest,
    validate_manifest,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    BackupFailed,
    ConfigError,
    ConnectionFailure,
    DependencyMissing,
    NotFound,
    VerificationFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import fsync_dir, make_private_dirs, sha256_file
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    ProgressFn,
    ProgressMeter,
    get_logger,
    human_bytes,
    set_step,
)

try:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError, ClientError
    HAS_BOTO3 = True
except ImportError:
    HAS_BOTO3 = False

INCOMING_DIR = ".incoming"
DEFAULT_PART_SIZE = 8 * 1024 * 1024
READ_SIZE = 1024 * 1024
TARGET_KINDS = ("folder", "s3")

log = get_logger("offsite")

Count = Callable[[int], None]
"""Called with each number of bytes moved or hashed (increments; from any thread)."""


def byte_counter(meter: ProgressMeter) -> Count:
    """A thread-safe :data:`Count` that adds up into ``meter`` (boto3 calls it from its workers)."""
    lock = threading.Lock()
    total = [0]

    def count(n: int) -> None:
        with lock:
            total[0] += n
            meter.update(total[0])
    return count


@dataclass(frozen=True)
class ListedFile:
    """One file a set copy must hold: path relative to the set folder, size (bytes), SHA-256 (hex)."""

    path: str
    size: int
    sha256: str


def listed_files(manifest: dict[str, Any]) -> list[ListedFile]:
    """Artifacts and plain files of a manifest (not the manifest itself), in manifest order."""
    files = [ListedFile(a["path"], int(a["stored_size"]), a["stored_sha256"]) for a in manifest["artifacts"]]
    files += [ListedFile(f["path"], int(f["size"]), f["sha256"]) for f in manifest["files"]]
    for entry in files:
        parts = Path(entry.path).parts
        if not parts or entry.path.startswith("/") or ".." in parts:
            raise VerificationFailed(f"manifest lists an unsafe path {entry.path!r}", hint="the set is not usable")
    return files


def set_relpath(set_id: str, parent: Optional[str] = None) -> str:
    """``[parent/]set_id`` after checking the id (and that ``parent`` stays inside the store)."""
    if not SET_ID_RE.match(set_id or ""):
        raise ConfigError(f"{set_id!r} is not a backup set id", hint="use an id such as full_20250129T020000Z_a1b2c3")
    if parent:
        parts = Path(parent).parts
        if parent.startswith("/") or ".." in parts:
            raise ConfigError(f"parent {parent!r} must be a relative path inside the store")
        return f"{parent.strip('/')}/{set_id}"
    return set_id


def s3_etag_and_sha256(path: Path, part_size: int) -> tuple[int, str, str]:
    """(size, S3 ETag as an S3 server computes it for uploads with ``part_size``, SHA-256 hex).

    ETag: MD5 of the whole file for a single-part upload (size <= part_size), else
    ``md5(concat(md5(part_i)))-N``.
    """
    sha, whole_md5, part_md5s, size = hashlib.sha256(), hashlib.md5(), [], 0
    with open(path, "rb") as handle:
        while True:
            part = handle.read(part_size)
            if not part:
                break
            sha.update(part)
            whole_md5.update(part)
            part_md5s.append(hashlib.md5(part).digest())
            size += len(part)
    if len(part_md5s) <= 1:
        return size, whole_md5.hexdigest(), sha.hexdigest()
    return size, f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}", sha.hexdigest()


def check_files(base: Path, manifest: dict[str, Any], count: Optional[Count] = None) -> list[str]:
    """Problems of the files under ``base`` against the manifest ([] = every listed file matches).
    ``count`` gets each listed file's size once it is hashed."""
    problems = []
    for entry in listed_files(manifest):
        file = base / entry.path
        if not file.is_file():
            problems.append(f"{entry.path}: missing")
            continue
        size, digest = sha256_file(file)
        if size != entry.size or digest != entry.sha256:
            problems.append(f"{entry.path}: size/SHA-256 differ from the manifest")
        if count:
            count(size)
    return problems


def verify_local_set(set_dir: Path, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Load and check a published set folder against its manifest; return the manifest.
    ``progress`` gets ``offsite check <set>`` reports (bytes hashed of the listed total).

    Raises :class:`VerificationFailed` naming the files that differ.
    """
    manifest = load_manifest(set_dir)
    meter = ProgressMeter(f"offsite check {manifest['id']}", progress,
                          sum(f.size for f in listed_files(manifest)))
    set_step(f"checking {manifest['id']} against its manifest")
    problems = check_files(set_dir, manifest, byte_counter(meter) if progress else None)
    meter.finish()
    if problems:
        raise VerificationFailed(f"set {manifest['id']} in {set_dir} does not match its manifest: "
                                 f"{'; '.join(problems[:5])}", hint="this copy is damaged; use another copy")
    return manifest


def manifest_bytes_ok(data: bytes, source: str) -> dict[str, Any]:
    """Parse and validate manifest bytes from a copy; :class:`VerificationFailed` if unusable."""
    try:
        return validate_manifest(json.loads(data.decode("utf-8")), Path(source))
    except ValueError as err:
        raise VerificationFailed(f"the manifest at {source} is not valid JSON ({err.__class__.__name__})",
                                 hint="the copy is damaged; use another copy") from None


# --------------------------------------------------------------------------- targets


class Target(Protocol):
    """Where off-site copies live. ``rel`` is ``[parent/]set_id``."""

    def describe(self) -> dict[str, Any]: ...

    def list_sets(self, parent: Optional[str] = None) -> list[str]: ...

    def verify(self, rel: str, manifest: dict[str, Any], manifest_data: bytes,
               set_dir: Optional[Path] = None) -> list[str]: ...

    def upload(self, set_dir: Path, rel: str, manifest: dict[str, Any], count: Optional[Count] = None) -> None: ...

    def download(self, rel: str, dest: Path, count: Optional[Count] = None) -> None: ...


def _publish_dir(incoming: Path, final: Path) -> None:
    """Rename a verified ``incoming`` folder to ``final`` (its parent fsynced); refuses to overwrite."""
    make_private_dirs(final.parent)
    if final.exists():
        raise BackupFailed(f"{final} already exists", hint="remove the damaged copy first, or keep it")
    os.rename(incoming, final)
    fsync_dir(final.parent)


def _copy_listed(src: Path, dest: Path, manifest: dict[str, Any], count: Optional[Count] = None) -> None:
    """Copy the listed files and the manifest (last) from ``src`` to ``dest`` (0700 folders, fsynced);
    ``count`` gets the bytes of each block copied."""
    for entry in listed_files(manifest) + [ListedFile(MANIFEST_NAME, 0, "")]:
        target = dest / entry.path
        make_private_dirs(target.parent)
        with open(src / entry.path, "rb") as reader, open(target, "wb") as writer:
            os.fchmod(writer.fileno(), 0o600)
            while block := reader.read(READ_SIZE):
                writer.write(block)
                if count:
                    count(len(block))
            writer.flush()
            os.fsync(writer.fileno())
    for folder in sorted({p.parent for p in dest.rglob("*")}, key=lambda p: -len(p.parts)):
        fsync_dir(folder)


class FolderTarget:
    """A folder on this host (another disk, a mount); sets at ``<root>/[parent/]<set_id>``."""

    kind = "folder"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def describe(self) -> dict[str, Any]:
        return {"type": "folder", "path": str(self.root)}

    def list_sets(self, parent: Optional[str] = None) -> list[str]:
        base = self.root / parent if parent else self.root
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if SET_ID_RE.match(p.name) and (p / MANIFEST_NAME).is_file())

    def verify(self, rel: str, manifest: dict[str, Any], manifest_data: bytes,
               set_dir: Optional[Path] = None) -> list[str]:
        """Problems of the copy of ``rel`` ([] = manifest identical and every file matches it)."""
        folder = self.root / rel
        if not (folder / MANIFEST_NAME).is_file():
            return [f"{rel}: no copy"]
        problems = [] if (folder / MANIFEST_NAME).read_bytes() == manifest_data else ["manifest differs"]
        return problems + check_files(folder, manifest)

    def upload(self, set_dir: Path, rel: str, manifest: dict[str, Any], count: Optional[Count] = None) -> None:
        incoming = self.root / INCOMING_DIR / f"{manifest['id']}.{secrets.token_hex(4)}"
        make_private_dirs(incoming.parent)  # the root and .incoming too: 0700, like the main store
        incoming.mkdir(mode=0o700)
        try:
            _copy_listed(set_dir, incoming, manifest, count)
            set_step(f"checking the copy in {self.root}")
            problems = check_files(incoming, manifest)
            if problems:
                raise VerificationFailed(f"copy of {rel} in {self.root} does not match the manifest: "
                                         f"{'; '.join(problems[:5])}", hint="check the target disk and retry")
            final = self.root / rel
            if final.exists():
                shutil.rmtree(final)
            _publish_dir(incoming, final)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)

    def download(self, rel: str, dest: Path, count: Optional[Count] = None) -> None:
        source = self.root / rel
        manifest = load_manifest(source)
        _copy_listed(source, dest, manifest, count)


class SshFolderTarget:
    """A folder on another host reached with ``ssh``/``rsync`` (key authentication only).

    ``ssh_options``: extra ``-o`` settings (e.g. ``["StrictHostKeyChecking=no"]``).
    The remote host needs ``rsync``, ``sha256sum`` and a POSIX shell.
    """

    kind = "folder"

    def __init__(self, root: str, host: str, user: str = "root", key_file: Optional[str] = None, port: int = 22,
                 ssh_options: Optional[list[str]] = None, timeout_s: float = 600.0) -> None:
        if not root.startswith("/"):
            raise ConfigError(f"remote folder {root!r} must be an absolute path")
        self.root, self.host, self.user, self.port = root.rstrip("/"), host, user, int(port)
        self.key_file, self.options, self.timeout_s = key_file, list(ssh_options or []), timeout_s

    def describe(self) -> dict[str, Any]:
        return {"type": "folder", "path": self.root, "host": self.host, "user": self.user}

    def _ssh_argv(self) -> list[str]:
        argv = ["ssh", "-p", str(self.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if self.key_file:
            argv += ["-i", self.key_file, "-o", "IdentitiesOnly=yes"]
        for option in self.options:
            argv += ["-o", option]
        return argv

    def _run(self, argv: list[str], what: str, stdin: Optional[str] = None) -> str:
        if not shutil.which(argv[0]):
            raise DependencyMissing(f"off-site copy over SSH needs {argv[0]!r}", hint=f"install {argv[0]}")
        try:
            result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=self.timeout_s,
                                    check=False)
        except subprocess.TimeoutExpired:
            raise ConnectionFailure(f"{what} on {self.host} did not finish within {self.timeout_s:.0f} s",
                                    hint="check the network to the off-site host") from None
        if result.returncode != 0:
            raise ConnectionFailure(f"{what} on {self.host} failed (exit {result.returncode}): "
                                    f"{result.stderr.strip()[-400:]}",
                                    hint="check that the off-site host is reachable with the key")
        return result.stdout

    def _remote(self, command: str, what: str) -> str:
        return self._run(self._ssh_argv() + [f"{self.user}@{self.host}", command], what)

    def _rsync(self, source: str, dest: str, files: list[str], what: str) -> None:
        ssh = " ".join(shlex.quote(arg) for arg in self._ssh_argv())
        self._run(["rsync", "-a", "--chmod=D0700,F0600", "--files-from=-", "-e", ssh, source, dest], what,
                  stdin="\n".join(files) + "\n")

    def list_sets(self, parent: Optional[str] = None) -> list[str]:
        base = f"{self.root}/{parent}" if parent else self.root
        out = self._remote(f"cd {shlex.quote(base)} 2>/dev/null && ls -1 */{MANIFEST_NAME} 2>/dev/null; true",
                           "listing off-site sets")
        return sorted(line.split("/")[0] for line in out.split() if SET_ID_RE.match(line.split("/")[0]))

    def _remote_hashes(self, folder: str, paths: list[str]) -> dict[str, tuple[int, str]]:
        quoted = " ".join(shlex.quote(p) for p in paths)
        out = self._remote(f"cd {shlex.quote(folder)} && for f in {quoted}; do "
                           f"[ -f \"$f\" ] && printf '%s %s %s\\n' \"$(stat -c %s -- \"$f\")\" "
                           f"\"$(sha256sum -- \"$f\" | cut -d' ' -f1)\" \"$f\"; done; true",
                           "hashing the off-site copy")
        hashes = {}
        for line in out.splitlines():
            size, digest, path = line.split(" ", 2)
            hashes[path] = (int(size), digest)
        return hashes

    def _check_remote(self, folder: str, manifest: dict[str, Any], manifest_data: bytes) -> list[str]:
        entries = listed_files(manifest) + [ListedFile(MANIFEST_NAME, len(manifest_data),
                                                       hashlib.sha256(manifest_data).hexdigest())]
        found = self._remote_hashes(folder, [e.path for e in entries])
        problems = []
        for entry in entries:
            if entry.path not in found:
                problems.append(f"{entry.path}: missing")
            elif found[entry.path] != (entry.size, entry.sha256):
                problems.append(f"{entry.path}: size/SHA-256 differ from the manifest")
        return problems

    def verify(self, rel: str, manifest: dict[str, Any], manifest_data: bytes,
               set_dir: Optional[Path] = None) -> list[str]:
        """Problems of the remote copy of ``rel``, hashed on the remote host."""
        return self._check_remote(f"{self.root}/{rel}", manifest, manifest_data)

    def upload(self, set_dir: Path, rel: str, manifest: dict[str, Any], count: Optional[Count] = None) -> None:
        """rsync the listed files; ``count`` gets their bytes once rsync is done (no finer progress)."""
        incoming = f"{self.root}/{INCOMING_DIR}/{manifest['id']}.{secrets.token_hex(4)}"
        final = f"{self.root}/{rel}"
        # umask 077: every folder mkdir -p creates (the root, .incoming, the set) is 0700, not only the last
        self._remote(f"umask 077 && mkdir -p -- {shlex.quote(incoming)}", "creating the incoming folder")
        try:
            files = [e.path for e in listed_files(manifest)] + [MANIFEST_NAME]
            set_step(f"rsync to {self.host}")
            self._rsync(f"{set_dir}/", f"{self.user}@{self.host}:{incoming}/", files, "rsync to the off-site host")
            if count:
                count(sum(e.size for e in listed_files(manifest)) + (set_dir / MANIFEST_NAME).stat().st_size)
            set_step(f"hashing the copy on {self.host}")
            problems = self._check_remote(incoming, manifest, (set_dir / MANIFEST_NAME).read_bytes())
            if problems:
                raise VerificationFailed(f"copy of {rel} on {self.host} does not match the manifest: "
                                         f"{'; '.join(problems[:5])}", hint="check the off-site disk and retry")
            parent = shlex.quote(final.rsplit("/", 1)[0])
            self._remote(f"umask 077 && mkdir -p -- {parent} && rm -rf -- {shlex.quote(final)} && "
                         f"mv -T -- {shlex.quote(incoming)} {shlex.quote(final)} && sync {parent}",
                         "publishing the off-site copy")
        finally:
            self._remote(f"rm -rf -- {shlex.quote(incoming)}", "cleaning up")

    def download(self, rel: str, dest: Path, count: Optional[Count] = None) -> None:
        source = f"{self.root}/{rel}"
        manifest_data = self._remote(f"cat -- {shlex.quote(source + '/' + MANIFEST_NAME)}", "reading the manifest")
        manifest = manifest_bytes_ok(manifest_data.encode("utf-8"), f"{self.host}:{source}")
        files = [e.path for e in listed_files(manifest)] + [MANIFEST_NAME]
        set_step(f"rsync from {self.host}")
        self._rsync(f"{self.user}@{self.host}:{source}/", f"{dest}/", files, "rsync from the off-site host")
        if count:
            count(sum(e.size for e in listed_files(manifest)) + len(manifest_data.encode("utf-8")))


class S3Target:
    """S3-compatible object storage: objects ``<prefix>/[parent/]<set_id>/<path>`` in ``bucket``.

    Credentials: ``access_key``/``secret_key`` (never logged), else boto3's usual chain
    (environment, ``~/.aws``). ``part_size``: multipart part size in bytes (>= 5 MiB).
    ``verify``: ``etag`` (size + ETag after upload) or ``download`` (also read back, SHA-256).
    """

    kind = "s3"

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: Optional[str] = None,
                 region: str = "us-east-1", access_key: Optional[str] = None, secret_key: Optional[str] = None,
                 part_size: int = DEFAULT_PART_SIZE, verify: str = "etag", create_bucket: bool = False,
                 concurrency: int = 2, credentials_file: Optional[str] = None, profile: Optional[str] = None
                 ) -> None:
        if not HAS_BOTO3:
            raise DependencyMissing("the S3 off-site target needs boto3", hint="pip install boto3")
        if part_size < 5 * 1024 * 1024:
            raise ConfigError(f"part_size {part_size} is below the S3 minimum of 5 MiB")
        if verify not in ("etag", "download"):
            raise ConfigError(f"verify={verify!r}: use etag or download")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url, self.part_size, self.verify_mode = endpoint_url, int(part_size), verify
        config = BotoConfig(region_name=region, retries={"max_attempts": 3, "mode": "standard"},
                            s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=60,
                            request_checksum_calculation="when_required",
                            response_checksum_validation="when_required")
        self.client = self._session(credentials_file, profile).client(
            "s3", endpoint_url=endpoint_url, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            config=config)
        self.transfer = TransferConfig(multipart_threshold=self.part_size, multipart_chunksize=self.part_size,
                                       max_concurrency=concurrency, use_threads=concurrency > 1)
        if create_bucket:
            self._ensure_bucket()

    @staticmethod
    def _session(credentials_file: Optional[str], profile: Optional[str]):
        """A boto3 session reading an AWS-style credentials file (0600) when given."""
        if not credentials_file:
            return boto3.session.Session(profile_name=profile)
        import botocore.session

        core = botocore.session.Session()
        core.set_config_variable("credentials_file", str(credentials_file))
        if profile:
            core.set_config_variable("profile", profile)
        return boto3.session.Session(botocore_session=core)

    def describe(self) -> dict[str, Any]:
        return {"type": "s3", "bucket": self.bucket, "prefix": self.prefix, "endpoint_url": self.endpoint_url}

    def _key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p)

    def _call(self, what: str, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "?")
            if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
                raise NotFound(f"S3 {what}: {code}", hint=f"check bucket {self.bucket!r} and prefix") from None
            raise ConnectionFailure(f"S3 {what} failed: {code}", hint="check the endpoint and credentials") from None
        except BotoCoreError as err:
            raise ConnectionFailure(f"S3 {what} failed: {err.__class__.__name__}",
                                    hint="check the endpoint address and the network") from None

    def _ensure_bucket(self) -> None:
        try:
            self._call("head bucket", self.client.head_bucket, Bucket=self.bucket)
        except NotFound:
            self._call("create bucket", self.client.create_bucket, Bucket=self.bucket)

    def list_sets(self, parent: Optional[str] = None) -> list[str]:
        base = self._key(parent or "") + "/" if (self.prefix or parent) else ""
        found, token = set(), None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": base, "Delimiter": "/"}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list", self.client.list_objects_v2, **kwargs)
            for entry in page.get("CommonPrefixes", []):
                name = entry["Prefix"][len(base):].strip("/")
                if SET_ID_RE.match(name):
                    found.add(name)
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
        return sorted(name for name in found if self._exists(self._key(parent or "", name, MANIFEST_NAME)))

    def _exists(self, key: str) -> bool:
        try:
            self._call("head", self.client.head_object, Bucket=self.bucket, Key=key)
            return True
        except NotFound:
            return False

    def _object_problem(self, key: str, entry: ListedFile, etag: str) -> Optional[str]:
        try:
            head = self._call("head", self.client.head_object, Bucket=self.bucket, Key=key)
        except NotFound:
            return f"{entry.path}: missing"
        if int(head["ContentLength"]) != entry.size or head["ETag"].strip('"') != etag:
            return f"{entry.path}: size/ETag differ from the local file"
        if self.verify_mode == "download":
            body = self._call("get", self.client.get_object, Bucket=self.bucket, Key=key)["Body"]
            digest = hashlib.sha256()
            for block in iter(lambda: body.read(READ_SIZE), b""):
                digest.update(block)
            if digest.hexdigest() != entry.sha256:
                return f"{entry.path}: SHA-256 of the stored object differs from the manifest"
        return None

    def verify(self, rel: str, manifest: dict[str, Any], manifest_data: bytes,
               set_dir: Optional[Path] = None) -> list[str]:
        """Problems of the objects of ``rel``: size and ETag against the local files of ``set_dir``
        (which must match the manifest); with ``verify='download'`` also SHA-256 of the objects."""
        problems = []
        if set_dir is None:
            return [f"{rel}: S3 copies are verified against a local set folder"]
        for entry in listed_files(manifest) + [ListedFile(MANIFEST_NAME, len(manifest_data),
                                                          hashlib.sha256(manifest_data).hexdigest())]:
            size, etag, digest = s3_etag_and_sha256(set_dir / entry.path, self.part_size)
            if (size, digest) != (entry.size, entry.sha256):
                raise VerificationFailed(f"local {entry.path} of {rel} does not match the manifest",
                                         hint="the local set is damaged; run a verification")
            problem = self._object_problem(self._key(rel, entry.path), entry, etag)
            if problem:
                problems.append(problem)
        return problems

    def upload(self, set_dir: Path, rel: str, manifest: dict[str, Any], count: Optional[Count] = None) -> None:
        for entry in listed_files(manifest) + [ListedFile(MANIFEST_NAME, 0, "")]:
            self._call(f"upload of {entry.path}", self.client.upload_file, str(set_dir / entry.path), self.bucket,
                       self._key(rel, entry.path), Config=self.transfer,
                       ExtraArgs={"Metadata": {"sha256": entry.sha256}} if entry.sha256 else None,
                       Callback=count)
        set_step(f"checking the copy in s3://{self.bucket}")
        manifest_data = (set_dir / MANIFEST_NAME).read_bytes()
        problems = self.verify(rel, manifest, manifest_data, set_dir)
        if problems:
            raise VerificationFailed(f"S3 copy of {rel} does not match: {'; '.join(problems[:5])}",
                                     hint="retry the copy; check the object store")

    def download(self, rel: str, dest: Path, count: Optional[Count] = None) -> None:
        key = self._key(rel, MANIFEST_NAME)
        data = self._call("get manifest", self.client.get_object, Bucket=self.bucket, Key=key)["Body"].read()
        manifest = manifest_bytes_ok(data, f"s3://{self.bucket}/{key}")
        for entry in listed_files(manifest):
            target = dest / entry.path
            make_private_dirs(target.parent)
            self._call(f"download of {entry.path}", self.client.download_file, self.bucket,
                       self._key(rel, entry.path), str(target), Config=self.transfer, Callback=count)
            os.chmod(target, 0o600)
        (dest / MANIFEST_NAME).write_bytes(data)
        if count:
            count(len(data))
        os.chmod(dest / MANIFEST_NAME, 0o600)


def make_target(kind: str, options: dict[str, Any]) -> Target:
    """A target from ``kind`` (folder|s3) and its options (see the classes; unknown keys are errors)."""
    opts = {k: v for k, v in options.items() if v is not None}
    try:
        if kind == "folder":
            if opts.get("host"):
                return SshFolderTarget(opts.pop("path"), **opts)
            return FolderTarget(opts.pop("path"))
        if kind == "s3":
            return S3Target(**opts)
    except (KeyError, TypeError) as err:
        raise ConfigError(f"bad options for an off-site {kind} target: {err}",
                          hint="see docs/offsite.md for the options of each target") from None
    raise ConfigError(f"unknown off-site target type {kind!r}", hint=f"use one of: {', '.join(TARGET_KINDS)}")


# --------------------------------------------------------------------------- operations


def _local_set_dir(store: Path, set_id: Optional[str], parent: Optional[str]) -> Path:
    """The newest published set (``set_id`` None or 'newest') or the named one, in ``store``."""
    base = store / parent if parent else store
    if set_id in (None, "", "newest"):
        candidates = sorted((p for p in base.iterdir() if SET_ID_RE.match(p.name) and (p / MANIFEST_NAME).is_file()),
                            key=lambda p: (load_manifest(p)["start_time"], p.name)) if base.is_dir() else []
        if not candidates:
            raise NotFound(f"no published backup set in {base}", hint="run a backup first")
        return candidates[-1]
    folder = base / set_relpath(set_id)
    if not (folder / MANIFEST_NAME).is_file():
        raise NotFound(f"no published backup set {set_id} in {base}", hint="list the sets with store_info")
    return folder


def push_set(store: str | os.PathLike, target: Target, set_id: Optional[str] = None,
             parent: Optional[str] = None, check_mode: bool = False,
             progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Copy a published set (default: the newest) to ``target`` and verify the copy.

    Returns ``{changed, set_id, files, bytes, target, verified}``. ``changed`` is False
    when a verified copy was already there. In check mode nothing is written. ``progress``:
    ``offsite check <set>`` then ``offsite copy <set>`` reports (see the module contracts).
    """
    set_dir = _local_set_dir(Path(store), set_id, parent)
    manifest = verify_local_set(set_dir, progress)
    rel = set_relpath(manifest["id"], parent)
    manifest_data = (set_dir / MANIFEST_NAME).read_bytes()
    files = listed_files(manifest)
    total = sum(f.size for f in files) + len(manifest_data)
    result = {"set_id": manifest["id"], "files": len(files) + 1, "bytes": total, "target": target.describe()}
    present = manifest["id"] in target.list_sets(parent)
    if present:
        problems = target.verify(rel, manifest, manifest_data, set_dir)
        if not problems:
            log.info("offsite: %s already copied and verified", rel)
            return dict(result, changed=False, verified=True, already_present=True)
        log.warning("offsite: existing copy of %s is damaged (%s); copying again", rel, problems[0])
    if check_mode:
        return dict(result, changed=True, verified=False, already_present=present)
    log.info("offsite: copying %s (%d files, %s) to %s", rel, len(files) + 1, human_bytes(total),
             target.describe())
    meter = ProgressMeter(f"offsite copy {manifest['id']}", progress, total)
    set_step(f"copying {manifest['id']} to the {target.describe()['type']} target")
    target.upload(set_dir, rel, manifest, byte_counter(meter) if progress else None)
    meter.finish()
    return dict(result, changed=True, verified=True, already_present=False)


def fetch_set(target: Target, store: str | os.PathLike, set_id: Optional[str] = None,
              parent: Optional[str] = None, keyring: Any = None, check_mode: bool = False,
              progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Copy a set (default: the newest on the target) from ``target`` into ``store``.

    Every manifest hash is re-verified (and the manifest MAC when ``keyring`` is given)
    before the set is renamed into ``<store>/[parent/]<set_id>``; a set already in the
    store is left alone (``changed=False``). Returns ``{changed, set_id, path, files, bytes}``.
    ``progress``: ``offsite fetch <set>`` (bytes fetched) then ``offsite check <set>`` reports.
    """
    available = target.list_sets(parent)
    if set_id in (None, "", "newest"):
        if not available:
            raise NotFound(f"no backup set in the off-site copy {target.describe()}",
                           hint="check the target settings; push a set first")
        set_id = max(available, key=lambda name: (name.split("_")[1], name))
    elif set_id not in available:
        raise NotFound(f"set {set_id} is not in the off-site copy {target.describe()}",
                       hint=f"sets there: {', '.join(available[-5:]) or 'none'}")
    rel = set_relpath(set_id, parent)
    store_root = Path(store)
    final = store_root / rel
    if (final / MANIFEST_NAME).is_file():
        return {"changed": False, "set_id": set_id, "path": str(final), "already_present": True}
    if check_mode:
        return {"changed": True, "set_id": set_id, "path": str(final), "already_present": False}
    incoming = store_root / INCOMING_DIR / f"{set_id}.{secrets.token_hex(4)}"
    make_private_dirs(incoming.parent)
    incoming.mkdir(mode=0o700)
    try:
        meter = ProgressMeter(f"offsite fetch {set_id}", progress)
        set_step(f"fetching {set_id} from the {target.describe()['type']} target")
        target.download(rel, incoming, byte_counter(meter) if progress else None)
        meter.finish()
        manifest = verify_local_set(incoming, progress)
        if manifest["id"] != set_id:
            raise VerificationFailed(f"the off-site copy named {set_id} holds set {manifest['id']}",
                                     hint="the copy is mislabelled; use another set")
        if keyring is not None:
            BackupSet(incoming).data_key(keyring)  # unwraps the data key and checks the manifest MAC
        files = listed_files(manifest)
        _publish_dir(incoming, final)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    log.info("offsite: fetched and verified %s into %s", rel, store_root)
    return {"changed": True, "set_id": set_id, "path": str(final), "already_present": False,
            "files": len(files) + 1, "bytes": sum(f.size for f in files)}
