"""`KeywordsAIMiddleware` on WebSocket connections (Starlette's in-process test client).

A connection is one ASGI call that lives for many messages: every workflow started while
it is open gets the connection's parameters and joins the caller's trace; connections
do not see each other's parameters.
"""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from keywordsai_tracing import KeywordsAITelemetry, workflow
from keywordsai_tracing.integrations.asgi import KeywordsAIMiddleware, Scope, header

CUSTOMER = "keywordsai.customer_params.customer_identifier"
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
REMOTE_SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{REMOTE_SPAN_ID:016x}-01"


def _params(scope: Scope) -> dict[str, str | None]:
    return {"customer_identifier": header(scope, "x-customer-id")}


def _app() -> Starlette:
    @workflow(name="echo")
    async def echo(text: str) -> str:
        return text.upper()

    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            try:
                text = await websocket.receive_text()
            except WebSocketDisconnect:
                return
            await websocket.send_text(await echo(text))

    return Starlette(
        routes=[WebSocketRoute("/chat", chat)],
        middleware=[Middleware(KeywordsAIMiddleware, params=_params)],  # type: ignore[arg-type]
    )


def test_every_message_of_a_connection_gets_its_params_and_trace(
    telemetry: KeywordsAITelemetry, exporter: InMemorySpanExporter
) -> None:
    headers = {"x-customer-id": "c-42", "traceparent": TRACEPARENT}
    with (
        TestClient(_app()) as client,
        client.websocket_connect("/chat", headers=headers) as connection,
    ):
        for word in ("hello", "again"):
            connection.send_text(word)
            assert connection.receive_text() == word.upper()
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == ["echo.workflow", "echo.workflow"]
    for span in spans:
        assert span.attributes is not None
        assert span.attributes[CUSTOMER] == "c-42"
        assert span.context is not None
        assert span.context.trace_id == TRACE_ID
        assert span.parent is not None
        assert span.parent.span_id == REMOTE_SPAN_ID
    assert [span.attributes["traceloop.entity.input"] for span in spans if span.attributes] == [
        '{"args": ["hello"], "kwargs": {}}',
        '{"args": ["again"], "kwargs": {}}',
    ]


def test_connections_do_not_share_params(
    telemetry: KeywordsAITelemetry, exporter: InMemorySpanExporter
) -> None:
    with TestClient(_app()) as client:
        for customer in ("a", "b"):
            with client.websocket_connect("/chat", headers={"x-customer-id": customer}) as ws:
                ws.send_text(customer)
                assert ws.receive_text() == customer.upper()
        with client.websocket_connect("/chat") as anonymous:
            anonymous.send_text("x")
            assert anonymous.receive_text() == "X"
    customers = [(span.attributes or {}).get(CUSTOMER) for span in exporter.get_finished_spans()]
    assert customers == ["a", "b", None]
    traces = {span.context.trace_id for span in exporter.get_finished_spans() if span.context}
    assert len(traces) == 3  # no traceparent: each connection's workflow is a root
