"""The real OpenAI client, auto-instrumented through KeywordsAITelemetry, against the stand-in.

Every LLM span must be a child of the calling ``@task``, carry the ``gen_ai.*`` attributes
(content only while content tracing is on), token usage, and the workflow name and entity
path our pipeline copies from the context. The helpers here are shared by the other
``test_llm_*`` files.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import openai
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from keywordsai_tracing import Instruments, KeywordsAITelemetry, task, workflow
from keywordsai_tracing.testing import StandInLLMServer, reply_text
from tests.conftest import parent_id, span_id

# Importing opentelemetry-instrumentation-openai 0.62 warns (a pydantic class-based `config` in
# its responses_wrappers); under filterwarnings=error that import fails and OPENAI is skipped.
IMPORT_WARNING = "ignore:Support for class-based `config` is deprecated:DeprecationWarning"
pytestmark = pytest.mark.filterwarnings(IMPORT_WARNING)

MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]
REPLY = reply_text("hello there")
WORKFLOW_NAME = "traceloop.workflow.name"
ENTITY_PATH = "traceloop.entity.path"
CONTENT_KEYS = ("gen_ai.input.messages", "gen_ai.output.messages")


# -- shared helpers and fixtures -------------------------------------------------------------


@pytest.fixture
def llm_telemetry(exporter: InMemorySpanExporter) -> Iterator[KeywordsAITelemetry]:
    """Telemetry exporting inline to ``exporter`` with the OpenAI and Anthropic instrumentors."""
    instance = KeywordsAITelemetry(
        app_name="tests",
        custom_exporter=exporter,
        is_batching_enabled=False,
        instruments={Instruments.OPENAI, Instruments.ANTHROPIC},
    )
    yield instance
    instance.shutdown()


@pytest.fixture
def sync_server() -> Iterator[StandInLLMServer]:
    with StandInLLMServer() as server:
        yield server


@pytest_asyncio.fixture
async def server() -> AsyncIterator[StandInLLMServer]:
    async with StandInLLMServer() as running:
        yield running


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    spans = named(exporter, name)
    assert len(spans) == 1, [s.name for s in exporter.get_finished_spans()]
    return spans[0]


def llm_child(exporter: InMemorySpanExporter, name: str, parent: ReadableSpan) -> ReadableSpan:
    """The span ``name`` whose parent is ``parent`` (exactly one)."""
    children = [s for s in named(exporter, name) if parent_id(s) == span_id(parent)]
    assert len(children) == 1, [(s.name, parent_id(s)) for s in exporter.get_finished_spans()]
    return children[0]


def assert_in_entity(span: ReadableSpan, workflow_name: str, path: str) -> None:
    attributes = span.attributes or {}
    assert attributes[WORKFLOW_NAME] == workflow_name
    assert attributes[ENTITY_PATH] == path


def output_text(span: ReadableSpan) -> str:
    """The assistant text recorded in ``gen_ai.output.messages``."""
    messages = json.loads(str((span.attributes or {})["gen_ai.output.messages"]))
    return "".join(part.get("content", "") for m in messages for part in m["parts"])


def input_text(span: ReadableSpan) -> str:
    messages = json.loads(str((span.attributes or {})["gen_ai.input.messages"]))
    return "".join(part.get("content", "") for m in messages for part in m["parts"])


def assert_chat_span(span: ReadableSpan, model: str, *, output_tokens: int | None = 5) -> None:
    """Model, prompt and completion content and token usage of a completed chat call."""
    attributes = span.attributes or {}
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == model
    assert attributes["gen_ai.response.model"] == model
    assert input_text(span) == "hello there"
    assert output_text(span) == REPLY
    assert attributes["gen_ai.usage.input_tokens"] == 2
    if output_tokens is not None:
        assert attributes["gen_ai.usage.output_tokens"] == output_tokens
    assert span.status.status_code is not StatusCode.ERROR


# -- OpenAI ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("llm_telemetry")
def test_sync_chat_span_is_child_of_task_with_content_usage_and_workflow(
    exporter: InMemorySpanExporter, sync_server: StandInLLMServer
) -> None:
    with openai.OpenAI(base_url=sync_server.openai_base_url, api_key="test") as client:

        @task(name="ask")
        def ask() -> str | None:
            completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            return completion.choices[0].message.content

        @workflow(name="chat")
        def chat() -> str | None:
            return ask()

        assert chat() == REPLY
    span = llm_child(exporter, "openai.chat", one(exporter, "ask.task"))
    assert_chat_span(span, "gpt-4o-mini")
    assert (span.attributes or {})["gen_ai.usage.total_tokens"] == 7
    assert (span.attributes or {})["gen_ai.is_streaming"] is False
    assert_in_entity(span, "chat", "ask")


@pytest.mark.asyncio
@pytest.mark.usefixtures("llm_telemetry")
async def test_async_chat_span_is_child_of_task(
    exporter: InMemorySpanExporter, server: StandInLLMServer
) -> None:
    async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test") as client:

        @task(name="ask")
        async def ask() -> str | None:
            completion = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            return completion.choices[0].message.content

        @workflow(name="chat")
        async def chat() -> str | None:
            return await ask()

        assert await chat() == REPLY
    span = llm_child(exporter, "openai.chat", one(exporter, "ask.task"))
    assert_chat_span(span, "gpt-4o")
    assert_in_entity(span, "chat", "ask")


@pytest.mark.usefixtures("llm_telemetry")
def test_sync_stream_consumed_fully_ends_span_with_content_and_usage(
    exporter: InMemorySpanExporter, sync_server: StandInLLMServer
) -> None:
    with openai.OpenAI(base_url=sync_server.openai_base_url, api_key="test") as client:

        @task(name="ask")
        def ask() -> str:
            stream = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert named(exporter, "openai.chat"), "span ended when the stream was exhausted"
            return text

        @workflow(name="chat")
        def chat() -> str:
            return ask()

        assert chat() == REPLY
    span = llm_child(exporter, "openai.chat", one(exporter, "ask.task"))
    assert_chat_span(span, "gpt-4o-mini")
    assert (span.attributes or {})["gen_ai.is_streaming"] is True
    assert_in_entity(span, "chat", "ask")


@pytest.mark.asyncio
@pytest.mark.usefixtures("llm_telemetry")
async def test_async_stream_consumed_fully_ends_span_with_content_and_usage(
    exporter: InMemorySpanExporter, server: StandInLLMServer
) -> None:
    async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test") as client:

        @task(name="ask")
        async def ask() -> str:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert named(exporter, "openai.chat"), "span ended when the stream was exhausted"
            return text

        @workflow(name="chat")
        async def chat() -> str:
            return await ask()

        assert await chat() == REPLY
    span = llm_child(exporter, "openai.chat", one(exporter, "ask.task"))
    assert_chat_span(span, "gpt-4o-mini")
    assert_in_entity(span, "chat", "ask")


@pytest.mark.asyncio
@pytest.mark.usefixtures("llm_telemetry")
async def test_embeddings_span_is_child_of_task_with_usage(
    exporter: InMemorySpanExporter, server: StandInLLMServer
) -> None:
    async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test") as client:

        @task(name="embed")
        async def embed() -> int:
            response = await client.embeddings.create(model="text-embedding-3-small", input="a b")
            return len(response.data[0].embedding)

        @workflow(name="index")
        async def index() -> int:
            return await embed()

        assert await index() == 8
    span = llm_child(exporter, "openai.embeddings", one(exporter, "embed.task"))
    attributes = span.attributes or {}
    assert attributes["gen_ai.operation.name"] == "embeddings"
    assert attributes["gen_ai.request.model"] == "text-embedding-3-small"
    assert attributes["gen_ai.usage.input_tokens"] == 2
    assert input_text(span) == "a b"
    assert_in_entity(span, "index", "embed")


@pytest.mark.usefixtures("llm_telemetry")
def test_sync_embeddings_span_is_child_of_task(
    exporter: InMemorySpanExporter, sync_server: StandInLLMServer
) -> None:
    with openai.OpenAI(base_url=sync_server.openai_base_url, api_key="test") as client:

        @task(name="embed")
        def embed() -> int:
            return len(client.embeddings.create(model="e", input=["a", "b c"]).data)

        assert embed() == 2
    span = llm_child(exporter, "openai.embeddings", one(exporter, "embed.task"))
    assert (span.attributes or {})["gen_ai.usage.input_tokens"] == 3
    assert (span.attributes or {})[ENTITY_PATH] == "embed"


@pytest.mark.usefixtures("llm_telemetry")
def test_failed_call_span_records_the_error_under_the_task(
    exporter: InMemorySpanExporter, sync_server: StandInLLMServer
) -> None:
    sync_server.fail_next(1, status=500)
    with openai.OpenAI(
        base_url=sync_server.openai_base_url, api_key="test", max_retries=0
    ) as client:

        @task(name="ask")
        def ask() -> None:
            client.chat.completions.create(model="m", messages=MESSAGES)

        with pytest.raises(openai.InternalServerError):
            ask()
    span = llm_child(exporter, "openai.chat", one(exporter, "ask.task"))
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "InternalServerError"


@pytest.mark.asyncio
@pytest.mark.usefixtures("llm_telemetry")
async def test_content_is_not_recorded_when_traceloop_trace_content_is_false(
    exporter: InMemorySpanExporter, server: StandInLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instrumentors read ``TRACELOOP_TRACE_CONTENT`` on every call."""
    monkeypatch.setenv("TRACELOOP_TRACE_CONTENT", "false")
    async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test") as client:

        @task(name="ask")
        async def ask() -> None:
            await client.chat.completions.create(model="m", messages=MESSAGES)
            stream = await client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            async for _ in stream:
                pass
            await client.embeddings.create(model="e", input="secret words")

        await ask()
    spans = named(exporter, "openai.chat") + named(exporter, "openai.embeddings")
    assert len(spans) == 3
    for span in spans:
        attributes = span.attributes or {}
        assert not [key for key in attributes if key in CONTENT_KEYS or "prompt" in key], span.name
        assert "hello there" not in json.dumps(dict(attributes))
        assert attributes["gen_ai.usage.input_tokens"] >= 2  # metadata is still there
        assert attributes[ENTITY_PATH] == "ask"


# -- concurrency -----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.usefixtures("llm_telemetry")
async def test_gather_parents_each_call_to_its_own_task(
    exporter: InMemorySpanExporter, server: StandInLLMServer
) -> None:
    async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test") as client:

        @task(name="ask")
        async def ask(question: str) -> str | None:
            completion = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": question}]
            )
            return completion.choices[0].message.content

        @workflow(name="fan_out")
        async def fan_out() -> list[str | None]:
            return list(await asyncio.gather(*(ask(f"question {i}") for i in range(5))))

        assert await fan_out() == [reply_text(f"question {i}") for i in range(5)]
    _assert_each_call_under_its_own_task(exporter, "fan_out", 5)


@pytest.mark.asyncio
@pytest.mark.usefixtures("llm_telemetry")
async def test_anyio_task_group_parents_each_streamed_call_to_its_own_task(
    exporter: InMemorySpanExporter, server: StandInLLMServer
) -> None:
    answers: dict[str, str] = {}
    async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test") as client:

        @task(name="ask")
        async def ask(question: str) -> None:
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": question}], stream=True
            )
            answers[question] = "".join(
                [c.choices[0].delta.content or "" async for c in stream if c.choices]
            )

        @workflow(name="fan_out")
        async def fan_out() -> None:
            async with anyio.create_task_group() as group:
                for i in range(5):
                    group.start_soon(ask, f"question {i}")

        await fan_out()
    assert answers == {f"question {i}": reply_text(f"question {i}") for i in range(5)}
    _assert_each_call_under_its_own_task(exporter, "fan_out", 5)


def _assert_each_call_under_its_own_task(
    exporter: InMemorySpanExporter, workflow_name: str, count: int
) -> None:
    """Each ``ask.task`` has one ``openai.chat`` child, about the task's own question."""
    tasks = named(exporter, "ask.task")
    assert len(tasks) == count
    questions = set()
    for task_span in tasks:
        question = json.loads(str((task_span.attributes or {})["traceloop.entity.input"]))
        span = llm_child(exporter, "openai.chat", task_span)
        assert input_text(span) == question["args"][0]
        assert output_text(span) == reply_text(question["args"][0])
        assert_in_entity(span, workflow_name, "ask")
        questions.add(question["args"][0])
    assert len(questions) == count


@pytest.mark.parametrize("via_env", [False, True])
def test_trace_content_off_reaches_the_llm_instrumentation(
    exporter: InMemorySpanExporter,
    sync_server: StandInLLMServer,
    monkeypatch: pytest.MonkeyPatch,
    via_env: bool,
) -> None:
    monkeypatch.delenv("TRACELOOP_TRACE_CONTENT", raising=False)
    if via_env:
        monkeypatch.setenv("KEYWORDSAI_TRACE_CONTENT", "false")
    telemetry = KeywordsAITelemetry(
        custom_exporter=exporter,
        is_batching_enabled=False,
        instruments={Instruments.OPENAI},
        trace_content=None if via_env else False,
    )
    with openai.OpenAI(base_url=sync_server.openai_base_url, api_key="test") as client:

        @task(name="ask")
        def ask() -> None:
            client.chat.completions.create(model="m", messages=MESSAGES)

        ask()
    attributes = one(exporter, "openai.chat").attributes or {}
    assert not [key for key in attributes if key in CONTENT_KEYS]
    assert "hello there" not in json.dumps(dict(attributes))
    assert attributes["gen_ai.usage.input_tokens"] == 2
    telemetry.shutdown()
    assert "TRACELOOP_TRACE_CONTENT" not in os.environ  # restored


def test_the_openai_instrumentation_sets_every_response_attribute_without_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The stand-in answers with the usage detail objects the real API sends; without
    them the instrumentation raised inside every call (logged at DEBUG) and left the
    response attributes unset."""
    exporter = InMemorySpanExporter()
    telemetry = KeywordsAITelemetry(
        custom_exporter=exporter, instruments={Instruments.OPENAI}, is_batching_enabled=False
    )
    try:
        with StandInLLMServer() as llm, caplog.at_level("DEBUG", "opentelemetry"):
            client = openai.OpenAI(base_url=llm.openai_base_url, api_key="sk-test")
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        assert not [r for r in caplog.records if "failed to trace" in r.getMessage()]
        (span,) = [s for s in exporter.get_finished_spans() if s.name == "openai.chat"]
        attributes = span.attributes or {}
        assert attributes["gen_ai.usage.input_tokens"] == 1
        assert attributes["gen_ai.response.model"] == "gpt-4o-mini"
    finally:
        telemetry.shutdown()
