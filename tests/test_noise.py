"""The noise filter sends a self-consistent tree: a kept span whose parent was dropped as
noise goes out under its nearest kept ancestor (a root if none; a remote parent counts as
kept), linked to the dropped parent; every other exporter gets the original tree.

Unit trees run through a private provider with our `Pipeline` (stamping, start-time
notes, compaction), as the telemetry's provider does; end-to-end tests go through
`KeywordsAITelemetry` to the loopback receiver.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as oracle_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from keywordsai_tracing import KeywordsAITelemetry, get_client, task, workflow
from keywordsai_tracing._attributes import (
    DECORATOR_TRACER_NAME,
    ENTITY_PATH,
    LINK_REASON,
    MANUAL_TRACER_NAME,
    SPAN_KIND,
)
from keywordsai_tracing._fast_span import SpanStarter
from keywordsai_tracing._noise import drop_noise, is_noise, note_start
from keywordsai_tracing._otlp_json import encode_json
from keywordsai_tracing._otlp_proto import encode_protobuf
from keywordsai_tracing._pipeline import Pipeline
from keywordsai_tracing.exporters import read_spans
from tests.conftest import telemetry_to
from tests.otlp_receiver import OTLPReceiver, ReceivedSpan

FILTERED_PARENT = {LINK_REASON: "filtered_parent"}
REMOTE = SpanContext(
    trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
    span_id=0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
)


# -- unit trees -------------------------------------------------------------------------------


class Tree:
    """Spans from a private provider whose first processor is our `Pipeline`."""

    def __init__(self, limits: SpanLimits | None = None) -> None:
        self.memory = InMemorySpanExporter()
        provider = TracerProvider(span_limits=limits, shutdown_on_exit=False)
        provider.add_span_processor(Pipeline())
        provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.entities = provider.get_tracer(DECORATOR_TRACER_NAME)  # as the decorators
        self.manual = provider.get_tracer(MANUAL_TRACER_NAME)  # get_client().get_tracer()
        self.library = provider.get_tracer("some.instrumentation")  # noise outside entities

    def entity(self, name: str, **kwargs: Any) -> Any:
        return self.entities.start_as_current_span(name, attributes={SPAN_KIND: "task"}, **kwargs)

    def noise(self, name: str, **kwargs: Any) -> Any:
        return self.library.start_as_current_span(name, **kwargs)

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.memory.get_finished_spans()

    def __getitem__(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.spans if s.name == name]
        return span


@contextmanager
def under(parent: SpanContext) -> Iterator[None]:
    token = context_api.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    try:
        yield
    finally:
        context_api.detach(token)


def sent(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    (span,) = [s for s in spans if s.name == name]
    return span


def assert_moved(
    copy: ReadableSpan,
    original: ReadableSpan,
    new_parent: SpanContext | None,
    dropped_parent: ReadableSpan,
) -> None:
    """``copy`` is ``original`` under ``new_parent``, linked to ``dropped_parent``."""
    assert copy is not original
    assert copy.parent == new_parent
    *own_links, link = copy.links
    assert tuple(own_links) == original.links
    assert link.context == dropped_parent.context
    assert link.attributes == FILTERED_PARENT
    for read in (
        lambda s: s.name,
        lambda s: s.context,
        lambda s: dict(s.attributes or {}),
        lambda s: s.events,
        lambda s: s.kind,
        lambda s: s.status.status_code,
        lambda s: s.status.description,
        lambda s: (s.start_time, s.end_time),
        lambda s: s.resource,
        lambda s: s.instrumentation_scope,
        lambda s: (s.dropped_attributes, s.dropped_events, s.dropped_links),
    ):
        assert read(copy) == read(original)
    assert original.parent == dropped_parent.context  # the original is untouched
    assert dropped_parent.context not in [li.context for li in original.links]


def test_kept_span_under_a_dropped_parent_moves_to_the_kept_grandparent() -> None:
    tree = Tree()
    with tree.manual.start_as_current_span("job"), tree.noise("GET /"), tree.entity("work"):
        pass
    out = drop_noise(tree.spans)
    assert [s.name for s in out] == ["work", "job"]
    assert sent(out, "job") is tree["job"]
    assert_moved(sent(out, "work"), tree["work"], tree["job"].context, tree["GET /"])


def test_two_dropped_generations_are_skipped_and_the_kept_child_below_is_untouched() -> None:
    tree = Tree()
    with (
        tree.manual.start_as_current_span("job"),
        tree.noise("receive"),
        tree.noise("handle"),
        tree.entity("work"),
        tree.entity("step"),
    ):
        pass
    out = drop_noise(tree.spans)
    assert sorted(s.name for s in out) == ["job", "step", "work"]
    assert_moved(sent(out, "work"), tree["work"], tree["job"].context, tree["handle"])
    assert sent(out, "step") is tree["step"]  # its parent was kept: same object
    assert sent(out, "step").parent == tree["work"].context


def test_kept_span_under_a_noise_root_becomes_a_root_linked_to_it() -> None:
    tree = Tree()
    with tree.noise("GET /"), tree.entity("work"):
        pass
    (work,) = drop_noise(tree.spans)
    assert_moved(work, tree["work"], None, tree["GET /"])


def test_a_remote_parent_is_kept_and_becomes_the_new_parent_never_rewritten() -> None:
    tree = Tree()
    with under(REMOTE):
        with tree.noise("GET /"), tree.entity("behind-noise"):
            pass
        with tree.entity("direct"):
            pass
    out = drop_noise(tree.spans)
    assert_moved(sent(out, "behind-noise"), tree["behind-noise"], REMOTE, tree["GET /"])
    assert sent(out, "behind-noise").parent.is_remote  # type: ignore[union-attr]
    assert sent(out, "direct") is tree["direct"]
    assert tree["direct"].parent == REMOTE


def test_decorator_spans_from_the_fast_starter_are_reparented_too() -> None:
    tree = Tree()
    starter = SpanStarter(tree.entities)
    assert starter.fast
    with tree.noise("GET /"):
        starter.start("fast.task", context_api.get_current(), {SPAN_KIND: "task"}).end()
    (fast,) = drop_noise(tree.spans)
    assert_moved(fast, tree["fast.task"], None, tree["GET /"])


def test_kept_parent_and_child_pass_through_as_the_same_objects() -> None:
    tree = Tree()
    with (
        tree.entity("work"),
        tree.entity("step"),
        tree.manual.start_as_current_span("manual"),
        tree.library.start_as_current_span("in-entity", attributes={ENTITY_PATH: "w"}),
    ):
        pass
    spans = tree.spans
    out = drop_noise(spans)
    assert len(out) == len(spans) == 4
    assert all(a is b for a, b in zip(out, spans, strict=True))


def test_noise_spans_are_dropped_wherever_they_are() -> None:
    tree = Tree()
    with tree.noise("root-noise"), tree.noise("noise-under-noise"):
        pass
    with tree.entity("work"), tree.noise("empty-path", attributes={ENTITY_PATH: ""}):
        pass
    out = drop_noise(tree.spans)
    assert [s.name for s in out] == ["work"]
    assert out[0] is tree["work"]
    assert [s.name for s in tree.spans if is_noise(s)] == [
        "noise-under-noise",
        "root-noise",
        "empty-path",
    ]


def test_span_kept_after_its_start_is_sent_and_its_children_stay_linked_past_it() -> None:
    # Noise status is decided at start for the tree: a child started while its parent was
    # noise goes under the nearest ancestor kept at that time (documented edge case).
    tree = Tree()
    with tree.manual.start_as_current_span("job"), tree.noise("late") as late:
        with tree.noise("middle"), tree.entity("work"):
            pass
        late.set_attribute(SPAN_KIND, "task")
    out = drop_noise(tree.spans)
    assert sorted(s.name for s in out) == ["job", "late", "work"]
    assert sent(out, "late") is tree["late"]
    assert_moved(sent(out, "work"), tree["work"], tree["job"].context, tree["middle"])
    ids = {s.context.span_id for s in out if s.context is not None}
    assert all(s.parent is None or s.parent.span_id in ids for s in out)


def test_copy_keeps_events_links_status_and_dropped_counts() -> None:
    tree = Tree(SpanLimits(max_span_attributes=2, max_events=1, max_links=1))
    own_link = Link(SpanContext(7, 8, is_remote=False), {"why": "batch"})
    over_the_limit = {"evicted": 1, "kept": 2, SPAN_KIND: "task"}  # the oldest is dropped
    with (
        tree.noise("GET /"),
        tree.entities.start_as_current_span(
            "work", attributes=over_the_limit, links=[own_link, own_link]
        ) as work,
    ):
        work.add_event("first")
        work.add_event("second", {"n": 1})  # over the limit: the first is dropped
        work.set_status(Status(StatusCode.ERROR, "boom"))
    original = tree["work"]
    dropped = (original.dropped_attributes, original.dropped_events, original.dropped_links)
    assert dropped == (1, 1, 1)
    (copy,) = drop_noise(tree.spans)
    assert_moved(copy, original, None, tree["GET /"])
    assert [li.attributes for li in copy.links] == [{"why": "batch"}, FILTERED_PARENT]
    assert [e.name for e in copy.events] == ["second"]


def _json_span(body: bytes) -> dict[str, Any]:
    (span,) = json.loads(body)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    return dict(span)


def test_copy_encodes_its_new_parent_and_link_in_json_and_protobuf() -> None:
    tree = Tree()
    with tree.manual.start_as_current_span("job"), tree.noise("GET /"), tree.entity("work"):
        pass
    with under(REMOTE), tree.noise("remote-server"), tree.entity("remote-work"):
        pass
    out = drop_noise(tree.spans)
    for name, parent, flags in (
        ("work", tree["job"].context, 0x100),
        ("remote-work", REMOTE, 0x300),
    ):
        copy = sent(out, name)
        dropped = tree["GET /"] if name == "work" else tree["remote-server"]
        assert json.loads(encode_json([copy])) == json.loads(oracle_encode([copy]).to_json())
        encoded = _json_span(encode_json([copy]))
        assert parent is not None
        assert dropped.context is not None
        assert encoded["parentSpanId"] == f"{parent.span_id:016x}"
        assert encoded["flags"] == flags
        assert encoded["links"] == [
            {
                "traceId": f"{dropped.context.trace_id:032x}",
                "spanId": f"{dropped.context.span_id:016x}",
                "attributes": [{"key": LINK_REASON, "value": {"stringValue": "filtered_parent"}}],
                "flags": 0x100,
            }
        ]
        request = ExportTraceServiceRequest.FromString(encode_protobuf([copy]))
        (pb,) = request.resource_spans[0].scope_spans[0].spans
        assert pb.parent_span_id == parent.span_id.to_bytes(8, "big")
        assert pb.flags == flags
        (pb_link,) = pb.links
        assert pb_link.span_id == dropped.context.span_id.to_bytes(8, "big")
        assert {kv.key: kv.value.string_value for kv in pb_link.attributes} == FILTERED_PARENT


def test_a_span_that_cannot_be_marked_never_raises_at_start() -> None:
    contextless = ReadableSpan("no-context", context=None, parent=REMOTE)
    assert is_noise(contextless)
    note_start(contextless)  # nothing to mark: contained, not raised
    assert drop_noise([contextless]) == []


# -- end to end: telemetry -> receiver ----------------------------------------------------------


@task(name="step")
async def step(i: int) -> int:
    await asyncio.sleep(0)
    return i


@task(name="sync_step")
def sync_step() -> int:
    return 1


@workflow(name="flow")
async def flow() -> int:
    with trace.get_tracer("some.http.client").start_as_current_span("inside-entity"):
        first = await step(1)  # under a span the pipeline stamped: kept
    second = await step(2)
    return first + second + await asyncio.to_thread(sync_step)


class Noise:
    """Auto-instrumentation-like spans on the global provider; remembers their contexts."""

    def __init__(self) -> None:
        self.tracer = trace.get_tracer("some.web.framework")
        self.ids: dict[str, str] = {}

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        with self.tracer.start_as_current_span(name) as span:
            self.ids[name] = f"{span.get_span_context().span_id:016x}"
            yield


async def produce_trees(noise: Noise) -> None:
    """Every shape at once: noise root, remote parent, kept->noise->noise, stray noise."""
    with noise.span("GET /a"):
        await flow()
    with under(REMOTE), noise.span("GET /b"):
        await flow()
    with (
        get_client().get_tracer().start_as_current_span("job"),
        noise.span("receive"),
        noise.span("handle"),
    ):
        await step(3)
    with noise.span("stray"):
        pass


def _telemetry(receiver: OTLPReceiver, **kwargs: Any) -> KeywordsAITelemetry:
    return telemetry_to(receiver, "noise", **kwargs)


def _assert_self_consistent(spans: Sequence[ReceivedSpan]) -> None:
    ids = {s.span_id for s in spans}
    assert len(ids) == len(spans)
    remote = f"{REMOTE.span_id:016x}"
    for span in spans:
        assert span.parent_span_id in ("", remote) or span.parent_span_id in ids, span.name


@pytest.mark.parametrize("protocol", ["http/json", "http/protobuf"])
def test_every_sent_parent_was_sent_or_is_remote(
    threaded_otlp_receiver: OTLPReceiver, protocol: str
) -> None:
    telemetry = _telemetry(threaded_otlp_receiver, protocol=protocol)
    noise = Noise()
    asyncio.run(produce_trees(noise))
    assert telemetry.flush(timeout=10)
    spans = threaded_otlp_receiver.spans
    _assert_self_consistent(spans)
    assert sorted(s.name for s in spans) == sorted(
        ["flow.workflow", "inside-entity", "step.task", "step.task", "sync_step.task"] * 2
        + ["job", "step.task"]
    )
    stats = telemetry.stats  # noise is decided at start: never recorded, never filtered
    assert (stats.not_recorded, stats.filtered) == (5, 0)
    by_id = {s.span_id: s for s in spans}
    flows = [s for s in spans if s.name == "flow.workflow"]
    remote_trace = f"{REMOTE.trace_id:032x}"
    [under_a] = [s for s in flows if s.trace_id != remote_trace]
    [under_b] = [s for s in flows if s.trace_id == remote_trace]
    assert (under_a.parent_span_id, under_a.links) == (
        "",
        [(under_a.trace_id, noise.ids["GET /a"])],
    )
    assert under_b.parent_span_id == f"{REMOTE.span_id:016x}"
    assert under_b.links == [(remote_trace, noise.ids["GET /b"])]
    [job] = [s for s in spans if s.name == "job"]
    [job_step] = [s for s in spans if s.parent_span_id == job.span_id]
    assert job_step.links == [(job.trace_id, noise.ids["handle"])]
    for span in spans:  # kept parents stay as they were, with no link added
        if span.parent_span_id in by_id:
            assert span.links == [] or span is job_step


def test_with_filter_noise_off_the_original_tree_arrives(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    telemetry = _telemetry(threaded_otlp_receiver, filter_noise=False)
    noise = Noise()
    asyncio.run(produce_trees(noise))
    assert telemetry.flush(timeout=10)
    spans = threaded_otlp_receiver.spans
    assert len(spans) == 17
    assert all(s.links == [] for s in spans)
    by_name = {s.name: s for s in spans}
    assert by_name["receive"].parent_span_id == by_name["job"].span_id
    assert by_name["handle"].parent_span_id == noise.ids["receive"]
    flows = [s for s in spans if s.name == "flow.workflow"]
    assert sorted(s.parent_span_id for s in flows) == sorted(
        [noise.ids["GET /a"], noise.ids["GET /b"]]
    )
    assert telemetry.stats.filtered == 0


def test_custom_and_local_exporters_next_to_it_get_the_original_tree(
    threaded_otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    path = tmp_path / "traces.jsonl"
    telemetry = _telemetry(threaded_otlp_receiver, local_exporter=f"jsonl:{path}")
    memory = InMemorySpanExporter()
    telemetry.add_processor(memory)
    noise = Noise()
    asyncio.run(produce_trees(noise))
    assert telemetry.flush(timeout=10)

    original = memory.get_finished_spans()
    assert len(original) == 17
    assert all(s.links == () for s in original)
    parents = {s.name: f"{s.parent.span_id:016x}" for s in original if s.parent is not None}
    assert parents["handle"] == noise.ids["receive"]
    assert sorted(
        f"{s.parent.span_id:016x}" for s in original if s.name == "flow.workflow" and s.parent
    ) == sorted([noise.ids["GET /a"], noise.ids["GET /b"]])

    written = list(read_spans(path))
    assert sorted((s["spanId"], s.get("parentSpanId", "")) for s in written) == sorted(
        (f"{s.context.span_id:016x}", f"{s.parent.span_id:016x}" if s.parent else "")
        for s in original
        if s.context is not None
    )
    assert not any("links" in s for s in written)

    received = threaded_otlp_receiver.spans
    assert len(received) == 12
    _assert_self_consistent(received)
    assert all(s.links == [] for s in received if s.name not in ("flow.workflow", "step.task"))
