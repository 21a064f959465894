"""Run a lifeboat.dr module as Ansible runs it: a process reading its arguments from a JSON file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PACKAGE = "ansible_collections.lifeboat.dr.plugins.modules."


def run_module(tmp_path: Path, name: str, args: dict, check_mode: bool = False, timeout: float = 120) -> dict:
    """Run module ``name`` with ``args``; return its JSON result (``failed`` set on failure)."""
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    args_file = tmp_path / f"args-{name}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run([sys.executable, "-m", PACKAGE + name, str(args_file)], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)
