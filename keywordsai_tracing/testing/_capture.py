"""`CapturedSpans`: the spans a test produced, with lookups, trees and deterministic views.

Used by the ``keywordsai_spans`` fixture of `keywordsai_tracing.testing.pytest_plugin`;
usable on its own as ``KeywordsAITelemetry(custom_exporter=capture.exporter,
is_batching_enabled=False)``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Sequence

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind

from keywordsai_tracing.exporters._tree import kind_label

__all__ = ["CapturedSpans", "normalized"]

# The fake clock of deterministic views: the n-th distinct instant is n seconds.
_TICK_NS = 1_000_000_000


class CapturedSpans:
    """Every span ended while the capture's exporter was installed, in memory.

    ``spans`` lists them in the order they ended. With ``deterministic=True`` every view
    (``spans``, ``find``, ``tree``, ...) shows copies with sequential ids and fake
    timestamps instead (see `normalized`), so whole spans can be compared to snapshots.
    """

    def __init__(self, *, deterministic: bool = False) -> None:
        self.exporter = InMemorySpanExporter()
        self.deterministic = deterministic

    @property
    def spans(self) -> list[ReadableSpan]:
        """The finished spans, in the order they ended."""
        finished = list(self.exporter.get_finished_spans())
        return normalized(finished) if self.deterministic else finished

    def __len__(self) -> int:
        return len(self.exporter.get_finished_spans())

    def clear(self) -> None:
        """Forget the spans captured so far (later spans are still captured)."""
        self.exporter.clear()

    def find(
        self, name: str | None = None, kind: str | SpanKind | None = None
    ) -> list[ReadableSpan]:
        """Spans with this name and kind, in the order they ended.

        ``kind`` is the KeywordsAI kind (``"workflow"``, ``"task"``, ``"agent"``,
        ``"tool"``, ``"llm"`` for LLM calls) or an OpenTelemetry `SpanKind`.
        """
        return [span for span in self.spans if _matches(span, name, kind)]

    def one(self, name: str | None = None, kind: str | SpanKind | None = None) -> ReadableSpan:
        """The only span with this name and kind; AssertionError if none or several."""
        found = self.find(name, kind)
        if len(found) != 1:
            raise AssertionError(
                f"expected one span with name={name!r} kind={kind!r}, found {len(found)}; "
                f"captured: {[span.name for span in self.spans]}"
            )
        return found[0]

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        """The captured direct children of ``span``, in the order they started."""
        context = _context(span)
        return _by_start(
            child
            for child in self.spans
            if child.parent is not None
            and child.parent.span_id == context.span_id
            and child.parent.trace_id == context.trace_id
        )

    def roots(self) -> list[ReadableSpan]:
        """Spans whose parent was not captured (usually: the root of each trace)."""
        spans = self.spans
        ids = {(_context(span).trace_id, _context(span).span_id) for span in spans}
        return _by_start(
            span
            for span in spans
            if span.parent is None or (span.parent.trace_id, span.parent.span_id) not in ids
        )

    def tree(self, label: Callable[[ReadableSpan], str] | None = None) -> str:
        """The captured spans as an indented tree, one span a line, two spaces a level::

            joke_workflow.workflow
              joke_creation.task
                openai.chat

        Roots and siblings are in the order they started. ``label`` (default: the span
        name) chooses what each line shows.
        """
        show = label or (lambda span: span.name)
        lines: list[str] = []
        spans = self.spans
        children: dict[tuple[int, int], list[ReadableSpan]] = {}
        for span in spans:
            if span.parent is not None:
                key = (span.parent.trace_id, span.parent.span_id)
                children.setdefault(key, []).append(span)

        def walk(span: ReadableSpan, depth: int) -> None:
            lines.append("  " * depth + show(span))
            context = _context(span)
            for child in _by_start(children.get((context.trace_id, context.span_id), [])):
                walk(child, depth + 1)

        for root in self.roots():
            walk(root, 0)
        return "\n".join(lines)

    def assert_tree(self, expected: str) -> None:
        """Assert that `tree()` equals ``expected`` (dedented; blank edges ignored)."""
        want = textwrap.dedent(expected).strip("\n").rstrip()
        got = self.tree()
        if got != want:
            raise AssertionError(f"span tree differs.\nexpected:\n{want}\n\ncaptured:\n{got}")


def normalized(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """Copies of ``spans`` (same order) with deterministic ids and timestamps.

    Trace ids are 1, 2, ... in the order each trace's first span started; span ids
    likewise across all spans (a parent or link outside ``spans`` gets the next number
    when first met). Timestamps come from a fake clock: the n-th distinct instant among
    all starts, ends and events is n seconds. Stable across runs as long as the code
    under test starts and ends its spans in the same order.
    """
    trace_ids: dict[int, int] = {}
    span_ids: dict[int, int] = {}

    def ids(context: SpanContext) -> SpanContext:
        trace_id = trace_ids.setdefault(context.trace_id, len(trace_ids) + 1)
        span_id = span_ids.setdefault(context.span_id, len(span_ids) + 1)
        return SpanContext(
            trace_id, span_id, context.is_remote, context.trace_flags, context.trace_state
        )

    for span in _by_start(spans):
        ids(_context(span))
        if span.parent is not None:
            ids(span.parent)
    instants = sorted(
        {
            *(t for span in spans for t in (span.start_time, span.end_time) if t is not None),
            *(event.timestamp for span in spans for event in span.events),
        }
    )
    clock = {instant: (n + 1) * _TICK_NS for n, instant in enumerate(instants)}

    def copy(span: ReadableSpan) -> ReadableSpan:
        return ReadableSpan(
            name=span.name,
            context=ids(_context(span)),
            parent=ids(span.parent) if span.parent is not None else None,
            resource=span.resource,
            attributes=span.attributes,
            events=[
                Event(event.name, event.attributes, clock[event.timestamp]) for event in span.events
            ],
            links=[Link(ids(link.context), link.attributes) for link in span.links],
            kind=span.kind,
            status=span.status,
            start_time=clock.get(span.start_time) if span.start_time is not None else None,
            end_time=clock.get(span.end_time) if span.end_time is not None else None,
            instrumentation_scope=span.instrumentation_scope,
        )

    return [copy(span) for span in spans]


def _context(span: ReadableSpan) -> SpanContext:
    context: SpanContext | None = span.context
    if context is None:  # only a hand-made ReadableSpan lacks one
        raise ValueError(f"span {span.name!r} has no span context")
    return context


def _by_start(spans: Iterable[ReadableSpan]) -> list[ReadableSpan]:
    """Stable sort by start time (ties keep the order in which the spans ended)."""
    return sorted(spans, key=lambda span: span.start_time or 0)


def _matches(span: ReadableSpan, name: str | None, kind: str | SpanKind | None) -> bool:
    if name is not None and span.name != name:
        return False
    if isinstance(kind, SpanKind):
        return span.kind is kind
    return kind is None or kind_label(span) == kind
