"""`AsyncBatchSpanProcessor`: OpenTelemetry's batch processor rules, on an asyncio task.

Where the export task lives
    The first span that ends on a thread with a running event loop puts the export task on
    that loop; spans ending anywhere else are exported by it too (a cross-thread wake-up is
    sent only when a batch fills). With no application loop (a sync script, a worker
    thread) the same task runs on a private daemon loop thread. When the owning loop shuts
    down (``asyncio.run`` returning, a pytest-asyncio loop ending, FastAPI shutting down)
    the task delivers the queue, closes the exporter on that loop and hands over: what is
    left, or ends later, goes to the next loop or to the private thread. A loop closed
    without cancelling its tasks is noticed on the next span or flush.

Flushing from inside the owning loop
    A synchronous `force_flush` (or `shutdown`) called by a coroutine running on the owning
    loop cannot wait for that loop: it moves the queue, and the batch in flight (sent again:
    delivery is at-least-once), to the private thread and blocks until that thread
    delivered them, within the timeout. Async code should ``await aflush()`` instead.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Literal

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import TraceFlags

from ._export_types import AsyncSpanExporter
from ._processor_host import WorkerHost
from ._processor_ledger import Ledger, ProcessorStats
from ._processor_sync import as_async_exporter
from ._processor_util import RateLimitedWarning, await_future, check_limits, logger, positive

__all__ = ["AsyncBatchSpanProcessor", "ProcessorStats"]

_get_running_loop = asyncio._get_running_loop
_get_ident = threading.get_ident
_SAMPLED = TraceFlags.SAMPLED

_AnyFuture = concurrent.futures.Future[Any]


class AsyncBatchSpanProcessor(SpanProcessor):
    """Batch spans in memory and export them from an asyncio task.

    ``exporter`` is an `AsyncSpanExporter` (awaited on the owning loop) or any sync
    OpenTelemetry ``SpanExporter`` (its ``export()`` runs in a dedicated thread). Up to
    ``max_queue_size`` spans wait; further spans are dropped, counted and reported at most
    every 10 s. Batches of at most ``max_export_batch_size`` go out when one fills, when
    ``schedule_delay`` seconds passed, or on flush; each has ``export_timeout`` seconds.
    At interpreter exit, queued spans get ``exit_flush_timeout`` seconds (None: no hook).
    """

    def __init__(
        self,
        exporter: AsyncSpanExporter | SpanExporter,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        schedule_delay: float = 5.0,
        export_timeout: float = 30.0,
        *,
        exit_flush_timeout: float | None = 5.0,
    ) -> None:
        (
            self._max_queue_size,
            self._max_export_batch_size,
            self._schedule_delay,
            self._export_timeout,
        ) = check_limits(max_queue_size, max_export_batch_size, schedule_delay, export_timeout)
        if exit_flush_timeout is not None:
            positive("exit_flush_timeout", exit_flush_timeout, float)
        self._exit_flush_timeout = exit_flush_timeout
        self._exporter, self._adapter = as_async_exporter(exporter, "keywordsai-sync-export")

        self._ledger = Ledger()
        self._queue = self._ledger.queue  # alias for the hot path
        self._host = WorkerHost(
            self._ledger,
            self._exporter,
            max_export_batch_size=self._max_export_batch_size,
            schedule_delay=self._schedule_delay,
            export_timeout=self._export_timeout,
            queue_fill=lambda: len(self._queue) / self._max_queue_size,
        )
        self._shutdown = False  # no more spans accepted
        self._drop_warning = RateLimitedWarning(
            "Span queue full (max_queue_size=%d): %d spans dropped so far"
        )
        self._atexit_hook: Callable[[], None] | None = None
        self._register_hooks()

    # ----------------------------------------------------------------- public API

    @property
    def stats(self) -> ProcessorStats:
        """A snapshot of the counters."""
        return self._ledger.stats()

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a sampled span; wake the export task only when a batch is full."""
        if not span.context.trace_flags & _SAMPLED or self._shutdown:
            return
        queue = self._queue
        if len(queue) >= self._max_queue_size:
            dropped = self._ledger.count_drop()
            if self._drop_warning.due():
                self._drop_warning(self._max_queue_size, dropped)
            return
        queue.append(span)
        host = self._host
        worker = host.worker
        # Fast unless: no worker, its loop closed, or a span ends on some other running loop.
        # (``_get_running_loop()`` is only asked off the owner's thread: on a thread running
        # a loop it costs a getpid() system call.)
        if (
            worker is None
            or worker.loop.is_closed()
            or (worker.thread_id != _get_ident() and _get_running_loop() is not None)
        ):
            worker = host.check(worker, _get_running_loop())
            if worker is None:
                return
        if len(queue) >= self._max_export_batch_size and not worker.wake_pending:
            if not worker.private and not worker.loop.is_running():
                worker = host.replace_stopped(worker)  # a loop stopped without closing
            worker.wake()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Block until every span queued before the call was delivered; False on timeout
        or failure. Safe from any thread, and from a coroutine on the owning loop (see the
        module docstring: the work then moves to the private thread)."""
        if self._shutdown:
            return self._ledger.stats().pending == 0
        deadline = time.monotonic() + max(0.0, timeout_millis / 1000)
        return self._flush_blocking(deadline)

    async def aflush(self, timeout: float | None = None) -> bool:
        """Await delivery of every span queued before the call, from any event loop;
        False on failure or after ``timeout`` seconds (None: each batch is bounded by
        ``export_timeout``)."""
        if self._shutdown:
            return self._ledger.stats().pending == 0
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        return await self._flush_async(deadline)

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Flush, then stop the export machinery, within ``timeout_millis``. Idempotent.

        ``exporter.shutdown()`` is called first so retries and backoffs are cut short."""
        if not self._begin_shutdown():
            return
        deadline = time.monotonic() + max(0.0, timeout_millis / 1000)
        self._flush_blocking(deadline)
        for stage in self._stop_stages(blocking=True):
            future = stage()
            if future is not None:
                concurrent.futures.wait([future], timeout=_remaining(deadline))
        self._finish_shutdown()

    async def ashutdown(self, timeout: float | None = None) -> None:
        """`shutdown` for async code, awaitable from any event loop; ``timeout`` seconds
        (None: ``export_timeout``). Idempotent."""
        if not self._begin_shutdown():
            return
        limit = self._export_timeout if timeout is None else timeout
        deadline = time.monotonic() + max(0.0, limit)
        await self._flush_async(deadline)
        for stage in self._stop_stages(blocking=False):
            future = stage()
            if future is not None:
                await await_future(future, _remaining(deadline))
        self._finish_shutdown()

    # ----------------------------------------------------------------- flush and shutdown

    def flush_past_blocked_loop(
        self, loop: asyncio.AbstractEventLoop | None, timeout_millis: int
    ) -> bool:
        """Flush while ``loop``'s thread is blocked (say, in a signal handler that
        interrupted it): its export task cannot run, so the queue and any batch in flight
        move to the private thread. Call from another thread; the caller bounds the wait."""
        if self._shutdown:
            return self._ledger.stats().pending == 0
        if loop is not None:
            self._host.mark_dying(loop)
        deadline = time.monotonic() + max(0.0, timeout_millis / 1000)
        return self._flush_blocking(deadline, loop)

    def _flush_blocking(
        self, deadline: float, running: asyncio.AbstractEventLoop | Literal[False] | None = False
    ) -> bool:
        """``running``: the loop this flush must not wait for (default: this thread's)."""
        waiter = self._ledger.add_waiter()
        if not waiter.future.done():
            blocked = _get_running_loop() if running is False else running
            worker = self._host.ensure(blocked, "block")
            if worker is None:
                self._ledger.discard(waiter)
                return False
            worker.wake()
        try:
            ok = waiter.future.result(timeout=_remaining(deadline))
        except TimeoutError:
            self._ledger.discard(waiter)
            ok = False
        logger.debug("Flush %s: %s", "done" if ok else "incomplete", self._ledger.stats())
        return bool(ok)

    async def _flush_async(self, deadline: float | None) -> bool:
        waiter = self._ledger.add_waiter()
        if not waiter.future.done():
            worker = self._host.ensure(asyncio.get_running_loop(), "async")
            if worker is None:
                self._ledger.discard(waiter)
                return False
            worker.wake()
        timeout = None if deadline is None else _remaining(deadline)
        ok = await await_future(waiter.future, timeout) and waiter.future.result()
        if not ok:
            self._ledger.discard(waiter)
        logger.debug("Flush %s: %s", "done" if ok else "incomplete", self._ledger.stats())
        return ok

    def _begin_shutdown(self) -> bool:
        with self._host.lock:
            if self._shutdown:
                return False
            self._shutdown = True
        if self._atexit_hook is not None:
            atexit.unregister(self._atexit_hook)
            self._atexit_hook = None
        try:
            self._exporter.shutdown()
        except Exception:
            logger.warning("exporter.shutdown() raised", exc_info=True)
        return True

    def _stop_stages(self, *, blocking: bool) -> list[Callable[[], _AnyFuture | None]]:
        """Stop steps, in order; each returns what to wait for before the next one."""

        def retire_worker() -> _AnyFuture | None:
            worker = self._host.close()
            if worker is None:
                return None
            worker.retire()
            if blocking and not worker.private and worker.loop is _get_running_loop():
                return None  # it runs on the loop this thread blocks; it ends when resumed
            return worker.finished

        stages: list[Callable[[], _AnyFuture | None]] = [retire_worker, self._host.loop_thread.stop]
        if self._adapter is not None:
            stages.append(self._adapter.close)
        return stages

    def _finish_shutdown(self) -> None:
        self._ledger.fail_waiters()
        logger.debug("Shut down: %s", self._ledger.stats())

    # ----------------------------------------------------------------- process hooks

    def _register_hooks(self) -> None:
        ref = weakref.ref(self)

        def after_fork_in_child() -> None:
            processor = ref()
            if processor is not None:
                processor._reinit_after_fork()

        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=after_fork_in_child)
        if self._exit_flush_timeout is not None:
            timeout_millis = self._exit_flush_timeout * 1000

            def flush_at_exit() -> None:
                processor = ref()
                if processor is not None and not processor._shutdown:
                    processor.force_flush(int(timeout_millis))

            self._atexit_hook = flush_at_exit
            atexit.register(flush_at_exit)

    def _reinit_after_fork(self) -> None:
        """In a forked child: an empty queue and fresh machinery; nothing inherited runs."""
        self._host.reset_after_fork()
        self._ledger.reset_after_fork()
        self._queue = self._ledger.queue
        self._drop_warning.reset_after_fork()
        if self._adapter is not None:
            self._adapter.reset_after_fork()


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
