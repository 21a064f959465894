# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit trail: a hash-chained JSON-lines log of every operation.

``<store>/audit/audit.jsonl`` holds one JSON object per line::

    {"seq": 1, "time": "2025-01-29T02:00:00.000000Z",
     "actor": {"user": "backup", "host": "backup1", "awx_job_id": "42"},
     "action": "backup", "target": "full_20250129T020000Z_a1b2c3", "result": "ok",
     "details": {...}, "prev_hash": "<64 hex>", "hash": "<64 hex>"}

Contracts:

* ``hash`` = SHA-256 (hex) of the canonical JSON of the record without ``hash``
  (``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``);
  ``prev_hash`` is the previous record's ``hash`` (64 zeros for the first); ``seq``
  counts from 1. ``<store>/audit/head.json`` (``{"seq", "hash"}``, written
  atomically after each append) anchors the end of the chain, so removing the last
  records is detected too.
* :func:`append` holds an exclusive ``flock`` on the log for read-last + write +
  fsync + head update, so concurrent writers (processes or threads) never fork the chain.
* :func:`verify` names the first line that was edited, removed or moved.
* Nothing secret is recorded: detail keys that look like secrets (password, token,
  secret, private key, data key, wrapped key) are replaced by ``"[redacted]"``.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import re
import socket
from pathlib import Path
from typing import Any, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import format_time, utc_now
from ansible_collections.lifeboat.dr.plugins.module_utils.util.fsutil import (
    make_private_dirs,
    store_root,  # noqa: F401 - re-exported
    write_file_atomic,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

AUDIT_DIR = "audit"
AUDIT_FILE = "audit.jsonl"
HEAD_FILE = "head.json"
GENESIS_HASH = "0" * 64
REDACTED = "[redacted]"
ACTIONS = ("backup", "verify", "restore", "pitr", "prune", "key_rotation", "schedule", "drill", "binlog_archive")
_SECRET_KEY_RE = re.compile(r"(password|passwd|token|secret|private|data_key|wrapped|credential|api_key)", re.I)

log = get_logger("audit")


def audit_path(store: Union[str, Path]) -> Path:
    """``<store>/audit/audit.jsonl``."""
    return store_root(store) / AUDIT_DIR / AUDIT_FILE


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no spaces, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 hex over the canonical JSON of ``record`` without its ``hash`` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def current_actor() -> dict[str, Optional[str]]:
    """Who acts: OS user, host name, and the AWX job id (env ``AWX_JOB_ID``/``TOWER_JOB_ID``) if any."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"user": user, "host": socket.gethostname(),
            "awx_job_id": os.environ.get("AWX_JOB_ID") or os.environ.get("TOWER_JOB_ID") or None}


def redact(value: Any) -> Any:
    """A JSON-friendly copy of ``value`` with secret-looking keys replaced by ``[redacted]``."""
    if isinstance(value, dict):
        return {str(k): (REDACTED if _SECRET_KEY_RE.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _last_record(handle: Any) -> Optional[dict[str, Any]]:
    """The last complete JSON line of an open log (``None`` if empty)."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    block = 4096
    data = b""
    pos = size
    while pos > 0:
        step = min(block, pos)
        pos -= step
        handle.seek(pos)
        data = handle.read(step) + data
        lines = [ln for ln in data.split(b"\n") if ln.strip()]
        if len(lines) >= 2 or (pos == 0 and lines):
            return json.loads(lines[-1])
    return None


def append(store: Union[str, Path], action: str, target: str, result: str, **details: Any) -> dict[str, Any]:
    """Append one hash-chained record; returns it. Atomic w.r.t. other appenders (flock).

    ``action``: what was done (``backup``, ``verify``, ``restore``, ``pitr``, ``prune``,
    ``key_rotation``, ``schedule``, ``drill``...); ``target``: what it was done to (set id,
    host, path); ``result``: ``ok``, ``failed``, ``changed``, ``unchanged``...;
    ``details``: small, non-secret JSON data (secret-looking keys are redacted).
    """
    path = audit_path(store)
    make_private_dirs(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "r+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            last = _last_record(handle)
            record: dict[str, Any] = {
                "seq": int(last["seq"]) + 1 if last else 1,
                "time": format_time(utc_now()),
                "actor": current_actor(),
                "action": str(action),
                "target": str(target),
                "result": str(result),
                "details": redact(details),
                "prev_hash": last["hash"] if last else GENESIS_HASH,
            }
            record["hash"] = record_hash(record)
            handle.seek(0, os.SEEK_END)
            handle.write(canonical_json(record) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
            write_file_atomic(path.parent / HEAD_FILE, canonical_json({"seq": record["seq"], "hash": record["hash"]}))
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return record


def safe_append(store: Union[str, Path, None], action: str, target: str, result: str, **details: Any) -> None:
    """:func:`append`, but a failure to write the trail is logged, never raised."""
    if not store:
        return
    try:
        append(store, action, target, result, **details)
    except (OSError, ValueError, TypeError) as err:
        log.warning("could not append to the audit trail of %s: %s", store, err)


def read_records(store: Union[str, Path]) -> list[dict[str, Any]]:
    """Every parseable record, in file order (unparseable lines are skipped)."""
    path = audit_path(store)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def verify(store: Union[str, Path]) -> dict[str, Any]:
    """Check the chain. Returns ``{"ok", "records", "problems": [{"line", "problem"}], "path"}``.

    Line numbers are 1-based lines of ``audit.jsonl``. Detected: an edited record (its
    hash does not match its content), a removed record (``prev_hash``/``seq`` do not follow
    on), a reordered one (``seq`` goes backwards), an unparseable line, and records removed
    from the end (the chain ends before ``head.json``).
    """
    path = audit_path(store)
    problems: list[dict[str, Any]] = []
    count = 0
    prev_hash, prev_seq = GENESIS_HASH, 0
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            problems.append({"line": number, "problem": "not valid JSON (edited or truncated)"})
            continue
        count += 1
        problems.extend(_check_link(number, record, prev_hash, prev_seq))
        prev_hash, prev_seq = record.get("hash"), _as_int(record.get("seq"))
    head = _read_head(path.parent / HEAD_FILE)
    if head and (head.get("seq") != prev_seq or head.get("hash") != prev_hash):
        problems.append({"line": len(lines) + 1,
                         "problem": f"the log ends at record {prev_seq} but head.json names record {head.get('seq')}: "
                                    "records were removed from the end"})
    return {"ok": not problems, "records": count, "problems": problems, "path": str(path)}


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _check_link(number: int, record: dict[str, Any], prev_hash: Optional[str], prev_seq: int) -> list[dict[str, Any]]:
    """Problems of one record against its predecessor."""
    found = []
    if record.get("hash") != record_hash(record):
        found.append({"line": number, "problem": f"record {record.get('seq')} was edited (its hash does not match)"})
    seq = _as_int(record.get("seq"))
    if seq <= prev_seq:
        found.append({"line": number, "problem": f"record {seq} comes after record {prev_seq}: records were reordered"})
    elif seq != prev_seq + 1:
        found.append({"line": number, "problem": f"records {prev_seq + 1}..{seq - 1} before this line were removed"})
    elif record.get("prev_hash") != prev_hash:
        found.append({"line": number, "problem": f"record {seq} does not chain to the line before it "
                                                 "(prev_hash differs): a record was removed, replaced or moved"})
    return found


def _read_head(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
