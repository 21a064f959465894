"""Shared test set-up: the venv's bin first on PATH, and the session fixture ``lab_env``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parent.parent
VENV_BIN = REPO_DIR / ".venv" / "bin"

# testinfra's ansible backend and several tests call ansible-* and bao from the venv.
if os.environ.get("PATH", "").split(os.pathsep)[0] != str(VENV_BIN):
    os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def lab_env() -> dict[str, str]:
    """Bring the lab up (idempotent: a running lab is left as it is) and return its LAB_* values.

    The dict holds secrets (passwords, tokens): never print or log it.
    """
    import lab
    from lab import services

    services.up()
    return lab.env()
