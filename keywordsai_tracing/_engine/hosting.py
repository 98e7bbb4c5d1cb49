"""`WorkerHost`: which event loop a processor's export task lives on, and moving it.

An application loop is preferred (it delivers what is queued when it shuts down); the
private loop thread is the fallback (sync code, worker threads, a flush that must block).
A worker whose loop closed, stopped, or is about to block is retired or abandoned: the
`Delivery` takes back what it held. Sends running on a loop that can never run again are
taken back as cut off (to be re-sent); sends on a loop that may resume are left to finish
there.

A watchdog on the private loop thread looks at an application loop that hosts the worker
once per schedule delay: if it has stopped running (``run_until_complete`` returned and
the loop sits idle) with spans waiting, the private thread takes over, so they leave
within about two schedule delays.

The processor's hot path reads `worker` without the lock; every change happens under it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import weakref
from collections.abc import Callable
from typing import Literal

from keywordsai_tracing._fork import FORK_GRAVEYARD

from .channels import Channel
from .delivery import Delivery
from .loop_thread import LoopThread
from .records import Batch, Send
from .util import RateLimitedWarning, logger
from .worker import ExportWorker

# "end": a span ended here; "async": an awaited flush on the running loop;
# "block": a sync flush that will block this thread (and its running loop, if any).
Mode = Literal["end", "async", "block"]

_get_running_loop = asyncio._get_running_loop


class WorkerHost:
    """The export worker of one processor and the loops it may run on (see module doc)."""

    def __init__(
        self,
        delivery: Delivery,
        channel: Channel,
        *,
        max_export_batch_size: int,
        schedule_delay: float,
        export_timeout: float,
        queue_fill: Callable[[], float],
    ) -> None:
        self.delivery = delivery
        self.channel = channel
        self.max_export_batch_size = max_export_batch_size
        self.schedule_delay = schedule_delay
        self.export_timeout = export_timeout
        self.queue_fill = queue_fill  # 0..1: how full the queue is (see `_fair`)
        self.lock = threading.Lock()  # guards worker, live, closing
        self.worker: ExportWorker | None = None
        self.live: set[ExportWorker] = set()  # strong references to unfinished tasks
        self.dying: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self.closing = False  # workers are being stopped: no rebinding
        self.all_loops_dead = False  # the process is ending: no application loop runs again
        self.loop_thread = LoopThread("keywordsai-export-loop")
        self.timed_out = RateLimitedWarning(
            "Export of %d spans did not finish within export_timeout=%.1f s; the batch is dropped"
        )
        self.raised = RateLimitedWarning("Span exporter raised; a batch of %d spans is dropped")
        self._watching = False

    # -- deadlines ----------------------------------------------------------------------

    def attempt_deadline(self, batch: Batch, now: float) -> float:
        """When an attempt starting ``now`` must end."""
        closing = self.delivery.closing_deadline
        deadline = min(batch.window_end, now + self.export_timeout)
        return deadline if closing is None else min(deadline, closing)

    def close_limit(self, limit: float) -> float:
        """``limit``, or less when a shutdown budget ends sooner."""
        closing = self.delivery.closing_deadline
        if closing is None:
            return limit
        return max(0.0, min(limit, closing - time.monotonic()))

    # -- outcomes from the sync exporter's thread ---------------------------------------

    def thread_done(
        self, batch: Batch, send: Send, future: concurrent.futures.Future[bool]
    ) -> None:
        """A sync ``export()`` returned (in its thread): record it, wake the worker."""
        if future.cancelled():
            ok = False
        elif future.exception() is not None:
            self.raised(len(batch.spans), exc_info=future.exception())
            ok = False
        else:
            ok = future.result()
        self.delivery.complete(batch, send, ok)
        worker = self.worker
        if worker is not None:
            worker.wake()

    # -- choosing the worker ------------------------------------------------------------

    def check(
        self, worker: ExportWorker | None, running: asyncio.AbstractEventLoop | None
    ) -> ExportWorker | None:
        """The worker for a span that ended on ``running`` (None: no loop here)."""
        if worker is not None and not self.unusable(worker, running, "end"):
            return worker
        return self.ensure(running, "end")

    def replace_stopped(self, worker: ExportWorker) -> ExportWorker:
        """A batch waits on an application loop that is not running: move on (to the
        running loop here, else the private thread); it comes back if that loop resumes."""
        running = _get_running_loop()
        replacement = self.ensure(running, "async" if running is not None else "block")
        return worker if replacement is None else replacement

    def can_host(self, loop: asyncio.AbstractEventLoop) -> bool:
        return loop not in self.dying and not loop.is_closed() and not self.all_loops_dead

    def unusable(
        self, worker: ExportWorker | None, running: asyncio.AbstractEventLoop | None, mode: Mode
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
            return mode == "end" and running is not None and self.can_host(running)
        if self.all_loops_dead:
            return True
        return mode != "end" and not loop.is_running()

    def ensure(self, running: asyncio.AbstractEventLoop | None, mode: Mode) -> ExportWorker | None:
        """The worker that exports from now on, replacing the current one if needed."""
        abandoned: ExportWorker | None = None
        with self.lock:
            current = self.worker
            if self.closing:
                return current
            if not self.unusable(current, running, mode):
                return current
            use_app = running is not None and mode != "block" and self.can_host(running)
            if use_app and running is not None:
                loop = running
            else:
                try:
                    loop = self.loop_thread.ensure_started()
                except RuntimeError:  # no new threads (interpreter exit on Python 3.12)
                    logger.warning(
                        "Cannot start the export thread; %d spans stay queued",
                        len(self.delivery.queue),
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
            worker = ExportWorker(self, loop, private=not use_app, predecessor=predecessor)
            self.worker = worker
            self.live.add(worker)
            watch = use_app and not self._watching
            self._watching = self._watching or watch
        if abandoned is not None and abandoned.loop.is_closed():
            abandoned.close_abandoned()
        if predecessor is not None:
            predecessor.wake()  # let it notice retirement
        if use_app:
            worker.start()
        elif not self.loop_thread.call_soon(worker.start):
            logger.warning("The private export loop is not available; spans stay queued")
        if watch:
            self._arm_watchdog()
        return worker

    def _abandon_locked(self, worker: ExportWorker) -> None:
        worker.retired = True
        dead = worker.loop.is_closed() or self.all_loops_dead or worker.loop in self.dying
        taken = self.delivery.reclaim(worker, dead=dead and not worker.private)
        if taken:
            logger.debug("Took back %d spans from an export worker that cannot run", taken)
        if worker.loop.is_closed():
            self.live.discard(worker)

    def abandon(self, worker: ExportWorker) -> None:
        with self.lock:
            self._abandon_locked(worker)

    def shares_loop(self, worker: ExportWorker) -> bool:
        """Another active worker uses ``worker``'s loop (it closes the exporter there)."""
        with self.lock:
            return any(
                other is not worker and other.loop is worker.loop and not other.retired
                for other in self.live
            )

    def mark_dying(self, loop: asyncio.AbstractEventLoop) -> None:
        """``loop`` is shutting down (or its thread will never resume it)."""
        try:
            self.dying.add(loop)
        except TypeError:  # a loop type without weak references
            return

    def presume_dead(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """``loop`` (None: every application loop) will never run again: the process is
        ending. Sends running there are taken back to be sent from the private thread."""
        with self.lock:
            if loop is None:
                self.all_loops_dead = True
            else:
                self.mark_dying(loop)
            for worker in [*self.live, *([self.worker] if self.worker else [])]:
                if not worker.private and (loop is None or worker.loop is loop):
                    self.delivery.reclaim(worker, dead=True)

    def worker_exited(self, worker: ExportWorker) -> None:
        """A worker ended: if it was the current one and work remains, hand it over."""
        with self.lock:
            self.live.discard(worker)
            if self.worker is not worker:
                return
            self.worker = None
            if self.closing or not self.delivery.has_work():
                return
        successor = self.ensure(None, "block")
        if successor is not None:
            successor.wake()

    # -- a loop that stopped without closing --------------------------------------------

    def _arm_watchdog(self) -> None:
        """Look at the hosting application loop once per schedule delay (from the
        private thread); a stopped loop with spans waiting twice in a row is replaced."""
        interval = max(0.05, self.schedule_delay)
        seen: list[ExportWorker | None] = [None]

        def tick() -> None:
            with self.lock:
                worker = self.worker
                if self.closing or worker is None or worker.private:
                    self._watching = False
                    return
            stalled = not worker.loop.is_running() and not worker.loop.is_closed()
            if stalled and self.delivery.has_work():
                if seen[0] is worker:
                    logger.debug("The loop hosting the export task stopped; moving on")
                    replacement = self.ensure(None, "block")
                    if replacement is not None:
                        replacement.wake(force=True)  # they waited long enough
                seen[0] = worker
            else:
                seen[0] = None
            asyncio.get_running_loop().call_later(interval, tick)

        def arm() -> None:
            asyncio.get_running_loop().call_later(interval, tick)

        if not self.loop_thread.call_soon(arm):
            self._watching = False

    # -- stopping -----------------------------------------------------------------------

    def close(self) -> ExportWorker | None:
        """Stop rebinding; take the current worker away (to retire it) and return it."""
        with self.lock:
            self.closing = True
            worker, self.worker = self.worker, None
        return worker

    def workers(self) -> list[ExportWorker]:
        with self.lock:
            return [*self.live]

    def reset_after_fork(self) -> None:
        """In a forked child: no worker, nothing inherited ever runs or is finalised."""
        inherited = [*self.live, *([self.worker] if self.worker else [])]
        for worker in inherited:
            worker.retired = True
        FORK_GRAVEYARD.append(inherited)
        self.lock = threading.Lock()
        self.worker = None
        self.live = set()
        self.dying = weakref.WeakSet()
        self.closing = False
        self.all_loops_dead = False
        self._watching = False
        self.loop_thread.reset_after_fork()
        self.timed_out.reset_after_fork()
        self.raised.reset_after_fork()
        self.channel.reset_after_fork()
