# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compression codecs for artifact streams: zstd (default), gzip, none.

A :class:`Codec` is a frozen description (algorithm, level, worker threads).
It makes incremental compressors (``compress(data) -> bytes`` / ``flush() -> bytes``)
and bounded decompressing readers (``read(n)`` never returns more than ``n`` bytes,
so a small, highly compressed input can never make memory grow with its plaintext).

The compressed stream is a standard container: one zstd frame (``zstd -d`` reads
it), a gzip member (``gunzip`` reads it), or the plain bytes.
Both zstandard and zlib release the GIL while they work, so a compressor running
in its own thread overlaps with hashing and encryption in others.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, replace
from typing import Any, Optional, Protocol

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    DependencyMissing,
    FormatError,
    TamperedData,
)

try:
    import zstandard

    HAS_ZSTANDARD = True
except ImportError:  # pragma: no cover - only in the sanity import test
    zstandard = None
    HAS_ZSTANDARD = False

ALGORITHMS = ("zstd", "gzip", "none")
DEFAULT_LEVELS = {"zstd": 3, "gzip": 6, "none": None}
LEVEL_RANGES = {"zstd": (-7, 22), "gzip": (0, 9)}  # inclusive bounds
ZSTD_MT_JOB_SIZE = 1 << 20  # bytes of input per zstd worker job (bench/results/zstd_mt.json)
ZSTD_MT_OVERLAP_LOG = 1  # zstd's "no overlap": a worker job does not reload the previous job's tail
AUTO_THREADS = -1  # Codec.threads: automatic (one zstd worker; see Codec.for_single_stream)
SINGLE_STREAM_THREADS = 2  # zstd workers an auto codec gets for a lone stream on a multi-core host

#: Numeric codec ids stored in the artifact header (see docs/format-crypto.md).
CODEC_IDS = {"none": 0, "gzip": 1, "zstd": 2}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}


class Compressor(Protocol):
    """Incremental compressor: feed with :meth:`compress`, end with :meth:`flush` once."""

    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


def require_zstandard() -> None:
    """Raise :class:`DependencyMissing` when the zstandard library is not importable."""
    if not HAS_ZSTANDARD:
        raise DependencyMissing("the Python library 'zstandard' is needed for zstd compression",
                                hint="pip install zstandard (see requirements.txt), or use compression: gzip")


@dataclass(frozen=True)
class Codec:
    """How an artifact stream is compressed.

    ``algorithm``: ``"zstd"`` | ``"gzip"`` | ``"none"``. ``level``: ``None`` means the
    default (zstd 3, gzip 6); zstd accepts -7..22, gzip 0..9 (inclusive).
    ``threads`` (zstd only; ignored by gzip/none): N > 0 = N zstd worker threads;
    0 = zstd's streaming compressor in the calling thread; :data:`AUTO_THREADS` (-1, the
    default) = one worker, or what :meth:`for_single_stream` decides for a lone stream.
    Workers compress whole :data:`ZSTD_MT_JOB_SIZE` jobs, each from one contiguous buffer:
    even one worker takes 10-25 % less CPU than the streaming compressor, whose window spans
    the caller's separate blocks (zstd's slower "external dictionary" match finder), for
    about 8 MB more memory per artifact being written. Only algorithm and level are
    recorded in manifests; threads do not change the output format.
    """

    algorithm: str = "zstd"
    level: Optional[int] = None
    threads: int = AUTO_THREADS

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"unknown compression algorithm {self.algorithm!r}",
                              hint=f"use one of {', '.join(ALGORITHMS)}")
        if self.threads < AUTO_THREADS:
            raise ConfigError(f"compression threads must be >= 0 (or {AUTO_THREADS}: automatic), got {self.threads}")
        if self.level is not None:
            if self.algorithm == "none":
                raise ConfigError("compression level given with compression 'none'",
                                  hint="drop the level or choose zstd/gzip")
            low, high = LEVEL_RANGES[self.algorithm]
            if not low <= self.level <= high:
                raise ConfigError(f"{self.algorithm} level {self.level} is out of range",
                                  hint=f"use a level from {low} to {high}")

    @property
    def effective_level(self) -> Optional[int]:
        """The level actually used (the default when ``level`` is None; None for 'none')."""
        return self.level if self.level is not None else DEFAULT_LEVELS[self.algorithm]

    @property
    def workers(self) -> int:
        """zstd worker threads the compressor gets (0: it compresses in the calling thread)."""
        if self.algorithm != "zstd":
            return 0
        return 1 if self.threads == AUTO_THREADS else self.threads

    def for_single_stream(self, cpus: Optional[int] = None) -> Codec:
        """This codec for an artifact written alone (a tar of a folder): an automatic thread
        count becomes :data:`SINGLE_STREAM_THREADS` zstd workers when the host has 2 or more
        CPUs (``cpus``, default ``os.cpu_count()``); explicit counts are kept."""
        cpus = (os.cpu_count() or 1) if cpus is None else cpus
        if self.threads != AUTO_THREADS or self.algorithm != "zstd" or cpus < 2:
            return self
        return replace(self, threads=SINGLE_STREAM_THREADS)

    @property
    def codec_id(self) -> int:
        """The numeric id stored in artifact headers."""
        return CODEC_IDS[self.algorithm]

    def to_manifest(self) -> dict[str, Any]:
        """``{"algorithm": ..., "level": ...}`` with the effective level (None for 'none')."""
        return {"algorithm": self.algorithm, "level": self.effective_level}

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> Codec:
        """Inverse of :meth:`to_manifest` (``threads`` is not recorded: the default, automatic)."""
        try:
            algorithm = data["algorithm"]
        except (KeyError, TypeError):
            raise FormatError("compression entry has no 'algorithm'", hint="the manifest is damaged") from None
        return cls(algorithm=algorithm, level=data.get("level") if algorithm != "none" else None)

    @classmethod
    def from_id(cls, codec_id: int) -> Codec:
        """The codec for a header id (level unknown and irrelevant for reading)."""
        try:
            return cls(algorithm=CODEC_NAMES[codec_id])
        except KeyError:
            raise FormatError(f"unknown compression id {codec_id} in artifact header",
                              hint="the artifact was written by a newer Lifeboat or is damaged") from None

    def compressor(self) -> Compressor:
        """A fresh incremental compressor for one stream."""
        if self.algorithm == "zstd":
            require_zstandard()
            if self.workers:
                # 1 MiB jobs without overlap (log 1: a job does not reload the previous job's
                # tail): the least CPU and memory of the job settings measured, output within
                # 1 % of the streaming compressor's (bench/results/zstd_mt.json)
                params = zstandard.ZstdCompressionParameters.from_level(
                    self.effective_level, threads=self.workers, job_size=ZSTD_MT_JOB_SIZE,
                    overlap_log=ZSTD_MT_OVERLAP_LOG)
                return zstandard.ZstdCompressor(compression_params=params).compressobj()
            return zstandard.ZstdCompressor(level=self.effective_level).compressobj()
        if self.algorithm == "gzip":
            return zlib.compressobj(self.effective_level, zlib.DEFLATED, 31)
        return _Identity()

    def decompressing_reader(self, source: Readable) -> Readable:
        """Wrap ``source`` (compressed bytes) in a reader of plaintext.

        ``read(n)`` with ``n > 0`` returns at most ``n`` bytes, ``b""`` only at the end;
        corrupt compressed data raises :class:`TamperedData`.
        """
        if self.algorithm == "zstd":
            require_zstandard()
            return _ZstdReader(source)
        if self.algorithm == "gzip":
            return _GzipReader(source)
        return source


class Readable(Protocol):
    """Anything with ``read(n) -> bytes``."""

    def read(self, size: int = -1) -> bytes: ...


class _Identity:
    """The 'none' codec: hands data through unchanged."""

    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def _corrupt(algorithm: str, exc: Exception) -> TamperedData:
    return TamperedData(f"the authenticated {algorithm} stream does not decompress ({exc})",
                        hint="the artifact was written incorrectly; restore from another backup set")


class _ZstdReader:
    """Bounded zstd decompression over a readable source (one or more frames)."""

    def __init__(self, source: Readable) -> None:
        dctx = zstandard.ZstdDecompressor()
        self._reader = dctx.stream_reader(source, read_size=1 << 20, read_across_frames=True)

    def read(self, size: int = -1) -> bytes:
        try:
            if size is None or size < 0:
                return self._reader.readall()
            return self._reader.read(size)
        except zstandard.ZstdError as exc:
            raise _corrupt("zstd", exc) from exc


class _GzipReader:
    """Bounded gzip decompression: output per call is capped with ``max_length``."""

    def __init__(self, source: Readable, read_size: int = 1 << 20) -> None:
        self._source = source
        self._read_size = read_size
        self._dobj = zlib.decompressobj(31)
        self._pending = b""
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while True:
                part = self.read(1 << 20)
                if not part:
                    return b"".join(parts)
                parts.append(part)
        if size == 0:
            return b""
        try:
            return self._read_bounded(size)
        except zlib.error as exc:
            raise _corrupt("gzip", exc) from exc

    def _read_bounded(self, size: int) -> bytes:
        while True:
            if self._pending:
                out = self._dobj.decompress(self._pending, size)
                self._pending = self._dobj.unconsumed_tail
                if self._dobj.eof and self._dobj.unused_data:
                    # a further gzip member follows (as gunzip accepts): continue with it
                    self._pending = self._dobj.unused_data + self._pending
                    self._dobj = zlib.decompressobj(31)
                if out:
                    return out
                continue
            if self._eof:
                out = self._dobj.decompress(b"", size)  # output zlib still holds back
                if out:
                    return out
                if not self._dobj.eof:
                    raise zlib.error("the gzip stream ends before its end marker")
                return b""
            chunk = self._source.read(self._read_size)
            if not chunk:
                self._eof = True
            else:
                self._pending = chunk


def lone_stream_codec(set_codec: Optional[Codec]) -> Codec:
    """The codec of an artifact that is written alone, one stream for the whole component (a folder's
    tar, a physical backup's mbstream): the set's codec (zstd 3 when it has none) with an automatic
    thread count resolved by :meth:`Codec.for_single_stream` - one stream alone would leave the
    second core idle. Explicit thread counts are kept."""
    return (set_codec or Codec()).for_single_stream()
