"""Which event loop a span processor's export task lives on, and moving it between loops.

`WorkerHost` holds the processor's current `ExportWorker` and the rules for replacing it:
an application loop is preferred (it delivers the queue when it shuts down), the private
loop thread is the fallback (sync code, worker threads, a flush that must block), and a
worker whose loop closed, stopped or is about to block is retired or abandoned, its
batches in flight put back. The processor's hot path reads `worker` without the lock;
every change happens under it.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Literal

from ._export_types import AsyncSpanExporter
from ._fork import FORK_GRAVEYARD
from ._loop_thread import LoopThread
from ._processor_ledger import Ledger
from ._processor_util import logger
from ._processor_worker import ExportWorker, WorkerEnv

# "end": a span ended here; "async": an awaited flush on the running loop;
# "block": a sync flush that will block this thread (and its running loop, if any).
Mode = Literal["end", "async", "block"]

_get_running_loop = asyncio._get_running_loop


class WorkerHost:
    """The export worker of one processor and the loops it may run on (see module doc)."""

    def __init__(
        self,
        ledger: Ledger,
        exporter: AsyncSpanExporter,
        *,
        max_export_batch_size: int,
        schedule_delay: float,
        export_timeout: float,
        queue_fill: Callable[[], float],
    ) -> None:
        self.ledger = ledger
        self.lock = threading.Lock()  # guards worker, live, closing
        self.worker: ExportWorker | None = None
        self.live: set[ExportWorker] = set()  # strong references to unfinished tasks
        self.dying: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self.closing = False  # workers are being stopped: no rebinding
        self.loop_thread = LoopThread("keywordsai-export-loop")
        self.env = WorkerEnv(
            ledger=ledger,
            exporter=exporter,
            max_export_batch_size=max_export_batch_size,
            schedule_delay=schedule_delay,
            export_timeout=export_timeout,
            on_exit=self.worker_exited,
            abandon=self.abandon,
            mark_dying=self.mark_dying,
            shares_loop=self.shares_loop,
            closing=lambda: self.closing,
            queue_fill=queue_fill,
        )

    def check(
        self, worker: ExportWorker | None, running: asyncio.AbstractEventLoop | None
    ) -> ExportWorker | None:
        """The worker for a span that ended on ``running`` (None: no loop here)."""
        if worker is not None and not self.unusable(worker, running, "end"):
            return worker
        return self.ensure(running, "end")

    def replace_stopped(self, worker: ExportWorker) -> ExportWorker:
        """A full batch waits on an application loop that is not running: move on (to the
        running loop here, else the private thread); it comes back if that loop resumes."""
        running = _get_running_loop()
        replacement = self.ensure(running, "async" if running is not None else "block")
        return worker if replacement is None else replacement

    def can_host(self, loop: asyncio.AbstractEventLoop) -> bool:
        return loop not in self.dying and not loop.is_closed()

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
                        len(self.ledger.queue),
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
            worker = ExportWorker(self.env, loop, private=not use_app, predecessor=predecessor)
            self.worker = worker
            self.live.add(worker)
        if abandoned is not None and abandoned.loop.is_closed():
            abandoned.close_abandoned()
        if predecessor is not None:
            predecessor.wake()  # let it notice retirement
        if use_app:
            worker.start()
        elif not self.loop_thread.call_soon(worker.start):
            logger.warning("The private export loop is not available; spans stay queued")
        return worker

    def _abandon_locked(self, worker: ExportWorker) -> None:
        worker.retired = worker.abandoned = True
        requeued = self.ledger.requeue(worker)
        if requeued:
            logger.debug("Re-queued %d unacknowledged spans", requeued)
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
        try:
            self.dying.add(loop)
        except TypeError:  # a loop type without weak references
            return

    def worker_exited(self, worker: ExportWorker) -> None:
        """A worker ended: if it was the current one and work remains, hand it over."""
        with self.lock:
            self.live.discard(worker)
            if self.worker is not worker:
                return
            self.worker = None
            if self.closing or not self.ledger.has_work():
                return
        successor = self.ensure(None, "block")
        if successor is not None:
            successor.wake()

    def close(self) -> ExportWorker | None:
        """Stop rebinding; take the current worker away (to retire it) and return it."""
        with self.lock:
            self.closing = True
            worker, self.worker = self.worker, None
        return worker

    def reset_after_fork(self) -> None:
        """In a forked child: no worker, nothing inherited ever runs or is finalised."""
        inherited = [*self.live, *([self.worker] if self.worker else [])]
        for worker in inherited:
            worker.retired = worker.abandoned = True
            worker.inflight = []
        FORK_GRAVEYARD.append(inherited)
        self.lock = threading.Lock()
        self.worker = None
        self.live = set()
        self.dying = weakref.WeakSet()
        self.loop_thread.reset_after_fork()
        self.env.timed_out.reset_after_fork()
        self.env.raised.reset_after_fork()
