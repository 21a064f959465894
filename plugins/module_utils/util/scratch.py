# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Throw-away servers for verification and rehearsal (internal API of ``lifeboat.dr``).

:class:`ScratchServer` is the one lifecycle the scratch MariaDB, Redis and OpenBao share:
a private folder (``root``), one child process (``proc``) started in its own session,
a log file (``log_path``); ``stop()`` sends SIGTERM and kills after ``stop_timeout_s``;
``cleanup()`` stops and removes the folder (idempotent); as a context manager it is
cleaned up on exit, also when the body raises, and -- with ``start_on_enter`` -- started
on entry (cleaned up if that fails). Subclasses write their own ``start()``.

:func:`free_port` and :func:`find_program` are the helpers every scratch server needs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any, Optional, Sequence

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import DependencyMissing

PROGRAM_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_program(name: str, *, install_hint: str, why: str = "",
                 dirs: Sequence[str] = PROGRAM_DIRS) -> str:
    """Absolute path of program ``name``: PATH, then ``dirs``; DependencyMissing naming ``install_hint``.

    ``why`` is appended to the message (``"<name> is not installed; <why>"``).
    """
    found = shutil.which(name) or next((str(Path(d) / name) for d in dirs
                                        if os.access(Path(d) / name, os.X_OK)), None)
    if not found:
        raise DependencyMissing(f"{name} is not installed" + (f"; {why}" if why else ""), hint=install_hint)
    return found


class ScratchServer:
    """Base of the scratch servers: folder, process, log, stop / cleanup / context manager.

    Subclasses set ``name``, ``root``, ``log_path`` (and ``proc`` when started) and write
    ``start()``. Class settings: ``stop_timeout_s`` (SIGTERM grace before SIGKILL),
    ``start_on_enter`` (``with`` starts the server), ``log_tail_chars``.
    """

    name = "scratch"
    stop_timeout_s = 30.0
    start_on_enter = True
    log_tail_chars = 600
    root: Path
    log_path: Path
    proc: Optional[subprocess.Popen] = None

    def start(self) -> Any:
        """Start the server and return once it answers (subclasses)."""
        raise NotImplementedError

    def is_running(self) -> bool:
        """True while the started process has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop the process (SIGTERM, SIGKILL after ``stop_timeout_s``). No-op if not running."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, chars: Optional[int] = None) -> str:
        """The last ``chars`` characters of the server's log (``"(no log)"`` when unreadable)."""
        try:
            return self.log_path.read_text(errors="replace")[-(chars or self.log_tail_chars):]
        except OSError:
            return "(no log)"

    def cleanup(self) -> None:
        """Stop the server and remove its folder; idempotent."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Any:
        if self.start_on_enter:
            try:
                self.start()
            except BaseException:
                self.cleanup()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
