"""`AsyncBatchSpanProcessor`: OpenTelemetry's batch processor rules, on an asyncio task.

It takes the same arguments as OpenTelemetry's ``BatchSpanProcessor`` (with the same
``OTEL_BSP_*`` defaults) and any exporter OpenTelemetry would take. ``on_end`` appends to
the `Delivery` queue and wakes the export task only when a batch fills; flushes wait on the
delivery for every span ended before them; shutdown spends its budget delivering, then
stops the exporter and counts what is left as dropped at the deadline.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Literal

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import TraceFlags

from keywordsai_tracing import _config

from .channels import channel_for
from .delivery import Delivery
from .hosting import WorkerHost
from .records import ProcessorStats, Reason
from .util import RateLimitedWarning, await_future, check_limits, logger, positive
from .worker import ExportWorker

__all__ = ["AsyncBatchSpanProcessor", "ProcessorStats"]

_get_running_loop = asyncio._get_running_loop
_get_ident = threading.get_ident
_SAMPLED = TraceFlags.SAMPLED
# After a shutdown's budget, how long stopping the export machinery may still take.
STOP_GRACE = 0.5


class AsyncBatchSpanProcessor(SpanProcessor):
    """Batch spans in memory and export them from an asyncio task.

    A drop-in for OpenTelemetry's ``BatchSpanProcessor``: arguments left at None come from
    ``OTEL_BSP_MAX_QUEUE_SIZE`` (2048), ``OTEL_BSP_SCHEDULE_DELAY`` (5000 ms),
    ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (512) and ``OTEL_BSP_EXPORT_TIMEOUT`` (30000 ms).
    ``span_exporter`` is an OpenTelemetry ``SpanExporter`` or anything with ``export()``
    (run in a dedicated thread), or an exporter with a coroutine ``aexport()`` (awaited
    on the owning loop). At interpreter exit, what is left gets ``exit_flush_timeout``
    seconds (None: no exit hook). ``meter_provider`` is accepted and unused: see `stats`.
    """

    def __init__(
        self,
        span_exporter: Any,
        max_queue_size: int | None = None,
        schedule_delay_millis: float | None = None,
        max_export_batch_size: int | None = None,
        export_timeout_millis: float | None = None,
        *,
        exit_flush_timeout: float | None = 5.0,
        meter_provider: object = None,
    ) -> None:
        (
            self._max_queue_size,
            self._max_export_batch_size,
            schedule_delay,
            export_timeout,
        ) = check_limits(
            _or_env("max_queue_size", max_queue_size),
            _or_env("max_export_batch_size", max_export_batch_size),
            _seconds_or_env("schedule_delay", "schedule_delay_millis", schedule_delay_millis),
            _seconds_or_env("batch_timeout", "export_timeout_millis", export_timeout_millis),
        )
        if exit_flush_timeout is not None:
            positive("exit_flush_timeout", exit_flush_timeout, float)
        self._exit_flush_timeout = exit_flush_timeout
        self._span_exporter = span_exporter
        channel = channel_for(span_exporter, "keywordsai-sync-export")
        self._delivery = Delivery(
            channel.retry_policy,
            window=min(channel.window, export_timeout),
            out_limit=channel.concurrency * self._max_export_batch_size,
        )
        self._queue = self._delivery.queue  # alias for the hot path
        self._host = WorkerHost(
            self._delivery,
            channel,
            max_export_batch_size=self._max_export_batch_size,
            schedule_delay=schedule_delay,
            export_timeout=export_timeout,
            queue_fill=lambda: len(self._queue) / self._max_queue_size,
        )
        self._shutdown = False  # no more spans accepted
        self._drop_warning = RateLimitedWarning(
            "Span queue full (max_queue_size=%d): %d spans dropped so far"
        )
        self._atexit_hook: Callable[[], None] | None = None
        self._register_hooks()

    # -- public API -----------------------------------------------------------------------

    @property
    def span_exporter(self) -> Any:
        """The exporter spans are handed to."""
        return self._span_exporter

    @property
    def stats(self) -> ProcessorStats:
        """Where every span handed to this processor is (a snapshot)."""
        return self._delivery.stats()

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a sampled span; wake the export task only when a batch is full."""
        if not span.context.trace_flags & _SAMPLED:
            return
        if self._shutdown:
            self._delivery.count_drop(Reason.AFTER_SHUTDOWN)
            return
        queue = self._queue
        if len(queue) >= self._max_queue_size:
            dropped = self._delivery.count_drop(Reason.QUEUE_FULL)
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
        """Block until every span ended before the call is delivered or dropped; True
        only if all were delivered, False (logged) on failure or timeout. Safe from any
        thread; from a coroutine on the owning loop, prefer ``await aflush()``."""
        if self._shutdown:
            return self._flush_after_shutdown()
        deadline = time.monotonic() + max(0.0, timeout_millis / 1000)
        return self._flush_blocking(deadline)

    async def aflush(self, timeout: float | None = None) -> bool:
        """`force_flush` for async code, awaitable from any event loop; ``timeout`` in
        seconds (None: 30)."""
        if self._shutdown:
            return self._flush_after_shutdown()
        deadline = time.monotonic() + max(0.0, 30.0 if timeout is None else timeout)
        return await self._flush_async(deadline)

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Deliver within ``timeout_millis`` (retrying, honouring ``Retry-After`` where it
        fits), then stop: the exporter's ``shutdown()`` is called, an export still running
        is not waited for, and what is left is counted as dropped (``deadline``).
        Idempotent."""
        if not self._begin_shutdown():
            return
        deadline = time.monotonic() + max(0.0, timeout_millis / 1000)
        self._delivery.closing_deadline = deadline
        self._flush_blocking(deadline, quiet=True)
        self._stop(deadline)
        blocked = _get_running_loop()
        futures = [
            worker.finished for worker in self._host.workers() if _can_finish(worker, blocked)
        ]
        futures.append(self._host.loop_thread.stop())
        concurrent.futures.wait(futures, timeout=_remaining(deadline) + STOP_GRACE)
        self._finish_shutdown()

    async def ashutdown(self, timeout: float | None = None) -> None:
        """`shutdown` for async code, awaitable from any event loop; ``timeout`` in
        seconds (None: 30). Idempotent."""
        if not self._begin_shutdown():
            return
        deadline = time.monotonic() + max(0.0, 30.0 if timeout is None else timeout)
        self._delivery.closing_deadline = deadline
        await self._flush_async(deadline, quiet=True)
        self._stop(deadline)
        # Including this loop's worker: it closes the exporter here, and nothing else
        # makes this coroutine yield to it (the private thread may already be closed).
        for worker in self._host.workers():
            if _can_finish(worker, None):
                await await_future(worker.finished, _remaining(deadline) + STOP_GRACE)
        await await_future(self._host.loop_thread.stop(), _remaining(deadline) + STOP_GRACE)
        self._finish_shutdown()

    def flush_past_blocked_loop(
        self, loop: asyncio.AbstractEventLoop | None, timeout_millis: int
    ) -> bool:
        """Flush while ``loop``'s thread is blocked for good (a signal handler that will
        end the process interrupted it): what was in flight there is sent again from the
        private thread. Call from another thread; the caller bounds the wait."""
        if self._shutdown:
            return self._flush_after_shutdown()
        self._host.presume_dead(loop)
        deadline = time.monotonic() + max(0.0, timeout_millis / 1000)
        return self._flush_blocking(deadline, loop)

    # -- flush and shutdown ---------------------------------------------------------------

    def _flush_blocking(
        self,
        deadline: float,
        running: asyncio.AbstractEventLoop | Literal[False] | None = False,
        *,
        quiet: bool = False,
    ) -> bool:
        """``running``: the loop this flush blocks (default: this thread's); ``quiet``: a
        shutdown's flush, whose answer is not the caller's (nothing logged or reported)."""
        blocked = _get_running_loop() if running is False else running
        waiter = self._delivery.add_waiter(blocked, reports=not quiet)
        if not waiter.future.done():
            worker = self._host.ensure(blocked, "block")
            if worker is None:
                self._delivery.discard(waiter)
                return self._report(False, quiet)
            worker.wake()
        try:
            ok = waiter.future.result(timeout=_remaining(deadline))
        except TimeoutError:
            self._delivery.discard(waiter)
            ok = False
        if not ok and blocked is not None and not quiet:
            stuck = self._delivery.sending_on(blocked)
            if stuck:
                logger.warning(
                    "flush() was called from a coroutine on the event loop that is sending "
                    "%d spans: they are sent when the loop runs again; use `await aflush()`",
                    stuck,
                )
        return self._report(bool(ok), quiet)

    async def _flush_async(self, deadline: float, *, quiet: bool = False) -> bool:
        waiter = self._delivery.add_waiter(reports=not quiet)
        if not waiter.future.done():
            worker = self._host.ensure(asyncio.get_running_loop(), "async")
            if worker is None:
                self._delivery.discard(waiter)
                return self._report(False, quiet)
            worker.wake()
        ok = await await_future(waiter.future, _remaining(deadline)) and waiter.future.result()
        if not ok:
            self._delivery.discard(waiter)
        return self._report(ok, quiet)

    def _flush_after_shutdown(self) -> bool:
        """After shutdown nothing moves: a flush answers at once (see `Unreported`)."""
        waiter = self._delivery.add_waiter()
        if not waiter.future.done():  # a span still racing in: it will never be sent
            self._delivery.discard(waiter)
            return False
        return waiter.future.result()

    def _report(self, ok: bool, quiet: bool) -> bool:
        stats = self._delivery.stats()
        if ok or quiet:
            logger.debug("Flush %s: %s", "done" if ok else "incomplete", stats)
        else:
            logger.warning(
                "Flush incomplete: %d spans pending, %d dropped so far (%s)",
                stats.pending,
                stats.dropped,
                ", ".join(f"{k}={v}" for k, v in stats.dropped_by_reason().items()) or "none",
            )
        return ok

    def _begin_shutdown(self) -> bool:
        with self._host.lock:
            if self._shutdown:
                return False
            self._shutdown = True
        if self._atexit_hook is not None:
            atexit.unregister(self._atexit_hook)
            self._atexit_hook = None
        return True

    def _stop(self, deadline: float) -> None:
        """The budget is spent (or everything was delivered): stop sending, stop the
        exporter, count what is left as dropped at the deadline."""
        worker = self._host.close()
        for live in {*self._host.workers(), *([worker] if worker is not None else [])}:
            live.retire()
            live.cut_off_sends()
        self._host.channel.shutdown_exporter(_remaining(deadline) * 1000)
        dropped = self._delivery.drop_unfinished(Reason.DEADLINE)
        if dropped:
            logger.warning("Shutdown: %d spans not delivered within the budget", dropped)
        self._host.channel.close()

    def _finish_shutdown(self) -> None:
        self._delivery.fail_waiters()
        logger.debug("Shut down: %s", self._delivery.stats())

    # -- process hooks --------------------------------------------------------------------

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

            def shutdown_at_exit() -> None:
                processor = ref()
                if processor is not None:
                    processor.shutdown_at_exit(timeout_millis)

            self._atexit_hook = shutdown_at_exit
            atexit.register(shutdown_at_exit)

    def shutdown_at_exit(self, timeout_millis: float) -> None:
        """Interpreter exit: no application loop runs again; deliver from the private
        thread within ``timeout_millis``, then shut down."""
        self._host.presume_dead(None)
        self.shutdown(timeout_millis)

    def _reinit_after_fork(self) -> None:
        """In a forked child: an empty queue and fresh machinery; nothing inherited runs."""
        self._host.reset_after_fork()
        self._delivery.reset_after_fork()
        self._queue = self._delivery.queue
        self._drop_warning.reset_after_fork()


def _or_env(setting: str, value: int | None) -> object:
    return _config.resolve(setting) if value is None else value


def _seconds_or_env(setting: str, name: str, millis: float | None) -> object:
    """Seconds from a milliseconds argument, else from the environment (in seconds)."""
    if millis is None:
        return _config.resolve(setting)
    if isinstance(millis, bool) or not isinstance(millis, int | float):
        raise ValueError(f"{name}: expected a positive number of milliseconds, got {millis!r}")
    if not millis > 0 or not math.isfinite(millis):
        raise ValueError(f"{name}: expected a positive number of milliseconds, got {millis!r}")
    return millis / 1000


def _can_finish(worker: ExportWorker, blocked: asyncio.AbstractEventLoop | None) -> bool:
    """Whether ``worker`` can end while this thread waits: not on ``blocked`` (the loop the
    wait blocks; None for an awaited wait, which lets its own loop run), and on a loop that
    runs (a stopped loop's task ends only if it runs again)."""
    loop = worker.loop
    return loop is not blocked and (worker.private or loop.is_running())


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
