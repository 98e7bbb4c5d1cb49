"""The real Anthropic client, auto-instrumented through KeywordsAITelemetry, against the stand-in.

anthropic >= 2 also traces itself: each call gets an ``anthropic.messages.create`` span from
the SDK (scope ``com.anthropic.sdk.python``, global tracer provider) next to the
instrumentor's ``anthropic.chat`` span; both are children of the task.
"""

from __future__ import annotations

import json

import anthropic
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import task, workflow
from keywordsai_tracing.testing import StandInLLMServer
from tests.test_llm_instrumentation import (
    CONTENT_KEYS,
    ENTITY_PATH,
    IMPORT_WARNING,
    MESSAGES,
    REPLY,
    assert_chat_span,
    assert_in_entity,
    llm_child,
    llm_telemetry,
    named,
    one,
    server,
    sync_server,
)

__all__ = ["llm_telemetry", "server", "sync_server"]  # fixtures
pytestmark = pytest.mark.filterwarnings(IMPORT_WARNING)
SDK_SPAN = "anthropic.messages.create"


@pytest.mark.usefixtures("llm_telemetry")
def test_sync_message_span_is_child_of_task_with_content_usage_and_workflow(
    exporter: InMemorySpanExporter, sync_server: StandInLLMServer
) -> None:
    with anthropic.Anthropic(base_url=sync_server.anthropic_base_url, api_key="test") as client:

        @task(name="ask")
        def ask() -> str:
            message = client.messages.create(model="claude-x", max_tokens=50, messages=MESSAGES)
            block = message.content[0]
            return block.text if block.type == "text" else ""

        @workflow(name="chat")
        def chat() -> str:
            return ask()

        assert chat() == REPLY
    task_span = one(exporter, "ask.task")
    span = llm_child(exporter, "anthropic.chat", task_span)
    assert_chat_span(span, "claude-x")
    assert (span.attributes or {})["gen_ai.usage.total_tokens"] == 7
    assert_in_entity(span, "chat", "ask")
    sdk_span = llm_child(exporter, SDK_SPAN, task_span)
    assert (sdk_span.attributes or {})["gen_ai.usage.output_tokens"] == 5
    assert_in_entity(sdk_span, "chat", "ask")


@pytest.mark.asyncio
@pytest.mark.usefixtures("llm_telemetry")
async def test_async_message_span_is_child_of_task(
    exporter: InMemorySpanExporter, server: StandInLLMServer
) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=server.anthropic_base_url, api_key="test"
    ) as client:

        @task(name="ask")
        async def ask() -> str:
            message = await client.messages.create(model="c", max_tokens=50, messages=MESSAGES)
            block = message.content[0]
            return block.text if block.type == "text" else ""

        @workflow(name="chat")
        async def chat() -> str:
            return await ask()

        assert await chat() == REPLY
    span = llm_child(exporter, "anthropic.chat", one(exporter, "ask.task"))
    assert_chat_span(span, "c")
    assert_in_entity(span, "chat", "ask")


@pytest.mark.usefixtures("llm_telemetry")
def test_sync_stream_consumed_fully_ends_span_with_content(
    exporter: InMemorySpanExporter, sync_server: StandInLLMServer
) -> None:
    with anthropic.Anthropic(base_url=sync_server.anthropic_base_url, api_key="test") as client:

        @task(name="ask")
        def ask() -> list[str]:
            stream = client.messages.create(
                model="c", max_tokens=50, messages=MESSAGES, stream=True
            )
            types = [event.type for event in stream]
            assert named(exporter, "anthropic.chat"), "span ended when the stream was exhausted"
            return types

        @workflow(name="chat")
        def chat() -> list[str]:
            return ask()

        assert chat()[-1] == "message_stop"
    task_span = one(exporter, "ask.task")
    span = llm_child(exporter, "anthropic.chat", task_span)
    # output tokens not asserted: the instrumentor adds message_start's to message_delta's
    assert_chat_span(span, "c", output_tokens=None)
    assert (span.attributes or {})["gen_ai.is_streaming"] is True
    assert_in_entity(span, "chat", "ask")
    sdk_span = llm_child(exporter, SDK_SPAN, task_span)
    assert (sdk_span.attributes or {})["gen_ai.usage.output_tokens"] == 5


@pytest.mark.asyncio
@pytest.mark.usefixtures("llm_telemetry")
async def test_async_stream_helper_consumed_fully_ends_span_with_content(
    exporter: InMemorySpanExporter, server: StandInLLMServer
) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=server.anthropic_base_url, api_key="test"
    ) as client:

        @task(name="ask")
        async def ask() -> str:
            async with client.messages.stream(
                model="c", max_tokens=50, messages=MESSAGES
            ) as stream:
                text = "".join([piece async for piece in stream.text_stream])
            assert named(exporter, "anthropic.chat"), "span ended when the stream was exhausted"
            return text

        @workflow(name="chat")
        async def chat() -> str:
            return await ask()

        assert await chat() == REPLY
    span = llm_child(exporter, "anthropic.chat", one(exporter, "ask.task"))
    assert_chat_span(span, "c", output_tokens=None)
    assert_in_entity(span, "chat", "ask")


@pytest.mark.usefixtures("llm_telemetry")
def test_content_is_not_recorded_when_traceloop_trace_content_is_false(
    exporter: InMemorySpanExporter, sync_server: StandInLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACELOOP_TRACE_CONTENT", "false")
    with anthropic.Anthropic(base_url=sync_server.anthropic_base_url, api_key="test") as client:

        @task(name="ask")
        def ask() -> None:
            client.messages.create(model="c", max_tokens=50, messages=MESSAGES)
            for _ in client.messages.create(
                model="c", max_tokens=50, messages=MESSAGES, stream=True
            ):
                pass

        ask()
    spans = named(exporter, "anthropic.chat") + named(exporter, SDK_SPAN)
    assert len(spans) == 4
    for span in spans:
        attributes = span.attributes or {}
        assert not [key for key in attributes if key in CONTENT_KEYS or "prompt" in key]
        assert "hello there" not in json.dumps(dict(attributes))
        assert attributes["gen_ai.usage.input_tokens"] == 2
        assert attributes[ENTITY_PATH] == "ask"
