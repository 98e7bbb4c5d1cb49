"""Spans that no destination would receive are never recorded (`_unrecorded`): when the
KeywordsAI exporter with its noise filter is the only destination, a third party's span
started outside every decorated entity is a `NonRecordingSpan` from the start, W3C trace
context still propagates through it, and kept spans inside it are re-parented as if it
had been recorded and filtered. Any destination that might want it turns this off.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from keywordsai_tracing import KeywordsAITelemetry, get_client, task, workflow
from keywordsai_tracing._attributes import (
    ENTITY_PATH,
    ENTITY_PATH_KEY,
    LINK_REASON,
    SPAN_KIND,
    WORKFLOW_NAME_KEY,
)
from keywordsai_tracing._noise import is_noise
from keywordsai_tracing._pipeline import Pipeline
from keywordsai_tracing._unrecorded import noise_at_start
from keywordsai_tracing.integrations.asgi import KeywordsAIMiddleware
from tests.conftest import telemetry_to
from tests.otlp_receiver import OTLPReceiver

REMOTE = SpanContext(
    trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
    span_id=0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "value")]),
)
FRAMEWORK = "some.web.framework"


def _telemetry(receiver: OTLPReceiver, **kwargs: Any) -> KeywordsAITelemetry:
    return telemetry_to(receiver, "unrecorded", **kwargs)


@pytest.fixture
def only_keywordsai(threaded_otlp_receiver: OTLPReceiver) -> Iterator[KeywordsAITelemetry]:
    telemetry = _telemetry(threaded_otlp_receiver)
    yield telemetry
    telemetry.shutdown()


@task(name="step")
async def step() -> str:
    return "ok"


@workflow(name="flow")
async def flow() -> str:
    return await step()


def _traceparent(ctx: Context | None = None) -> str:
    carrier: dict[str, str] = {}
    inject(carrier, context=ctx)
    return carrier["traceparent"]


def _under(parent: SpanContext) -> context_api.Token[Context]:
    return context_api.attach(trace.set_span_in_context(NonRecordingSpan(parent)))


# -- what is and is not recorded --------------------------------------------------------------


def test_noise_is_not_recorded_and_kept_spans_inside_it_arrive_reparented(
    only_keywordsai: KeywordsAITelemetry, threaded_otlp_receiver: OTLPReceiver
) -> None:
    tracer = trace.get_tracer(FRAMEWORK)

    async def request() -> tuple[Any, str]:
        with tracer.start_as_current_span("GET /x") as server_span:
            assert not server_span.is_recording()
            return server_span.get_span_context(), await flow()

    noise, result = asyncio.run(request())
    assert result == "ok"
    assert only_keywordsai.flush(timeout=10)
    stats = only_keywordsai.stats
    assert (stats.not_recorded, stats.filtered, stats.delivered) == (1, 0, 2)
    spans = {s.name: s for s in threaded_otlp_receiver.spans}
    assert set(spans) == {"flow.workflow", "step.task"}
    # The workflow is a root now, linked to the server span that was never recorded.
    root = spans["flow.workflow"]
    assert root.parent_span_id == ""
    assert root.trace_id == f"{noise.trace_id:032x}"
    assert root.links == [(root.trace_id, f"{noise.span_id:016x}")]
    assert spans["step.task"].parent_span_id == root.span_id


def test_w3c_context_propagates_through_an_unrecorded_span(
    only_keywordsai: KeywordsAITelemetry,
) -> None:
    tracer = trace.get_tracer(FRAMEWORK)
    token = _under(REMOTE)
    try:
        with tracer.start_as_current_span("GET /remote") as span:
            assert not span.is_recording()
            ctx = span.get_span_context()
            assert (ctx.trace_id, ctx.trace_flags, ctx.trace_state) == (
                REMOTE.trace_id,
                REMOTE.trace_flags,
                REMOTE.trace_state,
            )
            assert ctx.span_id not in (0, REMOTE.span_id)
            assert not ctx.is_remote
            assert _traceparent() == f"00-{REMOTE.trace_id:032x}-{ctx.span_id:016x}-01"
    finally:
        context_api.detach(token)
    unsampled = SpanContext(
        REMOTE.trace_id, REMOTE.span_id, is_remote=True, trace_flags=TraceFlags(0)
    )
    token = _under(unsampled)
    try:
        with tracer.start_as_current_span("GET /unsampled") as span:
            assert _traceparent().endswith("-00")  # the upstream decision is kept
    finally:
        context_api.detach(token)
    with tracer.start_as_current_span("GET /root") as root:  # a new trace, sampled
        ctx = root.get_span_context()
        assert ctx.is_valid
        assert ctx.trace_flags.sampled
        with tracer.start_as_current_span("nested noise") as child:
            assert child.get_span_context().trace_id == ctx.trace_id
    assert only_keywordsai.stats.not_recorded == 4


def test_spans_inside_an_entity_and_our_own_spans_are_recorded(
    only_keywordsai: KeywordsAITelemetry, threaded_otlp_receiver: OTLPReceiver
) -> None:
    tracer = trace.get_tracer("some.http.client")

    @workflow(name="calls")
    def calls() -> None:
        with tracer.start_as_current_span("POST /llm") as inside:
            assert inside.is_recording()

    calls()
    with get_client().get_tracer().start_as_current_span("manual") as manual:
        assert manual.is_recording()  # the manual tracer is never noise
    with tracer.start_as_current_span("named", attributes={SPAN_KIND: "task"}) as named:
        assert named.is_recording()  # says what it is at start: kept
    assert only_keywordsai.flush(timeout=10)
    names = {s.name for s in threaded_otlp_receiver.spans}
    assert names == {"calls.workflow", "POST /llm", "manual", "named"}
    assert only_keywordsai.stats.not_recorded == 0


# -- destinations that want everything turn it off -------------------------------------------


def _records_noise() -> bool:
    with trace.get_tracer(FRAMEWORK).start_as_current_span("noise") as span:
        return span.is_recording()


def test_a_custom_exporter_receives_every_span() -> None:
    exporter = InMemorySpanExporter()
    telemetry = KeywordsAITelemetry(
        custom_exporter=exporter, is_batching_enabled=False, instruments=set()
    )
    try:
        assert _records_noise()
        assert [s.name for s in exporter.get_finished_spans()] == ["noise"]
        assert telemetry.stats.not_recorded == 0
    finally:
        telemetry.shutdown()


def test_filter_noise_off_records_every_span(threaded_otlp_receiver: OTLPReceiver) -> None:
    telemetry = _telemetry(threaded_otlp_receiver, filter_noise=False)
    try:
        assert _records_noise()
        assert telemetry.flush(timeout=10)
        assert [s.name for s in threaded_otlp_receiver.spans] == ["noise"]
    finally:
        telemetry.shutdown()


def test_a_local_exporter_next_to_keywordsai_records_every_span(
    threaded_otlp_receiver: OTLPReceiver, tmp_path: Any
) -> None:
    telemetry = _telemetry(threaded_otlp_receiver, local_exporter=f"jsonl:{tmp_path / 's.jsonl'}")
    try:
        assert _records_noise()
    finally:
        telemetry.shutdown()


def test_add_processor_with_a_filter_turns_it_off_a_named_one_does_not(
    only_keywordsai: KeywordsAITelemetry,
) -> None:
    named = InMemorySpanExporter()
    only_keywordsai.add_processor(named, name="audit", is_batching_enabled=False)
    assert not _records_noise()  # a named route only takes spans of entities naming it
    filtered = InMemorySpanExporter()
    only_keywordsai.add_processor(filtered, filter_fn=lambda span: True, is_batching_enabled=False)
    assert _records_noise()
    assert [s.name for s in filtered.get_finished_spans()] == ["noise"]
    assert named.get_finished_spans() == ()


class _Counting(SpanProcessor):
    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


def test_a_processor_the_application_adds_to_the_provider_gets_every_span(
    only_keywordsai: KeywordsAITelemetry,
) -> None:
    provider = trace.get_tracer_provider()
    add = getattr(provider, "add_span_processor", None)
    assert add is not None
    counting = _Counting()
    assert not _records_noise()
    add(counting)
    try:
        assert _records_noise()
        assert [s.name for s in counting.ended] == ["noise"]
    finally:
        # An SDK provider cannot remove a processor: take ours back out by hand.
        multi = provider._active_span_processor  # type: ignore[attr-defined]
        multi._span_processors = tuple(p for p in multi._span_processors if p is not counting)


# -- FastAPI's own spans ----------------------------------------------------------------------


def test_fastapis_own_request_spans_are_never_recorded(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    telemetry = _telemetry(threaded_otlp_receiver)
    app = FastAPI()
    app.add_middleware(KeywordsAIMiddleware)

    @app.get("/ask")
    async def ask() -> str:
        return await flow()

    async def requests() -> list[str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            answers = []
            for _ in range(5):
                response = await client.get("/ask")
                answers.append(response.json())
            return answers

    try:
        assert asyncio.run(requests()) == ["ok"] * 5
        assert telemetry.flush(timeout=10)
        stats = telemetry.stats
        assert stats.filtered == 0  # nothing recorded only to be dropped
        assert stats.not_recorded >= 5  # FastAPI's spans, at least one per request
        spans = threaded_otlp_receiver.spans
        assert sorted(s.name for s in spans) == ["flow.workflow"] * 5 + ["step.task"] * 5
        ids = {s.span_id for s in spans}
        for span in spans:
            assert span.parent_span_id == "" or span.parent_span_id in ids
    finally:
        telemetry.shutdown()


# -- the start-time decision never raises -----------------------------------------------------

_VALUES = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.binary(max_size=8),
    st.lists(st.text(max_size=3), max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(
    attributes=st.one_of(
        st.none(),
        st.dictionaries(
            st.sampled_from([SPAN_KIND, ENTITY_PATH, "http.method", ""]) | st.text(max_size=6),
            _VALUES,
            max_size=5,
        ),
    ),
    workflow_name=st.one_of(st.none(), st.text(max_size=5)),
    path=st.one_of(st.none(), st.text(max_size=5)),
)
def test_what_is_decided_at_start_agrees_with_the_exporters_filter(
    attributes: dict[str, Any] | None, workflow_name: str | None, path: str | None
) -> None:
    ctx = Context()
    if workflow_name is not None:
        ctx = context_api.set_value(WORKFLOW_NAME_KEY, workflow_name, ctx)
    if path is not None:
        ctx = context_api.set_value(ENTITY_PATH_KEY, path, ctx)
    # The oracle: the span recorded for real through our pipeline's stamping, then the
    # exporter's own test on it.
    provider = TracerProvider()
    provider.add_span_processor(Pipeline())
    recorded = provider.get_tracer(FRAMEWORK).start_span("s", context=ctx, attributes=attributes)
    recorded.end()
    assert isinstance(recorded, ReadableSpan)
    decided = noise_at_start(ctx, attributes)
    if decided:  # never skip a span that would have been kept
        assert is_noise(recorded)
    if all(isinstance(value, str) for value in (attributes or {}).values()):
        assert decided is is_noise(recorded)  # and miss no noise that is well-formed


def test_the_link_of_a_reparented_span_names_its_reason(
    only_keywordsai: KeywordsAITelemetry, threaded_otlp_receiver: OTLPReceiver
) -> None:
    with trace.get_tracer(FRAMEWORK).start_as_current_span("GET /"):
        asyncio.run(flow())
    assert only_keywordsai.flush(timeout=10)
    bodies = [json.loads(r.body) for r in threaded_otlp_receiver.requests if r.status == 200]
    links = [
        link
        for body in bodies
        for group in body["resourceSpans"]
        for scope in group["scopeSpans"]
        for span in scope["spans"]
        for link in span.get("links", [])
    ]
    assert [
        {kv["key"]: kv["value"]["stringValue"] for kv in link["attributes"]} for link in links
    ] == [{LINK_REASON: "filtered_parent"}]
