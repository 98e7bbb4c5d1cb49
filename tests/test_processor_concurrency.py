"""Several export batches in flight at once: out-of-order completion, exact flushes,
re-sending what loop shutdown cut off, and the exporter's say in how many run at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from keywordsai_tracing._engine import AsyncBatchSpanProcessor, ProcessorStats
from keywordsai_tracing._engine.delivery import Delivery
from keywordsai_tracing._engine.records import Batch, Reason, Send
from keywordsai_tracing._export_types import concurrent_exports
from keywordsai_tracing._exporter import OTLPHttpExporter
from tests.otlp_receiver import Fault, OTLPReceiver, otlp_receiver, threaded_otlp_receiver
from tests.test_processor_support import RecordingExporter, end_spans, tracer_for, watching_logs

__all__ = ["otlp_receiver", "threaded_otlp_receiver"]  # fixtures used below


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` from a coroutine (without blocking the loop)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def batching(url: str) -> AsyncBatchSpanProcessor:
    exporter = OTLPHttpExporter(url, filter_noise=False)
    return AsyncBatchSpanProcessor(
        exporter, max_export_batch_size=2, schedule_delay_millis=60_000, exit_flush_timeout=None
    )


def stats(exported: int, rejected: int = 0, in_flight: int = 0, **more: int) -> ProcessorStats:
    return ProcessorStats(
        ended=exported + rejected + in_flight,
        in_flight=in_flight,
        delivered=exported,
        dropped=rejected,
        rejected=rejected,
        **more,
    )


@pytest.mark.asyncio
async def test_a_flush_waits_for_an_earlier_batch_that_completes_after_later_ones(
    otlp_receiver: OTLPReceiver,
) -> None:
    hold = threading.Event()
    otlp_receiver.script(Fault(hold=hold))
    processor = batching(otlp_receiver.url)
    _, tracer = tracer_for(processor)
    try:
        with watching_logs() as logs:
            first = end_spans(tracer, "first", 2)  # a full batch: its request is held
            await until(lambda: otlp_receiver.script_left == 0)
            flush = asyncio.create_task(processor.aflush(10))
            await asyncio.sleep(0)  # registered: it waits for "first" only
            later = end_spans(tracer, "later", 4)  # two more batches, answered at once
            await until(lambda: processor.stats.delivered == 4)
            await asyncio.sleep(0)
            assert not flush.done()
            assert processor.stats == stats(exported=4, in_flight=2)
            hold.set()
            assert await flush
            await processor.ashutdown(10)
        logs.assert_clean()
    finally:
        hold.set()
    assert [span.name for span in otlp_receiver.spans] == later + first
    assert processor.stats == stats(exported=6)


@pytest.mark.asyncio
async def test_a_failed_batch_fails_the_flushes_that_wait_for_it_and_no_earlier_one(
    otlp_receiver: OTLPReceiver,
) -> None:
    hold = threading.Event()
    otlp_receiver.script(Fault(hold=hold), Fault(status=400))  # 400: not retried
    processor = batching(otlp_receiver.url)
    _, tracer = tracer_for(processor)
    try:
        end_spans(tracer, "first", 2)  # held, then delivered
        await until(lambda: otlp_receiver.script_left == 1)
        early = asyncio.create_task(processor.aflush(10))
        await asyncio.sleep(0)  # registered: it waits for "first" only
        end_spans(tracer, "second", 2)  # rejected while "first" is still held
        late = asyncio.create_task(processor.aflush(10))  # waits for both batches
        await until(lambda: processor.stats.rejected == 2)
        assert not early.done()
        assert not late.done()
        hold.set()
        assert await early
        assert not await late
        assert processor.stats == stats(exported=2, rejected=2)
        assert await processor.aflush(10)  # nothing pending any more
    finally:
        hold.set()
        await processor.ashutdown(10)
    assert [span.name for span in otlp_receiver.spans] == ["first-0", "first-1"]


def test_batches_cut_off_in_flight_by_loop_shutdown_are_all_sent_again_in_order(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    receiver = threaded_otlp_receiver
    hold = threading.Event()
    receiver.script(*[Fault(hold=hold)] * 3)  # the first three requests never get an answer
    processor = batching(receiver.url)
    _, tracer = tracer_for(processor)

    async def main() -> list[str]:
        names = end_spans(tracer, "cut", 6)  # three batches, all in flight at once
        await until(lambda: receiver.script_left == 0)
        return names

    try:
        with watching_logs() as logs:
            # The loop's shutdown lets them run for the drain time, then cuts them off;
            # they go out again from the private thread, in order.
            names = asyncio.run(main())
            assert processor.force_flush(10_000)
            assert [span.name for span in receiver.spans] == names
            assert processor.stats == stats(exported=6, resent=6, retries=3)
            processor.shutdown(10_000)
        logs.assert_clean()
    finally:
        hold.set()


class _Counting(RecordingExporter):
    """Counts how many exports run at once."""

    def __init__(self, gate: threading.Event, limit: int | None) -> None:
        super().__init__(gate)
        if limit is not None:
            self.max_concurrent_exports = limit
        self.active = self.most = 0

    async def aexport(self, spans: Sequence[ReadableSpan], deadline: float | None = None) -> bool:
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            return await super().aexport(spans, deadline)
        finally:
            self.active -= 1


@pytest.mark.asyncio
@pytest.mark.parametrize(("declared", "expected"), [(None, 1), (2, 2), (0, 1)])
async def test_the_exporter_says_how_many_exports_may_run_at_once(
    declared: int | None, expected: int
) -> None:
    gate = threading.Event()
    exporter = _Counting(gate, declared)
    processor = AsyncBatchSpanProcessor(
        exporter, max_export_batch_size=1, schedule_delay_millis=60_000, exit_flush_timeout=None
    )
    _, tracer = tracer_for(processor)
    try:
        names = end_spans(tracer, "one", 5)  # five batches of one
        await until(lambda: exporter.active == expected)
        for _ in range(5):
            await asyncio.sleep(0)
        assert exporter.active == expected
        gate.set()
        assert await processor.aflush(10)
    finally:
        gate.set()
        await processor.ashutdown(10)
    assert exporter.most == expected
    assert sorted(exporter.names) == names


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "4"])
def test_the_http_exporter_rejects_a_bad_max_concurrent_exports(value: Any) -> None:
    with pytest.raises(ValueError, match="max_concurrent_exports"):
        OTLPHttpExporter("http://127.0.0.1:1/v1/traces", max_concurrent_exports=value)
    assert concurrent_exports(SimpleNamespace(max_concurrent_exports=value)) == 1


def test_the_delivery_takes_back_cut_off_batches_around_a_completed_one_in_order() -> None:
    delivery = Delivery()
    worker = SimpleNamespace(retired=False)
    dead_loop = cast(asyncio.AbstractEventLoop, object())
    spans = [cast(ReadableSpan, object()) for _ in range(8)]
    delivery.queue.extend(spans[:6])

    def send(holder: object, batch: Batch | None, loop: Any = dead_loop) -> Send:
        assert batch is not None
        handover = Send(holder, loop)
        assert delivery.begin_send(batch, holder, handover, 0.0)
        return handover

    a, b, c = (delivery.take(worker, 2, force=False, now=0.0) for _ in range(3))
    sends = [send(worker, batch) for batch in (a, b, c)]
    first = delivery.add_waiter()  # spans 0-5
    assert b is not None
    delivery.complete(b, sends[1], True)
    assert delivery.reclaim(worker, dead=True) == 4  # a and c were cut off; b is done
    assert a is not None
    delivery.complete(a, sends[0], True)  # a late answer to a batch taken back: ignored
    delivery.queue.extend(spans[6:])
    second = delivery.add_waiter()  # spans 0-7
    successor = SimpleNamespace(retired=False)
    again = [delivery.take(successor, 2, force=False, now=0.0) for _ in range(3)]
    assert [batch.spans if batch else None for batch in again] == [
        spans[0:2],
        spans[4:6],
        spans[6:8],
    ]
    assert again[0] is a
    assert again[1] is c
    resends = [send(successor, batch) for batch in again]
    for batch, handover in reversed([*zip(again, resends, strict=True)]):
        assert not first.future.done()
        assert batch is not None
        delivery.complete(batch, handover, batch is not c)
    assert first.future.result() is False  # c (spans 4-5) failed
    assert second.future.result() is False
    assert delivery.stats() == ProcessorStats(
        ended=8, delivered=6, dropped=2, failed=2, resent=4, retries=2
    )
    assert not delivery.has_work()


def test_a_send_in_a_sync_exporters_thread_is_never_taken_back() -> None:
    delivery = Delivery()
    worker = SimpleNamespace(retired=False)
    delivery.queue.extend(cast(ReadableSpan, object()) for _ in range(2))
    batch = delivery.take(worker, 2, force=False, now=0.0)
    assert batch is not None
    in_thread = Send(worker, None)
    assert delivery.begin_send(batch, worker, in_thread, 0.0)
    assert delivery.reclaim(worker, dead=True) == 0  # its outcome still comes
    assert delivery.stats().in_flight == 2
    delivery.complete(batch, in_thread, True)
    assert delivery.stats() == ProcessorStats(ended=2, delivered=2)


def test_a_flush_reports_a_loss_it_covers_once_even_one_from_before_it_began() -> None:
    delivery = Delivery()
    worker = SimpleNamespace(retired=False)
    delivery.queue.extend(cast(ReadableSpan, object()) for _ in range(4))
    a, b = (delivery.take(worker, 2, force=False, now=0.0) for _ in range(2))
    assert a is not None
    assert b is not None
    sends = [Send(worker, None), Send(worker, None)]
    assert delivery.begin_send(a, worker, sends[0], 0.0)
    assert delivery.begin_send(b, worker, sends[1], 0.0)
    delivery.complete(a, sends[0], False)  # lost before anyone flushed
    first = delivery.add_waiter()
    assert not first.future.done()  # b is still in flight
    delivery.complete(b, sends[1], True)
    assert first.future.result() is False  # it covers a: it says so
    assert delivery.add_waiter().future.result() is True  # already said: not again
    delivery.count_drop(Reason.QUEUE_FULL)  # a span that never had a place
    assert delivery.add_waiter().future.result() is False
    assert delivery.add_waiter().future.result() is True
