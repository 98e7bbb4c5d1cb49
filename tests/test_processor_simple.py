"""SimpleAsyncSpanProcessor (``is_batching_enabled=False``): each span as it ends."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from keywordsai_tracing._engine import SimpleAsyncSpanProcessor
from tests.test_processor_support import (
    RecordingExporter,
    SyncRecordingExporter,
    end_spans,
    tracer_for,
    wait_until,
)

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class ContextReadingExporter(SyncRecordingExporter):
    """Like the incumbent README's backend exporter: reads request context in export()."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str | None, str]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.seen.append((REQUEST_ID.get(), threading.current_thread().name))
        return super().export(spans)


@pytest.fixture
def simple() -> Iterator[list[SimpleAsyncSpanProcessor]]:
    made: list[SimpleAsyncSpanProcessor] = []
    yield made
    for processor in made:
        processor.shutdown(5000)


def test_a_sync_exporter_is_called_inline_and_sees_the_callers_contextvars(
    simple: list[SimpleAsyncSpanProcessor],
) -> None:
    exporter = ContextReadingExporter()
    processor = SimpleAsyncSpanProcessor(exporter, exit_flush_timeout=None)
    simple.append(processor)
    _, tracer = tracer_for(processor)
    token = REQUEST_ID.set("req-42")
    try:
        end_spans(tracer, "inline", 1)
    finally:
        REQUEST_ID.reset(token)
    assert exporter.names == ["inline-0"]  # already exported when end() returned
    assert exporter.seen == [("req-42", threading.current_thread().name)]
    assert exporter.suppressed == [True]
    assert processor.stats.delivered == 1
    assert processor.force_flush(1000)
    processor.shutdown()
    processor.shutdown()
    assert exporter.is_shutdown


@pytest.mark.asyncio
async def test_a_sync_exporter_is_inline_in_a_coroutine_too(
    simple: list[SimpleAsyncSpanProcessor],
) -> None:
    exporter = ContextReadingExporter()
    processor = SimpleAsyncSpanProcessor(exporter, exit_flush_timeout=None)
    simple.append(processor)
    _, tracer = tracer_for(processor)
    REQUEST_ID.set("req-async")  # this test's own context
    end_spans(tracer, "coro", 2)
    assert exporter.seen == [("req-async", threading.current_thread().name)] * 2
    assert await processor.aflush(1)


def test_failures_of_a_sync_exporter_are_counted_not_raised(
    simple: list[SimpleAsyncSpanProcessor],
) -> None:
    class Broken(SyncRecordingExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            raise RuntimeError("boom")

    processor = SimpleAsyncSpanProcessor(Broken(), exit_flush_timeout=None)
    simple.append(processor)
    _, tracer = tracer_for(processor)
    end_spans(tracer, "broken", 2)
    assert processor.stats.failed == 2


@pytest.mark.asyncio
async def test_an_async_exporter_is_scheduled_on_the_running_loop_never_awaited_inline(
    simple: list[SimpleAsyncSpanProcessor],
) -> None:
    exporter = RecordingExporter()
    processor = SimpleAsyncSpanProcessor(exporter, exit_flush_timeout=None)
    simple.append(processor)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "one", 3)
    assert exporter.names == []  # scheduled, not run inside end()
    await asyncio.sleep(0.05)
    assert exporter.names == names  # no flush, no schedule delay: as they ended
    assert [len(call.names) for call in exporter.calls] == [1, 1, 1]
    assert {call.loop for call in exporter.calls} == {asyncio.get_running_loop()}


@pytest.mark.asyncio
async def test_flush_waits_for_exports_in_flight(
    simple: list[SimpleAsyncSpanProcessor],
) -> None:
    gate = threading.Event()
    exporter = RecordingExporter(gate)
    processor = SimpleAsyncSpanProcessor(exporter, exit_flush_timeout=None)
    simple.append(processor)
    _, tracer = tracer_for(processor)
    end_spans(tracer, "gated", 2)
    await asyncio.sleep(0.02)
    assert exporter.started.is_set()
    assert not await processor.aflush(0.1)
    gate.set()
    assert await processor.aflush(10)
    assert exporter.names == ["gated-0", "gated-1"]


def test_an_async_exporter_runs_on_the_private_thread_without_a_loop(
    simple: list[SimpleAsyncSpanProcessor],
) -> None:
    exporter = RecordingExporter()
    processor = SimpleAsyncSpanProcessor(exporter, exit_flush_timeout=None)
    simple.append(processor)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "plain", 3)
    assert wait_until(lambda: exporter.names == names)
    assert {call.thread for call in exporter.calls} == {"keywordsai-export-loop"}
    assert processor.force_flush(5000)
    processor.shutdown()
    assert exporter.shutdown_called


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(TypeError, match="span_exporter"):
        SimpleAsyncSpanProcessor(object())
    with pytest.raises(ValueError, match="max_queue_size"):
        SimpleAsyncSpanProcessor(SyncRecordingExporter(), max_queue_size=0)
    with pytest.raises(ValueError, match="export_timeout_millis"):
        SimpleAsyncSpanProcessor(RecordingExporter(), export_timeout_millis=-1)
    with pytest.raises(ValueError, match="export_timeout_millis"):
        SimpleAsyncSpanProcessor(SyncRecordingExporter(), export_timeout_millis=float("nan"))
