"""KeywordsAI's noise filter, and a self-consistent tree after it.

Noise is an auto-instrumented span outside every decorated entity (`is_noise`). The
KeywordsAI exporter drops it (`drop_noise`); a kept span whose parent was dropped is
re-parented, in what that exporter sends, onto its nearest kept ancestor (a root if
there is none), and its original parent stays as a span link with the attribute
``keywordsai.link.reason = "filtered_parent"``. A remote parent (another service's,
from an incoming ``traceparent``) counts as kept and is never rewritten.

Which ancestor that is gets decided at span start, when each span's noise status is
known (decorator spans carry ``traceloop.span.kind`` from creation; the pipeline stamps
``traceloop.entity.path`` on spans inside an entity before calling `note_start`). Two
entries on the SDK span object (it has no ``__slots__``) carry the answer, so nothing
outlives the span and a kept span under a kept parent costs one ``getattr``:

- on a span that is noise at start, where its children attach (``_NOISE_ANCHOR``:
  its nearest kept ancestor's ``SpanContext``, or None);
- on a span whose parent was noise at its start, where it attaches (``_NEW_PARENT``).

Edge case, decided here: noise status is read at start for the tree and at export for
dropping. A span that starts as noise and becomes kept later (the user sets
``traceloop.span.kind`` on it) is exported, but its children, decided at their start,
are re-parented past it (their link still names it). Attributes cannot be removed, so
the reverse does not happen through the OpenTelemetry API.

Only `drop_noise` rewrites anything, into new `ReadableSpan` objects: other exporters
(custom, local console/jsonl) receive the original spans and the full tree.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry.context import Context
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
from ._fast_span import SPAN_KEY

logger = logging.getLogger("keywordsai_tracing")

_NOISE_ANCHOR: Final = "_keywordsai_noise_anchor"
_NEW_PARENT: Final = "_keywordsai_new_parent"
_KEPT: Final[Any] = object()  # "no entry": the span (or its parent) is kept
_LINK_ATTRIBUTES: Final = {LINK_REASON: LINK_REASON_FILTERED_PARENT}


def is_noise(span: ReadableSpan) -> bool:
    """KeywordsAI's filter: auto-instrumented spans outside any decorated entity.

    A span is noise when it has neither ``traceloop.span.kind`` nor a non-empty
    ``traceloop.entity.path``, unless it comes from the manual tracer.
    """
    attributes = _plain_attributes(span)
    if SPAN_KIND in attributes or attributes.get(ENTITY_PATH):
        return False
    scope = span.instrumentation_scope
    return scope is None or scope.name != MANUAL_TRACER_NAME


def _plain_attributes(span: ReadableSpan) -> Mapping[str, object]:
    """The dict behind ``span.attributes`` when there is one (the public view costs a
    Python call per lookup, and a raised ``KeyError`` per missing key)."""
    held = getattr(span, "_attributes", None)
    if type(held) is dict:  # an ended span, see `_compact`
        return held
    plain = getattr(held, "_dict", None)  # the SDK's BoundedAttributes
    if type(plain) is dict:
        return plain
    return span.attributes or {}


def note_entity_start(span: Any, parent_context: Context) -> None:
    """At the start of a decorator span (never noise): re-parent it if its parent is noise."""
    try:
        anchor = getattr(parent_context.get(SPAN_KEY), _NOISE_ANCHOR, _KEPT)
        if anchor is not _KEPT:
            setattr(span, _NEW_PARENT, anchor)
    except Exception:  # a span type without a __dict__: it keeps its parent
        logger.debug("Could not record the kept ancestor of %r", span, exc_info=True)


def note_start(span: Any, parent_context: Context) -> None:
    """At the start of any other span, once its attributes are final for the filter:
    record where it attaches if its parent is noise, and where its children attach if it
    is noise itself."""
    try:
        anchor = getattr(parent_context.get(SPAN_KEY), _NOISE_ANCHOR, _KEPT)
        if anchor is not _KEPT:
            setattr(span, _NEW_PARENT, anchor)
        if is_noise(span):
            # A kept (or remote) parent is the nearest kept ancestor; none makes a root.
            setattr(span, _NOISE_ANCHOR, span.parent if anchor is _KEPT else anchor)
    except Exception:
        logger.debug("Could not record the kept ancestor of %r", span, exc_info=True)


def drop_noise(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """``spans`` without noise; a kept span whose parent was noise is replaced by a copy
    re-parented onto its nearest kept ancestor, linked to the original parent. Every
    other span is passed through as is."""
    kept: list[ReadableSpan] = []
    for span in spans:
        if is_noise(span):
            continue
        new_parent = getattr(span, _NEW_PARENT, _KEPT)
        kept.append(span if new_parent is _KEPT else reparented(span, new_parent))
    return kept


def reparented(span: ReadableSpan, new_parent: SpanContext | None) -> ReadableSpan:
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
