"""`keywordsai_tracing.integrations.asgi` with real apps served by uvicorn on 127.0.0.1.

Each server runs on its own event loop in a thread (``uvicorn.Server.run``); requests
come from the test thread. The SIGTERM test runs uvicorn in a subprocess.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import signal
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.propagators.textmap import TextMapPropagator, default_getter, default_setter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from keywordsai_tracing import Instruments, KeywordsAITelemetry, task, workflow
from keywordsai_tracing.integrations.asgi import (
    KeywordsAIMiddleware,
    Scope,
    header,
    telemetry_lifespan,
)
from tests.conftest import parent_id, span_id
from tests.otlp_receiver import OTLPReceiver
from tests.uvicorn_process import serving as uvicorn_process

CUSTOMER = "keywordsai.customer_params.customer_identifier"
THREAD = "keywordsai.threads.thread_identifier"
METADATA_ROUTE = "keywordsai.metadata.route"

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
REMOTE_SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{REMOTE_SPAN_ID:016x}-01"


# -- serving --------------------------------------------------------------------------------


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port, on a loop in a thread; stop gracefully."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", loop="asyncio", lifespan="on"
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # reported by the test thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert not failure, f"uvicorn failed during start-up: {failure}"
        assert thread.is_alive(), "uvicorn stopped during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True  # graceful: finish requests, then the lifespan's end
        thread.join(30)
    assert not thread.is_alive(), "uvicorn did not stop"
    assert not failure, failure


def get(url: str, headers: dict[str, str] | None = None) -> str:
    """GET with urllib: never traced, so it sends exactly the headers given."""
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as reply:
        body: bytes = reply.read()
    return body.decode()


def by_kind(spans: tuple[ReadableSpan, ...], kind: str) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get("traceloop.span.kind") == kind]


def children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if parent_id(s) == span_id(parent)]


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    value: int = span.context.trace_id
    return value


def scope_name(span: ReadableSpan) -> str:
    assert span.instrumentation_scope is not None
    return span.instrumentation_scope.name


def request_params(scope: Scope) -> dict[str, Any]:
    return {
        "customer_identifier": header(scope, "x-customer-id"),
        "thread_identifier": header(scope, "x-thread-id"),
        "metadata": {"route": scope["path"]},
    }


# -- traced code shared by the apps -----------------------------------------------------------


@task(name="lookup")
async def lookup(i: int) -> int:
    await asyncio.sleep(0)
    return i


@workflow(name="answer")
async def answer(question: str) -> str:
    values = await asyncio.gather(lookup(1), lookup(2))
    return f"{question}:{sum(values)}"


@task(name="sync_lookup")
def sync_lookup() -> int:
    return 7


@workflow(name="sync_answer")
def sync_answer() -> int:
    return sync_lookup()


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/q/{question}")
    async def ask(question: str) -> str:
        return await answer(question)

    @app.get("/sync")
    def ask_sync() -> int:  # runs on a worker thread
        return sync_answer()

    app.add_middleware(KeywordsAIMiddleware, params=request_params)
    return app


# -- parameters from the request ------------------------------------------------------------


def test_params_from_headers_reach_every_decorated_span(
    telemetry: KeywordsAITelemetry, exporter: InMemorySpanExporter
) -> None:
    customers = [f"user-{i}" for i in range(8)]

    def ask(client: httpx.Client, customer: str) -> str:
        headers = {"X-Customer-Id": customer, "X-Thread-Id": f"thread-{customer}"}
        response = client.get(f"/q/{customer}", headers=headers)
        response.raise_for_status()
        return str(response.json())

    with serving(fastapi_app()) as url, httpx.Client(base_url=url, timeout=10) as client:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda c: ask(client, c), customers))
        sync_reply = client.get("/sync", headers={"X-Customer-Id": "sync-user"})
        assert sync_reply.json() == 7
        plain = client.get("/q/nobody")  # no headers: only the route metadata
    assert answers == [f"{c}:3" for c in customers]
    assert plain.json() == "nobody:3"

    spans = exporter.get_finished_spans()
    ours = tuple(s for s in spans if scope_name(s) == "keywordsai_tracing")
    assert len(ours) == 3 * len(customers) + 2 + 3
    # FastAPI's own telemetry makes the one server span per request; the middleware none.
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(servers) == len(customers) + 2
    assert {scope_name(s) for s in spans} == {"fastapi", "keywordsai_tracing"}
    for span in spans:
        if scope_name(span) == "fastapi":
            assert CUSTOMER not in (span.attributes or {})
    spans = ours
    for root in by_kind(spans, "workflow"):
        entity = [root, *children(spans, root)]
        assert len(entity) == (2 if root.name == "sync_answer.workflow" else 3)
        values = {
            (
                (s.attributes or {}).get(CUSTOMER),
                (s.attributes or {}).get(THREAD),
                (s.attributes or {}).get(METADATA_ROUTE),
            )
            for s in entity
        }
        assert len(values) == 1, values
        customer, thread, route = values.pop()
        if root.name == "sync_answer.workflow":
            assert (customer, thread, route) == ("sync-user", None, "/sync")
        elif customer is None:
            assert (thread, route) == (None, "/q/nobody")
        else:
            assert (thread, route) == (f"thread-{customer}", f"/q/{customer}")
    assert sorted(
        str((s.attributes or {}).get(CUSTOMER)) for s in by_kind(spans, "workflow")
    ) == sorted([*customers, "sync-user", "None"])


def test_explicit_params_win_and_failures_do_not_break_requests(
    telemetry: KeywordsAITelemetry, exporter: InMemorySpanExporter
) -> None:
    from keywordsai_tracing import get_client

    @workflow(name="explicit")
    async def explicit() -> str:
        get_client().update_current_span(keywordsai_params={"customer_identifier": "explicit"})
        return "ok"

    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse(await explicit())

    async def params(scope: Scope) -> dict[str, Any]:  # async callables work too
        await asyncio.sleep(0)
        if header(scope, "x-fail"):
            raise RuntimeError("bad header")
        return {"customer_identifier": "from-header", "thread_identifier": "t-1"}

    app = KeywordsAIMiddleware(Starlette(routes=[Route("/", endpoint)]), params=params)
    with serving(app) as url:
        assert get(url) == "ok"
        assert get(url, {"X-Fail": "1"}) == "ok"
    first, second = exporter.get_finished_spans()
    assert first.attributes is not None
    assert second.attributes is not None
    assert first.attributes[CUSTOMER] == "explicit"  # update_current_span overrides
    assert first.attributes[THREAD] == "t-1"
    assert second.attributes[CUSTOMER] == "explicit"
    assert THREAD not in second.attributes  # params raised: logged, request served


def test_request_params_are_in_a_decorated_span_from_its_start(
    telemetry: KeywordsAITelemetry, exporter: InMemorySpanExporter
) -> None:
    """Decorated spans take the request's parameters into the attributes they start with:
    the decorator's own attributes win, sequences become tuples (no span shares a mutable
    value), and a value set under the key by hand that OpenTelemetry would not take is
    left out, as the SDK's validation would."""
    from opentelemetry import context as context_api
    from opentelemetry import trace

    from keywordsai_tracing.integrations import REQUEST_PARAMS_KEY, request_params_context

    seen: list[dict[str, Any]] = []

    @workflow(name="req")
    def run() -> str:
        seen.append(dict(trace.get_current_span().attributes or {}))  # type: ignore[attr-defined]
        return "done"

    params = {
        "customer_identifier": "c-1",
        "metadata": {"tags": ["a", "b"], "traceloop.entity.name": "not-ours", "n": 3},
    }
    token = context_api.attach(request_params_context(params))
    try:
        run()
    finally:
        context_api.detach(token)
    by_hand = {"keywordsai.metadata.ok": "yes", "keywordsai.metadata.bad": object()}
    token = context_api.attach(context_api.set_value(REQUEST_PARAMS_KEY, by_hand))
    try:
        run()
    finally:
        context_api.detach(token)
    first, second = exporter.get_finished_spans()
    assert seen[0][CUSTOMER] == "c-1"  # there while the body runs
    attributes = dict(first.attributes or {})
    assert attributes[CUSTOMER] == "c-1"
    assert attributes["keywordsai.metadata.tags"] == ("a", "b")
    assert attributes["keywordsai.metadata.n"] == 3
    assert attributes["traceloop.entity.name"] == "req"
    second_attributes = dict(second.attributes or {})
    assert second_attributes["keywordsai.metadata.ok"] == "yes"
    assert "keywordsai.metadata.bad" not in second_attributes


def test_middleware_rejects_a_non_callable_and_passes_other_scopes(
    telemetry: KeywordsAITelemetry,
) -> None:
    with pytest.raises(TypeError, match="params"):
        KeywordsAIMiddleware(fastapi_app(), params={"customer_identifier": "x"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="telemetry"):
        telemetry_lifespan(telemetry=telemetry, app_name="x")


# -- alongside opentelemetry-instrumentation-fastapi ----------------------------------------------


def test_with_fastapi_instrumentation_one_server_span_parents_the_workflow(
    telemetry: KeywordsAITelemetry, exporter: InMemorySpanExporter
) -> None:
    app = fastapi_app()
    FastAPIInstrumentor.instrument_app(app)
    try:
        with serving(app) as url:
            headers = {"traceparent": TRACEPARENT, "X-Customer-Id": "traced"}
            assert json.loads(get(f"{url}/q/a", headers)) == "a:3"
            assert json.loads(get(f"{url}/q/b", {"X-Customer-Id": "untraced"})) == "b:3"
    finally:
        FastAPIInstrumentor.uninstrument_app(app)

    spans = exporter.get_finished_spans()
    assert len({span_id(s) for s in spans}) == len(spans)
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(servers) == 2, [s.name for s in spans]
    workflows = by_kind(spans, "workflow")
    assert len(workflows) == 2
    assert len(by_kind(spans, "task")) == 4
    for server in servers:
        (root,) = [w for w in workflows if parent_id(w) == span_id(server)]
        assert trace_id(root) == trace_id(server)
        customer = (root.attributes or {})[CUSTOMER]
        if customer == "traced":  # the caller's trace continues through the server span
            assert trace_id(server) == TRACE_ID
            assert parent_id(server) == REMOTE_SPAN_ID
        else:
            assert customer == "untraced"
            assert server.parent is None
        for child in children(spans, root):
            assert (child.attributes or {})[CUSTOMER] == customer
    for span in spans:  # the framework's own spans are not KeywordsAI entities
        if span.kind == SpanKind.SERVER or span.name.endswith((" http send", " http receive")):
            assert CUSTOMER not in (span.attributes or {})


# -- trace context across two services ---------------------------------------------------------


@pytest.mark.parametrize("client", ["httpx", "aiohttp"])
def test_traceparent_flows_from_caller_through_a_to_b(
    exporter: InMemorySpanExporter, client: str
) -> None:
    instrument = Instruments.HTTPX if client == "httpx" else Instruments.AIOHTTP_CLIENT
    telemetry = KeywordsAITelemetry(
        app_name="a-and-b",
        custom_exporter=exporter,
        is_batching_enabled=False,
        instruments={instrument},
    )
    b_url = ""

    @workflow(name="b_work")
    async def b_work() -> str:
        return str(await lookup(5))

    async def b_endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse(await b_work())

    @task(name="call_b")
    async def call_b() -> str:
        if client == "httpx":
            async with httpx.AsyncClient(timeout=10) as http:
                reply = await http.get(f"{b_url}/b", headers={"X-Customer-Id": "svc-a"})
                return reply.text
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{b_url}/b", headers={"X-Customer-Id": "svc-a"}) as resp,
        ):
            return await resp.text()

    @workflow(name="a_work")
    async def a_work() -> str:
        return "a+" + await call_b()

    async def a_endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse(await a_work())

    def service(path: str, endpoint: Any) -> KeywordsAIMiddleware:
        return KeywordsAIMiddleware(
            Starlette(routes=[Route(path, endpoint)]),
            params=lambda scope: {"customer_identifier": header(scope, "x-customer-id")},
        )

    try:
        with serving(service("/b", b_endpoint)) as b, serving(service("/a", a_endpoint)) as a:
            b_url = b
            reply = get(f"{a}/a", {"traceparent": TRACEPARENT, "X-Customer-Id": "end-user"})
    finally:
        telemetry.shutdown()
    assert reply == "a+5"

    spans = exporter.get_finished_spans()
    assert {trace_id(s) for s in spans} == {TRACE_ID}
    named = {s.name: s for s in spans if s.kind != SpanKind.CLIENT}
    (outgoing,) = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert len(spans) == len(named) + 1 == 5, [s.name for s in spans]
    assert parent_id(named["a_work.workflow"]) == REMOTE_SPAN_ID
    assert parent_id(named["call_b.task"]) == span_id(named["a_work.workflow"])
    assert parent_id(outgoing) == span_id(named["call_b.task"])
    assert parent_id(named["b_work.workflow"]) == span_id(outgoing)
    assert parent_id(named["lookup.task"]) == span_id(named["b_work.workflow"])
    customers = {name: (s.attributes or {}).get(CUSTOMER) for name, s in named.items()}
    assert customers == {
        "a_work.workflow": "end-user",
        "call_b.task": "end-user",
        "b_work.workflow": "svc-a",
        "lookup.task": "svc-a",
    }
    assert (outgoing.attributes or {}).get(CUSTOMER) == "end-user"  # an LLM-like child span


# -- the lifespan helper -----------------------------------------------------------------------


def test_lifespan_helper_delivers_every_span_at_graceful_shutdown(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    started: list[str] = []

    @asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        started.append("up")
        yield {"suffix": "!"}
        started.append("down")

    lifespan = telemetry_lifespan(
        own_lifespan,
        app_name="lifespan-test",
        api_key="k",
        base_url=threaded_otlp_receiver.url,
        instruments=set(),
        schedule_delay=60.0,  # nothing leaves before shutdown
        shutdown_timeout=7.0,
    )
    app = FastAPI(lifespan=lifespan)
    app.add_middleware(
        KeywordsAIMiddleware, params=lambda scope: {"customer_identifier": header(scope, "x-id")}
    )

    @app.get("/{name}")
    async def endpoint(name: str, request: Request) -> str:
        return await answer(name) + str(request.state.suffix)

    requests = 20
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert lifespan.telemetry is not None
        assert lifespan.telemetry.is_initialized()
        assert lifespan.telemetry.settings.shutdown_timeout == 7.0  # exit and SIGTERM too
        for i in range(requests):
            reply = client.get(f"/r{i}", headers={"X-Id": f"id-{i}"})
            assert reply.json() == f"r{i}:3!"
        assert threaded_otlp_receiver.spans == []
    assert started == ["up", "down"]
    assert lifespan.telemetry is not None
    assert not lifespan.telemetry.is_initialized()
    spans = threaded_otlp_receiver.spans  # delivered before the server stopped
    assert len(spans) == 3 * requests
    assert sorted(s.attributes[CUSTOMER] for s in spans if s.name == "answer.workflow") == sorted(
        f"id-{i}" for i in range(requests)
    )
    assert all(s.resource["service.name"] == "lifespan-test" for s in spans)


def test_sigterm_through_the_lifespan_helper_delivers_every_span(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    env = {
        "KEYWORDSAI_BASE_URL": threaded_otlp_receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
        "PATH": "",
    }
    with uvicorn_process("tests.apps.asgi_lifespan_app:app", env) as server:
        for i in range(5):
            assert json.loads(server.get(f"/r{i}", {"X-Id": f"id-{i}"})) == f"/r{i}:3!"
        assert threaded_otlp_receiver.spans == []
        _, text = server.sigterm(timeout=30)
    assert server.process.returncode == -signal.SIGTERM  # uvicorn re-raises what it handled
    spans = threaded_otlp_receiver.wait_for_spans(15, timeout=5)
    assert len(spans) == 15
    roots = [s for s in spans if s.name == "handle_request.workflow"]
    assert sorted(s.attributes[CUSTOMER] for s in roots) == [f"id-{i}" for i in range(5)]
    for bad in ("Traceback", "Task was destroyed", "Event loop is closed", "ERROR"):
        assert bad not in text, text


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_gc_freezes_the_start_up_heap_while_serving_and_only_when_asked(
    threaded_otlp_receiver: OTLPReceiver, freeze: bool
) -> None:
    frozen_while_serving: list[int] = []
    lifespan = telemetry_lifespan(
        api_key="k", base_url=threaded_otlp_receiver.url, instruments=set(), freeze_gc=freeze
    )
    app = FastAPI(lifespan=lifespan)

    @app.get("/")
    async def endpoint() -> str:
        frozen_while_serving.append(gc.get_freeze_count())
        return await answer("x")

    assert gc.get_freeze_count() == 0
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/").json() == "x:3"
    assert gc.get_freeze_count() == 0  # unfrozen at shutdown: the process as it was
    if freeze:
        assert frozen_while_serving[0] > 10_000  # modules, the app, the telemetry
    else:
        assert frozen_while_serving == [0]
    assert len(threaded_otlp_receiver.spans) == 3


def test_freeze_gc_leaves_a_heap_the_application_froze_itself_frozen(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    lifespan = telemetry_lifespan(
        api_key="k", base_url=threaded_otlp_receiver.url, instruments=set(), freeze_gc=True
    )
    app = FastAPI(lifespan=lifespan)
    sentinel: list[object] = []  # an object of the application's, frozen by it
    gc.freeze()  # the application's own choice, before serving
    frozen = gc.get_freeze_count()
    try:
        with serving(app):
            # started: freeze_gc saw the application's freeze and froze nothing itself
            # (what start-up created would have joined; frozen objects may die meanwhile)
            assert gc.get_freeze_count() <= frozen
        # Still in the permanent generation (gc.get_objects() does not list it there).
        assert all(obj is not sentinel for obj in gc.get_objects())
    finally:
        gc.unfreeze()
    assert any(obj is sentinel for obj in gc.get_objects())


def test_freeze_gc_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="freeze_gc"):
        telemetry_lifespan(freeze_gc="yes")  # type: ignore[arg-type]


class _CountingPropagator(TextMapPropagator):
    """The default W3C propagator, counting its extractions; ``fields`` as given."""

    def __init__(self, fields: set[str]) -> None:
        self._inner = TraceContextTextMapPropagator()
        self._fields = fields
        self.extractions = 0

    def extract(self, carrier: Any, context: Any = None, getter: Any = default_getter) -> Any:
        self.extractions += 1
        return self._inner.extract(carrier, context, getter)

    def inject(self, carrier: Any, context: Any = None, setter: Any = default_setter) -> None:
        self._inner.inject(carrier, context, setter)

    @property
    def fields(self) -> set[str]:
        return self._fields


@pytest.mark.parametrize("declared", [{"traceparent", "tracestate"}, set()], ids=["w3c", "none"])
def test_the_propagator_runs_only_for_requests_carrying_its_headers(
    telemetry: KeywordsAITelemetry, declared: set[str]
) -> None:
    """A request without any header the global propagator declares skips extraction (a
    cost on every request otherwise); one with them joins the caller's trace; a
    propagator that declares no headers runs on every request."""
    from opentelemetry import propagate, trace

    seen: list[int] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)

    def scope_with(headers: list[tuple[bytes, bytes]]) -> Scope:
        return {"type": "http", "path": "/", "headers": headers}

    counting = _CountingPropagator(declared)
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(counting)
    try:
        middleware = KeywordsAIMiddleware(app)
        plain = [(b"host", b"x"), (b"x-customer-id", b"c")]
        asyncio.run(middleware(scope_with(plain), None, None))
        asyncio.run(
            middleware(scope_with([*plain, (b"traceparent", TRACEPARENT.encode())]), None, None)
        )
    finally:
        propagate.set_global_textmap(previous)
    assert seen == [0, TRACE_ID]
    assert counting.extractions == (1 if declared else 2)
