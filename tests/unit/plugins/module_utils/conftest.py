"""Fixtures shared by the module_utils unit tests: real TCP ports on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def listening_port():
    """A real TCP listener of this process on 127.0.0.1 (open for the test); yields its port."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        yield srv.getsockname()[1]


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 that was free a moment ago and has no listener."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port
