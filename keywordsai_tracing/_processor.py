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
from ._fork import FORK_GRAVEYARD
from ._loop_thread import LoopThread
from ._processor_ledger import Ledger, ProcessorStats
from ._processor_sync import as_async_exporter
from ._processor_util import RateLimitedWarning, await_future, check_limits, logger, positive
from ._processor_worker import ExportWorker, WorkerEnv

__all__ = ["AsyncBatchSpanProcessor", "ProcessorStats"]

_get_running_loop = asyncio._get_running_loop
_get_ident = threading.get_ident
_SAMPLED = TraceFlags.SAMPLED

# "end": a span ended here; "async": an awaited flush on the running loop;
# "block": a sync flush that will block this thread (and its running loop, if any).
_Mode = Literal["end", "async", "block"]
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
        self._lock = threading.Lock()  # guards binding: _worker, _live, _closing
        self._worker: ExportWorker | None = None
        self._live: set[ExportWorker] = set()  # strong references to unfinished tasks
        self._dying: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._loop_thread = LoopThread("keywordsai-export-loop")
        self._shutdown = False  # no more spans accepted
        self._closing = False  # workers are being stopped: no rebinding
        self._drop_warning = RateLimitedWarning(
            "Span queue full (max_queue_size=%d): %d spans dropped so far"
        )
        self._env = WorkerEnv(
            ledger=self._ledger,
            exporter=self._exporter,
            max_export_batch_size=self._max_export_batch_size,
            schedule_delay=self._schedule_delay,
            export_timeout=self._export_timeout,
            on_exit=self._worker_exited,
            abandon=self._abandon,
            mark_dying=self._mark_dying,
            shares_loop=self._shares_loop,
            closing=lambda: self._closing,
            queue_fill=lambda: len(self._queue) / self._max_queue_size,
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
        worker = self._worker
        # Fast unless: no worker, its loop closed, or a span ends on some other running loop.
        # (``_get_running_loop()`` is only asked off the owner's thread: on a thread running
        # a loop it costs a getpid() system call.)
        if (
            worker is None
            or worker.loop.is_closed()
            or (worker.thread_id != _get_ident() and _get_running_loop() is not None)
        ):
            worker = self._check_worker(worker, _get_running_loop())
            if worker is None:
                return
        if len(queue) >= self._max_export_batch_size and not worker.wake_pending:
            if not worker.private and not worker.loop.is_running():
                worker = self._replace_stopped(worker)  # a loop stopped without closing
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

    # ----------------------------------------------------------------- binding

    def _check_worker(
        self, worker: ExportWorker | None, running: asyncio.AbstractEventLoop | None
    ) -> ExportWorker | None:
        if worker is not None and not self._unusable(worker, running, "end"):
            return worker
        return self._ensure_worker(running, "end")

    def _replace_stopped(self, worker: ExportWorker) -> ExportWorker:
        """A full batch waits on an application loop that is not running: move on (to the
        running loop here, else the private thread); it comes back if that loop resumes."""
        running = _get_running_loop()
        replacement = self._ensure_worker(running, "async" if running is not None else "block")
        return worker if replacement is None else replacement

    def _can_host(self, loop: asyncio.AbstractEventLoop) -> bool:
        return loop not in self._dying and not loop.is_closed()

    def _unusable(
        self, worker: ExportWorker | None, running: asyncio.AbstractEventLoop | None, mode: _Mode
    ) -> bool:
        """Whether ``worker`` cannot (or should no longer) export, seen from this thread."""
        if worker is None or worker.retired:
            return True
        loop = worker.loop
        if loop.is_closed():
            return True
        if loop is running:
            return mode == "block"
        if worker.private:
            # Prefer the application's loop: it delivers the queue when it shuts down.
            return mode == "end" and running is not None and self._can_host(running)
        return mode != "end" and not loop.is_running()

    def _ensure_worker(
        self, running: asyncio.AbstractEventLoop | None, mode: _Mode
    ) -> ExportWorker | None:
        """The worker that exports from now on, replacing the current one if needed."""
        abandoned: ExportWorker | None = None
        with self._lock:
            current = self._worker
            if self._closing:
                return current
            if not self._unusable(current, running, mode):
                return current
            use_app = running is not None and mode != "block" and self._can_host(running)
            if use_app and running is not None:
                loop = running
            else:
                try:
                    loop = self._loop_thread.ensure_started()
                except RuntimeError:  # no new threads (interpreter exit on Python 3.12)
                    logger.warning(
                        "Cannot start the export thread; %d spans stay queued", len(self._queue)
                    )
                    return None
            predecessor = current
            if current is not None:
                current.retired = True
                if (
                    (mode == "block" and current.loop is running)
                    or current.loop.is_closed()
                    or (not current.private and not current.loop.is_running())
                ):
                    self._abandon_locked(current)
                    abandoned, predecessor = current, current.predecessor
            worker = ExportWorker(self._env, loop, private=not use_app, predecessor=predecessor)
            self._worker = worker
            self._live.add(worker)
        if abandoned is not None and abandoned.loop.is_closed():
            abandoned.close_abandoned()
        if predecessor is not None:
            predecessor.wake()  # let it notice retirement
        if use_app:
            worker.start()
        elif not self._loop_thread.call_soon(worker.start):
            logger.warning("The private export loop is not available; spans stay queued")
        return worker

    def _abandon_locked(self, worker: ExportWorker) -> None:
        worker.retired = worker.abandoned = True
        requeued = self._ledger.requeue(worker)
        if requeued:
            logger.debug("Re-queued %d unacknowledged spans", requeued)
        if worker.loop.is_closed():
            self._live.discard(worker)

    def _abandon(self, worker: ExportWorker) -> None:
        with self._lock:
            self._abandon_locked(worker)

    def _shares_loop(self, worker: ExportWorker) -> bool:
        """Another active worker uses ``worker``'s loop (it closes the exporter there)."""
        with self._lock:
            return any(
                other is not worker and other.loop is worker.loop and not other.retired
                for other in self._live
            )

    def _mark_dying(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._dying.add(loop)
        except TypeError:  # a loop type without weak references
            return

    def _worker_exited(self, worker: ExportWorker) -> None:
        """A worker ended: if it was the current one and work remains, hand it over."""
        with self._lock:
            self._live.discard(worker)
            if self._worker is not worker:
                return
            self._worker = None
            if self._closing or not self._ledger.has_work():
                return
        successor = self._ensure_worker(None, "block")
        if successor is not None:
            successor.wake()

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
            self._mark_dying(loop)
        deadline = time.monotonic() + max(0.0, timeout_millis / 1000)
        return self._flush_blocking(deadline, loop)

    def _flush_blocking(
        self, deadline: float, running: asyncio.AbstractEventLoop | Literal[False] | None = False
    ) -> bool:
        """``running``: the loop this flush must not wait for (default: this thread's)."""
        waiter = self._ledger.add_waiter()
        if not waiter.future.done():
            blocked = _get_running_loop() if running is False else running
            worker = self._ensure_worker(blocked, "block")
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
            worker = self._ensure_worker(asyncio.get_running_loop(), "async")
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
        with self._lock:
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
            with self._lock:
                self._closing = True
                worker, self._worker = self._worker, None
            if worker is None:
                return None
            worker.retire()
            if blocking and not worker.private and worker.loop is _get_running_loop():
                return None  # it runs on the loop this thread blocks; it ends when resumed
            return worker.finished

        stages: list[Callable[[], _AnyFuture | None]] = [retire_worker, self._loop_thread.stop]
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
        inherited = [*self._live, *([self._worker] if self._worker else [])]
        for worker in inherited:
            worker.retired = worker.abandoned = True
            worker.inflight = []
        FORK_GRAVEYARD.append(inherited)
        self._lock = threading.Lock()
        self._worker = None
        self._live = set()
        self._dying = weakref.WeakSet()
        self._ledger.reset_after_fork()
        self._queue = self._ledger.queue
        self._loop_thread.reset_after_fork()
        self._drop_warning.reset_after_fork()
        self._env.timed_out.reset_after_fork()
        self._env.raised.reset_after_fork()
        if self._adapter is not None:
            self._adapter.reset_after_fork()


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
