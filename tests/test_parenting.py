"""Tasks started through every concurrency primitive are children of their workflow."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable

import anyio
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import Instruments, KeywordsAITelemetry, task, workflow
from tests.conftest import parent_id, span_id, spans_by_name

pytestmark = pytest.mark.usefixtures("telemetry")


@task(name="sync_child")
def sync_child(x: int) -> int:
    return x + 1


@task(name="async_child")
async def async_child(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


def _assert_children(exporter: InMemorySpanExporter, child: str, count: int) -> None:
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name == "flow.workflow"]
    children = [s for s in spans if s.name == child]
    assert len(children) == count
    for span in children:
        assert parent_id(span) == span_id(root)
        assert span.context is not None
        assert root.context is not None
        assert span.context.trace_id == root.context.trace_id
        assert (span.attributes or {})["traceloop.workflow.name"] == "flow"


async def _run(body: Callable[[], Awaitable[None]]) -> None:
    @workflow(name="flow")
    async def flow() -> None:
        await body()

    await flow()


@pytest.mark.asyncio
async def test_gather(exporter: InMemorySpanExporter) -> None:
    async def body() -> None:
        await asyncio.gather(*(async_child(i) for i in range(3)))

    await _run(body)
    _assert_children(exporter, "async_child.task", 3)


@pytest.mark.asyncio
async def test_create_task(exporter: InMemorySpanExporter) -> None:
    async def body() -> None:
        tasks = [asyncio.create_task(async_child(i)) for i in range(2)]
        await asyncio.wait(tasks)

    await _run(body)
    _assert_children(exporter, "async_child.task", 2)


@pytest.mark.asyncio
async def test_task_group(exporter: InMemorySpanExporter) -> None:
    async def body() -> None:
        async with asyncio.TaskGroup() as group:
            for i in range(3):
                group.create_task(async_child(i))

    await _run(body)
    _assert_children(exporter, "async_child.task", 3)


@pytest.mark.anyio
async def test_anyio_task_group(exporter: InMemorySpanExporter) -> None:
    async def body() -> None:
        async with anyio.create_task_group() as group:
            for i in range(3):
                group.start_soon(async_child, i)

    await _run(body)
    _assert_children(exporter, "async_child.task", 3)


@pytest.mark.anyio
async def test_anyio_to_thread(exporter: InMemorySpanExporter) -> None:
    async def body() -> None:
        await anyio.to_thread.run_sync(sync_child, 1)

    await _run(body)
    _assert_children(exporter, "sync_child.task", 1)


@pytest.mark.asyncio
async def test_asyncio_to_thread(exporter: InMemorySpanExporter) -> None:
    async def body() -> None:
        await asyncio.gather(*(asyncio.to_thread(sync_child, i) for i in range(3)))

    await _run(body)
    _assert_children(exporter, "sync_child.task", 3)


@pytest.mark.asyncio
async def test_run_in_executor_default_pool(exporter: InMemorySpanExporter) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sync_child, 1)

    await _run(body)
    _assert_children(exporter, "sync_child.task", 1)


@pytest.mark.asyncio
async def test_run_in_executor_own_pool(exporter: InMemorySpanExporter) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(2)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, sync_child, i) for i in range(2)))

    await _run(body)
    await asyncio.to_thread(pool.shutdown)
    _assert_children(exporter, "sync_child.task", 2)


def test_threading_thread(exporter: InMemorySpanExporter) -> None:
    @workflow(name="flow")
    def flow() -> None:
        threads = [threading.Thread(target=sync_child, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    flow()
    _assert_children(exporter, "sync_child.task", 3)


def test_thread_pool_executor(exporter: InMemorySpanExporter) -> None:
    @workflow(name="flow")
    def flow() -> None:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            list(pool.map(sync_child, range(3)))

    flow()
    _assert_children(exporter, "sync_child.task", 3)


def test_threads_lose_parent_when_threading_is_blocked(telemetry: KeywordsAITelemetry) -> None:
    blocked = InMemorySpanExporter()
    KeywordsAITelemetry(
        custom_exporter=blocked,
        is_batching_enabled=False,
        instruments=set(),
        block_instruments={Instruments.THREADING},
    )

    @workflow(name="flow")
    def flow() -> None:
        thread = threading.Thread(target=sync_child, args=(1,))
        thread.start()
        thread.join()

    flow()
    spans = spans_by_name(blocked)
    assert parent_id(spans["sync_child.task"]) is None


@pytest.mark.asyncio
async def test_concurrent_workflows_do_not_mix(exporter: InMemorySpanExporter) -> None:
    @workflow
    async def one(i: int) -> None:
        await asyncio.sleep(0)
        await async_child(i)

    await asyncio.gather(*(one(i) for i in range(5)))
    spans = exporter.get_finished_spans()
    roots = {span_id(s): s for s in spans if s.name == "one.workflow"}
    children = [s for s in spans if s.name == "async_child.task"]
    assert len(roots) == 5
    assert len(children) == 5
    assert {parent_id(c) for c in children} == set(roots)
