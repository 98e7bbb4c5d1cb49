"""The span queue and its accounting: what was taken, what completed, who waits for a flush.

Every span accepted into the queue has a position in one sequence. Batches leave the front
of the queue in order and, because at most one export worker sends at a time (a successor
first waits for, or abandons, its predecessor), complete in order too. So "everything
accepted before this flush was handled" is simply ``done >= target`` where ``target`` was
the number of spans accepted when the flush began; a batch cut off mid-export goes back to
the front of the queue with its positions unchanged (at-least-once delivery).
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


class Holder(Protocol):
    """The export worker state the ledger reads and writes under its lock."""

    retired: bool
    inflight: list[ReadableSpan] | None


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
    taken: int  # spans taken off the queue, net of those put back
    done: int  # spans whose export completed (delivered or failed)
    exported: int
    failed_spans: int
    failed_batches: int
    dropped: int
    flush_target: int  # highest target of any flush requested so far
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

    def add_waiter(self) -> Waiter:
        """Register a flush of everything accepted so far; already done if nothing pends."""
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        with self.lock:
            waiter = Waiter(self.taken + len(self.queue), future)
            if waiter.target <= self.done:
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

    def take(self, holder: Holder, limit: int, *, force: bool) -> list[ReadableSpan] | None:
        """Pop the next batch for ``holder``: a full one, or any when forced or flushing."""
        if holder.retired:
            return None
        with self.lock:
            size = len(self.queue)
            if holder.retired or size == 0:
                return None
            if size < limit and not force and self.taken >= self.flush_target:
                return None
            count = min(limit, size)
            popleft = self.queue.popleft
            batch = [popleft() for _ in range(count)]
            self.taken += count
            holder.inflight = batch
            return batch

    def requeue(self, holder: Holder) -> int:
        """Put ``holder``'s unacknowledged batch back at the front; returns its size."""
        with self.lock:
            batch, holder.inflight = holder.inflight, None
            if not batch:
                return 0
            self.queue.extendleft(reversed(batch))
            self.taken -= len(batch)
            return len(batch)

    def complete(self, holder: Holder, batch: list[ReadableSpan], ok: bool) -> None:
        """Record the outcome of ``batch``; ignored if it was taken from ``holder`` since."""
        with self.lock:
            if holder.inflight is not batch:
                return
            holder.inflight = None
            start = self.done
            self.done += len(batch)
            if ok:
                self.exported += len(batch)
            else:
                self.failed_spans += len(batch)
                self.failed_batches += 1
            ready: list[Waiter] = []
            remaining: list[Waiter] = []
            for waiter in self._waiters:
                if not ok and waiter.target > start:
                    waiter.ok = False
                (ready if waiter.target <= self.done else remaining).append(waiter)
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
        """Spans are queued, or some flush still waits."""
        return bool(self.queue) or bool(self._waiters)
