"""Bodies of the stand-in LLM server, in the wire formats the OpenAI and Anthropic clients parse.

Everything is derived from the request: the reply echoes the last user message through
`reply_text`, token counts are whitespace-separated words, embedding vectors are hashes of
their input. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Iterator
from typing import Any

CREATED = 1_700_000_000  # fixed `created` timestamp, so bodies are deterministic
DEFAULT_EMBEDDING_DIMENSIONS = 8


def reply_text(prompt: str) -> str:
    """The assistant reply the stand-in gives to a last user message ``prompt``."""
    return f"Stand-in reply to: {prompt}"


def count_tokens(text: str) -> int:
    """The stand-in's token count: whitespace-separated words."""
    return len(text.split())


def _text_of(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def last_user_text(body: dict[str, Any]) -> str:
    """Text of the last ``user`` message of a chat request body ("" without one)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def prompt_tokens(body: dict[str, Any]) -> int:
    """Tokens of every message (and an Anthropic ``system``) of a chat request body."""
    messages = body.get("messages")
    texts = [_text_of(body.get("system"))]
    if isinstance(messages, list):
        texts += [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
    return sum(count_tokens(text) for text in texts)


def reply_pieces(reply: str) -> list[str]:
    """The stream deltas of ``reply``: one per word, joined back they give ``reply``."""
    words = reply.split(" ")
    return [words[0], *(" " + word for word in words[1:])]


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; ``data`` is JSON-encoded unless it is a string."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {payload}\n\n".encode()


# -- OpenAI ---------------------------------------------------------------------------------


def openai_usage(body: dict[str, Any], reply: str) -> dict[str, Any]:
    """Usage as the OpenAI API reports it, the detail objects included (without them,
    opentelemetry-instrumentation-openai raises and logs inside every call, leaving the
    response attributes unset and the CPU figures of a benchmark inflated)."""
    prompt, completion = prompt_tokens(body), count_tokens(reply)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def openai_chat_completion(body: dict[str, Any], completion_id: str) -> dict[str, Any]:
    """A ``chat.completion`` object answering ``body``."""
    reply = reply_text(last_user_text(body))
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": CREATED,
        "model": body.get("model", ""),
        "system_fingerprint": "fp_stand_in",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": openai_usage(body, reply),
    }


def openai_chat_chunks(body: dict[str, Any], completion_id: str) -> Iterator[bytes]:
    """The ``chat.completion.chunk`` events of a streamed reply, then ``data: [DONE]``.

    With ``stream_options: {"include_usage": true}`` every chunk carries ``"usage": null``
    and a last chunk with no choices carries the usage, as the OpenAI API does.
    """
    reply = reply_text(last_user_text(body))
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    base: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": body.get("model", ""),
        "system_fingerprint": "fp_stand_in",
    }
    if include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse({**base, "choices": [choice]})

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in reply_pieces(reply):
        yield chunk({"content": piece})
    yield chunk({}, "stop")
    if include_usage:
        yield sse({**base, "choices": [], "usage": openai_usage(body, reply)})
    yield sse("[DONE]")


def _embedding_vector(text: str, dimensions: int) -> list[float]:
    """Deterministic values in [-1, 1), exactly representable as float32."""
    digest = b""
    counter = 0
    while len(digest) < dimensions * 2:
        digest += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = struct.unpack(f"<{dimensions}H", digest[: dimensions * 2])
    return [value / 32768.0 - 1.0 for value in values]


def openai_embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """A ``list`` of embeddings, base64 float32 when ``encoding_format`` is ``base64``."""
    raw = body.get("input", "")
    inputs = raw if isinstance(raw, list) else [raw]
    texts = [item if isinstance(item, str) else " ".join(map(str, item)) for item in inputs]
    dimensions = body.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS
    data = []
    for index, text in enumerate(texts):
        vector = _embedding_vector(text, int(dimensions))
        encoded: list[float] | str = vector
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(count_tokens(text) for text in texts)
    return {
        "object": "list",
        "data": data,
        "model": body.get("model", ""),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def openai_models(models: list[str]) -> dict[str, Any]:
    entries = [
        {"id": m, "object": "model", "created": CREATED, "owned_by": "stand-in"} for m in models
    ]
    return {"object": "list", "data": entries}


def openai_error(status: int, message: str) -> dict[str, Any]:
    kind = "rate_limit_exceeded" if status == 429 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


# -- Anthropic ------------------------------------------------------------------------------


def anthropic_message(body: dict[str, Any], message_id: str) -> dict[str, Any]:
    """A ``message`` object answering ``body``."""
    reply = reply_text(last_user_text(body))
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body.get("model", ""),
        "content": [{"type": "text", "text": reply}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": prompt_tokens(body),
            "output_tokens": count_tokens(reply),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def anthropic_events(body: dict[str, Any], message_id: str) -> Iterator[bytes]:
    """The Messages streaming sequence: message_start, content_block_start, ping,
    content_block_delta per word, content_block_stop, message_delta (usage), message_stop."""
    reply = reply_text(last_user_text(body))
    start = anthropic_message(body, message_id)
    start.update(content=[], stop_reason=None)
    start["usage"] = {**start["usage"], "output_tokens": 1}
    yield sse({"type": "message_start", "message": start}, "message_start")
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    yield sse(block, "content_block_start")
    yield sse({"type": "ping"}, "ping")
    for piece in reply_pieces(reply):
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": piece},
        }
        yield sse(delta, "content_block_delta")
    yield sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": count_tokens(reply)},
    }
    yield sse(message_delta, "message_delta")
    yield sse({"type": "message_stop"}, "message_stop")


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    kind = (
        "rate_limit_error"
        if status == 429
        else "overloaded_error"
        if status == 529
        else "api_error"
    )
    return {"type": "error", "error": {"type": kind, "message": message}}
