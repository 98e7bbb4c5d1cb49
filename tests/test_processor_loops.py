"""One processor across many test loops: pytest-asyncio's function-scoped loops and anyio.

Each test ends spans on its own loop and returns without flushing; the loop's teardown
(cancelling every task) makes the export task deliver them. The last test checks that all
arrived, each exported on the loop where it ended, with nothing logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.trace import Tracer

from keywordsai_tracing._engine import AsyncBatchSpanProcessor
from tests.test_processor_support import LogWatch, RecordingExporter, end_spans, tracer_for

EXPORTER = RecordingExporter()
ENDED: dict[str, asyncio.AbstractEventLoop] = {}  # span name -> loop it ended on


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[AsyncBatchSpanProcessor, Tracer, LogWatch]]:
    processor = AsyncBatchSpanProcessor(
        EXPORTER, schedule_delay_millis=60_000, exit_flush_timeout=None
    )
    _, tracer = tracer_for(processor)
    watch = LogWatch().start()
    yield processor, tracer, watch
    watch.stop()
    processor.shutdown(5000)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def tracer(shared: tuple[AsyncBatchSpanProcessor, Tracer, LogWatch]) -> Tracer:
    return shared[1]


async def end_on_this_loop(tracer: Tracer, prefix: str, count: int) -> None:
    loop = asyncio.get_running_loop()
    for name in end_spans(tracer, prefix, count):
        ENDED[name] = loop
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_first_loop_ends_spans(tracer: Tracer) -> None:
    await end_on_this_loop(tracer, "first", 5)


@pytest.mark.asyncio
async def test_second_loop_ends_spans(tracer: Tracer) -> None:
    await end_on_this_loop(tracer, "second", 600)  # more than a batch


@pytest.mark.asyncio
async def test_third_loop_ends_spans_in_a_task_and_a_thread(tracer: Tracer) -> None:
    await asyncio.get_running_loop().create_task(end_on_this_loop(tracer, "task", 3))
    names = await asyncio.to_thread(end_spans, tracer, "thread", 3)
    ENDED.update(dict.fromkeys(names, asyncio.get_running_loop()))


@pytest.mark.anyio
async def test_an_anyio_test_ends_spans(
    shared: tuple[AsyncBatchSpanProcessor, Tracer, LogWatch],
) -> None:
    processor, tracer, _ = shared
    await end_on_this_loop(tracer, "anyio", 4)
    assert await processor.aflush(10)
    assert [call.loop for call in EXPORTER.calls][-1] is asyncio.get_running_loop()


def test_everything_arrived_from_the_loop_it_ended_on(
    shared: tuple[AsyncBatchSpanProcessor, Tracer, LogWatch],
) -> None:
    processor, _, watch = shared
    assert sorted(EXPORTER.names) == sorted(ENDED)  # no flush: delivered at each teardown
    for call in EXPORTER.calls:
        assert {ENDED[name] for name in call.names} == {call.loop}
    assert len({call.loop for call in EXPORTER.calls}) == 4
    assert processor.stats.pending == 0
    watch.assert_clean()
