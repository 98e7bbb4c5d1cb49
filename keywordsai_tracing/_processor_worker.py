"""One export task on one event loop: the asyncio port of OpenTelemetry's batch worker.

The task sleeps until the schedule delay passes or it is woken (a batch filled, a flush,
retirement, an export finished), then starts exports of batches of at most
``max_export_batch_size`` spans, each in a task of its own, with instrumentation
suppressed and a deadline. Up to the exporter's `concurrent_exports` of them are in
flight at once: one POST round trip spans several turns of a busy loop, so with one
batch at a time a flood of spans outgrows the queue while the export waits for replies.
The batches complete in any order (the ledger keeps the flush accounting exact).

When the loop shuts down (``asyncio.run`` and ``asyncio.Runner`` cancel every remaining
task), the task catches the cancellation, ``uncancel()``s, waits (briefly) for its
exports to end, puts the batches they cut off back to be taken first, exports what is
queued, one batch at a time under a short deadline, closes the exporter's resources on
this loop and hands over to the processor, which moves what is left to another loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from ._export_types import AsyncSpanExporter, concurrent_exports
from ._fair import export_pressure, exporting_alone
from ._processor_ledger import Batch, Ledger
from ._processor_util import RateLimitedWarning, await_future, logger, resolve

# At loop shutdown, queued spans get at most this long (or export_timeout, if shorter).
DRAIN_LIMIT = 2.0
# Bound on ``exporter.aclose()`` when a worker ends.
CLOSE_LIMIT = 2.0


def timed_out_warning() -> RateLimitedWarning:
    return RateLimitedWarning(
        "Export of %d spans did not finish within export_timeout=%.1f s; the batch is dropped"
    )


def raised_warning() -> RateLimitedWarning:
    return RateLimitedWarning("Span exporter raised; a batch of %d spans is dropped")


@dataclass(frozen=True, slots=True)
class WorkerEnv:
    """What every worker of one processor shares."""

    ledger: Ledger
    exporter: AsyncSpanExporter
    max_export_batch_size: int
    schedule_delay: float
    export_timeout: float
    on_exit: Callable[[ExportWorker], None]
    abandon: Callable[[ExportWorker], None]
    mark_dying: Callable[[asyncio.AbstractEventLoop], None]
    shares_loop: Callable[[ExportWorker], bool]
    closing: Callable[[], bool]
    queue_fill: Callable[[], float]  # 0..1: how full the queue is (see `_fair`)
    timed_out: RateLimitedWarning = field(default_factory=timed_out_warning)
    raised: RateLimitedWarning = field(default_factory=raised_warning)


class ExportWorker:
    """The export task of one loop. Other threads only call `wake` and `retire`."""

    def __init__(
        self,
        env: WorkerEnv,
        loop: asyncio.AbstractEventLoop,
        *,
        private: bool,
        predecessor: ExportWorker | None,
    ) -> None:
        self.env = env
        self.loop = loop
        self.private = private
        self.predecessor = predecessor
        self.task: asyncio.Task[None] | None = None
        self.thread_id: int | None = None  # the loop's thread, once started
        self.event = asyncio.Event()  # bound to ``loop`` on first wait
        self.wake_pending = False
        self.retired = False  # take no further batch, exit soon
        self.abandoned = False  # outcomes of batches in flight are ignored (they were put back)
        self.inflight: list[Batch] = []  # the ledger's record of what this worker holds
        self._limit = concurrent_exports(env.exporter)
        # Export tasks in flight, each with the context it runs in (to close it in).
        self._sending: dict[asyncio.Task[None], contextvars.Context] = {}
        self.finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._timer_fired = False
        self._force_owed = False  # the delay passed while every export slot was busy
        self._context = contextvars.Context()  # the task's own, empty: nothing leaks in

    def start(self) -> None:
        """Create the task; call on ``loop``'s thread."""
        self.thread_id = threading.get_ident()
        if self.retired:  # abandoned before it ever ran
            resolve(self.finished, None)
            self.env.on_exit(self)
            return
        task = self.loop.create_task(self._run(), context=self._context)
        # If the loop is closed without cancelling us, the processor notices and abandons
        # this task; its destruction is expected and must not be reported.
        task._log_destroy_pending = False  # type: ignore[attr-defined]
        self.task = task

    def wake(self) -> None:
        """Make the task look at the queue now (from any thread)."""
        self.wake_pending = True
        if asyncio._get_running_loop() is self.loop:
            self.event.set()
            return
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # loop closed: the processor rebinds on the next span or flush
            return

    def retire(self) -> None:
        """Finish the batch in flight, take no more, close the exporter and exit."""
        self.retired = True
        self.wake()

    def close_abandoned(self) -> None:
        """Finalise the coroutines of tasks whose loop was closed without cancelling them."""
        tasks = [*self._sending.items()]
        if self.task is not None:
            tasks.append((self.task, self._context))
        for task, context in tasks:
            if task.done():
                continue
            try:
                # In the task's context, so context tokens (ours, the exporter's) detach.
                context.run(task.get_coro().close)
            except (RuntimeError, ValueError):
                logger.debug("Could not close an abandoned export task", exc_info=True)

    async def _run(self) -> None:
        try:
            try:
                await self._serve()
            except asyncio.CancelledError:
                await self._after_cancel()
            self.retired = True
            if not self.env.shares_loop(self):
                await self._close_exporter()
        except GeneratorExit:
            # The loop was closed with this task pending; nothing can run there any more.
            self.retired = True
            resolve(self.finished, None)
            raise
        self.env.on_exit(self)
        resolve(self.finished, None)

    async def _serve(self) -> None:
        await self._await_predecessor(time.monotonic() + self.env.export_timeout)
        while not self.retired or self._sending:
            fired = await self._sleep()
            self._start_exports(force_first=fired)  # takes nothing once retired

    async def _sleep(self) -> bool:
        """Wait for `wake` or the schedule delay; True if the delay passed."""
        if not self.event.is_set():
            handle = self.loop.call_later(self.env.schedule_delay, self._on_timer)
            try:
                await self.event.wait()
            finally:
                handle.cancel()
        self.event.clear()
        self.wake_pending = False
        fired, self._timer_fired = self._timer_fired, False
        return fired

    def _on_timer(self) -> None:
        self._timer_fired = True
        self.event.set()

    def _start_exports(self, *, force_first: bool) -> None:
        """Full batches (or anything a flush waits for); at least one after the delay
        (once a slot is free, if none is)."""
        env = self.env
        force = self._force_owed = force_first or self._force_owed
        while len(self._sending) < self._limit:
            batch = env.ledger.take(self, env.max_export_batch_size, force=force)
            self._force_owed = force = False
            if batch is None:
                return
            context = contextvars.copy_context()  # of this task: its own, empty one
            task = self.loop.create_task(self._send(batch), context=context)
            task._log_destroy_pending = False  # type: ignore[attr-defined]  # see `start`
            self._sending[task] = context
            task.add_done_callback(self._sent)
        # All slots busy: no wake-up needed until an export ends (it wakes this task).
        self.wake_pending = True

    async def _send(self, batch: Batch) -> None:
        await self._export(batch, time.monotonic() + self.env.export_timeout, draining=False)
        self._sent(None)  # at once: the done callback would come a loop turn later

    def _sent(self, task: asyncio.Task[None] | None) -> None:
        """An export task ended: free its slot and let the worker look at the queue."""
        if task is None:
            task = asyncio.current_task()
        elif not task.cancelled() and task.exception() is not None:
            logger.debug("Export task failed", exc_info=task.exception())
        if self._sending.pop(task, None) is not None:  # type: ignore[arg-type]
            self.event.set()

    async def _export(self, batch: Batch, deadline: float, *, draining: bool) -> bool:
        """Send one batch; False if cut off at ``deadline`` while draining (requeued)."""
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        pressure = export_pressure.set(self.env.queue_fill)
        alone = exporting_alone.set(self.private)
        try:
            ok = await self._call_exporter(batch.spans, deadline)
        except BaseException as exc:
            # A coroutine finalised by the garbage collector runs outside its context.
            if not isinstance(exc, GeneratorExit):
                exporting_alone.reset(alone)
                export_pressure.reset(pressure)
                detach(token)
            raise
        exporting_alone.reset(alone)
        export_pressure.reset(pressure)
        detach(token)
        if ok is None:
            if draining:
                self.env.ledger.requeue(self)
                return False
            self.env.timed_out(len(batch.spans), self.env.export_timeout)
            ok = False
        self.env.ledger.complete(self, batch, ok)
        return True

    async def _call_exporter(self, batch: list[ReadableSpan], deadline: float) -> bool | None:
        """The exporter's verdict, or None when ``deadline`` cut it off."""
        timeout = asyncio.timeout(max(0.0, deadline - time.monotonic()))
        try:
            async with timeout:
                result: object = await self.env.exporter.aexport(batch, deadline)
        except TimeoutError:
            if timeout.expired():
                return None
            self.env.raised(len(batch), exc_info=True)
            return False
        except Exception:
            self.env.raised(len(batch), exc_info=True)
            return False
        if isinstance(result, SpanExportResult):
            return result is SpanExportResult.SUCCESS
        return bool(result)

    async def _await_predecessor(self, deadline: float) -> None:
        """Wait until the previous worker's batch in flight is settled, or abandon it."""
        predecessor = self.predecessor
        if predecessor is None:
            return
        remaining = max(0.0, deadline - time.monotonic())
        if not await await_future(predecessor.finished, remaining):
            self.env.abandon(predecessor)
        self.predecessor = None

    async def _after_cancel(self) -> None:
        """The loop is shutting down: deliver what is queued, quickly, then hand over."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        env = self.env
        deadline = time.monotonic() + min(env.export_timeout, DRAIN_LIMIT)
        try:
            await self._stop_sending(deadline)
            env.ledger.requeue(self)  # cut off mid-export: send them again
            env.mark_dying(self.loop)
            if self.retired or env.closing():
                return
            await self._await_predecessor(deadline)
            while time.monotonic() < deadline:
                batch = env.ledger.take(self, env.max_export_batch_size, force=True)
                if batch is None or not await self._export(batch, deadline, draining=True):
                    break
        except asyncio.CancelledError:
            if task is not None:
                task.uncancel()
            env.ledger.requeue(self)
            env.mark_dying(self.loop)
            logger.debug("Export at loop shutdown cancelled again; handing over")

    async def _stop_sending(self, deadline: float) -> None:
        """Cancel the exports in flight and wait until they end, at most until ``deadline``
        (an exporter may swallow the cancellation; its late outcome is then ignored)."""
        if not self._sending:
            return
        for task in self._sending:
            task.cancel()
        await asyncio.wait([*self._sending], timeout=max(0.0, deadline - time.monotonic()))

    async def _close_exporter(self) -> None:
        """Release what the exporter holds on this loop, bounded and never raising."""
        try:
            async with asyncio.timeout(CLOSE_LIMIT):
                await self.env.exporter.aclose()
        except TimeoutError:
            logger.warning("exporter.aclose() did not finish within %.1f s", CLOSE_LIMIT)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            logger.debug("exporter.aclose() cancelled")
        except Exception:
            logger.warning("exporter.aclose() raised", exc_info=True)
