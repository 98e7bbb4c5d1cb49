"""Context discipline: nothing leaks to callers or consumers; generators end cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import _attributes, get_client, task, workflow
from tests.conftest import parent_id, span_id, spans_by_name

pytestmark = pytest.mark.usefixtures("telemetry")


def _ours_visible() -> bool:
    return (
        trace.get_current_span().get_span_context().is_valid
        or context_api.get_value(_attributes.WORKFLOW_NAME_KEY) is not None
        or context_api.get_value(_attributes.ENTITY_PATH_KEY) is not None
    )


@pytest.fixture(autouse=True)
def _no_detach_failures(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.ERROR, logger="opentelemetry.context")
    yield
    assert "Failed to detach context" not in caplog.text


def test_nothing_of_a_workflow_visible_after_it_returns() -> None:
    @task
    def inner() -> None:
        assert _ours_visible()

    @workflow
    def flow() -> None:
        inner()

    before = context_api.get_current()
    flow()
    assert context_api.get_current() == before
    assert not _ours_visible()


def test_nothing_visible_after_a_raise() -> None:
    @workflow
    def flow() -> None:
        raise RuntimeError

    with pytest.raises(RuntimeError):
        flow()
    assert not _ours_visible()


@pytest.mark.asyncio
async def test_nothing_visible_in_the_awaiting_task_after_a_coroutine() -> None:
    @workflow
    async def flow() -> str | None:
        await asyncio.sleep(0)
        return get_client().get_current_trace_id()

    trace_id = await flow()
    assert trace_id is not None
    assert len(trace_id) == 32
    assert not _ours_visible()


def test_generator_span_current_only_while_its_body_runs(
    exporter: InMemorySpanExporter,
) -> None:
    seen_inside: list[bool] = []

    @task
    def produce() -> Iterator[int]:
        for i in range(3):
            seen_inside.append(trace.get_current_span().is_recording())
            yield i

    for _ in produce():
        assert not _ours_visible(), "span leaked to the consumer between items"
    assert seen_inside == [True, True, True]
    assert len(exporter.get_finished_spans()) == 1


@pytest.mark.asyncio
async def test_async_generator_span_current_only_in_its_body() -> None:
    inside: list[str | None] = []

    @task(name="agen")
    async def produce() -> AsyncIterator[int]:
        for i in range(3):
            await asyncio.sleep(0)
            inside.append(get_client().get_current_span_id())
            yield i

    async for _ in produce():
        assert not _ours_visible()
    assert len(set(inside)) == 1
    assert inside[0] is not None


def test_generator_closed_early_ends_span(exporter: InMemorySpanExporter) -> None:
    cleaned: list[bool] = []

    @task
    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            cleaned.append(trace.get_current_span().is_recording())

    gen = endless()
    assert next(gen) == 0
    gen.close()
    assert cleaned == [True], "the generator's finally runs with its span current"
    (span,) = exporter.get_finished_spans()
    assert span.end_time is not None
    assert not _ours_visible()


def test_abandoned_generator_span_ends_on_garbage_collection(
    exporter: InMemorySpanExporter,
) -> None:
    @task
    def endless() -> Iterator[int]:
        while True:
            yield 1

    gen = endless()
    next(gen)
    del gen
    gc.collect()
    assert len(exporter.get_finished_spans()) == 1
    assert not _ours_visible()


@pytest.mark.asyncio
async def test_async_generator_aclose_from_another_task(exporter: InMemorySpanExporter) -> None:
    @task
    async def stream() -> AsyncIterator[int]:
        while True:
            await asyncio.sleep(0)
            yield 1

    gen = stream()
    assert await gen.__anext__() == 1
    await asyncio.create_task(gen.aclose())  # type: ignore[arg-type]
    assert len(exporter.get_finished_spans()) == 1
    assert not _ours_visible()


@pytest.mark.asyncio
async def test_async_generator_closed_by_aclosing(exporter: InMemorySpanExporter) -> None:
    @task
    async def stream() -> AsyncIterator[int]:
        for i in range(100):
            yield i

    async with contextlib.aclosing(stream()) as gen:
        async for item in gen:
            if item == 2:
                break
    assert len(exporter.get_finished_spans()) == 1


@pytest.mark.asyncio
async def test_abandoned_async_generator_is_finalised_by_the_loop(
    exporter: InMemorySpanExporter,
) -> None:
    @task
    async def stream() -> AsyncIterator[int]:
        while True:
            yield 1

    gen = stream()
    await gen.__anext__()
    del gen
    gc.collect()
    for _ in range(5):  # the loop's asyncgen finaliser schedules aclose()
        await asyncio.sleep(0)
    assert len(exporter.get_finished_spans()) == 1


@pytest.mark.asyncio
async def test_asyncio_timeout_inside_async_generator_behaves_as_undecorated(
    exporter: InMemorySpanExporter,
) -> None:
    @task
    async def slow_items() -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(10)
        yield 2

    got: list[int] = []

    async def consume() -> None:
        async with asyncio.timeout(0.05):
            async for item in slow_items():
                got.append(item)

    with pytest.raises(TimeoutError):
        await consume()
    assert got == [1]
    assert len(exporter.get_finished_spans()) == 1
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_anyio_cancel_scope_around_async_generator(exporter: InMemorySpanExporter) -> None:
    @task
    async def slow_items() -> AsyncIterator[int]:
        yield 1
        await anyio.sleep(10)
        yield 2

    got: list[int] = []
    with anyio.move_on_after(0.05) as scope:
        async for item in slow_items():
            got.append(item)
    assert scope.cancelled_caught
    assert got == [1]
    assert len(exporter.get_finished_spans()) == 1


@pytest.mark.asyncio
async def test_async_generator_steps_in_the_callers_task() -> None:
    tasks: list[asyncio.Task[object] | None] = []

    @task
    async def whose() -> AsyncIterator[int]:
        for i in range(3):
            tasks.append(asyncio.current_task())
            yield i

    async for _ in whose():
        pass
    assert set(tasks) == {asyncio.current_task()}


@pytest.mark.asyncio
async def test_generator_parent_is_the_caller_at_first_step(
    exporter: InMemorySpanExporter,
) -> None:
    @task
    def items() -> Iterator[int]:
        yield 1

    @workflow
    async def flow() -> list[int]:
        return list(items())

    await flow()
    spans = spans_by_name(exporter)
    assert parent_id(spans["items.task"]) == span_id(spans["flow.workflow"])


def test_user_context_set_inside_a_task_ends_with_it() -> None:
    @task
    def sets_value() -> object:
        assert get_client().set_context_value("tenant", "acme")
        return get_client().get_context_value("tenant")

    assert sets_value() == "acme"
    assert get_client().get_context_value("tenant") is None


def test_generator_closed_from_another_thread(exporter: InMemorySpanExporter) -> None:
    @task
    def endless() -> Iterator[int]:
        while True:
            yield 1

    gen = endless()
    next(gen)
    closer = threading.Thread(target=gen.close)
    closer.start()
    closer.join()
    assert len(exporter.get_finished_spans()) == 1
    assert not _ours_visible()
