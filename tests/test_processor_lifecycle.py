"""AsyncBatchSpanProcessor across loop lifetimes, process exit and fork."""

from __future__ import annotations

import asyncio
import gc
import os
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry import context as context_api
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from keywordsai_tracing._engine import ProcessorStats
from tests.test_processor_support import (
    Processors,
    RecordingExporter,
    end_spans,
    run_script,
    tracer_for,
    wait_for_child,
    wait_until,
    watching_logs,
)

PRELUDE = """
import asyncio, atexit, threading, time
from opentelemetry.sdk.trace import TracerProvider
from keywordsai_tracing._engine import AsyncBatchSpanProcessor
from keywordsai_tracing._engine import ProcessorStats
from tests.test_processor_support import (
    RecordingExporter, SyncRecordingExporter, end_spans, tracer_for,
)
"""


@pytest.fixture
def processors() -> Iterator[Processors]:
    made = Processors()
    yield made
    made.shutdown_all()


def script(body: str) -> str:
    return PRELUDE + textwrap.dedent(body)


def test_many_asyncio_runs_in_sequence_lose_nothing_and_warn_nothing(
    processors: Processors,
) -> None:
    exporter = RecordingExporter()
    processor = processors.make(exporter, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    expected: list[str] = []

    async def main(run: int) -> list[str]:
        names = end_spans(tracer, f"run{run}", 30)
        await asyncio.sleep(0)
        return names

    with watching_logs() as logs:
        for run in range(20):
            expected += asyncio.run(main(run))
            # Delivered while that loop shut down: no flush was called.
            assert exporter.names == expected
        gc.collect()
    logs.assert_clean()
    assert len({call.loop for call in exporter.calls}) == 20
    assert len(set(exporter.closed_on)) == 20  # the exporter was closed on each loop
    assert processor.stats.pending == 0


def test_a_batch_cut_off_by_loop_shutdown_is_sent_again(processors: Processors) -> None:
    exporter = RecordingExporter(hang_first=True)
    processor = processors.make(exporter, max_export_batch_size=3, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)

    async def main() -> list[str]:
        names = end_spans(tracer, "cut", 3)  # a full batch: its export hangs
        await asyncio.to_thread(exporter.started.wait, 10)
        return names + end_spans(tracer, "queued", 2)

    with watching_logs() as logs:
        names = asyncio.run(main())  # the hung send is cut off when the drain time ends
        assert processor.force_flush(10_000)
    logs.assert_clean()
    assert exporter.cut_off == [tuple(names[:3])]
    assert exporter.names == names  # re-sent first, then the rest, from the private thread
    assert {call.thread for call in exporter.calls} == {"keywordsai-export-loop"}
    assert processor.stats == ProcessorStats(ended=5, delivered=5, resent=3, retries=1)


def test_spans_queued_after_the_loop_drained_go_to_the_private_thread(
    processors: Processors,
) -> None:
    exporter = RecordingExporter()
    processor = processors.make(exporter, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)

    async def main() -> None:
        end_spans(tracer, "early", 2)
        try:
            await asyncio.Event().wait()  # cancelled by asyncio.run at the end
        finally:
            await asyncio.sleep(0.05)  # outlives the export task's drain
            end_spans(tracer, "late", 2)

    async def run() -> None:
        loop_task = asyncio.get_running_loop().create_task(main())
        await asyncio.sleep(0.01)
        del loop_task

    with watching_logs() as logs:
        asyncio.run(run())
        assert processor.force_flush(10_000)
    logs.assert_clean()
    assert exporter.names == ["early-0", "early-1", "late-0", "late-1"]
    assert exporter.calls[-1].thread == "keywordsai-export-loop"


def test_a_loop_closed_without_cancelling_its_tasks_is_noticed_on_the_next_span(
    processors: Processors,
) -> None:
    exporter = RecordingExporter()
    processor = processors.make(exporter, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)

    async def first() -> list[str]:
        return end_spans(tracer, "closed", 5)

    async def second() -> list[str]:
        names = end_spans(tracer, "next", 2)
        assert await processor.aflush(10)
        return names

    with watching_logs() as logs:
        loop = asyncio.new_event_loop()
        names = loop.run_until_complete(first())
        loop.close()  # the export task is still pending on it
        names += asyncio.run(second())
        gc.collect()
    logs.assert_clean()
    assert exporter.names == names
    assert loop not in {call.loop for call in exporter.calls}


def test_a_loop_closed_without_cancelling_is_noticed_by_a_sync_flush(
    processors: Processors,
) -> None:
    exporter = RecordingExporter()
    processor = processors.make(exporter, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)

    async def started() -> list[str]:
        names = end_spans(tracer, "started", 3)
        await asyncio.sleep(0.01)  # the export task starts and sleeps
        return names

    with watching_logs() as logs:
        loop = asyncio.new_event_loop()
        names = loop.run_until_complete(started())
        loop.close()
        assert processor.force_flush(10_000)
        gc.collect()
    logs.assert_clean()
    assert exporter.names == names
    assert exporter.calls[-1].thread == "keywordsai-export-loop"


def test_sync_flush_and_shutdown_inside_the_owning_loop_do_not_deadlock() -> None:
    # A subprocess: blocking the loop is the documented behaviour here, which the test
    # suite's blocking-call detector would (rightly) reject in-process.
    result = run_script(
        script(
            """
        exporter = RecordingExporter()
        processor = AsyncBatchSpanProcessor(exporter, schedule_delay_millis=60_000)
        provider, tracer = tracer_for(processor)
        gate = threading.Event()
        held = RecordingExporter(gate)
        batching = AsyncBatchSpanProcessor(
            held, max_export_batch_size=2, schedule_delay_millis=60_000
        )
        _, held_tracer = tracer_for(batching)

        async def main():
            loop = asyncio.get_running_loop()
            names = end_spans(tracer, "inside", 2)
            end_spans(held_tracer, "inside", 2)  # a full batch: in flight, held at the gate
            await asyncio.sleep(0.05)
            assert held.started.is_set()
            gate.set()
            started = time.monotonic()
            assert processor.force_flush(10_000)
            # Its batch is in a send on this very loop, which the call blocks: never sent
            # twice, so the flush cannot confirm it and says so at once.
            assert not batching.force_flush(10_000)
            assert time.monotonic() - started < 5
            assert exporter.names == names and held.names == []
            assert exporter.calls[-1].thread == "keywordsai-export-loop"
            more = end_spans(tracer, "after", 3)  # back on this loop
            assert await processor.aflush(10)
            assert exporter.names == names + more
            assert exporter.calls[-1].loop is loop
            await asyncio.sleep(0.05)  # the batch in flight completes here, once
            assert held.names == names
            assert batching.stats.delivered == batching.stats.ended == 2
            assert batching.stats.resent == 0
            processor.shutdown(5000)
            batching.shutdown(5000)
            return loop

        loop = asyncio.run(main())
        assert loop in exporter.closed_on
        print("delivered", len(exporter.names))
        """
        )
    )
    assert "delivered 5" in result.stdout


def test_a_sync_script_is_flushed_at_exit() -> None:
    result = run_script(
        script(
            """
        exporter = SyncRecordingExporter()
        atexit.register(lambda: print("exported", sorted(exporter.names)))  # runs last
        provider = TracerProvider()  # its own atexit shutdown runs after our flush
        processor = AsyncBatchSpanProcessor(exporter, schedule_delay_millis=60_000)
        provider.add_span_processor(processor)
        end_spans(provider.get_tracer("t"), "exit", 3)
        """
        )
    )
    assert "exported ['exit-0', 'exit-1', 'exit-2']" in result.stdout
    assert result.stderr == ""


def test_a_whole_program_mixing_loops_and_sync_code_exits_cleanly() -> None:
    result = run_script(
        script(
            """
        exporter = RecordingExporter()
        atexit.register(lambda: print("exported", len(exporter.names)))
        provider = TracerProvider()
        processor = AsyncBatchSpanProcessor(exporter, schedule_delay_millis=60_000)
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("t")

        async def work(prefix):
            end_spans(tracer, prefix, 10)
            await asyncio.sleep(0)

        end_spans(tracer, "sync", 10)
        for run in range(5):
            asyncio.run(work(f"run{run}"))
        loop = asyncio.new_event_loop()
        loop.run_until_complete(work("closed"))
        loop.close()
        end_spans(tracer, "tail", 10)
        """
        )
    )
    assert "exported 80" in result.stdout
    assert result.stderr == ""


class FileExporter(SpanExporter):
    """Appends ``pid name`` lines to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a") as file:
            file.writelines(f"{os.getpid()} {span.name}\n" for span in spans)
        return SpanExportResult.SUCCESS


def test_a_forked_child_starts_empty_and_exports_its_own_spans(
    processors: Processors, tmp_path: Path
) -> None:
    path = tmp_path / "spans.txt"
    processor = processors.make(
        FileExporter(path), max_export_batch_size=8, schedule_delay_millis=60_000
    )
    _, tracer = tracer_for(processor)
    stop = threading.Event()

    def churn() -> None:  # keeps locks and the export machinery busy while forking
        while not stop.is_set():
            end_spans(tracer, "parent-bg", 10)
            time.sleep(0.001)

    background = threading.Thread(target=churn)
    background.start()
    try:
        before = end_spans(tracer, "parent-before", 5)
        time.sleep(0.05)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            code = 1
            try:
                end_spans(tracer, "child", 20)
                ok = processor.force_flush(10_000)
                stats = processor.stats
                code = 0 if ok and stats.delivered == 20 == stats.ended else 2
            finally:
                os._exit(code)
    finally:
        stop.set()
        background.join()
    assert wait_for_child(pid, 30) == 0
    assert processor.force_flush(10_000)
    lines = [line.split(" ", 1) for line in path.read_text().splitlines()]
    child = [name for owner, name in lines if int(owner) == pid]
    parent = [name for owner, name in lines if int(owner) == os.getpid()]
    assert child == [f"child-{i}" for i in range(20)]
    assert set(before) <= set(parent)
    assert not any(name.startswith("child") for name in parent)
    assert len(parent) == processor.stats.delivered


def test_a_loop_stopped_but_never_closed_hands_full_batches_to_the_private_thread(
    processors: Processors,
) -> None:
    exporter = RecordingExporter()
    processor = processors.make(exporter, max_export_batch_size=10, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)
    loop = asyncio.new_event_loop()

    async def own() -> None:
        end_spans(tracer, "owner", 1)  # the export task now lives on `loop`

    try:
        loop.run_until_complete(own())  # then `loop` stays stopped, not closed
        names = end_spans(tracer, "stranded", 25)
        assert wait_until(lambda: len(exporter.names) >= 20)  # two full batches, no flush
        assert {call.thread for call in exporter.calls} == {"keywordsai-export-loop"}
        assert processor.force_flush(10_000)
        assert exporter.names == ["owner-0", *names]
    finally:
        loop.run_until_complete(asyncio.sleep(0.01))  # the old task sees it is retired
        loop.close()


class _ContextExporter(RecordingExporter):
    """Attaches an OpenTelemetry context around each export, as the HTTP exporter does."""

    async def aexport(self, spans: Sequence[ReadableSpan], deadline: float | None = None) -> bool:
        token = context_api.attach(context_api.set_value("exporting", True))
        try:
            return await super().aexport(spans, deadline)
        finally:
            context_api.detach(token)


def test_a_loop_closed_mid_export_is_abandoned_cleanly_and_the_batch_resent(
    processors: Processors,
) -> None:
    gate = threading.Event()
    exporter = _ContextExporter(gate)
    processor = processors.make(exporter, max_export_batch_size=2, schedule_delay_millis=60_000)
    _, tracer = tracer_for(processor)

    async def start_export() -> list[str]:
        names = end_spans(tracer, "mid", 2)  # a full batch: its export waits at the gate
        await asyncio.to_thread(exporter.started.wait, 10)
        return names

    with watching_logs() as logs:
        loop = asyncio.new_event_loop()
        names = loop.run_until_complete(start_export())
        loop.close()  # the export is still awaiting inside the exporter
        gate.set()
        assert processor.force_flush(10_000)
        gc.collect()
    logs.assert_clean()  # no "Failed to detach context", no destroyed-task report
    assert exporter.names == names
    assert exporter.calls[-1].thread == "keywordsai-export-loop"
