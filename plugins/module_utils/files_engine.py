# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Application files: named folders as pax tar streams, full or incremental.

Backup (:func:`backup_files_into`): each named folder (``paths``: name -> folder)
is walked without following symlinks (sorted, so two runs over the same tree give
the same order), filtered by include/exclude globs, and written as one pax tar
stream into the artifact ``app/<name>.tar[.zst|.gz].enc``. Modes, numeric owners,
mtimes (ns, in the file list) and symlinks (stored as symlinks) are kept; hard
links are stored as separate regular files. While a file's bytes stream into the
tar its SHA-256 is computed (no second read); the tree's *complete* state - every
entry with type, mode, owner, mtime, size, SHA-256 and the set that holds its
content (``stored_in``) - goes to ``app/<name>_files.json`` (plain JSON: paths and
hashes, no content). A file whose size or mtime changes between its stat and the
end of its read is stored as read (cut or zero-padded to the stat size) and
reported as a warning naming its path.

Incremental: with a parent set, a regular file is stored again only when its size
or mtime differs from the parent's list; when only the mtime changed, the file is
hashed first and not stored if the hash is the same (metadata-only change).
Deleted paths are listed in ``deleted``. Directories and symlinks are always
stored (they are tiny), so each tar is readable on its own. The manifest's ``app``
component metadata names the parent (``parent_set_id``) and the whole chain
(``chain``: set ids from the full set to the parent) so retention keeps chains whole.

Restore (:func:`restore_files_from`): the chain (full + incrementals, in order) is
extracted into ``<target>.lbrestore-<ts>`` next to the target, paths absent from
the final list are removed, final metadata applied, every file's SHA-256 (computed
while it was written) checked against the list; only then the old target is
renamed to ``<target>.lbprev-<ts>`` (kept) and the new tree renamed into place.
Archive members that would escape the target (absolute names, ``..``, links whose
target resolves outside, device files, fifos) abort the restore with an error
naming the member; the target is not touched.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import shutil
import stat
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Iterable, Iterator, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.compression import Codec
from ansible_collections.lifeboat.dr.plugins.module_utils.errors import (
    ConfigError,
    FormatError,
    IntegrityError,
    LifeboatError,
    NotFound,
    PermissionDenied,
    RestoreFailed,
    TamperedData,
    VerificationFailed,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.progress import (
    ProgressFn,
    ProgressMeter,
    get_logger,
)

COMPONENT = "app"
FILES_LIST_FORMAT = 1
CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE  # 512
_TAR_ENCODING = "utf-8"
_TAR_ERRORS = "surrogateescape"
_ZERO_BLOCKS = b"\0" * (2 * BLOCK)

log = get_logger("files")


# ----------------------------------------------------------------------------- names

def artifact_name(name: str, codec_algorithm: str = "zstd") -> str:
    """Artifact name (inside component ``app``) of folder ``name``'s tar stream."""
    suffix = {"zstd": ".zst", "gzip": ".gz"}.get(codec_algorithm, "")
    return f"{name}.tar{suffix}.enc"


def files_list_name(name: str) -> str:
    """JSON name (inside component ``app``) of folder ``name``'s file list."""
    return f"{name}_files.json"


def check_folder_name(name: str) -> None:
    """Refuse folder names that are not usable as artifact names."""
    if not name or name.startswith(".") or "/" in name or "\0" in name or len(name) > 100:
        raise ConfigError(f"files backup: folder name {name!r} is not usable as an artifact name",
                          hint="use short names of letters, digits, '-' and '_' (e.g. storage, logs, config)")


# ----------------------------------------------------------------------------- filters

@dataclass(frozen=True)
class PathFilter:
    """Include/exclude globs over paths relative to the folder root (posix, no leading ``/``).

    A pattern matches a path when fnmatch matches the whole relative path or its
    base name. ``exclude`` wins over ``include``; an excluded directory is not
    entered. ``include`` (when non-empty) selects files and symlinks; directories
    are always walked and stored so included files keep their parents.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @staticmethod
    def _matches(rel: str, patterns: Iterable[str]) -> bool:
        base = rel.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(base, p) for p in patterns)

    def excluded(self, rel: str) -> bool:
        """True when ``rel`` matches an exclude pattern."""
        return self._matches(rel, self.exclude)

    def selected(self, rel: str, is_dir: bool) -> bool:
        """True when the entry at ``rel`` goes into the backup."""
        if self.excluded(rel):
            return False
        if is_dir or not self.include:
            return True
        return self._matches(rel, self.include)


# ----------------------------------------------------------------------------- scan

def _walk_error(path: Path, err: OSError) -> LifeboatError:
    if err.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"files backup: cannot read {path}: {err.strerror}",
                                hint="run the backup as a user that can read the whole folder "
                                     "(become: true), or exclude the path")
    if err.errno == errno.ENOENT:
        return NotFound(f"files backup: {path} does not exist",
                        hint="check the path, or remove it from 'paths'")
    return PermissionDenied(f"files backup: cannot read {path}: {err.strerror}",
                            hint="check the path and its permissions")


def scan_tree(root: Path, path_filter: PathFilter = PathFilter()) -> Iterator[tuple[str, os.stat_result]]:
    """Yield ``(relative posix path, lstat)`` for every selected entry under ``root``.

    Depth first, names sorted bytewise within a folder, parents before children;
    symlinks are never followed. The root itself is not yielded. Raises
    :class:`NotFound` (missing root), :class:`ConfigError` (root not a folder) or
    :class:`PermissionDenied` (unreadable folder) naming the path.
    """
    try:
        st = os.stat(root)
    except OSError as err:
        raise _walk_error(root, err) from err
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"files backup: {root} is not a folder",
                          hint="'paths' maps names to folders; back up a single file's folder instead")
    yield from _scan_dir(root, "", path_filter)


def _scan_dir(root: Path, prefix: str, path_filter: PathFilter) -> Iterator[tuple[str, os.stat_result]]:
    folder = root / prefix if prefix else root
    try:
        with os.scandir(folder) as it:
            names = sorted((e.name for e in it), key=os.fsencode)
    except OSError as err:
        raise _walk_error(folder, err) from err
    for name in names:
        rel = f"{prefix}/{name}" if prefix else name
        try:
            st = os.lstat(root / rel)
        except FileNotFoundError:
            log.warning("files backup: %s vanished during the scan; skipped", root / rel)
            continue
        except OSError as err:
            raise _walk_error(root / rel, err) from err
        is_dir = stat.S_ISDIR(st.st_mode)
        if not path_filter.selected(rel, is_dir):
            continue
        if not (is_dir or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            log.warning("files backup: %s is a special file (device, fifo or socket); skipped", root / rel)
            continue
        yield rel, st
        if is_dir:
            yield from _scan_dir(root, rel, path_filter)


# ----------------------------------------------------------------------------- tar writing

class _BlockAssembler:
    """Assembles the tar stream in aligned ``size``-byte blocks handed to ``out`` as ``bytes``.

    File content is read straight into the block buffer (:meth:`fill_from`). A full
    block is handed to ``out`` as it is when ``out`` has ``hand_over`` (the pipeline's
    ArtifactWriter: no copy; a fresh buffer is taken for the next block), else as a
    ``bytes`` copy.
    """

    def __init__(self, out: BinaryIO, size: int = CHUNK) -> None:
        self.out = out
        self.size = size
        self._hand_over = getattr(out, "hand_over", None)
        self._new_buffer()

    def _new_buffer(self) -> None:
        self.buf = bytearray(self.size)
        self.view = memoryview(self.buf)
        self.pos = 0

    def write(self, data: bytes) -> None:
        """Append small data (headers, padding)."""
        mv = memoryview(data)
        while len(mv):
            n = min(len(mv), self.size - self.pos)
            self.view[self.pos:self.pos + n] = mv[:n]
            self.pos += n
            mv = mv[n:]
            if self.pos == self.size:
                self._emit()

    def fill_from(self, src: Any, limit: int, digest: Any) -> int:
        """Read at most ``limit`` bytes of ``src`` into the buffer, hashing them; 0 at EOF."""
        n = src.readinto(self.view[self.pos:self.pos + min(limit, self.size - self.pos)])
        if n:
            digest.update(self.view[self.pos:self.pos + n])
            self.pos += n
            if self.pos == self.size:
                self._emit()
        return n or 0

    def _emit(self) -> None:
        if self._hand_over is None:
            self.out.write(bytes(self.buf))
            self.pos = 0
            return
        self.view.release()
        self._hand_over(self.buf)
        self._new_buffer()

    def flush(self) -> None:
        if self.pos:
            self.out.write(bytes(self.view[:self.pos]))
            self.pos = 0


def _tarinfo(rel: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.mtime = st.st_mtime_ns // 1_000_000_000
    info.uname = info.gname = ""
    return info


@dataclass
class StoredFile:
    """What :meth:`TarStreamWriter.add_file` stored: size and SHA-256 of the stored bytes."""

    size: int
    sha256: str
    changed: bool


class TarStreamWriter:
    """Writes a pax tar stream entry by entry to a binary writer (no seeking).

    ``close()`` writes the end-of-archive blocks and flushes; it does not close ``out``.
    """

    def __init__(self, out: BinaryIO, meter: Optional[ProgressMeter] = None) -> None:
        self.out = _BlockAssembler(out)
        self.meter = meter
        self.read_bytes = 0

    def _header(self, info: tarfile.TarInfo) -> None:
        self.out.write(info.tobuf(tarfile.PAX_FORMAT, _TAR_ENCODING, _TAR_ERRORS))

    def add_dir(self, rel: str, st: os.stat_result) -> None:
        """Store a directory entry (no content)."""
        info = _tarinfo(rel, st)
        info.type = tarfile.DIRTYPE
        self._header(info)

    def add_symlink(self, rel: str, st: os.stat_result, target: str) -> None:
        """Store a symlink entry pointing at ``target`` (never followed)."""
        info = _tarinfo(rel, st)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        self._header(info)

    def add_file(self, rel: str, st: os.stat_result, path: Path) -> StoredFile:
        """Store regular file ``path`` as ``rel``; exactly ``st.st_size`` bytes are stored.

        The file is opened without following symlinks. If it grew, the extra bytes
        are left out; if it shrank, zero bytes pad it; either way, or when its size
        or mtime at the end of the read differs from ``st``, ``changed`` is True.
        The SHA-256 is that of the stored bytes.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError as err:
            raise _walk_error(path, err) from err
        with os.fdopen(fd, "rb", buffering=0) as src:
            info = _tarinfo(rel, st)
            info.size = st.st_size
            self._header(info)
            digest = hashlib.sha256()
            remaining = st.st_size
            short = False
            while remaining > 0:
                try:
                    n = self.out.fill_from(src, remaining, digest)
                except OSError as err:
                    raise _walk_error(path, err) from err
                if not n:
                    short = True
                    zeros = b"\0" * remaining
                    digest.update(zeros)
                    self.out.write(zeros)
                    n = remaining
                remaining -= n
                self.read_bytes += n
                if self.meter:
                    self.meter.update(self.read_bytes)
            pad = -st.st_size % BLOCK
            if pad:
                self.out.write(b"\0" * pad)
            after = os.fstat(src.fileno())
        changed = short or after.st_size != st.st_size or after.st_mtime_ns != st.st_mtime_ns
        return StoredFile(st.st_size, digest.hexdigest(), changed)

    def close(self) -> None:
        """End the archive (two zero blocks) and flush buffered bytes to ``out``."""
        self.out.write(_ZERO_BLOCKS)
        self.out.flush()


def hash_file(path: Path) -> str:
    """SHA-256 (hex) of a file's content, read in 1 MiB pieces without following symlinks."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb", buffering=0) as src:
        while True:
            data = src.read(CHUNK)
            if not data:
                return digest.hexdigest()
            digest.update(data)


# ----------------------------------------------------------------------------- tree backup

@dataclass
class TreeResult:
    """Outcome of :func:`write_tree_tar`: the complete entry list and what was stored."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    changed_during_backup: list[str] = field(default_factory=list)
    stored_files: int = 0
    stored_bytes: int = 0
    unchanged_files: int = 0
    total_bytes: int = 0
    root_meta: dict[str, Any] = field(default_factory=dict)


def _entry(rel: str, kind: str, st: os.stat_result) -> dict[str, Any]:
    return {"path": rel, "type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
            "gid": st.st_gid, "mtime_ns": st.st_mtime_ns}


def write_tree_tar(out: BinaryIO, root: Path, *, set_id: str, path_filter: PathFilter = PathFilter(),
                   previous: Optional[dict[str, dict[str, Any]]] = None,
                   progress: Optional[ProgressFn] = None, operation: str = "files backup") -> TreeResult:
    """Write the tree under ``root`` as a pax tar to ``out`` and return its complete entry list.

    ``previous`` (path -> entry of the parent set's list) makes it incremental:
    regular files whose size and mtime equal the parent's are not stored (their
    ``stored_in`` is copied); see the module docstring. Entries are listed
    parents first. ``out`` is not closed.
    """
    meter = ProgressMeter(operation, progress)
    tar = TarStreamWriter(out, meter)
    result = TreeResult()
    seen: set[str] = set()
    entries = scan_tree(root, path_filter)
    result.root_meta = _entry(".", "dir", os.stat(root))
    for rel, st in entries:
        seen.add(rel)
        path = root / rel
        if stat.S_ISDIR(st.st_mode):
            tar.add_dir(rel, st)
            result.entries.append(_entry(rel, "dir", st))
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            tar.add_symlink(rel, st, target)
            entry = _entry(rel, "symlink", st)
            entry["target"] = target
            result.entries.append(entry)
        else:
            result.entries.append(_file_entry(tar, rel, st, path, set_id, previous, result))
    tar.close()
    meter.finish()
    if previous is not None:
        result.deleted = sorted(p for p in previous if p not in seen)
    return result


def _file_entry(tar: TarStreamWriter, rel: str, st: os.stat_result, path: Path, set_id: str,
                previous: Optional[dict[str, dict[str, Any]]], result: TreeResult) -> dict[str, Any]:
    entry = _entry(rel, "file", st)
    entry["size"] = st.st_size
    result.total_bytes += st.st_size
    old = (previous or {}).get(rel)
    if old is not None and old.get("type") == "file" and old.get("size") == st.st_size:
        same_mtime = old.get("mtime_ns") == st.st_mtime_ns
        if same_mtime or hash_file(path) == old.get("sha256"):
            entry["sha256"] = old["sha256"]
            entry["stored_in"] = old["stored_in"]
            result.unchanged_files += 1
            return entry
    stored = tar.add_file(rel, st, path)
    entry["sha256"] = stored.sha256
    entry["stored_in"] = set_id
    result.stored_files += 1
    result.stored_bytes += stored.size
    if stored.changed:
        entry["changed_during_backup"] = True
        result.changed_during_backup.append(rel)
        log.warning("files backup: %s changed while it was read; the stored copy may be inconsistent", path)
    return entry


def files_list_document(name: str, root: Path, set_id: str, parent_set_id: Optional[str],
                        result: TreeResult, path_filter: PathFilter) -> dict[str, Any]:
    """The JSON document stored as ``app/<name>_files.json``."""
    return {
        "format_version": FILES_LIST_FORMAT,
        "name": name,
        "root": str(root),
        "set_id": set_id,
        "parent_set_id": parent_set_id,
        "include": list(path_filter.include),
        "exclude": list(path_filter.exclude),
        "root_meta": result.root_meta,
        "entries": result.entries,
        "deleted": result.deleted,
        "changed_during_backup": result.changed_during_backup,
    }


def check_files_list(doc: Any, where: str) -> dict[str, Any]:
    """Validate a file list document; :class:`FormatError` naming ``where`` if it is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise FormatError(f"{where} is not a Lifeboat file list")
    if doc.get("format_version") != FILES_LIST_FORMAT:
        raise FormatError(f"{where} has file list format {doc.get('format_version')!r}; "
                          f"this Lifeboat reads {FILES_LIST_FORMAT}",
                          hint="restore with the Lifeboat version that wrote the set")
    return doc


# ----------------------------------------------------------------------------- safe extraction

def _member_error(member: str, why: str) -> RestoreFailed:
    return RestoreFailed(f"files restore: archive member {member!r} refused: {why}; nothing was changed "
                         f"in the target",
                         hint="the archive is damaged or hostile: restore from another set and check who "
                              "can write to the store")


def safe_member_path(name: str) -> PurePosixPath:
    """The relative path of member ``name``, or :class:`RestoreFailed` if it could escape."""
    if not name or "\0" in name:
        raise _member_error(name, "empty name or NUL byte")
    if name.startswith("/"):
        raise _member_error(name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise _member_error(name, "'..' in the path")
    if not parts:
        raise _member_error(name, "names the target folder itself")
    return PurePosixPath(*parts)


def _link_stays_inside(rel: PurePosixPath, target: str) -> bool:
    """True when symlink ``rel`` -> ``target`` resolves (lexically) inside the root."""
    if not target or target.startswith("/"):
        return False
    depth = len(rel.parts) - 1  # folders above the link, inside the root
    for part in target.split("/"):
        if part in ("", "."):
            continue
        depth = depth - 1 if part == ".." else depth + 1
        if depth < 0:
            return False
    return True


class SafeExtractor:
    """Extracts tar streams into ``dest`` refusing anything that could escape it.

    Members are checked before anything is written for them; a refused member
    raises :class:`RestoreFailed` naming it. Parents of a member must be real
    directories under ``dest`` (never symlinks). Files are written with
    ``O_NOFOLLOW`` and hashed as written (``written[path] = sha256``).
    """

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.written: dict[str, str] = {}
        self.bytes = 0

    def _parent_ok(self, rel: PurePosixPath) -> Path:
        current = self.dest
        for part in rel.parts[:-1]:
            current = current / part
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                os.mkdir(current, 0o700)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise _member_error(str(rel), f"its parent {part!r} is not a folder (a link or file)")
        return self.dest / rel

    def _clear(self, path: Path, keep_dir: bool) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def extract(self, source: BinaryIO, meter: Optional[ProgressMeter] = None) -> int:
        """Extract every member of the tar stream ``source``; return the member count."""
        count = 0
        try:
            tar = tarfile.open(fileobj=source, mode="r|", encoding=_TAR_ENCODING, errors=_TAR_ERRORS)
        except tarfile.TarError as err:
            raise FormatError(f"files restore: not a tar stream ({err})") from err
        with tar:
            try:
                for member in tar:
                    self._extract_member(tar, member)
                    count += 1
                    if meter:
                        meter.update(self.bytes)
            except tarfile.TarError as err:
                raise TamperedData(f"files restore: broken tar stream after {count} members ({err})") from err
        return count

    def _extract_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        rel = safe_member_path(member.name)
        key = rel.as_posix()
        if member.isdir():
            path = self._parent_ok(rel)
            self._clear(path, keep_dir=True)
            os.makedirs(path, 0o700, exist_ok=True)
        elif member.issym():
            if not _link_stays_inside(rel, member.linkname):
                raise _member_error(member.name, f"symlink to {member.linkname!r} points outside the target")
            path = self._parent_ok(rel)
            self._clear(path, keep_dir=False)
            os.symlink(member.linkname, path)
        elif member.islnk():
            try:
                link_rel = safe_member_path(member.linkname)
            except RestoreFailed:
                raise _member_error(member.name, f"hard link to {member.linkname!r}: absolute or '..' "
                                                 f"target") from None
            if link_rel.as_posix() not in self.written:
                raise _member_error(member.name, f"hard link to {member.linkname!r} which is not a file "
                                                 f"extracted before it")
            path = self._parent_ok(rel)
            self._clear(path, keep_dir=False)
            shutil.copyfile(self.dest / link_rel, path, follow_symlinks=False)
            self.written[key] = self.written[link_rel.as_posix()]
        elif member.isreg():
            path = self._parent_ok(rel)
            self._clear(path, keep_dir=False)
            self.written[key] = self._write_file(tar, member, path)
        else:
            raise _member_error(member.name, "device file, fifo or other special member")

    def _write_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> str:
        src = tar.extractfile(member)
        digest = hashlib.sha256()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as dst:
            while True:
                data = src.read(CHUNK) if src else b""
                if not data:
                    break
                digest.update(data)
                dst.write(data)
                self.bytes += len(data)
        return digest.hexdigest()


def apply_metadata(dest: Path, entries: list[dict[str, Any]], *, chown: Optional[bool] = None) -> None:
    """Set mode, owner (when root, or ``chown``) and mtime of every entry, children first."""
    do_chown = os.geteuid() == 0 if chown is None else chown
    for entry in reversed(entries):  # children before parents: dir mtimes stick
        path = dest / entry["path"]
        is_link = entry["type"] == "symlink"
        if do_chown:
            os.lchown(path, entry["uid"], entry["gid"])
        if not is_link:
            os.chmod(path, entry["mode"])
        ns = entry["mtime_ns"]
        os.utime(path, ns=(ns, ns), follow_symlinks=not is_link)


def remove_unlisted(dest: Path, entries: list[dict[str, Any]]) -> list[str]:
    """Remove every path under ``dest`` not in ``entries``; return the removed relative paths."""
    wanted = {e["path"] for e in entries}
    removed: list[str] = []
    for dirpath, dirnames, filenames in os.walk(dest, topdown=True):
        base = Path(dirpath)
        for name in list(dirnames) + filenames:
            rel = (base / name).relative_to(dest).as_posix()
            if rel in wanted:
                continue
            removed.append(rel)
            path = base / name
            if name in dirnames and not os.path.islink(path):
                shutil.rmtree(path)
                dirnames.remove(name)
            else:
                os.unlink(path)
    return removed


def check_tree(dest: Path, entries: list[dict[str, Any]], written: dict[str, str]) -> None:
    """Check the extracted tree against the final list; :class:`VerificationFailed` names a difference."""
    for entry in entries:
        rel, kind = entry["path"], entry["type"]
        path = dest / rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise VerificationFailed(f"files restore: {rel} is in the file list but no archive of the chain "
                                     f"holds it", hint="verify the chain; a set may be damaged") from None
        ok_type = {"dir": stat.S_ISDIR, "symlink": stat.S_ISLNK, "file": stat.S_ISREG}[kind](st.st_mode)
        if not ok_type:
            raise VerificationFailed(f"files restore: {rel} should be a {kind}")
        if kind == "file" and written.get(rel) != entry["sha256"]:
            raise VerificationFailed(f"files restore: SHA-256 of {rel} differs from the file list",
                                     hint="the set is damaged: run a full verify, restore an older set")
        if kind == "symlink" and os.readlink(path) != entry["target"]:
            raise VerificationFailed(f"files restore: symlink {rel} points elsewhere than listed")


# ----------------------------------------------------------------------------- swap

def restore_stamp(when: Optional[float] = None) -> str:
    """UTC stamp used in ``.lbrestore-``/``.lbprev-`` names, e.g. ``20250129T020000Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))


def aside_paths(target: Path, stamp: str) -> tuple[Path, Path]:
    """``(<target>.lbrestore-<stamp>, <target>.lbprev-<stamp>)``."""
    return (target.with_name(f"{target.name}.lbrestore-{stamp}"),
            target.with_name(f"{target.name}.lbprev-{stamp}"))


def swap_into_place(new: Path, target: Path, prev: Path) -> Optional[Path]:
    """Rename ``target`` to ``prev`` (when it exists) and ``new`` to ``target``.

    Each rename is atomic; if the second fails the first is undone. Returns
    ``prev`` when the old tree was kept there, else ``None``.
    """
    kept: Optional[Path] = None
    if os.path.lexists(target):
        os.rename(target, prev)
        kept = prev
    try:
        os.rename(new, target)
    except OSError as err:
        if kept:
            os.rename(prev, target)
        raise RestoreFailed(f"files restore: could not move the restored tree into {target}: {err.strerror}",
                            hint=f"the restored tree is at {new}; the target was left as it was") from err
    return kept


# ----------------------------------------------------------------------------- set level

def app_metadata(backup_set: Any) -> dict[str, Any]:
    """The ``app`` component metadata of a set (folders, parent, chain); {} when absent."""
    getter = getattr(backup_set, "component_metadata", None)
    if callable(getter):
        return getter(COMPONENT) or {}
    return (backup_set.manifest.get("component_metadata") or {}).get(COMPONENT) or {}


def _read_list(backup_set: Any, name: str) -> dict[str, Any]:
    try:
        doc = backup_set.read_json(COMPONENT, files_list_name(name))
    except LifeboatError:
        raise
    except (KeyError, OSError) as err:
        raise NotFound(f"set {backup_set.set_id} has no file list for folder {name!r}",
                       hint="list the set's folders with lifeboat list; check the name") from err
    return check_files_list(doc, f"{backup_set.set_id}/{COMPONENT}/{files_list_name(name)}")


def resolve_parent(store: Any, incremental_from: Optional[str]) -> Optional[Any]:
    """The parent set for an incremental backup: ``None``, a set id, or ``'latest'`` (newest app set)."""
    if not incremental_from:
        return None
    if incremental_from == "latest":
        parent = store.latest_set(component=COMPONENT)
        if parent is None:
            log.info("files backup: no earlier set with component %r; taking a full backup", COMPONENT)
        return parent
    return store.open_set(incremental_from)


def backup_files_into(set_writer: Any, paths: dict[str, str], *, include: Optional[list[str]] = None,
                      exclude: Optional[list[str]] = None, parent: Optional[Any] = None,
                      progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Back up each folder of ``paths`` (name -> folder) into the open ``set_writer``.

    ``parent``: an earlier :class:`BackupSet` to be incremental against (only its
    file lists are read, no key needed), or ``None`` for a full backup. Writes the
    artifacts ``app/<name>.tar*.enc``, the lists ``app/<name>_files.json`` and the
    component metadata; does not publish. Returns a summary per folder.
    """
    if not paths:
        raise ConfigError("files backup: 'paths' is empty", hint="give at least one name: folder pair")
    path_filter = PathFilter(tuple(include or ()), tuple(exclude or ()))
    parent_meta = app_metadata(parent) if parent is not None else {}
    chain = list(parent_meta.get("chain", [])) + [parent.set_id] if parent is not None else []
    folders: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for name, folder in paths.items():
        check_folder_name(name)
        root = Path(folder)
        previous, parent_id = _previous_entries(parent, name, parent_meta)
        codec = tar_codec(set_writer)
        art = artifact_name(name, codec.algorithm)
        with set_writer.artifact(COMPONENT, art, codec=codec) as out:
            result = write_tree_tar(out, root, set_id=set_writer.set_id, path_filter=path_filter,
                                    previous=previous, progress=progress, operation=f"files backup {name}")
        set_writer.write_json(COMPONENT, files_list_name(name),
                              files_list_document(name, root, set_writer.set_id, parent_id, result, path_filter),
                              compact=True)
        folders[name] = {"root": str(root), "artifact": art, "files_list": files_list_name(name),
                         "parent_set_id": parent_id, "entries": len(result.entries),
                         "total_bytes": result.total_bytes}
        summary[name] = {"root": str(root), "incremental": parent_id is not None, "parent_set_id": parent_id,
                         "entries": len(result.entries), "stored_files": result.stored_files,
                         "stored_bytes": result.stored_bytes, "unchanged_files": result.unchanged_files,
                         "deleted": len(result.deleted), "changed_during_backup": result.changed_during_backup}
    incremental = any(f["parent_set_id"] for f in folders.values())
    set_writer.set_component_metadata(COMPONENT, {
        "folders": folders, "incremental": incremental,
        "parent_set_id": parent.set_id if incremental else None,
        "chain": chain if incremental else [],
    })
    return {"set_id": set_writer.set_id, "incremental": incremental, "folders": summary}


def tar_codec(set_writer: Any) -> Codec:
    """The codec of a folder's tar artifact: the set's (zstd 3 when it has none), with an
    automatic thread count resolved for a lone stream (:meth:`Codec.for_single_stream`): a
    folder is one tar stream, which alone would leave the second core idle."""
    codec = getattr(set_writer, "codec", None) or Codec()
    return codec.for_single_stream()


def _previous_entries(parent: Optional[Any], name: str, parent_meta: dict[str, Any]
                      ) -> tuple[Optional[dict[str, dict[str, Any]]], Optional[str]]:
    if parent is None or name not in (parent_meta.get("folders") or {}):
        return None, None
    doc = _read_list(parent, name)
    return {e["path"]: e for e in doc["entries"]}, parent.set_id


def folder_chain(store: Any, backup_set: Any, name: str) -> list[Any]:
    """The sets holding folder ``name`` of ``backup_set``: full first, ``backup_set`` last.

    Raises :class:`NotFound` when a set of the chain is missing (pruned or moved).
    """
    chain = [backup_set]
    seen = {backup_set.set_id}
    current = backup_set
    while True:
        folders = app_metadata(current).get("folders") or {}
        if name not in folders:
            raise NotFound(f"set {current.set_id} has no folder {name!r}",
                           hint="check the folder name against the set's 'app' component")
        parent_id = folders[name].get("parent_set_id")
        if not parent_id:
            return list(reversed(chain))
        if parent_id in seen:
            raise FormatError(f"the incremental chain of {backup_set.set_id} loops at {parent_id}")
        try:
            current = store.open_set(parent_id)
        except LifeboatError as err:
            raise NotFound(f"set {backup_set.set_id} is incremental on {parent_id}, which cannot be opened "
                           f"({err.message})",
                           hint="restore the missing set into the store, or restore an older full set") from err
        seen.add(parent_id)
        chain.append(current)


def restore_files_from(store: Any, backup_set: Any, keyring: Any, *, targets: Optional[dict[str, str]] = None,
                       names: Optional[list[str]] = None, check_mode: bool = False,
                       progress: Optional[ProgressFn] = None, stamp: Optional[str] = None) -> dict[str, Any]:
    """Restore folders of ``backup_set`` (assembling incremental chains) and swap them into place.

    ``targets``: name -> folder to restore into (default: the folder recorded at
    backup). ``names``: which folders (default all). In ``check_mode`` only the
    plan (chain, target, counts) is returned. The old tree of each target is kept
    at ``<target>.lbprev-<stamp>``. On any error the target is left untouched and
    the partly restored folder removed.
    """
    folders = app_metadata(backup_set).get("folders") or {}
    if not folders:
        raise NotFound(f"set {backup_set.set_id} holds no application files",
                       hint="pick a set with component 'app' (lifeboat list)")
    wanted = names or sorted(folders)
    stamp = stamp or restore_stamp()
    results: dict[str, Any] = {}
    for name in wanted:
        if name not in folders:
            raise NotFound(f"set {backup_set.set_id} has no folder {name!r}; it has {sorted(folders)}")
        chain = folder_chain(store, backup_set, name)
        final = _read_list(backup_set, name)
        target = Path((targets or {}).get(name) or final["root"])
        plan = {"target": str(target), "chain": [s.set_id for s in chain], "entries": len(final["entries"])}
        if check_mode:
            results[name] = dict(plan, changed=True)
            continue
        results[name] = dict(plan, **_restore_folder(chain, name, final, target, keyring, stamp, progress))
    return {"set_id": backup_set.set_id, "changed": True, "check_mode": check_mode, "folders": results}


def _restore_folder(chain: list[Any], name: str, final: dict[str, Any], target: Path, keyring: Any,
                    stamp: str, progress: Optional[ProgressFn]) -> dict[str, Any]:
    new, prev = aside_paths(target, stamp)
    if os.path.lexists(new) or os.path.lexists(prev):
        raise RestoreFailed(f"files restore: {new} or {prev} already exists",
                            hint="remove it or wait a second and run again")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.mkdir(new, 0o700)
    try:
        extractor = SafeExtractor(new)
        meter = ProgressMeter(f"files restore {name}", progress)
        for backup_set in chain:
            folder = app_metadata(backup_set)["folders"][name]
            with backup_set.open_artifact(COMPONENT, folder["artifact"], keyring) as src:
                extractor.extract(src, meter)
        meter.finish()
        removed = remove_unlisted(new, final["entries"])
        check_tree(new, final["entries"], extractor.written)
        apply_metadata(new, final["entries"])
        _apply_root_metadata(new, final.get("root_meta"), target)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    kept = swap_into_place(new, target, prev)
    log.info("files restore: %s restored into %s (previous tree kept at %s)", name, target, kept)
    return {"changed": True, "previous_kept_at": str(kept) if kept else None,
            "files_restored": len(extractor.written), "bytes_restored": extractor.bytes,
            "removed_by_chain": len(removed)}


def _apply_root_metadata(new: Path, meta: Optional[dict[str, Any]], target: Path) -> None:
    """Give the restored root the recorded mode/owner/mtime (or the old target's mode)."""
    if meta:
        apply_metadata(new.parent, [dict(meta, path=new.name)])
        return
    try:
        os.chmod(new, stat.S_IMODE(os.stat(target).st_mode))
    except OSError:
        os.chmod(new, 0o755)


def verify_files_from(store: Any, backup_set: Any, keyring: Any, *, deep: bool = True,
                      progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Verify every set of every folder's chain; ``deep`` also hashes each stored file against its list.

    Returns ``{"ok": bool, "folders": {name: {"chain": [...], "problems": [...]}}}``;
    raises nothing for damaged data (problems are reported), only for a missing key.
    """
    folders = app_metadata(backup_set).get("folders") or {}
    report: dict[str, Any] = {"ok": True, "set_id": backup_set.set_id, "folders": {}}
    for name in sorted(folders):
        problems: list[str] = []
        try:
            chain = folder_chain(store, backup_set, name)
        except LifeboatError as err:
            report["folders"][name] = {"chain": [], "problems": [str(err)]}
            report["ok"] = False
            continue
        for member in chain:
            problems += _verify_member(member, name, keyring, deep, progress)
        report["folders"][name] = {"chain": [s.set_id for s in chain], "problems": problems}
        report["ok"] = report["ok"] and not problems
    return report


def _verify_member(backup_set: Any, name: str, keyring: Any, deep: bool,
                   progress: Optional[ProgressFn]) -> list[str]:
    folder = app_metadata(backup_set)["folders"][name]
    try:
        listing = _read_list(backup_set, name)
        expected = {e["path"]: e["sha256"] for e in listing["entries"]
                    if e["type"] == "file" and e.get("stored_in") == backup_set.set_id}
        if not deep:
            return []
        seen = hash_tar_members(backup_set.open_artifact(COMPONENT, folder["artifact"], keyring), progress)
    except (IntegrityError, FormatError, NotFound) as err:
        return [f"{backup_set.set_id}: {err}"]
    problems = [f"{backup_set.set_id}: {p} differs from the file list" for p, h in expected.items()
                if seen.get(p) != h]
    problems += [f"{backup_set.set_id}: {p} is stored but not listed" for p in seen if p not in expected]
    return problems


def hash_tar_members(source: BinaryIO, progress: Optional[ProgressFn] = None) -> dict[str, str]:
    """SHA-256 of every regular file member of a tar stream (path -> hex); writes nothing."""
    out: dict[str, str] = {}
    meter = ProgressMeter("files verify", progress)
    done = 0
    with source, tarfile.open(fileobj=source, mode="r|", encoding=_TAR_ENCODING, errors=_TAR_ERRORS) as tar:
        for member in tar:
            if not member.isreg():
                continue
            digest = hashlib.sha256()
            src = tar.extractfile(member)
            while src is not None:
                data = src.read(CHUNK)
                if not data:
                    break
                digest.update(data)
                done += len(data)
                meter.update(done)
            out[safe_member_path(member.name).as_posix()] = digest.hexdigest()
    meter.finish()
    return out


def describe_plan(result: dict[str, Any]) -> str:
    """One line per folder for logs: name, target, chain length."""
    return "; ".join(f"{n} -> {f['target']} ({len(f['chain'])} set(s))" for n, f in result["folders"].items())


# ----------------------------------------------------------------------------- entry points for modules

def plan_files_backup(paths: dict[str, str], *, include: Optional[list[str]] = None,
                      exclude: Optional[list[str]] = None) -> dict[str, Any]:
    """Check-mode plan: per folder the entry count and bytes a full backup would read (stat only)."""
    if not paths:
        raise ConfigError("files backup: 'paths' is empty", hint="give at least one name: folder pair")
    path_filter = PathFilter(tuple(include or ()), tuple(exclude or ()))
    folders: dict[str, Any] = {}
    for name, folder in paths.items():
        check_folder_name(name)
        count = size = 0
        for _rel, st in scan_tree(Path(folder), path_filter):
            count += 1
            size += st.st_size if stat.S_ISREG(st.st_mode) else 0
        folders[name] = {"root": folder, "entries": count, "bytes": size}
    return {"folders": folders, "approx_bytes": sum(f["bytes"] for f in folders.values())}


def run_files_backup(store_root: str, keyring: Any, paths: dict[str, str], *, include: Optional[list[str]] = None,
                     exclude: Optional[list[str]] = None, incremental_from: Optional[str] = None,
                     codec: Any = None, set_type: str = "app", quick_verify: bool = True,
                     progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Back up ``paths`` into a new published set of ``set_type`` (all or nothing); return the summary."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.backupset import Store

    store = Store(store_root)
    plan = plan_files_backup(paths, include=include, exclude=exclude)
    parent = resolve_parent(store, incremental_from)
    with store.begin_set(set_type, [COMPONENT], keyring, codec=codec, estimated_bytes=plan["approx_bytes"],
                         early_read_back=quick_verify) as writer:
        summary = backup_files_into(writer, paths, include=include, exclude=exclude, parent=parent,
                                    progress=progress)
        manifest = writer.publish(quick_verify=quick_verify)
    summary.update(path=str(writer.path), stored_bytes=manifest["totals"]["stored_bytes"],
                   plaintext_bytes=manifest["totals"]["plaintext_bytes"])
    return summary


def open_set_or_latest(store: Any, set_id: Optional[str]) -> Any:
    """``store.open_set(set_id)``, or the newest set holding ``app`` for ``None``/``'latest'``."""
    if set_id and set_id != "latest":
        return store.open_set(set_id)
    found = store.latest_set(component=COMPONENT)
    if found is None:
        raise NotFound(f"no set with application files in {store.root}", hint="run lifeboat.dr.files_backup first")
    return found


def run_files_restore(store_root: str, keyring: Any, set_id: Optional[str] = None, *,
                      targets: Optional[dict[str, str]] = None, names: Optional[list[str]] = None,
                      check_mode: bool = False, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Open the store and set (``None``/``'latest'`` = newest) and :func:`restore_files_from` it."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.backupset import Store

    store = Store(store_root)
    backup_set = open_set_or_latest(store, set_id)
    if not check_mode:
        backup_set.data_key(keyring)  # fail on a wrong key before touching anything
    return restore_files_from(store, backup_set, keyring, targets=targets, names=names, check_mode=check_mode,
                              progress=progress)
