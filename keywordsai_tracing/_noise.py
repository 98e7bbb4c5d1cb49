"""KeywordsAI's noise filter, and a self-consistent tree after it.

Noise is an auto-instrumented span outside every decorated entity (`is_noise`). The
KeywordsAI exporter drops it (`drop_noise`); a kept span whose parent was dropped is
re-parented, in what that exporter sends, onto its nearest kept ancestor (a root if
there is none), and its original parent stays as a span link with the attribute
``keywordsai.link.reason = "filtered_parent"``. A remote parent (another service's,
from an incoming ``traceparent``) counts as kept and is never rewritten.

Which ancestor that is gets decided at span start, when each span's noise status is
known (decorator spans carry ``traceloop.span.kind`` from creation; the pipeline stamps
``traceloop.entity.path`` on spans inside an entity before calling `note_start`). A noise
span's own `SpanContext` then gets a hidden attribute: its nearest kept ancestor's
`SpanContext` (its parent's, or the one its noise parent carries), or None. That context
object is the very ``parent`` of each child, started in any thread and still after it
ended (the SDK copies a span at its end but keeps the context objects), so at export a
kept span finds its new parent with one ``getattr`` on its parent, and nothing outlives
the spans. Decorator spans, never noise, cost nothing at start. Every public read of
the context (ids, flags, equality) is unchanged.

Edge case, decided here: noise status is read at start for the tree and at export for
dropping. A span that starts as noise and becomes kept later (the user sets
``traceloop.span.kind`` on it) is exported, but its children are still re-parented past
it (their link names it). Attributes cannot be removed, so the reverse does not happen
through the OpenTelemetry API.

Only `drop_noise` rewrites anything, into new `ReadableSpan` objects: other exporters
(custom, local console/jsonl) receive the original spans and the full tree. Spans that
never went through our pipeline (an `OTLPHttpExporter` on a provider of its own) carry
no mark: they are filtered as before, without re-parenting.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext

from ._attributes import (
    ENTITY_PATH,
    LINK_REASON,
    LINK_REASON_FILTERED_PARENT,
    MANUAL_TRACER_NAME,
    SPAN_KIND,
)
from ._compact import plain_attributes

logger = logging.getLogger("keywordsai_tracing")

# Set on the SpanContext of a span that is noise at its start: its nearest kept ancestor.
_KEPT_ANCESTOR: Final = "_keywordsai_kept_ancestor"
_LINK_ATTRIBUTES: Final = MappingProxyType({LINK_REASON: LINK_REASON_FILTERED_PARENT})
_mark_failed = False  # logged once: an OpenTelemetry whose SpanContext takes no attribute


def is_noise(span: ReadableSpan) -> bool:
    """KeywordsAI's filter: auto-instrumented spans outside any decorated entity.

    A span is noise when it has neither ``traceloop.span.kind`` nor a non-empty
    ``traceloop.entity.path``, unless it comes from the manual tracer.
    """
    if names_entity(plain_attributes(span)):
        return False
    scope = span.instrumentation_scope
    return scope is None or scope.name != MANUAL_TRACER_NAME


def names_entity(attributes: Mapping[str, object]) -> bool:
    """Whether ``attributes`` make a span part of an entity: a ``traceloop.span.kind``,
    or a non-empty ``traceloop.entity.path``."""
    return SPAN_KIND in attributes or bool(attributes.get(ENTITY_PATH))


def note_start(span: ReadableSpan) -> None:
    """At the start of a span that is not a decorator's, once the pipeline stamped it:
    if it is noise, mark its `SpanContext` with its nearest kept ancestor."""
    try:
        if not is_noise(span):
            return
        noise = span.get_span_context()
        if noise is not None:
            mark_kept_ancestor(noise, nearest_kept(span.parent))
    except Exception:  # never into user code; the span's children keep their parent id
        _report_mark_failed()


def nearest_kept(parent: SpanContext | None) -> SpanContext | None:
    """The nearest kept ancestor of a noise span whose parent is ``parent``: the parent
    itself, or the one a noise parent hands on."""
    return getattr(parent, _KEPT_ANCESTOR, parent)


def mark_kept_ancestor(noise: SpanContext, ancestor: SpanContext | None) -> None:
    """Mark the context of a noise span with its nearest kept ancestor (never raises)."""
    try:
        object.__setattr__(noise, _KEPT_ANCESTOR, ancestor)
    except Exception:
        _report_mark_failed()


def _report_mark_failed() -> None:
    global _mark_failed
    if not _mark_failed:
        _mark_failed = True
        logger.debug("Cannot mark noise spans; kept children keep their parent", exc_info=True)


def drop_noise(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """``spans`` without noise; a kept span whose parent was noise is replaced by a copy
    re-parented onto its nearest kept ancestor, linked to the original parent. Every
    other span is passed through as is."""
    kept: list[ReadableSpan] = []
    for span in spans:
        if is_noise(span):
            continue
        parent = span.parent
        ancestor = nearest_kept(parent)
        kept.append(span if ancestor is parent else _reparented(span, ancestor))
    return kept


def _reparented(span: ReadableSpan, new_parent: SpanContext | None) -> ReadableSpan:
    """A copy of ``span`` under ``new_parent`` with a link to its original parent.

    The copy shares the original's (immutable, ended) attribute and event containers,
    so dropped counts and the encoder's fast paths carry over; the original is untouched.
    """
    original = span.parent
    if original is None:
        return span
    held: Any = span
    links: Sequence[Link] = (*span.links, Link(original, _LINK_ATTRIBUTES))
    if span.dropped_links:
        bounded: BoundedList[Link] = BoundedList(None)
        bounded.extend(links)
        bounded.dropped = span.dropped_links
        links = bounded
    return ReadableSpan(
        name=span.name,
        context=span.get_span_context(),
        parent=new_parent,
        resource=span.resource,
        attributes=getattr(held, "_attributes", None) or span.attributes,
        events=getattr(held, "_events", None) or span.events,
        links=links,
        kind=span.kind,
        instrumentation_info=getattr(held, "_instrumentation_info", None),
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
