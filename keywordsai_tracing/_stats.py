"""The SDK's own counters, summed over every destination of a telemetry."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from ._engine import ProcessorStats


@dataclass(frozen=True, slots=True)
class TelemetryStats(ProcessorStats):
    """`ProcessorStats` summed over the telemetry's destinations (the KeywordsAI exporter,
    a local exporter, each `add_processor`): a span sent to two destinations counts in
    each. ``queued + in_flight + delivered + dropped == ended`` holds for the sum too.

    ``not_recorded`` counts spans never recorded at all, because no destination would
    have received them (noise, when every destination filters it): they never end, so
    they are outside that identity."""

    not_recorded: int = 0


def collect(processors: Iterable[object], *, not_recorded: int = 0) -> TelemetryStats:
    """Sum the counters of ``processors``; processors without our counters are skipped."""
    totals = dict.fromkeys((f.name for f in fields(ProcessorStats)), 0)
    for processor in processors:
        stats = getattr(processor, "stats", None)
        if isinstance(stats, ProcessorStats):
            for name in totals:
                totals[name] += getattr(stats, name)
    return TelemetryStats(**totals, not_recorded=not_recorded)
