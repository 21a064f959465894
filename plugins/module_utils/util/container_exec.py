# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a command in a container through the Docker API (docker SDK), with streamed input and output.

Two ways, both with secrets only in the exec's environment, never in argv:

* :func:`exec_stream` — an exec with stdin attached: the input is written to the hijacked
  socket in chunks, then the write side is shut down (the command's EOF); stdout/stderr
  come back demultiplexed. Podman's exec stdin/EOF handling has a history of hangs
  (podman#7360, #7479); on this machine's podman 4.3 100 MB arrive whole with their EOF
  (tests/integration/compose/test_compose_exec_stdin.py), so this is the normal path.
  ``stdout_sink`` streams stdout to the caller (e.g. a file) instead of keeping it.
* :func:`exec_on_file` — the fallback: the input is copied into the container as a 0600
  file (``put_archive`` of a one-file tar, streamed), the command reads that file, and the
  file is removed afterwards whatever happened.

Both have a deadline: a command that neither reads its input nor ends raises
:class:`LifeboatError` instead of hanging.
"""

from __future__ import annotations

import io
import os
import secrets as _random
import select
import socket
import struct
import tarfile
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import LifeboatError

CHUNK = 1 << 20
DEFAULT_TIMEOUT_S = 600.0


@dataclass
class ExecResult:
    """What a command in a container did: its exit code and its (demultiplexed) output."""

    exit_code: int
    stdout: bytes
    stderr: bytes


def _raw_socket(hijacked) -> socket.socket:
    """The plain socket under what ``exec_start(socket=True)`` returns (SocketIO or socket)."""
    sock = getattr(hijacked, "_sock", hijacked)
    if not isinstance(sock, socket.socket):
        raise LifeboatError(f"exec: unexpected attach object {type(hijacked).__name__}",
                            hint="only unix-socket and TCP Docker hosts are supported for streamed input")
    return sock


def _demux(buffer: bytearray, out: bytearray, err: bytearray) -> None:
    """Move complete frames of Docker's multiplexed stream (8-byte headers) from ``buffer``."""
    while len(buffer) >= 8:
        kind, size = buffer[0], struct.unpack(">I", bytes(buffer[4:8]))[0]
        if len(buffer) < 8 + size:
            return
        payload = bytes(buffer[8:8 + size])
        del buffer[:8 + size]
        (err if kind == 2 else out).extend(payload)


def exec_stream(client, container: str, argv: list[str], chunks: Iterable[bytes],
                env: Optional[dict[str, str]] = None, user: str = "", timeout_s: float = DEFAULT_TIMEOUT_S,
                max_output: int = 16 << 20, stdout_sink: Optional[Callable[[bytes], object]] = None) -> ExecResult:
    """Run ``argv`` in ``container`` with ``chunks`` as its stdin, then EOF; returns its result.

    Output is read while input is written (no deadlock on a chatty command); at most
    ``max_output`` bytes of each stream are kept. With ``stdout_sink`` every piece of stdout
    is handed to it as it arrives and none is kept (``ExecResult.stdout`` is empty).
    ``env`` reaches the command's environment only. Raises :class:`LifeboatError` after
    ``timeout_s`` seconds.
    """
    api = client.api
    exec_id = api.exec_create(container, argv, stdin=True, stdout=True, stderr=True, tty=False,
                              environment=env or None, user=user)["Id"]
    sock = _raw_socket(api.exec_start(exec_id, socket=True))
    deadline = time.monotonic() + timeout_s
    buffer, out, err = bytearray(), bytearray(), bytearray()
    source = iter(chunks)
    pending = b""
    writing = True
    try:
        sock.setblocking(False)
        while True:
            if time.monotonic() > deadline:
                raise LifeboatError(f"exec in {container}: no end after {timeout_s:.0f} s ({argv[0]})",
                                    hint="the command did not read its input or did not exit")
            if writing and not pending:
                pending = next(source, b"")
                if not pending:
                    sock.shutdown(socket.SHUT_WR)  # the command's EOF
                    writing = False
            readable, writable, _errors = select.select([sock], [sock] if writing else [], [], 1.0)
            if readable:
                try:
                    data = sock.recv(CHUNK)
                except BlockingIOError:
                    data = None
                if data == b"":
                    break
                if data:
                    buffer.extend(data)
                    _demux(buffer, out, err)
                    if stdout_sink is not None and out:
                        stdout_sink(bytes(out))
                        del out[:]
                    del out[max_output:], err[max_output:]
            if writable and pending:
                try:
                    sent = sock.send(pending[:CHUNK])
                except BlockingIOError:
                    sent = 0
                pending = pending[sent:]
    finally:
        sock.close()
    _demux(buffer, out, err)
    if stdout_sink is not None and out:
        stdout_sink(bytes(out))
        del out[:]
    while True:
        info = api.exec_inspect(exec_id)
        if not info.get("Running"):
            break
        if time.monotonic() > deadline:
            raise LifeboatError(f"exec in {container}: still running {timeout_s:.0f} s after its output ended",
                                hint="the command did not exit")
        time.sleep(0.1)
    return ExecResult(int(info.get("ExitCode") or 0), bytes(out), bytes(err))


def exec_on_file(client, container: str, argv_with_file: list[str], chunks: Iterable[bytes],
                 env: Optional[dict[str, str]] = None, user: str = "", folder: str = "/tmp",
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> ExecResult:
    """Fallback of :func:`exec_stream`: copy the input into ``folder`` as a 0600 file, run the command on it.

    ``argv_with_file`` names the file as ``{file}`` (e.g. ``["sh", "-c", "cmd < {file}"]``).
    The file is removed afterwards, also on failure.
    """
    name = f".lifeboat-input-{_random.token_hex(8)}"
    path = f"{folder.rstrip('/')}/{name}"
    with tempfile.TemporaryFile(dir=os.environ.get("TMPDIR")) as spool:
        with tarfile.open(fileobj=spool, mode="w|") as tar:
            data = tempfile.TemporaryFile()
            size = 0
            for chunk in chunks:
                data.write(chunk)
                size += len(chunk)
            data.seek(0)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = size, 0o600, int(time.time())
            tar.addfile(info, data)
            data.close()
        spool.seek(0)
        if not client.api.put_archive(container, folder, spool):
            raise LifeboatError(f"exec in {container}: copying the input to {path} failed",
                                hint=f"is {folder} writable in the container?")
    try:
        argv = [part.replace("{file}", path) for part in argv_with_file]
        return exec_stream(client, container, argv, [], env=env, user=user, timeout_s=timeout_s)
    finally:
        client.api.exec_start(client.api.exec_create(container, ["rm", "-f", path], user="root")["Id"])


def stdin_of(data: bytes) -> Iterable[bytes]:
    """``data`` as chunks of :data:`CHUNK` bytes."""
    view = io.BytesIO(data)
    return iter(lambda: view.read(CHUNK), b"")
