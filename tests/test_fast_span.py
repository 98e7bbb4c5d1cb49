"""`SpanStarter`: decorator spans started without the SDK's general path are the SDK's spans.

Each case starts spans both ways on the same provider and compares everything but the
random ids, or checks that the starter stepped aside where it would not be equivalent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    ReadableSpan,
    Span,
    SpanLimits,
    SpanProcessor,
    TracerProvider,
    sampling,
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

from keywordsai_tracing import (
    KeywordsAITelemetry,
    _fast_span,
    _span_blueprint,
    _state,
    task,
    workflow,
)
from keywordsai_tracing._fast_span import SpanStarter
from keywordsai_tracing._lean_span import LeanSpan

ATTRIBUTES: dict[str, str | int] = {"traceloop.entity.name": "step", "traceloop.entity.version": 3}


def _provider(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "fast"}), shutdown_on_exit=False, **kwargs
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _shape(span: object) -> str:
    """What kind of span this is: an SDK span (ours is a `LeanSpan`) or not recording."""
    return "sdk" if isinstance(span, Span) else type(span).__name__


def _same(fast: ReadableSpan, slow: ReadableSpan) -> None:
    assert isinstance(fast, LeanSpan)
    assert _shape(fast) == _shape(slow)
    assert (fast.name, fast.kind, fast.resource) == (slow.name, slow.kind, slow.resource)
    assert dict(fast.attributes or {}) == dict(slow.attributes or {})
    assert fast.instrumentation_scope == slow.instrumentation_scope
    assert fast.parent == slow.parent
    assert fast.context is not None
    assert slow.context is not None
    assert fast.context.trace_flags == slow.context.trace_flags
    assert fast.context.trace_state == slow.context.trace_state
    assert fast.context.is_remote is slow.context.is_remote is False
    assert fast.start_time is not None
    assert fast.end_time is not None


def _both(
    starter: SpanStarter, tracer: trace.Tracer, parent: Context, name: str = "step.task"
) -> tuple[Any, Any]:
    fast = starter.start(name, parent, dict(ATTRIBUTES))
    slow = tracer.start_span(name, context=parent, attributes=dict(ATTRIBUTES))
    fast.end()
    slow.end()
    return fast, slow


def test_root_and_child_spans_match_the_sdk() -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("keywordsai_tracing", "1")
    starter = SpanStarter(tracer)
    assert starter.fast
    fast_root, slow_root = _both(starter, tracer, Context())
    _same(fast_root, slow_root)
    assert fast_root.parent is None
    under = trace.set_span_in_context(slow_root, Context())
    fast_child, slow_child = _both(starter, tracer, under)
    _same(fast_child, slow_child)
    assert fast_child.context.trace_id == slow_root.context.trace_id
    assert fast_child.parent.span_id == slow_root.context.span_id
    assert len(exporter.get_finished_spans()) == 4  # processors saw start and end


def test_remote_parent_flags_and_trace_state_carry_over() -> None:
    provider, _ = _provider()
    tracer = provider.get_tracer("t")
    starter = SpanStarter(tracer)
    state = TraceState([("vendor", "x")])
    for flags in (TraceFlags(TraceFlags.SAMPLED), TraceFlags(0)):
        remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=flags, trace_state=state)
        parent = trace.set_span_in_context(NonRecordingSpan(remote), Context())
        fast, slow = _both(starter, tracer, parent)
        assert _shape(fast) == _shape(slow)
        assert fast.get_span_context().trace_flags == slow.get_span_context().trace_flags
        assert fast.get_span_context().trace_state == state
        assert fast.get_span_context().trace_id == 0xABC
        assert fast.is_recording() is False  # ended, or never recorded (not sampled)


class _Recorder(SpanProcessor):
    """Records the attributes each span has when processors first see it."""

    def __init__(self) -> None:
        self.at_start: list[dict[str, Any]] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.at_start.append(dict(span.attributes or {}))


def test_other_processors_see_the_attributes_on_start() -> None:
    provider, _ = _provider()
    recorder = _Recorder()
    provider.add_span_processor(recorder)
    SpanStarter(provider.get_tracer("t")).start("x", Context(), dict(ATTRIBUTES)).end()
    assert recorder.at_start == [ATTRIBUTES]


@pytest.mark.parametrize(
    "sampler",
    [
        sampling.ALWAYS_ON,
        sampling.ALWAYS_OFF,
        sampling.TraceIdRatioBased(0.0),
        sampling.ParentBasedTraceIdRatio(1.0),
        sampling.ParentBased(sampling.ALWAYS_OFF),
    ],
    ids=repr,
)
def test_every_stock_sampler_keeps_the_fast_path_and_decides(sampler: sampling.Sampler) -> None:
    provider, _exporter = _provider(sampler=sampler)
    tracer = provider.get_tracer("t")
    starter = SpanStarter(tracer)
    assert starter.fast
    fast, slow = _both(starter, tracer, Context())
    assert _shape(fast) == _shape(slow)
    fast_flags, slow_flags = (
        fast.get_span_context().trace_flags,
        slow.get_span_context().trace_flags,
    )
    assert fast_flags.sampled == slow_flags.sampled


class _DropSecrets(sampling.Sampler):
    """A user's sampler that reads span attributes."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Attributes = None,
        links: Sequence[Any] | None = None,
        trace_state: TraceState | None = None,
    ) -> sampling.SamplingResult:
        secret = (attributes or {}).get("traceloop.entity.name") == "secret"
        decision = sampling.Decision.DROP if secret else sampling.Decision.RECORD_AND_SAMPLE
        return sampling.SamplingResult(decision, {"sampled.by": "user"})

    def get_description(self) -> str:
        return "DropSecrets"


def test_a_custom_sampler_gets_the_sdk_path_with_our_attributes() -> None:
    provider, exporter = _provider(sampler=_DropSecrets())
    starter = SpanStarter(provider.get_tracer("t"))
    assert not starter.fast
    starter.start("kept", Context(), dict(ATTRIBUTES)).end()
    starter.start("dropped", Context(), {"traceloop.entity.name": "secret"}).end()
    (kept,) = exporter.get_finished_spans()
    assert kept.name == "kept"
    assert kept.attributes is not None
    assert kept.attributes["sampled.by"] == "user"


@pytest.mark.parametrize(
    "limits",
    [SpanLimits(max_span_attribute_length=4), SpanLimits(max_span_attributes=3)],
    ids=["value-length", "attribute-count"],
)
def test_limits_that_would_cut_our_attributes_take_the_sdk_path(limits: SpanLimits) -> None:
    provider, exporter = _provider(span_limits=limits)
    starter = SpanStarter(provider.get_tracer("t"))
    assert not starter.fast
    span = starter.start("x", Context(), {"a": "long value", "b": "1", "c": "2", "d": "3"})
    span.set_attribute("out", "another long value")
    span.end()
    (done,) = exporter.get_finished_spans()
    assert done.attributes is not None
    if limits.max_span_attribute_length is not None:
        assert done.attributes["a"] == "long"
        assert done.attributes["out"] == "anot"
    else:
        assert len(done.attributes) == 3
        assert done.dropped_attributes == 2


def test_a_span_starting_with_more_attributes_than_the_limit_takes_the_sdk_path() -> None:
    limit = 40  # room for ours: the fast path stays on for spans within it
    provider, exporter = _provider(span_limits=SpanLimits(max_span_attributes=limit))
    starter = SpanStarter(provider.get_tracer("t"))
    assert starter.fast
    many = {f"k{i}": str(i) for i in range(limit + 10)}  # a request's many metadata keys
    starter.start("crowded", Context(), many).end()
    starter.start("roomy", Context(), dict(ATTRIBUTES)).end()
    crowded, roomy = exporter.get_finished_spans()
    assert crowded.attributes is not None
    assert len(crowded.attributes) == limit
    assert crowded.dropped_attributes == 10
    assert dict(roomy.attributes or {}) == ATTRIBUTES


def test_set_attribute_on_an_ended_span_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider, exporter = _provider()
    starter = SpanStarter(provider.get_tracer("t"))
    span = starter.start("x", Context(), {})
    span.set_attribute("before", "end")
    span.end()
    with caplog.at_level(logging.WARNING):
        span.set_attribute("after", "end")
    (done,) = exporter.get_finished_spans()
    assert dict(done.attributes or {}) == {"before": "end"}
    assert "ended span" in caplog.text  # the SDK's own warning: same as set_attribute


def test_a_disabled_tracer_gives_non_recording_spans() -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("t")
    starter = SpanStarter(tracer)
    config = tracer._tracer_config  # type: ignore[attr-defined]
    tracer._set_tracer_config(type(config)(is_enabled=False))  # type: ignore[attr-defined]
    assert not starter.start("x", Context(), {}).is_recording()
    assert exporter.get_finished_spans() == ()


def test_an_sdk_whose_spans_differ_switches_the_fast_path_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Drifted(LeanSpan):  # a future SDK that sets something up differently
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._name = "renamed"

    monkeypatch.setattr(_fast_span, "LeanSpan", Drifted)
    provider, exporter = _provider()
    starter = SpanStarter(provider.get_tracer("t"))
    assert not starter.fast
    starter.start("x", Context(), {}).end()
    assert [span.name for span in exporter.get_finished_spans()] == ["x"]


def test_a_tracer_that_is_not_the_sdks_takes_its_own_path() -> None:
    starter = SpanStarter(trace.NoOpTracer())
    assert not starter.fast
    assert not starter.start("x", Context(), {"a": "b"}).is_recording()


def test_decorators_use_the_fast_path_and_nest(
    telemetry: KeywordsAITelemetry, exporter: InMemorySpanExporter
) -> None:
    runtime = _state.runtime
    assert runtime is not None
    assert runtime.starter.fast

    @task(name="step")
    def step(x: int) -> int:
        return x + 1

    @workflow(name="flow")
    def flow() -> int:
        return step(1)

    assert flow() == 2
    inner, outer = exporter.get_finished_spans()
    assert inner.parent is not None
    assert outer.context is not None
    assert inner.parent.span_id == outer.context.span_id
    assert inner.attributes is not None
    assert inner.attributes["traceloop.entity.input"] == '{"args": [1], "kwargs": {}}'
    assert inner.attributes["traceloop.entity.output"] == "2"
    assert inner.attributes["traceloop.workflow.name"] == "flow"


class _Calls(SpanProcessor):
    """Records which of its hooks the spans reach, in order."""

    def __init__(self, calls: list[tuple[str, str, str]], label: str) -> None:
        self.calls, self.label = calls, label

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.calls.append((self.label, "start", span.name))

    def _on_ending(self, span: Span) -> None:
        self.calls.append((self.label, "ending", span.name))

    def on_end(self, span: ReadableSpan) -> None:
        self.calls.append((self.label, "end", span.name))


@pytest.mark.parametrize("count", [1, 2])
def test_processors_get_the_same_calls_whether_or_not_the_multi_processor_is_skipped(
    count: int,
) -> None:
    """With one processor on the provider the span calls it directly; the calls it gets
    are those the SDK's multi-processor would make (with two, it makes them)."""
    calls: dict[str, list[tuple[str, str, str]]] = {"fast": [], "slow": []}
    for way in ("fast", "slow"):
        provider = TracerProvider(shutdown_on_exit=False)
        for index in range(count):
            provider.add_span_processor(_Calls(calls[way], f"p{index}"))
        tracer = provider.get_tracer("t")
        if way == "fast":
            span = SpanStarter(tracer).start("s", Context(), dict(ATTRIBUTES))
            assert isinstance(span, LeanSpan)
            skipped = span._span_processor is not provider._active_span_processor
            assert skipped is (count == 1)
        else:
            span = tracer.start_span("s", attributes=dict(ATTRIBUTES))
        span.end()
    assert calls["fast"] == calls["slow"]
    assert [call[1] for call in calls["fast"]] == ["start"] * count + ["ending"] * count + [
        "end"
    ] * count


def test_spans_are_built_from_a_blueprint_with_the_constructors_fields() -> None:
    """On this SDK every span comes from the blueprint, and holds the same fields, in the
    same order and with the same values, as the SDK's constructor gives it."""
    provider, _ = _provider()
    starter = SpanStarter(provider.get_tracer("t"))
    span: Any = starter.start("x", Context(), dict(ATTRIBUTES))
    assert isinstance(starter._blueprint, _span_blueprint.Blueprint)
    built: Any = starter._construct(span._span_processor, "x", span.context, None)
    built._attributes._dict = span._attributes._dict
    built._start_time, built._record_end_metrics = span._start_time, span._record_end_metrics

    def fields(of: Any) -> list[tuple[str, Any]]:
        return [
            (k, type(v) if k == "_lock" else v) for k, v in vars(of).items() if k != "_attributes"
        ]

    assert fields(span) == fields(built)
    assert fields(span._attributes) == fields(built._attributes)
    assert span._lock is not built._lock
    assert span._attributes._lock is not built._attributes._lock
    span.end()


def test_an_sdk_giving_each_span_an_object_of_its_own_gets_no_blueprint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class OwnList(LeanSpan):  # a future SDK's span with a per-span container
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pending: list[str] = []

    monkeypatch.setattr(_fast_span, "LeanSpan", OwnList)
    provider, exporter = _provider()
    starter = SpanStarter(provider.get_tracer("t"))
    first: Any = starter.start("a", Context(), {})
    second: Any = starter.start("b", Context(), {})
    assert starter._blueprint is False
    assert first._pending is not second._pending
    first.end()
    second.end()
    assert [span.name for span in exporter.get_finished_spans()] == ["a", "b"]


def test_span_contexts_are_built_directly_only_while_that_gives_the_sdks_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _span_blueprint._pick_context_maker() is _span_blueprint._direct_context
    made = _span_blueprint.local_context(5, 6, TraceFlags(1), None)
    assert made == SpanContext(5, 6, is_remote=False, trace_flags=TraceFlags(1))
    assert made.is_valid
    assert made.trace_state == TraceState()

    def drifted(trace_id: int, span_id: int, flags: TraceFlags, state: Any) -> SpanContext:
        fields = (trace_id, span_id, False, flags, state, True, "a new field")
        built: SpanContext = tuple.__new__(SpanContext, fields)
        return built

    monkeypatch.setattr(_span_blueprint, "_direct_context", drifted)
    assert _span_blueprint._pick_context_maker() is _span_blueprint._checked_context


def test_a_processor_added_while_a_span_is_open_does_not_see_it_when_it_was_the_only_one() -> None:
    """The README's caveat of calling a sole processor directly, pinned."""
    calls: list[tuple[str, str, str]] = []
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(_Calls(calls, "first"))
    span = SpanStarter(provider.get_tracer("t")).start("s", Context(), dict(ATTRIBUTES))
    provider.add_span_processor(_Calls(calls, "late"))
    span.end()
    assert [label for label, _, _ in calls] == ["first", "first", "first"]
