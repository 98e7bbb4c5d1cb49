"""The SDK's own counters, summed over every route of a telemetry."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from ._exporter import ExporterStats
from ._processor_ledger import ProcessorStats


@dataclass(frozen=True, slots=True)
class TelemetryStats:
    """Counters since the telemetry was created.

    ``queued`` spans were accepted by a processor; each is ``exported``, counted in
    ``failed_spans`` (its batch, one of ``failed_batches``, was dropped), or still
    ``pending``. ``dropped`` spans found the queue full. From the OTLP/HTTP exporter:
    ``retries`` (attempts after the first), ``filtered`` (auto-instrumentation noise not
    sent) and ``rejected`` (refused by the collector in a partial success).
    """

    queued: int = 0
    exported: int = 0
    dropped: int = 0
    failed_batches: int = 0
    failed_spans: int = 0
    pending: int = 0
    retries: int = 0
    filtered: int = 0
    rejected: int = 0


def collect(parts: Iterable[tuple[Any, Any]]) -> TelemetryStats:
    """Sum ``(processor, exporter)`` counters; parts without counters are skipped."""
    totals = {f.name: 0 for f in fields(TelemetryStats)}
    for processor, exporter in parts:
        processor_stats = getattr(processor, "stats", None)
        if isinstance(processor_stats, ProcessorStats):
            for f in fields(ProcessorStats):
                totals[f.name] += getattr(processor_stats, f.name)
        exporter_stats = getattr(exporter, "stats", None)
        if isinstance(exporter_stats, ExporterStats):
            totals["retries"] += exporter_stats.retries
            totals["filtered"] += exporter_stats.spans_filtered
            totals["rejected"] += exporter_stats.spans_rejected
    return TelemetryStats(**totals)
