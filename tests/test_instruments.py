"""Instrumentations beyond the LLM clients: HTTP clients async apps use, and asyncio.

Telemetry is created outside the event loop, as applications do at start-up:
instrumenting imports modules and reads package metadata, which is blocking I/O.
"""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import Instruments, KeywordsAITelemetry, task, workflow
from tests.conftest import parent_id, span_id
from tests.otlp_receiver import OTLPReceiver


def _telemetry(exporter: InMemorySpanExporter, *members: Instruments) -> KeywordsAITelemetry:
    return KeywordsAITelemetry(
        custom_exporter=exporter, is_batching_enabled=False, instruments=set(members)
    )


def test_httpx_calls_are_children_of_the_task(
    exporter: InMemorySpanExporter, threaded_otlp_receiver: OTLPReceiver
) -> None:
    _telemetry(exporter, Instruments.HTTPX)
    url = threaded_otlp_receiver.url

    @task(name="fetch")
    async def fetch() -> int:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                url, content=b"{}", headers={"Content-Type": "application/json"}
            )
            return response.status_code

    @workflow(name="flow")
    async def flow() -> int:
        return await fetch()

    assert asyncio.run(flow()) == 200
    spans = {s.name: s for s in exporter.get_finished_spans()}
    http = next(s for name, s in spans.items() if name.startswith("POST"))
    assert parent_id(http) == span_id(spans["fetch.task"])
    assert (http.attributes or {})["traceloop.entity.path"] == "fetch"
    assert (http.attributes or {})["traceloop.workflow.name"] == "flow"


def test_aiohttp_client_calls_are_traced_but_our_export_is_not(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    url = threaded_otlp_receiver.url
    telemetry = KeywordsAITelemetry(
        api_key="k", base_url=url, instruments={Instruments.AIOHTTP_CLIENT}
    )

    @task(name="call")
    async def call() -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=b"{}", headers={"Content-Type": "application/json"}) as reply,
        ):
            return reply.status

    async def main() -> None:
        for _ in range(3):
            assert await call() == 200
            assert await telemetry.aflush(timeout=10)

    asyncio.run(main())
    names = sorted(s.name for s in threaded_otlp_receiver.spans)
    # The app's three requests are traced; the exporter's own POSTs never are.
    assert names == ["POST", "POST", "POST", "call.task", "call.task", "call.task"]
    telemetry.shutdown()


def test_asyncio_instrumentation_is_opt_in_and_traces_named_coroutines(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.instrumentation.asyncio import AsyncioInstrumentor

    monkeypatch.setenv("OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE", "slow_step")
    KeywordsAITelemetry(custom_exporter=InMemorySpanExporter())  # instruments=None
    assert not AsyncioInstrumentor().is_instrumented_by_opentelemetry  # opt-in only
    telemetry = _telemetry(exporter, Instruments.ASYNCIO)  # replaces (shuts down) the last
    assert AsyncioInstrumentor().is_instrumented_by_opentelemetry

    async def slow_step() -> int:
        await asyncio.sleep(0)
        return 1

    @workflow(name="flow")
    async def flow() -> int:
        return sum(await asyncio.gather(slow_step(), slow_step()))

    assert asyncio.run(flow()) == 2
    spans = exporter.get_finished_spans()
    root = next(s for s in spans if s.name == "flow.workflow")
    traced = [s for s in spans if "slow_step" in s.name]
    assert len(traced) == 2
    assert all(parent_id(s) == span_id(root) for s in traced)
    telemetry.shutdown()
    assert not AsyncioInstrumentor().is_instrumented_by_opentelemetry
