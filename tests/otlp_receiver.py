"""A real OTLP/HTTP trace receiver on 127.0.0.1 for tests, scriptable with faults.

It parses every request strictly (OTLP/JSON per the spec: lowercase hex ids, integer enums,
int64 as decimal strings; protobuf via ``ExportTraceServiceRequest``; ``gzip`` bodies) and
records headers and decoded spans. Invalid requests get a 400 and land in ``errors``.

Async tests::

    async with OTLPReceiver() as receiver:  # or the ``otlp_receiver`` fixture
        receiver.script(Fault(status=503), Fault(status=503))  # then 200s
        ... post to receiver.url ...

Sync tests (the receiver runs its own loop on a thread)::

    with OTLPReceiver().running_in_thread() as receiver:  # or ``threaded_otlp_receiver``
        ...
        receiver.wait_for_spans(10, timeout=5)

Delivery is judged as a collector would: a span is delivered when its request was answered
2xx. ``distinct_spans`` de-duplicates them by span id and ``duplicates`` counts the copies
delivered more than once. Faults beyond one answer: ``receiver.default = hang()`` (accept
and never answer), ``refuse()`` / ``accept()`` (the collector down, then back on the same
port), and `not_listening_url` (nothing ever listens).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import gzip
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from multidict import CIMultiDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = [
    "Fault",
    "OTLPReceiver",
    "ReceivedRequest",
    "ReceivedSpan",
    "hang",
    "not_listening_url",
    "otlp_receiver",
    "partial_success",
    "threaded_otlp_receiver",
    "unused_endpoint",
]

TRACES_PATH = "/v1/traces"
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_INT64 = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class Fault:
    """How to answer one request: status/headers/body after ``delay`` seconds, or ``drop``
    the connection without any response. ``body=None`` means the normal success body.
    ``hold``: answer only once this event is set (then ``delay`` runs); an event nobody
    sets accepts the request and never answers it (see `hang`). A hold or delay ends early
    when the client goes away or the receiver stops; the request is recorded then, with
    status 0 if it was not answered."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay: float = 0.0
    drop: bool = False
    hold: threading.Event | None = None


def partial_success(rejected: int, message: str, *, protobuf: bool = False) -> Fault:
    """A 200 carrying ``partialSuccess`` in the JSON or protobuf response body."""
    if protobuf:
        response = ExportTraceServiceResponse()
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
        return Fault(
            body=response.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
    payload = {"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": message}}
    return Fault(body=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})


@dataclass(frozen=True)
class ReceivedSpan:
    """One decoded span, the same shape for JSON and protobuf requests."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    flags: int
    start_time: int
    end_time: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    links: list[tuple[str, str]]
    status_code: int
    status_message: str
    scope_name: str
    scope_version: str
    resource: dict[str, Any]


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as received; ``spans`` empty when the body did not parse."""

    path: str
    headers: CIMultiDict[str]
    raw_body: bytes
    body: bytes
    spans: list[ReceivedSpan]
    status: int  # what the receiver answered (0: connection dropped)
    peer: tuple[str, int] | None = None  # the client's address: one per connection


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _json_int64(value: Any, where: str) -> int:
    _check(isinstance(value, str) and bool(_INT64.fullmatch(value)), f"{where}: {value!r}")
    return int(value)


def _json_value(value: dict[str, Any]) -> Any:
    if not value:
        return None
    _check(len(value) == 1, f"AnyValue with several fields: {value!r}")
    kind, inner = next(iter(value.items()))
    if kind == "intValue":
        return _json_int64(inner, "intValue")
    if kind == "arrayValue":
        return tuple(_json_value(v) for v in inner.get("values", []))
    if kind == "kvlistValue":
        return {kv["key"]: _json_value(kv.get("value", {})) for kv in inner.get("values", [])}
    if kind == "bytesValue":
        return base64.b64decode(inner)
    _check(kind in ("stringValue", "boolValue", "doubleValue"), f"unknown AnyValue {kind}")
    return inner


def _json_attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: _json_value(kv.get("value", {})) for kv in items}


def _json_span(
    span: dict[str, Any], scope: dict[str, Any], resource: dict[str, Any]
) -> ReceivedSpan:
    _check(bool(_HEX32.fullmatch(span.get("traceId", ""))), f"traceId {span.get('traceId')!r}")
    _check(bool(_HEX16.fullmatch(span.get("spanId", ""))), f"spanId {span.get('spanId')!r}")
    parent = span.get("parentSpanId", "")
    _check(parent == "" or bool(_HEX16.fullmatch(parent)), f"parentSpanId {parent!r}")
    kind = span.get("kind", 0)
    _check(type(kind) is int and 0 <= kind <= 5, f"kind {kind!r}")
    status = span.get("status", {})
    code = status.get("code", 0)
    _check(type(code) is int and 0 <= code <= 2, f"status.code {code!r}")
    flags = span.get("flags", 0)
    _check(type(flags) is int, f"flags {flags!r}")
    events = []
    for event in span.get("events", []):
        _json_int64(event.get("timeUnixNano", "0"), "timeUnixNano")
        events.append((event.get("name", ""), _json_attributes(event.get("attributes", []))))
    links = []
    for link in span.get("links", []):
        _check(bool(_HEX32.fullmatch(link.get("traceId", ""))), "link traceId")
        _check(bool(_HEX16.fullmatch(link.get("spanId", ""))), "link spanId")
        links.append((link["traceId"], link["spanId"]))
    return ReceivedSpan(
        trace_id=span["traceId"],
        span_id=span["spanId"],
        parent_span_id=parent,
        name=span.get("name", ""),
        kind=kind,
        flags=flags,
        start_time=_json_int64(span.get("startTimeUnixNano", "0"), "startTimeUnixNano"),
        end_time=_json_int64(span.get("endTimeUnixNano", "0"), "endTimeUnixNano"),
        attributes=_json_attributes(span.get("attributes", [])),
        events=events,
        links=links,
        status_code=code,
        status_message=status.get("message", ""),
        scope_name=scope.get("name", ""),
        scope_version=scope.get("version", ""),
        resource=_json_attributes(resource.get("attributes", [])),
    )


def parse_json(body: bytes) -> list[ReceivedSpan]:
    """Spans of an OTLP/JSON request; raises ValueError on anything off-spec."""
    data = json.loads(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in data.get("resourceSpans", []):
        resource = resource_spans.get("resource", {})
        for scope_spans in resource_spans.get("scopeSpans", []):
            scope = scope_spans.get("scope", {})
            spans.extend(_json_span(s, scope, resource) for s in scope_spans.get("spans", []))
    return spans


def _pb_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_pb_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def _pb_attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value) for kv in items}


def parse_protobuf(body: bytes) -> list[ReceivedSpan]:
    """Spans of a binary OTLP request."""
    request = ExportTraceServiceRequest.FromString(body)
    spans: list[ReceivedSpan] = []
    for rs in request.resource_spans:
        resource = _pb_attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        name=s.name,
                        kind=s.kind,
                        flags=s.flags,
                        start_time=s.start_time_unix_nano,
                        end_time=s.end_time_unix_nano,
                        attributes=_pb_attributes(s.attributes),
                        events=[(e.name, _pb_attributes(e.attributes)) for e in s.events],
                        links=[(li.trace_id.hex(), li.span_id.hex()) for li in s.links],
                        status_code=s.status.code,
                        status_message=s.status.message,
                        scope_name=ss.scope.name,
                        scope_version=ss.scope.version,
                        resource=resource,
                    )
                )
    return spans


class OTLPReceiver:
    """An aiohttp OTLP/HTTP receiver on 127.0.0.1 (random port); see the module docstring.

    Faults: `script` the next answers, or set ``default``. `refuse` / `accept` take the
    collector down (connections refused) and back up on the same port. A held request
    (``Fault(hold=...)``, see `hang`) waits until its event is set, its client goes away,
    or the receiver stops, whichever comes first; a request whose client went away before
    it was answered is recorded with status 0 (not delivered).
    """

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.errors: list[str] = []
        self.default = Fault()  # the answer once the script is exhausted
        self._faults: deque[Fault] = deque()
        self._cond = threading.Condition()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._sock: socket.socket | None = None  # the listening socket, None when refusing
        self._accepted: set[socket.socket] = set()  # accepted, not yet owned by a transport
        self._adopting: set[asyncio.Task[None]] = set()  # handing them to aiohttp
        self._in_progress = 0
        self._busy: set[object] = set()  # connections answering a request (loop only)
        self._stopping = threading.Event()

    # -- scripting and inspection -------------------------------------------------------
    def script(self, *faults: Fault) -> None:
        """Answer the next requests with ``faults``, one each, then with ``default``."""
        with self._cond:
            self._faults.extend(faults)

    @property
    def script_left(self) -> int:
        """Scripted faults not yet used (a request takes its fault as it arrives)."""
        with self._cond:
            return len(self._faults)

    @property
    def in_progress(self) -> int:
        """Requests received and not answered yet (held, delayed, or being parsed)."""
        with self._cond:
            return self._in_progress

    @property
    def url(self) -> str:
        """The full ``/v1/traces`` endpoint."""
        assert self._port, "receiver not started"
        return f"http://127.0.0.1:{self._port}{TRACES_PATH}"

    @property
    def base_url(self) -> str:
        """What ``base_url=`` takes to export here (the SDK adds ``/v1/traces``)."""
        return self.url.removesuffix(TRACES_PATH)

    @property
    def spans(self) -> list[ReceivedSpan]:
        """Spans of the requests answered 2xx (what was delivered), copies included."""
        with self._cond:
            return [s for r in self.requests if 200 <= r.status < 300 for s in r.spans]

    @property
    def distinct_spans(self) -> dict[str, ReceivedSpan]:
        """Delivered spans (answered 2xx) by span id, each once: the first copy received."""
        distinct: dict[str, ReceivedSpan] = {}
        for span in self.spans:
            distinct.setdefault(span.span_id, span)
        return distinct

    @property
    def duplicates(self) -> int:
        """Delivered span copies whose span id had already been delivered (0: each once)."""
        return len(self.spans) - len(self.distinct_spans)

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Block until ``count`` spans were delivered (use from sync tests / other threads)."""
        end = time.monotonic() + timeout
        with self._cond:
            while len(self.spans) < count:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.spans)} of {count} spans after {timeout}s")
                self._cond.wait(left)
            return self.spans

    def wait_until(
        self, condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        """Block until ``condition()`` holds, re-checked as requests arrive and are answered
        (and every 10 ms); `TimeoutError` naming ``what`` after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        with self._cond:
            while not condition():
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {what} after {timeout}s")
                self._cond.wait(min(left, 0.01))

    async def await_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Like `wait_for_spans`, polling from a coroutine without blocking the loop."""
        await self.await_until(lambda: len(self.spans) >= count, timeout, f"{count} spans")
        return self.spans

    async def await_requests(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Wait (polling, on any loop) until ``count`` requests were received."""
        await self.await_until(lambda: len(self.requests) >= count, timeout, f"{count} requests")
        with self._cond:
            return list(self.requests)

    async def await_until(
        self, condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        """Like `wait_until`, polling from a coroutine (on any loop) without blocking it."""
        end = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > end:
                raise TimeoutError(f"no {what} after {timeout}s")
            await asyncio.sleep(0.01)

    # -- the collector going down and coming back --------------------------------------
    def refuse(self) -> None:
        """Stop listening: new connections are refused until `accept`. Kept-alive idle
        connections are closed too (those answering a request close once it is answered),
        so a client cannot slip through a pooled connection. Callable from any thread,
        the receiver's own loop included (it takes effect before this returns)."""
        self._on_loop(self._stop_listening)

    def accept(self) -> None:
        """Listen again on the same port (after `refuse`); a no-op while listening.
        Callable from any thread; connections are accepted (queued by the kernel until
        served) as soon as this returns."""
        self._on_loop(self._listen)

    @property
    def listening(self) -> bool:
        """False between `refuse` and `accept` (and before start / after stop)."""
        return self._sock is not None

    def _on_loop(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the receiver's loop: directly when already there, else
        through ``call_soon_threadsafe``, waiting for it to finish."""
        loop = self._loop
        assert loop is not None, "receiver not started"
        assert self._runner is not None, "receiver stopped"
        if threading.get_ident() == self._loop_thread_id:
            action()
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            try:
                action()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        loop.call_soon_threadsafe(run)
        done.result(timeout=10)

    def _listen(self) -> None:
        """On the loop: bind, listen and watch the socket, all before this returns, so
        `refuse` and `accept` take effect at once and never race each other."""
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # The port's earlier connections may still be open or in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self._port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self._sock = sock
        assert self._loop is not None
        self._loop.add_reader(sock.fileno(), self._accept_waiting, sock)

    def _accept_waiting(self, sock: socket.socket) -> None:
        """On the loop, when ``sock`` is readable: accept what is waiting and hand each
        connection to aiohttp. Every accepted socket is tracked until its transport owns
        it, so none is left open when the receiver stops."""
        assert self._loop is not None
        for _ in range(128):
            try:
                connection, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # the listening socket was closed meanwhile (refused)
            connection.setblocking(False)
            self._accepted.add(connection)
            task = self._loop.create_task(self._adopt(connection))
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    async def _adopt(self, connection: socket.socket) -> None:
        try:
            if self._runner is None or self._runner.server is None:
                return  # stopped meanwhile
            loop = asyncio.get_running_loop()
            await loop.connect_accepted_socket(self._runner.server, connection)
        except (OSError, asyncio.CancelledError):
            pass  # the client left, or the receiver stopped: close below
        else:
            return  # the transport owns the socket now
        finally:
            self._accepted.discard(connection)
        connection.close()

    def _stop_listening(self) -> None:
        """On the loop: close the listening socket and idle kept-alive connections."""
        sock, self._sock = self._sock, None
        if sock is not None:
            assert self._loop is not None
            self._loop.remove_reader(sock.fileno())
            sock.close()
        if self._runner is not None and self._runner.server is not None:
            for connection in self._runner.server.connections:
                if connection in self._busy:
                    connection.close()  # once its request is answered
                else:
                    connection.force_close()  # idle, kept alive: now

    # -- the server -------------------------------------------------------------------
    async def _wait_for_answer_time(self, request: web.Request, fault: Fault) -> None:
        """Wait out ``fault.hold`` and ``fault.delay``; end early when the client went
        away or the receiver stops (a threading.Event, polled: the test may set a hold
        from any thread or loop)."""
        delay_ends = None
        while True:
            if self._stopping.is_set() or _client_gone(request):
                return
            if fault.hold is None or fault.hold.is_set():
                if delay_ends is None:
                    delay_ends = time.monotonic() + fault.delay
                if time.monotonic() >= delay_ends:
                    return
            await asyncio.sleep(0.005)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._cond:
            self._in_progress += 1
        self._busy.add(request.protocol)
        try:
            return await self._answer(request)
        finally:
            self._busy.discard(request.protocol)
            with self._cond:
                self._in_progress -= 1
                self._cond.notify_all()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        with self._cond:
            fault = self._faults.popleft() if self._faults else self.default
        body, status = raw, fault.status
        spans: list[ReceivedSpan] = []
        try:
            if request.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(raw)
            content_type = request.headers.get("Content-Type", "")
            if content_type == "application/json":
                spans = parse_json(body)
            elif content_type == "application/x-protobuf":
                spans = parse_protobuf(body)
            else:
                raise ValueError(f"unsupported Content-Type {content_type!r}")
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            status = 400
            fault = Fault(status=400, body=str(exc).encode())
        if fault.hold is not None or fault.delay:
            await self._wait_for_answer_time(request, fault)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        # Not answered: dropped on purpose, the client went away, or the receiver stops.
        unanswered = fault.drop or _client_gone(request) or self._stopping.is_set()
        recorded = ReceivedRequest(
            request.path,
            CIMultiDict(request.headers),
            raw,
            body,
            spans,
            0 if unanswered else status,
            tuple(peer[:2]) if peer else None,
        )
        with self._cond:
            self.requests.append(recorded)
            self._cond.notify_all()
        if unanswered:
            if request.transport is not None:
                request.transport.abort()
            # aiohttp fails to write this to the aborted connection and lets it go quietly
            # (raising here instead would log an error for every dropped request).
            return web.Response(status=500)
        if fault.body is None:
            protobuf = request.headers.get("Content-Type") == "application/x-protobuf"
            default_body = b"" if protobuf else b"{}"
            headers = {"Content-Type": "application/x-protobuf" if protobuf else "application/json"}
            headers.update(fault.headers)
            return web.Response(status=status, body=default_body, headers=headers)
        return web.Response(status=status, body=fault.body, headers=dict(fault.headers))

    async def start(self) -> OTLPReceiver:
        """Start serving on the running loop."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(TRACES_PATH, self._handle)
        # auto_decompress=False: record the body as sent and gunzip it ourselves.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.5, auto_decompress=False
        )
        await self._runner.setup()
        self._loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        self._stopping.clear()
        self._listen()
        return self

    async def stop(self) -> None:
        """Stop serving (idempotent). Held and delayed requests end at once, unanswered
        (recorded with status 0)."""
        if self._runner is not None:
            self._stopping.set()
            self._stop_listening()
            # Connections accepted just now: let aiohttp take them, so cleanup closes them.
            await asyncio.gather(*self._adopting, return_exceptions=True)
            runner, self._runner = self._runner, None
            await runner.cleanup()
            for connection in list(self._accepted):
                connection.close()
            self._accepted.clear()

    async def __aenter__(self) -> OTLPReceiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def running_in_thread(self) -> Iterator[OTLPReceiver]:
        """Serve from a private event loop on a daemon thread for the ``with`` block."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="otlp-receiver", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=10)
            yield self
        finally:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=10)
            asyncio.run_coroutine_threadsafe(_cancel_the_rest(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            _close_what_is_left(loop)
            loop.close()


def hang() -> Fault:
    """A fault that accepts the request and never answers it (until the client gives up
    or the receiver stops): ``Fault(hold=...)`` with an event nobody sets."""
    return Fault(hold=threading.Event())


def _close_what_is_left(loop: asyncio.AbstractEventLoop) -> None:
    """Close the connections still open on the receiver's own stopped loop. A connection
    accepted as the receiver refuses or stops is set up by callbacks of asyncio's own,
    which may never run (then nobody closes it and it warns when collected)."""
    transports = getattr(loop, "_transports", {})  # a selector loop's, by file descriptor
    for transport in list(transports.values()):
        if not transport.is_closing():
            transport.close()


def _client_gone(request: web.Request) -> bool:
    """True once the client closed or reset its connection (aiohttp drops the transport)."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def _cancel_the_rest() -> None:
    """Cancel every other task of the running loop and wait for them (thread shutdown)."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


def not_listening_url() -> str:
    """A ``/v1/traces`` URL on a free 127.0.0.1 port with nothing listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{TRACES_PATH}"


@pytest_asyncio.fixture
async def otlp_receiver() -> AsyncIterator[OTLPReceiver]:
    """A receiver on the test's event loop (for ``@pytest.mark.asyncio`` tests)."""
    async with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture
def threaded_otlp_receiver() -> Iterator[OTLPReceiver]:
    """A receiver on its own thread and loop (for sync tests, or loops that come and go)."""
    with OTLPReceiver().running_in_thread() as receiver:
        yield receiver


@pytest.fixture
def unused_endpoint() -> str:
    """An endpoint where nothing listens (connection refused)."""
    return not_listening_url()
