"""How the engine hands a batch to one exporter: the three shapes it accepts.

`channel_for` looks at the exporter the way OpenTelemetry does, by what it can do, not by
its class:

* `AttemptChannel`: an `AttemptExporter` (``aprepare``/``asend`` coroutines): the engine
  runs its retries (the OTLP/HTTP exporter);
* `AsyncChannel`: ``aexport`` is a coroutine function: awaited on the worker's loop;
* `ThreadChannel`: anything else with a callable ``export`` (an OpenTelemetry
  ``SpanExporter``, or any object shaped like one): ``export()`` runs in one dedicated
  daemon thread, one call at a time, so a slow exporter never stalls an event loop. A
  call there cannot be cut off, so its batch is never sent again while it runs; one that
  outlasts the export timeout counts as failed (what it returns later is ignored).
"""

from __future__ import annotations

import concurrent.futures
import inspect
import math
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from keywordsai_tracing._export_types import Attempt, Prepared, concurrent_exports
from keywordsai_tracing._retry import RetryPolicy

from .util import logger

_Job = tuple[Callable[[], Any], "concurrent.futures.Future[Any]"]


class Channel:
    """What every channel offers the engine."""

    concurrency = 1  # sends at once on one loop
    retry_policy: RetryPolicy | None = None  # the engine retries (AttemptChannel only)
    window = math.inf  # seconds a batch may spend in attempts and backoff

    def __init__(self, exporter: Any) -> None:
        self.exporter = exporter

    async def aclose(self) -> None:
        """Release what the exporter holds on the running loop."""
        close = getattr(self.exporter, "aclose", None)
        if close is not None and inspect.iscoroutinefunction(close):
            await close()

    def shutdown_exporter(self, timeout_millis: float) -> None:
        """Call the exporter's ``shutdown()`` (with ``timeout_millis`` if it takes one, as
        OpenTelemetry does): it stops its own retries and cuts a running export short."""
        shutdown = getattr(self.exporter, "shutdown", None)
        if not callable(shutdown):
            return
        try:
            if _takes(shutdown, "timeout_millis"):
                shutdown(timeout_millis=max(0.0, timeout_millis))
            else:
                shutdown()
        except Exception:
            logger.warning("exporter.shutdown() raised", exc_info=True)

    def close(self) -> None:
        """Release threads (after ``shutdown_exporter``); never waits."""

    def reset_after_fork(self) -> None:
        """In a forked child: drop what belonged to the parent's threads."""


class AttemptChannel(Channel):
    """An `AttemptExporter`: one attempt per send; the engine waits out the backoff."""

    def __init__(self, exporter: Any) -> None:
        super().__init__(exporter)
        self.concurrency = concurrent_exports(exporter)
        self.retry_policy = exporter.retry_policy
        self.window = float(exporter.timeout)

    async def prepare(self, spans: Sequence[ReadableSpan]) -> Prepared:
        prepared: Prepared = await self.exporter.aprepare(spans)
        return prepared

    async def send(self, prepared: Prepared, timeout: float) -> Attempt:
        attempt: Attempt = await self.exporter.asend(prepared, timeout)
        return attempt


class AsyncChannel(Channel):
    """An exporter with a coroutine ``aexport``: its verdict is final (it retries itself)."""

    def __init__(self, exporter: Any) -> None:
        super().__init__(exporter)
        self.concurrency = concurrent_exports(exporter)

    async def export(self, spans: Sequence[ReadableSpan], deadline: float) -> bool:
        result: object = await self.exporter.aexport(spans, deadline)
        return succeeded(result)


class ThreadChannel(Channel):
    """A sync exporter: ``export()`` in one dedicated daemon thread, one call at a time."""

    def __init__(self, exporter: Any, thread_name: str) -> None:
        super().__init__(exporter)
        self._thread_name = thread_name
        self.reset_after_fork()

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, spans: Sequence[ReadableSpan]) -> concurrent.futures.Future[bool]:
        """Run ``export(spans)`` in the thread; the future says whether it succeeded."""
        exporter = self.exporter

        def export() -> bool:
            return succeeded(exporter.export(spans))

        future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                future.cancel()
                return future
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_work, args=(self._jobs,), name=self._thread_name, daemon=True
                )
                self._thread.start()
            self._jobs.put((export, future))
        return future

    async def aclose(self) -> None:
        """Nothing of a sync exporter is bound to an event loop."""

    def close(self) -> None:
        """Let the thread end once its current call returns; jobs not started are
        cancelled."""
        with self._lock:
            self._closed = True
            if self._thread is not None:
                self._thread = None
                while True:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is not None:
                        job[1].cancel()
                self._jobs.put(None)


def _work(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while (job := jobs.get()) is not None:
        call, future = job
        if not future.set_running_or_notify_cancel():
            continue
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            result = call()
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        finally:
            detach(token)
        del job, call, future


def succeeded(result: object) -> bool:
    """An exporter's result as OpenTelemetry reads it: only ``FAILURE`` (or False) fails."""
    return result is not SpanExportResult.FAILURE and result is not False


def _takes(function: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def channel_for(exporter: object, thread_name: str) -> Channel:
    """The channel for ``exporter``; ``TypeError`` naming ``span_exporter`` if it cannot
    export at all."""
    if _is_coroutine_function(getattr(exporter, "asend", None)) and _is_coroutine_function(
        getattr(exporter, "aprepare", None)
    ):
        return AttemptChannel(exporter)
    if _is_coroutine_function(getattr(exporter, "aexport", None)):
        return AsyncChannel(exporter)
    if callable(getattr(exporter, "export", None)):
        return ThreadChannel(exporter, thread_name)
    raise TypeError(
        "span_exporter: expected an exporter with export() (an opentelemetry SpanExporter) "
        f"or a coroutine aexport(), got {type(exporter).__name__}"
    )


def _is_coroutine_function(value: object) -> bool:
    return value is not None and inspect.iscoroutinefunction(value)
