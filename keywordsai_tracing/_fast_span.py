"""Start decorator spans for less than the SDK tracer's general-purpose path costs.

``Tracer.start_span`` validates every attribute (a recursive clean and a lock per span)
and runs the sampler, the tracer's own metrics and the span's setup in general form. Our
decorator attributes are plain values we built (or, for a request's parameters, already
validated) ourselves, so `SpanStarter` writes them straight into the span's attribute
map and inlines the default sampler (``ParentBased(ALWAYS_ON)``); the span, its ids,
flags, trace state, parent and processors are the SDK's own. It is used only where that
is equivalent:

- the tracer is an SDK tracer with the internals this module reads (checked once);
- the sampler is one of the SDK's own (they add no attributes); with any other sampler,
  or span limits that would cut or drop our attributes, every span takes the SDK path
  (so does a span starting with more attributes than the limit allows);
- a self-test at construction starts a root and a child span both ways on a private
  provider, runs the same operations on both (attributes, an event, a link, a status)
  and compares them; any difference (a future SDK changing its internals) switches the
  fast path off for good, with a DEBUG line.

The spans it starts are `LeanSpan`s (see `_lean_span`), built from a blueprint of the
fields every span of the tracer shares (`_span_blueprint`; the SDK constructor where no
blueprint can be made), with the span context built as the tuple ``SpanContext``
builds. When the provider has a single span processor, the span calls it directly
instead of through the SDK's multi-processor (which would only loop over that one).
`GatedTracer` starts a third party's spans (an LLM instrumentation's) here too, when
their start attributes are plain values and they have no links or explicit start time;
anything else takes the SDK path.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import (
    ReadableSpan,
    SpanLimits,
    SynchronousMultiSpanProcessor,
    Tracer,
    TracerProvider,
    _Span,
    sampling,
)
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, TraceFlags
from opentelemetry.trace.status import StatusCode

from ._lean_span import LeanSpan
from ._span_blueprint import PER_SPAN, Blueprint, local_context, probe_end_metrics
from ._span_blueprint import blueprint as make_blueprint
from ._span_blueprint import fields as span_fields

logger = logging.getLogger("keywordsai_tracing")

AttributeValue = str | int | float | bool | tuple[str | int | float | bool, ...]
# More attributes than any decorator span carries, with room for the user's own.
_ATTRIBUTE_HEADROOM = 32
# The context key under which OpenTelemetry keeps the current span (found, not imported).
SPAN_KEY = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, Context())))
_SAMPLED = int(TraceFlags.SAMPLED)
_RANDOM = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
# Trace flags by (sampled, random trace id), as the SDK's tracer sets them.
_FLAGS = {
    (sampled, random): TraceFlags((_SAMPLED if sampled else 0) | (_RANDOM if random else 0))
    for sampled in (False, True)
    for random in (False, True)
}
# ``_Span.__init__``'s leading parameters, in the order `SpanStarter.start` passes them.
_SPAN_PARAMETERS = (
    "name",
    "context",
    "parent",
    "sampler",
    "trace_config",
    "resource",
    "attributes",
    "events",
    "links",
    "kind",
    "span_processor",
    "instrumentation_info",
    "record_exception",
    "set_status_on_exception",
    "limits",
    "instrumentation_scope",
)
_RECORD_AND_SAMPLE = sampling.Decision.RECORD_AND_SAMPLE
_DROP = sampling.Decision.DROP
_PLAIN = frozenset({str, bool, int, float})
_SDK_SPANS = (LeanSpan, _Span)
_PARENT_BASED_DEFAULTS = (
    ("_root", sampling.ALWAYS_ON),
    ("_remote_parent_sampled", sampling.ALWAYS_ON),
    ("_remote_parent_not_sampled", sampling.ALWAYS_OFF),
    ("_local_parent_sampled", sampling.ALWAYS_ON),
    ("_local_parent_not_sampled", sampling.ALWAYS_OFF),
)


class SpanStarter:
    """Starts spans for one SDK tracer, fast when that is equivalent (see module doc)."""

    __slots__ = (
        "_blueprint",
        "_default_sampler",
        "_end_metrics",
        "_fast",
        "_max_attributes",
        "_tracer",
    )

    def __init__(self, tracer: trace.Tracer, *, self_test: bool = True) -> None:
        self._tracer = tracer
        self._fast = False
        self._default_sampler = False
        self._end_metrics = False
        self._max_attributes: int | None = None
        self._blueprint: Blueprint | Literal[False] | None = None  # False: none can be made
        if not _has_internals(tracer):
            return
        assert isinstance(tracer, Tracer)
        limits: SpanLimits = tracer._span_limits
        if limits.max_span_attribute_length is not None:
            return
        max_attributes = limits.max_span_attributes
        if max_attributes is not None and max_attributes < _ATTRIBUTE_HEADROOM:
            return
        if not _stock_sampler(tracer.sampler):
            return
        self._max_attributes = max_attributes
        self._default_sampler = is_default_sampler(tracer.sampler)
        parameters = list(inspect.signature(_Span.__init__).parameters)
        if parameters[1 : len(_SPAN_PARAMETERS) + 1] != list(_SPAN_PARAMETERS):
            return  # `start` passes these positionally
        self._end_metrics = "record_end_metrics" in parameters
        self._fast = True
        if self_test and not _agrees_once(tracer):
            self._fast = False
            logger.debug("Fast decorator spans disabled: the SDK's spans differ from ours")

    @property
    def fast(self) -> bool:
        """Whether spans skip the SDK's general-purpose start path."""
        return self._fast

    def start(
        self,
        name: str,
        parent: Context,
        attributes: dict[str, AttributeValue],
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Span:
        """Start a span named ``name`` under ``parent`` carrying ``attributes``.

        The span takes ``attributes`` over: the caller must not use the dict again."""
        tracer: Any = self._tracer  # an SDK `Tracer` whenever ``_fast`` (see __init__)
        limit = self._max_attributes
        if not self._fast:
            return self._tracer.start_span(name, context=parent, kind=kind, attributes=attributes)
        if not tracer._tracer_config.is_enabled or (limit is not None and len(attributes) > limit):
            # the SDK tracer's own method: a `GatedTracer`'s would come back here
            return Tracer.start_span(tracer, name, context=parent, kind=kind, attributes=attributes)
        current: Any = parent.get(SPAN_KEY)  # trace.get_current_span(parent), minus an ABC check
        if current is None or (type(current) not in _SDK_SPANS and not isinstance(current, Span)):
            current = trace.INVALID_SPAN
        parent_context: SpanContext | None = current.get_span_context()
        if parent_context is not None and parent_context.is_valid:
            trace_id = parent_context.trace_id
            random = bool(_RANDOM & parent_context.trace_flags)
        else:
            parent_context = None
            trace_id = tracer.id_generator.generate_trace_id()
            random = _RANDOM != 0 and tracer.id_generator.is_trace_id_random()
        if self._default_sampler:
            sampled = parent_context is None or parent_context.trace_flags.sampled
            decision = _RECORD_AND_SAMPLE if sampled else _DROP
            trace_state = None if parent_context is None else parent_context.trace_state
        else:
            result = tracer.sampler.should_sample(parent, trace_id, name, kind, attributes, ())
            decision, trace_state = result.decision, result.trace_state
        context = local_context(
            trace_id,
            tracer.id_generator.generate_span_id(),
            _FLAGS[decision is _RECORD_AND_SAMPLE, random],
            trace_state,
        )
        end_metrics = tracer._tracer_metrics.start_span(parent_context, decision)
        if decision is _DROP:
            return NonRecordingSpan(context)
        processor = tracer.span_processor
        if type(processor) is SynchronousMultiSpanProcessor:
            processors = processor._span_processors
            if len(processors) == 1:  # the provider's only processor: called directly
                processor = processors[0]
        blueprint = self._blueprint
        if blueprint is None:
            blueprint = self._blueprint = self._make_blueprint(processor)
        if blueprint:
            span = blueprint.build(name, context, parent_context, kind, processor)
            if self._end_metrics:
                span._record_end_metrics = end_metrics
        else:
            span = self._construct(processor, name, context, parent_context, kind, end_metrics)
        span._attributes._dict = attributes  # type: ignore[union-attr]
        span.start(parent_context=parent)
        return span

    def _make_blueprint(self, processor: Any) -> Blueprint | Literal[False]:
        """What every span shares (`Blueprint`), read off spans the SDK's constructor
        built; False (every span is constructed) unless a copy made from it has exactly
        the fields the constructor gives a span, the locks aside."""
        own = PER_SPAN if self._end_metrics else PER_SPAN - {"_record_end_metrics"}
        try:
            blueprint = make_blueprint(lambda: self._construct(processor), own)
            if not blueprint:
                return False
            parent = SpanContext(1, 2, is_remote=True, trace_flags=_FLAGS[True, False])
            args = ("probe", SpanContext(1, 3, is_remote=False), parent, SpanKind.CLIENT)
            built = self._construct(processor, *args, end_metrics=probe_end_metrics)
            copied = blueprint.build(*args, processor)
            if self._end_metrics:
                copied._record_end_metrics = probe_end_metrics
            if span_fields(built) != span_fields(copied):  # the order of fields too
                logger.debug("No span blueprint: the SDK's constructor sets spans up its own way")
                return False
            return blueprint
        except Exception:
            logger.debug("No span blueprint: building a span raised", exc_info=True)
            return False

    def _construct(
        self,
        processor: Any,
        name: str = "blueprint",
        context: SpanContext = trace.INVALID_SPAN_CONTEXT,
        parent_context: SpanContext | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        end_metrics: Any = None,
    ) -> LeanSpan:
        """A `LeanSpan` built by the SDK's constructor (not started)."""
        tracer: Any = self._tracer
        return LeanSpan(
            name,
            context,
            parent_context,
            tracer.sampler,
            None,
            tracer.resource,
            None,
            None,
            (),
            kind,
            processor,
            tracer.instrumentation_info,
            True,
            True,
            tracer._span_limits,
            tracer._instrumentation_scope,
            **({"record_end_metrics": end_metrics} if self._end_metrics else {}),
        )

    def start_foreign(
        self, name: str, parent: Context, kind: SpanKind, attributes: object
    ) -> Span | None:
        """A third party's span started here, if its start ``attributes`` are plain values
        (as the SDK would keep them unchanged); None where only the SDK path would do."""
        if not self._fast:
            return None
        plain = plain_attributes(attributes)
        if plain is None:
            return None
        return self.start(name, parent, plain, kind)


def plain_attributes(attributes: object) -> dict[str, AttributeValue] | None:
    """A copy of ``attributes`` when every key is a non-empty string and every value a
    ``str``/``bool``/``int``/``float`` (what the SDK's cleaning leaves as it is)."""
    if not attributes:
        return {}
    if not isinstance(attributes, Mapping):
        return None
    plain: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if type(key) is not str or not key or type(value) not in _PLAIN:
            return None
        plain[key] = value
    return plain


def _has_internals(tracer: object) -> bool:
    """The SDK tracer internals `SpanStarter.start` reads are all there."""
    if not isinstance(tracer, Tracer):
        return False
    names = ("_span_limits", "_instrumentation_scope", "_tracer_metrics", "_tracer_config")
    if not all(hasattr(tracer, name) for name in names):
        return False
    return hasattr(tracer.id_generator, "is_trace_id_random")


def _stock_sampler(sampler: object, depth: int = 0) -> bool:
    """One of the SDK's samplers, delegating (if at all) only to the SDK's samplers."""
    if depth > 4 or type(sampler).__module__ != sampling.__name__:
        return False
    delegates = [value for value in vars(sampler).values() if isinstance(value, sampling.Sampler)]
    return all(_stock_sampler(delegate, depth + 1) for delegate in delegates)


def is_default_sampler(sampler: object) -> bool:
    if type(sampler) not in (sampling.ParentBased, sampling._ParentBasedAlwaysOn):
        return False
    return all(getattr(sampler, name, None) is want for name, want in _PARENT_BASED_DEFAULTS)


def _fingerprint(span: ReadableSpan, parent: Span | None) -> tuple[object, ...]:
    """What must be the same whichever way a span was started (ids aside)."""
    context = span.get_span_context()
    assert context is not None
    parent_context = parent.get_span_context() if parent is not None else None
    return (
        span.name,
        span.kind,
        list((span.attributes or {}).items()),  # the order too
        span.dropped_attributes,
        span.resource,
        span.instrumentation_scope,
        span.parent == parent_context,
        context.trace_flags,
        context.trace_state,
        context.is_remote,
        (context.trace_id == parent_context.trace_id) if parent_context else True,
        [(event.name, dict(event.attributes or {})) for event in span.events],
        span.dropped_events,
        [(link.context, dict(link.attributes or {})) for link in span.links],
        span.dropped_links,
        (span.status.status_code, span.status.description),
        span.start_time is not None,
        span.end_time is not None,
    )


def _exercise(span: Span, root: Span) -> None:
    """What instrumentations and decorators do to a span, in one go."""
    span.set_attribute("c", "out")
    span.set_attribute("a", "again")  # a rewritten key moves last
    span.set_attribute("n", 1.5)
    span.set_attribute("t", ("x", "y"))
    span.add_event("e", {"k": 1})
    span.add_link(root.get_span_context(), {"l": "x"})
    span.set_status(Status(StatusCode.ERROR, "bad"))


# Self-test results by span class: the SDK's internals do not change while a process
# runs, and some libraries ask for a tracer (a `GatedTracer`, a starter) per call.
_AGREED: dict[type, bool] = {}


def _agrees_once(tracer: Tracer) -> bool:
    agreed = _AGREED.get(LeanSpan)
    if agreed is None:
        agreed = _AGREED[LeanSpan] = _agrees(tracer)
    return agreed


def _agrees(tracer: Tracer) -> bool:
    """Start a root and a child both ways on a private provider, exercise them alike,
    and compare the results."""
    try:
        provider = TracerProvider(
            sampler=sampling.DEFAULT_ON,
            resource=tracer.resource,
            span_limits=tracer._span_limits,
            shutdown_on_exit=False,
        )
        probe = provider.get_tracer(
            tracer._instrumentation_scope.name, tracer._instrumentation_scope.version
        )
        starter = SpanStarter(probe, self_test=False)
        attributes: dict[str, AttributeValue] = {"a": "text", "b": 7}
        root_context = Context()
        fast_root = starter.start("root", root_context, dict(attributes))
        slow_root = probe.start_span("root", context=root_context, attributes=attributes)
        child_parent = trace.set_span_in_context(slow_root, Context())
        fast_child = starter.start("child", child_parent, dict(attributes), SpanKind.CLIENT)
        slow_child = probe.start_span(
            "child", context=child_parent, kind=SpanKind.CLIENT, attributes=attributes
        )
        _exercise(fast_child, slow_root)
        _exercise(slow_child, slow_root)
        spans = (fast_root, slow_root, fast_child, slow_child)
        for span in spans:
            span.end()
        if not all(isinstance(span, ReadableSpan) for span in spans):
            return False
        readable: list[Any] = list(spans)
        return bool(
            _fingerprint(readable[0], None) == _fingerprint(readable[1], None)
            and _fingerprint(readable[2], slow_root) == _fingerprint(readable[3], slow_root)
            and isinstance(readable[0].attributes, Mapping)
        )
    except Exception:
        logger.debug("Fast decorator span self-test raised", exc_info=True)
        return False
