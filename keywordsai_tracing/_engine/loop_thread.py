"""A private event loop in a daemon thread, for export work when no application loop runs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any

from keywordsai_tracing._fork import FORK_GRAVEYARD

from .util import logger

_Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], "concurrent.futures.Future[Any]"]


class DaemonExecutor(concurrent.futures.ThreadPoolExecutor):
    """The private loop's default executor (``run_in_executor(None, ...)``, e.g. aiohttp's
    DNS lookups): daemon threads that keep accepting work during ``atexit`` handlers,
    when ``ThreadPoolExecutor`` refuses new work, so the exit flush can still connect.
    (A subclass only because ``loop.set_default_executor`` insists; none of the base
    class's machinery is used.)"""

    def __init__(self, name: str, max_workers: int = 4) -> None:
        super().__init__(max_workers, thread_name_prefix=name)
        self._name = name
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._daemons: list[threading.Thread] = []
        self._idle_daemons = 0
        self._refusing = False

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._refusing:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._jobs.put((fn, args, kwargs, future))
            if self._idle_daemons == 0 and len(self._daemons) < self._max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._daemons)}", daemon=True
                )
                self._daemons.append(thread)
                thread.start()
            else:
                self._idle_daemons -= 1
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._refusing = True
            threads = list(self._daemons)
        for _ in threads:
            self._jobs.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, kwargs, future = job
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del job, fn, args, kwargs, future
            with self._lock:
                self._idle_daemons += 1


class LoopThread:
    """Start a daemon thread running an event loop on first use; stop it on request.

    When stopped, the thread cancels what is still pending on its loop, waits for it to
    finish, shuts down async generators and closes the loop itself, as ``asyncio.run`` does.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed: concurrent.futures.Future[None] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop if the thread was started and not stopped."""
        return self._loop

    def ensure_started(self) -> asyncio.AbstractEventLoop:
        """The running private loop, starting the thread if needed."""
        with self._lock:
            if self._loop is not None:
                return self._loop
            loop = asyncio.new_event_loop()
            loop.set_default_executor(DaemonExecutor(f"{self._name}-executor"))
            closed: concurrent.futures.Future[None] = concurrent.futures.Future()
            thread = threading.Thread(
                target=self._main, args=(loop, closed), name=self._name, daemon=True
            )
            self._loop, self._thread, self._closed = loop, thread, closed
            thread.start()
            return loop

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> bool:
        """Schedule ``callback`` on the private loop (started if needed); False if stopping."""
        loop = self.ensure_started()
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # closed between ensure_started() and here
            return False
        return True

    def stop(self) -> concurrent.futures.Future[None]:
        """Ask the loop to finish; the returned future is done once it is closed."""
        with self._lock:
            loop, closed = self._loop, self._closed
            self._loop = self._thread = self._closed = None
        if loop is None or closed is None:
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            done.set_result(None)
            return done
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # already closed
            if not closed.done():
                closed.set_result(None)
        return closed

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's thread and loop without touching them."""
        FORK_GRAVEYARD.append((self._loop, self._thread))
        self._lock = threading.Lock()
        self._loop = self._thread = self._closed = None

    @staticmethod
    def _main(loop: asyncio.AbstractEventLoop, closed: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                _finish(loop)
            except Exception:
                logger.debug("Error while closing the private export loop", exc_info=True)
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                closed.set_result(None)


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what remains on ``loop`` and let it run to completion (like ``asyncio.run``)."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
