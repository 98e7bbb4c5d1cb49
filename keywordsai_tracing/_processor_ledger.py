"""The span queue and its accounting: what was taken, what completed, who waits for a flush.

Every span accepted into the queue has a position in one sequence: the front of the queue
is at position ``taken``. A batch leaves the front of the queue as a `Batch` that keeps the
position of its first span. Several batches may be in flight at once and complete in any
order, so the ledger keeps every unfinished batch (in flight, or put back for another
try); the lowest position not yet completed is the smallest of their starts and
``taken``. A flush waits for "everything accepted before it": it records ``target``, the
number of spans accepted so far, and is done once that low mark reaches ``target``.

A batch cut off mid-export (loop shutdown, an abandoned worker) is put back whole, with
its position, and is taken again before the queue (at-least-once delivery).
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.sdk.trace import ReadableSpan

from ._processor_util import resolve


@dataclass(frozen=True, slots=True)
class ProcessorStats:
    """Counters of one span processor since it was created (or since a fork, in a child).

    ``queued`` counts spans accepted; each of them is eventually ``exported``, counted in
    ``failed_spans`` (its batch failed: ``failed_batches``), or still ``pending`` (queued or
    in flight). ``dropped`` spans never entered the queue because it was full.
    """

    queued: int
    exported: int
    dropped: int
    failed_batches: int
    failed_spans: int
    pending: int


@dataclass(eq=False, slots=True)
class Batch:
    """Spans taken together; ``start`` is the position of the first one."""

    start: int
    spans: list[ReadableSpan]


class Holder(Protocol):
    """The export worker state the ledger reads and writes under its lock."""

    retired: bool
    inflight: list[Batch]  # taken by this worker and not completed or put back


@dataclass(slots=True)
class Waiter:
    """One flush: done when every span before ``target`` completed; ``ok`` = all delivered."""

    target: int
    future: concurrent.futures.Future[bool]
    ok: bool = True


class Ledger:
    """Thread-safe queue bookkeeping. ``queue`` is appended to without the lock (hot path)."""

    queue: collections.deque[ReadableSpan]
    lock: threading.Lock
    drop_lock: threading.Lock
    taken: int  # spans taken off the queue (the position of its front)
    done: int  # spans whose export completed (delivered or failed)
    exported: int
    failed_spans: int
    failed_batches: int
    dropped: int
    flush_target: int  # highest target of any flush requested so far
    _out: set[Batch]  # taken and not completed: in flight, or put back in ``_retry``
    _retry: list[Batch]  # put back, by position; taken before the queue
    _waiters: list[Waiter]

    def __init__(self) -> None:
        self.reset_after_fork()

    def reset_after_fork(self) -> None:
        """Start empty (also in a forked child, where the parent's lock may be held)."""
        self.queue = collections.deque()
        self.lock = threading.Lock()
        self.drop_lock = threading.Lock()
        self.taken = self.done = self.exported = 0
        self.failed_spans = self.failed_batches = self.dropped = self.flush_target = 0
        self._out = set()
        self._retry = []
        self._waiters = []

    def stats(self) -> ProcessorStats:
        with self.lock:
            pending = self.taken - self.done + len(self.queue)
            return ProcessorStats(
                queued=self.done + pending,
                exported=self.exported,
                dropped=self.dropped,
                failed_batches=self.failed_batches,
                failed_spans=self.failed_spans,
                pending=pending,
            )

    def _low(self) -> int:
        """Every span before this position completed (call with the lock held)."""
        return min((batch.start for batch in self._out), default=self.taken)

    def add_waiter(self) -> Waiter:
        """Register a flush of everything accepted so far; already done if nothing pends."""
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        with self.lock:
            waiter = Waiter(self.taken + len(self.queue), future)
            if waiter.target <= self._low():
                future.set_result(True)
                return waiter
            self.flush_target = max(self.flush_target, waiter.target)
            self._waiters.append(waiter)
        return waiter

    def discard(self, waiter: Waiter) -> None:
        with self.lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def fail_waiters(self) -> None:
        """Release every waiting flush with False (the processor has shut down)."""
        with self.lock:
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            resolve(waiter.future, False)

    def take(self, holder: Holder, limit: int, *, force: bool) -> Batch | None:
        """The next batch for ``holder``: one put back, else a full one from the queue, or
        any when forced or flushing."""
        with self.lock:
            if holder.retired:  # read under the lock: `requeue` may be abandoning it
                return None
            if self._retry:
                batch = self._retry.pop(0)
            else:
                size = len(self.queue)
                if size == 0:
                    return None
                if size < limit and not force and self.taken >= self.flush_target:
                    return None
                count = min(limit, size)
                popleft = self.queue.popleft
                batch = Batch(self.taken, [popleft() for _ in range(count)])
                self.taken += count
                self._out.add(batch)
            holder.inflight.append(batch)
            return batch

    def requeue(self, holder: Holder) -> int:
        """Put ``holder``'s unacknowledged batches back, to be taken first; returns how
        many spans they hold."""
        with self.lock:
            batches, holder.inflight = holder.inflight, []
            if not batches:
                return 0
            self._retry = sorted([*self._retry, *batches], key=lambda batch: batch.start)
            return sum(len(batch.spans) for batch in batches)

    def complete(self, holder: Holder, batch: Batch, ok: bool) -> None:
        """Record the outcome of ``batch``; ignored unless ``holder`` still holds it (it
        was put back since, and will be sent again)."""
        with self.lock:
            if batch not in holder.inflight:
                return
            holder.inflight.remove(batch)
            self._out.discard(batch)
            count = len(batch.spans)
            self.done += count
            if ok:
                self.exported += count
            else:
                self.failed_spans += count
                self.failed_batches += 1
            low = self._low()
            ready: list[Waiter] = []
            remaining: list[Waiter] = []
            for waiter in self._waiters:
                if not ok and waiter.target > batch.start:
                    waiter.ok = False
                (ready if waiter.target <= low else remaining).append(waiter)
            self._waiters = remaining
        for waiter in ready:
            resolve(waiter.future, waiter.ok)

    def count_drop(self) -> int:
        """Count one span dropped because the queue was full; returns the total.

        A lock of its own: producers in a flood must not contend with the export task."""
        with self.drop_lock:
            self.dropped += 1
            return self.dropped

    def has_work(self) -> bool:
        """Spans are queued or put back, or some flush still waits."""
        return bool(self.queue) or bool(self._retry) or bool(self._waiters)
