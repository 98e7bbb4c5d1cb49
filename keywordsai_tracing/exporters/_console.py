"""`ConsoleTraceExporter`: each finished trace printed as one tree."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._tree import ANSI, ASCII_GLYPHS, PLAIN, DurationFormat, format_duration, render_tree
from ._util import LogOnce

_REMEMBERED_SPANS: Final = 16_384  # printed span ids kept to recognise late children
_REMEMBERED_TRACES: Final = 1_024  # traces printed in part, kept to label what follows


@dataclass
class _Trace:
    first_seen: float
    spans: list[ReadableSpan] = field(default_factory=list)


@dataclass(frozen=True)
class _Block:
    trace_id: int
    spans: list[ReadableSpan]
    header: str | None  # None: a complete tree under its local root


class _Bounded(OrderedDict[int, None]):
    """A set of ints that forgets the oldest beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def add(self, key: int) -> None:
        self[key] = None
        if len(self) > self.limit:
            self.popitem(last=False)


class ConsoleTraceExporter(SpanExporter):
    """Print each trace as an indented tree once its local root span has ended.

    A local root is a span whose parent is absent, remote, or already printed. The spans
    of a trace are buffered until then and the whole tree is written in one piece, so
    traces finishing at the same time never interleave. One line per span: name, kind,
    model, duration, token counts and, for failed spans, ``ERROR Type: message``.
    Children are ordered by start time::

        joke_workflow.workflow  workflow  1.24 s  trace 0af7651916cd43dd8448eb211c80319c
        ├─ joke_creation.task  task  412 ms
        │  └─ openai.chat  llm  gpt-4o-mini  405 ms  tokens 12→34
        └─ audience_reaction.task  task  3.05 ms  ERROR ValueError: booed

    Buffering is bounded: beyond ``max_traces`` traces or ``max_spans`` spans the oldest
    trace is printed early, as is a trace first seen more than ``max_wait`` seconds ago
    (checked whenever spans arrive); `force_flush` and `shutdown` print everything still
    buffered. Such trees are headed by a line saying the trace is incomplete.

    ``stream`` defaults to ``sys.stdout`` (looked up at each write). ANSI colours are used
    when the stream is a TTY and ``NO_COLOR`` is not set; ``color`` overrides both.
    ``format_duration`` (nanoseconds to text) and ``clock`` (seconds, monotonic) can be
    replaced, e.g. for stable output in tests.

    Thread-safe; never raises into the caller: a closed stream or a broken pipe makes
    ``export()`` return FAILURE and is logged once. Writing is synchronous and small. With
    ``KeywordsAITelemetry(is_batching_enabled=True)`` (the default) ``export()`` runs in
    the export thread, off the event loop; with ``False`` it runs inline where the span
    ended, so a slow stream would hold up that thread or event loop.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        color: bool | None = None,
        *,
        show_trace_id: bool = True,
        max_traces: int = 1_000,
        max_spans: int = 10_000,
        max_wait: float = 120.0,
        format_duration: DurationFormat = format_duration,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, limit in (("max_traces", max_traces), ("max_spans", max_spans)):
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"{name}: expected a positive int, got {limit!r}")
        if isinstance(max_wait, bool) or not isinstance(max_wait, int | float) or max_wait <= 0:
            raise ValueError(f"max_wait: expected a positive number, got {max_wait!r}")
        self._stream = stream
        self._color = color
        # https://no-color.org: any non-empty value turns automatic colours off.
        self._no_color = bool(os.environ.get("NO_COLOR"))
        self._show_trace_id = show_trace_id
        self._max_traces = max_traces
        self._max_spans = max_spans
        self._max_wait = float(max_wait)
        self._format_duration = format_duration
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: OrderedDict[int, _Trace] = OrderedDict()  # by first seen
        self._span_count = 0
        self._printed_spans = _Bounded(_REMEMBERED_SPANS)
        self._partial_traces = _Bounded(_REMEMBERED_TRACES)
        self._shutdown = False
        self._log_once = LogOnce()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Buffer ``spans``; print every trace (or late subtree) that is now complete."""
        try:
            with self._lock:
                if self._shutdown:
                    return SpanExportResult.FAILURE
                blocks = self._add(spans)
                blocks += self._evict()
                ok = self._print(blocks)
        except Exception:
            self._log_once("internal", "ConsoleTraceExporter failed to print spans", exc_info=True)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Print every buffered span now, trees without their root marked incomplete."""
        return self._flush_all("flushed before its root span ended")

    def shutdown(self) -> None:
        """Print what is still buffered (marked incomplete); later exports fail. Idempotent."""
        self._flush_all("root span not ended at shutdown", shutdown=True)

    # -- buffering (called with the lock held) ---------------------------------------------

    def _add(self, spans: Iterable[ReadableSpan]) -> list[_Block]:
        now = self._clock()
        roots: list[ReadableSpan] = []
        for span in spans:
            if span.context is None:
                continue
            trace_id = span.context.trace_id
            trace = self._pending.get(trace_id)
            if trace is None:
                trace = self._pending[trace_id] = _Trace(now)
            trace.spans.append(span)
            self._span_count += 1
            parent = span.parent
            if parent is None or parent.is_remote or parent.span_id in self._printed_spans:
                roots.append(span)
        # Roots are handled after the whole batch is buffered: a child that ended after its
        # parent but arrived in the same batch still joins the parent's tree.
        blocks = []
        for root in roots:
            block = self._take_subtree(root)
            if block is not None:
                blocks.append(block)
        return blocks

    def _take_subtree(self, root: ReadableSpan) -> _Block | None:
        trace_id, root_id = root.context.trace_id, root.context.span_id
        trace = self._pending.get(trace_id)
        if trace is None or root not in trace.spans:
            return None  # already printed with an earlier root of the same batch
        children: dict[int, list[ReadableSpan]] = {}
        for span in trace.spans:
            if span.parent is not None and span is not root:
                children.setdefault(span.parent.span_id, []).append(span)
        tree, frontier = [root], [root_id]
        while frontier:
            for child in children.pop(frontier.pop(), []):
                tree.append(child)
                frontier.append(child.context.span_id)
        taken = {id(span) for span in tree}
        trace.spans = [span for span in trace.spans if id(span) not in taken]
        self._span_count -= len(tree)
        if not trace.spans:
            del self._pending[trace_id]
        header = None
        parent = root.parent
        if trace_id in self._partial_traces or (
            parent is not None and parent.span_id in self._printed_spans
        ):
            header = f"… trace {trace_id:032x} continued (earlier spans printed above)"
            self._partial_traces.add(trace_id)
        return _Block(trace_id, tree, header)

    def _evict(self) -> list[_Block]:
        """Print traces early: the oldest beyond the caps, then those waiting too long."""
        blocks = []
        while self._pending and (
            len(self._pending) > self._max_traces or self._span_count > self._max_spans
        ):
            blocks.append(self._take_incomplete(next(iter(self._pending)), "buffer full"))
        deadline = self._clock() - self._max_wait
        while self._pending:
            trace_id, trace = next(iter(self._pending.items()))
            if trace.first_seen > deadline:
                break
            waited = f"root span not ended after {self._max_wait:g} s"
            blocks.append(self._take_incomplete(trace_id, waited))
        return blocks

    def _take_incomplete(self, trace_id: int, reason: str) -> _Block:
        trace = self._pending.pop(trace_id)
        self._span_count -= len(trace.spans)
        self._partial_traces.add(trace_id)
        return _Block(trace_id, trace.spans, f"… trace {trace_id:032x} incomplete ({reason})")

    def _flush_all(self, reason: str, shutdown: bool = False) -> bool:
        try:
            with self._lock:
                if self._shutdown:
                    return True
                self._shutdown = shutdown
                blocks = [self._take_incomplete(t, reason) for t in list(self._pending)]
                return self._print(blocks)
        except Exception:
            self._log_once("internal", "ConsoleTraceExporter failed to print spans", exc_info=True)
            return False

    # -- output ------------------------------------------------------------------------------

    def _print(self, blocks: list[_Block]) -> bool:
        if not blocks:
            return True
        for block in blocks:
            for span in block.spans:
                self._printed_spans.add(span.context.span_id)
        stream = self._stream if self._stream is not None else sys.stdout
        palette = ANSI if self._use_color(stream) else PLAIN
        text = "".join(
            render_tree(
                block.spans,
                palette,
                self._format_duration,
                block.header,
                palette.paint(palette.dim, f"  trace {block.trace_id:032x}")
                if self._show_trace_id
                else "",
            )
            for block in blocks
        )
        return self._write(stream, text)

    def _use_color(self, stream: TextIO) -> bool:
        if self._color is not None:
            return self._color
        if self._no_color:
            return False
        try:
            return bool(stream.isatty())
        except Exception:  # closed, detached, or not a real stream
            return False

    def _write(self, stream: TextIO, text: str) -> bool:
        try:
            encoding = getattr(stream, "encoding", None) or "utf-8"
            if not encoding.lower().replace("-", "").startswith("utf"):
                text = text.translate(ASCII_GLYPHS).replace("µs", "us")
                text = text.encode(encoding, "replace").decode(encoding)
            stream.write(text)
            stream.flush()
        except Exception as exc:  # closed stream, broken pipe, detached stdout, ...
            self._log_once(type(exc).__name__, "Cannot print traces to %r: %r", stream, exc)
            return False
        return True
