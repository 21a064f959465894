# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""File-system primitives defined once for the whole core (internal API of ``lifeboat.dr``).

The bottom layer: imports only ``errors`` from the collection, so every other module can use it.
``fsync_dir`` (make names in a folder durable), ``write_all`` (the loop that writes a
whole buffer to a file descriptor), ``sha256_file`` (size and digest of a file),
``store_root`` (the root folder of a store given as a path, a string or a ``Store``),
``make_private_dirs`` (0700 folders, parents fsynced) and ``write_file_atomic`` (a 0600
file written whole or not at all).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Protocol, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError

READ_SIZE = 1 << 20


class HasRoot(Protocol):
    """Anything with a ``root`` folder (a :class:`catalog.Store`)."""

    root: Union[str, Path]


def fsync_dir(path: Union[str, Path]) -> None:
    """fsync a folder so that the names in it (creations, renames) are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    with memoryview(data) as whole:
        view = whole
        while len(view):
            view = view[os.write(fd, view):]


def sha256_file(path: Union[str, Path], bufsize: int = READ_SIZE) -> tuple[int, str]:
    """``(size in bytes, hex SHA-256)`` of a file, read in ``bufsize`` blocks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(bufsize), b""):
            size += len(block)
            digest.update(block)
    return size, digest.hexdigest()


def store_root(store: Union[str, Path, HasRoot]) -> Path:
    """The root folder of ``store`` (a :class:`catalog.Store`, a path or a string)."""
    if isinstance(store, (str, Path)):
        return Path(store)
    return Path(store.root)


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and missing parents 0700; fsync the parent of each one created."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)
        fsync_dir(folder.parent)
    if not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder", hint="point the store at a folder")


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) atomically: temp name, fsync, rename, fsync folder."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
