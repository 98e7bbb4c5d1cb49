"""What the delivery keeps: a span's possible fates, its counters, the batches, the
hand-overs that hold them, and the flushes waiting on them (see `delivery`)."""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import enum
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan

if TYPE_CHECKING:
    from keywordsai_tracing._export_types import Prepared

# How long past its deadline a send on a stopped loop is taken back (see `Send.overdue`).
OVERDUE_GRACE = 0.5


class Reason(enum.StrEnum):
    """Why spans were dropped (the names of the `ProcessorStats` counters)."""

    QUEUE_FULL = "queue_full"
    FILTERED = "filtered"
    REJECTED = "rejected"
    GAVE_UP = "gave_up"
    DEADLINE = "deadline"
    FAILED = "failed"
    AFTER_SHUTDOWN = "after_shutdown"


@dataclass(frozen=True, slots=True)
class ProcessorStats:
    """Where the spans a processor was given are (a snapshot).

    ``ended`` spans were handed to it; each is ``queued`` (never attempted), ``in_flight``
    (an attempt running, or waiting to be retried), ``delivered``, or ``dropped``:
    ``queue_full``, ``filtered`` (noise), ``rejected`` (by the collector), ``gave_up``
    (retries exhausted), ``deadline`` (the shutdown budget ran out), ``failed`` (a custom
    exporter failed or timed out), ``after_shutdown`` (ended after shutdown). So
    ``queued + in_flight + delivered + dropped == ended``. ``resent`` spans were sent
    again after an attempt was cut off mid-flight; ``retries`` counts attempts after a
    batch's first.
    """

    ended: int = 0
    queued: int = 0
    in_flight: int = 0
    delivered: int = 0
    dropped: int = 0
    queue_full: int = 0
    filtered: int = 0
    rejected: int = 0
    gave_up: int = 0
    deadline: int = 0
    failed: int = 0
    after_shutdown: int = 0
    resent: int = 0
    retries: int = 0

    @property
    def pending(self) -> int:
        """Spans not yet delivered or dropped."""
        return self.queued + self.in_flight

    def dropped_by_reason(self) -> dict[str, int]:
        """The non-zero drop counters, by reason."""
        counts = {reason.value: getattr(self, reason.value) for reason in Reason}
        return {reason: count for reason, count in counts.items() if count}


@dataclass(eq=False, slots=True)
class Send:
    """One hand-over of a batch to the exporter, holding the batch while it runs.

    ``loop`` is where it runs: None for a sync exporter's thread, which cannot be cut off
    (its outcome is always waited for)."""

    owner: object
    loop: asyncio.AbstractEventLoop | None
    deadline: float = math.inf  # when the attempt must have ended

    def overdue(self, now: float) -> bool:
        """Past its deadline on a loop that is not running: if that loop runs again, the
        attempt can only end as a timeout, so the batch may be taken back now."""
        loop = self.loop
        return loop is not None and now > self.deadline + OVERDUE_GRACE and not loop.is_running()


@dataclass(eq=False, slots=True)
class Batch:
    """Spans taken together; ``start`` is the position of the first one."""

    start: int
    spans: list[ReadableSpan]
    attempts: int = 0
    not_before: float = 0.0  # monotonic instant of the next attempt (backoff)
    window_end: float = math.inf  # no attempt starts after this (set by the first send)
    prepared: Prepared | None = None  # kept across attempts and loops
    holder: object | None = None  # a worker preparing it, a `Send`, or None: waiting
    resend: bool = False  # cut off mid-send: the next send is a re-send

    @property
    def fresh(self) -> bool:
        return self.attempts == 0 and not self.resend


@dataclass(slots=True)
class Waiter:
    """One flush: done when every span before ``target`` is delivered or dropped.

    Batches sending on ``blocked`` (the loop the flushing thread blocks) cannot finish
    during the flush: they are not waited for, and make the result False."""

    target: int
    future: concurrent.futures.Future[bool]
    blocked: asyncio.AbstractEventLoop | None = None
    ok: bool = True
    lost: int = 0  # spans dropped before they had a position, when the flush began
    reports: bool = True  # its answer reaches the caller (a shutdown's flush does not)


@dataclass(slots=True)
class Unreported:
    """Drops that no flush has reported yet.

    A flush returns False for every span it covers that was dropped, and thereby reports
    it; a later flush covering the same span does not report it again, so one transient
    failure does not make every later flush False. ``intervals``: positions of dropped
    spans, sorted disjoint ``[start, end)``; ``lost``: spans dropped before they had a
    position (queue full, after shutdown) that were reported so far.
    """

    intervals: list[list[int]] = field(default_factory=list)
    lost: int = 0

    def add(self, start: int, end: int) -> None:
        bisect.insort(self.intervals, [start, end])
        merged: list[list[int]] = []
        for interval in self.intervals:
            if merged and interval[0] <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], interval[1])
            else:
                merged.append(interval)
        self.intervals = merged

    def any_below(self, target: int) -> bool:
        return bool(self.intervals) and self.intervals[0][0] < target

    def report_below(self, target: int, lost: int) -> None:
        """A flush covering positions below ``target`` (and ``lost``) has answered."""
        while self.intervals and self.intervals[0][0] < target:
            if self.intervals[0][1] > target:
                self.intervals[0][0] = target
                break
            self.intervals.pop(0)
        self.lost = max(self.lost, lost)
