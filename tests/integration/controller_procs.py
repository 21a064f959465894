"""Helpers of the tests that run ansible-playbook as a child and kill it: read its output up to a
line, and find every process below it (Ansible's workers run in their own sessions)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from ansible_collections.lifeboat.dr.plugins.module_utils.store import locks


def read_until(proc: subprocess.Popen, text: str, timeout_s: float = 300.0) -> str:
    """The controller's output up to the first line containing ``text`` (fails if it exits first)."""
    seen = []
    deadline = time.monotonic() + timeout_s
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
        assert time.monotonic() < deadline, "".join(seen)[-3000:]
    raise AssertionError(f"the playbook ended before {text!r}: {''.join(seen)[-3000:]}")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children found via /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = locks.process_stat(int(entry.name))
            if stat:
                children.setdefault(stat[1], []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out
