"""Testing traced code with the keywordsai_tracing pytest plugin.

Run (from the repository root):
python -m pytest examples/async/test_with_plugin.py -p keywordsai_tracing.testing.pytest_plugin
(``-p`` is only needed where the package's ``pytest11`` entry point is not installed).

The plugin's fixtures, none of which does anything unless a test asks for it:

- ``keywordsai_spans``: every span the test produced, in memory, as soon as the awaited
  call returns; ``find``/``one``/``children``/``tree``/``assert_tree``/``clear``.
- ``keywordsai_deterministic``: the same, with ids 1, 2, ... and a fake clock (1 s, 2 s,
  ...), for comparing whole spans with a snapshot.
- ``keywordsai_telemetry_options``: override it to configure the telemetry (here: only
  the OpenAI instrumentation, which is all this code uses).
- ``keywordsai_no_leaks``: fails a test whose code leaves a span or KeywordsAI context
  attached.
- ``stand_in_llm``: a local OpenAI/Anthropic stand-in server (no network, no keys).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan

from keywordsai_tracing import Instruments, get_client, task, workflow
from keywordsai_tracing.testing import StandInLLMServer, reply_text
from keywordsai_tracing.testing.pytest_plugin import CapturedSpans

pytestmark = [
    # Every test here fails if the traced code leaves its context behind.
    pytest.mark.usefixtures("keywordsai_no_leaks"),
    # opentelemetry-instrumentation-openai 0.62 warns when imported; with
    # `filterwarnings = error` that import would fail and OpenAI calls go untraced.
    pytest.mark.filterwarnings(
        "ignore:Support for class-based `config` is deprecated:DeprecationWarning"
    ),
]

# -- the code under test ------------------------------------------------------------------------


@task(name="summarise")
async def summarise(client: openai.AsyncOpenAI, text: str) -> str:
    completion = await client.chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": f"Summarise: {text}"}]
    )
    return completion.choices[0].message.content or ""


@task(name="word_count")
def word_count(text: str) -> int:
    return len(text.split())


@workflow(name="digest")
async def digest(client: openai.AsyncOpenAI, texts: list[str], customer: str) -> dict[str, Any]:
    get_client().update_current_span(keywordsai_params={"customer_identifier": customer})
    summaries = await asyncio.gather(*(summarise(client, text) for text in texts))
    return {"summaries": list(summaries), "words": sum(word_count(s) for s in summaries)}


@workflow(name="sync_digest")
def sync_digest(client: openai.OpenAI, text: str) -> str:
    completion = client.chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": text}]
    )
    return completion.choices[0].message.content or ""


# -- configuration ------------------------------------------------------------------------------


@pytest.fixture
def keywordsai_telemetry_options() -> dict[str, Any]:
    """Only the instrumentation this code needs: faster, and no HTTP-level spans."""
    return {"app_name": "digest-tests", "instruments": {Instruments.OPENAI}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def async_client(llm: StandInLLMServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=llm.openai_base_url, api_key="test", max_retries=0)


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_digest_spans_form_the_expected_tree(
    keywordsai_spans: CapturedSpans, stand_in_llm: StandInLLMServer
) -> None:
    async with async_client(stand_in_llm) as client:
        result = await digest(client, ["a long text", "another text"], customer="alice")

    assert result["summaries"] == [
        reply_text("Summarise: a long text"),
        reply_text("Summarise: another text"),
    ]
    # No flush, no sleep: the spans were exported as they ended.
    keywordsai_spans.assert_tree(
        """
        digest.workflow
          summarise.task
            openai.chat
          summarise.task
            openai.chat
          word_count.task
          word_count.task
        """
    )
    root = keywordsai_spans.one("digest.workflow")
    attributes = root.attributes or {}
    assert attributes["keywordsai.customer_params.customer_identifier"] == "alice"
    for step in keywordsai_spans.find("summarise.task"):
        [chat] = keywordsai_spans.children(step)
        assert (chat.attributes or {})["gen_ai.request.model"] == "gpt-4.1-mini"
    assert len(keywordsai_spans.find(kind="llm")) == 2


@pytest.mark.asyncio
async def test_a_failed_llm_call_marks_the_workflow_as_failed(
    keywordsai_spans: CapturedSpans, stand_in_llm: StandInLLMServer
) -> None:
    stand_in_llm.fail_next(status=500)
    async with async_client(stand_in_llm) as client:
        with pytest.raises(openai.InternalServerError):
            await digest(client, ["text"], customer="bob")

    root = keywordsai_spans.one("digest.workflow")
    assert root.status.status_code.name == "ERROR"
    assert [event.name for event in keywordsai_spans.one("summarise.task").events] == ["exception"]


@pytest.mark.anyio
async def test_under_anyio_and_cleared_between_calls(
    keywordsai_spans: CapturedSpans, stand_in_llm: StandInLLMServer
) -> None:
    async with async_client(stand_in_llm) as client:
        await digest(client, ["one"], customer="carol")
        keywordsai_spans.clear()
        await digest(client, ["two"], customer="carol")

    [root] = keywordsai_spans.roots()
    assert json.loads(str((root.attributes or {})["traceloop.entity.input"]))["args"][1] == ["two"]


def test_sync_client_from_a_sync_test(
    keywordsai_spans: CapturedSpans, stand_in_llm: StandInLLMServer
) -> None:
    with openai.OpenAI(base_url=stand_in_llm.openai_base_url, api_key="test") as client:
        assert sync_digest(client, "hello") == reply_text("hello")

    keywordsai_spans.assert_tree(
        """
        sync_digest.workflow
          openai.chat
        """
    )


@pytest.mark.asyncio
async def test_deterministic_snapshot(
    keywordsai_deterministic: CapturedSpans, stand_in_llm: StandInLLMServer
) -> None:
    async with async_client(stand_in_llm) as client:
        await digest(client, ["snapshot"], customer="dora")

    def parent(span: ReadableSpan) -> int | None:
        return span.parent.span_id if span.parent is not None else None

    def seconds(timestamp: int | None) -> int:
        assert timestamp is not None
        return timestamp // 1_000_000_000

    # (name, trace id, span id, parent id, start s, end s) in the order the spans ended.
    seen = [
        (
            span.name,
            span.context.trace_id,
            span.context.span_id,
            parent(span),
            seconds(span.start_time),
            seconds(span.end_time),
        )
        for span in keywordsai_deterministic.spans
    ]
    assert seen == [
        ("openai.chat", 1, 3, 2, 3, 4),
        ("summarise.task", 1, 2, 1, 2, 5),
        ("word_count.task", 1, 4, 1, 6, 7),
        ("digest.workflow", 1, 1, None, 1, 8),
    ]
