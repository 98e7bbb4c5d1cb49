"""`ExportWorker`: the export task of one event loop, the asyncio port of OpenTelemetry's
batch worker.

The task sleeps until the schedule delay passes, a batch waiting for a retry is due, or it
is woken (a batch filled, a flush, retirement, a send ended); then it starts sends of
batches of at most ``max_export_batch_size`` spans, each in a task of its own with
instrumentation suppressed, up to the channel's concurrency. Retries do not occupy a
slot: a failed attempt puts the batch back in the `Delivery` with the time of its next
attempt, where any worker, on any loop, can take it when it is due.

When the loop shuts down (``asyncio.run``, ``asyncio.Runner`` and pytest-asyncio cancel
every remaining task with the loop stopped), a send's cancellation is deferred
(`SendTask`): the task catches its own cancellation, lets the sends in flight finish
(briefly), cuts off the rest (they are re-sent elsewhere), gives each queued batch one
attempt, closes the exporter's resources on this loop, and hands over: the host moves
what is left, with its retry state, to another loop or the private thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import threading
import time
from typing import TYPE_CHECKING, Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

from keywordsai_tracing._export_types import Attempt
from keywordsai_tracing._fair import export_pressure, exporting_alone

from .channels import AsyncChannel, AttemptChannel, ThreadChannel
from .records import Batch, Send
from .util import await_future, logger, resolve

if TYPE_CHECKING:
    from .hosting import WorkerHost

# At loop shutdown, what is queued gets at most this long (or export_timeout, if shorter).
DRAIN_LIMIT = 2.0
# Bound on ``exporter.aclose()`` when a worker ends.
CLOSE_LIMIT = 2.0
# Once cut off, how long a send may take to end.
CUT_OFF_GRACE = 0.25


class SendTask(asyncio.Task[None]):
    """A send in flight. ``cancel()`` called while its loop is not running is deferred:
    that is a loop shutting down (``asyncio.run`` cancels every task before it runs them
    to completion), and the worker decides how long the send may still take (`cut_off`)."""

    deferred = False

    def cancel(self, msg: Any | None = None) -> bool:
        if self.get_loop().is_running():
            return super().cancel(msg)
        self.deferred = True
        return False

    def cut_off(self) -> bool:
        """Cancel for real."""
        return super().cancel("cut off by the export worker")


class ExportWorker:
    """The export task of one loop. Other threads only call `wake` and `retire`."""

    def __init__(
        self,
        host: WorkerHost,
        loop: asyncio.AbstractEventLoop,
        *,
        private: bool,
        predecessor: ExportWorker | None,
    ) -> None:
        self.host = host
        self.loop = loop
        self.private = private
        self.predecessor = predecessor
        self.task: asyncio.Task[None] | None = None
        self.thread_id: int | None = None  # the loop's thread, once started
        self.event = asyncio.Event()  # bound to ``loop`` on first wait
        self.wake_pending = False
        self.retired = False  # take no further batch, exit soon
        self.finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._limit = host.channel.concurrency
        # Send tasks in flight, each with the context it runs in (to close it in).
        self._sending: dict[asyncio.Task[None], contextvars.Context] = {}
        self._timer_fired = False
        self._force_owed = False  # the delay passed while every slot was busy
        self._closing = False  # the loop is shutting down
        self._draining = False  # ... and queued batches get their one attempt here
        self._context = contextvars.Context()  # the task's own, empty: nothing leaks in

    # -- called from any thread -----------------------------------------------------------

    def start(self) -> None:
        """Create the task; call on ``loop``'s thread."""
        self.thread_id = threading.get_ident()
        if self.retired:  # abandoned before it ever ran
            resolve(self.finished, None)
            self.host.worker_exited(self)
            return
        task = self.loop.create_task(self._run(), context=self._context)
        # If the loop is closed without cancelling us, the host notices and abandons this
        # task; its destruction is expected and must not be reported.
        task._log_destroy_pending = False  # type: ignore[attr-defined]
        self.task = task

    def wake(self, *, force: bool = False) -> None:
        """Make the task look at the queue now (from any thread); ``force``: send a
        partial batch too, as if the schedule delay had passed."""
        if force:
            self._force_owed = True
        self.wake_pending = True
        if asyncio._get_running_loop() is self.loop:
            self.event.set()
            return
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # loop closed: the host rebinds on the next span or flush
            return

    def retire(self) -> None:
        """Finish the sends in flight, take no more batches, close the exporter, exit."""
        self.retired = True
        self.wake()

    def cut_off_sends(self) -> None:
        """Cut off the sends in flight (the shutdown budget ran out); from any thread."""

        def cut() -> None:
            for task in self._sending:
                if isinstance(task, SendTask):
                    task.cut_off()

        if asyncio._get_running_loop() is self.loop:
            cut()
            return
        try:
            self.loop.call_soon_threadsafe(cut)
        except RuntimeError:
            return

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

    # -- the task -----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            try:
                await self._serve()
            except asyncio.CancelledError:
                await self._after_cancel()
            self.retired = True
            if not self.host.shares_loop(self):
                await self._close_exporter()
        except GeneratorExit:
            # The loop was closed with this task pending; nothing can run there any more.
            self.retired = True
            resolve(self.finished, None)
            raise
        self.host.worker_exited(self)
        resolve(self.finished, None)

    async def _serve(self) -> None:
        await self._await_predecessor(time.monotonic() + self.host.export_timeout)
        while not self.retired or self._sending:
            fired = await self._sleep()
            self._start_exports(force_first=fired)  # takes nothing once retired

    async def _sleep(self) -> bool:
        """Wait for `wake`, the schedule delay or a due retry; True if the delay passed."""
        if not self.event.is_set():
            loop = self.loop
            handles = [loop.call_later(self.host.schedule_delay, self._on_timer)]
            # A due retry matters only to a worker that may take it, with a slot free.
            idle = not self.retired and len(self._sending) < self._limit
            due = self.host.delivery.next_due() if idle else None
            if due is not None:
                handles.append(loop.call_later(max(0.0, due - time.monotonic()), self.event.set))
            try:
                await self.event.wait()
            finally:
                for handle in handles:
                    handle.cancel()
        self.event.clear()
        self.wake_pending = False
        fired, self._timer_fired = self._timer_fired, False
        return fired

    def _on_timer(self) -> None:
        self._timer_fired = True
        self.event.set()

    def _start_exports(self, *, force_first: bool) -> None:
        """Full batches, due retries, anything a flush waits for; at least one partial
        batch after the schedule delay (once a slot is free, if none is)."""
        host = self.host
        force = self._force_owed = force_first or self._force_owed
        now = time.monotonic()
        if taken := host.delivery.take_back_overdue(now):
            logger.debug("Took back %d spans stuck in a send on a stopped loop", taken)
        while len(self._sending) < self._limit:
            batch = host.delivery.take(
                self,
                host.max_export_batch_size,
                force=force or self._draining,
                now=now,
                fresh_only=self._draining,
            )
            if batch is None:
                return
            if batch.fresh:
                self._force_owed = force = False
            context = contextvars.copy_context()  # of this task: its own, empty one
            task = SendTask(self._send(batch), loop=self.loop, context=context)
            task._log_destroy_pending = False  # type: ignore[attr-defined]  # see `start`
            self._sending[task] = context
            task.add_done_callback(self._sent)
        # All slots busy: no wake-up needed until a send ends (it wakes this task).
        self.wake_pending = True

    def _sent(self, task: asyncio.Task[None] | None) -> None:
        """A send task ended: free its slot and let the worker look at the queue."""
        if task is None:
            task = asyncio.current_task()
        elif not task.cancelled() and task.exception() is not None:
            logger.debug("Export task failed", exc_info=task.exception())
        if self._sending.pop(task, None) is not None:  # type: ignore[arg-type]
            self.event.set()

    # -- one batch ----------------------------------------------------------------------

    async def _send(self, batch: Batch) -> None:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        pressure = export_pressure.set(self.host.queue_fill)
        alone = exporting_alone.set(self.private)
        try:
            await self._deliver(batch)
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
        self._sent(None)  # at once: the done callback would come a loop turn later

    async def _deliver(self, batch: Batch) -> None:
        channel = self.host.channel
        delivery = self.host.delivery
        if isinstance(channel, ThreadChannel):
            send = Send(self, None)
            if not delivery.begin_send(batch, self, send, time.monotonic()):
                return
            future = channel.submit(batch.spans)
            future.add_done_callback(functools.partial(self.host.thread_done, batch, send))
            # Cancelled, only the waiting stops. Overrun, the batch counts as failed (the
            # call cannot be interrupted; whatever it returns later is ignored).
            timeout = self.host.export_timeout
            if not await await_future(future, timeout) and delivery.complete(batch, send, False):
                self.host.timed_out(len(batch.spans), timeout)
            return
        if isinstance(channel, AttemptChannel) and batch.prepared is None:
            try:
                prepared = await channel.prepare(batch.spans)
            except asyncio.CancelledError:
                delivery.put_back(batch, self, sent=False)
                raise
            except Exception:
                logger.warning("Could not prepare %d spans for export", len(batch.spans))
                logger.debug("Preparing failed", exc_info=True)
                delivery.fail_unsent(batch, self)
                return
            if not delivery.prepared(batch, self, prepared):
                return
        now = time.monotonic()
        send = Send(self, self.loop)
        if not delivery.begin_send(batch, self, send, now):
            return
        deadline = send.deadline = self.host.attempt_deadline(batch, now)
        try:
            if isinstance(channel, AttemptChannel):
                assert batch.prepared is not None
                attempt = await self._attempt(channel, batch, deadline)
                if self._closing and attempt.retry and attempt.status is None:
                    # No answer while the loop shuts down: possibly the shutdown's doing
                    # (it cancels aiohttp's own tasks too), not the collector's. Sent
                    # again elsewhere; a re-send unless the connection was refused.
                    delivery.put_back(batch, send, sent=not attempt.refused)
                    return
                delivery.settle(batch, send, attempt, time.monotonic())
            else:
                assert isinstance(channel, AsyncChannel)
                ok = await self._export(channel, batch, deadline)
                delivery.complete(batch, send, ok)
        except asyncio.CancelledError:
            delivery.put_back(batch, send, sent=True)  # cut off: sent again elsewhere
            raise

    async def _attempt(self, channel: AttemptChannel, batch: Batch, deadline: float) -> Attempt:
        assert batch.prepared is not None
        timeout = max(0.0, deadline - time.monotonic())
        scope = asyncio.timeout(timeout + 1.0)  # a backstop: the exporter bounds itself
        try:
            async with scope:
                return await channel.send(batch.prepared, timeout)
        except TimeoutError:
            if not scope.expired():
                raise
            return Attempt(retry=True, cause=f"no answer within {timeout:.3g}s")
        except Exception:
            logger.warning("The exporter raised on a batch of %d spans", len(batch.spans))
            logger.debug("Exporter error", exc_info=True)
            return Attempt(retry=False, cause="exporter raised")

    async def _export(self, channel: AsyncChannel, batch: Batch, deadline: float) -> bool:
        timeout = asyncio.timeout(max(0.0, deadline - time.monotonic()))
        try:
            async with timeout:
                return await channel.export(batch.spans, deadline)
        except TimeoutError:
            if not timeout.expired():
                self.host.raised(len(batch.spans), exc_info=True)
                return False
            self.host.timed_out(len(batch.spans), self.host.export_timeout)
            return False
        except Exception:
            self.host.raised(len(batch.spans), exc_info=True)
            return False

    # -- loops ending -------------------------------------------------------------------

    async def _await_predecessor(self, deadline: float) -> None:
        """Wait until the previous worker's sends are settled, or abandon it."""
        predecessor = self.predecessor
        if predecessor is None:
            return
        remaining = max(0.0, deadline - time.monotonic())
        if not await await_future(predecessor.finished, remaining):
            self.host.abandon(predecessor)
        self.predecessor = None

    async def _after_cancel(self) -> None:
        """The loop is shutting down: finish or cut off what is in flight, give what is
        queued one attempt, and hand the rest over (with its retry state)."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        host = self.host
        host.mark_dying(self.loop)
        self._closing = True
        deadline = time.monotonic() + min(host.export_timeout, DRAIN_LIMIT)
        try:
            if not (self.retired or host.closing):
                # Each queued batch gets one attempt here, beside the sends in flight.
                self._draining = True
                self.predecessor = None
                while (left := deadline - time.monotonic()) > 0:
                    self._start_exports(force_first=True)
                    if not self._sending:
                        break
                    await asyncio.wait(
                        [*self._sending], timeout=left, return_when=asyncio.FIRST_COMPLETED
                    )
            await self._finish_sending(deadline)
        except asyncio.CancelledError:
            if task is not None:
                task.uncancel()
            for send in self._sending:
                if isinstance(send, SendTask):
                    send.cut_off()
            logger.debug("Export at loop shutdown cancelled again; handing over")
        finally:
            self.retired = True

    async def _finish_sending(self, deadline: float) -> None:
        """Let the sends in flight end until ``deadline``, then cut off the rest and wait
        (briefly) for them to end; their batches are put back to be sent elsewhere."""
        if not self._sending:
            return
        pending = [*self._sending]
        _, late = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        if not late:
            return
        for task in late:
            if isinstance(task, SendTask):
                task.cut_off()
        await asyncio.wait(late, timeout=CUT_OFF_GRACE)

    async def _close_exporter(self) -> None:
        """Release what the exporter holds on this loop, bounded and never raising."""
        limit = self.host.close_limit(CLOSE_LIMIT)
        try:
            async with asyncio.timeout(limit):
                await self.host.channel.aclose()
        except TimeoutError:
            # Past a shutdown's budget there is no time left to wait: not worth a warning.
            log = logger.warning if limit > 0 else logger.debug
            log("exporter.aclose() did not finish within %.1f s", limit)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            logger.debug("exporter.aclose() cancelled")
        except Exception:
            logger.warning("exporter.aclose() raised", exc_info=True)
