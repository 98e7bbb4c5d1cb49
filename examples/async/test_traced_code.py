"""How to test traced async code: pytest-asyncio, an in-memory exporter, a stand-in LLM.

Run (from the repository root): python -m pytest examples/async/test_traced_code.py

- The telemetry is created in a plain (sync) fixture, outside any event loop, with
  ``is_batching_enabled=False``: each span reaches the ``InMemorySpanExporter`` as it ends,
  so a test can look at the spans as soon as the traced call returns.
- `StandInLLMServer` answers the real ``AsyncOpenAI`` client on 127.0.0.1, so the OpenAI
  auto-instrumentation produces its real spans, with no network and no key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import openai
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, StatusCode

from keywordsai_tracing import Instruments, KeywordsAITelemetry, get_client, task, workflow
from keywordsai_tracing.testing import StandInLLMServer, reply_text

# opentelemetry-instrumentation-openai 0.62 warns when imported (a pydantic class-based
# `config`); with `filterwarnings = error` that import would fail and OpenAI calls would
# not be traced.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Support for class-based `config` is deprecated:DeprecationWarning"
)

# -- the code under test ------------------------------------------------------------------------


class JokeService:
    """Traced methods: ``self`` is left out of the recorded input."""

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client

    @task(name="joke_creation")
    async def create_joke(self, topic: str) -> str:
        completion = await self.client.chat.completions.create(
            model="gpt-4.1-mini",
            messages=[{"role": "user", "content": f"A joke about {topic}"}],
        )
        return completion.choices[0].message.content or ""

    @workflow(name="joke_workflow")
    async def tell_jokes(self, topics: list[str], customer: str) -> list[str]:
        get_client().update_current_span(keywordsai_params={"customer_identifier": customer})
        return list(await asyncio.gather(*(self.create_joke(topic) for topic in topics)))


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A telemetry exporting every span, as it ends, to the in-memory exporter yielded."""
    exporter = InMemorySpanExporter()
    telemetry = KeywordsAITelemetry(
        app_name="tests",
        custom_exporter=exporter,
        is_batching_enabled=False,
        instruments={Instruments.OPENAI},  # only what the code under test uses: faster
    )
    yield exporter
    telemetry.shutdown()


@pytest_asyncio.fixture
async def llm() -> AsyncIterator[StandInLLMServer]:
    async with StandInLLMServer() as server:
        yield server


@pytest_asyncio.fixture
async def service(llm: StandInLLMServer) -> AsyncIterator[JokeService]:
    # max_retries=0: a failure the server injects reaches the test at once.
    async with openai.AsyncOpenAI(
        base_url=llm.openai_base_url, api_key="test", max_retries=0
    ) as client:
        yield JokeService(client)


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = named(exporter, name)
    return span


def context_of(span: ReadableSpan) -> SpanContext:
    context = span.get_span_context()
    assert context is not None
    return context


def is_child(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return span.parent is not None and span.parent.span_id == context_of(parent).span_id


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.usefixtures("spans")
async def test_returns_the_jokes(service: JokeService) -> None:
    assert await service.tell_jokes(["cats"], "alice") == [reply_text("A joke about cats")]


@pytest.mark.asyncio
async def test_workflow_task_and_llm_spans_nest(
    spans: InMemorySpanExporter, service: JokeService
) -> None:
    await service.tell_jokes(["cats"], customer="alice")

    root = only(spans, "joke_workflow.workflow")
    step = only(spans, "joke_creation.task")
    chat = only(spans, "openai.chat")
    assert root.parent is None
    assert is_child(step, root)
    assert is_child(chat, step)
    assert context_of(step).trace_id == context_of(chat).trace_id == context_of(root).trace_id


@pytest.mark.asyncio
async def test_span_attributes(spans: InMemorySpanExporter, service: JokeService) -> None:
    await service.tell_jokes(["cats"], customer="alice")

    root = only(spans, "joke_workflow.workflow").attributes or {}
    assert root["traceloop.span.kind"] == "workflow"
    assert root["keywordsai.customer_params.customer_identifier"] == "alice"
    assert json.loads(str(root["traceloop.entity.input"])) == {
        "args": [["cats"]],
        "kwargs": {"customer": "alice"},
    }

    step = only(spans, "joke_creation.task").attributes or {}
    assert json.loads(str(step["traceloop.entity.input"])) == {"args": ["cats"], "kwargs": {}}
    assert json.loads(str(step["traceloop.entity.output"])) == reply_text("A joke about cats")
    assert step["traceloop.workflow.name"] == "joke_workflow"

    chat = only(spans, "openai.chat").attributes or {}
    assert chat["gen_ai.request.model"] == "gpt-4.1-mini"
    assert chat["gen_ai.usage.input_tokens"] == 4  # the stand-in counts words
    assert chat["traceloop.entity.path"] == "joke_creation"


@pytest.mark.asyncio
async def test_gathered_tasks_each_own_their_llm_call(
    spans: InMemorySpanExporter, service: JokeService
) -> None:
    topics = ["cats", "dogs", "parrots"]
    await service.tell_jokes(topics, customer="bob")

    root = only(spans, "joke_workflow.workflow")
    steps = named(spans, "joke_creation.task")
    assert len(steps) == len(topics)
    for step in steps:
        assert is_child(step, root)
        [chat] = [span for span in named(spans, "openai.chat") if is_child(span, step)]
        topic = json.loads(str((step.attributes or {})["traceloop.entity.input"]))["args"][0]
        output = json.loads(str((chat.attributes or {})["gen_ai.output.messages"]))
        assert reply_text(f"A joke about {topic}") in json.dumps(output)


@pytest.mark.asyncio
async def test_a_failed_llm_call_marks_the_spans_as_errors(
    spans: InMemorySpanExporter, service: JokeService, llm: StandInLLMServer
) -> None:
    llm.fail_next(status=500)
    with pytest.raises(openai.InternalServerError):
        await service.tell_jokes(["cats"], customer="carol")

    for name in ("openai.chat", "joke_creation.task", "joke_workflow.workflow"):
        assert only(spans, name).status.status_code is StatusCode.ERROR, name
    events = only(spans, "joke_creation.task").events
    assert [event.name for event in events] == ["exception"]
