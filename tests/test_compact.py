"""`compact`: ended spans held in plain containers read exactly as before."""

from __future__ import annotations

import gc
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import KeywordsAITelemetry, task
from keywordsai_tracing._compact import compact
from keywordsai_tracing._otlp_json import encode_span


def _ended(limits: SpanLimits | None = None, **extra: Any) -> ReadableSpan:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=limits, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("linked") as linked:
        pass
    links = [trace.Link(linked.get_span_context(), {"k": 1})] if extra.get("links") else []
    with tracer.start_as_current_span("s", links=links) as span:
        span.set_attributes({"a": "text", "n": 3, "f": 1.5, "b": True})
        if extra.get("sequence"):
            span.set_attribute("seq", ["x", "y"])
        for name in extra.get("events", ()):
            span.add_event(name, {"at": 1})
    return exporter.get_finished_spans()[-1]


def _view(span: ReadableSpan) -> tuple[Any, ...]:
    return (
        dict(span.attributes or {}),
        span.events,
        span.links,
        span.dropped_attributes,
        span.dropped_events,
        span.dropped_links,
        span.to_json(),
        encode_span(span),
    )


def test_a_plain_span_reads_the_same_from_untracked_containers() -> None:
    span = _ended()
    before = _view(span)
    compact(span)
    assert _view(span) == before
    held: Any = span
    assert type(held._attributes) is dict
    assert not gc.is_tracked(held._attributes)  # the point: nothing for the collector
    assert held._events == ()
    assert held._links == ()


def test_sequence_attributes_read_the_same() -> None:
    span = _ended(sequence=True)
    before = _view(span)
    compact(span)
    assert _view(span) == before
    assert span.attributes is not None
    assert span.attributes["seq"] == ("x", "y")


def test_events_links_and_drops_keep_their_containers() -> None:
    span = _ended(SpanLimits(max_span_attributes=2), events=["e1", "e2"], links=True)
    before = _view(span)
    assert span.dropped_attributes == 2
    compact(span)
    assert _view(span) == before
    held: Any = span
    assert type(held._attributes) is not dict
    assert len(span.events) == 2
    assert len(span.links) == 1


def test_compacting_twice_or_a_foreign_span_changes_nothing() -> None:
    span = _ended()
    compact(span)
    before = _view(span)
    compact(span)
    assert _view(span) == before
    foreign = ReadableSpan(name="made by hand", attributes={"a": "b"})
    compact(foreign)
    assert dict(foreign.attributes or {}) == {"a": "b"}


def test_spans_reach_exporters_compacted_and_complete(
    telemetry: KeywordsAITelemetry, exporter: InMemorySpanExporter
) -> None:
    @task(name="step")
    def step(text: str) -> str:
        trace.get_current_span().add_event("thinking")
        return text.upper()

    @task(name="plain")
    def plain() -> int:
        return 1

    step("hi")
    plain()
    with_event, without = exporter.get_finished_spans()
    assert [event.name for event in with_event.events] == ["thinking"]
    assert with_event.attributes is not None
    assert with_event.attributes["traceloop.entity.output"] == '"HI"'
    held: Any = without
    assert type(held._attributes) is dict
    assert without.attributes is not None
    assert without.attributes["traceloop.entity.name"] == "plain"
    assert without.events == ()


def test_the_postprocess_callback_gets_the_span_as_the_sdk_made_it(
    exporter: InMemorySpanExporter,
) -> None:
    seen: list[str] = []

    def callback(span: ReadableSpan) -> None:
        held: Any = span
        seen.append(type(held._attributes).__name__)

    telemetry = KeywordsAITelemetry(
        custom_exporter=exporter,
        is_batching_enabled=False,
        instruments=set(),
        span_postprocess_callback=callback,
    )
    try:

        @task(name="step")
        def step() -> int:
            return 1

        step()
    finally:
        telemetry.shutdown()
    assert seen == ["BoundedAttributes"]
    (span,) = exporter.get_finished_spans()
    held: Any = span
    assert type(held._attributes) is dict
