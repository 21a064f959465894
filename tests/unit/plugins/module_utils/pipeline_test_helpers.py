"""Shared helpers for the artifact tests: write an artifact, read it, cut it into pieces."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.format import crypto
from ansible_collections.lifeboat.dr.plugins.module_utils.format.compression import Codec
from ansible_collections.lifeboat.dr.plugins.module_utils.format.pipeline import (
    open_artifact_reader,
    open_artifact_writer,
)

SET_ID = "full_20250129T020000Z_a1b2c3"
ARTIFACT = "mysql/dump.sql.zst.enc"


@dataclass
class Artifact:
    path: Path
    key: bytes
    record: dict
    set_id: str = SET_ID
    artifact_path: str = ARTIFACT


def write_artifact(dest: Path, data: bytes, *, key: Optional[bytes] = None, chunk_size: int = 64,
                   codec: Optional[Codec] = None, set_id: str = SET_ID, artifact_path: str = ARTIFACT) -> Artifact:
    key = key or os.urandom(32)
    codec = codec or Codec("none")
    with open_artifact_writer(dest, data_key=key, set_id=set_id, artifact_path=artifact_path, codec=codec,
                              chunk_size=chunk_size) as writer:
        writer.write(data)
    return Artifact(dest, key, writer.close(), set_id, artifact_path)


def read_artifact(art: Artifact, *, path: Optional[Path] = None, key: Optional[bytes] = None,
                  set_id: Optional[str] = None, artifact_path: Optional[str] = None,
                  with_record: bool = True) -> bytes:
    with open_artifact_reader(path or art.path, data_key=key or art.key, set_id=set_id or art.set_id,
                              artifact_path=artifact_path or art.artifact_path,
                              record=art.record if with_record else None) as reader:
        return reader.read()


def split_records(raw: bytes, chunk_size: int) -> tuple[bytes, list[bytes], bytes]:
    """(header, chunk records, trailer) of an artifact file's bytes."""
    header, body, trailer = raw[:crypto.HEADER_SIZE], raw[crypto.HEADER_SIZE:-crypto.TRAILER_SIZE], \
        raw[-crypto.TRAILER_SIZE:]
    size = chunk_size + crypto.TAG_SIZE
    return header, [body[i:i + size] for i in range(0, len(body), size)] or [b""], trailer
