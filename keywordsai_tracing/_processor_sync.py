"""Run a synchronous OpenTelemetry ``SpanExporter`` as an `AsyncSpanExporter`.

``export()`` runs in one dedicated daemon thread, one call at a time, so a slow or blocking
exporter never stalls an event loop and its calls are never concurrent. A daemon thread
(rather than a loop's default executor) survives the loop that submitted the work and
never holds up interpreter exit.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._export_types import AsyncSpanExporter
from ._processor_util import await_future, logger

_Job = tuple[Callable[[], Any], "concurrent.futures.Future[Any]"]


class SyncExporterAdapter:
    """An `AsyncSpanExporter` whose ``aexport`` awaits ``exporter.export()`` in a thread."""

    def __init__(self, exporter: SpanExporter, thread_name: str) -> None:
        self.exporter = exporter
        self._thread_name = thread_name
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def aexport(self, spans: Sequence[ReadableSpan], deadline: float | None = None) -> bool:
        """Export in the worker thread. If cancelled, the call still finishes there (a
        thread cannot be interrupted); the processor then re-sends the batch."""
        future = self.submit(lambda: self.exporter.export(spans) is SpanExportResult.SUCCESS)
        await await_future(future, None)
        return bool(future.result())

    async def aclose(self) -> None:
        """Nothing is bound to the event loop; the thread is stopped by `close`."""

    def shutdown(self) -> None:
        """No-op: a sync exporter's ``shutdown()`` is terminal, so `close` calls it after
        the final export instead of before it."""

    def close(self) -> concurrent.futures.Future[Any]:
        """Shut the exporter down after queued exports, then end the thread."""
        future = self.submit(self.exporter.shutdown)
        with self._lock:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread = None
        return future

    def submit(self, call: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run ``call`` in the worker thread, with instrumentation suppressed."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, args=(self._jobs,), name=self._thread_name, daemon=True
                )
                self._thread.start()
            self._jobs.put((call, future))
        return future

    def reset_after_fork(self) -> None:
        """In a forked child: the worker thread is gone; start afresh on next use."""
        self._lock = threading.Lock()
        self._jobs = queue.SimpleQueue()
        self._thread = None

    @staticmethod
    def _work(jobs: queue.SimpleQueue[_Job | None]) -> None:
        while (job := jobs.get()) is not None:
            call, future = job
            if not future.set_running_or_notify_cancel():
                continue
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                result = call()
            except BaseException as exc:
                logger.debug("Sync exporter call raised", exc_info=True)
                future.set_exception(exc)
            else:
                future.set_result(result)
            finally:
                detach(token)


def as_async_exporter(
    exporter: object, thread_name: str
) -> tuple[AsyncSpanExporter, SyncExporterAdapter | None]:
    """``exporter`` itself if it speaks asyncio, else a thread adapter around a sync one."""
    if isinstance(exporter, AsyncSpanExporter):
        return exporter, None
    if isinstance(exporter, SpanExporter):
        adapter = SyncExporterAdapter(exporter, thread_name)
        return adapter, adapter
    raise TypeError(
        "exporter: expected an AsyncSpanExporter or an opentelemetry SpanExporter, "
        f"got {type(exporter).__name__}"
    )
