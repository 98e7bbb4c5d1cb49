"""OTLP protobuf request bodies, built slice by slice with the stock encoder.

Each slice goes through OpenTelemetry's own ``encode_spans``; its spans are merged into
one request under a single entry per resource and per instrumentation scope, exactly as
encoding the whole batch at once would group them.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.sdk.trace import ReadableSpan


def _key(message: ResourceSpans | ScopeSpans, part: bytes) -> bytes:
    return part + b"\x00" + message.schema_url.encode()


class ProtobufBatch:
    """Accumulates slices of spans into one ``ExportTraceServiceRequest``."""

    def __init__(self) -> None:
        self._request = ExportTraceServiceRequest()
        self._resources: dict[bytes, ResourceSpans] = {}
        self._scopes: dict[tuple[bytes, bytes], ScopeSpans] = {}

    def add(self, spans: Sequence[ReadableSpan]) -> None:
        """Encode ``spans`` and merge them into the request."""
        for part in encode_spans(spans).resource_spans:
            resource_key = _key(part, part.resource.SerializeToString(deterministic=True))
            resource = self._resources.get(resource_key)
            if resource is None:
                resource = self._request.resource_spans.add()
                resource.resource.CopyFrom(part.resource)
                resource.schema_url = part.schema_url
                self._resources[resource_key] = resource
            for scope_part in part.scope_spans:
                scope_key = _key(scope_part, scope_part.scope.SerializeToString(deterministic=True))
                scope = self._scopes.get((resource_key, scope_key))
                if scope is None:
                    scope = resource.scope_spans.add()
                    scope.scope.CopyFrom(scope_part.scope)
                    scope.schema_url = scope_part.schema_url
                    self._scopes[resource_key, scope_key] = scope
                scope.spans.extend(scope_part.spans)

    def serialize(self) -> bytes:
        """The request body."""
        body: bytes = self._request.SerializePartialToString()
        return body


def encode_protobuf(spans: Sequence[ReadableSpan]) -> bytes:
    """The whole OTLP protobuf request body at once."""
    batch = ProtobufBatch()
    batch.add(spans)
    return batch.serialize()
