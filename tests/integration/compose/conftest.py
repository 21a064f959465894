"""The compose lab for the tests of this folder: brought up once per session (idempotent) and left running.

Needs root and podman (CI runs as root; `make setup` installs podman): skipped with the
reason otherwise. The first run on a machine builds the lab image (minutes); later runs
reuse it.
"""

from __future__ import annotations

import os
import shutil

import pytest


def compose_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the compose lab needs root (rootful podman, bridge address, guard route)"
    for tool in ("podman", "runc", "debootstrap"):
        if not shutil.which(tool):
            return f"{tool} is missing (make setup installs it)"
    return None


@pytest.fixture(scope="session")
def compose_lab():
    """The running compose lab's :class:`ComposeLayout` (up once per session)."""
    reason = compose_unavailable()
    if reason:
        pytest.skip(reason)
    from lab.compose import lab as compose_lab

    compose_lab.up()
    return compose_lab.load_compose_layout()


@pytest.fixture(scope="session")
def docker_client(compose_lab):
    """A docker SDK client on the lab's podman API socket (``DOCKER_HOST`` of ``lab env``)."""
    from lab.compose import lab as compose_lab_module

    return compose_lab_module.docker_client(compose_lab)
