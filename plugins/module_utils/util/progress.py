# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logging and progress: the one helper every Lifeboat component reports through.

* :func:`get_logger` returns a logger under the ``lifeboat`` namespace. Modules
  collect its records and return them as ``log`` lines; the CLI prints them.
* A *progress callback* is any callable taking one :class:`Progress`. Long
  operations call it at most a few times a second (see :class:`ProgressMeter`),
  so work that takes minutes is never silent. :func:`log_progress` is the
  callback modules use; :func:`progress_bar` the one the CLI uses.

* A *progress sink* (:func:`set_progress_sink`) also receives every :func:`log_progress`
  report and the :func:`set_step` / :func:`set_counts` of the engines: the module edge
  installs the run status file of :mod:`runstatus` there for long runs, so every engine's
  progress reaches ``<store>/progress/<id>.json`` through this one helper.

Nothing passed here may contain secrets: a status file holds only names of operations
and steps, counts, times, host names and process identities.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

ROOT_LOGGER = "lifeboat"


def get_logger(name: str = "") -> logging.Logger:
    """Return the logger ``lifeboat.<name>`` (``lifeboat`` for an empty name)."""
    return logging.getLogger(f"{ROOT_LOGGER}.{name}" if name else ROOT_LOGGER)


@dataclass
class Progress:
    """One progress report.

    ``done_bytes``: bytes of input consumed so far; ``written_bytes``: bytes
    written to the destination so far; ``total_bytes``: expected input size or
    ``None`` when unknown; ``elapsed_s``: seconds since start; ``final``: True on
    the last report of an operation.
    """

    operation: str
    done_bytes: int
    written_bytes: int = 0
    total_bytes: Optional[int] = None
    elapsed_s: float = 0.0
    final: bool = False

    @property
    def rate_bps(self) -> float:
        """Input bytes per second so far (0.0 before any time has passed)."""
        return self.done_bytes / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> Optional[float]:
        """Seconds left, when the total is known and a rate exists; else ``None``."""
        if not self.total_bytes or self.rate_bps <= 0:
            return None
        return max(0.0, (self.total_bytes - self.done_bytes) / self.rate_bps)

    def describe(self) -> str:
        """A one-line human description, e.g. ``mysql dump: 120.0 MiB at 60.0 MiB/s``."""
        text = f"{self.operation}: {human_bytes(self.done_bytes)}"
        if self.total_bytes:
            text += f" of {human_bytes(self.total_bytes)}"
        text += f" at {human_bytes(int(self.rate_bps))}/s"
        if self.eta_s is not None and not self.final:
            text += f", ETA {self.eta_s:.0f} s"
        return text


ProgressFn = Callable[[Progress], None]


def human_bytes(n: int) -> str:
    """Format a byte count with binary units (``1.5 MiB``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


class ProgressMeter:
    """Counts bytes of one operation and calls a callback at most every ``interval_s``.

    ``update(done, written)`` takes absolute counts; ``finish()`` always reports once.
    """

    def __init__(self, operation: str, callback: Optional[ProgressFn], total_bytes: Optional[int] = None,
                 interval_s: float = 0.5) -> None:
        self.operation = operation
        self.callback = callback
        self.total_bytes = total_bytes
        self.interval_s = interval_s
        self.started = time.monotonic()
        self._last = 0.0
        self.done_bytes = 0
        self.written_bytes = 0

    def update(self, done_bytes: int, written_bytes: Optional[int] = None) -> None:
        """Record absolute counts; report if the interval has passed."""
        self.done_bytes = done_bytes
        if written_bytes is not None:
            self.written_bytes = written_bytes
        now = time.monotonic()
        if self.callback and now - self._last >= self.interval_s:
            self._last = now
            self.callback(self._snapshot(final=False))

    def finish(self) -> Progress:
        """Report the final counts (always) and return them."""
        snap = self._snapshot(final=True)
        if self.callback:
            self.callback(snap)
        return snap

    def _snapshot(self, final: bool) -> Progress:
        return Progress(self.operation, self.done_bytes, self.written_bytes, self.total_bytes,
                        time.monotonic() - self.started, final)


def log_progress(logger: Optional[logging.Logger] = None) -> ProgressFn:
    """A progress callback that logs each report at INFO (used by modules)."""
    log = logger or get_logger("progress")

    def _report(p: Progress) -> None:
        log.info(p.describe())
        sink = _SINK
        if sink is not None:
            sink.report(p)

    return _report


def progress_bar(stream=None, width: int = 30) -> ProgressFn:
    """A progress callback drawing a one-line bar on a terminal (used by the CLI)."""
    out = stream or sys.stderr

    def _report(p: Progress) -> None:
        if p.total_bytes:
            frac = min(1.0, p.done_bytes / p.total_bytes)
            filled = "#" * int(frac * width) + "-" * (width - int(frac * width))
            line = f"\r[{filled}] {frac * 100:5.1f}% {p.describe()}"
        else:
            line = f"\r{p.describe()}"
        out.write(line + ("\n" if p.final else ""))
        out.flush()

    return _report


class ListHandler(logging.Handler):
    """Collects formatted log records in a list (modules return them as ``log``)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def capture_logs() -> ListHandler:
    """Attach and return a :class:`ListHandler` on the ``lifeboat`` logger."""
    handler = ListHandler()
    root = get_logger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    return handler


# --------------------------------------------------------------------------- the progress sink

_SINK: Optional[Any] = None


def set_progress_sink(sink: Optional[Any]) -> Optional[Any]:
    """Route every :func:`log_progress` report, :func:`set_step` and :func:`set_counts` of this
    process also to ``sink`` (an object with ``report(Progress)``, ``set_step(str)`` and
    ``set_counts(rows, events)``: the run status file of :mod:`runstatus`), or to nothing
    (``None``). Returns the previous sink."""
    global _SINK
    previous, _SINK = _SINK, sink
    return previous


def set_step(step: Optional[str]) -> None:
    """Name the current step of this process's run, e.g. ``table shop.orders`` (a name, never a
    value); no-op without a sink."""
    if _SINK is not None:
        _SINK.set_step(step)


def set_counts(rows: Optional[int] = None, events: Optional[int] = None) -> None:
    """Rows/events done so far in this process's run, where the engine knows them; no-op without a sink."""
    if _SINK is not None:
        _SINK.set_counts(rows=rows, events=events)
