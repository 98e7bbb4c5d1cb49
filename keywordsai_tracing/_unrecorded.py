"""Spans that no destination would receive are never recorded.

The KeywordsAI exporter drops noise (`_noise.is_noise`): an auto-instrumented span that
starts outside every decorated entity, such as FastAPI's own server span and its
send/receive spans. When every destination of the active telemetry would drop such a
span (the KeywordsAI exporter with its noise filter, no custom or local exporter, no
``add_processor`` filter that might want it, and no processor of the application's own
on the provider), the tracers of our provider decide so when the span starts: they hand
back a `NonRecordingSpan` instead of recording one, and no processor ever sees it.

That span's context is the one a recorded span would have had (its parent's trace id,
flags and trace state, or a new sampled trace; a fresh span id), so W3C trace context
propagates unchanged. It carries `_noise`'s mark of the nearest kept ancestor, so a kept
span started inside it (a workflow under FastAPI's server span) is re-parented exactly
as if the noise span had been recorded and then filtered: the exported tree stays
self-consistent, and the original parent stays as a link.

Spans a gated tracer does record are started by `_fast_span.SpanStarter` where that is
equivalent (plain start attributes, no links, no explicit start time): `LeanSpan`s, as
decorator spans are.

Only tracers of third parties are gated (decorator and manual spans are never noise),
only on a provider of our own with the default sampler, and only while the decision is
certain at start: a span that starts as noise and gets ``traceloop.span.kind`` later
is not recorded when gating is on (with a custom exporter or ``filter_noise=False`` it
is, as before).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Tracer, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
)

from . import _attributes as attrs
from ._fast_span import SpanStarter, is_default_sampler
from ._noise import mark_kept_ancestor, names_entity, nearest_kept
from ._pipeline import Dispatcher

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NO_STATE = TraceState()
_OURS = frozenset({attrs.DECORATOR_TRACER_NAME, attrs.MANUAL_TRACER_NAME})


def noise_at_start(ctx: Context, attributes: Mapping[str, object] | None) -> bool:
    """The noise test of `_noise.is_noise`, as the pipeline's start-time stamping would
    leave the span: outside every entity, and not naming a kind or path itself."""
    if (
        ctx.get(attrs.WORKFLOW_NAME_KEY)
        or ctx.get(attrs.ENTITY_PATH_KEY)
        or ctx.get(attrs.PROCESSORS_KEY)
    ):
        return False
    return not attributes or not names_entity(attributes)


def unrecorded_span(ctx: Context, ids: IdGenerator) -> NonRecordingSpan:
    """The span a noise span would have been, minus the recording."""
    parent = trace_api.get_current_span(ctx).get_span_context()
    if parent.is_valid:
        trace_id, flags, state = parent.trace_id, parent.trace_flags, parent.trace_state
        ancestor: SpanContext | None = nearest_kept(parent)
    else:
        trace_id, flags, state, ancestor = ids.generate_trace_id(), _SAMPLED, _NO_STATE, None
    span_context = SpanContext(
        trace_id, ids.generate_span_id(), is_remote=False, trace_flags=flags, trace_state=state
    )
    mark_kept_ancestor(span_context, ancestor)
    return NonRecordingSpan(span_context)


class GatedTracer(Tracer):
    """An SDK tracer that does not record spans the active telemetry would drop, and
    starts the others the fast way where that is equivalent."""

    starter: SpanStarter | None = None

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Any = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        pipeline = Dispatcher.active
        if pipeline is not None and pipeline.skips_noise and _only_ours(self):
            ctx = context if context is not None else context_api.get_current()
            if noise_at_start(ctx, attributes):
                pipeline.count_not_recorded()
                return unrecorded_span(ctx, self.id_generator)
        starter = self.starter
        if (
            starter is not None
            and not links
            and start_time is None
            and record_exception
            and set_status_on_exception
        ):
            ctx = context if context is not None else context_api.get_current()
            span = starter.start_foreign(name, ctx, kind, attributes)
            if span is not None:
                return span
        return super().start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )


def _only_ours(tracer: Tracer) -> bool:
    """No processor but our dispatcher on the provider (one the application added later
    wants every span)."""
    processors = getattr(tracer.span_processor, "_span_processors", None)
    return type(processors) is tuple and len(processors) == 1 and type(processors[0]) is Dispatcher


class GatedTracerProvider(TracerProvider):
    """Our own provider: third parties' tracers are `GatedTracer`s (when the sampler is
    the default one, whose decision the unrecorded span reproduces)."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace_api.Tracer:
        tracer = super().get_tracer(*args, **kwargs)
        if (
            type(tracer) is not Tracer
            or tracer._instrumentation_scope.name in _OURS
            or not is_default_sampler(self.sampler)
        ):
            return tracer
        gated = GatedTracer.__new__(GatedTracer)
        gated.__dict__.update(vars(tracer))
        gated.starter = SpanStarter(gated)
        return gated
