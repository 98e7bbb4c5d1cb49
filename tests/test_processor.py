"""AsyncBatchSpanProcessor: where the export task runs, flush semantics, pressure."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

from keywordsai_tracing._engine import AsyncBatchSpanProcessor, ProcessorStats
from tests.test_processor_support import (
    Processors,
    RecordingExporter,
    SyncRecordingExporter,
    end_spans,
    tracer_for,
    wait_until,
    watching_logs,
)

PROCESSOR_LOGGER = "keywordsai_tracing.processor"


@pytest.fixture
def processors() -> Iterator[Processors]:
    made = Processors()
    yield made
    made.shutdown_all()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_queue_size": 0}, "max_queue_size"),
        ({"max_queue_size": 1.5}, "max_queue_size"),
        ({"max_queue_size": True}, "max_queue_size"),
        ({"max_export_batch_size": -1}, "max_export_batch_size"),
        ({"max_queue_size": 10, "max_export_batch_size": 11}, "max_export_batch_size"),
        ({"schedule_delay_millis": 0}, "schedule_delay_millis"),
        ({"schedule_delay_millis": float("nan")}, "schedule_delay_millis"),
        ({"export_timeout_millis": float("inf")}, "export_timeout_millis"),
        ({"export_timeout_millis": "30"}, "export_timeout_millis"),
        ({"exit_flush_timeout": -1.0}, "exit_flush_timeout"),
    ],
)
def test_invalid_parameters_raise_value_error_naming_them(
    kwargs: dict[str, object], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        AsyncBatchSpanProcessor(InMemorySpanExporter(), **kwargs)  # type: ignore[arg-type]


def test_exporter_of_wrong_type_raises_type_error() -> None:
    with pytest.raises(TypeError, match="span_exporter"):
        AsyncBatchSpanProcessor(object())  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_spans_ended_in_a_coroutine_are_exported_by_a_task_on_that_loop(
    processors: Processors,
) -> None:
    exporter = RecordingExporter()
    processor = processors.make(exporter, max_export_batch_size=4, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "coro", 10)
    await asyncio.sleep(0.05)  # two full batches go out without a flush
    assert exporter.names == names[:8]
    assert await processor.aflush(10)
    assert exporter.names == names
    loop = asyncio.get_running_loop()
    assert {call.loop for call in exporter.calls} == {loop}
    assert {call.thread for call in exporter.calls} == {threading.current_thread().name}
    assert all(call.suppressed for call in exporter.calls)
    assert processor.stats == ProcessorStats(ended=10, delivered=10)


def test_a_sync_script_exports_from_the_private_loop_thread(
    processors: Processors,
) -> None:
    exporter = RecordingExporter()
    processor = processors.make(exporter, schedule_delay_millis=50)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "sync", 5)
    assert wait_until(lambda: exporter.names == names)  # the schedule delay, no flush
    assert {call.thread for call in exporter.calls} == {"keywordsai-export-loop"}
    assert all(call.suppressed for call in exporter.calls)
    processor.shutdown()
    assert exporter.shutdown_called
    assert exporter.closed_on == [exporter.calls[0].loop]


def test_spans_not_sampled_are_ignored(processors: Processors) -> None:
    class RecordOnly(Sampler):
        def should_sample(self, *args: object, **kwargs: object) -> SamplingResult:
            return SamplingResult(Decision.RECORD_ONLY)

        def get_description(self) -> str:
            return "record-only"

    exporter = RecordingExporter()
    processor = processors.make(exporter)
    provider = TracerProvider(sampler=RecordOnly(), shutdown_on_exit=False)
    provider.add_span_processor(processor)
    end_spans(provider.get_tracer("t"), "unsampled", 3)
    assert processor.force_flush(5000)
    assert exporter.names == []
    assert processor.stats.ended == 0


def test_a_sync_exporter_runs_in_its_own_thread_with_instrumentation_suppressed(
    processors: Processors,
) -> None:
    exporter = SyncRecordingExporter()
    processor = processors.make(exporter)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "s", 3)
    assert processor.force_flush(5000)
    assert exporter.names == names
    assert exporter.threads == {"keywordsai-sync-export"}
    assert exporter.suppressed == [True]
    assert not exporter.is_shutdown
    processor.shutdown()
    assert exporter.is_shutdown  # after the final export, not before it


@pytest.mark.asyncio
async def test_flush_from_another_thread_waits_for_the_owning_loop(
    processors: Processors,
) -> None:
    exporter = RecordingExporter()
    processor = processors.make(exporter, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "x", 5)
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(processor.force_flush(10_000)))
    thread.start()
    await asyncio.to_thread(thread.join)
    assert results == [True]
    assert exporter.names == names
    assert {call.loop for call in exporter.calls} == {asyncio.get_running_loop()}


@pytest.mark.asyncio
async def test_flush_waits_for_a_batch_already_in_flight(
    processors: Processors,
) -> None:
    gate = threading.Event()
    exporter = RecordingExporter(gate)
    processor = processors.make(exporter, max_export_batch_size=2, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    end_spans(tracer, "f", 2)
    await asyncio.sleep(0.05)
    assert exporter.started.is_set()
    assert processor.stats.pending == 2
    assert not await processor.aflush(0.1)  # the queue is empty, but not acknowledged
    gate.set()
    assert await processor.aflush(10)
    assert exporter.names == ["f-0", "f-1"]


def test_aflush_from_another_loop_in_another_thread(
    processors: Processors,
) -> None:
    exporter = RecordingExporter()
    processor = processors.make(exporter, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "other", 4)  # owned by the private thread
    assert asyncio.run(processor.aflush(10))
    assert exporter.names == names
    assert {call.thread for call in exporter.calls} == {"keywordsai-export-loop"}


def test_flush_returns_false_when_a_batch_fails(
    processors: Processors,
) -> None:
    class Failing(SyncRecordingExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.FAILURE

    processor = processors.make(Failing())
    _, tracer = tracer_for(processor)
    end_spans(tracer, "bad", 3)
    assert not processor.force_flush(5000)
    assert processor.stats == ProcessorStats(ended=3, dropped=3, failed=3)
    assert processor.force_flush(5000)  # nothing pending any more


def test_a_full_queue_drops_counts_and_warns_once(
    processors: Processors,
) -> None:
    gate = threading.Event()
    exporter = RecordingExporter(gate)
    processor = processors.make(exporter, max_queue_size=10, max_export_batch_size=5)
    _, tracer = tracer_for(processor)
    with watching_logs() as logs:
        end_spans(tracer, "p", 5)  # a full batch goes in flight and waits at the gate
        assert wait_until(exporter.started.is_set)
        end_spans(tracer, "q", 40)  # 10 fit in the queue, 30 are dropped
        gate.set()
        assert not processor.force_flush(10_000)  # the flush reports the 30 lost spans
        assert processor.force_flush(10_000)  # once: nothing else was lost
    stats = processor.stats
    assert stats.dropped == stats.queue_full == 30
    assert stats.delivered == 15 == len(exporter.names)
    assert stats.ended == 45
    warnings = [r.getMessage() for r in logs.warnings(PROCESSOR_LOGGER)]
    assert len(warnings) == 2, warnings
    assert "Span queue full" in warnings[0]
    assert "queue_full=30" in warnings[1]


@pytest.mark.asyncio
async def test_a_slow_sync_exporter_does_not_block_the_loop(
    processors: Processors,
) -> None:
    exporter = SyncRecordingExporter(delay=1.0)
    processor = processors.make(exporter, max_export_batch_size=2, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    lags: list[float] = []

    async def probe() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    probing = asyncio.get_running_loop().create_task(probe())
    names = end_spans(tracer, "slow", 4)
    assert await processor.aflush(20)
    probing.cancel()
    assert exporter.names == names
    assert len(lags) > 10
    assert max(lags) < 0.5  # hang detection only: each export() sleeps a full second


def test_shutdown_is_idempotent_and_bounded_when_the_exporter_hangs(
    processors: Processors,
) -> None:
    exporter = RecordingExporter(threading.Event())  # never opens
    processor = processors.make(exporter, max_export_batch_size=1)
    _, tracer = tracer_for(processor)
    end_spans(tracer, "h", 3)
    assert wait_until(exporter.started.is_set)
    started = time.monotonic()
    processor.shutdown(timeout_millis=300)
    assert time.monotonic() - started < 5
    assert exporter.shutdown_called
    started = time.monotonic()
    processor.shutdown(timeout_millis=300)
    assert time.monotonic() - started < 0.1
    end_spans(tracer, "late", 2)
    # The hung batch was cut off when the budget ran out; spans ending later are counted.
    assert processor.stats == ProcessorStats(ended=5, dropped=5, deadline=3, after_shutdown=2)
    assert not processor.force_flush(100)  # reports the two spans that ended too late
    assert processor.force_flush(100)  # nothing pending, nothing new lost


@pytest.mark.asyncio
@pytest.mark.parametrize("private_thread_gone", [False, True])
async def test_ashutdown_from_the_owning_loop_closes_the_exporter_on_it(
    processors: Processors, private_thread_gone: bool
) -> None:
    exporter = RecordingExporter()
    processor = processors.make(exporter, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "a", 3)
    if private_thread_gone:
        # Under CPU load the private thread (started for the watchdog) can close before
        # ashutdown awaits it; then only waiting for this loop's worker lets it close
        # the exporter.
        await asyncio.to_thread(processor._host.loop_thread.stop().result, 5)
    with watching_logs() as logs:
        await processor.ashutdown(10)
        await processor.ashutdown(10)
    assert exporter.names == names
    loop = asyncio.get_running_loop()
    assert exporter.closed_on == [loop]
    assert exporter.shutdown_called
    assert any("Shut down" in r.getMessage() for r in logs._handler.records)
    logs.assert_clean()


@pytest.mark.asyncio
async def test_a_thread_storm_is_delivered_or_precisely_counted_as_dropped(
    processors: Processors,
) -> None:
    exporter = RecordingExporter()
    processor = processors.make(exporter, max_queue_size=2048, max_export_batch_size=256)
    _, tracer = tracer_for(processor)
    end_spans(tracer, "owner", 1)  # this loop owns the export task
    threads = [threading.Thread(target=end_spans, args=(tracer, f"t{i}", 2000)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join)
    flushed = await processor.aflush(30)
    stats = processor.stats
    assert flushed is (stats.queue_full == 0)  # True only if the queue never overflowed
    delivered = exporter.names
    assert len(delivered) == len(set(delivered)) == stats.delivered
    assert stats.delivered + stats.queue_full == stats.ended == 16 * 2000 + 1
    assert stats.dropped == stats.queue_full
    assert stats.pending == 0
    assert {call.loop for call in exporter.calls} == {asyncio.get_running_loop()}


def test_debug_log_reports_the_counters_on_flush(
    processors: Processors, caplog: pytest.LogCaptureFixture
) -> None:
    processor = processors.make(InMemorySpanExporter())
    _, tracer = tracer_for(processor)
    end_spans(tracer, "d", 2)
    with caplog.at_level(logging.DEBUG, logger=PROCESSOR_LOGGER):
        assert processor.force_flush(5000)
    assert any("delivered=2" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_spans_ending_in_other_threads_wake_the_loop_per_batch_not_per_span(
    processors: Processors, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    scheduled: list[object] = []
    original = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> asyncio.Handle:
        scheduled.append(callback)
        return original(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    exporter = RecordingExporter()
    processor = processors.make(exporter, max_export_batch_size=100, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    end_spans(tracer, "owner", 1)
    await asyncio.to_thread(end_spans, tracer, "thread", 999)
    assert len(scheduled) < 30  # about one per batch of 100 (plus to_thread's own)
    assert await processor.aflush(10)
    assert len(exporter.names) == 1000


class _Raising(RecordingExporter):
    async def aexport(self, spans: Sequence[ReadableSpan], deadline: float | None = None) -> bool:
        raise RuntimeError("exporter bug")


class _Slow(RecordingExporter):
    async def aexport(self, spans: Sequence[ReadableSpan], deadline: float | None = None) -> bool:
        await asyncio.sleep(60)  # ignores its deadline
        return True


@pytest.mark.parametrize(
    ("exporter", "message"), [(_Raising(), "raised"), (_Slow(), "export_timeout")]
)
def test_an_exporter_that_raises_or_overruns_fails_the_batch_and_warns_once(
    processors: Processors, exporter: RecordingExporter, message: str
) -> None:
    processor = processors.make(exporter, max_export_batch_size=2, export_timeout_millis=200)
    _, tracer = tracer_for(processor)
    with watching_logs() as logs:
        end_spans(tracer, "bad", 6)
        assert not processor.force_flush(10_000)
    assert processor.stats == ProcessorStats(ended=6, dropped=6, failed=6)
    warnings = [r.getMessage() for r in logs.warnings(PROCESSOR_LOGGER)]
    assert len(warnings) == 2, warnings  # the exporter's fault once, and the flush's result
    assert message in warnings[0]
    assert "Flush incomplete" in warnings[1]
    assert "failed=6" in warnings[1]
