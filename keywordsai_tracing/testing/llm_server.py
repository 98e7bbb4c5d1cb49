"""`StandInLLMServer`: a loopback aiohttp server speaking the OpenAI and Anthropic HTTP APIs.

Point the real ``openai`` / ``anthropic`` clients at it to test tracing (or anything else)
without network or API keys. Replies are deterministic: the assistant echoes the last user
message through `reply_text`, token usage counts words, embeddings are hashes.

Async tests use it on their own loop; sync tests and scripts run it on a thread::

    async with StandInLLMServer() as server:
        client = AsyncOpenAI(base_url=server.openai_base_url, api_key="test")

    with StandInLLMServer() as server:
        client = Anthropic(base_url=server.anthropic_base_url, api_key="test")
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from keywordsai_tracing._engine.loop_thread import LoopThread

from . import _llm_wire as wire

__all__ = ["InjectedFailure", "RecordedRequest", "StandInLLMServer", "reply_text"]

reply_text = wire.reply_text

_START_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the server received (header names in lowercase)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any  # the decoded JSON body, or None

    @property
    def json(self) -> dict[str, Any]:
        """The JSON object body (``{}`` when the body was not an object)."""
        return self.body if isinstance(self.body, dict) else {}


@dataclass(frozen=True, slots=True)
class InjectedFailure:
    """An error response `StandInLLMServer.fail_next` queued."""

    status: int
    message: str
    retry_after: float | None = None


@dataclass(slots=True)
class _Streams:
    completed: int = 0
    disconnected: int = 0
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))


class StandInLLMServer:
    """A fake OpenAI + Anthropic API on ``127.0.0.1`` with a random port.

    Routes: ``POST /v1/chat/completions`` (plain and ``stream=True``, honouring
    ``stream_options.include_usage``), ``POST /v1/embeddings``, ``GET /v1/models`` and
    ``POST /v1/messages`` (plain and ``stream=true``, the real Anthropic event sequence).

    ``chunk_delay`` (seconds, settable at any time) is slept before each streamed event,
    so a test can abandon a stream while the server is still sending it.
    """

    def __init__(
        self, *, chunk_delay: float = 0.0, models: tuple[str, ...] = ("gpt-4o-mini",)
    ) -> None:
        self.chunk_delay = chunk_delay
        self._models = list(models)
        self._requests: list[RecordedRequest] = []
        self._failures: collections.deque[InjectedFailure] = collections.deque()
        self._streams = _Streams()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._loop_thread: LoopThread | None = None

    # -- addresses -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on (127.0.0.1); RuntimeError when not running."""
        if self._port is None:
            raise RuntimeError("StandInLLMServer is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``base_url`` for ``OpenAI``/``AsyncOpenAI`` (ends with ``/v1``)."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """``base_url`` for ``Anthropic``/``AsyncAnthropic`` (the client adds ``/v1``)."""
        return self.base_url

    # -- what tests look at --------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the requests recorded so far."""
        self._requests.clear()

    @property
    def completed_streams(self) -> int:
        """Streamed responses sent to their end."""
        return self._streams.completed

    @property
    def disconnected_streams(self) -> int:
        """Streamed responses the client went away from before their end."""
        return self._streams.disconnected

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        message: str = "Injected failure",
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``count`` API requests with ``status`` and a provider-style error
        body (with a ``retry-after`` header when given). Clients retry 429 and 5xx by
        default: pass ``max_retries=0`` to them to see the error at once."""
        if count < 0 or not 400 <= status <= 599:
            raise ValueError("count must be >= 0 and status an HTTP error status")
        self._failures.extend([InjectedFailure(status, message, retry_after)] * count)

    # -- lifecycle on the running loop ---------------------------------------------------

    async def start(self) -> None:
        """Start listening on the running event loop."""
        if self._runner is not None:
            raise RuntimeError("StandInLLMServer is already running")
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_post("/v1/messages", self._messages)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=1.0,
            handler_cancellation=True,
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._port = None

    async def __aenter__(self) -> StandInLLMServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- lifecycle on a thread of its own ------------------------------------------------

    def __enter__(self) -> StandInLLMServer:
        """Run the server on a daemon thread with its own event loop (for sync code)."""
        if self._loop_thread is not None or self._runner is not None:
            raise RuntimeError("StandInLLMServer is already running")
        self._loop_thread = LoopThread("stand-in-llm-server")
        loop = self._loop_thread.ensure_started()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(_START_TIMEOUT)
        except BaseException:
            self._stop_thread()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop_thread()

    def _stop_thread(self) -> None:
        loop_thread, self._loop_thread = self._loop_thread, None
        if loop_thread is None:
            return
        loop = loop_thread.loop
        try:
            if loop is not None:
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(_START_TIMEOUT)
        finally:
            loop_thread.stop().result(_START_TIMEOUT)

    # -- handlers ------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        self._requests.append(RecordedRequest(request.method, request.path, headers, body))
        return body if isinstance(body, dict) else {}

    def _failure(self, error_body: Callable[[int, str], dict[str, Any]]) -> web.Response | None:
        try:
            failure = self._failures.popleft()
        except IndexError:
            return None
        headers = {"x-should-retry": "true" if failure.status in (429, 500, 503) else "false"}
        if failure.retry_after is not None:
            headers["retry-after"] = str(failure.retry_after)
        body = error_body(failure.status, failure.message)
        return web.json_response(body, status=failure.status, headers=headers)

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._streams.ids):06d}"

    async def _stream(self, request: web.Request, events: Iterator[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        try:
            for event in events:
                if self.chunk_delay > 0:
                    await asyncio.sleep(self.chunk_delay)
                await response.write(event)
            await response.write_eof()
        except asyncio.CancelledError:  # the client went away (handler_cancellation)
            self._streams.disconnected += 1
            raise
        except ConnectionError:  # the client went away while we wrote
            self._streams.disconnected += 1
            return response
        self._streams.completed += 1
        return response

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failure = self._failure(wire.openai_error)
        if failure is not None:
            return failure
        completion_id = self._next_id("chatcmpl-standin")
        if body.get("stream"):
            return await self._stream(request, wire.openai_chat_chunks(body, completion_id))
        return web.json_response(wire.openai_chat_completion(body, completion_id))

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return self._failure(wire.openai_error) or web.json_response(wire.openai_embeddings(body))

    async def _list_models(self, request: web.Request) -> web.Response:
        await self._record(request)
        failure = self._failure(wire.openai_error)
        return failure or web.json_response(wire.openai_models(self._models))

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failure = self._failure(wire.anthropic_error)
        if failure is not None:
            return failure
        message_id = self._next_id("msg_standin")
        if body.get("stream"):
            return await self._stream(request, wire.anthropic_events(body, message_id))
        return web.json_response(
            wire.anthropic_message(body, message_id), headers={"request-id": f"req_{message_id}"}
        )
