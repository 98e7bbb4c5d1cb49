"""Local exporters: console trace trees, OTLP/JSON lines files, and the spec factory."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from keywordsai_tracing import KeywordsAITelemetry, task, workflow
from keywordsai_tracing._config import Settings
from keywordsai_tracing._otlp_json import encode_span
from keywordsai_tracing.exporters import (
    ConsoleTraceExporter,
    JsonLinesFileExporter,
    exporter_from_spec,
    format_duration,
    read_spans,
)

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
TRACE_1 = f"{1:032x}"
RED, RESET = "\x1b[1;31m", "\x1b[0m"


class SequentialIds(IdGenerator):
    """Trace ids and span ids 1, 2, 3, ... so the output is stable."""

    def __init__(self) -> None:
        self._trace = self._span = 0

    def generate_trace_id(self) -> int:
        self._trace += 1
        return self._trace

    def generate_span_id(self) -> int:
        self._span += 1
        return self._span


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    made = TracerProvider(
        resource=Resource.create({"service.name": "local-tests"}), id_generator=SequentialIds()
    )
    yield made
    made.shutdown()


def tracer_to(provider: TracerProvider, exporter: SpanExporter) -> trace.Tracer:
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("tests.local", "1.2.3")


def start(
    tracer: trace.Tracer,
    name: str,
    at_ms: float,
    parent: Span | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attrs: dict[str, Any] | None = None,
) -> SdkSpan:
    """An SDK span started ``at_ms`` after T0 (ended by `end`)."""
    context = trace.set_span_in_context(parent) if parent is not None else None
    span = tracer.start_span(name, context, kind, attributes=attrs, start_time=T0 + int(at_ms * MS))
    return cast(SdkSpan, span)


def end(span: Span, at_ms: float) -> None:
    span.end(end_time=T0 + int(at_ms * MS))


def fail(span: Span, exc: Exception) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def joke_trace(tracer: trace.Tracer, *, end_root: bool = True) -> None:
    """The README example: ends children before the root, not in start order."""
    root = start(tracer, "joke_workflow.workflow", 0, attrs={"traceloop.span.kind": "workflow"})
    create = start(tracer, "joke_creation.task", 10, root, attrs={"traceloop.span.kind": "task"})
    llm = start(
        tracer,
        "openai.chat",
        15,
        create,
        SpanKind.CLIENT,
        attrs={
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.prompt_tokens": 12,
            "gen_ai.usage.completion_tokens": 34,
            "llm.usage.total_tokens": 46,
        },
    )
    translate = start(tracer, "pirate_joke_translation.task", 430, root)
    translate.set_attribute("traceloop.span.kind", "task")
    react = start(
        tracer, "audience_reaction.task", 820, root, attrs={"traceloop.span.kind": "task"}
    )
    fail(react, ValueError("booed"))
    end(react, 823)  # ends first, shown last: children are ordered by start time
    end(llm, 420)
    end(create, 422)
    end(translate, 818)
    if end_root:
        end(root, 1240)


JOKE_TREE = f"""\
joke_workflow.workflow  workflow  1.24 s  trace {TRACE_1}
├─ joke_creation.task  task  412 ms
│  └─ openai.chat  llm  gpt-4o-mini  405 ms  tokens 12→34
├─ pirate_joke_translation.task  task  388 ms
└─ audience_reaction.task  task  3.00 ms  ERROR ValueError: booed
"""


# -- console: the tree ---------------------------------------------------------------------


def test_a_trace_is_printed_as_one_tree_when_its_root_ends(provider: TracerProvider) -> None:
    stream = io.StringIO()
    tracer = tracer_to(provider, ConsoleTraceExporter(stream))
    joke_trace(tracer, end_root=False)
    assert stream.getvalue() == ""  # buffered until the root ends
    end(start(tracer, "other", 0), 1)  # another trace is printed, this one still waits
    assert stream.getvalue().startswith("other  1.00 ms")


def test_the_tree_shows_kind_model_duration_tokens_and_errors(provider: TracerProvider) -> None:
    stream = io.StringIO()
    joke_trace(tracer_to(provider, ConsoleTraceExporter(stream)))
    assert stream.getvalue() == JOKE_TREE


def test_nested_siblings_draw_continuation_lines(provider: TracerProvider) -> None:
    stream = io.StringIO()
    tracer = tracer_to(provider, ConsoleTraceExporter(stream, show_trace_id=False))
    root = start(tracer, "root", 0)
    first = start(tracer, "first", 1, root)
    deep = start(tracer, "deep", 2, first)
    deeper = start(tracer, "deeper", 3, deep)
    for span, at in ((deeper, 4), (deep, 5), (start(tracer, "second", 5.5, first), 6)):
        end(span, at)
    end(first, 7)
    end(start(tracer, "last", 8, root), 9)
    end(root, 10)
    assert stream.getvalue() == (
        "root  10.0 ms\n"
        "├─ first  6.00 ms\n"
        "│  ├─ deep  3.00 ms\n"
        "│  │  └─ deeper  1.00 ms\n"
        "│  └─ second  500 µs\n"
        "└─ last  1.00 ms\n"
    )


def test_token_keys_http_spans_and_status_descriptions(provider: TracerProvider) -> None:
    stream = io.StringIO()
    tracer = tracer_to(provider, ConsoleTraceExporter(stream, show_trace_id=False))
    root = start(tracer, "root", 0)
    new_keys = {"gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 7}
    end(start(tracer, "a", 1, root, attrs={"gen_ai.response.model": "m-2024", **new_keys}), 2)
    end(
        start(
            tracer, "b", 2, root, attrs={"llm.request.type": "chat", "llm.usage.total_tokens": 9}
        ),
        3,
    )
    http = start(tracer, "POST", 3, root, SpanKind.CLIENT, attrs={"http.request.method": "POST"})
    http.set_attribute("http.response.status_code", 503)
    http.set_status(Status(StatusCode.ERROR, "upstream\nunavailable"))
    end(http, 4)
    end(start(tracer, "consume", 4, root, SpanKind.CONSUMER), 5)
    end(root, 6)
    assert stream.getvalue() == (
        "root  6.00 ms\n"
        "├─ a  llm  m-2024  1.00 ms  tokens 5→7\n"
        "├─ b  llm  1.00 ms  tokens 9\n"
        "├─ POST  client  1.00 ms  HTTP 503  ERROR upstream unavailable\n"
        "└─ consume  consumer  1.00 ms\n"
    )


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [
        (0, "0 µs"),
        (1_499, "1 µs"),
        (999_000, "999 µs"),
        (1_000_000, "1.00 ms"),
        (40_500_000, "40.5 ms"),
        (412_000_000, "412 ms"),
        (1_240_000_000, "1.24 s"),
        (75_300_000_000, "75.3 s"),
        (3_600_000_000_000, "3600 s"),
    ],
)
def test_durations_use_human_units(nanoseconds: int, text: str) -> None:
    assert format_duration(nanoseconds) == text


def test_a_span_with_a_remote_parent_is_a_local_root(provider: TracerProvider) -> None:
    stream = io.StringIO()
    tracer = tracer_to(provider, ConsoleTraceExporter(stream, show_trace_id=False))
    remote = SpanContext(7, 99, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    incoming = trace.NonRecordingSpan(remote)
    server = start(tracer, "GET /jokes", 0, incoming, SpanKind.SERVER)
    end(start(tracer, "inner", 1, server), 2)
    end(server, 3)
    assert stream.getvalue() == "GET /jokes  server  3.00 ms\n└─ inner  1.00 ms\n"


# -- console: interleaving, buffering and incomplete traces --------------------------------


def test_two_concurrent_traces_are_never_mixed(provider: TracerProvider) -> None:
    stream = io.StringIO()
    tracer = tracer_to(provider, ConsoleTraceExporter(stream))
    a, b = start(tracer, "a", 0), start(tracer, "b", 0)
    a1, b1 = start(tracer, "a1", 1, a), start(tracer, "b1", 1, b)
    end(b1, 2)
    end(a1, 3)
    end(b, 4)
    end(a, 5)
    trace_2 = f"{2:032x}"
    assert stream.getvalue() == (
        f"b  4.00 ms  trace {trace_2}\n└─ b1  1.00 ms\n"
        f"a  5.00 ms  trace {TRACE_1}\n└─ a1  2.00 ms\n"
    )


def test_traces_ended_in_many_threads_each_print_contiguously() -> None:
    stream = io.StringIO()
    provider = TracerProvider()
    tracer = tracer_to(provider, ConsoleTraceExporter(stream, format_duration=lambda ns: "t"))

    def one_trace(n: int) -> None:
        with tracer.start_as_current_span(f"root{n}"):
            for child in range(3):
                with (
                    tracer.start_as_current_span(f"c{n}.{child}"),
                    tracer.start_as_current_span(f"g{n}.{child}"),
                ):
                    pass

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one_trace, range(200)))
    provider.shutdown()
    blocks = [b for b in stream.getvalue().split("root") if b]
    assert len(blocks) == 200
    for block in blocks:
        n = block.split("  ", 1)[0]
        assert [line.lstrip("├└│─ ").split("  ")[0] for line in block.splitlines()[1:]] == [
            f"{kind}{n}.{child}" for child in range(3) for kind in "cg"
        ]


def test_incomplete_traces_are_printed_and_marked_on_shutdown(provider: TracerProvider) -> None:
    stream = io.StringIO()
    exporter = ConsoleTraceExporter(stream)
    joke_trace(tracer_to(provider, exporter), end_root=False)
    exporter.shutdown()
    assert stream.getvalue() == (
        f"… trace {TRACE_1} incomplete (root span not ended at shutdown)\n"
        "├─ joke_creation.task  task  412 ms\n"
        "│  └─ openai.chat  llm  gpt-4o-mini  405 ms  tokens 12→34\n"
        "├─ pirate_joke_translation.task  task  388 ms\n"
        "└─ audience_reaction.task  task  3.00 ms  ERROR ValueError: booed\n"
    )
    exporter.shutdown()  # idempotent, prints nothing more
    assert stream.getvalue().count("\n") == 5


def test_after_force_flush_the_rest_of_the_trace_is_marked_continued(
    provider: TracerProvider,
) -> None:
    stream = io.StringIO()
    exporter = ConsoleTraceExporter(stream, show_trace_id=False)
    tracer = tracer_to(provider, exporter)
    root = start(tracer, "root", 0)
    end(start(tracer, "early", 1, root), 2)
    assert exporter.force_flush()
    late = start(tracer, "late", 3, root)
    end(start(tracer, "late.child", 4, late), 5)
    end(root, 6)
    end(late, 7)  # ends after its parent was printed
    assert stream.getvalue() == (
        f"… trace {TRACE_1} incomplete (flushed before its root span ended)\n"
        "└─ early  1.00 ms\n"
        f"… trace {TRACE_1} continued (earlier spans printed above)\n"
        "└─ root  6.00 ms\n"
        f"… trace {TRACE_1} continued (earlier spans printed above)\n"
        "└─ late  4.00 ms\n"
        "   └─ late.child  1.00 ms\n"
    )


def test_traces_waiting_longer_than_max_wait_are_printed_as_incomplete(
    provider: TracerProvider,
) -> None:
    stream, clock = io.StringIO(), FakeClock()
    tracer = tracer_to(provider, ConsoleTraceExporter(stream, max_wait=30, clock=clock))
    stuck = start(tracer, "stuck", 0)
    end(start(tracer, "child", 1, stuck), 2)
    clock.now += 29
    end(start(tracer, "quick", 0), 1)
    assert "child" not in stream.getvalue()
    clock.now += 1
    end(start(tracer, "quick2", 0), 1)
    assert stream.getvalue().splitlines()[1:] == [
        f"quick2  1.00 ms  trace {3:032x}",
        f"… trace {TRACE_1} incomplete (root span not ended after 30 s)",
        "└─ child  1.00 ms",
    ]
    end(stuck, 3)


def test_buffering_is_capped_by_traces_and_by_spans(provider: TracerProvider) -> None:
    stream = io.StringIO()
    exporter = ConsoleTraceExporter(stream, max_traces=2, max_spans=2, show_trace_id=False)
    tracer = tracer_to(provider, exporter)
    roots = [start(tracer, f"r{i}", 0) for i in range(3)]
    for root in roots:
        end(start(tracer, f"{root.name}.child", 1, root), 2)  # third trace evicts the first
    assert (
        stream.getvalue() == f"… trace {TRACE_1} incomplete (buffer full)\n└─ r0.child  1.00 ms\n"
    )
    end(start(tracer, "r1.child2", 2, roots[1]), 3)  # a third buffered span evicts r1's
    assert stream.getvalue().count("incomplete (buffer full)") == 2
    assert "r1.child2" in stream.getvalue()
    exporter.shutdown()
    for root in roots:
        end(root, 5)


@pytest.mark.parametrize(("value", "error"), [(0, "max_traces"), (True, "max_traces")])
def test_bad_limits_raise_naming_the_parameter(value: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ConsoleTraceExporter(max_traces=value)
    with pytest.raises(ValueError, match="max_wait"):
        ConsoleTraceExporter(max_wait=-1)


# -- console: colour and failures ----------------------------------------------------------


def test_colour_only_on_a_tty(provider: TracerProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    plain, tty, forced, off = io.StringIO(), TTY(), io.StringIO(), TTY()
    for exporter in (
        ConsoleTraceExporter(plain),
        ConsoleTraceExporter(tty),
        ConsoleTraceExporter(forced, color=True),
        ConsoleTraceExporter(off, color=False),
    ):
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    joke_trace(provider.get_tracer("tests"))
    assert plain.getvalue() == off.getvalue() == JOKE_TREE
    assert tty.getvalue() == forced.getvalue() != JOKE_TREE
    assert f"{RED}ERROR ValueError: booed{RESET}" in tty.getvalue()
    assert "\x1b[35mgpt-4o-mini" in tty.getvalue()


def test_no_color_turns_automatic_colour_off(
    provider: TracerProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    tty, forced = TTY(), TTY()
    for exporter in (ConsoleTraceExporter(tty), ConsoleTraceExporter(forced, color=True)):
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    joke_trace(provider.get_tracer("tests"))
    assert tty.getvalue() == JOKE_TREE
    assert RED in forced.getvalue()


def test_a_stream_without_unicode_gets_ascii_glyphs(provider: TracerProvider) -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    tracer = tracer_to(provider, ConsoleTraceExporter(stream, show_trace_id=False))
    root = start(tracer, "caf\u00e9", 0)
    end(start(tracer, "child", 1, root, attrs={"gen_ai.usage.input_tokens": 1}), 1.5)
    end(root, 2)
    assert raw.getvalue().decode("ascii") == "caf?  2.00 ms\n`- child  500 us  tokens 1->?\n"


class BrokenPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def closed_stream() -> io.StringIO:
    stream = io.StringIO()
    stream.close()
    return stream


@pytest.mark.parametrize("make_stream", [BrokenPipe, closed_stream])
def test_write_failures_are_contained_and_logged_once(
    provider: TracerProvider,
    caplog: pytest.LogCaptureFixture,
    make_stream: Callable[[], io.StringIO],
) -> None:
    stream = make_stream()
    exporter = ConsoleTraceExporter(stream)
    tracer = tracer_to(provider, exporter)
    span = start(tracer, "one", 0)
    span.end()
    assert exporter.export([span]) is SpanExportResult.FAILURE  # the same span again: fine
    exporter.force_flush()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("keywordsai")]
    assert len(messages) == 1
    assert "Cannot print traces" in messages[0]
    exporter.shutdown()
    assert exporter.export([span]) is SpanExportResult.FAILURE


# -- console through the decorators --------------------------------------------------------


@task(name="joke_creation")
async def create_joke(topic: str) -> str:
    await asyncio.sleep(0)
    return await polish(f"a joke about {topic}")


@task(name="polish")
async def polish(text: str) -> str:
    return text + "!"


@task(name="audience_reaction")
def audience_reaction(joke: str) -> str:
    raise ValueError("booed")


@workflow(name="joke_workflow")
async def joke_workflow() -> str:
    joke = await create_joke("spans")
    with contextlib.suppress(ValueError):
        await asyncio.to_thread(audience_reaction, joke)
    return joke


DECORATED_TREE = """\
joke_workflow.workflow  workflow  <t>
├─ joke_creation.task  task  <t>
│  └─ polish.task  task  <t>
└─ audience_reaction.task  task  <t>  ERROR ValueError: booed
"""


@pytest.fixture(params=[False, True], ids=["inline", "batching"])
def console(request: pytest.FixtureRequest) -> Iterator[tuple[KeywordsAITelemetry, io.StringIO]]:
    """A telemetry printing to a string; created outside the loop (first imports block)."""
    stream = io.StringIO()
    exporter = ConsoleTraceExporter(stream, show_trace_id=False, format_duration=lambda ns: "<t>")
    telemetry = KeywordsAITelemetry(
        app_name="tests",
        custom_exporter=exporter,
        is_batching_enabled=request.param,
        instruments=set(),
    )
    yield telemetry, stream
    telemetry.shutdown()


@pytest.mark.asyncio
async def test_decorated_workflow_prints_one_tree(
    console: tuple[KeywordsAITelemetry, io.StringIO],
) -> None:
    telemetry, stream = console
    await joke_workflow()
    assert await telemetry.aflush()
    assert stream.getvalue() == DECORATED_TREE


# -- JSON lines ----------------------------------------------------------------------------


class RecordingExporter(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def rich_trace(tracer: trace.Tracer) -> None:
    root = start(tracer, "root", 0, attrs={"s": "caf\u00e9 \ud800", "i": 3, "f": 0.5, "l": [1, 2]})
    child = start(tracer, "child", 1, root, SpanKind.CLIENT)
    child.add_event("note", {"k": True}, timestamp=T0 + 2 * MS)
    child.add_link(root.get_span_context(), {"why": "test"})
    fail(child, KeyError("x"))
    end(child, 3)
    end(root, 4)


def test_jsonl_lines_stand_alone_and_read_back(provider: TracerProvider, tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dirs" / "traces.jsonl"
    recorder = RecordingExporter()
    provider.add_span_processor(SimpleSpanProcessor(recorder))
    exporter = JsonLinesFileExporter(path)
    assert exporter.path == path
    assert not path.parent.exists()  # opened lazily
    rich_trace(tracer_to(provider, exporter))
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2
    for line, span in zip(lines, recorder.spans, strict=True):
        (group,) = json.loads(line)["resourceSpans"]  # every line is a whole TracesData
        (scope_group,) = group["scopeSpans"]
        service = {"key": "service.name", "value": {"stringValue": "local-tests"}}
        assert service in group["resource"]["attributes"]
        assert scope_group["scope"] == {"name": "tests.local", "version": "1.2.3"}
        assert scope_group["spans"] == [json.loads(encode_span(span))]
    read = list(read_spans(path))
    assert [s["name"] for s in read] == ["child", "root"]
    assert read[0]["parentSpanId"] == read[1]["spanId"]
    assert read[0]["status"] == {"message": "KeyError: 'x'", "code": 2}
    assert read[1]["attributes"][0] == {"key": "s", "value": {"stringValue": "caf\u00e9 \ud800"}}
    assert read[1]["resource"] == json.loads(lines[1])["resourceSpans"][0]["resource"]
    assert read[1]["scope"] == {"name": "tests.local", "version": "1.2.3"}
    exporter.shutdown()
    exporter.shutdown()
    assert exporter.export(recorder.spans) is SpanExportResult.FAILURE


def test_jsonl_appends_to_an_existing_file(provider: TracerProvider, tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_text("")
    first, second = JsonLinesFileExporter(path), JsonLinesFileExporter(str(path))
    tracer = tracer_to(provider, first)
    end(start(tracer, "one", 0), 1)
    provider.add_span_processor(SimpleSpanProcessor(second))
    end(start(tracer, "two", 0), 1)
    assert [s["name"] for s in read_spans(path)] == ["one", "two", "two"]
    first.shutdown()
    second.shutdown()


def test_jsonl_lines_from_many_threads_are_never_mixed(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    exporter = JsonLinesFileExporter(path)
    provider = TracerProvider()
    tracer = tracer_to(provider, exporter)

    def spans(n: int) -> None:
        for i in range(20):
            with tracer.start_as_current_span(f"s{n}.{i}", attributes={"pad": "x" * 5000}):
                pass

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(spans, range(16)))
    provider.shutdown()
    names = sorted(s["name"] for s in read_spans(path))
    assert names == sorted(f"s{n}.{i}" for n in range(16) for i in range(20))


def test_an_unwritable_path_fails_the_export_and_is_logged_once(
    provider: TracerProvider, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    exporter = JsonLinesFileExporter(blocker / "traces.jsonl")
    tracer = provider.get_tracer("tests")
    spans = []
    for name in ("one", "two"):
        span = start(tracer, name, 0)
        end(span, 1)
        spans.append(span)
        assert exporter.export([span]) is SpanExportResult.FAILURE  # never raises
    warnings = [r for r in caplog.records if r.name == "keywordsai_tracing.exporters"]
    assert len(warnings) == 1
    assert "a-file" in warnings[0].getMessage()
    exporter.shutdown()


def test_a_write_cut_short_costs_only_the_torn_line(
    provider: TracerProvider,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "traces.jsonl"
    exporter = JsonLinesFileExporter(path)
    tracer = provider.get_tracer("tests")
    spans = []
    for name in ("before", "torn", "lost", "after"):
        spans.append(start(tracer, name, 0))
        end(spans[-1], 1)
    assert exporter.export(spans[:1]) is SpanExportResult.SUCCESS
    real_write, calls = os.write, []

    def disk_full(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[:10])  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    assert exporter.export(spans[1:2]) is SpanExportResult.FAILURE
    assert exporter.export(spans[2:3]) is SpanExportResult.FAILURE
    monkeypatch.setattr(os, "write", real_write)
    assert exporter.export(spans[3:]) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert [r.getMessage() for r in caplog.records] == [
        f"Could not write spans to {path}: No space left on device"
    ]
    with pytest.raises(ValueError, match=r"traces.jsonl:2: not an OTLP/JSON line"):
        list(read_spans(path))
    assert [s["name"] for s in read_spans(path, skip_invalid=True)] == ["before", "after"]


@workflow(name="nightly")
def nightly() -> int:
    return sum(step() for _ in range(2))


@task(name="step")
def step() -> int:
    return 1


def test_decorated_spans_reach_a_jsonl_file_off_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    telemetry = KeywordsAITelemetry(
        app_name="jsonl-app",
        custom_exporter=exporter_from_spec(f"jsonl:{path}"),
        is_batching_enabled=True,
        instruments=set(),
    )
    try:
        assert nightly() == 2
        assert telemetry.flush()
    finally:
        telemetry.shutdown()
    spans = list(read_spans(path))
    assert [s["name"] for s in spans] == ["step.task", "step.task", "nightly.workflow"]
    service = {"key": "service.name", "value": {"stringValue": "jsonl-app"}}
    assert all(service in s["resource"]["attributes"] for s in spans)
    kinds = [a["value"] for a in spans[2]["attributes"] if a["key"] == "traceloop.span.kind"]
    assert kinds == [{"stringValue": "workflow"}]


def test_read_spans_skips_an_unterminated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    line = '{"resourceSpans":[{"resource":{},"scopeSpans":[{"scope":{},"spans":[{"name":"a"}]}]}]}'
    path.write_text(line + "\n\n" + line[:30])
    assert list(read_spans(path)) == [{"name": "a", "resource": {}, "scope": {}}]


# -- factory and public API ----------------------------------------------------------------


def test_exporter_from_spec(tmp_path: Path) -> None:
    console = exporter_from_spec("console")
    assert isinstance(console, ConsoleTraceExporter)
    assert isinstance(exporter_from_spec(" Console:STDERR "), ConsoleTraceExporter)
    jsonl = exporter_from_spec(f"jsonl:{tmp_path}/t.jsonl")
    assert isinstance(jsonl, JsonLinesFileExporter)
    assert jsonl.path == tmp_path / "t.jsonl"
    assert not jsonl.path.exists()


def test_console_writes_to_the_current_stdout(
    provider: TracerProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    tracer = tracer_to(provider, exporter_from_spec("console"))
    end(start(tracer, "hello", 0), 1)
    assert capsys.readouterr().out == f"hello  1.00 ms  trace {TRACE_1}\n"


@pytest.mark.parametrize("spec", ["", "jsonl:", "jsonl", "console:tty", "kafka:x", "otlp"])
def test_exporter_from_spec_rejects_unknown_specs(spec: str) -> None:
    with pytest.raises(ValueError, match=f"exporter spec {spec!r}: expected 'console'"):
        exporter_from_spec(spec)


def test_keywordsai_exporter_env_adds_a_local_exporter_next_to_the_configured_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "local" / "spans.jsonl"
    monkeypatch.setenv("KEYWORDSAI_EXPORTER", f"jsonl:{target}")
    main = InMemorySpanExporter()
    telemetry = KeywordsAITelemetry(
        custom_exporter=main, is_batching_enabled=False, instruments=set()
    )

    @task(name="both")
    def both() -> int:
        return 1

    both()
    telemetry.shutdown()
    assert [s.name for s in main.get_finished_spans()] == ["both.task"]
    assert [s["name"] for s in read_spans(target)] == ["both.task"]


def test_keywordsai_exporter_env_bad_value_warns_and_is_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("KEYWORDSAI_EXPORTER", "printer")
    assert Settings.resolve().local_exporter is None
    assert "KEYWORDSAI_EXPORTER" in caplog.text
    with pytest.raises(ValueError, match="local_exporter"):
        Settings.resolve(local_exporter="printer")
