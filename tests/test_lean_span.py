"""`LeanSpan`: a span started by `SpanStarter` behaves as the SDK's own span under any
sequence of operations, allocates its event and link containers only when used, loses
nothing to threads racing for the first event, and hands itself to the processors.
Third parties' spans on our provider are `LeanSpan`s where that is equivalent.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider, _Span
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from keywordsai_tracing import KeywordsAITelemetry, _state, workflow
from keywordsai_tracing._fast_span import SpanStarter
from keywordsai_tracing._lean_span import LeanSpan

START = {"traceloop.entity.name": "step", "n": 1}
# Room for our attributes (the fast path needs it) but few enough events, links and event
# attributes that a sequence of operations reaches every limit.
LIMITS = SpanLimits(max_span_attributes=32, max_events=3, max_links=2, max_event_attributes=2)
OTHER = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))


class Custom:
    """A value the SDK stores as its ``str``."""

    def __str__(self) -> str:
        return "custom"


def _provider(limits: SpanLimits = LIMITS) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "lean"}),
        span_limits=limits,
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


KEYS = st.one_of(
    st.sampled_from([f"k{i}" for i in range(40)] + ["n", "traceloop.entity.name"]),
    st.sampled_from(["", 7, None]),  # invalid keys: dropped and counted by the SDK
)
VALUES = st.one_of(
    st.text(max_size=8),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.none(),
    st.binary(max_size=4),
    st.lists(st.one_of(st.text(max_size=3), st.integers()), max_size=3),
    st.tuples(st.booleans(), st.booleans()),
    # tuples the lean path keeps as they are (one plain type) and ones it must not
    st.lists(st.text(max_size=3), max_size=3).map(tuple),
    st.lists(st.floats(allow_nan=False), min_size=1, max_size=2).map(tuple),
    st.lists(st.one_of(st.integers(), st.booleans(), st.none()), max_size=3).map(tuple),
    st.builds(Custom),
    st.sampled_from([StatusCode.ERROR, TraceFlags(1)]),  # int subclasses
)
PLAIN_VALUES = st.one_of(st.text(max_size=8), st.integers(), st.booleans())
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, VALUES),
        st.tuples(st.just("set_many"), st.dictionaries(st.sampled_from(["a", "b", "n"]), VALUES)),
        st.tuples(st.just("event"), st.text(max_size=4), st.dictionaries(KEYS, PLAIN_VALUES)),
        st.tuples(st.just("link"), st.dictionaries(st.sampled_from(["x", "y"]), PLAIN_VALUES)),
        st.tuples(st.just("status"), st.sampled_from(list(StatusCode)), st.text(max_size=4)),
        st.tuples(st.just("rename"), st.text(max_size=6)),
        st.tuples(st.just("exception"), st.text(max_size=6)),
        st.tuples(st.just("end")),
    ),
    max_size=60,
)


def _apply(span: Any, operation: tuple[Any, ...]) -> str | None:
    """Run one operation; what it raised, by type name."""
    kind, *args = operation
    try:
        if kind == "set":
            span.set_attribute(*args)
        elif kind == "set_many":
            span.set_attributes(*args)
        elif kind == "event":
            span.add_event(args[0], args[1])
        elif kind == "link":
            span.add_link(OTHER, args[0])
        elif kind == "status":
            span.set_status(Status(args[0], args[1] if args[0] is StatusCode.ERROR else None))
        elif kind == "rename":
            span.update_name(args[0])
        elif kind == "exception":
            span.record_exception(ValueError(args[0]))
        elif kind == "end" and span.end_time is None:
            span.end()
    except Exception as exc:
        return type(exc).__name__
    return None


def _view(span: ReadableSpan) -> tuple[object, ...]:
    """Everything an exporter can read of a span, ids and times aside."""
    return (
        span.name,
        span.kind,
        list((span.attributes or {}).items()),
        span.dropped_attributes,
        [(event.name, dict(event.attributes or {})) for event in span.events],
        span.dropped_events,
        [(link.context, dict(link.attributes or {})) for link in span.links],
        span.dropped_links,
        (span.status.status_code, span.status.description),
        span.end_time is not None,
    )


@settings(max_examples=150, deadline=None)
@given(operations=OPERATIONS)
def test_any_sequence_of_operations_leaves_it_as_the_sdks_span(
    operations: list[tuple[Any, ...]],
) -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("t")
    starter = SpanStarter(tracer)
    assert starter.fast
    lean = starter.start("s", Context(), dict(START), SpanKind.CLIENT)
    sdk = tracer.start_span("s", context=Context(), kind=SpanKind.CLIENT, attributes=START)
    assert isinstance(lean, LeanSpan)
    assert type(sdk) is _Span
    for operation in operations:
        assert _apply(lean, operation) == _apply(sdk, operation), operation
        assert _view(lean) == _view(sdk), operation  # the invariant, after every step
    for span in (lean, sdk):
        if span.end_time is None:
            span.end()
    exported_lean, exported_sdk = exporter.get_finished_spans()
    assert exported_lean is lean  # handed over, not copied
    assert _view(exported_lean) == _view(exported_sdk)


def test_no_event_or_link_container_until_the_first_one() -> None:
    provider, _ = _provider()
    span: Any = SpanStarter(provider.get_tracer("t")).start("s", Context(), {})
    assert span._events == ()
    assert span._links == ()
    assert (span.events, span.links, span.dropped_events, span.dropped_links) == ((), (), 0, 0)
    span.add_event("first")
    span.add_link(OTHER)
    assert [event.name for event in span.events] == ["first"]
    assert [link.context for link in span.links] == [OTHER]
    span.end()


def test_threads_racing_for_the_first_event_lose_none() -> None:
    provider, _ = _provider(SpanLimits(max_events=10_000, max_links=10_000))
    starter = SpanStarter(provider.get_tracer("t"))
    threads, per_thread = 8, 40
    for _ in range(20):
        span = starter.start("s", Context(), {})
        barrier = threading.Barrier(threads)

        def add(span: Any = span, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            for i in range(per_thread):
                span.add_event(f"e{i}")
                span.add_link(OTHER)

        workers = [threading.Thread(target=add) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert len(span.events) == threads * per_thread
        assert len(span.links) == threads * per_thread
        span.end()


def test_an_ended_span_refuses_every_change(caplog: pytest.LogCaptureFixture) -> None:
    provider, exporter = _provider()
    span = SpanStarter(provider.get_tracer("t")).start("s", Context(), dict(START))
    span.end()
    before = _view(exporter.get_finished_spans()[0])
    span.set_attribute("late", "x")
    span.set_attribute("n", 2)
    span.add_event("late")
    span.add_link(OTHER)
    span.set_status(Status(StatusCode.ERROR, "late"))
    assert _view(exporter.get_finished_spans()[0]) == before
    assert "ended span" in caplog.text


def test_a_third_partys_span_is_lean_where_that_is_equivalent(
    telemetry: KeywordsAITelemetry, exporter: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("some.llm.library")
    plain = {"gen_ai.system": "openai", "llm.request.type": "chat", "n": 2, "x": 0.5, "ok": True}
    made: dict[str, Any] = {}

    @workflow(name="flow")
    def flow() -> None:
        made["plain"] = tracer.start_span("plain", kind=SpanKind.CLIENT, attributes=plain)
        made["sequence"] = tracer.start_span("sequence", attributes={"tags": ["a", "b"]})
        made["linked"] = tracer.start_span("linked", links=[Link(OTHER)])
        made["timed"] = tracer.start_span("timed", start_time=1_000)
        made["bad key"] = tracer.start_span("bad key", attributes={"": "x", "k": "v"})
        for span in made.values():
            span.end()

    flow()
    assert isinstance(made["plain"], LeanSpan)
    for name in ("sequence", "linked", "timed", "bad key"):
        assert type(made[name]) is _Span, name  # the SDK's path, with its cleaning
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["plain"].kind is SpanKind.CLIENT
    assert {k: v for k, v in (spans["plain"].attributes or {}).items() if k in plain} == plain
    assert (spans["sequence"].attributes or {})["tags"] == ("a", "b")
    assert [link.context for link in spans["linked"].links] == [OTHER]
    assert spans["timed"].start_time == 1_000
    assert dict(spans["bad key"].attributes or {}).get("k") == "v"
    assert spans["bad key"].dropped_attributes == 1
    flow_span = spans["flow.workflow"]
    assert flow_span.context is not None
    for name in made:
        parent = spans[name].parent
        assert parent is not None
        assert parent.span_id == flow_span.context.span_id


def test_decorator_spans_are_lean(
    telemetry: KeywordsAITelemetry, exporter: InMemorySpanExporter
) -> None:
    runtime = _state.runtime
    assert runtime is not None

    @workflow(name="flow")
    def flow() -> int:
        return 1

    flow()
    (span,) = exporter.get_finished_spans()
    assert runtime.starter.fast
    assert isinstance(span, LeanSpan)
    assert (span.attributes or {})["traceloop.entity.output"] == "1"


def test_an_ended_span_holds_no_lock_of_its_own() -> None:
    provider, exporter = _provider()
    starter = SpanStarter(provider.get_tracer("t"))
    first: Any = starter.start("a", Context(), {})
    second: Any = starter.start("b", Context(), {})
    assert first._lock is not second._lock
    first.end()
    second.end()
    assert first._lock is second._lock  # one for every ended span: nothing per span to collect
    first.set_attribute("late", "x")  # still refused, under the shared lock
    assert "late" not in (exporter.get_finished_spans()[0].attributes or {})
