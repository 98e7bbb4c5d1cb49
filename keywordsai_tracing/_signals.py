"""Deliver queued spans when the process is told to terminate (SIGTERM).

uvicorn handles SIGTERM gracefully, then restores the previous handler and raises the
signal again from inside its event loop: with the default disposition the process dies
there, before ``asyncio.run`` cleans up and without ``atexit``. Installed while the
disposition is still the default, this handler is the one uvicorn restores: it flushes
(from a helper thread, past the blocked loop, bounded by a timeout) and then dies of the
same signal with the default disposition, as the process would have.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger("keywordsai_tracing")

FlushPastLoop = Callable[[asyncio.AbstractEventLoop | None, float], bool]


class SigtermFlush:
    """A SIGTERM handler that flushes, then lets the signal take its default course."""

    def __init__(self, flush: FlushPastLoop, timeout: float) -> None:
        self._flush = flush
        self._timeout = timeout
        self._installed = False

    def install(self) -> bool:
        """Install on the main thread if SIGTERM has its default disposition (we never
        replace a handler someone else set)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        try:
            if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
                return False
            signal.signal(signal.SIGTERM, self._handle)
        except (ValueError, OSError):  # no signals here (an embedded interpreter)
            return False
        self._installed = True
        return True

    def uninstall(self) -> None:
        """Restore the default disposition if our handler is still the current one."""
        if not self._installed:
            return
        self._installed = False
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGTERM) == self._handle:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except (ValueError, OSError):
            return

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # The main thread may have been interrupted anywhere, even inside its event loop
        # or holding one of our locks: flush from another thread and wait a bounded time.
        loop = asyncio._get_running_loop()
        worker = threading.Thread(
            target=self._flush_quietly, args=(loop,), name="keywordsai-sigterm", daemon=True
        )
        worker.start()
        worker.join(self._timeout + 1.0)
        if worker.is_alive():
            logger.warning("SIGTERM: spans not delivered within %.1fs", self._timeout)
        self._installed = False
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    def _flush_quietly(self, loop: asyncio.AbstractEventLoop | None) -> None:
        try:
            if not self._flush(loop, self._timeout):
                logger.warning("SIGTERM: not every span was delivered")
        except Exception:
            logger.exception("SIGTERM: flushing failed")
