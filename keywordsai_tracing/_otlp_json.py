"""OTLP encodings of finished spans: a hand-built OTLP/JSON encoder, and `aencode`, which
builds a request body (JSON, or protobuf through `_otlp_proto`) in slices.

The JSON text is built directly (stdlib ``json`` only quotes strings), which costs a
fraction of OpenTelemetry's ``opentelemetry-exporter-otlp-json-common`` and matches its
output field for field (that package is the test oracle). Encoding is exposed as an
iterator of byte chunks, one per slice of spans, so an async caller can yield to the event
loop between slices (`aencode`); `encode_json` joins the chunks in one go.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import threading
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any, Final

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status

from ._compact import plain_attributes
from ._fair import FairShare

logger = logging.getLogger("keywordsai_tracing.exporter")

SLICE_SIZE: Final = 16
"""Spans encoded between two chances to yield to the event loop."""

_HAS_IS_REMOTE: Final = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE: Final = 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
# OTLP numbers span kinds from 1 (0 is UNSPECIFIED); the API's enum starts at 0.
_KIND: Final = {kind: kind.value + 1 for kind in SpanKind}

Quote = Callable[[str], str]
_Groups = list[tuple[Resource, list[tuple[InstrumentationScope | None, list[ReadableSpan]]]]]


def _flags(context: SpanContext | None) -> int:
    """Span/link ``flags`` as the stock encoders write them (is-remote bits only)."""
    if context is not None and context.is_remote:
        return _HAS_IS_REMOTE | _IS_REMOTE
    return _HAS_IS_REMOTE


def _double(value: float) -> str:
    if math.isfinite(value):
        return repr(value)
    if math.isnan(value):
        return '"NaN"'
    return '"Infinity"' if value > 0 else '"-Infinity"'


def _value(value: Any, q: Quote) -> str:
    """One ``AnyValue`` as JSON text (proto3 JSON: int64 as string, bytes as base64)."""
    kind = type(value)
    if kind is str:
        return '{"stringValue":' + q(value) + "}"
    if kind is bool:
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if kind is int:
        return f'{{"intValue":"{value:d}"}}'
    if kind is float:
        return '{"doubleValue":' + _double(value) + "}"
    return _value_slow(value, q)


def _value_slow(value: Any, q: Quote) -> str:
    if value is None:
        return "{}"
    if isinstance(value, bool):
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if isinstance(value, str):
        return '{"stringValue":' + q(value) + "}"
    if isinstance(value, int):
        return f'{{"intValue":"{value:d}"}}'
    if isinstance(value, float):
        return '{"doubleValue":' + _double(value) + "}"
    if isinstance(value, bytes):
        return '{"bytesValue":"' + base64.b64encode(value).decode("ascii") + '"}'
    if isinstance(value, Sequence):
        if not value:
            return '{"arrayValue":{}}'
        return '{"arrayValue":{"values":[' + ",".join([_value(v, q) for v in value]) + "]}}"
    if isinstance(value, Mapping):
        if not value:
            return '{"kvlistValue":{}}'
        pairs = [_key_value(str(k), v, q) for k, v in value.items()]
        return '{"kvlistValue":{"values":[' + ",".join(pairs) + "]}}"
    raise TypeError(f"Invalid type {type(value).__name__} of attribute value")


def _key_value(key: str, value: Any, q: Quote) -> str:
    return '{"key":' + q(key) + ',"value":' + _value(value, q) + "}"


def _attributes(attributes: Mapping[str, Any] | None, q: Quote) -> str:
    """``"attributes":[...]`` preceded by a comma, or ``""`` when there are none."""
    if not attributes:
        return ""
    if q is encode_basestring:
        return ',"attributes":[' + ",".join(_quoted_pairs(attributes)) + "]"
    parts = []
    for key, value in attributes.items():
        if type(value) is str:  # the common case, inlined
            parts.append('{"key":' + q(key) + ',"value":{"stringValue":' + q(value) + "}}")
            continue
        try:
            parts.append('{"key":' + q(key) + ',"value":' + _value(value, q) + "}")
        except TypeError:
            logger.debug("Dropping attribute %r: unsupported value type", key)
    return ',"attributes":[' + ",".join(parts) + "]"


# The JSON text of strings that recur from span to span, quoted once instead of once per
# span: attribute keys (as the head of their key-value object) and short values (span
# kinds, entity, workflow and model names, roles, ids of a customer). Each table is
# emptied when it reaches `_CACHE_LIMIT` entries, so odd keys cannot grow it for ever.
_CACHE_LIMIT: Final = 2048
_SHORT: Final = 64  # longer values (inputs, outputs, prompts) are quoted every time
_string_heads: dict[str, str] = {}  # key -> '{"key":"<key>","value":{"stringValue":'
_value_heads: dict[str, str] = {}  # key -> '{"key":"<key>","value":'
_short_values: dict[str, str] = {}  # value -> '"<value>"'


def _remember(table: dict[str, str], key: str, text: str) -> str:
    if len(table) >= _CACHE_LIMIT:
        table.clear()
    table[key] = text
    return text


def _quoted(text: str) -> str:
    """``text`` as a JSON string, remembered in `_short_values` when it is short (a long
    one is not even hashed)."""
    if len(text) > _SHORT:
        return encode_basestring(text)
    quoted = _short_values.get(text)
    if quoted is None:
        quoted = _remember(_short_values, text, encode_basestring(text))
    return quoted


def _quoted_pairs(attributes: Mapping[str, Any]) -> list[str]:
    """`_attributes`' key-value objects, quoting with the stdlib (cached, see above)."""
    string_heads, short_values = _string_heads, _short_values
    parts = []
    for key, value in attributes.items():
        if type(value) is str:
            head = string_heads.get(key)
            if head is None:
                opening = '{"key":' + encode_basestring(key) + ',"value":{"stringValue":'
                head = _remember(string_heads, key, opening)
            # `_quoted`, its hit inlined (a call per attribute otherwise)
            quoted = short_values.get(value) if len(value) <= _SHORT else None
            if quoted is None:
                quoted = _quoted(value)
            parts.append(head + quoted + "}}")
            continue
        head = _value_heads.get(key)
        if head is None:
            head = _remember(_value_heads, key, '{"key":' + encode_basestring(key) + ',"value":')
        try:
            parts.append(head + _value(value, encode_basestring) + "}")
        except TypeError:
            logger.debug("Dropping attribute %r: unsupported value type", key)
    return parts


def _dropped(name: str, count: int) -> str:
    return f',"{name}":{count}' if count else ""


def _has_any(span: ReadableSpan, private: str, public: str) -> bool:
    """``bool(span.events)`` (or links) without building the tuple the property returns."""
    raw = getattr(span, private, None)
    if raw is not None:
        return len(raw) > 0
    return bool(getattr(span, public))


def encode_span(span: ReadableSpan, q: Quote = encode_basestring) -> str:
    """One OTLP/JSON ``Span`` object as text; ``q`` quotes a string as JSON."""
    if q is encode_basestring:
        direct = _DIRECT.get(type(span))
        if direct is None:
            direct = _direct_agrees(span)
        if direct:
            text = _encode_direct(span)
            if text is not None:
                return text
    return _encode_public(span, q)


# Span classes whose fields `_encode_direct` may read, decided for each class by its
# first span: encoded both ways, the texts must be the same (an SDK that renamed or
# re-typed a field takes the public path for good).
_DIRECT: dict[type, bool] = {}


def _direct_agrees(span: ReadableSpan) -> bool | None:
    """Whether ``type(span)`` may use `_encode_direct`; None while undecided (this span
    is one that only the public path encodes)."""
    try:
        text = _encode_direct(span)
    except Exception:  # a class without the fields: never again
        _DIRECT[type(span)] = False
        return False
    if text is None:
        return None
    agrees = text == _encode_public(span, encode_basestring)
    _DIRECT[type(span)] = agrees
    if not agrees:
        logger.debug("Encoding %s spans through their public properties", type(span).__name__)
    return agrees


def _encode_direct(span: Any) -> str | None:
    """`encode_span` for the common span (plain attributes that dropped nothing, no events,
    no links, both times set), read from the SDK's fields instead of its properties (a
    Python call each); None for any other span."""
    attributes = span._attributes
    if type(attributes) is not dict:
        if type(attributes) is not BoundedAttributes or attributes.dropped:
            return None
        attributes = attributes._dict
        if type(attributes) is not dict:
            return None
    events, links = span._events, span._links
    if events or links or type(events) is not tuple or type(links) is not tuple:
        return None
    start, end = span._start_time, span._end_time
    if not start or not end:
        return None
    ctx, parent, status = span._context, span._parent, span._status
    name = span._name
    parts = [
        f'{{"traceId":"{ctx.trace_id:032x}","spanId":"{ctx.span_id:016x}"',
        f',"parentSpanId":"{parent.span_id:016x}","flags":{_flags(parent)}'
        if parent is not None
        else f',"flags":{_HAS_IS_REMOTE}',
        f',"kind":{_KIND[span._kind]},"startTimeUnixNano":"{start}","endTimeUnixNano":"{end}"',
    ]
    if ctx.trace_state:
        state = ",".join([f"{k}={v}" for k, v in ctx.trace_state.items()])
        parts.append(',"traceState":' + encode_basestring(state))
    if name:
        parts.append(',"name":' + _quoted(name))
    if attributes:
        parts.append(',"attributes":[' + ",".join(_quoted_pairs(attributes)) + "]")
    parts.append(_status(status, encode_basestring))
    return "".join(parts)


def _encode_public(span: ReadableSpan, q: Quote) -> str:
    """`encode_span` through the span's public properties: every span, any quoting."""
    ctx = span.get_span_context()
    assert ctx is not None  # always set on SDK spans
    parent = span.parent
    parts = [
        f'{{"traceId":"{ctx.trace_id:032x}","spanId":"{ctx.span_id:016x}"',
        f',"parentSpanId":"{parent.span_id:016x}","flags":{_flags(parent)}'
        if parent is not None
        else f',"flags":{_HAS_IS_REMOTE}',
        f',"kind":{_KIND[span.kind]},"startTimeUnixNano":"{span.start_time}"'
        f',"endTimeUnixNano":"{span.end_time}"',
    ]
    if not span.start_time or not span.end_time:  # unset times are omitted, like defaults
        parts[2] = f',"kind":{_KIND[span.kind]}'
        if span.start_time:
            parts.append(f',"startTimeUnixNano":"{span.start_time}"')
        if span.end_time:
            parts.append(f',"endTimeUnixNano":"{span.end_time}"')
    if ctx.trace_state:
        state = ",".join([f"{k}={v}" for k, v in ctx.trace_state.items()])
        parts.append(',"traceState":' + q(state))
    if span.name:
        parts.append(',"name":' + q(span.name))
    parts.append(_attributes(plain_attributes(span), q))
    parts.append(_dropped("droppedAttributesCount", span.dropped_attributes))
    if _has_any(span, "_events", "events"):
        events = []
        for event in span.events:
            fields = [f'"timeUnixNano":"{event.timestamp}"'] if event.timestamp else []
            if event.name:
                fields.append('"name":' + q(event.name))
            text = _attributes(event.attributes, q) + _dropped(
                "droppedAttributesCount", event.dropped_attributes
            )
            if text:
                fields.append(text[1:])
            events.append("{" + ",".join(fields) + "}")
        parts.append(',"events":[' + ",".join(events) + "]")
    parts.append(_dropped("droppedEventsCount", span.dropped_events))
    if _has_any(span, "_links", "links"):
        links = []
        for link in span.links:
            lctx = link.context
            links.append(
                f'{{"traceId":"{lctx.trace_id:032x}","spanId":"{lctx.span_id:016x}"'
                + _attributes(link.attributes, q)
                + _dropped("droppedAttributesCount", link.dropped_attributes)
                + f',"flags":{_flags(lctx)}}}'
            )
        parts.append(',"links":[' + ",".join(links) + "]")
    parts.append(_dropped("droppedLinksCount", span.dropped_links))
    parts.append(_status(span.status, q))
    return "".join(parts)


def _status(status: Status, q: Quote) -> str:
    """``,"status":{...}}``: the span's status, and the brace closing the span object."""
    code = status.status_code.value
    if status.description:
        return ',"status":{"message":' + q(status.description) + f',"code":{code}}}}}'
    if code:
        return f',"status":{{"code":{code}}}}}'
    return ',"status":{}}'


def _resource(resource: Resource, q: Quote) -> str:
    return "{" + _attributes(resource.attributes, q)[1:] + "}"


def _scope(scope: InstrumentationScope | None, q: Quote) -> str:
    if scope is None:
        return "{}"
    fields = []
    if scope.name:
        fields.append('"name":' + q(scope.name))
    if scope.version:
        fields.append('"version":' + q(scope.version))
    attributes = _attributes(scope.attributes, q)
    if attributes:
        fields.append(attributes[1:])
    return "{" + ",".join(fields) + "}"


def _schema(url: str | None, q: Quote) -> str:
    return ',"schemaUrl":' + q(url) if url else ""


def group_spans(spans: Sequence[ReadableSpan]) -> _Groups:
    """Group spans by resource, then instrumentation scope, in first-seen order."""
    by_identity: dict[int, list[tuple[InstrumentationScope | None, list[ReadableSpan]]]] = {}
    by_value: dict[Resource, list[tuple[InstrumentationScope | None, list[ReadableSpan]]]] = {}
    scope_index: dict[tuple[int, InstrumentationScope | None], list[ReadableSpan]] = {}
    groups: _Groups = []
    for span in spans:
        resource = span.resource
        scopes = by_identity.get(id(resource))
        if scopes is None:
            # Resource hashing serialises its attributes: do it once per distinct object.
            scopes = by_value.get(resource)
            if scopes is None:
                scopes = by_value[resource] = []
                groups.append((resource, scopes))
            by_identity[id(resource)] = scopes
        scope = span.instrumentation_scope or None
        key = (id(scopes), scope)
        members = scope_index.get(key)
        if members is None:
            members = scope_index[key] = []
            scopes.append((scope, members))
        members.append(span)
    return groups


def _text_chunks(spans: Sequence[ReadableSpan], slice_size: int, q: Quote) -> Iterator[list[str]]:
    """The request's JSON text as lists of pieces, one list per ``slice_size`` spans."""
    pieces: list[str] = ['{"resourceSpans":[']
    count = 0
    for r, (resource, scopes) in enumerate(group_spans(spans)):
        pieces.append(("," if r else "") + '{"resource":' + _resource(resource, q))
        pieces.append(',"scopeSpans":[')
        for s, (scope, members) in enumerate(scopes):
            pieces.append(("," if s else "") + '{"scope":' + _scope(scope, q) + ',"spans":[')
            for i, span in enumerate(members):
                if i:
                    pieces.append(",")
                pieces.append(encode_span(span, q))
                count += 1
                if count % slice_size == 0:
                    yield pieces
                    pieces = []
            schema = scope.schema_url if scope is not None else None
            pieces.append("]" + _schema(schema, q) + "}")
        pieces.append("]" + _schema(resource.schema_url, q) + "}")
    pieces.append("]}")
    yield pieces


def iter_json(spans: Sequence[ReadableSpan], slice_size: int = SLICE_SIZE) -> Iterator[bytes]:
    """OTLP/JSON ``ExportTraceServiceRequest`` as UTF-8 chunks, one per slice of spans."""
    for pieces in _text_chunks(spans, slice_size, encode_basestring):
        # Lone surrogates (only possible inside strings) become JSON \uXXXX escapes.
        yield "".join(pieces).encode("utf-8", "backslashreplace")


class _LoopLock(threading.local):
    """One `asyncio.Lock` for the loop running on this thread (a new one per loop)."""

    loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
    lock: asyncio.Lock | None = None

    def get(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self.lock is None or self.loop is None or self.loop() is not loop:
            self.loop, self.lock = weakref.ref(loop), asyncio.Lock()
        return self.lock


# Encodings on one loop take turns: each measures its fair share against the time the
# rest of the loop ran, so encodings running side by side (several batches in flight)
# would count each other's turns and all grow to the cap in the same pass of the loop.
_encoding = _LoopLock()


def encode_json(spans: Sequence[ReadableSpan]) -> bytes:
    """The whole OTLP/JSON request body at once."""
    return b"".join(iter_json(spans, max(len(spans), 1)))


async def aencode(
    spans: Sequence[ReadableSpan],
    *,
    protobuf: bool = False,
    gzip: bool = False,
    slice_size: int = SLICE_SIZE,
) -> bytes:
    """The request body for ``spans`` (optionally gzip-compressed), built in slices of
    ``slice_size`` spans; between slices it yields to the event loop as often as
    `FairShare` says (short turns on a quiet loop, a fair share of CPU on a busy one).
    One encoding at a time runs on a loop; others wait their turn."""
    async with _encoding.get():
        return await _aencode(spans, protobuf, gzip, slice_size)


async def _aencode(
    spans: Sequence[ReadableSpan], protobuf: bool, gzip: bool, slice_size: int
) -> bytes:
    fair = FairShare()
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None  # 31: gzip framing
    out: list[bytes] = []
    if protobuf:
        from ._otlp_proto import ProtobufBatch  # protobuf loads only for those who use it

        batch = ProtobufBatch()
        for start in range(0, len(spans), slice_size):
            await fair.checkpoint()
            batch.add(spans[start : start + slice_size])
        chunks: Iterator[bytes] = iter((batch.serialize(),))
    else:
        chunks = iter_json(spans, slice_size)
    for chunk in chunks:
        await fair.checkpoint()
        out.append(compressor.compress(chunk) if compressor is not None else chunk)
    if compressor is not None:
        out.append(compressor.flush())
    return b"".join(out)
