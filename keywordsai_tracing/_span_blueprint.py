"""Building a `LeanSpan` and its `SpanContext` without the SDK's constructors.

`SpanStarter` starts thousands of spans a second for one tracer, and most of what the
SDK's constructor does for each is the same every time: the three ``__init__``s (span,
readable span, attribute map) with their keyword arguments store fields that are the
tracer's (resource, scope, limits, sampler, processor flags) and set up empty
containers. A `Blueprint` is read off two spans the constructor built: the fields that
are the same object in both (or equal immutable values) are shared; each span gets its
own name, context, parent, kind, processor, locks and attribute dict. A generated
builder (as `dataclasses` generates an ``__init__``) then stores them in the
constructor's order, which keeps the fields in CPython's compact per-class layout.
`SpanStarter` uses a blueprint only after a copy made from it matched a constructed span
field for field; a field that is a new object in each constructed span (a future SDK's
per-span list, say) means no blueprint.

`local_context` builds the span context of a new span as the tuple ``SpanContext``
builds, without its checks (the ids are the SDK generator's, so valid), when a check at
import shows both give the same context.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.trace import SpanContext, SpanKind, Status, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE as _DEFAULT_STATE
from opentelemetry.trace.span import TraceState

from ._lean_span import LeanSpan

logger = logging.getLogger("keywordsai_tracing")

# What each span gets of its own; every other field of a `LeanSpan` (and of its
# attribute map) is the tracer's, the same object in every span it starts.
PER_SPAN = frozenset(
    {
        "_name",
        "_context",
        "_parent",
        "_kind",
        "_span_processor",
        "_lock",
        "_record_end_metrics",
        "_attributes",
    }
)
PER_MAP = frozenset({"_dict", "_lock"})
_IMMUTABLE = frozenset({str, int, float, bool, type(None), tuple, frozenset})


# A builder's own arguments, by the span field (or attribute-map field) they fill.
_ARGUMENTS = {
    "_name": "name",
    "_context": "context",
    "_parent": "parent",
    "_kind": "kind",
    "_span_processor": "processor",
}


@dataclass(frozen=True, slots=True)
class Blueprint:
    """What every span of one starter shares, as ``build``: a function (generated, as
    `dataclasses` generates an ``__init__``) that makes a span (not started) with one
    store per field in the SDK constructor's order, instead of the constructor's three
    ``__init__``s with keyword arguments. The order keeps a span's fields in CPython's
    compact per-class layout."""

    build: Callable[[str, SpanContext, SpanContext | None, SpanKind, Any], LeanSpan]


def _builder(
    span_fields: dict[str, Any], attribute_fields: dict[str, Any], span_class: type[LeanSpan]
) -> Callable[[str, SpanContext, SpanContext | None, SpanKind, Any], LeanSpan]:
    """Generate `Blueprint.build` for these fields (each a Python identifier)."""
    names = [*span_fields, *attribute_fields]
    if not all(isinstance(name, str) and name.isidentifier() for name in names):
        raise ValueError("a span field that is not an identifier")
    scope: dict[str, Any] = {
        "new": object.__new__,
        "span_class": span_class,
        "map_class": BoundedAttributes,
        "new_lock": threading.Lock,
    }
    lines = ["span = new(span_class)"]
    for index, (field, value) in enumerate(span_fields.items()):
        if field in _ARGUMENTS:
            lines.append(f"span.{field} = {_ARGUMENTS[field]}")
        elif field == "_lock":
            lines.append("span._lock = new_lock()")
        elif field == "_attributes":
            lines.append("held = new(map_class)")
            for entry, (key, shared) in enumerate(attribute_fields.items()):
                if key == "_lock":
                    lines.append("held._lock = new_lock()")
                elif key == "_dict":
                    lines.append("held._dict = {}")
                else:
                    scope[f"m{entry}"] = shared
                    lines.append(f"held.{key} = m{entry}")
            lines.append("span._attributes = held")
        else:
            scope[f"s{index}"] = value  # a placeholder (None) for other fields of its own
            lines.append(f"span.{field} = s{index}")
    lines.append("return span")
    source = "def build(name, context, parent, kind, processor):\n    " + "\n    ".join(lines)
    exec(compile(source, "<keywordsai_tracing span builder>", "exec"), scope)
    build: Callable[[str, SpanContext, SpanContext | None, SpanKind, Any], LeanSpan]
    build = scope["build"]
    return build


def _shared(
    first: dict[str, Any], second: dict[str, Any], own: frozenset[str]
) -> dict[str, Any] | None:
    """The fields of two freshly built objects that may be shared by every copy: the
    same object in both, or an equal immutable value (a `Status`, a number); None when
    a field that is not in ``own`` holds a new object each time (a future SDK's list,
    say), or when either lacks a field the other has, or one of ``own``."""
    if first.keys() != second.keys() or not own <= first.keys():
        return None
    fields: dict[str, Any] = {}
    for key, value in first.items():
        if key in own:
            fields[key] = None  # a placeholder, so a copy's fields keep the SDK's order
            continue
        other = second[key]
        same = value is other or (type(value) in _IMMUTABLE and value == other)
        if not same and type(value) is Status is type(other):
            same = (value.status_code, value.description) == (other.status_code, other.description)
        if not same:
            return None
        fields[key] = value
    return fields


def blueprint(build: Callable[[], LeanSpan], own: frozenset[str]) -> Blueprint | Literal[False]:
    """The shared fields of two spans ``build`` makes (``own``: each span's own), or False
    if they cannot be shared."""
    first, second = build(), build()
    if type(first._attributes) is not BoundedAttributes:
        return False
    spans = _shared(vars(first), vars(second), own)
    maps = _shared(vars(first._attributes), vars(second._attributes), PER_MAP)
    if spans is None or maps is None:
        logger.debug("No span blueprint: the SDK's spans hold fields of their own")
        return False
    return Blueprint(_builder(spans, maps, type(first)))


def probe_end_metrics() -> None:
    """A stand-in for the SDK's end-of-span metrics callback, in the blueprint check."""


def fields(span: LeanSpan) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """A span's fields and its attribute map's, in order, locks as their type."""

    def plain(fields: dict[str, Any]) -> list[tuple[str, Any]]:
        return [(key, type(v) if key == "_lock" else v) for key, v in fields.items()]

    span_fields = {k: v for k, v in vars(span).items() if k != "_attributes"}
    return plain(span_fields), plain(vars(span._attributes))


def _checked_context(
    trace_id: int, span_id: int, flags: TraceFlags, state: TraceState | None
) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags, trace_state=state)


def _direct_context(
    trace_id: int, span_id: int, flags: TraceFlags, state: TraceState | None
) -> SpanContext:
    """`SpanContext(trace_id, span_id, is_remote=False, ...)` for ids the SDK's generator
    made or a valid parent carried (so valid), without its checks: the tuple it builds."""
    fields = (trace_id, span_id, False, flags, _DEFAULT_STATE if state is None else state, True)
    context: SpanContext = tuple.__new__(SpanContext, fields)
    return context


def _pick_context_maker() -> Callable[[int, int, TraceFlags, TraceState | None], SpanContext]:
    """`_direct_context` if it gives what ``SpanContext(...)`` gives, else the latter."""
    try:
        state = TraceState([("k", "v")])
        for flags, trace_state in ((TraceFlags(TraceFlags.SAMPLED), None), (TraceFlags(0), state)):
            direct = _direct_context(0xABC, 0xDEF, flags, trace_state)
            checked = _checked_context(0xABC, 0xDEF, flags, trace_state)
            same = direct == checked and (direct.trace_id, direct.span_id, direct.is_valid) == (
                checked.trace_id,
                checked.span_id,
                checked.is_valid,
            )
            if not same or direct.trace_state != checked.trace_state:
                return _checked_context
        return _direct_context
    except Exception:
        return _checked_context


local_context = _pick_context_maker()
