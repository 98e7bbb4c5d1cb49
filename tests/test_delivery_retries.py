"""The engine runs the OTLP exporter's retries: backoff that honours Retry-After, state that
moves with a batch between loops, and a collector known to be down not retried for long."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keywordsai_tracing._engine import AsyncBatchSpanProcessor, ProcessorStats
from keywordsai_tracing._exporter import OTLPHttpExporter
from keywordsai_tracing._retry import RetryPolicy
from tests.otlp_receiver import Fault, OTLPReceiver, not_listening_url
from tests.test_processor_support import end_spans, tracer_for, watching_logs

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)


def processor_for(url: str, *, timeout: float = 10.0, **kwargs: Any) -> AsyncBatchSpanProcessor:
    exporter = OTLPHttpExporter(url, filter_noise=False, retry_policy=FAST, timeout=timeout)
    kwargs.setdefault("schedule_delay_millis", 60_000)
    return AsyncBatchSpanProcessor(exporter, exit_flush_timeout=None, **kwargs)


def identity_holds(stats: ProcessorStats) -> bool:
    return stats.queued + stats.in_flight + stats.delivered + stats.dropped == stats.ended


@pytest.mark.asyncio
async def test_a_flush_waits_out_retry_after_and_returns_true_once_delivered(
    otlp_receiver: OTLPReceiver,
) -> None:
    otlp_receiver.script(*[Fault(status=503, headers={"Retry-After": "1"})] * 2)
    processor = processor_for(otlp_receiver.url)
    _, tracer = tracer_for(processor)
    try:
        end_spans(tracer, "s", 3)
        assert await processor.aflush(10)
    finally:
        await processor.ashutdown(5)
    assert [r.status for r in otlp_receiver.requests] == [503, 503, 200]
    assert processor.stats == ProcessorStats(ended=3, delivered=3, retries=2)


@pytest.mark.asyncio
async def test_after_a_batch_gives_up_later_batches_get_one_attempt_until_the_collector_answers(
    otlp_receiver: OTLPReceiver,
) -> None:
    otlp_receiver.default = Fault(status=503)
    processor = processor_for(otlp_receiver.url, timeout=0.3, max_export_batch_size=2)
    _, tracer = tracer_for(processor)
    try:
        end_spans(tracer, "first", 2)
        assert not await processor.aflush(10)  # retried until its 0.3 s window passed
        first = len(otlp_receiver.requests)
        assert first >= 2
        for index in range(5):  # the outage goes on: one attempt per batch, no backoff
            end_spans(tracer, f"down{index}", 2)
            assert not await processor.aflush(10)
        assert len(otlp_receiver.requests) == first + 5
        otlp_receiver.default = Fault()  # it answers: the attempt succeeds
        end_spans(tracer, "back", 2)
        assert await processor.aflush(10)
        otlp_receiver.script(Fault(status=503))
        end_spans(tracer, "again", 2)
        assert await processor.aflush(10)  # retried as usual: known up again
    finally:
        await processor.ashutdown(5)
    stats = processor.stats
    assert (stats.ended, stats.gave_up, stats.delivered) == (16, 12, 4)
    assert identity_holds(stats)


@pytest.mark.asyncio
async def test_a_batch_giving_up_makes_batches_in_backoff_try_once_more_at_once(
    otlp_receiver: OTLPReceiver,
) -> None:
    # The first batch is told to wait 100 s (inside its 150 s window), the second 1000 s
    # (beyond it): the second gives up, and the first, asleep, tries once more now, stops.
    otlp_receiver.script(
        Fault(status=503, headers={"Retry-After": "100"}),
        Fault(status=503, headers={"Retry-After": "1000"}),
    )
    otlp_receiver.default = Fault(status=503, headers={"Retry-After": "100"})
    processor = processor_for(
        otlp_receiver.url, timeout=150.0, max_export_batch_size=1, export_timeout_millis=200_000
    )
    _, tracer = tracer_for(processor)
    try:
        end_spans(tracer, "a", 1)  # a full batch of one: sent at once, then in backoff
        await otlp_receiver.await_requests(1)
        await asyncio.sleep(0.05)
        end_spans(tracer, "b", 1)
        assert not await processor.aflush(10)
    finally:
        await processor.ashutdown(5)
    assert len(otlp_receiver.requests) == 3
    assert processor.stats == ProcessorStats(ended=2, dropped=2, gave_up=2, retries=1)


def test_a_collector_refusing_connections_at_shutdown_is_given_up_on_after_a_few_tries() -> None:
    processor = processor_for(not_listening_url(), timeout=30.0)
    _, tracer = tracer_for(processor)
    end_spans(tracer, "r", 4)
    with watching_logs() as logs:
        processor.shutdown(timeout_millis=20_000)
    stats = processor.stats
    assert stats == ProcessorStats(ended=4, dropped=4, gave_up=4, retries=2)
    assert any("refused" in r.getMessage() for r in logs.warnings())


def test_a_batch_in_backoff_when_its_loop_closes_is_retried_from_the_private_thread(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    receiver = threaded_otlp_receiver
    receiver.script(Fault(status=503, headers={"Retry-After": "1"}))
    processor = processor_for(receiver.url, max_export_batch_size=2)
    _, tracer = tracer_for(processor)

    async def main() -> None:
        end_spans(tracer, "loop", 2)  # a full batch: sent at once, told to come back in 1 s
        while not receiver.requests:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)

    try:
        with watching_logs() as logs:
            asyncio.run(main())  # closes with the batch in backoff: it is not dropped
            stats = processor.stats
            assert (stats.in_flight, stats.dropped) == (2, 0)
            assert processor.force_flush(10_000)
        logs.assert_clean()
    finally:
        processor.shutdown(5000)
    assert [r.status for r in receiver.requests] == [503, 200]
    assert receiver.requests[0].peer != receiver.requests[1].peer  # another loop's connection
    assert processor.stats == ProcessorStats(ended=2, delivered=2, retries=1)


@pytest.mark.asyncio
async def test_an_outage_parks_no_more_than_the_in_flight_bound_outside_the_queue(
    otlp_receiver: OTLPReceiver,
) -> None:
    # Batches in backoff hold no export slot; without a bound an outage would keep taking
    # batches off the queue and park them, without end.
    otlp_receiver.default = Fault(status=503, headers={"Retry-After": "0.05"})
    processor = processor_for(
        otlp_receiver.url, timeout=60.0, max_queue_size=20, max_export_batch_size=5
    )
    _, tracer = tracer_for(processor)
    outside = 4 * 5  # the exporter's 4 concurrent exports of 5 spans
    most = 0
    try:
        for index in range(40):
            end_spans(tracer, f"s{index}", 5)
            await asyncio.sleep(0.01)
            stats = processor.stats
            most = max(most, stats.in_flight)
            assert stats.queued <= 20 + outside
            assert identity_holds(stats)
    finally:
        await processor.ashutdown(0.5)
    stats = processor.stats
    assert most == outside  # the bound was reached, never passed
    assert stats.queue_full >= 200 - 20 - outside
    assert stats.ended == 200
    assert identity_holds(stats)
