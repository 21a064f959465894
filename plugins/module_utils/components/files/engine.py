# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Application files: named folders as pax tar streams, full or incremental.

Backup (:func:`backup_files_into`): each named folder (``paths``: name -> folder)
is walked without following symlinks (sorted, so two runs over the same tree give
the same order), filtered by include/exclude globs, and written as one pax tar
stream into the artifact ``app/<name>.tar[.zst|.gz].enc``. Modes, numeric owners,
mtimes (ns, in the file list), symlinks (any target, stored verbatim), hard links
(tar link members to the first name of the inode), extended attributes and POSIX
ACLs (``SCHILY.xattr.*`` pax headers, as GNU tar) and holes (GNU sparse 1.0 members
holding only the data regions found with ``SEEK_DATA``/``SEEK_HOLE``) are kept;
fifos, sockets and devices are skipped and reported. While a file's bytes stream into the
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
Extraction is safe by construction (:class:`SafeExtractor`): folders are opened
relative to the restore folder's descriptor with ``O_NOFOLLOW``, files created with
``O_EXCL | O_NOFOLLOW``, metadata set on descriptors, symlinks created last; members
whose own path escapes (absolute names, ``..``), members under a folder the archive
made a link, and special members abort the restore with an error naming the member;
the target is not touched.
"""

from __future__ import annotations

import base64
import errno
import fnmatch
import hashlib
import os
import shutil
import stat
import struct
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable, Iterator, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.components import base as components
from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec, lone_stream_codec
from ansible_collections.lifeboat.dr.plugins.module_utils.util import compose_volumes
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
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
from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import write_all
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    ProgressFn,
    ProgressMeter,
    get_logger,
)

if TYPE_CHECKING:  # imported for the annotations only
    from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import KeyRing
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.reader import BackupSet
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.writer import SetWriter

COMPONENT = "app"
FILES_LIST_FORMAT = 2  # 2: hard links (link_to), holes (sparse), xattrs, skipped_special
READABLE_LIST_FORMATS = (1, 2)
CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE  # 512
_TAR_ENCODING = "utf-8"
_TAR_ERRORS = "surrogateescape"
_ZERO_BLOCKS = b"\0" * (2 * BLOCK)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_SHA256 = hashlib.sha256()  # never updated: copied for each file (cheaper than a fresh constructor)
PathArg = Union[str, Path]

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

def _walk_error(path: PathArg, err: OSError) -> LifeboatError:
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
    symlinks are never followed. The root itself is not yielded. Special files
    (fifos, sockets, devices) are yielded too: the caller skips and reports them
    (:func:`special_kind`). Raises
    :class:`NotFound` (missing root), :class:`ConfigError` (root not a folder) or
    :class:`PermissionDenied` (unreadable folder) naming the path.
    """
    for rel, _path, st in scan_paths(root, path_filter):
        yield rel, st


def scan_paths(root: Path, path_filter: PathFilter = PathFilter()) -> Iterator[tuple[str, str, os.stat_result]]:
    """:func:`scan_tree` with each entry's full path as a string too: ``(rel, path, lstat)``.

    Paths are plain strings (``root/rel``), never :class:`Path` objects: the walk of a
    tree of many small files spends a good part of its time building paths otherwise.
    """
    try:
        st = os.stat(root)
    except OSError as err:
        raise _walk_error(Path(root), err) from err
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"files backup: {root} is not a folder",
                          hint="'paths' maps names to folders; back up a single file's folder instead")
    active = path_filter if path_filter.include or path_filter.exclude else None
    yield from _scan_dir(os.fspath(root), "", active)


def _by_name(entry: os.DirEntry) -> bytes:
    return os.fsencode(entry.name)


def _scan_dir(folder: str, prefix: str, path_filter: Optional[PathFilter]
              ) -> Iterator[tuple[str, str, os.stat_result]]:
    try:
        with os.scandir(folder) as it:
            children = sorted(it, key=_by_name)
    except OSError as err:
        raise _walk_error(Path(folder), err) from err
    for child in children:
        name = child.name
        rel = f"{prefix}/{name}" if prefix else name
        path = child.path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            log.warning("files backup: %s vanished during the scan; skipped", path)
            continue
        except OSError as err:
            raise _walk_error(Path(path), err) from err
        is_dir = stat.S_ISDIR(st.st_mode)
        if path_filter is not None and not path_filter.selected(rel, is_dir):
            continue
        yield rel, path, st
        if is_dir:
            yield from _scan_dir(path, rel, path_filter)


def special_kind(mode: int) -> Optional[str]:
    """``'fifo'``, ``'socket'``, ``'character device'`` or ``'block device'`` for a special
    file's ``st_mode``; ``None`` for folders, regular files and symlinks (what is backed up)."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
        return None
    kinds = ((stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"))
    for test, kind in kinds:
        if test(mode):
            return kind
    return "special file"


def read_xattrs(path: PathArg) -> dict[str, bytes]:
    """Extended attributes of ``path`` (not following a symlink): name -> value.

    Includes ``user.*``, ``security.*``, ``trusted.*`` (root) and the POSIX ACLs
    ``system.posix_acl_access`` / ``system.posix_acl_default``. Symlinks have none
    (Linux refuses ``user.*`` on them). A file system without xattr support gives {}.
    """
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise _walk_error(path, err) from err
    out: dict[str, bytes] = {}
    for name in sorted(names):
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as err:
            if err.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                continue  # removed meanwhile / not readable by design
            raise _walk_error(path, err) from err
    return out


def data_regions(fd: int, size: int) -> Optional[list[tuple[int, int]]]:
    """The data regions ``(offset, length)`` of a file with holes (``SEEK_DATA``/``SEEK_HOLE``).

    ``None`` when the file has no hole (or the file system cannot tell): store it
    whole. A trailing hole ends the map with ``(size, 0)`` (as GNU tar writes it).
    The file offset is left at 0.
    """
    regions: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as err:
                if err.errno == errno.ENXIO:  # only a hole from pos to the end
                    break
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            regions.append((start, end - start))
            pos = end
    except OSError as err:
        if err.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
    if sum(length for _offset, length in regions) >= size:
        return None
    if not regions or regions[-1][0] + regions[-1][1] < size:
        regions.append((size, 0))
    return regions


def may_be_sparse(st: os.stat_result) -> bool:
    """Cheap test before asking for the hole map: fewer blocks allocated than the size needs."""
    return st.st_size > 0 and st.st_blocks * 512 < st.st_size


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
        end = self.pos + len(data)
        if end < self.size:  # the usual case: it fits, the block is not full yet
            self.buf[self.pos:end] = data
            self.pos = end
            return
        mv = memoryview(data)
        while len(mv):
            n = min(len(mv), self.size - self.pos)
            self.view[self.pos:self.pos + n] = mv[:n]
            self.pos += n
            mv = mv[n:]
            if self.pos == self.size:
                self._emit()

    def fill_from(self, fd: int, limit: int, digest: Any) -> int:
        """Read at most ``limit`` bytes of the file ``fd`` into the buffer, hashing them; 0 at EOF."""
        pos = self.pos
        n = os.readv(fd, (self.view[pos:pos + min(limit, self.size - pos)],))
        if n:
            digest.update(self.view[pos:pos + n])
            self.pos = pos + n
            if self.pos == self.size:
                self._emit()
        return n

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


XATTR_PAX_PREFIX = "SCHILY.xattr."  # GNU tar's and bsdtar's pax keyword for extended attributes


def _tarinfo(rel: str, st: os.stat_result, xattrs: Optional[dict[str, bytes]] = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.mtime = st.st_mtime_ns // 1_000_000_000
    info.uname = info.gname = ""
    for name, value in (xattrs or {}).items():
        # raw bytes survive as surrogates: tarfile then writes them verbatim (hdrcharset=BINARY)
        info.pax_headers[XATTR_PAX_PREFIX + name] = value.decode(_TAR_ENCODING, _TAR_ERRORS)
    return info


# name(100) mode(8) uid(8) gid(8) size(12) mtime(12) chksum(8) type(1) linkname(100) magic+version(8)
# uname(32) gname(32) devmajor(8) devminor(8) prefix(155), padded to 512 bytes; "s" fields are NUL padded
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
_CHKSUM_BLANK = b" " * 8
_MAX_ID = 8 ** 7  # largest uid/gid + 1 that 7 octal digits hold (more needs a pax header)
_MAX_NUMBER = 8 ** 11  # largest size/mtime + 1 that 11 octal digits hold


def ustar_header(name: str, mode: int, uid: int, gid: int, size: int, mtime: int, kind: bytes,
                 linkname: str = "") -> Optional[bytes]:
    """The 512-byte header ``tarfile`` writes for a member that needs no pax header, or ``None``.

    Byte for byte what ``TarInfo.tobuf(PAX_FORMAT)`` gives for such a member (empty
    uname/gname, no device numbers; a test holds the two together), at a fraction of its
    cost: in a folder of small files, building headers with ``tarfile`` took a fifth of the
    tar writer's time. ``None`` - the caller falls back to ``tarfile`` - when a pax header is
    needed: a name or link target that is not ASCII or longer than 100 bytes (a folder's
    name counts its trailing ``/``), a uid/gid of 8**7 or more, a size or mtime of 8**11 or
    more, or a negative number.
    """
    if kind == tarfile.DIRTYPE and not name.endswith("/"):
        name += "/"
    if not (name.isascii() and len(name) <= 100 and linkname.isascii() and len(linkname) <= 100
            and 0 <= uid < _MAX_ID and 0 <= gid < _MAX_ID and 0 <= size < _MAX_NUMBER
            and 0 <= mtime < _MAX_NUMBER):
        return None
    buf = _USTAR.pack(name.encode("ascii"), b"%07o" % (mode & 0o7777), b"%07o" % uid, b"%07o" % gid,
                      b"%011o" % size, b"%011o" % mtime, _CHKSUM_BLANK, kind, linkname.encode("ascii"),
                      tarfile.POSIX_MAGIC, b"", b"", b"", b"", b"")
    return b"%s%06o\0 %s" % (buf[:148], sum(buf), buf[156:])


def member_xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    """The extended attributes a tar member carries in ``SCHILY.xattr.*`` pax headers."""
    return {k[len(XATTR_PAX_PREFIX):]: v.encode(_TAR_ENCODING, _TAR_ERRORS)
            for k, v in member.pax_headers.items() if k.startswith(XATTR_PAX_PREFIX)}


def _sparse_map_block(regions: list[tuple[int, int]]) -> bytes:
    """GNU sparse 1.0 map (count, then offset/length pairs, one decimal a line), block padded."""
    text = f"{len(regions)}\n" + "".join(f"{o}\n{n}\n" for o, n in regions)
    raw = text.encode("ascii")
    return raw + b"\0" * (-len(raw) % BLOCK)


@dataclass
class StoredFile:
    """What :meth:`TarStreamWriter.add_file` stored: size and SHA-256 of the stored bytes."""

    size: int
    sha256: str
    changed: bool
    sparse: Optional[list[tuple[int, int]]] = None


class TarStreamWriter:
    """Writes a pax tar stream entry by entry to a binary writer (no seeking).

    ``close()`` writes the end-of-archive blocks and flushes; it does not close ``out``.
    """

    def __init__(self, out: BinaryIO, meter: Optional[ProgressMeter] = None) -> None:
        self.out = _BlockAssembler(out)
        self.meter = meter
        self.read_bytes = 0
        self.sparse_files = 0

    def _header(self, info: tarfile.TarInfo) -> None:
        self.out.write(info.tobuf(tarfile.PAX_FORMAT, _TAR_ENCODING, _TAR_ERRORS))

    def _member(self, rel: str, st: os.stat_result, kind: bytes, *, size: int = 0, linkname: str = "",
                xattrs: Optional[dict[str, bytes]] = None) -> None:
        """Write the header of member ``rel`` (:func:`ustar_header` when it needs no pax header)."""
        header = None if xattrs else ustar_header(rel, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size,
                                                  st.st_mtime_ns // 1_000_000_000, kind, linkname)
        if header is not None:
            self.out.write(header)
            return
        info = _tarinfo(rel, st, xattrs)
        info.type = kind
        info.size = size
        info.linkname = linkname
        self._header(info)

    def add_dir(self, rel: str, st: os.stat_result, xattrs: Optional[dict[str, bytes]] = None) -> None:
        """Store a directory entry (no content)."""
        self._member(rel, st, tarfile.DIRTYPE, xattrs=xattrs)

    def add_symlink(self, rel: str, st: os.stat_result, target: str) -> None:
        """Store a symlink entry pointing at ``target`` (never followed; any target, stored verbatim)."""
        self._member(rel, st, tarfile.SYMTYPE, linkname=target)

    def add_hardlink(self, rel: str, st: os.stat_result, first: str,
                     xattrs: Optional[dict[str, bytes]] = None) -> None:
        """Store ``rel`` as a tar link member to ``first``, a name of the same inode stored earlier."""
        self._member(rel, st, tarfile.LNKTYPE, linkname=first, xattrs=xattrs)

    def add_file(self, rel: str, st: os.stat_result, path: PathArg,
                 xattrs: Optional[dict[str, bytes]] = None) -> StoredFile:
        """Store regular file ``path`` as ``rel``; exactly ``st.st_size`` bytes are stored.

        The file is opened without following symlinks. If it grew, the extra bytes
        are left out; if it shrank, zero bytes pad it; either way, or when its size
        or mtime at the end of the read differs from ``st``, ``changed`` is True.
        The SHA-256 is that of the stored bytes. A file with holes is stored as a
        GNU sparse 1.0 pax member holding only its data regions (``sparse`` gives
        the map; the SHA-256 is then that of the data regions, in order).
        """
        try:
            fd = os.open(path, _READ_FLAGS)
        except OSError as err:
            raise _walk_error(path, err) from err
        try:
            regions = data_regions(fd, st.st_size) if may_be_sparse(st) else None
            digest = _SHA256.copy()
            if regions is None:
                self._member(rel, st, tarfile.REGTYPE, size=st.st_size, xattrs=xattrs)
                short = self._copy(fd, path, st.st_size, digest)
                stored = st.st_size
            else:
                stored, short = self._add_sparse(rel, st, fd, path, regions, xattrs, digest)
            pad = -stored % BLOCK
            if pad:
                self.out.write(_ZERO_BLOCKS[:pad])
            after = os.fstat(fd)
        finally:
            os.close(fd)
        changed = short or after.st_size != st.st_size or after.st_mtime_ns != st.st_mtime_ns
        return StoredFile(st.st_size, digest.hexdigest(), changed, regions)

    def _add_sparse(self, rel: str, st: os.stat_result, fd: int, path: PathArg, regions: list[tuple[int, int]],
                    xattrs: Optional[dict[str, bytes]], digest: Any) -> tuple[int, bool]:
        """Write a GNU sparse 1.0 member (map block, then the data regions); return (stored bytes, short)."""
        self.sparse_files += 1
        map_block = _sparse_map_block(regions)
        data = sum(length for _offset, length in regions)
        info = _tarinfo(f"GNUSparseFile.0/{self.sparse_files}", st, xattrs)
        info.pax_headers.update({"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                                 "GNU.sparse.name": rel, "GNU.sparse.realsize": str(st.st_size)})
        info.size = len(map_block) + data
        self._header(info)
        self.out.write(map_block)
        short = False
        for offset, length in regions:
            os.lseek(fd, offset, os.SEEK_SET)
            short = self._copy(fd, path, length, digest) or short
        return info.size, short

    def _copy(self, fd: int, path: PathArg, length: int, digest: Any) -> bool:
        """Copy ``length`` bytes of the file ``fd`` into the stream (zero padded if it ends early); True if short."""
        remaining = length
        short = False
        while remaining > 0:
            try:
                n = self.out.fill_from(fd, remaining, digest)
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
        return short

    def close(self) -> None:
        """End the archive (two zero blocks) and flush buffered bytes to ``out``."""
        self.out.write(_ZERO_BLOCKS)
        self.out.flush()


def hash_file(path: PathArg) -> str:
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
    skipped_special: list[dict[str, str]] = field(default_factory=list)
    hard_links: int = 0
    sparse_files: int = 0


def _entry(rel: str, kind: str, st: os.stat_result, xattrs: Optional[dict[str, bytes]] = None) -> dict[str, Any]:
    entry = {"path": rel, "type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
             "gid": st.st_gid, "mtime_ns": st.st_mtime_ns}
    if xattrs:
        entry["xattrs"] = {k: base64.b64encode(v).decode("ascii") for k, v in xattrs.items()}
    return entry


def entry_xattrs(entry: dict[str, Any]) -> dict[str, bytes]:
    """The extended attributes a file list entry records (name -> raw value)."""
    return {k: base64.b64decode(v) for k, v in (entry.get("xattrs") or {}).items()}


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
    first_names: dict[tuple[int, int], dict[str, Any]] = {}  # inode -> entry of its first name
    entries = scan_paths(root, path_filter)
    result.root_meta = _entry(".", "dir", os.stat(root), read_xattrs(root))
    for rel, path, st in entries:
        kind = special_kind(st.st_mode)
        if kind is not None:
            result.skipped_special.append({"path": rel, "kind": kind})
            continue
        seen.add(rel)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            tar.add_symlink(rel, st, target)
            entry = _entry(rel, "symlink", st)
            entry["target"] = target
            result.entries.append(entry)
            continue
        xattrs = read_xattrs(path)
        if stat.S_ISDIR(st.st_mode):
            tar.add_dir(rel, st, xattrs)
            result.entries.append(_entry(rel, "dir", st, xattrs))
            continue
        first = first_names.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
        if first is not None:
            result.entries.append(_hardlink_entry(tar, rel, st, xattrs, first, result))
            continue
        entry = _file_entry(tar, rel, st, path, xattrs, set_id, previous, result)
        if st.st_nlink > 1:
            first_names[(st.st_dev, st.st_ino)] = entry
        result.entries.append(entry)
    tar.close()
    meter.finish()
    result.sparse_files = tar.sparse_files
    if previous is not None:
        result.deleted = sorted(p for p in previous if p not in seen)
    if result.skipped_special:
        log.warning("files backup: %s", describe_skipped(result.skipped_special))
    return result


def describe_skipped(skipped: list[dict[str, str]]) -> str:
    """One sentence naming the special files left out and why (for the task output)."""
    names = ", ".join(f"{s['path']} ({s['kind']})" for s in skipped[:10])
    more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    return (f"{len(skipped)} special file(s) not backed up: {names}{more} - fifos, sockets and devices hold "
            f"no data a backup can copy; the application or the system recreates them")


def _hardlink_entry(tar: TarStreamWriter, rel: str, st: os.stat_result, xattrs: dict[str, bytes],
                    first: dict[str, Any], result: TreeResult) -> dict[str, Any]:
    """A further name of an inode already in the set: a tar link member, no content stored."""
    tar.add_hardlink(rel, st, first["path"], xattrs)
    entry = _entry(rel, "file", st, xattrs)
    entry.update(size=first["size"], sha256=first["sha256"], stored_in=first["stored_in"], link_to=first["path"])
    if "sparse" in first:
        entry["sparse"] = first["sparse"]
    result.total_bytes += st.st_size
    result.hard_links += 1
    return entry


def _file_entry(tar: TarStreamWriter, rel: str, st: os.stat_result, path: str, xattrs: dict[str, bytes],
                set_id: str, previous: Optional[dict[str, dict[str, Any]]], result: TreeResult) -> dict[str, Any]:
    entry = _entry(rel, "file", st, xattrs)
    entry["size"] = st.st_size
    result.total_bytes += st.st_size
    old = (previous or {}).get(rel)
    if old is not None and old.get("type") == "file" and old.get("size") == st.st_size:
        same_mtime = old.get("mtime_ns") == st.st_mtime_ns
        if same_mtime or ("sparse" not in old and hash_file(path) == old.get("sha256")):
            entry["sha256"] = old["sha256"]
            entry["stored_in"] = old["stored_in"]
            if "sparse" in old:
                entry["sparse"] = old["sparse"]
            result.unchanged_files += 1
            return entry
    stored = tar.add_file(rel, st, path, xattrs)
    entry["sha256"] = stored.sha256
    entry["stored_in"] = set_id
    if stored.sparse is not None:
        entry["sparse"] = [list(r) for r in stored.sparse]
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
        "skipped_special": result.skipped_special,
    }


def check_files_list(doc: Any, where: str) -> dict[str, Any]:
    """Validate a file list document; :class:`FormatError` naming ``where`` if it is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise FormatError(f"{where} is not a Lifeboat file list")
    if doc.get("format_version") not in READABLE_LIST_FORMATS:
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


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _DirFds:
    """Opens folders under a root descriptor one component at a time, never following a symlink.

    Every component is opened with ``O_DIRECTORY | O_NOFOLLOW`` relative to its parent's
    descriptor, so a symlink (or a file) anywhere on the way is refused (``ELOOP`` /
    ``ENOTDIR``) instead of followed. The descriptors of the last path are kept: members
    come depth first, so neighbours reuse them.
    """

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.stack: list[tuple[str, int]] = []

    def open(self, parts: tuple[str, ...], member: str, create: bool) -> int:
        """The descriptor of folder ``parts`` (relative to the root); missing ones are made (0700) if ``create``."""
        keep = 0
        while keep < len(self.stack) and keep < len(parts) and self.stack[keep][0] == parts[keep]:
            keep += 1
        for _name, fd in self.stack[keep:]:
            os.close(fd)
        del self.stack[keep:]
        fd = self.stack[-1][1] if self.stack else self.root_fd
        for part in parts[keep:]:
            fd = open_child_dir(fd, part, member, create)
            self.stack.append((part, fd))
        return fd

    def close(self) -> None:
        """Close every kept descriptor (not the root's)."""
        for _name, fd in self.stack:
            os.close(fd)
        self.stack = []


def open_child_dir(parent_fd: int, name: str, member: str, create: bool) -> int:
    """Open folder ``name`` inside ``parent_fd`` without following a symlink; :class:`RestoreFailed` if it
    is a link or a file (a member must never be written through one)."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _member_error(member, f"its parent {name!r} is not a folder (a link or file)") from None
        raise


def _clear_at(parent_fd: int, name: str, keep_dir: bool) -> bool:
    """Remove whatever is at ``name`` in ``parent_fd`` (a folder only unless ``keep_dir``); never follows a
    link. True when a folder is (still) there."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return True
        shutil.rmtree(name, dir_fd=parent_fd)
    else:
        os.unlink(name, dir_fd=parent_fd)
    return False


class SafeExtractor:
    """Extracts tar streams into ``dest`` so that nothing can be written outside it.

    Safe by construction: every folder on a member's way is opened relative to the
    descriptor of ``dest`` with ``O_NOFOLLOW | O_DIRECTORY`` (a link or file on the way
    is refused), files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` inside their
    folder's descriptor, and symlinks - whatever their target, absolute or relative,
    inside or outside - are created only by :meth:`finish`, after every member of
    every stream. Member names that escape (absolute, ``..``, empty, NUL), members
    under a folder the archive made a symlink, hard links to anything but a file
    extracted earlier, and special members are refused with :class:`RestoreFailed`
    naming the member. Files are hashed as written (``written[path] = sha256``; for a
    file with holes, of its data regions). Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.root_fd = os.open(dest, _DIR_FLAGS)
        self.dirs = _DirFds(self.root_fd)
        self.written: dict[str, str] = {}
        self.bytes = 0
        self.pending_links: dict[str, str] = {}

    def __enter__(self) -> SafeExtractor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the folder descriptors."""
        self.dirs.close()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def extract(self, source: BinaryIO, meter: Optional[ProgressMeter] = None) -> int:
        """Extract every member of the tar stream ``source``; return the member count.

        Symlinks are recorded, not created: call :meth:`finish` after the last stream.
        """
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

    def finish(self) -> None:
        """Create the recorded symlinks (targets verbatim), replacing what their names hold.

        A link below a name that a later member turned into a link is dropped (that
        member superseded its folder); the tree is checked against the list afterwards.
        """
        for key, target in sorted(self.pending_links.items()):
            rel = PurePosixPath(key)
            if self._under_pending_link(rel):
                continue
            parent = self.dirs.open(rel.parts[:-1], key, create=True)
            _clear_at(parent, rel.name, keep_dir=False)
            os.symlink(target, rel.name, dir_fd=parent)
        self.pending_links = {}

    def _under_pending_link(self, rel: PurePosixPath) -> Optional[str]:
        for i in range(1, len(rel.parts)):
            prefix = "/".join(rel.parts[:i])
            if prefix in self.pending_links:
                return prefix
        return None

    def _parent_fd(self, rel: PurePosixPath, member: str) -> int:
        linked = self._under_pending_link(rel)
        if linked is not None:
            raise _member_error(member, f"its parent {linked!r} is not a folder (a link in the archive)")
        return self.dirs.open(rel.parts[:-1], member, create=True)

    def _extract_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        rel = safe_member_path(member.name)
        key = rel.as_posix()
        if not (member.isdir() or member.issym() or member.islnk() or member.isreg()):
            raise _member_error(member.name, "device file, fifo or other special member")
        if member.issym():
            if not member.linkname or "\0" in member.linkname:
                raise _member_error(member.name, "symlink with an empty target")
            self._parent_fd(rel, member.name)  # refuse a link under a link now, not at finish
            self.pending_links[key] = member.linkname
            self.written.pop(key, None)
            return
        parent = self._parent_fd(rel, member.name)
        self.pending_links.pop(key, None)
        if member.isdir():
            if not _clear_at(parent, rel.name, keep_dir=True):
                os.mkdir(rel.name, 0o700, dir_fd=parent)
            return
        _clear_at(parent, rel.name, keep_dir=False)
        if member.islnk():
            self._link(member, rel, parent)
        else:
            self.written[key] = self._write_file(tar, member, parent, rel.name)

    def _link(self, member: tarfile.TarInfo, rel: PurePosixPath, parent: int) -> None:
        try:
            first = safe_member_path(member.linkname)
        except RestoreFailed:
            raise _member_error(member.name, f"hard link to {member.linkname!r}: absolute or '..' "
                                             f"target") from None
        if first.as_posix() not in self.written:
            raise _member_error(member.name, f"hard link to {member.linkname!r} which is not a file "
                                             f"extracted before it")
        first_parent = self.root_fd
        opened: list[int] = []
        try:
            for part in first.parts[:-1]:
                first_parent = open_child_dir(first_parent, part, member.name, create=False)
                opened.append(first_parent)
            os.link(first.name, rel.name, src_dir_fd=first_parent, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            for fd in opened:
                os.close(fd)
        self.written[rel.as_posix()] = self.written[first.as_posix()]

    def _write_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, name: str) -> str:
        src = tar.extractfile(member)
        digest = hashlib.sha256()
        fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            if member.sparse is not None and src is not None:
                self._write_regions(src, member, fd, digest)
            else:
                self._write_stream(src, fd, digest)
        finally:
            os.close(fd)
        return digest.hexdigest()

    def _write_stream(self, src: Optional[BinaryIO], fd: int, digest: Any) -> None:
        while src is not None:
            data = src.read(CHUNK)
            if not data:
                return
            digest.update(data)
            write_all(fd, data)
            self.bytes += len(data)

    def _write_regions(self, src: Any, member: tarfile.TarInfo, fd: int, digest: Any) -> None:
        """Write only the data regions of a sparse member at their offsets; the rest stays holes."""
        raw = src.raw  # the member's data without the zero filling of the holes
        for offset, length in member.sparse or ():
            raw.seek(offset)
            done = 0
            while done < length:
                data = raw.read(min(CHUNK, length - done))
                if not data:
                    raise TamperedData(f"files restore: sparse member {member.name!r} ends early")
                digest.update(data)
                os.lseek(fd, offset + done, os.SEEK_SET)
                write_all(fd, data)
                done += len(data)
                self.bytes += len(data)
        os.ftruncate(fd, member.size)


def apply_metadata(dest: Path, entries: list[dict[str, Any]], *, chown: Optional[bool] = None) -> list[str]:
    """Set owner (when root, or ``chown``), extended attributes and ACLs, mode and mtime of every entry,
    children first; never through a symlink (each entry is opened ``O_PATH | O_NOFOLLOW`` inside
    its folder's descriptor). Returns the attributes that could not be set (e.g. ``security.*`` or
    ``trusted.*`` without the privilege): reported, not fatal."""
    do_chown = os.geteuid() == 0 if chown is None else chown
    problems: list[str] = []
    root_fd = os.open(dest, _DIR_FLAGS)
    dirs = _DirFds(root_fd)
    try:
        for entry in reversed(entries):  # children before parents: dir mtimes stick
            rel = PurePosixPath(entry["path"])
            if rel.name in ("", "."):
                raise VerificationFailed(f"files restore: unusable path {entry['path']!r} in the file list")
            parent = dirs.open(rel.parts[:-1], entry["path"], create=False)
            problems += _apply_entry_metadata(parent, rel.name, entry, do_chown)
    finally:
        dirs.close()
        os.close(root_fd)
    return problems


def _apply_entry_metadata(parent: int, name: str, entry: dict[str, Any], do_chown: bool) -> list[str]:
    ns = entry["mtime_ns"]
    if entry["type"] == "symlink":
        if do_chown:
            os.chown(name, entry["uid"], entry["gid"], dir_fd=parent, follow_symlinks=False)
        os.utime(name, ns=(ns, ns), dir_fd=parent, follow_symlinks=False)
        return []
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise VerificationFailed(f"files restore: {entry['path']} should be a {entry['type']}, not a link")
        inode = f"/proc/self/fd/{fd}"  # the opened inode itself: no path to race with
        if do_chown:
            os.chown(inode, entry["uid"], entry["gid"])
        problems = _apply_xattrs(inode, entry)
        os.chmod(inode, entry["mode"])
        os.utime(inode, ns=(ns, ns))
    finally:
        os.close(fd)
    return problems


_RESTORED_XATTR_PREFIXES = ("user.", "system.posix_acl_")


def _apply_xattrs(inode: str, entry: dict[str, Any]) -> list[str]:
    """Make the xattrs of ``inode`` those of ``entry`` (user.* and ACLs not listed are removed, e.g.
    inherited default ACLs); return what could not be set."""
    wanted = entry_xattrs(entry)
    problems: list[str] = []
    try:
        present = os.listxattr(inode)
    except OSError as err:
        present = []
        if wanted:
            return [f"{entry['path']}: extended attributes not restored ({err.strerror})"]
    for name in present:
        if name not in wanted and name.startswith(_RESTORED_XATTR_PREFIXES):
            os.removexattr(inode, name)
    for name, value in wanted.items():
        try:
            os.setxattr(inode, name, value)
        except OSError as err:
            problems.append(f"{entry['path']}: {name} not restored ({err.strerror})")
    return problems


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
        if entry.get("link_to") and os.lstat(dest / entry["link_to"]).st_ino != st.st_ino:
            raise VerificationFailed(f"files restore: {rel} should be a hard link of {entry['link_to']}")


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

def app_metadata(backup_set: BackupSet) -> dict[str, Any]:
    """The ``app`` component metadata of a set (folders, parent, chain); {} when absent."""
    getter = getattr(backup_set, "component_metadata", None)
    if callable(getter):
        return getter(COMPONENT) or {}
    return (backup_set.manifest.get("component_metadata") or {}).get(COMPONENT) or {}


def _read_list(backup_set: BackupSet, name: str) -> dict[str, Any]:
    try:
        doc = backup_set.read_json(COMPONENT, files_list_name(name))
    except LifeboatError:
        raise
    except (KeyError, OSError) as err:
        raise NotFound(f"set {backup_set.set_id} has no file list for folder {name!r}",
                       hint="list the set's folders with lifeboat list; check the name") from err
    return check_files_list(doc, f"{backup_set.set_id}/{COMPONENT}/{files_list_name(name)}")


def resolve_parent(store: Store, incremental_from: Optional[str]) -> Optional[Any]:
    """The parent set for an incremental backup: ``None``, a set id, or ``'latest'`` (newest app set)."""
    if not incremental_from:
        return None
    if incremental_from == "latest":
        parent = store.latest_set(component=COMPONENT)
        if parent is None:
            log.info("files backup: no earlier set with component %r; taking a full backup", COMPONENT)
        return parent
    return store.open_set(incremental_from)


def backup_files_into(set_writer: SetWriter, paths: dict[str, str], *, include: Optional[list[str]] = None,
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
                         "deleted": len(result.deleted), "changed_during_backup": result.changed_during_backup,
                         "skipped_special": result.skipped_special, "hard_links": result.hard_links,
                         "sparse_files": result.sparse_files}
    incremental = any(f["parent_set_id"] for f in folders.values())
    set_writer.set_component_metadata(COMPONENT, {
        "folders": folders, "incremental": incremental,
        "parent_set_id": parent.set_id if incremental else None,
        "chain": chain if incremental else [],
    })
    return {"set_id": set_writer.set_id, "incremental": incremental, "folders": summary}


def tar_codec(set_writer: SetWriter) -> Codec:
    """The codec of a folder's tar artifact: a folder is one tar stream (:func:`lone_stream_codec`)."""
    return lone_stream_codec(getattr(set_writer, "codec", None))


def _previous_entries(parent: Optional[Any], name: str, parent_meta: dict[str, Any]
                      ) -> tuple[Optional[dict[str, dict[str, Any]]], Optional[str]]:
    if parent is None or name not in (parent_meta.get("folders") or {}):
        return None, None
    doc = _read_list(parent, name)
    return {e["path"]: e for e in doc["entries"]}, parent.set_id


def folder_chain(store: Store, backup_set: BackupSet, name: str) -> list[Any]:
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


def restore_files_from(store: Store, backup_set: BackupSet, keyring: KeyRing, *,
                       targets: Optional[dict[str, str]] = None, names: Optional[list[str]] = None,
                       check_mode: bool = False,
                       progress: Optional[ProgressFn] = None, stamp: Optional[str] = None,
                       docker_host: Optional[str] = None) -> dict[str, Any]:
    """Restore folders of ``backup_set`` (assembling incremental chains) and swap them into place.

    ``targets``: name -> folder to restore into (default: the folder recorded at
    backup). ``names``: which folders (default all). In ``check_mode`` only the
    plan (chain, target, counts) is returned. The old tree of each target is kept
    at ``<target>.lbprev-<stamp>``; with ``docker_host`` (a Compose deployment), a
    target that is a named volume's folder has its old tree moved on into a labelled
    volume ``<volume>-lifeboat-kept-<time>`` (:mod:`util.compose_volumes`). On any error
    the target is left untouched and the partly restored folder removed.
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
        volume = compose_volumes.volume_of_folder(docker_host, target) if docker_host else None
        results[name] = dict(plan, **_restore_folder(chain, name, final, target, keyring, stamp, progress))
        if volume is not None and results[name].get("previous_kept_at"):
            kept_in = compose_volumes.keep_replaced_in_volume(docker_host, volume,
                                                              Path(results[name]["previous_kept_at"]), f"{name} tree")
            results[name].update(previous_kept_at=kept_in.pop("kept_path", results[name]["previous_kept_at"]),
                                 **kept_in)
    return {"set_id": backup_set.set_id, "changed": True, "check_mode": check_mode, "folders": results}


def _restore_folder(chain: list[Any], name: str, final: dict[str, Any], target: Path, keyring: KeyRing,
                    stamp: str, progress: Optional[ProgressFn]) -> dict[str, Any]:
    new, prev = aside_paths(target, stamp)
    if os.path.lexists(new) or os.path.lexists(prev):
        raise RestoreFailed(f"files restore: {new} or {prev} already exists",
                            hint="remove it or wait a second and run again")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.mkdir(new, 0o700)
    try:
        with SafeExtractor(new) as extractor:
            meter = ProgressMeter(f"files restore {name}", progress)
            for backup_set in chain:
                folder = app_metadata(backup_set)["folders"][name]
                with backup_set.open_artifact(COMPONENT, folder["artifact"], keyring) as src:
                    extractor.extract(src, meter)
            extractor.finish()
            meter.finish()
        removed = remove_unlisted(new, final["entries"])
        check_tree(new, final["entries"], extractor.written)
        not_restored = apply_metadata(new, final["entries"])
        not_restored += _apply_root_metadata(new, final.get("root_meta"), target)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    kept = swap_into_place(new, target, prev)
    log.info("files restore: %s restored into %s (previous tree kept at %s)", name, target, kept)
    for problem in not_restored:
        log.warning("files restore: %s", problem)
    return {"changed": True, "previous_kept_at": str(kept) if kept else None,
            "files_restored": len(extractor.written), "bytes_restored": extractor.bytes,
            "removed_by_chain": len(removed), "xattrs_not_restored": not_restored}


def _apply_root_metadata(new: Path, meta: Optional[dict[str, Any]], target: Path) -> list[str]:
    """Give the restored root the recorded mode/owner/mtime/xattrs (or the old target's mode)."""
    if meta:
        problems = apply_metadata(new.parent, [dict(meta, path=new.name)])
        return [p.replace(new.name, ".", 1) for p in problems]
    try:
        os.chmod(new, stat.S_IMODE(os.stat(target).st_mode))
    except OSError:
        os.chmod(new, 0o755)
    return []


def verify_files_from(store: Store, backup_set: BackupSet, keyring: KeyRing, *, deep: bool = True,
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


def _verify_member(backup_set: BackupSet, name: str, keyring: KeyRing, deep: bool,
                   progress: Optional[ProgressFn]) -> list[str]:
    folder = app_metadata(backup_set)["folders"][name]
    try:
        listing = _read_list(backup_set, name)
        if not deep:
            return []
        seen = read_tar_members(backup_set.open_artifact(COMPONENT, folder["artifact"], keyring), progress)
    except (IntegrityError, FormatError, NotFound, RestoreFailed) as err:
        return [f"{backup_set.set_id}: {err}"]
    expected = {e["path"]: expected_member(e) for e in listing["entries"]
                if e["type"] != "file" or e.get("link_to") or e.get("stored_in") == backup_set.set_id}
    return [f"{backup_set.set_id}: {p}" for p in compare_members(expected, seen)]


def expected_member(entry: dict[str, Any]) -> dict[str, Any]:
    """What the tar member of a file list entry must say (see :func:`read_tar_members`)."""
    kind = "hardlink" if entry.get("link_to") else entry["type"]
    facts = {"type": kind, "mode": entry["mode"], "uid": entry["uid"], "gid": entry["gid"],
             "mtime": entry["mtime_ns"] // 1_000_000_000, "xattrs": entry_xattrs(entry)}
    if kind == "symlink":
        facts.update(target=entry["target"], mode=None, xattrs={})
    elif kind == "hardlink":
        facts["target"] = entry["link_to"]
    elif kind == "file":
        facts.update(sha256=entry["sha256"], size=entry["size"],
                     sparse=[list(r) for r in entry["sparse"]] if entry.get("sparse") else None)
    return facts


def compare_members(expected: dict[str, dict[str, Any]], seen: dict[str, dict[str, Any]]) -> list[str]:
    """Differences between the members a file list promises and those a tar holds, one line each."""
    problems = [f"{p} is listed but not stored" for p in expected if p not in seen]
    problems += [f"{p} is stored but not listed" for p in seen if p not in expected]
    for path, want in expected.items():
        got = seen.get(path)
        if got is None:
            continue
        if got["type"] != want["type"]:
            problems.append(f"{path} is stored as a {got['type']}, listed as a {want['type']}")
            continue
        problems += [f"{path}: {key} differs from the file list" for key in sorted(want)
                     if key != "type" and want[key] is not None and got.get(key) != want[key]]
    return problems


def read_tar_members(source: BinaryIO, progress: Optional[ProgressFn] = None) -> dict[str, dict[str, Any]]:
    """Every member of a tar stream: path -> type, mode, uid, gid, mtime (s), xattrs, link target,
    and for files size, sparse map and SHA-256 (of the data regions for a file with holes). Writes nothing."""
    out: dict[str, dict[str, Any]] = {}
    meter = ProgressMeter("files verify", progress)
    done = [0]
    try:
        with source, tarfile.open(fileobj=source, mode="r|", encoding=_TAR_ENCODING, errors=_TAR_ERRORS) as tar:
            for member in tar:
                out[safe_member_path(member.name).as_posix()] = _member_facts(tar, member, meter, done)
    except tarfile.TarError as err:
        raise FormatError(f"files verify: broken tar stream ({err})") from err
    meter.finish()
    return out


def _member_facts(tar: tarfile.TarFile, member: tarfile.TarInfo, meter: ProgressMeter,
                  done: list[int]) -> dict[str, Any]:
    kind = ("dir" if member.isdir() else "symlink" if member.issym() else "hardlink" if member.islnk()
            else "file" if member.isreg() else "special")
    facts: dict[str, Any] = {"type": kind, "mode": member.mode, "uid": member.uid, "gid": member.gid,
                             "mtime": int(member.mtime), "xattrs": member_xattrs(member)}
    if kind in ("symlink", "hardlink"):
        facts["target"] = member.linkname
    if kind != "file":
        return facts
    digest = hashlib.sha256()
    src = tar.extractfile(member)
    regions = member.sparse if member.sparse is not None else [(0, member.size)]
    reader = src.raw if member.sparse is not None else src  # data regions only, not the holes' zeros
    for offset, length in regions:
        if member.sparse is not None:
            reader.seek(offset)
        left = length
        while left > 0:
            data = reader.read(min(CHUNK, left))
            if not data:
                break
            digest.update(data)
            left -= len(data)
            done[0] += len(data)
            meter.update(done[0])
    facts.update(sha256=digest.hexdigest(), size=member.size,
                 sparse=[list(r) for r in member.sparse] if member.sparse is not None else None)
    return facts


def hash_tar_members(source: BinaryIO, progress: Optional[ProgressFn] = None) -> dict[str, str]:
    """SHA-256 of every regular file member of a tar stream (path -> hex); writes nothing."""
    return {p: f["sha256"] for p, f in read_tar_members(source, progress).items() if f["type"] == "file"}


def describe_plan(result: dict[str, Any]) -> str:
    """One line per folder for logs: name, target, chain length."""
    return "; ".join(f"{n} -> {f['target']} ({len(f['chain'])} set(s))" for n, f in result["folders"].items())


# ----------------------------------------------------------------------------- entry points for modules

def plan_files_backup(paths: dict[str, str], *, include: Optional[list[str]] = None,
                      exclude: Optional[list[str]] = None) -> dict[str, Any]:
    """Check-mode plan: per folder the entry count and bytes a full backup would read (stat only:
    holes and further names of hard-linked files are not read, so not counted)."""
    if not paths:
        raise ConfigError("files backup: 'paths' is empty", hint="give at least one name: folder pair")
    path_filter = PathFilter(tuple(include or ()), tuple(exclude or ()))
    folders: dict[str, Any] = {}
    for name, folder in paths.items():
        check_folder_name(name)
        count = size = 0
        inodes: set[tuple[int, int]] = set()
        for _rel, st in scan_tree(Path(folder), path_filter):
            if special_kind(st.st_mode) is not None:
                continue  # reported by the backup itself, once
            count += 1
            size += bytes_to_read(st, inodes)
        folders[name] = {"root": folder, "entries": count, "bytes": size}
    return {"folders": folders, "approx_bytes": sum(f["bytes"] for f in folders.values())}


def bytes_to_read(st: os.stat_result, inodes: set[tuple[int, int]]) -> int:
    """The bytes a backup reads for an entry: a regular file's size, its allocated bytes when it
    has holes (only the data is read), 0 for a further name of an inode already counted (``inodes``)."""
    if not stat.S_ISREG(st.st_mode):
        return 0
    if st.st_nlink > 1:
        if (st.st_dev, st.st_ino) in inodes:
            return 0
        inodes.add((st.st_dev, st.st_ino))
    return min(st.st_size, st.st_blocks * 512) if may_be_sparse(st) else st.st_size


def run_files_backup(store_root: str, keyring: KeyRing, paths: dict[str, str], *, include: Optional[list[str]] = None,
                     exclude: Optional[list[str]] = None, incremental_from: Optional[str] = None,
                     codec: Any = None, set_type: str = "app", quick_verify: bool = True,
                     progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Back up ``paths`` into a new published set of ``set_type`` (all or nothing); return the summary
    (:func:`components.run_backup` with this engine)."""
    return components.run_backup(ENGINE, store_root, keyring, paths,
                                 {"include": include, "exclude": exclude, "incremental_from": incremental_from},
                                 codec=codec, set_type=set_type, quick_verify=quick_verify, progress=progress)


def open_set_or_latest(store: Store, set_id: Optional[str]) -> Any:
    """``store.open_set(set_id)``, or the newest set holding ``app`` for ``None``/``'latest'`` (NotFound if none)."""
    return components.open_set(store, ENGINE, set_id)


def run_files_restore(store_root: str, keyring: KeyRing, set_id: Optional[str] = None, *,
                      targets: Optional[dict[str, str]] = None, names: Optional[list[str]] = None,
                      check_mode: bool = False, progress: Optional[ProgressFn] = None,
                      docker_host: Optional[str] = None) -> dict[str, Any]:
    """Open the store and set (``None``/``'latest'`` = newest) and :func:`restore_files_from` it."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store

    store = Store(store_root)
    backup_set = open_set_or_latest(store, set_id)
    if not check_mode:
        backup_set.data_key(keyring)  # fail on a wrong key before touching anything
    return restore_files_from(store, backup_set, keyring, targets=targets, names=names, check_mode=check_mode,
                              progress=progress, docker_host=docker_host)


# ----------------------------------------------------------------------------- the component engine

class FilesEngine:
    """``app``: application folders as tar streams with a files list, full or incremental.

    Backup ``source``: ``{name: folder}``; ``options``: ``include``, ``exclude``,
    ``incremental_from`` (resolved to the parent set before the set is begun). Restore
    ``options``: ``targets``, ``names``, ``check_mode``, ``stamp`` (:func:`restore_files_from`).
    Verify: every stored file hashed against its list (``full``), or the lists read (``quick``).
    No server, so no scratch server.
    """

    name = COMPONENT
    set_noun = "application files"
    backup_module = "lifeboat.dr.files_backup"
    restore_method = "every file decrypted and hashed against its list"
    progress_from_writer = False

    def codec(self, requested: Any) -> Any:
        return requested

    def plan_backup(self, source: dict[str, str], options: dict[str, Any]) -> dict[str, Any]:
        return plan_files_backup(source, include=options.get("include"), exclude=options.get("exclude"))

    def prepare_backup(self, store: Store, keyring: KeyRing, source: dict[str, str],
                       options: dict[str, Any]) -> Optional[int]:
        plan = self.plan_backup(source, options)
        options["parent"] = resolve_parent(store, options.get("incremental_from"))
        return plan["approx_bytes"]

    def backup_into(self, writer: SetWriter, source: dict[str, str], options: dict[str, Any], *, keyring: KeyRing,
                    progress: Optional[ProgressFn] = None) -> dict[str, Any]:
        return backup_files_into(writer, source, include=options.get("include"), exclude=options.get("exclude"),
                                 parent=options.get("parent"), progress=progress)

    def backup_summary(self, meta: dict[str, Any]) -> dict[str, Any]:
        return dict(meta)

    def restore_from(self, store: Store, backup_set: BackupSet, keyring: KeyRing, target: Optional[dict[str, str]],
                     options: dict[str, Any], *, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
        return restore_files_from(store, backup_set, keyring, targets=target, progress=progress, **options)

    def verify(self, store: Store, backup_set: BackupSet, keyring: KeyRing, mode: str, options: dict[str, Any],
               measured: dict[str, float]) -> list[dict[str, Any]]:
        report = verify_files_from(store, backup_set, keyring, deep=mode == "full")
        return [components.check(f"app folder {name}", not f["problems"], "; ".join(f["problems"]) or
                                 f"chain {', '.join(f['chain'])}", f"app/{name}")
                for name, f in report["folders"].items()]

    def scratch_server(self, options: dict[str, Any]) -> None:
        return None


ENGINE = components.register(FilesEngine())
