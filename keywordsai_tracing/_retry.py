"""Retry policy for OTLP/HTTP export: which failures to retry and how long to wait.

Pure logic with injectable randomness and clocks; it knows nothing about the transport. A
failed attempt is described by its HTTP status, or ``None`` for a connection error or a
timeout (no response at all).
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

RETRYABLE_STATUSES: Final = frozenset({429, 502, 503, 504})


def is_retryable(status: int | None) -> bool:
    """True for 429/502/503/504 and for ``None`` (connection error or timeout)."""
    return status is None or status in RETRYABLE_STATUSES


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP-date).

    ``now`` is the current wall-clock time (``time.time()``) for the HTTP-date form.
    Returns None when absent or unparseable; never negative.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        return max(0.0, when.timestamp() - now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, floored by ``Retry-After``, bounded by a deadline.

    The n-th retry (``attempt`` failed attempts so far) waits ``uniform(0, cap)`` with
    ``cap = min(max_backoff, initial_backoff * multiplier ** (attempt - 1))``, or at least
    the server's ``Retry-After``.
    """

    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    multiplier: float = 2.0
    random: Callable[[], float] = field(default=random.random, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    wall_clock: Callable[[], float] = field(default=time.time, repr=False)

    def backoff(self, attempt: int) -> float:
        """The jittered exponential delay before retry number ``attempt`` (1-based)."""
        exponent = max(attempt - 1, 0)
        cap = self.max_backoff
        if exponent < 64:  # avoid overflow; the cap wins long before
            cap = min(cap, self.initial_backoff * self.multiplier**exponent)
        return self.random() * cap

    def next_delay(
        self,
        attempt: int,
        status: int | None,
        deadline: float,
        retry_after: str | None = None,
    ) -> float | None:
        """Seconds to sleep before the next attempt, or None to give up.

        ``attempt`` counts the attempts made so far, ``status`` is the last one's outcome
        and ``deadline`` a ``clock()`` instant. Gives up when the status is not retryable
        or when the next attempt could not start before the deadline.
        """
        if not is_retryable(status):
            return None
        delay = self.backoff(attempt)
        server_wait = parse_retry_after(retry_after, self.wall_clock())
        if server_wait is not None:
            delay = max(delay, server_wait)
        if self.clock() + delay >= deadline:
            return None
        return delay
