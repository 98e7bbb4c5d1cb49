"""The asyncio-native span processors, for any OpenTelemetry ``TracerProvider``.

`AsyncBatchSpanProcessor` batches ended spans and exports them from a task on the
application's event loop (or a private loop thread when none runs), delivering its queue
when a loop shuts down; `SimpleAsyncSpanProcessor` hands each span over as it ends. Both
wrap any ``SpanExporter`` (its ``export()`` runs off the loop) or an async exporter such
as `keywordsai_tracing.exporters.OTLPHttpExporter`::

    from opentelemetry.sdk.trace import TracerProvider
    from keywordsai_tracing.exporters import OTLPHttpExporter
    from keywordsai_tracing.processors import AsyncBatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(
        AsyncBatchSpanProcessor(OTLPHttpExporter("http://localhost:4318/v1/traces"))
    )
"""

from ._processor import AsyncBatchSpanProcessor
from ._processor_ledger import ProcessorStats
from ._processor_simple import SimpleAsyncSpanProcessor

__all__ = ["AsyncBatchSpanProcessor", "ProcessorStats", "SimpleAsyncSpanProcessor"]
