# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bounded retries of connection-level failures, with exponential backoff.

Only errors that say they are retryable (:attr:`errors.LifeboatError.retryable`,
i.e. :class:`errors.ConnectionFailure`: refused, reset, timed out) are retried.
Data errors (checksum mismatch, SQL error, wrong key, tampered data) are raised at
once: retrying them could only hide a real problem. Every retry is logged.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, LifeboatError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

T = TypeVar("T")

log = get_logger("retry")

DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF_S = 1.0
MAX_DELAY_S = 60.0


def backoff_delays(attempts: int, backoff: float, max_delay: float = MAX_DELAY_S) -> list[float]:
    """The waits between ``attempts`` tries: ``backoff * 2**i`` seconds, each at most ``max_delay``.

    ``attempts`` tries have ``attempts - 1`` waits; ``backoff_delays(4, 1.0) == [1.0, 2.0, 4.0]``.
    """
    return [min(max_delay, backoff * (2 ** i)) for i in range(max(0, attempts - 1))]


def is_retryable(err: BaseException) -> bool:
    """True only for a :class:`LifeboatError` whose class marks it retryable (connection-level)."""
    return isinstance(err, LifeboatError) and bool(err.retryable)


def retry(fn: Callable[[], T], attempts: int = DEFAULT_ATTEMPTS, backoff: float = DEFAULT_BACKOFF_S, *,
          what: str = "operation", sleep: Callable[[float], None] = time.sleep,
          max_delay: float = MAX_DELAY_S, on_retry: Optional[Callable[[int, BaseException], None]] = None) -> T:
    """Call ``fn()`` up to ``attempts`` times (>= 1) and return its first result.

    A retryable failure (see :func:`is_retryable`) is logged and retried after
    ``backoff * 2**(try-1)`` seconds (capped at ``max_delay``); the last one is raised
    unchanged. Any other exception is raised at once, never retried. ``on_retry(try_no,
    err)`` is called before each wait (try_no counts from 1).
    """
    if attempts < 1:
        raise ConfigError(f"retry attempts must be >= 1, not {attempts}")
    delays = backoff_delays(attempts, backoff, max_delay)
    for try_no in range(1, attempts + 1):
        try:
            return fn()
        except Exception as err:
            if not is_retryable(err) or try_no == attempts:
                if is_retryable(err):
                    log.error("%s: failed %d time(s), giving up: %s", what, try_no, err)
                raise
            delay = delays[try_no - 1]
            log.warning("%s: attempt %d of %d failed (%s); retrying in %.1f s", what, try_no, attempts, err, delay)
            if on_retry is not None:
                on_retry(try_no, err)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
