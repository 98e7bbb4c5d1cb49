"""Render finished spans as an indented tree of one-line summaries (pure functions)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

DurationFormat = Callable[[int], str]

_MAX_ERROR_CHARS: Final = 200
_LLM_KEYS: Final = (
    "gen_ai.system",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.operation.name",
    "llm.request.type",
)
_HTTP_KEYS: Final = ("http.request.method", "http.method")
_HTTP_STATUS_KEYS: Final = ("http.response.status_code", "http.status_code")
_INPUT_KEYS: Final = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
_OUTPUT_KEYS: Final = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
_TOTAL_KEYS: Final = ("llm.usage.total_tokens", "gen_ai.usage.total_tokens")
# What replaces our non-ASCII glyphs on a stream whose encoding lacks them.
ASCII_GLYPHS: Final = str.maketrans({"├": "|", "└": "`", "─": "-", "│": "|", "→": "->", "…": "..."})


@dataclass(frozen=True)
class Palette:
    """ANSI escape sequences (all empty for plain text)."""

    bold: str = ""
    dim: str = ""
    red: str = ""
    yellow: str = ""
    cyan: str = ""
    magenta: str = ""
    reset: str = ""

    def paint(self, code: str, text: str) -> str:
        return f"{code}{text}{self.reset}" if code else text


PLAIN: Final = Palette()
ANSI: Final = Palette(
    bold="\x1b[1m",
    dim="\x1b[2m",
    red="\x1b[1;31m",
    yellow="\x1b[33m",
    cyan="\x1b[36m",
    magenta="\x1b[35m",
    reset="\x1b[0m",
)


def format_duration(nanoseconds: int) -> str:
    """Three significant digits in µs, ms or s: ``"850 µs"``, ``"40.5 ms"``, ``"1.24 s"``."""
    if nanoseconds < 1_000_000:
        value, unit = nanoseconds / 1_000, "µs"
    elif nanoseconds < 1_000_000_000:
        value, unit = nanoseconds / 1_000_000, "ms"
    else:
        value, unit = nanoseconds / 1_000_000_000, "s"
    if value >= 100 or unit == "µs":
        return f"{value:.0f} {unit}"
    if value >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def _first(attributes: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None and value != "":
            return value
    return None


def _count(attributes: Mapping[str, Any], keys: Iterable[str]) -> int | None:
    value = _first(attributes, keys)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return None


def kind_label(span: ReadableSpan) -> str:
    """``traceloop.span.kind`` (workflow, task, ...); ``llm`` for LLM calls; the OTel kind
    (client, server, ...) for other non-internal spans; else ``""``."""
    attributes = span.attributes or {}
    kind = attributes.get("traceloop.span.kind")
    if isinstance(kind, str) and kind:
        return kind
    if _first(attributes, _LLM_KEYS) is not None:
        return "llm"
    if span.kind is not SpanKind.INTERNAL or _first(attributes, _HTTP_KEYS) is not None:
        return span.kind.name.lower()
    return ""


def tokens_label(attributes: Mapping[str, Any]) -> str:
    """``tokens 12→34`` (input→output), or ``tokens 46`` when only the total is known."""
    prompt, completion = _count(attributes, _INPUT_KEYS), _count(attributes, _OUTPUT_KEYS)
    if prompt is not None or completion is not None:
        shown = ["?" if n is None else str(n) for n in (prompt, completion)]
        return f"tokens {shown[0]}→{shown[1]}"
    total = _count(attributes, _TOTAL_KEYS)
    return f"tokens {total}" if total is not None else ""


def error_label(span: ReadableSpan) -> str:
    """``Type: message`` from the last exception event, else the status description."""
    text = ""
    for event in reversed(span.events):
        if event.name == "exception" and event.attributes:
            kind = str(event.attributes.get("exception.type", "") or "")
            message = str(event.attributes.get("exception.message", "") or "")
            text = f"{kind}: {message}" if kind and message else kind or message
            break
    if not text:
        text = span.status.description or ""
    text = " ".join(text.split())
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 1] + "…"
    return text


def span_line(span: ReadableSpan, palette: Palette, duration: DurationFormat) -> str:
    """One span: name, kind, model, duration, tokens, HTTP status, error."""
    attributes = span.attributes or {}
    parts = [palette.paint(palette.bold, span.name or "<unnamed>")]
    kind = kind_label(span)
    if kind:
        parts.append(palette.paint(palette.cyan, kind))
    model = _first(attributes, ("gen_ai.request.model", "gen_ai.response.model"))
    if model is not None:
        parts.append(palette.paint(palette.magenta, str(model)))
    if span.start_time is not None and span.end_time is not None:
        parts.append(duration(max(span.end_time - span.start_time, 0)))
    tokens = tokens_label(attributes)
    if tokens:
        parts.append(tokens)
    http_status = _count(attributes, _HTTP_STATUS_KEYS)
    if http_status is not None:
        code = palette.red if http_status >= 500 else ""
        parts.append(palette.paint(code, f"HTTP {http_status}"))
    if span.status.status_code is StatusCode.ERROR:
        message = error_label(span)
        parts.append(palette.paint(palette.red, f"ERROR {message}" if message else "ERROR"))
    return "  ".join(parts)


def _span_id(span: ReadableSpan) -> int:
    return span.context.span_id if span.context is not None else 0


def _order(span: ReadableSpan) -> tuple[int, int]:
    return (span.start_time or 0, _span_id(span))


def forest(
    spans: Sequence[ReadableSpan],
) -> tuple[list[ReadableSpan], dict[int, list[ReadableSpan]]]:
    """Top spans (parent absent from ``spans``) and children by parent id, by start time."""
    ids = {_span_id(span) for span in spans}
    tops: list[ReadableSpan] = []
    children: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent
        if parent is None or parent.span_id not in ids or parent.span_id == _span_id(span):
            tops.append(span)
        else:
            children.setdefault(parent.span_id, []).append(span)
    for members in children.values():
        members.sort(key=_order)
    tops.sort(key=_order)
    return tops, children


def render_tree(
    spans: Sequence[ReadableSpan],
    palette: Palette,
    duration: DurationFormat,
    header: str | None = None,
    root_suffix: str = "",
) -> str:
    """The tree as text, one line per span, each line ending in a newline.

    Without ``header`` each top span (normally the one local root) starts at column 0,
    followed by ``root_suffix``; with ``header`` the top spans hang under the header line.
    """
    tops, children = forest(spans)
    lines: list[str] = []
    if header is None:
        for top in tops:
            lines.append(span_line(top, palette, duration) + root_suffix)
            _walk(lines, children.get(_span_id(top), []), children, palette, duration)
    else:
        lines.append(palette.paint(palette.yellow, header))
        _walk(lines, tops, children, palette, duration)
    return "".join(line + "\n" for line in lines)


def _walk(
    lines: list[str],
    members: list[ReadableSpan],
    children: dict[int, list[ReadableSpan]],
    palette: Palette,
    duration: DurationFormat,
) -> None:
    """Append ``members`` and their descendants depth first (no recursion limit)."""
    stack: list[tuple[ReadableSpan, str, str]] = []  # span, its line prefix, children's
    _push(stack, members, "", palette)
    while stack:
        span, prefix, child_prefix = stack.pop()
        lines.append(prefix + span_line(span, palette, duration))
        _push(stack, children.get(_span_id(span), []), child_prefix, palette)


def _push(
    stack: list[tuple[ReadableSpan, str, str]],
    members: list[ReadableSpan],
    indent: str,
    palette: Palette,
) -> None:
    """Push ``members`` (already in display order) so that they pop in that order."""
    for index in range(len(members) - 1, -1, -1):
        last = index == len(members) - 1
        branch = palette.paint(palette.dim, "└─ " if last else "├─ ")
        pipe = "   " if last else palette.paint(palette.dim, "│  ")
        stack.append((members[index], indent + branch, indent + pipe))
