"""Streams abandoned halfway: break, then close / aclose / context-manager exit / drop.

The stand-in sends slowly, so the client always leaves while the server is still sending;
the server then counts a disconnected stream, proving the connection was released. The
OpenAI span ends with the partial completion at the latest when the stream is collected.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import task, workflow
from keywordsai_tracing.testing import StandInLLMServer
from tests.test_llm_instrumentation import (
    IMPORT_WARNING,
    MESSAGES,
    REPLY,
    assert_in_entity,
    llm_child,
    llm_telemetry,
    named,
    one,
    output_text,
)

__all__ = ["llm_telemetry"]  # fixture
pytestmark = [pytest.mark.filterwarnings(IMPORT_WARNING), pytest.mark.usefixtures("llm_telemetry")]
HANG = 20.0  # generous bound: only catches hangs
DELAY = 0.02


def _wait_disconnected(server: StandInLLMServer) -> None:
    deadline = time.monotonic() + HANG
    while server.disconnected_streams == 0:
        assert time.monotonic() < deadline, "the abandoned stream's connection stayed open"
        time.sleep(0.01)


async def _await_disconnected(server: StandInLLMServer) -> None:
    async with asyncio.timeout(HANG):
        while server.disconnected_streams == 0:  # noqa: ASYNC110 (a counter, no event)
            await asyncio.sleep(0.01)


def _assert_partial_openai_span(exporter: InMemorySpanExporter) -> None:
    span = llm_child(exporter, "openai.chat", one(exporter, "ask.task"))
    assert REPLY.startswith(output_text(span))
    assert (span.attributes or {})["gen_ai.request.model"] == "m"
    assert_in_entity(span, "chat", "ask")


def _abandon(stream: Any, how: str) -> None:
    """Read one chunk, then leave ``stream`` as ``how`` says: ``close`` it, leave a
    ``with`` block around it, or ``drop`` it (to the garbage collector)."""
    if how == "with":
        with stream:
            for _ in stream:
                break
        return
    for _ in stream:
        break
    if how == "close":
        stream.close()


async def _aabandon(stream: Any, how: str) -> None:
    """`_abandon` for async streams: ``close``, ``aclose``, ``async_with`` or ``drop``."""
    if how == "async_with":
        async with stream:
            async for _ in stream:
                break
        return
    async for _ in stream:
        break
    if how == "close":
        await stream.close()
    elif how == "aclose":
        await stream.aclose()


@pytest.mark.parametrize("how", ["close", "with", "drop"])
def test_sync_openai_stream_abandoned_ends_span_and_releases_connection(
    exporter: InMemorySpanExporter, how: str
) -> None:
    with (
        StandInLLMServer(chunk_delay=DELAY) as server,
        openai.OpenAI(base_url=server.openai_base_url, api_key="test") as client,
    ):

        @task(name="ask")
        def ask() -> None:
            stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            _abandon(stream, how)
            if how == "with":
                assert named(exporter, "openai.chat"), "span ended on leaving the with block"

        @workflow(name="chat")
        def chat() -> None:
            ask()

        chat()
        gc.collect()
        _wait_disconnected(server)
    _assert_partial_openai_span(exporter)
    assert server.completed_streams == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["close", "aclose", "async_with", "drop"])
async def test_async_openai_stream_abandoned_ends_span_and_releases_connection(
    exporter: InMemorySpanExporter, how: str
) -> None:
    async with (
        StandInLLMServer(chunk_delay=DELAY) as server,
        openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test") as client,
    ):

        @task(name="ask")
        async def ask() -> None:
            stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            await _aabandon(stream, how)

        @workflow(name="chat")
        async def chat() -> None:
            await ask()

        await chat()
        gc.collect()
        await _await_disconnected(server)
    _assert_partial_openai_span(exporter)
    assert server.completed_streams == 0


def _assert_anthropic_abandoned(exporter: InMemorySpanExporter) -> None:
    """The task ends normally; the SDK's own call span ends with the stream.

    The instrumentor's ``anthropic.chat`` span is not asserted: it is never ended for an
    abandoned stream (no close/__exit__/__del__ handling in its stream proxy).
    """
    task_span = one(exporter, "ask.task")
    assert task_span.status.is_ok
    sdk_span = llm_child(exporter, "anthropic.messages.create", task_span)
    assert_in_entity(sdk_span, "chat", "ask")


@pytest.mark.parametrize("how", ["close", "with", "drop"])
def test_sync_anthropic_stream_abandoned_releases_connection(
    exporter: InMemorySpanExporter, how: str
) -> None:
    with (
        StandInLLMServer(chunk_delay=DELAY) as server,
        anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test") as client,
    ):

        @task(name="ask")
        def ask() -> None:
            stream: Any = client.messages.create(
                model="c", max_tokens=50, messages=MESSAGES, stream=True
            )
            _abandon(stream, how)

        @workflow(name="chat")
        def chat() -> None:
            ask()

        chat()
        gc.collect()
        _wait_disconnected(server)
    _assert_anthropic_abandoned(exporter)
    assert server.completed_streams == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["close", "async_with", "drop"])
async def test_async_anthropic_stream_abandoned_releases_connection(
    exporter: InMemorySpanExporter, how: str
) -> None:
    async with (
        StandInLLMServer(chunk_delay=DELAY) as server,
        anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key="test") as client,
    ):

        @task(name="ask")
        async def ask() -> None:
            stream: Any = await client.messages.create(
                model="c", max_tokens=50, messages=MESSAGES, stream=True
            )
            await _aabandon(stream, how)

        @workflow(name="chat")
        async def chat() -> None:
            await ask()

        await chat()
        gc.collect()
        await _await_disconnected(server)
    _assert_anthropic_abandoned(exporter)
    assert server.completed_streams == 0
