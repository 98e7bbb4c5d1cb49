"""Which exporter a telemetry sends to, and which processor takes spans there."""

from __future__ import annotations

import logging

from opentelemetry.sdk.trace.export import SpanExporter

from ._config import Settings
from ._export_types import AsyncSpanExporter
from ._exporter import OTLPHttpExporter
from ._processor import AsyncBatchSpanProcessor
from ._processor_simple import SimpleAsyncSpanProcessor

logger = logging.getLogger("keywordsai_tracing")

ExportProcessor = AsyncBatchSpanProcessor | SimpleAsyncSpanProcessor


def default_exporter(settings: Settings) -> SpanExporter | AsyncSpanExporter | None:
    """The custom exporter if given; else OTLP/HTTP when there is an API key or a
    ``base_url`` of the user's own (a local collector needs no key); else none."""
    if settings.custom_exporter is not None:
        return settings.custom_exporter
    if settings.api_key or not settings.is_default_endpoint:
        return OTLPHttpExporter.from_settings(settings)
    return None


def export_processor(
    exporter: SpanExporter | AsyncSpanExporter, batching: bool, settings: Settings
) -> ExportProcessor:
    """The asyncio-native processor that takes spans to ``exporter``."""
    if not batching:
        return SimpleAsyncSpanProcessor(
            exporter, max_queue_size=settings.max_queue_size, export_timeout=settings.batch_timeout
        )
    return AsyncBatchSpanProcessor(
        exporter,
        max_queue_size=settings.max_queue_size,
        max_export_batch_size=min(settings.max_export_batch_size, settings.max_queue_size),
        schedule_delay=settings.schedule_delay,
        export_timeout=settings.batch_timeout,
    )
