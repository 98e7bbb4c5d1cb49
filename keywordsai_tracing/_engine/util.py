"""Small helpers shared by the span processor modules: cross-loop waiting, rate-limited logs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
import time
from typing import Any

logger = logging.getLogger("keywordsai_tracing.processor")

# How often a repeated warning (queue full, export failing) may be logged.
WARNING_INTERVAL = 10.0


def _set_done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def await_future(future: concurrent.futures.Future[Any], timeout: float | None) -> bool:
    """Wait on the running loop for a future completed in any thread; never cancels it.

    Returns True when ``future`` is done within ``timeout`` seconds (None = no limit).
    Unlike ``asyncio.wrap_future``, a timeout here leaves ``future`` untouched, so the
    thread that completes it later never meets a cancelled future.
    """
    if future.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def on_done(_: concurrent.futures.Future[Any]) -> None:
        try:
            loop.call_soon_threadsafe(_set_done, waiter)
        except RuntimeError:  # the waiting loop closed meanwhile: nobody is waiting
            return

    future.add_done_callback(on_done)
    try:
        async with asyncio.timeout(timeout):
            await waiter
    except TimeoutError:
        return future.done()
    return True


def resolve(future: concurrent.futures.Future[Any], value: Any) -> None:
    """Set a result unless the future is already done or was cancelled by its waiter."""
    try:
        if not future.done():
            future.set_result(value)
    except concurrent.futures.InvalidStateError:
        return


class RateLimitedWarning:
    """Log one warning per ``interval`` seconds, reporting how many were suppressed."""

    def __init__(self, message: str, interval: float = WARNING_INTERVAL) -> None:
        self._message = message
        self._interval = interval
        self._lock = threading.Lock()
        self._next = 0.0
        self._suppressed = 0

    def due(self) -> bool:
        """Whether a call now would log (a lock-free hint for hot paths)."""
        return time.monotonic() >= self._next

    def __call__(self, *args: object, exc_info: bool | BaseException | None = False) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._suppressed += 1
                return
            suppressed, self._suppressed = self._suppressed, 0
            self._next = now + self._interval
        message = self._message
        if suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        logger.warning(message, *args, exc_info=exc_info)

    def reset_after_fork(self) -> None:
        """Replace the lock, which another thread may have held when the process forked."""
        self._lock = threading.Lock()


def positive(name: str, value: object, kind: type[int] | type[float]) -> float:
    """``value`` as a float if it is a finite positive ``kind``; else ``ValueError``."""
    ok_type = isinstance(value, int) if kind is int else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type:
        raise ValueError(f"{name}: expected a positive {kind.__name__}, got {value!r}")
    number = float(value)  # type: ignore[arg-type]
    if not number > 0 or not math.isfinite(number):
        raise ValueError(f"{name}: expected a positive {kind.__name__}, got {value!r}")
    return number


def check_limits(
    max_queue_size: object,
    max_export_batch_size: object,
    schedule_delay: object,
    export_timeout: object,
) -> tuple[int, int, float, float]:
    """Validated processor limits; ``ValueError`` naming the first bad parameter."""
    queue_size = int(positive("max_queue_size", max_queue_size, int))
    batch_size = int(positive("max_export_batch_size", max_export_batch_size, int))
    if batch_size > queue_size:
        raise ValueError(
            f"max_export_batch_size: must not exceed max_queue_size={queue_size}, got {batch_size}"
        )
    return (
        queue_size,
        batch_size,
        positive("schedule_delay", schedule_delay, float),
        positive("export_timeout", export_timeout, float),
    )
