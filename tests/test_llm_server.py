"""The stand-in LLM server on its own: both run modes, wire formats, recording, failures."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from keywordsai_tracing.testing import StandInLLMServer, reply_text

MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]
HANG = 20.0  # generous bound: only catches hangs


async def _post_lines(url: str, body: dict[str, Any]) -> list[str]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        return (await response.text()).split("\n")


def _data(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def test_sync_mode_runs_on_its_own_thread_for_the_sync_client() -> None:
    with (
        StandInLLMServer() as server,
        openai.OpenAI(base_url=server.openai_base_url, api_key="test") as client,
    ):
        assert server.openai_base_url == f"http://127.0.0.1:{server.port}/v1"
        assert server.anthropic_base_url == f"http://127.0.0.1:{server.port}"
        assert any(t.name == "stand-in-llm-server" for t in threading.enumerate())
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices[0].message.content == reply_text("hello there")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-mini"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 5)
    assert not any(t.name == "stand-in-llm-server" for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port


@pytest.mark.asyncio
async def test_async_mode_runs_on_the_running_loop() -> None:
    async with (
        StandInLLMServer() as server,
        anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key="test") as client,
    ):
        message = await client.messages.create(model="claude-x", max_tokens=20, messages=MESSAGES)
    assert message.content[0].type == "text"
    assert message.content[0].text == reply_text("hello there")
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 5)


@pytest.mark.asyncio
async def test_openai_stream_is_sse_chunks_then_a_usage_chunk_then_done() -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    async with StandInLLMServer() as server:
        url = f"{server.openai_base_url}/chat/completions"
        plain = _data(await _post_lines(url, body))
        with_usage = _data(
            await _post_lines(url, {**body, "stream_options": {"include_usage": True}})
        )
    assert plain[-1] == "[DONE]"
    chunks = [json.loads(data) for data in plain[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert text == reply_text("hello there")
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in chunk for chunk in chunks)

    assert with_usage[-1] == "[DONE]"
    usage_chunk = json.loads(with_usage[-2])
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (2, 5, 7)
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    assert all(json.loads(data)["usage"] is None for data in with_usage[:-2])


@pytest.mark.asyncio
async def test_anthropic_stream_is_the_real_event_sequence() -> None:
    body = {"model": "claude-x", "max_tokens": 20, "messages": MESSAGES, "stream": True}
    async with StandInLLMServer() as server:
        lines = await _post_lines(f"{server.base_url}/v1/messages", body)
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert events == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [json.loads(data) for data in _data(lines)]
    assert [p["type"] for p in payloads] == events  # each data's type names its event
    assert payloads[0]["message"]["usage"]["input_tokens"] == 2
    assert payloads[-2]["usage"] == {"output_tokens": 5}
    text = "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta")
    assert text == reply_text("hello there")


def test_clients_parse_streams_and_embeddings() -> None:
    with (
        StandInLLMServer() as server,
        openai.OpenAI(base_url=server.openai_base_url, api_key="test") as oai,
        anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test") as claude,
    ):
        stream = oai.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        with claude.messages.stream(model="c", max_tokens=20, messages=MESSAGES) as events:
            text = "".join(events.text_stream)
            final = events.get_final_message()
        default = oai.embeddings.create(model="e", input=["a b", "c"])  # base64 on the wire
        floats = oai.embeddings.create(model="e", input=["a b", "c"], encoding_format="float")
        models = oai.models.list()
        assert server.requests[-3].json["encoding_format"] == "base64"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text == reply_text("hello there")
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 7
    assert final.usage.output_tokens == 5
    assert [e.embedding for e in default.data] == [e.embedding for e in floats.data]
    assert len(default.data[0].embedding) == 8
    assert default.data[0].embedding != default.data[1].embedding
    assert default.usage.prompt_tokens == 3
    assert [m.id for m in models.data] == ["gpt-4o-mini"]


@pytest.mark.asyncio
async def test_requests_are_recorded_with_lowercase_headers_and_json_body() -> None:
    async with (
        StandInLLMServer() as server,
        openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test") as client,
    ):
        await client.embeddings.create(model="e", input="x", dimensions=4, encoding_format="float")
        recorded = server.requests
        server.clear_requests()
        assert server.requests == []
    (request,) = recorded
    assert (request.method, request.path) == ("POST", "/v1/embeddings")
    assert request.headers["authorization"] == "Bearer test"
    assert request.json == {"model": "e", "input": "x", "dimensions": 4, "encoding_format": "float"}


@pytest.mark.asyncio
async def test_injected_failures_answer_in_provider_format_then_stop() -> None:
    async with (
        StandInLLMServer() as server,
        openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0) as oai,
        anthropic.AsyncAnthropic(
            base_url=server.anthropic_base_url, api_key="test", max_retries=0
        ) as claude,
    ):
        server.fail_next(1, status=500, message="boom")
        with pytest.raises(openai.InternalServerError, match="boom"):
            await oai.chat.completions.create(model="m", messages=MESSAGES)
        server.fail_next(1, status=429)
        with pytest.raises(anthropic.RateLimitError, match="rate_limit_error"):
            await claude.messages.create(model="c", max_tokens=5, messages=MESSAGES)
        ok = await oai.chat.completions.create(model="m", messages=MESSAGES)
    assert ok.choices[0].message.content == reply_text("hello there")
    assert len(server.requests) == 3


def test_client_retry_honours_injected_retry_after() -> None:
    with (
        StandInLLMServer() as server,
        openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=2) as client,
    ):
        server.fail_next(2, status=503, retry_after=0.01)
        completion = client.chat.completions.create(model="m", messages=MESSAGES)
        assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1", "2"]
    assert completion.choices[0].message.content == reply_text("hello there")


def test_fail_next_rejects_non_error_status() -> None:
    with pytest.raises(ValueError, match="status"):
        StandInLLMServer().fail_next(status=200)


@pytest.mark.asyncio
async def test_slow_stream_closed_by_the_client_counts_as_disconnected() -> None:
    async with (
        StandInLLMServer(chunk_delay=0.05) as server,
        openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test") as client,
    ):
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        first = await stream.__anext__()
        await stream.close()
        async with asyncio.timeout(HANG):
            while server.disconnected_streams == 0:  # noqa: ASYNC110 (a counter, no event)
                await asyncio.sleep(0.01)
        server.chunk_delay = 0
        async for _ in await client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True
        ):
            pass
    assert first.choices[0].delta.role == "assistant"
    assert (server.disconnected_streams, server.completed_streams) == (1, 1)
