"""The hand-built OTLP/JSON encoder matches OpenTelemetry's json-common encoder (the oracle).

The comparison is ``json.loads(ours) == json.loads(oracle)`` with no normalisation: both
write int64 as decimal strings, omit default-valued fields the same way, and both write
``"status": {}`` for an unset status. Only text-level differences (key order, whitespace,
``\\uXXXX`` escapes versus raw UTF-8) disappear in ``json.loads``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import random
import string
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as oracle_encode
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as pb_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.trace.status import Status, StatusCode

from keywordsai_tracing._otlp_json import (
    aencode,
    encode_json,
    encode_span,
    group_spans,
    iter_json,
)
from keywordsai_tracing._otlp_proto import ProtobufBatch, encode_protobuf


def oracle(spans: Sequence[ReadableSpan]) -> Any:
    """The json-common encoding, serialised the way that package does (``to_json``)."""
    return json.loads(oracle_encode(spans).to_json())


def ours(spans: Sequence[ReadableSpan]) -> Any:
    return json.loads(encode_json(spans))


def provider(
    memory: InMemorySpanExporter,
    resource: Resource | None = None,
    limits: SpanLimits | None = None,
) -> TracerProvider:
    tp = TracerProvider(
        resource=resource or Resource.create({"service.name": "t"}), span_limits=limits
    )
    tp.add_span_processor(SimpleSpanProcessor(memory))
    return tp


ATTRIBUTE_VALUES: dict[str, Any] = {
    "str": "hello",
    "empty_str": "",
    "unicode": "héllo ✓ 日本 \U0001f600",
    "escapes": 'quote " backslash \\ newline \n tab \t nul \x00 \x1f',
    "surrogate": "lone \udc80 surrogate",
    "true": True,
    "false": False,
    "int": 42,
    "zero": 0,
    "negative": -7,
    "int64_max": 2**63 - 1,
    "int64_min": -(2**63),
    "float": 3.25,
    "float_int": 2.0,
    "float_tiny": 1e-300,
    "float_big": 1.5e300,
    "nan": math.nan,
    "inf": math.inf,
    "ninf": -math.inf,
    "str_seq": ("a", "b", ""),
    "bool_seq": (True, False),
    "int_seq": (1, -2, 2**40),
    "float_seq": (0.5, -1.25, math.inf),
    "empty_seq": (),
    "str_seq_with_none": ("x", None),
}


def test_every_attribute_type_matches_the_oracle() -> None:
    memory = InMemorySpanExporter()
    tracer = provider(memory).get_tracer("scope", "1.0")
    with tracer.start_as_current_span("all-types", attributes=ATTRIBUTE_VALUES):
        pass
    spans = memory.get_finished_spans()
    assert ours(spans) == oracle(spans)
    attributes = ours(spans)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    by_key = {kv["key"]: kv["value"] for kv in attributes}
    assert by_key["int64_max"] == {"intValue": str(2**63 - 1)}
    assert by_key["nan"] == {"doubleValue": "NaN"}
    assert by_key["int_seq"] == {
        "arrayValue": {
            "values": [{"intValue": "1"}, {"intValue": "-2"}, {"intValue": "1099511627776"}]
        }
    }


def test_span_shape_events_links_status_kinds_and_remote_parent() -> None:
    memory = InMemorySpanExporter()
    tracer = provider(memory).get_tracer("shapes", "2.0", schema_url="https://schema/1")
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value"), ("other", "x1")]),
    )
    link_ctx = SpanContext(0x1, 0x2, is_remote=True, trace_flags=TraceFlags(1))
    local_link = SpanContext(0xABC, 0xDEF, is_remote=False)
    ctx = trace.set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span(
        "remote-child",
        context=ctx,
        kind=SpanKind.SERVER,
        links=[Link(link_ctx, {"link.attr": 1}), Link(local_link)],
    ) as span:
        span.add_event("first", {"e.str": "v", "e.seq": (1, 2)})
        span.add_event("bare")
        span.set_status(Status(StatusCode.ERROR, "it broke"))
        for kind in (SpanKind.INTERNAL, SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER):
            with tracer.start_as_current_span(f"kind-{kind.name}", kind=kind) as child:
                child.set_status(Status(StatusCode.OK))
    with tracer.start_as_current_span(""):  # empty name is a default value: omitted
        pass
    spans = memory.get_finished_spans()
    assert ours(spans) == oracle(spans)
    encoded = ours(spans)["resourceSpans"][0]["scopeSpans"][0]
    assert encoded["schemaUrl"] == "https://schema/1"
    by_name = {s.get("name", ""): s for s in encoded["spans"]}
    root = by_name["remote-child"]
    assert root["parentSpanId"] == "00f067aa0ba902b7"
    assert root["traceId"] == "0af7651916cd43dd8448eb211c80319c"
    assert root["traceState"] == "vendor=value,other=x1"
    assert root["flags"] == 0x300  # has-is-remote | is-remote
    assert root["kind"] == 2
    assert root["status"] == {"code": 2, "message": "it broke"}
    assert [link["flags"] for link in root["links"]] == [0x300, 0x100]
    assert by_name["kind-CLIENT"]["flags"] == 0x100
    kinds = {k: by_name[f"kind-{k.name}"]["kind"] for k in SpanKind if k is not SpanKind.SERVER}
    assert kinds == {
        SpanKind.INTERNAL: 1,
        SpanKind.CLIENT: 3,
        SpanKind.PRODUCER: 4,
        SpanKind.CONSUMER: 5,
    }


def test_dropped_counts_match_the_oracle() -> None:
    memory = InMemorySpanExporter()
    limits = SpanLimits(
        max_span_attributes=2,
        max_events=1,
        max_links=1,
        max_event_attributes=1,
        max_link_attributes=1,
    )
    tracer = provider(memory, limits=limits).get_tracer("limits")
    links = [Link(SpanContext(5, 6, False), {"a": 1, "b": 2}) for _ in range(2)]
    with tracer.start_as_current_span(
        "dropping", links=links, attributes={"a": 1, "b": 2, "c": 3}
    ) as span:
        span.add_event("one")
        span.add_event("two", {"x": 1, "y": 2})  # only the newest event is kept
    spans = memory.get_finished_spans()
    assert ours(spans) == oracle(spans)
    encoded = ours(spans)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert encoded["droppedAttributesCount"] == 1
    assert encoded["droppedEventsCount"] == 1
    assert encoded["droppedLinksCount"] == 1
    assert encoded["events"][0]["droppedAttributesCount"] == 1
    assert encoded["links"][0]["droppedAttributesCount"] == 1


def test_groups_by_resource_then_scope_in_first_seen_order() -> None:
    memory = InMemorySpanExporter()
    tp_a = provider(memory, Resource.create({"service.name": "a", "n": 1}))
    tp_b = provider(memory, Resource({"service.name": "b"}, schema_url="https://res/schema"))
    tp_empty = provider(memory, Resource.get_empty())
    tracers = [
        tp_a.get_tracer("s1", "1"),
        tp_b.get_tracer("s1", "1"),
        tp_a.get_tracer("s2"),
        tp_a.get_tracer("s1", "2"),
        tp_a.get_tracer("s1", "1", schema_url="https://scope/schema"),
        tp_b.get_tracer("s3", attributes={"scope.attr": "v", "n": 3}),
        tp_empty.get_tracer(""),
    ]
    for round_ in range(3):
        for index, tracer in enumerate(tracers):
            with tracer.start_as_current_span(f"span-{round_}-{index}"):
                pass
    spans = memory.get_finished_spans()
    assert ours(spans) == oracle(spans)
    encoded = ours(spans)["resourceSpans"]
    assert len(encoded) == 3
    assert [len(r["scopeSpans"]) for r in encoded] == [4, 2, 1]
    assert encoded[1]["schemaUrl"] == "https://res/schema"
    assert all(len(s["spans"]) == 3 for r in encoded for s in r["scopeSpans"])
    groups = group_spans(spans)
    assert [len(scopes) for _, scopes in groups] == [4, 2, 1]


def test_equal_resources_from_distinct_objects_share_one_entry() -> None:
    memory = InMemorySpanExporter()
    for _ in range(3):
        tracer = provider(memory, Resource({"service.name": "same"})).get_tracer("s")
        with tracer.start_as_current_span("x"):
            pass
    spans = memory.get_finished_spans()
    assert ours(spans) == oracle(spans)
    assert len(ours(spans)["resourceSpans"]) == 1


def _random_value(rng: random.Random) -> Any:
    makers: list[Callable[[], Any]] = [
        lambda: "".join(rng.choices(string.printable + "éß✓\U0001f600", k=rng.randint(0, 20))),
        lambda: rng.random() < 0.5,
        lambda: rng.randint(-(2**63), 2**63 - 1),
        lambda: rng.uniform(-1e6, 1e6),
        lambda: tuple(rng.choice(["a", "bb", ""]) for _ in range(rng.randint(0, 4))),
        lambda: tuple(rng.random() < 0.5 for _ in range(rng.randint(0, 4))),
        lambda: tuple(rng.randint(-100, 100) for _ in range(rng.randint(0, 4))),
        lambda: tuple(rng.uniform(-10, 10) for _ in range(rng.randint(0, 4))),
    ]
    return rng.choice(makers)()


@pytest.mark.parametrize("seed", range(8))
def test_random_span_shapes_match_the_oracle(seed: int) -> None:
    rng = random.Random(seed)
    memory = InMemorySpanExporter()
    providers = [provider(memory, Resource.create({"r": i})) for i in range(rng.randint(1, 3))]
    for index in range(60):
        tracer = rng.choice(providers).get_tracer(
            f"scope-{rng.randint(0, 2)}", rng.choice([None, "1"])
        )
        attributes = {f"k{i}": _random_value(rng) for i in range(rng.randint(0, 8))}
        links = [
            Link(
                SpanContext(rng.getrandbits(128) or 1, rng.getrandbits(64) or 1, rng.random() < 0.5)
            )
            for _ in range(rng.randint(0, 2))
        ]
        kind = rng.choice(list(SpanKind))
        with tracer.start_as_current_span(
            f"s{index}", kind=kind, attributes=attributes, links=links
        ) as span:
            for e in range(rng.randint(0, 2)):
                span.add_event(f"e{e}", {"v": _random_value(rng)})
            if rng.random() < 0.3:
                span.set_status(Status(StatusCode.ERROR, rng.choice([None, "boom"])))
    spans = memory.get_finished_spans()
    assert ours(spans) == oracle(spans)
    for finished in spans:  # one span alone is a valid Span object too
        assert (
            json.loads(encode_span(finished))
            == oracle([finished])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        )


def _batch(count: int) -> tuple[ReadableSpan, ...]:
    memory = InMemorySpanExporter()
    tracer = provider(memory).get_tracer("batch")
    for i in range(count):
        with tracer.start_as_current_span(f"span-{i}", attributes={"i": i, "text": "x" * 50}):
            pass
    return memory.get_finished_spans()


def test_slices_concatenate_to_the_whole_body() -> None:
    spans = _batch(150)
    chunks = list(iter_json(spans, slice_size=64))
    assert len(chunks) == 3
    assert b"".join(chunks) == encode_json(spans)
    assert ours(spans) == oracle(spans)


def test_body_is_utf8_without_needless_escapes() -> None:
    memory = InMemorySpanExporter()
    with provider(memory).get_tracer("u").start_as_current_span("日本"):
        pass
    assert "日本".encode() in encode_json(memory.get_finished_spans())


def test_empty_batch_encodes_to_an_empty_request() -> None:
    assert json.loads(encode_json([])) in ({}, {"resourceSpans": []})


def test_protobuf_is_the_stock_encoding() -> None:
    spans = _batch(10)
    assert encode_protobuf(spans) == pb_encode(spans).SerializePartialToString()


def test_protobuf_slices_merge_into_one_entry_per_resource_and_scope() -> None:
    memory = InMemorySpanExporter()
    tracers = [
        provider(memory, resource=Resource.create({"service.name": service})).get_tracer(scope)
        for service in ("a", "b")
        for scope in ("x", "y")
    ]
    for i in range(150):  # resources and scopes interleave across slice boundaries
        with tracers[i % 4].start_as_current_span(f"span-{i}", attributes={"i": i}):
            pass
    spans = memory.get_finished_spans()
    batch = ProtobufBatch()
    for start in range(0, len(spans), 64):
        batch.add(spans[start : start + 64])
    assert batch.serialize() == pb_encode(spans).SerializePartialToString()
    request = ExportTraceServiceRequest.FromString(batch.serialize())
    assert len(request.resource_spans) == 2
    assert [len(rs.scope_spans) for rs in request.resource_spans] == [2, 2]
    names = {s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert names == {s.name for s in spans}


@pytest.mark.asyncio
@pytest.mark.parametrize("protobuf", [False, True])
@pytest.mark.parametrize("compress", [False, True])
async def test_aencode_yields_to_the_loop_between_slices(protobuf: bool, compress: bool) -> None:
    spans = _batch(512)
    ticks = 0
    stop = False

    async def ticker() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    body = await aencode(spans, protobuf=protobuf, gzip=compress)
    during = ticks - before
    stop = True
    await task
    assert during >= 2  # 512 spans take several 0.5 ms turns: the loop ran in between
    raw = gzip.decompress(body) if compress else body
    if protobuf:
        request = ExportTraceServiceRequest.FromString(raw)
        assert sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans) == 512
    else:
        assert json.loads(raw) == oracle(spans)


def test_decorator_spans_read_from_their_fields_match_the_oracle(
    telemetry: Any, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The telemetry's own spans (ended `LeanSpan`s, compacted) take the direct path of
    `encode_span`; the quoting caches empty themselves when full and stay correct."""
    from keywordsai_tracing import _otlp_json, get_client, task, workflow

    monkeypatch.setattr(_otlp_json, "_CACHE_LIMIT", 3)  # every few strings, a fresh table
    rng = random.Random(7)

    @task(name="leaf")
    def leaf(value: Any) -> Any:
        get_client().update_current_span(attributes={"x": _random_value(rng)})
        if rng.random() < 0.3:
            raise ValueError("bad " + ATTRIBUTE_VALUES["escapes"])
        return value

    @workflow(name="wf " + ATTRIBUTE_VALUES["unicode"])
    def run() -> None:
        for value in ATTRIBUTE_VALUES.values():
            with contextlib.suppress(ValueError):
                leaf(value)

    for _ in range(3):
        run()
    spans = exporter.get_finished_spans()
    assert {type(span).__name__ for span in spans} == {"LeanSpan"}
    assert ours(spans) == oracle(spans)
    assert _otlp_json._DIRECT.get(type(spans[0])) is True
    for finished in spans:
        assert (
            json.loads(encode_span(finished))
            == oracle([finished])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        )


def test_a_span_class_whose_fields_disagree_is_encoded_through_its_properties() -> None:
    from keywordsai_tracing import _otlp_json

    class Renamed(ReadableSpan):
        @property
        def name(self) -> str:  # what the public API says wins over the field
            return "public name"

    memory = InMemorySpanExporter()
    with provider(memory).get_tracer("scope").start_as_current_span("field name"):
        pass
    (finished,) = memory.get_finished_spans()
    span = Renamed(
        name="field name",
        context=finished.context,
        parent=finished.parent,
        resource=finished.resource,
        attributes={"k": "v"},
        kind=finished.kind,
        start_time=finished.start_time,
        end_time=finished.end_time,
        instrumentation_scope=finished.instrumentation_scope,
    )
    assert ours([span]) == oracle([span])
    assert json.loads(encode_span(span))["name"] == "public name"
    assert _otlp_json._DIRECT[Renamed] is False
