"""End to end: AsyncBatchSpanProcessor -> OTLPHttpExporter (aiohttp) -> a real receiver."""

from __future__ import annotations

import asyncio
import gc

import pytest

from keywordsai_tracing._engine import AsyncBatchSpanProcessor
from keywordsai_tracing._exporter import OTLPHttpExporter
from tests.otlp_receiver import OTLPReceiver, otlp_receiver, threaded_otlp_receiver
from tests.test_processor_support import end_spans, run_script, tracer_for, watching_logs

__all__ = ["otlp_receiver", "threaded_otlp_receiver"]  # fixtures used below


def test_spans_from_loops_that_come_and_go_reach_the_receiver(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    exporter = OTLPHttpExporter(threaded_otlp_receiver.url, filter_noise=False)
    processor = AsyncBatchSpanProcessor(
        exporter, schedule_delay_millis=60_000, exit_flush_timeout=None
    )
    _, tracer = tracer_for(processor)
    expected: list[str] = []

    async def work(run: int) -> list[str]:
        names = end_spans(tracer, f"run{run}", 20)
        await asyncio.sleep(0)
        return names

    with watching_logs() as logs:
        for run in range(5):
            expected += asyncio.run(work(run))  # delivered as each loop shuts down
            assert len(threaded_otlp_receiver.spans) == len(expected)
        loop = asyncio.new_event_loop()
        expected += loop.run_until_complete(work(99))
        loop.close()  # without cancelling the export task
        expected += end_spans(tracer, "sync", 10)
        processor.shutdown(10_000)
        gc.collect()
    logs.assert_clean()
    assert sorted(span.name for span in threaded_otlp_receiver.spans) == sorted(expected)
    assert threaded_otlp_receiver.errors == []


@pytest.mark.asyncio
async def test_a_coroutine_exports_through_aiohttp_on_its_own_loop(
    otlp_receiver: OTLPReceiver,
) -> None:
    exporter = OTLPHttpExporter(otlp_receiver.url, filter_noise=False, protocol="http/protobuf")
    processor = AsyncBatchSpanProcessor(exporter, max_export_batch_size=8, exit_flush_timeout=None)
    _, tracer = tracer_for(processor)
    with watching_logs() as logs:
        names = end_spans(tracer, "async", 20)
        assert await processor.aflush(10)
        await processor.ashutdown(10)
    logs.assert_clean()
    assert [span.name for span in otlp_receiver.spans] == names
    assert len(otlp_receiver.requests) == 3  # 8 + 8 + 4


def test_a_program_exits_cleanly_with_the_real_exporter() -> None:
    result = run_script(
        """
import asyncio, atexit
from opentelemetry.sdk.trace import TracerProvider
from keywordsai_tracing._exporter import OTLPHttpExporter
from keywordsai_tracing._engine import AsyncBatchSpanProcessor
from tests.otlp_receiver import OTLPReceiver
from tests.test_processor_support import end_spans

serving = OTLPReceiver().running_in_thread()
receiver = serving.__enter__()
atexit.register(serving.__exit__, None, None, None)  # runs last
atexit.register(lambda: print("received", len(receiver.spans), len(receiver.errors)))
provider = TracerProvider()
exporter = OTLPHttpExporter(receiver.url, filter_noise=False)
provider.add_span_processor(AsyncBatchSpanProcessor(exporter, schedule_delay_millis=60_000))
tracer = provider.get_tracer("t")

async def work(prefix):
    end_spans(tracer, prefix, 10)
    await asyncio.sleep(0)

for run in range(3):
    asyncio.run(work(f"run{run}"))
end_spans(tracer, "tail", 10)  # delivered by the exit flush
"""
    )
    assert "received 40 0" in result.stdout
    assert result.stderr == ""
