# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streaming artifact pipeline: plaintext -> compress -> encrypt -> SHA-256 -> file, and back.

Writing (:func:`open_artifact_writer`) runs three stages that overlap:

* the caller's thread: cuts ``write()`` calls into 1 MiB blocks (no copy for ``bytes``);
* a compression thread: codec -> cuts the compressed stream into ``chunk_size`` chunks,
  copying each compressed byte at most once;
* a sealing thread: SHA-256 of the plaintext blocks (handed on by the compressor, in
  order), AES-256-GCM per chunk (see :mod:`crypto`) into a reused buffer, SHA-256 of the
  stored bytes, write to a temporary file.

The compressor is the slowest stage; everything else is kept off its thread and off the
caller's thread (which usually has its own work: reading files, a database socket).
Stages talk through bounded :class:`queue.Queue` s, so memory stays bounded whatever the
input size (about ``QUEUE_DEPTH x (2 MiB + chunk_size)`` plus the codec's window).
zstandard, zlib, hashlib and cryptography release the GIL on large buffers, so the stages
really run in parallel.

The destination appears atomically: the temp file ``.<name>.<random>.incomplete`` in the
same directory is fsynced and renamed onto ``dest`` only by :meth:`ArtifactWriter.close`;
a crash or kill leaves at most that temp file, never a partial ``dest``.

Reading (:func:`open_artifact_reader`) is the reverse, in one pass, with a reading/
decrypting thread (whole records read straight into fresh buffers, no re-buffering), a
decompressing thread and a plaintext-hashing thread; nothing is handed out before its
chunk authenticated, and the end is reported only after every hash matched. Errors
surface at the chunk where they happen, as the classes of :mod:`crypto` describe.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import queue
import secrets
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.format import crypto
from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    BackupFailed,
    ConfigError,
    InsufficientSpace,
    LifeboatError,
    NotFound,
    PermissionDenied,
    TamperedData,
    TruncatedData,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import fsync_dir
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import ProgressFn, ProgressMeter

BLOCK_SIZE = 1 << 20  # plaintext block handed from the caller to the compressor
QUEUE_DEPTH = 4  # items per inter-stage queue
TEMP_SUFFIX = ".incomplete"
_POLL_S = 0.1
_EOF = None
DEFAULT_CODEC = Codec()  # zstd level 3, one zstd worker thread


class _Stopped(Exception):
    """Internal: the pipeline was aborted while a stage waited."""


class _Stages:
    """Shared stop flag, first error and queue helpers of one pipeline's threads."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self.threads: list[threading.Thread] = []

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.stop.set()

    def put(self, q: queue.Queue, item: Any) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped()
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue) -> Any:
        while True:
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                if self.stop.is_set():
                    raise _Stopped() from None

    def start(self, name: str, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: B036 - handed to the caller's thread
                self.fail(exc)

        thread = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join()


def _io_error(action: str, path: Path, exc: OSError) -> LifeboatError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientSpace(f"no space left while {action} {path}",
                                 hint="free space in the store or prune old sets")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"permission denied while {action} {path}", hint="check ownership of the store")
    if exc.errno == errno.ENOENT:
        return NotFound(f"{path} does not exist ({action})")
    return BackupFailed(f"{action} {path} failed: {exc.strerror or exc}")


def encryption_record(chunk_size: int) -> dict[str, Any]:
    """The ``encryption`` entry of an artifact record."""
    return {"algorithm": crypto.ALGORITHM, "chunk_size": chunk_size, "kdf": crypto.KDF,
            "format_version": crypto.FORMAT_VERSION}


class ArtifactWriter:
    """Write-only binary stream producing one artifact file (see :func:`open_artifact_writer`).

    ``write(b)`` accepts any bytes-like object and returns ``len(b)``. :meth:`close`
    finishes, fsyncs, renames the temp file onto ``dest`` and returns the artifact
    record; :meth:`abort` (also on an exception inside ``with``) removes the temp file.
    Neither is called implicitly on garbage collection except abort: an unclosed writer
    never publishes ``dest``. One writer is used from one thread.
    """

    def __init__(self, dest: Path, *, data_key: bytes, set_id: str, artifact_path: str, codec: Codec,
                 chunk_size: int, total_bytes: Optional[int], progress: Optional[ProgressFn]) -> None:
        self.dest = Path(dest)
        self.artifact_path = artifact_path
        self.codec = codec
        self.chunk_size = chunk_size
        self._sealer = crypto.ChunkSealer(data_key, set_id, artifact_path, codec.codec_id, chunk_size)
        self._compressor = codec.compressor()
        if self.dest.exists():
            raise ConfigError(f"artifact {self.dest} already exists", hint="artifacts are never overwritten; "
                              "write into a new backup set")
        self.temp_path = self.dest.with_name(f".{self.dest.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            raise _io_error("creating", self.temp_path, exc) from exc
        self._file: BinaryIO = os.fdopen(fd, "wb", buffering=0)
        self._plain_hash = hashlib.sha256()
        self._stored_hash = hashlib.sha256()
        self._writeback = EarlyWriteback(self._file.fileno())
        self.plaintext_size = 0
        self.stored_size = 0
        self._pending = bytearray()
        self._raw_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self._chunk_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self._meter = ProgressMeter(f"write {artifact_path}", progress, total_bytes)
        self._stages = _Stages()
        self.closed = False
        self.record: Optional[dict[str, Any]] = None
        self._stages.start(f"lifeboat-compress-{artifact_path}", self._compress_stage)
        self._stages.start(f"lifeboat-seal-{artifact_path}", self._seal_stage)

    # -- caller's side ---------------------------------------------------------------
    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        """No-op (data is pushed through the stages as blocks fill; :meth:`close` finishes)."""

    def write(self, data: Any) -> int:
        """Take bytes-like ``data``; returns its length in bytes.

        ``bytes`` are handed on without a copy (whole 1 MiB blocks are slices of them);
        mutable buffers are copied once, so the caller may reuse them at once.
        """
        if self.closed:
            raise ValueError("write to a closed ArtifactWriter")
        with memoryview(data) as raw, raw.cast("B") as view:
            size = len(view)
            pos = self._top_up_pending(view)
            immutable = isinstance(data, bytes)
            while size - pos >= BLOCK_SIZE:
                block = view[pos:pos + BLOCK_SIZE]
                self._emit(block if immutable else block.tobytes())
                pos += BLOCK_SIZE
            if pos < size:
                self._pending += view[pos:]
        self.plaintext_size += size
        self._meter.update(self.plaintext_size, self.stored_size)
        return size

    def hand_over(self, block: bytearray) -> int:
        """Take ``block`` without copying it: the caller must never touch it again.

        A whole :data:`BLOCK_SIZE` block at a block boundary goes to the compressor as it
        is; anything else is written as by :meth:`write`. Returns its length in bytes.
        """
        if self.closed:
            raise ValueError("write to a closed ArtifactWriter")
        if self._pending or len(block) != BLOCK_SIZE:
            return self.write(block)
        self._emit(block)
        self.plaintext_size += BLOCK_SIZE
        self._meter.update(self.plaintext_size, self.stored_size)
        return BLOCK_SIZE

    def _top_up_pending(self, view: memoryview) -> int:
        """Complete a partly filled block from ``view``; returns how many bytes of it were used."""
        if not self._pending:
            return 0
        used = min(len(view), BLOCK_SIZE - len(self._pending))
        self._pending += view[:used]
        if len(self._pending) == BLOCK_SIZE:
            self._emit(self._pending)  # handed over: the writer never touches it again
            self._pending = bytearray()
        return used

    def writelines(self, lines: Iterable[Any]) -> None:
        for line in lines:
            self.write(line)

    def _emit(self, block: Any) -> None:
        """Queue an immutable (or handed-over) plaintext block for the compressor."""
        self._put(self._raw_q, block)

    def _put(self, q: queue.Queue, item: Any) -> None:
        try:
            self._stages.put(q, item)
        except _Stopped:
            self._raise_stage_error()

    def _raise_stage_error(self) -> None:
        exc = self._stages.error
        self.abort()
        if isinstance(exc, LifeboatError):
            raise exc
        if isinstance(exc, OSError):
            raise _io_error("writing", self.temp_path, exc) from exc
        raise BackupFailed(f"writing artifact {self.artifact_path!r} failed: {exc!r}") from exc

    def close(self) -> dict[str, Any]:
        """Finish the artifact and publish ``dest`` atomically; returns the ArtifactRecord.

        Calling it again returns the same record. On failure the temp file is removed
        and the error raised.
        """
        if self.record is not None:
            return self.record
        if self.closed:
            raise ValueError("the ArtifactWriter was aborted")
        try:
            if self._pending:
                self._emit(self._pending)
                self._pending = bytearray()
            self._put(self._raw_q, _EOF)
            self._stages.join()
            if self._stages.error is not None:
                self._raise_stage_error()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.temp_path, self.dest)
            fsync_dir(self.dest.parent)
        except OSError as exc:
            self.abort()
            raise _io_error("writing", self.temp_path, exc) from exc
        except BaseException:
            self.abort()
            raise
        self.closed = True
        self._meter.update(self.plaintext_size, self.stored_size)
        self._meter.finish()
        self.record = {
            "path": self.artifact_path,
            "stored_size": self.stored_size,
            "stored_sha256": self._stored_hash.hexdigest(),
            "plaintext_size": self.plaintext_size,
            "plaintext_sha256": self._plain_hash.hexdigest(),
            "compression": self.codec.to_manifest(),
            "encryption": encryption_record(self.chunk_size),
            "chunks": self._sealer.next_index,
        }
        return self.record

    def abort(self) -> None:
        """Stop the stages and remove the temp file; ``dest`` is not created. Idempotent."""
        if self.closed and self.record is not None:
            return
        self.closed = True
        self._stages.stop.set()
        self._stages.join()
        try:
            self._file.close()
        except OSError:
            pass
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            try:
                self.abort()
            except Exception:  # pragma: no cover - interpreter shutdown
                pass

    # -- stage threads ---------------------------------------------------------------
    def _compress_stage(self) -> None:
        """raw blocks -> (plaintext block, [chunks], final) items for the sealer, in order."""
        chunker = _Chunker(self.chunk_size)
        compress = self._compressor.compress
        while True:
            block = self._stages.get(self._raw_q)
            if block is _EOF:
                chunker.add(self._compressor.flush())
                self._stages.put(self._chunk_q, (None, chunker.take_rest(), True))
                return
            chunker.add(compress(block))
            self._stages.put(self._chunk_q, (block, chunker.take_full(), False))

    def _seal_stage(self) -> None:
        """Hash plaintext, seal chunks, hash and write the stored bytes (the last item is final)."""
        self._write_stored(self._sealer.header_bytes())
        out = bytearray(self.chunk_size + crypto.TAG_SIZE)
        while True:
            plain, chunks, final = self._stages.get(self._chunk_q)
            if plain is not None:
                self._plain_hash.update(plain)
            last = len(chunks) - 1
            for i, chunk in enumerate(chunks):
                self._write_stored(self._sealer.seal_into(chunk, final and i == last, out))
            if final:
                self._write_stored(self._sealer.trailer())
                return

    def _write_stored(self, data: Any) -> None:
        """Hash and write ``data`` (bytes-like; not kept after the call)."""
        self._stored_hash.update(data)
        with memoryview(data) as whole:
            view = whole
            while view:
                written = self._file.write(view)
                view = view[written:]
            self.stored_size += len(whole)
        self._writeback.written(self.stored_size)


WRITEBACK_WINDOW = 8 << 20  # bytes: start the disk write of each such stretch as soon as it is written


class EarlyWriteback:
    """Starts the disk write of an artifact's bytes while the rest is still being produced.

    Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` on every completed
    :data:`WRITEBACK_WINDOW` of the file: it queues the write and returns (it waits only
    when the device queue is full), so the final ``fsync`` at close flushes the last window
    instead of the whole artifact. Durability is unchanged (close still fsyncs); where the
    call does not exist (not Linux) or fails, nothing is done.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._started = 0  # bytes [0, _started) have been handed to the disk
        self._call = _sync_file_range()

    def written(self, size: int) -> None:
        """The file now holds ``size`` bytes; queue the disk write of every whole new window."""
        if self._call is None or size - self._started < WRITEBACK_WINDOW:
            return
        end = size - size % WRITEBACK_WINDOW
        if self._call(self._fd, self._started, end - self._started, _SYNC_FILE_RANGE_WRITE) != 0:
            self._call = None  # e.g. a file system that refuses it: fsync at close does the work
            return
        self._started = end


_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE: list = []  # [the libc function or None], looked up once


def _sync_file_range() -> Optional[Callable[..., int]]:
    if not _SYNC_FILE_RANGE:
        function = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                function = ctypes.CDLL(None, use_errno=True).sync_file_range
                function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
                function.restype = ctypes.c_int
            except (OSError, AttributeError):
                function = None
        _SYNC_FILE_RANGE.append(function)
    return _SYNC_FILE_RANGE[0]


class _Chunker:
    """Cuts a stream of immutable bytes-like pieces into ``size``-byte chunks.

    Each byte is copied at most once (a chunk that is exactly one whole piece is not
    copied at all). Every chunk but the last has exactly ``size`` bytes; the last has
    1..size bytes (0 only when the whole stream is empty).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._parts: deque = deque()
        self._len = 0

    def add(self, data: Any) -> None:
        if len(data):
            self._parts.append(data)
            self._len += len(data)

    def take_full(self) -> list[Any]:
        """Remove the chunks that are certainly not the last: while more than ``size`` bytes wait."""
        out = []
        while self._len > self.size:
            out.append(self._take(self.size))
        return out

    def take_rest(self) -> list[Any]:
        """At the end of the stream: every remaining chunk, the last one possibly short (or empty)."""
        out = self.take_full()
        out.append(self._take(self._len))
        return out

    def _take(self, size: int) -> Any:
        pieces = []
        need = size
        while need:
            part = self._parts[0]
            if len(part) <= need:
                pieces.append(self._parts.popleft())
                need -= len(part)
            else:
                view = memoryview(part)
                pieces.append(view[:need])
                self._parts[0] = view[need:]
                need = 0
        self._len -= size
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)


def open_artifact_writer(dest: Path, *, data_key: bytes, set_id: str, artifact_path: str,
                         codec: Codec = DEFAULT_CODEC, chunk_size: int = crypto.DEFAULT_CHUNK_SIZE,
                         total_bytes: Optional[int] = None, progress: Optional[ProgressFn] = None) -> ArtifactWriter:
    """Start writing the artifact ``artifact_path`` of set ``set_id`` to the file ``dest``.

    ``data_key``: the set's 32-byte data key. ``chunk_size``: bytes of compressed data per
    encrypted chunk (1..64 MiB, default 1 MiB). ``total_bytes``: expected plaintext size,
    only for progress ETA. ``dest`` must not exist; its directory must.
    """
    return ArtifactWriter(Path(dest), data_key=data_key, set_id=set_id, artifact_path=artifact_path, codec=codec,
                          chunk_size=chunk_size, total_bytes=total_bytes, progress=progress)


class _QueueSource:
    """Readable view (``read(n)``) of the authenticated compressed chunks in a queue."""

    def __init__(self, stages: _Stages, q: queue.Queue) -> None:
        self._stages = stages
        self._q = q
        self._buf = memoryview(b"")
        self.eof = False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = [bytes(self._buf)]
            self._buf = memoryview(b"")
            while not self.eof:
                parts.append(self._next())
            return b"".join(parts)
        while not self._buf and not self.eof:
            item = self._next()
            if len(item) <= size:
                return item  # the common case: a whole chunk, no copy
            self._buf = memoryview(item)
        out = bytes(self._buf[:size])
        self._buf = self._buf[size:]
        return out

    def _next(self) -> bytes:
        item = self._stages.get(self._q)
        if item is _EOF:
            self.eof = True
            return b""
        if isinstance(item, _Failure):
            raise item
        return item


class ArtifactReader(io.BufferedIOBase):
    """Read-only binary stream of an artifact's plaintext (see :func:`open_artifact_reader`)."""

    def __init__(self, src: Path, *, data_key: bytes, set_id: str, artifact_path: str,
                 record: Optional[dict[str, Any]], progress: Optional[ProgressFn]) -> None:
        super().__init__()
        self.src = Path(src)
        self.artifact_path = artifact_path
        self._record = record
        try:
            self._file: BinaryIO = open(self.src, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise _io_error("opening", self.src, exc) from exc
        try:
            self._start(data_key, set_id, artifact_path, progress)
        except BaseException:
            self._file.close()
            raise

    def _start(self, data_key: bytes, set_id: str, artifact_path: str, progress: Optional[ProgressFn]) -> None:
        self._check_stored_size()
        self._stored_hash = hashlib.sha256()
        header = self._read_exact(crypto.HEADER_SIZE)
        self._opener = crypto.ChunkOpener(header, data_key, set_id, artifact_path)
        self._stored_hash.update(header)
        self.stored_size = len(header)
        codec = Codec.from_id(self._opener.header.codec_id)
        if self._record is not None:
            declared = (self._record.get("compression") or {}).get("algorithm")
            if declared is not None and declared != codec.algorithm:
                raise TamperedData(f"artifact {artifact_path!r} is {codec.algorithm}-compressed but the manifest "
                                   f"says {declared}", hint="the manifest does not belong to this artifact")
        self._plain_hash = hashlib.sha256()
        self._plain_hashed = threading.Event()
        self.plaintext_size = 0
        self._stages = _Stages()
        self._chunk_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self._plain_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self._hash_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self._source = _QueueSource(self._stages, self._chunk_q)
        self._plain_reader = codec.decompressing_reader(self._source)
        self._buf = memoryview(b"")
        self._item = b""
        self._eof = False
        total = self._record.get("plaintext_size") if self._record else None
        self._meter = ProgressMeter(f"read {artifact_path}", progress, total)
        self._stages.start(f"lifeboat-open-{artifact_path}", self._open_stage)
        self._stages.start(f"lifeboat-decompress-{artifact_path}", self._decompress_stage)
        self._stages.start(f"lifeboat-hash-{artifact_path}", self._hash_stage)

    def _check_stored_size(self) -> None:
        if not self._record or self._record.get("stored_size") is None:
            return
        actual = os.fstat(self._file.fileno()).st_size
        expected = int(self._record["stored_size"])
        if actual < expected:
            raise TruncatedData(f"artifact {self.artifact_path!r} is {actual} bytes, the manifest says {expected}: "
                                "the file is truncated", hint=crypto._FIX_OTHER_SET)
        if actual > expected:
            raise TamperedData(f"artifact {self.artifact_path!r} is {actual} bytes, the manifest says {expected}",
                               hint=crypto._FIX_OTHER_SET)

    def _read_exact(self, size: int) -> bytes:
        parts = []
        left = size
        while left > 0:
            part = self._file.read(left)
            if not part:
                break
            parts.append(part)
            left -= len(part)
        return b"".join(parts)

    # -- stage threads ---------------------------------------------------------------
    def _open_stage(self) -> None:
        try:
            self._open_chunks()
        except _Stopped:
            raise
        except BaseException as exc:  # noqa: B036 - delivered in order, at the failing chunk
            self._stages.put(self._chunk_q, _Failure(exc))

    def _open_chunks(self) -> None:
        """Read whole records (one buffer each, decrypted in place of any re-buffering).

        A full record is the last one when at most an end marker's worth of bytes
        follows it; everything from the last record on is handled by :meth:`_open_tail`.
        """
        record_size = self._opener.record_size
        current = self._read_stored(record_size)
        while len(current) == record_size:
            following = self._read_stored(record_size)
            if len(following) <= crypto.TRAILER_SIZE:
                current += following
                break
            self._stages.put(self._chunk_q, self._opener.open(current, at_end=False))
            current = following
        self._open_tail(current)

    def _read_stored(self, size: int) -> bytes:
        """Up to ``size`` stored bytes (fewer only at the end of the file), hashed and counted."""
        data = self._file.read(size)
        if data and len(data) < size:
            parts = [data]
            left = size - len(data)
            while left and (part := self._file.read(left)):
                parts.append(part)
                left -= len(part)
            data = b"".join(parts)
        if data:
            self._stored_hash.update(data)
            self.stored_size += len(data)
        return data

    def _open_tail(self, tail: bytes) -> None:
        """The final record and the end marker (``tail`` is all the bytes left in the file)."""
        trailer = tail[-crypto.TRAILER_SIZE:] if len(tail) >= crypto.TRAILER_SIZE else b""
        if not crypto.looks_like_trailer(trailer):
            self._opener.check_tail(tail)  # raises: data after the end marker, or truncated
        self._stages.put(self._chunk_q, self._opener.open(tail[:-crypto.TRAILER_SIZE], at_end=True))
        self._opener.check_trailer(trailer)
        self._check_stored_hash()
        self._stages.put(self._chunk_q, _EOF)

    def _check_stored_hash(self) -> None:
        if not self._record or not self._record.get("stored_sha256"):
            return
        if self._stored_hash.hexdigest() != self._record["stored_sha256"]:
            raise TamperedData(f"artifact {self.artifact_path!r} authenticates but its SHA-256 differs from the "
                               "manifest: it is another write of this artifact, or the manifest is wrong",
                               hint=crypto._FIX_OTHER_SET)

    def _decompress_stage(self) -> None:
        """Plaintext blocks (at most BLOCK_SIZE bytes) to the caller and to the hashing stage."""
        try:
            while True:
                block = self._plain_reader.read(BLOCK_SIZE)
                if not block:
                    break
                self._stages.put(self._hash_q, block)
                self._stages.put(self._plain_q, block)
            if not self._source.eof and self._source.read(1):
                raise TamperedData(f"artifact {self.artifact_path!r} has data after the end of its compressed stream",
                                   hint=crypto._FIX_OTHER_SET)
            self._stages.put(self._hash_q, _EOF)
            self._stages.put(self._plain_q, _EOF)
        except _Failure as failure:
            self._end_hashing()
            self._stages.put(self._plain_q, failure)
        except _Stopped:
            raise
        except BaseException as exc:  # noqa: B036
            self._end_hashing()
            self._stages.put(self._plain_q, _Failure(exc))

    def _end_hashing(self) -> None:
        """Let the hashing stage finish at once (after a failure or on close); never blocks."""
        try:
            self._hash_q.put_nowait(_Failure(BackupFailed("the plaintext was not read to its end")))
        except queue.Full:
            pass  # the hashing stage is busy, not waiting: it sees the stop flag or this later

    def _hash_stage(self) -> None:
        """SHA-256 of the plaintext, off the caller's thread; signals when the end is hashed."""
        while True:
            block = self._stages.get(self._hash_q)
            if block is _EOF:
                self._plain_hashed.set()
                return
            if isinstance(block, _Failure):
                return  # the decompressor failed; the caller gets that error from its queue
            self._plain_hash.update(block)

    # -- caller's side ---------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def _wait_for_plain_hash(self) -> None:
        while not self._plain_hashed.wait(_POLL_S):
            if self._stages.stop.is_set():
                exc = self._stages.error
                if exc is None:
                    raise ValueError("read from a closed ArtifactReader")
                raise exc if isinstance(exc, LifeboatError) else BackupFailed(
                    f"reading artifact {self.artifact_path!r} failed: {exc!r}")

    def _fill(self) -> bool:
        """Make ``self._buf`` non-empty; False at the (verified) end of the plaintext."""
        while not self._buf:
            if self._eof:
                return False
            try:
                item = self._stages.get(self._plain_q)
            except _Stopped:
                raise ValueError("read from a closed ArtifactReader") from None
            if isinstance(item, _Failure):
                self._stages.stop.set()
                raise item.exc
            if item is _EOF:
                self._wait_for_plain_hash()
                self._eof = True
                self._verify_plaintext()
                self._meter.update(self.plaintext_size, self.stored_size)
                self._meter.finish()
                return False
            self.plaintext_size += len(item)
            self._meter.update(self.plaintext_size, self.stored_size)
            self._item = item
            self._buf = memoryview(item)
        return True

    def _take(self, size: int) -> bytes:
        """Remove and return up to ``size`` buffered bytes (the block itself when it fits)."""
        if size >= len(self._buf) and len(self._buf) == len(self._item):
            out = self._item
        else:
            out = bytes(self._buf[:size])
        self._buf = self._buf[size:]
        return out

    def _verify_plaintext(self) -> None:
        if not self._record:
            return
        size = self._record.get("plaintext_size")
        if size is not None and int(size) != self.plaintext_size:
            raise TamperedData(f"artifact {self.artifact_path!r} decompresses to {self.plaintext_size} bytes, "
                               f"the manifest says {size}", hint=crypto._FIX_OTHER_SET)
        digest = self._record.get("plaintext_sha256")
        if digest and digest != self._plain_hash.hexdigest():
            raise TamperedData(f"artifact {self.artifact_path!r}: plaintext SHA-256 differs from the manifest",
                               hint=crypto._FIX_OTHER_SET)

    def read(self, size: Optional[int] = -1) -> bytes:
        self._check_open()
        if size is None or size < 0:
            parts = []
            while self._fill():
                parts.append(self._take(len(self._buf)))
            return b"".join(parts)
        if size == 0 or not self._fill():
            return b""
        return self._take(size)

    def read1(self, size: int = -1) -> bytes:
        self._check_open()
        if not self._fill():
            return b""
        if size is None or size < 0:
            size = len(self._buf)
        return self._take(size)

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        done = 0
        while done < len(view):
            if not self._fill():
                break
            n = min(len(view) - done, len(self._buf))
            view[done:done + n] = self._buf[:n]
            self._buf = self._buf[n:]
            done += n
        return done

    def readinto1(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if not view or not self._fill():
            return 0
        n = min(len(view), len(self._buf))
        view[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def _check_open(self) -> None:
        if getattr(self, "closed", False):  # io's property (pylint takes it for a constant)
            raise ValueError("read from a closed ArtifactReader")

    def close(self) -> None:
        if getattr(self, "closed", False):
            return
        stages = getattr(self, "_stages", None)
        if stages is not None:
            stages.stop.set()
            self._end_hashing()
            stages.join()
        self._file.close()
        super().close()

    @property
    def verified(self) -> bool:
        """True once the whole plaintext was read and every check passed."""
        return self._eof


class _Failure(Exception):
    """Internal: an error travelling through a queue to be raised in the caller's thread."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.exc = exc


def open_artifact_reader(src: Path, *, data_key: bytes, set_id: str, artifact_path: str,
                         record: Optional[dict[str, Any]] = None,
                         progress: Optional[ProgressFn] = None) -> ArtifactReader:
    """Open the artifact file ``src`` and return a reader of its plaintext.

    Header problems raise at once: FormatError (not an artifact), UnknownFormatVersion,
    WrongKey (the data key does not fit), TamperedData (header), TruncatedData/TamperedData
    (size differs from ``record['stored_size']``). Later problems raise from ``read()`` at the
    chunk where they happen. At the end the plaintext size and SHA-256 (and stored SHA-256)
    are compared with ``record`` when given.
    """
    return ArtifactReader(Path(src), data_key=data_key, set_id=set_id, artifact_path=artifact_path,
                          record=record, progress=progress)


def verify_artifact(src: Path, *, data_key: bytes, set_id: str, artifact_path: str, record: dict[str, Any],
                    progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Read the whole artifact, authenticating every chunk and checking every size and hash.

    Writes nothing. Returns ``{"path", "ok": True, "stored_size", "stored_sha256",
    "plaintext_size", "plaintext_sha256", "chunks"}``; raises the reader's errors otherwise.
    """
    with open_artifact_reader(src, data_key=data_key, set_id=set_id, artifact_path=artifact_path,
                              record=record, progress=progress) as reader:
        while reader.read1(BLOCK_SIZE):
            pass
        return {
            "path": artifact_path,
            "ok": True,
            "stored_size": reader.stored_size,
            "stored_sha256": reader._stored_hash.hexdigest(),
            "plaintext_size": reader.plaintext_size,
            "plaintext_sha256": reader._plain_hash.hexdigest(),
            "chunks": reader._opener.next_index,
        }


def copy_stream(reader: Any, writer: Any, bufsize: int = BLOCK_SIZE) -> int:
    """Copy ``reader`` to ``writer`` in pieces of at most ``bufsize`` bytes; returns bytes copied."""
    total = 0
    read = getattr(reader, "read1", None) or reader.read
    while True:
        data = read(bufsize)
        if not data:
            return total
        writer.write(data)
        total += len(data)


__all__ = ["ArtifactReader", "ArtifactWriter", "BLOCK_SIZE", "copy_stream", "open_artifact_reader",
           "open_artifact_writer", "verify_artifact"]
