"""AsyncBatchSpanProcessor as a drop-in for OpenTelemetry's BatchSpanProcessor (issue 9).

The behaviours OpenTelemetry's own batch processor tests check (its constructor, the
``OTEL_BSP_*`` settings, which exporters it accepts, when batches go out, shutdown that
lets one export finish and then interrupts the exporter, fork, garbage collection), run
against our processor with the signature fixed in ``/work/issue9-contract.md``::

    AsyncBatchSpanProcessor(span_exporter, max_queue_size=None, schedule_delay_millis=None,
                            max_export_batch_size=None, export_timeout_millis=None, *,
                            exit_flush_timeout=5.0, meter_provider=None)

Where the contract goes beyond OpenTelemetry (``stats``, a ``force_flush`` that reports
failures, a bad environment value that warns and falls back), the tests follow the
contract. Observable behaviour (what the exporter receives, and when) is checked rather
than private attributes.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any
from unittest.mock import Mock

import pytest
from opentelemetry.context import Context
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.environment_variables import (
    OTEL_BSP_EXPORT_TIMEOUT,
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Tracer

from keywordsai_tracing.processors import AsyncBatchSpanProcessor
from tests.test_processor_support import end_spans, tracer_for, wait_for_child, wait_until

BSP_VARIABLES = (
    OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY,
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_EXPORT_TIMEOUT,
)
BAD_ENV_VALUES = ("abc", "-1", "inf", "nan")

MakeProcessor = Callable[..., AsyncBatchSpanProcessor]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _no_bsp_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without OTEL_BSP_* set (a developer's shell may set them)."""
    for name in BSP_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make() -> Iterator[MakeProcessor]:
    """Build processors (no exit hook); every one is shut down after the test."""
    made: list[AsyncBatchSpanProcessor] = []

    def build(span_exporter: object, *args: Any, **kwargs: Any) -> AsyncBatchSpanProcessor:
        kwargs.setdefault("exit_flush_timeout", None)
        processor = AsyncBatchSpanProcessor(span_exporter, *args, **kwargs)  # type: ignore[arg-type]
        made.append(processor)
        return processor

    yield build
    for processor in made:
        processor.shutdown(timeout_millis=5000)


# --------------------------------------------------------------------------- exporters


class BatchRecorder(SpanExporter):
    """A sync exporter recording the span names of each batch and where it ran.

    ``gate``, when given, holds every export until it is set; ``hold`` is how long an
    export then waits for it (a bound, so a failing test cannot hang a thread for ever).
    ``result`` is what each export returns; an exception instance is raised instead.
    """

    def __init__(
        self,
        gate: threading.Event | None = None,
        *,
        hold: float = 30.0,
        delay: float = 0.0,
        result: object = SpanExportResult.SUCCESS,
    ) -> None:
        self.gate = gate
        self.hold = hold
        self.delay = delay
        self.result = result
        self.batches: list[tuple[str, ...]] = []
        self.on_loop: list[bool] = []  # per call: was an event loop running in its thread
        self.threads: set[int] = set()
        self.started = threading.Event()
        self.shutdown_called = False
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(self.hold)
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.batches.append(tuple(span.name for span in spans))
            self.on_loop.append(_loop_running())
            self.threads.add(threading.get_ident())
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result  # type: ignore[return-value]  # False is a failure too

    def shutdown(self) -> None:
        self.shutdown_called = True

    @property
    def names(self) -> list[str]:
        with self._lock:
            return [name for batch in self.batches for name in batch]

    @property
    def sizes(self) -> list[int]:
        with self._lock:
            return [len(batch) for batch in self.batches]


class PlainExporter:
    """Has ``export`` and ``shutdown`` but does not subclass ``SpanExporter``; returns
    None from ``export``, as OpenTelemetry's own test exporter does."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.on_loop: list[bool] = []
        self.threads: set[int] = set()
        self.shutdown_called = False

    def export(self, spans: Sequence[ReadableSpan]) -> None:
        self.names.extend(span.name for span in spans)
        self.on_loop.append(_loop_running())
        self.threads.add(threading.get_ident())

    def shutdown(self) -> None:
        self.shutdown_called = True


class CoroutineExporter:
    """``aexport`` is a coroutine function: awaited on a loop; ``export`` must not be used."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.sync_calls = 0
        self.awaited_on_loop: list[bool] = []
        self.shutdown_called = False

    async def aexport(self, spans: Sequence[ReadableSpan], deadline: float | None = None) -> bool:
        self.awaited_on_loop.append(_loop_running())
        self.names.extend(span.name for span in spans)
        return True

    async def aclose(self) -> None:
        return None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.sync_calls += 1
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shutdown_called = True


class SyncAexportExporter(PlainExporter):
    """``aexport`` is a plain function: the exporter is still a sync one."""

    def __init__(self) -> None:
        super().__init__()
        self.aexport_calls = 0

    def aexport(self, spans: Sequence[ReadableSpan], deadline: float | None = None) -> bool:
        self.aexport_calls += 1
        return True

    async def aclose(self) -> None:
        return None


class InterruptibleExporter:
    """Not a ``SpanExporter`` subclass. Each export takes ``export_seconds`` unless
    ``shutdown()`` interrupts it (it then raises); an export after shutdown raises."""

    def __init__(self, export_seconds: float) -> None:
        self.export_seconds = export_seconds
        self.calls = 0
        self.completed = 0
        self.interrupted = 0
        self.calls_after_shutdown = 0
        self.is_shutdown = False
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> None:
        with self._lock:
            self.calls += 1
            if self.is_shutdown:
                self.calls_after_shutdown += 1
                raise RuntimeError("export called after shutdown")
        if self._stop.wait(self.export_seconds):
            with self._lock:
                self.interrupted += 1
            raise RuntimeError("export interrupted by shutdown")
        with self._lock:
            self.completed += 1

    def shutdown(self) -> None:
        with self._lock:
            self.is_shutdown = True
        self._stop.set()

    def idle(self) -> bool:
        """Every export call made so far has returned."""
        with self._lock:
            return self.completed + self.interrupted + self.calls_after_shutdown == self.calls


class BackoffExporter(SpanExporter):
    """Like OpenTelemetry's OTLP exporter after a refused attempt: ``export`` sleeps in
    its retry backoff, which only ``shutdown()`` cuts short."""

    def __init__(self, backoff: float) -> None:
        self.backoff = backoff
        self.in_backoff = threading.Event()
        self.returned = threading.Event()
        self.interrupted: bool | None = None
        self.shutdown_while_exporting: bool | None = None
        self._exporting = False
        self._shutdown = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._exporting = True
        try:
            self.in_backoff.set()  # the first attempt failed; wait before the next
            self.interrupted = self._shutdown.wait(self.backoff)
            return SpanExportResult.FAILURE if self.interrupted else SpanExportResult.SUCCESS
        finally:
            self._exporting = False
            self.returned.set()

    def shutdown(self) -> None:
        if self.shutdown_while_exporting is None:
            self.shutdown_while_exporting = self._exporting
        self._shutdown.set()

    def release(self) -> None:
        """End a backoff the processor failed to interrupt (test clean-up)."""
        self._shutdown.set()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _ledger_balances(processor: AsyncBatchSpanProcessor) -> bool:
    stats = processor.stats
    return stats.queued + stats.in_flight + stats.delivered + stats.dropped == stats.ended


def _warnings_naming(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.levelno == logging.WARNING and text in record.getMessage()
    ]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno == logging.WARNING]


# --------------------------------------------------------------------------- constructor


@pytest.mark.parametrize(
    "kind", ["span-exporter", "plain-object", "mock", "coroutine-aexport"], ids=str
)
def test_span_exporter_property_returns_the_exporter_passed_in(
    make: MakeProcessor, kind: str
) -> None:
    exporters: dict[str, object] = {
        "span-exporter": BatchRecorder(),
        "plain-object": PlainExporter(),
        "mock": Mock(),
        "coroutine-aexport": CoroutineExporter(),
    }
    span_exporter = exporters[kind]
    assert make(span_exporter).span_exporter is span_exporter


def test_positional_arguments_follow_opentelemetrys_order_and_meter_provider_is_accepted(
    make: MakeProcessor,
) -> None:
    exporter = BatchRecorder()
    # span_exporter, max_queue_size, schedule_delay_millis, max_export_batch_size,
    # export_timeout_millis: batches of 4, never on the timer.
    processor = make(exporter, 100, 60_000, 4, 10_000, meter_provider=NoOpMeterProvider())
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "positional", 10)
    assert processor.force_flush()
    assert exporter.sizes == [4, 4, 2]
    assert exporter.names == names


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"max_queue_size": 0}, "max_queue_size"),
        ({"max_queue_size": -500}, "max_queue_size"),
        ({"schedule_delay_millis": 0}, "schedule_delay_millis"),
        ({"schedule_delay_millis": -500}, "schedule_delay_millis"),
        ({"max_export_batch_size": 0}, "max_export_batch_size"),
        ({"max_export_batch_size": -500}, "max_export_batch_size"),
        ({"max_queue_size": 256, "max_export_batch_size": 512}, "max_export_batch_size"),
    ],
    ids=[
        "queue-zero",
        "queue-negative",
        "delay-zero",
        "delay-negative",
        "batch-zero",
        "batch-negative",
        "batch-over-queue",
    ],
)
def test_invalid_sizes_and_delays_raise_value_error_naming_the_parameter(
    kwargs: dict[str, int], parameter: str
) -> None:
    with pytest.raises(ValueError, match=parameter):
        AsyncBatchSpanProcessor(BatchRecorder(), exit_flush_timeout=None, **kwargs)


# --------------------------------------------------------------------------- OTEL_BSP_*


def test_otel_bsp_max_export_batch_size_is_honoured(
    make: MakeProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OTEL_BSP_MAX_EXPORT_BATCH_SIZE, "3")
    exporter = BatchRecorder()
    processor = make(exporter, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "batch", 7)
    assert processor.force_flush()
    assert exporter.sizes == [3, 3, 1]
    assert exporter.names == names


def test_otel_bsp_max_queue_size_is_honoured(
    make: MakeProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OTEL_BSP_MAX_QUEUE_SIZE, "10")
    gate = threading.Event()
    exporter = BatchRecorder(gate)
    processor = make(exporter, schedule_delay_millis=60_000, max_export_batch_size=5)
    _, tracer = tracer_for(processor)
    try:
        end_spans(tracer, "first", 5)  # a full batch: its export waits at the gate
        assert exporter.started.wait(10)
        end_spans(tracer, "more", 20)  # 10 fit in the queue
    finally:
        gate.set()
    assert not processor.force_flush()  # it reports the 10 spans the full queue dropped
    assert processor.force_flush()  # once
    assert len(exporter.names) == 15
    assert processor.stats.queue_full == 10


def test_otel_bsp_schedule_delay_is_honoured(
    make: MakeProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OTEL_BSP_SCHEDULE_DELAY, "100")
    exporter = BatchRecorder()
    processor = make(exporter, max_export_batch_size=100)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "timer", 1)
    # No flush and no full batch: only the 100 ms timer sends it (the default is 5 s).
    assert wait_until(lambda: exporter.names == names, timeout=3.0)


def test_otel_bsp_export_timeout_is_honoured(
    make: MakeProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OTEL_BSP_EXPORT_TIMEOUT, "200")
    gate = threading.Event()
    exporter = BatchRecorder(gate)
    processor = make(exporter, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    try:
        end_spans(tracer, "overrun", 1)
        # The export outlasts 200 ms (not the 30 s default): the batch fails.
        assert not processor.force_flush(timeout_millis=10_000)
        assert processor.stats.failed == 1
    finally:
        gate.set()


def test_explicit_arguments_win_over_otel_bsp_variables(
    make: MakeProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OTEL_BSP_MAX_QUEUE_SIZE, "10")
    monkeypatch.setenv(OTEL_BSP_SCHEDULE_DELAY, "100")
    monkeypatch.setenv(OTEL_BSP_MAX_EXPORT_BATCH_SIZE, "3")
    monkeypatch.setenv(OTEL_BSP_EXPORT_TIMEOUT, "100")
    exporter = BatchRecorder(delay=0.3)  # each export outlasts the variable's 100 ms
    processor = make(
        exporter,
        max_queue_size=100,
        schedule_delay_millis=60_000,
        max_export_batch_size=50,
        export_timeout_millis=60_000,
    )
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "explicit", 25)  # more than 10, fewer than 50
    # Five of the variable's schedule delays pass: still nothing sent.
    assert not wait_until(lambda: bool(exporter.batches), timeout=0.5)
    assert processor.force_flush()
    assert exporter.batches == [tuple(names)]


def test_variables_are_not_read_when_every_argument_is_given(
    make: MakeProcessor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in BSP_VARIABLES:
        monkeypatch.setenv(name, "abc")
    make(
        BatchRecorder(),
        max_queue_size=100,
        schedule_delay_millis=1000,
        max_export_batch_size=50,
        export_timeout_millis=1000,
    )
    assert _warnings(caplog) == []


def test_defaults_are_a_2048_queue_and_512_span_batches(make: MakeProcessor) -> None:
    gate = threading.Event()
    exporter = BatchRecorder(gate)
    processor = make(exporter)
    _, tracer = tracer_for(processor)
    try:
        end_spans(tracer, "first", 512)  # a full default batch: its export waits
        assert exporter.started.wait(10)
        end_spans(tracer, "more", 2100)  # 2048 fit in the queue, 52 are dropped
        # The export has been held a second: the default export timeout is longer.
        time.sleep(1.0)
    finally:
        gate.set()
    assert not processor.force_flush()  # it reports the 52 spans the full queue dropped
    assert exporter.sizes == [512] * 5
    stats = processor.stats
    assert (stats.queue_full, stats.failed) == (52, 0)


def test_default_schedule_delay_is_five_seconds(make: MakeProcessor) -> None:
    exporter = BatchRecorder()
    processor = make(exporter)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "timer", 1)
    assert not wait_until(lambda: bool(exporter.batches), timeout=1.0)
    assert wait_until(lambda: exporter.names == names, timeout=15.0)  # no flush


@pytest.mark.parametrize("value", BAD_ENV_VALUES)
def test_bad_otel_bsp_values_warn_naming_the_variable_and_fall_back(
    make: MakeProcessor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    value: str,
) -> None:
    for name in BSP_VARIABLES:
        monkeypatch.setenv(name, value)
    gate = threading.Event()
    exporter = BatchRecorder(gate)
    processor = make(exporter)
    for name in BSP_VARIABLES:
        assert _warnings_naming(caplog, name), (name, caplog.text)
    # The defaults apply: 512-span batches, a 2048-span queue, an export timeout well
    # over a second (the schedule delay: see the next test).
    _, tracer = tracer_for(processor)
    try:
        end_spans(tracer, "first", 512)
        assert exporter.started.wait(10)
        end_spans(tracer, "more", 2100)
        time.sleep(1.0)
    finally:
        gate.set()
    assert not processor.force_flush()  # it reports the 52 spans the full queue dropped
    assert exporter.sizes == [512] * 5
    stats = processor.stats
    assert (stats.queue_full, stats.failed) == (52, 0)


def test_bad_otel_bsp_schedule_delays_fall_back_to_five_seconds(
    make: MakeProcessor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exporters: list[BatchRecorder] = []
    for value in BAD_ENV_VALUES:
        monkeypatch.setenv(OTEL_BSP_SCHEDULE_DELAY, value)
        exporter = BatchRecorder()
        _, tracer = tracer_for(make(exporter))
        end_spans(tracer, value, 1)
        exporters.append(exporter)
    assert _warnings_naming(caplog, OTEL_BSP_SCHEDULE_DELAY)
    assert not wait_until(lambda: any(e.batches for e in exporters), timeout=1.0)
    assert wait_until(lambda: all(e.batches for e in exporters), timeout=15.0)  # no flush


# --------------------------------------------------------------------------- spans


def test_on_start_accepts_a_parent_context(make: MakeProcessor) -> None:
    exporter = BatchRecorder()
    processor = make(exporter, schedule_delay_millis=60_000)
    spy = Mock(wraps=processor)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(spy)
    parent = Context()
    span = provider.get_tracer("compat").start_span("child", context=parent)
    spy.on_start.assert_called_once_with(span, parent_context=parent)
    span.end()
    assert processor.force_flush()
    assert exporter.names == ["child"]


def test_unsampled_spans_are_not_exported(make: MakeProcessor) -> None:
    exporter = BatchRecorder()
    processor = make(exporter, max_queue_size=256, max_export_batch_size=64)
    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    provider.add_span_processor(processor)
    with provider.get_tracer("compat").start_as_current_span("unsampled"):
        pass
    assert processor.force_flush()
    assert exporter.batches == []
    assert processor.stats.ended == 0


def _batches_of_15(
    make: MakeProcessor, exporter: Any, *, schedule_delay_millis: float
) -> AsyncBatchSpanProcessor:
    """OpenTelemetry's own processor tests' set-up: batches and a queue of 15 spans."""
    return make(
        exporter,
        max_queue_size=15,
        max_export_batch_size=15,
        schedule_delay_millis=schedule_delay_millis,
        export_timeout_millis=500,
    )


def test_a_full_batch_is_exported_at_once_despite_a_long_schedule_delay(
    make: MakeProcessor,
) -> None:
    exporter = BatchRecorder()
    processor = _batches_of_15(make, exporter, schedule_delay_millis=30_000)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "full", 15)
    assert wait_until(lambda: bool(exporter.batches))  # no flush: the batch filled
    assert exporter.batches == [tuple(names)]


def test_a_partial_batch_is_exported_when_the_schedule_delay_passes(
    make: MakeProcessor,
) -> None:
    exporter = BatchRecorder()
    processor = _batches_of_15(make, exporter, schedule_delay_millis=100)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "lone", 1)
    assert wait_until(lambda: bool(exporter.batches))  # no flush: the delay passed
    assert exporter.batches == [tuple(names)]


def test_shutdown_flushes_and_spans_ended_after_it_are_counted_not_exported(
    make: MakeProcessor,
) -> None:
    exporter = BatchRecorder()
    processor = _batches_of_15(make, exporter, schedule_delay_millis=30_000)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "before", 1)
    processor.shutdown()
    assert exporter.batches == [tuple(names)]
    assert exporter.shutdown_called
    end_spans(tracer, "after", 1)
    assert exporter.batches == [tuple(names)]
    stats = processor.stats
    assert (stats.ended, stats.delivered, stats.after_shutdown, stats.dropped) == (2, 1, 1, 1)
    assert _ledger_balances(processor)


def test_force_flush_exports_everything_and_returns_true(make: MakeProcessor) -> None:
    exporter = BatchRecorder()
    processor = _batches_of_15(make, exporter, schedule_delay_millis=30_000)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "flushed", 10)
    assert processor.force_flush() is True
    assert exporter.batches == [tuple(names)]
    assert processor.stats.delivered == 10


# --------------------------------------------------------------------------- exporter kinds


def test_an_exporter_with_export_and_shutdown_but_no_base_class_runs_in_a_thread(
    make: MakeProcessor,
) -> None:
    exporter = PlainExporter()
    processor = make(exporter, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)

    async def main() -> list[str]:
        names = end_spans(tracer, "plain", 3)  # ended on this loop
        assert await processor.aflush(10)
        return names

    names = asyncio.run(main())
    names += end_spans(tracer, "sync", 2)
    assert processor.force_flush()
    assert exporter.names == names
    assert exporter.on_loop
    assert not any(exporter.on_loop)  # off every loop
    assert threading.get_ident() not in exporter.threads
    assert processor.stats.delivered == 5  # ``export()`` returned None
    processor.shutdown()
    assert exporter.shutdown_called


def test_a_mock_exporter_is_sync_and_gets_every_batch(make: MakeProcessor) -> None:
    exporter = Mock()
    processor = make(exporter, max_export_batch_size=2, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "mocked", 5)
    assert processor.force_flush()
    batches = [[span.name for span in call.args[0]] for call in exporter.export.call_args_list]
    assert batches == [names[0:2], names[2:4], names[4:5]]
    assert processor.stats.delivered == 5  # a Mock result counts as delivered
    processor.shutdown()
    assert exporter.shutdown.called


def test_an_exporter_with_a_coroutine_aexport_is_awaited_on_a_loop(
    make: MakeProcessor,
) -> None:
    exporter = CoroutineExporter()
    processor = make(exporter, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "async", 3)
    assert processor.force_flush()
    assert exporter.names == names
    assert exporter.awaited_on_loop
    assert all(exporter.awaited_on_loop)
    assert exporter.sync_calls == 0


def test_a_plain_function_aexport_does_not_make_an_exporter_async(
    make: MakeProcessor,
) -> None:
    exporter = SyncAexportExporter()
    processor = make(exporter, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    names = end_spans(tracer, "sync-aexport", 3)
    assert processor.force_flush()
    assert exporter.names == names  # through ``export()``
    assert exporter.aexport_calls == 0
    assert not any(exporter.on_loop)


class _NonCallableExport:
    export = "not callable"

    def shutdown(self) -> None:
        return None


class _OnlySyncAexport:
    def aexport(self, spans: Sequence[ReadableSpan]) -> bool:
        return True

    def shutdown(self) -> None:
        return None


@pytest.mark.parametrize(
    "span_exporter",
    [object(), _NonCallableExport(), _OnlySyncAexport()],
    ids=["object", "non-callable-export", "only-sync-aexport"],
)
def test_an_object_that_cannot_export_raises_type_error_naming_span_exporter(
    span_exporter: object,
) -> None:
    with pytest.raises(TypeError, match="span_exporter"):
        AsyncBatchSpanProcessor(span_exporter, exit_flush_timeout=None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- shutdown


def test_shutdown_lets_the_export_in_flight_finish_then_interrupts_the_next(
    make: MakeProcessor,
) -> None:
    exporter = InterruptibleExporter(export_seconds=2.0)
    processor = make(
        exporter, max_queue_size=200, max_export_batch_size=1, schedule_delay_millis=30_000
    )
    _, tracer = tracer_for(processor)
    end_spans(tracer, "one-at-a-time", 3)  # three exports of 2 s each, one at a time
    processor.shutdown(timeout_millis=3000)  # the budget is the bound: three take 6 s
    assert exporter.is_shutdown
    assert wait_until(exporter.idle)
    assert wait_until(lambda: processor.stats.pending == 0)
    # The first export finished, the second was interrupted by ``shutdown()`` when the
    # budget ran out, the third was never started.
    assert exporter.completed == 1
    assert exporter.interrupted == 1
    assert exporter.calls == 2
    assert exporter.calls_after_shutdown == 0
    stats = processor.stats
    assert (stats.delivered, stats.dropped) == (1, 2)
    assert stats.deadline >= 1
    assert _ledger_balances(processor)


def test_shutdown_cuts_a_sync_exporters_backoff_short(make: MakeProcessor) -> None:
    exporter = BackoffExporter(backoff=10.0)
    processor = make(exporter, max_export_batch_size=1, schedule_delay_millis=30_000)
    _, tracer = tracer_for(processor)
    try:
        end_spans(tracer, "retrying", 1)
        assert exporter.in_backoff.wait(10)
        processor.shutdown(timeout_millis=100)
        # By the time shutdown() returns, it has called the exporter's shutdown() while
        # the export was still in its backoff, and has not waited for that export.
        assert exporter.shutdown_while_exporting is True
        assert exporter.returned.wait(10)
        assert exporter.interrupted is True
    finally:
        exporter.release()
    assert wait_until(lambda: processor.stats.pending == 0)
    stats = processor.stats
    assert (stats.delivered, stats.dropped) == (0, 1)


# --------------------------------------------------------------------------- failed flushes


@pytest.mark.parametrize(
    "result",
    [SpanExportResult.FAILURE, False, RuntimeError("collector exploded")],
    ids=["FAILURE", "False", "raises"],
)
def test_a_force_flush_whose_export_fails_returns_false_and_warns(
    make: MakeProcessor, caplog: pytest.LogCaptureFixture, result: object
) -> None:
    exporter = BatchRecorder(result=result)
    processor = make(exporter, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    end_spans(tracer, "failing", 2)
    assert processor.force_flush() is False
    assert _warnings(caplog)
    stats = processor.stats
    assert (stats.delivered, stats.failed) == (0, 2)


def test_a_force_flush_that_times_out_returns_false_and_warns(
    make: MakeProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    gate = threading.Event()
    exporter = BatchRecorder(gate)
    processor = make(exporter, schedule_delay_millis=60_000, export_timeout_millis=60_000)
    _, tracer = tracer_for(processor)
    try:
        names = end_spans(tracer, "slow", 1)
        assert processor.force_flush(timeout_millis=200) is False
        # Nothing failed: only the flush's wait ran out, and it said so.
        assert _warnings(caplog)
    finally:
        gate.set()
    assert processor.force_flush()
    assert exporter.names == names
    stats = processor.stats
    assert (stats.delivered, stats.failed) == (1, 0)


def test_a_force_flush_whose_export_overruns_export_timeout_returns_false_and_warns(
    make: MakeProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    gate = threading.Event()
    exporter = BatchRecorder(gate)
    processor = make(exporter, schedule_delay_millis=60_000, export_timeout_millis=200)
    _, tracer = tracer_for(processor)
    try:
        end_spans(tracer, "overrun", 1)
        assert processor.force_flush(timeout_millis=10_000) is False
        assert _warnings(caplog)
        assert processor.stats.failed == 1
    finally:
        gate.set()


# --------------------------------------------------------------------------- fork


def _child_exports(
    processor: AsyncBatchSpanProcessor, exporter: BatchRecorder, tracer: Tracer
) -> dict[str, Any]:
    """In a forked child: end 100 spans, flush, and report what this copy exported."""
    names = end_spans(tracer, "child", 100)
    ok = processor.force_flush(10_000)
    return {
        "flushed": ok,
        "expected": names,
        "batches": [list(batch) for batch in exporter.batches],
        "balanced": _ledger_balances(processor),
        "pending": processor.stats.pending,
    }


def _check_child_report(report: dict[str, Any]) -> None:
    assert report["flushed"] is True
    # Ten batches of ten: the parent's queued spans were not inherited.
    assert [len(batch) for batch in report["batches"]] == [10] * 10
    assert [name for batch in report["batches"] for name in batch] == report["expected"]
    assert report["balanced"] is True
    assert report["pending"] == 0


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _forking_setup(make: MakeProcessor) -> tuple[AsyncBatchSpanProcessor, BatchRecorder, Tracer]:
    exporter = BatchRecorder()
    processor = make(
        exporter, max_queue_size=200, max_export_batch_size=10, schedule_delay_millis=30_000
    )
    _, tracer = tracer_for(processor)
    end_spans(tracer, "parent", 9)  # fewer than a batch: still queued at the fork
    return processor, exporter, tracer


def _check_parent_after_fork(processor: AsyncBatchSpanProcessor, exporter: BatchRecorder) -> None:
    assert processor.force_flush()
    assert exporter.batches == [tuple(f"parent-{i}" for i in range(9))]


def test_a_child_made_by_os_fork_starts_empty_and_exports_its_own_spans(
    make: MakeProcessor,
) -> None:
    processor, exporter, tracer = _forking_setup(make)
    assert exporter.batches == []
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            os.close(read_fd)
            os.write(write_fd, json.dumps(_child_exports(processor, exporter, tracer)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        assert wait_for_child(pid, 30) == 0
        report = json.loads(_read_all(read_fd))
    finally:
        os.close(read_fd)
    _check_child_report(report)
    _check_parent_after_fork(processor, exporter)


def test_a_child_made_by_multiprocessing_fork_starts_empty_and_exports_its_own_spans(
    make: MakeProcessor,
) -> None:
    processor, exporter, tracer = _forking_setup(make)
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def child(connection: Connection) -> None:  # pragma: no cover - runs in the child
        connection.send(_child_exports(processor, exporter, tracer))
        connection.close()

    process = context.Process(target=child, args=(sender,))
    process.start()
    sender.close()
    try:
        assert receiver.poll(30), "the child sent no report"
        report = receiver.recv()
        process.join(30)
        assert process.exitcode == 0
    finally:
        if process.is_alive():
            process.kill()
            process.join()
        receiver.close()
    _check_child_report(report)
    _check_parent_after_fork(processor, exporter)


# --------------------------------------------------------------------------- garbage collection


def _collected_processor(used: bool) -> weakref.ref[AsyncBatchSpanProcessor]:
    """A processor shut down and dropped; ``used``: it exported spans first."""
    exporter = BatchRecorder()  # keeps names only: spans would reference the processor
    processor = AsyncBatchSpanProcessor(exporter, exit_flush_timeout=None)
    reference = weakref.ref(processor)
    if used:
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(processor)
        end_spans(provider.get_tracer("compat"), "used", 3)
        assert processor.force_flush()
        assert len(exporter.names) == 3
        del provider
    processor.shutdown()
    del processor
    gc.collect()
    return reference


@pytest.mark.parametrize("used", [False, True], ids=["unused", "used"])
def test_the_processor_is_garbage_collected_after_shutdown(used: bool) -> None:
    assert _collected_processor(used)() is None


def test_a_collected_processor_does_not_break_a_later_fork() -> None:
    assert _collected_processor(used=True)() is None
    read_fd, write_fd = os.pipe()

    def report_unraisable(unraisable: Any) -> None:  # runs in the child, from fork hooks
        os.write(write_fd, f"{unraisable.exc_type.__name__}: {unraisable.exc_value}\n".encode())

    previous = sys.unraisablehook
    sys.unraisablehook = report_unraisable
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            try:
                os.write(write_fd, b"child ran\n")
            finally:
                os._exit(0)
    finally:
        sys.unraisablehook = previous
    os.close(write_fd)
    try:
        assert wait_for_child(pid, 30) == 0
        output = _read_all(read_fd).decode()
    finally:
        os.close(read_fd)
    assert output == "child ran\n"
