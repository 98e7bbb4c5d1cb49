"""Closing an abandoned LLM stream ends its span at once (our stream shims), without
waiting for garbage collection: checked with the collector disabled."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import task
from keywordsai_tracing.testing import StandInLLMServer
from tests.test_llm_instrumentation import IMPORT_WARNING, MESSAGES, llm_telemetry, named

__all__ = ["llm_telemetry"]  # fixture
pytestmark = [pytest.mark.filterwarnings(IMPORT_WARNING), pytest.mark.usefixtures("llm_telemetry")]
DELAY = 0.02


@pytest.fixture(autouse=True)
def _no_garbage_collection() -> Iterator[None]:
    gc.disable()
    yield
    gc.enable()


def _ended_llm_spans(exporter: InMemorySpanExporter, name: str) -> int:
    return len(named(exporter, name))


@pytest.mark.parametrize("how", ["close", "with"])
def test_sync_openai_stream_span_ends_when_closed(exporter: InMemorySpanExporter, how: str) -> None:
    seen: list[int] = []
    with (
        StandInLLMServer(chunk_delay=DELAY) as server,
        openai.OpenAI(base_url=server.openai_base_url, api_key="test") as client,
    ):

        @task(name="ask")
        def ask() -> None:
            stream: Any = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            if how == "with":
                with stream:
                    next(iter(stream))
            else:
                next(iter(stream))
                stream.close()
            seen.append(_ended_llm_spans(exporter, "openai.chat"))

        ask()
    assert seen == [1]


@pytest.mark.parametrize("how", ["close", "async_with"])
@pytest.mark.asyncio
async def test_async_openai_stream_span_ends_when_closed(
    exporter: InMemorySpanExporter, how: str
) -> None:
    seen: list[int] = []
    async with (
        StandInLLMServer(chunk_delay=DELAY) as server,
        openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test") as client,
    ):

        @task(name="ask")
        async def ask() -> None:
            stream: Any = await client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True
            )
            if how == "async_with":
                async with stream:
                    await anext(aiter(stream))
            else:
                await anext(aiter(stream))
                await stream.close()
            seen.append(_ended_llm_spans(exporter, "openai.chat"))

        await ask()
    assert seen == [1]


@pytest.mark.parametrize("how", ["close", "drop"])
def test_sync_anthropic_stream_span_ends_when_closed_or_dropped(
    exporter: InMemorySpanExporter, how: str
) -> None:
    with (
        StandInLLMServer(chunk_delay=DELAY) as server,
        anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test") as client,
    ):

        @task(name="ask")
        def ask() -> None:
            stream: Any = client.messages.create(
                model="claude", max_tokens=50, messages=MESSAGES, stream=True
            )
            next(iter(stream))
            if how == "close":
                stream.close()
            del stream  # reference counting finalises it, even with gc disabled

        ask()
    assert _ended_llm_spans(exporter, "anthropic.chat") == 1


@pytest.mark.asyncio
async def test_async_anthropic_stream_span_ends_when_closed(
    exporter: InMemorySpanExporter,
) -> None:
    seen: list[int] = []
    async with (
        StandInLLMServer(chunk_delay=DELAY) as server,
        anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key="test") as client,
    ):

        @task(name="ask")
        async def ask() -> None:
            stream: Any = await client.messages.create(
                model="claude", max_tokens=50, messages=MESSAGES, stream=True
            )
            await anext(aiter(stream))
            await stream.close()
            seen.append(_ended_llm_spans(exporter, "anthropic.chat"))

        await ask()
    assert seen == [1]
