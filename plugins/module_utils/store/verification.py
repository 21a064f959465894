# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verification of a set's recorded artifacts and plain files (quick or full) and its report form.

:func:`verify_records` checks each record (artifacts through the pipeline's reader, plain files
by size and SHA-256) and returns one entry per record; a failure is an entry, never an exception.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import format_time, utc_now
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    LifeboatError,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import sha256_file
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    ProgressFn,
    ProgressMeter,
    get_logger,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.version import __version__

log = get_logger("store.verification")


def pipeline_module():
    """The pipeline module, imported on first use (it needs cryptography + zstandard)."""
    from ansible_collections.lifeboat.dr.plugins.module_utils.format import pipeline

    return pipeline


def _entry(kind: str, path: str, error: Optional[str]) -> dict[str, Any]:
    return {"path": path, "kind": kind, "ok": error is None, "error": error}


def describe_error(err: BaseException) -> str:
    """``<ExceptionClass>: <message>`` on one line, for a verification entry."""
    return f"{type(err).__name__}: {err}".replace("\n", " ")


VERIFY_THREADS = 2  # artifacts checked at once by verify_records (each reader has its own stage threads)


def verify_records(base: Path, set_id: str, data_key: Optional[bytes], artifacts: list[dict[str, Any]],
                   files: list[dict[str, Any]], key_error: Optional[str] = None,
                   progress: Optional[ProgressFn] = None,
                   known: Optional[dict[str, Optional[str]]] = None) -> list[dict[str, Any]]:
    """Check every artifact (size, SHA-256, every chunk authenticated, plaintext hash) and
    every JSON file (size, SHA-256) below ``base``; nothing is written to disk.

    Artifacts are checked :data:`VERIFY_THREADS` at a time. ``known``: artifact path ->
    error (``None``: passed) of the same check already done on exactly that file (an early
    read-back, see :meth:`Store.begin_set`); those are not read again. Returns one
    ``{"path", "kind", "ok", "error"}`` per entry, in the order given (artifacts, then
    files); never raises for a bad entry.
    """
    from concurrent.futures import ThreadPoolExecutor

    total = sum(int(r.get("stored_size", 0)) for r in artifacts)
    meter = ProgressMeter(f"quick verify {set_id}", progress, total_bytes=total)
    lock = threading.Lock()
    done = 0

    def check(record: dict[str, Any]) -> dict[str, Any]:
        nonlocal done
        error = key_error and f"not checked: {key_error}"
        if error is None and known is not None and record["path"] in known:
            error = known[record["path"]]
        elif error is None:
            error = verify_artifact_file(base, set_id, data_key or b"", record)
        with lock:
            done += int(record.get("stored_size", 0))
            meter.update(done, done)
        return _entry("artifact", record["path"], error)

    biggest_first = sorted(range(len(artifacts)), key=lambda i: -int(artifacts[i].get("stored_size", 0)))
    with ThreadPoolExecutor(max_workers=VERIFY_THREADS, thread_name_prefix="lifeboat-verify") as pool:
        checked = list(pool.map(check, [artifacts[i] for i in biggest_first]))
    entries: list[dict[str, Any]] = [{}] * len(artifacts)
    for k, i in enumerate(biggest_first):
        entries[i] = checked[k]
    for record in files:
        entries.append(_entry("json", record["path"], verify_plain_file(base, record)))
    meter.finish()
    return entries


def verify_artifact_file(base: Path, set_id: str, data_key: bytes, record: dict[str, Any]) -> Optional[str]:
    """Read one artifact back through the pipeline (authenticated, hashed); None if good, else why not."""
    src = base / record["path"]
    if not src.is_file():
        return f"IncompleteBackup: {record['path']} is listed in the manifest but missing from the set"
    try:
        result = pipeline_module().verify_artifact(src, data_key=data_key, set_id=set_id,
                                                   artifact_path=record["path"], record=dict(record))
    except (LifeboatError, OSError) as err:
        return describe_error(err)
    if isinstance(result, dict) and result.get("ok") is False:
        return str(result.get("error") or "verification failed")
    return None


def verify_plain_file(base: Path, record: dict[str, Any]) -> Optional[str]:
    """Check one plain file's size and SHA-256 against its record; None if good, else why not."""
    try:
        size, digest = sha256_file(base / record["path"])
    except FileNotFoundError:
        return f"IncompleteBackup: {record['path']} is listed in the manifest but missing from the set"
    except OSError as err:
        return describe_error(err)
    if size != record["size"] or digest != record["sha256"]:
        return (f"TamperedData: {record['path']} has size {size} and sha256 {digest[:16]}..., the manifest says "
                f"size {record['size']} and sha256 {record['sha256'][:16]}...")
    return None


def verification_report(set_id: str, mode: str, entries: list[dict[str, Any]],
                        error: Optional[str] = None) -> dict[str, Any]:
    """The verification report of a set: ok only when there is no error and every entry is ok."""
    return {"ok": error is None and all(e["ok"] for e in entries), "set_id": set_id, "mode": mode,
            "checked_at": format_time(utc_now()), "tool_version": __version__, "host": socket.gethostname(),
            "error": error, "artifacts": entries}
