"""The seam between the telemetry and the export machinery: which exporter, which processor."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from ._config import Settings


def default_exporter(settings: Settings) -> SpanExporter | None:
    """The exporter a telemetry sends to: the custom one, else none without an API key."""
    return settings.custom_exporter


def export_processor(exporter: Any, batching: bool, settings: Settings) -> SpanProcessor:
    """The processor that takes spans to ``exporter``."""
    if not batching:
        return SimpleSpanProcessor(exporter)
    return BatchSpanProcessor(
        exporter,
        max_queue_size=settings.max_queue_size,
        schedule_delay_millis=settings.schedule_delay * 1000,
        max_export_batch_size=min(settings.max_export_batch_size, settings.max_queue_size),
        export_timeout_millis=settings.batch_timeout * 1000,
    )
