"""Helpers for the span processor tests (no tests here): exporters that record where they
ran, tracer set-up, a watch on logs for asyncio's tell-tale errors, a script runner."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as context_api
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Tracer

from keywordsai_tracing._engine import AsyncBatchSpanProcessor

ROOT = Path(__file__).resolve().parent.parent

# What must never be printed or logged while spans move between loops.
FORBIDDEN = (
    "Event loop is closed",
    "Task was destroyed but it is pending",
    "Unclosed client session",
    "attached to a different loop",
    "Exception ignored",
    "Traceback",
)


@dataclass(frozen=True)
class Call:
    """One ``aexport`` call: what and where."""

    names: tuple[str, ...]
    thread: str
    loop: asyncio.AbstractEventLoop | None
    suppressed: bool


class RecordingExporter:
    """An `AsyncSpanExporter` recording each call, its thread and loop.

    ``gate`` (a threading.Event, loop-agnostic) holds exports until set; ``hang_first``
    makes the first call wait until it is cancelled.
    """

    def __init__(self, gate: threading.Event | None = None, *, hang_first: bool = False) -> None:
        self.calls: list[Call] = []
        self.cut_off: list[tuple[str, ...]] = []
        self.closed_on: list[asyncio.AbstractEventLoop] = []
        self.started = threading.Event()
        self.gate = gate
        self.hang_first = hang_first
        self.shutdown_called = False
        self._lock = threading.Lock()

    async def aexport(self, spans: Sequence[ReadableSpan], deadline: float | None = None) -> bool:
        names = tuple(span.name for span in spans)
        self.started.set()
        try:
            if self.hang_first:
                self.hang_first = False
                await asyncio.Event().wait()  # until cancelled
            # A threading.Event, polled: this exporter is awaited on several loops.
            while self.gate is not None and not self.gate.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            self.cut_off.append(names)
            raise
        suppressed = bool(context_api.get_value(context_api._SUPPRESS_INSTRUMENTATION_KEY))
        call = Call(names, threading.current_thread().name, asyncio.get_running_loop(), suppressed)
        with self._lock:
            self.calls.append(call)
        return True

    async def aclose(self) -> None:
        self.closed_on.append(asyncio.get_running_loop())

    def shutdown(self) -> None:
        self.shutdown_called = True

    @property
    def names(self) -> list[str]:
        with self._lock:
            return [name for call in self.calls for name in call.names]


class SyncRecordingExporter(SpanExporter):
    """A sync exporter recording span names, threads, and an optional per-call delay."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.names: list[str] = []
        self.threads: set[str] = set()
        self.suppressed: list[bool] = []
        self.is_shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.delay:
            time.sleep(self.delay)
        self.threads.add(threading.current_thread().name)
        self.suppressed.append(
            bool(context_api.get_value(context_api._SUPPRESS_INSTRUMENTATION_KEY))
        )
        self.names.extend(span.name for span in spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.is_shutdown = True


class Processors:
    """Processors made by one test, shut down (bounded) after it."""

    def __init__(self) -> None:
        self.made: list[AsyncBatchSpanProcessor] = []

    def make(self, exporter: object, **kwargs: Any) -> AsyncBatchSpanProcessor:
        kwargs.setdefault("exit_flush_timeout", None)
        processor = AsyncBatchSpanProcessor(exporter, **kwargs)  # type: ignore[arg-type]
        self.made.append(processor)
        return processor

    def shutdown_all(self) -> None:
        for processor in self.made:
            processor.shutdown(timeout_millis=5000)


def tracer_for(processor: SpanProcessor) -> tuple[TracerProvider, Tracer]:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return provider, provider.get_tracer("processor-tests")


def end_spans(tracer: Tracer, prefix: str, count: int) -> list[str]:
    names = [f"{prefix}-{i}" for i in range(count)]
    for name in names:
        tracer.start_span(name).end()
    return names


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class LogWatch:
    """Collects every log record (root logger) while active."""

    def __init__(self) -> None:
        self._handler = _Collect()
        self._root = logging.getLogger()
        self._level = self._root.level

    def start(self) -> LogWatch:
        self._root.addHandler(self._handler)
        self._root.setLevel(logging.DEBUG)
        return self

    def stop(self) -> None:
        self._root.removeHandler(self._handler)
        self._root.setLevel(self._level)

    def warnings(self, logger_prefix: str = "") -> list[logging.LogRecord]:
        return [
            r
            for r in self._handler.records
            if r.levelno >= logging.WARNING and r.name.startswith(logger_prefix)
        ]

    def assert_clean(self) -> None:
        """No WARNING or worse anywhere, and none of the forbidden phrases at any level."""
        bad = [
            f"{r.name}:{r.levelname}:{r.getMessage()}"
            for r in self._handler.records
            if r.levelno >= logging.WARNING or any(phrase in r.getMessage() for phrase in FORBIDDEN)
        ]
        assert not bad, bad


@contextmanager
def watching_logs() -> Iterator[LogWatch]:
    watch = LogWatch().start()
    try:
        yield watch
    finally:
        watch.stop()


def wait_for_child(pid: int, timeout: float) -> int:
    """The exit code of forked child ``pid``; kills it and fails the test if it hangs."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.01)


def run_script(code: str, timeout: float = 50.0) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with warnings as errors; fail on bad stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDEVMODE": "0"}
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for phrase in FORBIDDEN:
        assert phrase not in result.stderr, result.stderr
    return result
