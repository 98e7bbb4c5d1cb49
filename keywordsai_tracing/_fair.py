"""When a long piece of CPU work on the event loop should yield.

Yielding after a fixed number of items starves that work when many tasks are runnable:
each pass of the loop runs every producer once but encodes only one slice, so a flood of
spans outgrows the queue. `FairShare` instead keeps running for at least ``share`` times
as long as the rest of the loop ran during the previous yield (within ``floor`` and
``cap``): a quiet loop gets short slices and low latency, a busy one gives the export
the share of CPU it needs to keep up, and no stall exceeds ``cap``.

Under pressure (the export processor's queue filling up, reported through the
`export_pressure` context variable as a fill ratio in 0..1) the share grows, up to a
multiple of the base share when the queue is full: producers are slowed by fair
scheduling instead of losing spans to a full queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextvars import ContextVar

# Set by the export task around each export: how full its queue is (0..1), read live.
export_pressure: ContextVar[Callable[[], float] | None] = ContextVar(
    "keywordsai_export_pressure", default=None
)
# Set by an export task on the private loop thread, where nothing else runs: yielding
# there only hands the GIL to the application thread for a whole switch interval.
exporting_alone: ContextVar[bool] = ContextVar("keywordsai_exporting_alone", default=False)
_MAX_BOOST = 6.0  # at a full queue the share is this many times the base share


class FairShare:
    """Call `checkpoint` between small units of work; it yields when the turn is used up."""

    def __init__(
        self,
        share: float = 0.5,
        floor: float = 0.0005,
        cap: float = 0.02,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._share = share
        self._floor = floor
        self._cap = cap
        self._clock = clock
        self._resumed = clock()
        self._away = 0.0
        self._pressure = export_pressure.get()
        self._alone = exporting_alone.get()

    def turn(self) -> float:
        """How long this turn may run before yielding."""
        if self._alone:
            return float("inf")
        share = self._share
        if self._pressure is not None:
            fill = min(max(self._pressure(), 0.0), 1.0)
            share *= 1.0 + (_MAX_BOOST - 1.0) * fill * fill
        return min(max(self._floor, share * self._away), self._cap)

    async def checkpoint(self) -> None:
        """Yield to the loop if this turn is used up."""
        now = self._clock()
        if now - self._resumed < self.turn():
            return
        await asyncio.sleep(0)
        resumed = self._clock()
        self._away = resumed - now
        self._resumed = resumed
