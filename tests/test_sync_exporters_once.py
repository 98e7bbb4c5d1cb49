"""Issue 9: a synchronous exporter never receives a batch twice.

A sync ``export()`` runs in a thread and cannot be cancelled: when a loop closes, or a
sync flush on the owning loop takes the queue over, a batch still in that thread must be
waited for, never handed over again. Each test counts what the exporter received by
span id.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import KeywordsAITelemetry, task
from keywordsai_tracing.exporters import JsonLinesFileExporter, read_spans
from tests.test_processor_support import run_script

RUNS, CALLS = 20, 600


@task(name="unit")
async def unit(i: int) -> int:
    await asyncio.sleep(0)
    return i


async def calls(count: int) -> None:
    for i in range(count):
        await unit(i)


def in_memory(_: Path) -> tuple[SpanExporter, Callable[[], list[str]]]:
    exporter = InMemorySpanExporter()

    def received() -> list[str]:
        return [f"{s.context.span_id:016x}" for s in exporter.get_finished_spans() if s.context]

    return exporter, received


def json_lines_file(tmp_path: Path) -> tuple[SpanExporter, Callable[[], list[str]]]:
    path = tmp_path / "run.jsonl"
    return JsonLinesFileExporter(path), lambda: [s["spanId"] for s in read_spans(path)]


@pytest.mark.parametrize("make_exporter", [in_memory, json_lines_file], ids=["in-memory", "jsonl"])
def test_twenty_asyncio_runs_export_each_span_exactly_once(
    tmp_path: Path,
    make_exporter: Callable[[Path], tuple[SpanExporter, Callable[[], list[str]]]],
) -> None:
    exporter, received = make_exporter(tmp_path)
    telemetry = KeywordsAITelemetry(custom_exporter=exporter, instruments=set())
    for _ in range(RUNS):
        asyncio.run(calls(CALLS))
    assert telemetry.flush() is True
    copies = Counter(received())
    twice = sum(1 for n in copies.values() if n > 1)
    assert (len(copies), twice) == (RUNS * CALLS, 0), (
        f"{sum(copies.values())} exported for {len(copies)} distinct spans; {twice} more than once"
    )
    stats = telemetry.stats
    assert stats.queued + stats.in_flight + stats.delivered + stats.dropped == stats.ended, stats
    assert (stats.ended, stats.delivered) == (RUNS * CALLS, RUNS * CALLS), stats
    telemetry.shutdown()


SYNC_FLUSH_ON_THE_OWNING_LOOP = """
import asyncio, dataclasses, json, threading, time
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from keywordsai_tracing import KeywordsAITelemetry, get_client, task

class SlowExporter(SpanExporter):
    def __init__(self):
        self.ids, self.lock, self.started = [], threading.Lock(), threading.Event()

    def export(self, spans):
        self.started.set()
        time.sleep(0.3)  # still running when the flush starts
        with self.lock:
            self.ids += [f"{s.context.span_id:016x}" for s in spans]
        return SpanExportResult.SUCCESS

exporter = SlowExporter()
telemetry = KeywordsAITelemetry(
    custom_exporter=exporter, instruments=set(), max_export_batch_size=5, schedule_delay=60
)

@task(name="unit")
async def unit(i):
    await asyncio.sleep(0)
    return i

async def main():
    for i in range(5):  # a full batch: its export starts in the exporter's thread
        await unit(i)
    await asyncio.to_thread(exporter.started.wait, 10)
    for i in range(3):  # queued behind it
        await unit(i)
    return get_client().flush()  # a sync flush, blocking the owning loop

flushed = asyncio.run(main())
final = telemetry.flush()
print(json.dumps({
    "flushed": flushed,
    "final": final,
    "ids": exporter.ids,
    "stats": dataclasses.asdict(telemetry.stats),
}))
"""


def test_a_sync_flush_on_the_owning_loop_exports_each_span_once() -> None:
    # A subprocess: blocking the loop is what this test does on purpose, which the
    # suite's blocking-call detector would (rightly) reject in-process.
    result = run_script(textwrap.dedent(SYNC_FLUSH_ON_THE_OWNING_LOOP))
    report = json.loads(result.stdout.strip().splitlines()[-1])
    copies = Counter(report["ids"])
    assert (len(report["ids"]), len(copies)) == (8, 8), f"{copies.most_common(3)} of 8 spans"
    assert report["flushed"] is True
    assert report["final"] is True
    stats = report["stats"]
    accounted = stats["queued"] + stats["in_flight"] + stats["delivered"] + stats["dropped"]
    assert accounted == stats["ended"], stats
    assert (stats["ended"], stats["delivered"]) == (8, 8), stats
