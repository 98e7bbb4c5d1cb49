"""`Delivery`: where every ended span is, from the moment it ends until it is delivered or
dropped with a reason. The one owner of that state; every other part asks it.

A span is in exactly one of four states:

* **queued**: in the queue, or in a batch that was never attempted;
* **in flight**: in a batch whose attempt is running (a `Send`), or waiting to be tried
  again (in backoff, or put back after an attempt was cut off);
* **delivered**;
* **dropped**, with a `Reason`.

So ``queued + in_flight + delivered + dropped == ended`` whenever `stats` is read.

Spans have positions in the order they were accepted: the front of the queue is at
``taken``; a `Batch` keeps the position of its first span. Batches complete in any
order, so a flush ("everything accepted before me") waits until no unfinished batch starts
before its target and the queue's front has passed it.

A batch has one holder at a time: the worker preparing it, or the `Send` that hands it to
the exporter. Outcomes and cut-offs are accepted only from the current holder, so a late
answer to a batch that was taken back is ignored, and a batch is never handed to the
exporter again while its `Send` may still be running: only a send on a loop that can no
longer run (closed, or the process is ending) is taken back as cut off; the next send of
it is counted as ``resent`` (at-least-once).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import concurrent.futures
import math
import threading
from typing import TYPE_CHECKING, Protocol

from opentelemetry.sdk.trace import ReadableSpan

from .records import OVERDUE_GRACE, Batch, ProcessorStats, Reason, Send, Unreported, Waiter
from .util import RateLimitedWarning, logger, resolve

if TYPE_CHECKING:
    from keywordsai_tracing._export_types import Attempt, Prepared
    from keywordsai_tracing._retry import RetryPolicy

# Consecutive failed attempts after which a refusing collector counts as down.
BREAKER_THRESHOLD = 3
# No retry starts with less time than this left before its batch's deadline.
MIN_ATTEMPT = 0.05


class Holder(Protocol):
    """What the delivery reads of a worker under its lock."""

    retired: bool


class Delivery:
    """Thread-safe delivery state of one processor (see the module docstring).

    ``queue`` is appended to without the lock (the hot path); everything else changes
    under ``lock``.
    """

    def __init__(
        self,
        retry_policy: RetryPolicy | None = None,
        window: float = math.inf,
        out_limit: float = math.inf,
    ) -> None:
        self.retry_policy = retry_policy
        self.window = window
        # Spans held outside the queue (in flight or waiting to be retried) at most: past
        # it, no new batch leaves the queue, so an outage cannot pile up batches in backoff.
        self.out_limit = out_limit
        self._gave_up_warning = RateLimitedWarning("Dropped %d spans after %d attempts (%s): %s")
        self.reset_after_fork()

    def reset_after_fork(self) -> None:
        """Start empty (also in a forked child, where the parent's lock may be held)."""
        self.queue: collections.deque[ReadableSpan] = collections.deque()
        self.lock = threading.Lock()
        self.drop_lock = threading.Lock()
        self.taken = 0  # spans taken off the queue into batches
        self.finished = 0  # spans of batches delivered or dropped
        self.delivered = 0
        self.counts = dict.fromkeys(Reason, 0)
        self.resent = 0
        self.retries = 0
        self.flush_target = 0
        self.closing_deadline: float | None = None  # set by shutdown: the budget's end
        self._unfinished: set[Batch] = set()
        self._waiting: list[Batch] = []  # by start; not held
        self._fresh_waiting = 0  # spans in waiting batches never attempted
        self._waiters: list[Waiter] = []
        self._unreported = Unreported()
        self._failures = 0  # consecutive attempts without any answer
        self._down = False  # a batch gave up; nothing answered since
        self._gave_up_warning.reset_after_fork()

    # -- reading ------------------------------------------------------------------------

    def stats(self) -> ProcessorStats:
        with self.lock:
            queued = len(self.queue)
            unfinished = self.taken - self.finished
            counts = {reason.value: count for reason, count in self.counts.items()}
            with self.drop_lock:
                dropped = sum(self.counts.values())
                ended = self.taken + queued + counts["queue_full"] + counts["after_shutdown"]
            return ProcessorStats(
                ended=ended,
                queued=queued + self._fresh_waiting,
                in_flight=unfinished - self._fresh_waiting,
                delivered=self.delivered,
                dropped=dropped,
                resent=self.resent,
                retries=self.retries,
                **counts,
            )

    def has_work(self) -> bool:
        """Spans are queued or unfinished, or a flush waits."""
        return bool(self.queue) or bool(self._unfinished) or bool(self._waiters)

    def next_due(self) -> float | None:
        """When the earliest batch waiting for a retry is due, or a send stuck on a
        stopped loop becomes overdue (None: neither)."""
        with self.lock:
            due = min((batch.not_before for batch in self._waiting), default=math.inf)
            for batch in self._unfinished:
                send = batch.holder if isinstance(batch.holder, Send) else None
                if send is not None and send.loop is not None and not send.loop.is_running():
                    due = min(due, send.deadline + OVERDUE_GRACE)
            return None if due == math.inf else due

    def take_back_overdue(self, now: float) -> int:
        """Take back the batches of sends overdue on stopped loops (`Send.overdue`), to be
        sent again (counted as re-sent). Returns how many spans."""
        with self.lock:
            count = 0
            for batch in list(self._unfinished):
                holder = batch.holder
                overdue = isinstance(holder, Send) and holder.overdue(now)
                if overdue and self._put_back(batch, holder, sent=True):
                    count += len(batch.spans)
            return count

    def sending_on(self, loop: asyncio.AbstractEventLoop) -> int:
        """Spans in sends running on ``loop``."""
        with self.lock:
            return sum(
                len(batch.spans)
                for batch in self._unfinished
                if isinstance(batch.holder, Send) and batch.holder.loop is loop
            )

    # -- the hot path's drops -----------------------------------------------------------

    def count_drop(self, reason: Reason) -> int:
        """Count one span dropped before it entered the queue; returns that reason's total.

        A lock of its own: producers in a flood must not contend with the export task."""
        with self.drop_lock:
            self.counts[reason] += 1
            return self.counts[reason]

    # -- flushes ------------------------------------------------------------------------

    def add_waiter(
        self, blocked: asyncio.AbstractEventLoop | None = None, *, reports: bool = True
    ) -> Waiter:
        """Register a flush of everything accepted so far; done at once if nothing pends.
        ``reports``: its answer reaches the caller, so the losses it covers are reported."""
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        with self.lock:
            waiter = Waiter(self.taken + len(self.queue), future, blocked, reports=reports)
            with self.drop_lock:
                waiter.lost = self.counts[Reason.QUEUE_FULL] + self.counts[Reason.AFTER_SHUTDOWN]
            # A span it covers was dropped already, and no flush has said so yet.
            unreported = self._unreported
            waiter.ok = waiter.lost <= unreported.lost and not unreported.any_below(waiter.target)
            self._waiters.append(waiter)
            self.flush_target = max(self.flush_target, waiter.target)
            ready = self._ready_waiters()
        _resolve_all(ready)
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

    def _ready_waiters(self) -> list[Waiter]:
        """Remove and return the waiters that are done (call with the lock held)."""
        if not self._waiters:
            return []
        ready: list[Waiter] = []
        remaining: list[Waiter] = []
        for waiter in self._waiters:
            low = self.taken
            for batch in self._unfinished:
                if batch.start >= waiter.target:
                    continue
                holder = batch.holder
                blocked = waiter.blocked
                if blocked is not None and isinstance(holder, Send) and holder.loop is blocked:
                    waiter.ok = False  # cannot finish while the flush blocks its loop
                    continue
                low = min(low, batch.start)
            (ready if waiter.target <= low else remaining).append(waiter)
        self._waiters = remaining
        for waiter in ready:
            if waiter.reports:
                self._unreported.report_below(waiter.target, waiter.lost)
        return ready

    # -- taking batches -----------------------------------------------------------------

    def take(
        self, holder: Holder, limit: int, *, force: bool, now: float, fresh_only: bool = False
    ) -> Batch | None:
        """The next batch for ``holder``: a due one waiting to be tried (again), else a
        full one from the queue, or any when forced or a flush waits for queued spans.
        ``fresh_only``: none that was attempted before (a loop shutting down)."""
        with self.lock:
            if holder.retired:  # read under the lock: the host may be abandoning it
                return None
            for index, batch in enumerate(self._waiting):
                if batch.not_before <= now and (batch.fresh or not fresh_only):
                    del self._waiting[index]
                    if batch.fresh:
                        self._fresh_waiting -= len(batch.spans)
                    batch.holder = holder
                    return batch
            size = len(self.queue)
            if size == 0 or self.taken - self.finished >= self.out_limit:
                return None
            if size < limit and not force and self.taken >= self.flush_target:
                return None
            count = min(limit, size)
            popleft = self.queue.popleft
            batch = Batch(self.taken, [popleft() for _ in range(count)], holder=holder)
            self.taken += count
            self._unfinished.add(batch)
            return batch

    def begin_send(self, batch: Batch, holder: object, send: Send, now: float) -> bool:
        """Hand ``batch`` from its preparing ``holder`` to ``send``: the point after which
        it may have reached the destination. False if it was taken back meanwhile."""
        with self.lock:
            if batch.holder is not holder:
                return False
            batch.holder = send
            if batch.attempts:
                self.retries += 1
            batch.attempts += 1
            if batch.resend:
                self.resent += len(batch.spans)
                batch.resend = False
            if batch.window_end == math.inf:
                batch.window_end = now + self.window
            return True

    def put_back(self, batch: Batch, holder: object, *, sent: bool) -> bool:
        """``holder`` stops holding ``batch`` without an outcome (reclaimed before it was
        sent, or cut off mid-send when ``sent``): it waits to be taken again, at once."""
        with self.lock:
            return self._put_back(batch, holder, sent=sent)

    def _put_back(self, batch: Batch, holder: object, *, sent: bool) -> bool:
        if batch.holder is not holder or batch not in self._unfinished:
            return False
        batch.holder = None
        batch.not_before = 0.0
        if sent:
            # Cut off through no fault of the collector: a fresh window for its retries.
            batch.resend = True
            batch.window_end = math.inf
        self._wait(batch)
        return True

    def _wait(self, batch: Batch) -> None:
        bisect.insort(self._waiting, batch, key=lambda b: b.start)
        if batch.fresh:
            self._fresh_waiting += len(batch.spans)

    def reclaim(self, owner: object, *, dead: bool) -> int:
        """Take back what ``owner`` (a worker) holds: batches it prepares, and, when its
        loop can never run again (``dead``), the sends running there. Returns spans."""
        with self.lock:
            count = 0
            for batch in list(self._unfinished):
                holder = batch.holder
                if holder is owner:
                    sent = False
                elif dead and isinstance(holder, Send) and holder.owner is owner:
                    sent = holder.loop is not None
                    if not sent:
                        continue  # a sync exporter's thread: its outcome still comes
                else:
                    continue
                if self._put_back(batch, holder, sent=sent):
                    count += len(batch.spans)
            return count

    # -- outcomes -----------------------------------------------------------------------

    def prepared(self, batch: Batch, holder: object, prepared: Prepared) -> bool:
        """Record how ``batch`` is sent; if it sends nothing (all filtered) it is done.
        Returns whether there is something to send."""
        with self.lock:
            if batch.holder is not holder:
                return False
            batch.prepared = prepared
            if prepared.sent > 0:
                return True
            ready = self._finish(batch, {Reason.FILTERED: len(batch.spans)}, delivered=0)
        _resolve_all(ready)
        return False

    def fail_unsent(self, batch: Batch, holder: object) -> None:
        """``batch`` could not be prepared for sending: dropped as failed."""
        with self.lock:
            if batch.holder is not holder:
                return
            ready = self._finish(batch, {Reason.FAILED: len(batch.spans)}, delivered=0)
        _resolve_all(ready)

    def complete(self, batch: Batch, send: Send, ok: bool) -> bool:
        """A plain exporter's verdict on the whole batch; False if ``send`` no longer
        holds it (the verdict came too late and is ignored)."""
        with self.lock:
            if batch.holder is not send:
                return False
            count = len(batch.spans)
            if ok:
                ready = self._finish(batch, {}, delivered=count)
            else:
                ready = self._finish(batch, {Reason.FAILED: count}, delivered=0)
        _resolve_all(ready)
        return True

    def settle(self, batch: Batch, send: Send, attempt: Attempt, now: float) -> None:
        """Apply one attempt of an `AttemptExporter`: done, or back off and try again."""
        with self.lock:
            if batch.holder is not send:
                return
            prepared = batch.prepared
            filtered = prepared.filtered if prepared is not None else 0
            sent = len(batch.spans) - filtered
            dropped: Reason | None = None
            if not attempt.retry:
                self._failures = 0
                self._down = False
                delivered = max(0, min(attempt.delivered, sent))
                rejected = max(0, min(attempt.rejected, sent - delivered))
                counts = {
                    Reason.FILTERED: filtered,
                    Reason.REJECTED: rejected,
                    Reason.FAILED: sent - delivered - rejected,  # the exporter broke
                }
                ready = self._finish(batch, counts, delivered=delivered)
            else:
                ready, dropped = self._after_failure(batch, attempt, sent, filtered, now)
            attempts = batch.attempts
        _resolve_all(ready)
        cause = attempt.cause or "no answer"
        if dropped is not None:
            self._gave_up_warning(sent, attempts, dropped.value, cause)
        elif attempt.retry:
            logger.debug("Export attempt %d failed (%s); retrying", attempts, cause)

    def _after_failure(
        self, batch: Batch, attempt: Attempt, sent: int, filtered: int, now: float
    ) -> tuple[list[Waiter], Reason | None]:
        """A failed attempt (lock held): back off, or drop with a reason."""
        self._failures += 1
        closing = self.closing_deadline
        end = batch.window_end if closing is None else min(batch.window_end, closing)
        delay: float | None = None
        if self._down:
            reason = Reason.GAVE_UP  # known down: one attempt per batch until it answers
        elif closing is not None and attempt.refused and self._failures >= BREAKER_THRESHOLD:
            reason = Reason.GAVE_UP  # refusing connections while we shut down: stop
        else:
            policy = self.retry_policy
            if policy is not None:  # an attempt needs a moment to be worth starting
                last_start = end - MIN_ATTEMPT
                delay = policy.next_delay(
                    batch.attempts, attempt.status, last_start, attempt.retry_after
                )
            hit_budget = closing is not None and closing <= batch.window_end
            reason = Reason.DEADLINE if hit_budget else Reason.GAVE_UP
        if delay is not None:
            batch.holder = None
            batch.not_before = now + delay  # the worker's timer looks at `next_due`
            self._wait(batch)
            return [], None
        if reason is Reason.GAVE_UP:
            self._down = True
            for other in self._waiting:  # batches in backoff: one last attempt, now
                if other.attempts:
                    other.not_before = min(other.not_before, now)
        counts = {Reason.FILTERED: filtered, reason: sent}
        return self._finish(batch, counts, delivered=0), reason

    def _finish(self, batch: Batch, counts: dict[Reason, int], *, delivered: int) -> list[Waiter]:
        """Record the end of ``batch`` (lock held); returns the flushes now done."""
        self._unfinished.discard(batch)
        if batch.holder is None and batch in self._waiting:
            self._waiting.remove(batch)
            if batch.fresh:
                self._fresh_waiting -= len(batch.spans)
        batch.holder = None
        self.finished += len(batch.spans)
        self.delivered += delivered
        failed = False
        for reason, count in counts.items():
            if count:
                self.counts[reason] += count
                failed = failed or reason is not Reason.FILTERED
        if failed:
            self._unreported.add(batch.start, batch.start + len(batch.spans))
            for waiter in self._waiters:
                if waiter.target > batch.start:
                    waiter.ok = False
        return self._ready_waiters()

    def drop_unfinished(self, reason: Reason) -> int:
        """Drop everything not yet delivered (the budget ran out); later outcomes of
        sends still running are ignored. Returns how many spans."""
        with self.lock:
            while self.queue:  # spans may still arrive from racing producers
                count = len(self.queue)
                batch = Batch(self.taken, [self.queue.popleft() for _ in range(count)])
                self.taken += count
                self._unfinished.add(batch)
            dropped = 0
            ready: list[Waiter] = []
            for batch in sorted(self._unfinished, key=lambda b: b.start):
                dropped += len(batch.spans)
                ready.extend(self._finish(batch, {reason: len(batch.spans)}, delivered=0))
            self._waiting.clear()
            self._fresh_waiting = 0
        _resolve_all(ready)
        return dropped


def _resolve_all(waiters: list[Waiter]) -> None:
    for waiter in waiters:
        resolve(waiter.future, waiter.ok)
