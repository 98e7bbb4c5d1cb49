"""OpenTelemetry's stock pipeline: BatchSpanProcessor + OTLP/HTTP protobuf exporter."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from .base import Contender, Options, package_version


def create(options: Options) -> Contender:
    """A global SDK provider exporting to the receiver; spans by ``start_as_current_span``."""
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    if options.base_url is not None:
        exporter = OTLPSpanExporter(endpoint=f"{options.base_url}/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("bench")

    def step(x: int) -> int:
        with tracer.start_as_current_span("step.task"):
            return x + 1

    def unit(x: int) -> int:
        with tracer.start_as_current_span("unit.workflow"):
            return step(x) + step(x) + step(x)

    async def astep(x: int) -> int:
        with tracer.start_as_current_span("step.task"):
            return x + 1

    async def aunit(x: int) -> int:
        with tracer.start_as_current_span("unit.workflow"):
            return await astep(x) + await astep(x) + await astep(x)

    def flush() -> bool:
        return provider.force_flush()

    async def aflush() -> bool:
        return provider.force_flush()  # sync, on the loop: what its users do

    info = {"opentelemetry-sdk": package_version("opentelemetry-sdk")}
    return Contender(unit, aunit, flush, aflush, info=info)
