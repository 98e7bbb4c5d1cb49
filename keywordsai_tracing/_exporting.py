"""Which exporter a telemetry sends to, and which processor takes spans there."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter

from ._config import Settings
from ._engine import AsyncBatchSpanProcessor, SimpleAsyncSpanProcessor
from ._export_types import AsyncSpanExporter
from ._exporter import OTLPHttpExporter

ExportProcessor = AsyncBatchSpanProcessor | SimpleAsyncSpanProcessor


def default_exporter(settings: Settings) -> SpanExporter | AsyncSpanExporter | None:
    """The custom exporter if given; else OTLP/HTTP when there is an API key or a
    ``base_url`` of the user's own (a local collector needs no key); else none."""
    if settings.custom_exporter is not None:
        return settings.custom_exporter
    if settings.api_key or not settings.is_default_endpoint:
        return OTLPHttpExporter.from_settings(settings)
    return None


def filters_noise(exporter: object) -> bool:
    """Whether ``exporter`` drops noise (`_noise`): ours, with ``filter_noise`` on."""
    return isinstance(exporter, OTLPHttpExporter) and exporter.filter_noise


def export_processor(exporter: Any, batching: bool, settings: Settings) -> ExportProcessor:
    """The asyncio-native processor that takes spans to ``exporter``. Its exit is the
    telemetry's to manage (one budget for every destination), so it has no exit hook."""
    timeout_millis = settings.batch_timeout * 1000
    if not batching:
        return SimpleAsyncSpanProcessor(
            exporter,
            max_queue_size=settings.max_queue_size,
            export_timeout_millis=timeout_millis,
            exit_flush_timeout=None,
        )
    return AsyncBatchSpanProcessor(
        exporter,
        max_queue_size=settings.max_queue_size,
        schedule_delay_millis=settings.schedule_delay * 1000,
        max_export_batch_size=min(settings.max_export_batch_size, settings.max_queue_size),
        export_timeout_millis=timeout_millis,
        exit_flush_timeout=None,
    )
