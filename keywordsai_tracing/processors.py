"""The asyncio-native span processors, for any OpenTelemetry ``TracerProvider``.

`AsyncBatchSpanProcessor` is a drop-in for OpenTelemetry's ``BatchSpanProcessor`` (same
arguments, same ``OTEL_BSP_*`` defaults, any exporter it takes) that exports from a task
on the application's event loop (or a private loop thread when none runs), delivers what
is queued when a loop shuts down, and counts where every span is (`ProcessorStats`);
`SimpleAsyncSpanProcessor` hands each span over as it ends::

    from opentelemetry.sdk.trace import TracerProvider
    from keywordsai_tracing.exporters import OTLPHttpExporter
    from keywordsai_tracing.processors import AsyncBatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(
        AsyncBatchSpanProcessor(OTLPHttpExporter("http://localhost:4318/v1/traces"))
    )
"""

from ._engine import AsyncBatchSpanProcessor, ProcessorStats, SimpleAsyncSpanProcessor

__all__ = ["AsyncBatchSpanProcessor", "ProcessorStats", "SimpleAsyncSpanProcessor"]
