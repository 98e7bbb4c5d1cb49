"""KeywordsAITelemetry end to end: decorators -> asyncio processor -> aiohttp -> receiver."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest
from opentelemetry import trace

from keywordsai_tracing import KeywordsAITelemetry, get_client, task, workflow
from keywordsai_tracing._version import __version__
from tests.conftest import telemetry_to
from tests.otlp_receiver import Fault, OTLPReceiver

SECRET = "sk-test-secret-key"


@task
async def step(i: int) -> int:
    await asyncio.sleep(0)
    return i


@workflow(name="pipeline")
async def pipeline(n: int) -> list[int]:
    return list(await asyncio.gather(*(step(i) for i in range(n))))


def _telemetry(receiver: OTLPReceiver, **kwargs: object) -> KeywordsAITelemetry:
    return telemetry_to(receiver, "e2e", SECRET, **kwargs)


def test_spans_ended_in_asyncio_run_arrive_without_an_explicit_flush(
    threaded_otlp_receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    _telemetry(threaded_otlp_receiver, headers={"X-Team": "search"})
    for _ in range(3):
        asyncio.run(pipeline(3))  # the export task delivers as each loop shuts down
    spans = threaded_otlp_receiver.wait_for_spans(12)
    assert sorted({s.name for s in spans}) == ["pipeline.workflow", "step.task"]
    request = threaded_otlp_receiver.requests[0]
    assert request.headers["Authorization"] == f"Bearer {SECRET}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Team"] == "search"
    assert request.headers["User-Agent"] == f"keywordsai-tracing-async/{__version__}"
    assert request.path == "/v1/traces"
    root = next(s for s in spans if s.name == "pipeline.workflow")
    children = [s for s in spans if s.name == "step.task" and s.trace_id == root.trace_id]
    assert len(children) == 3
    assert all(c.parent_span_id == root.span_id for c in children)
    assert root.resource["service.name"] == "e2e"
    assert root.attributes["traceloop.workflow.name"] == "pipeline"
    assert SECRET not in caplog.text


def test_sync_script_flush_delivers(threaded_otlp_receiver: OTLPReceiver) -> None:
    telemetry = _telemetry(threaded_otlp_receiver)

    @task
    def sync_step() -> str:
        return "ok"

    for _ in range(5):
        sync_step()
    assert telemetry.flush(timeout=10)
    assert len(threaded_otlp_receiver.spans) == 5
    stats = telemetry.stats
    assert stats.delivered == stats.ended == 5
    assert stats.pending == 0


@pytest.mark.asyncio
async def test_aflush_inside_the_app_loop(otlp_receiver: OTLPReceiver) -> None:
    telemetry = _telemetry(otlp_receiver)
    await pipeline(4)
    assert await telemetry.aflush(timeout=10)
    assert len(otlp_receiver.spans) == 5
    await telemetry.ashutdown()


@pytest.mark.asyncio
async def test_unbatched_http_export_is_scheduled_not_awaited_inline(
    otlp_receiver: OTLPReceiver,
) -> None:
    otlp_receiver.default = Fault(delay=0.3)  # a slow collector
    telemetry = _telemetry(otlp_receiver, is_batching_enabled=False)
    started = time.monotonic()
    await pipeline(2)
    returned_after = time.monotonic() - started
    assert returned_after < otlp_receiver.default.delay  # did not wait for any POST
    assert await telemetry.aflush(timeout=10)
    assert len(otlp_receiver.spans) == 3
    await telemetry.ashutdown()


@pytest.mark.asyncio
async def test_protobuf_and_gzip_by_environment(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    telemetry = _telemetry(otlp_receiver)
    await pipeline(1)
    assert await telemetry.aflush(timeout=10)
    request = otlp_receiver.requests[0]
    assert request.headers["Content-Type"] == "application/x-protobuf"
    assert request.headers["Content-Encoding"] == "gzip"
    assert {s.name for s in request.spans} == {"pipeline.workflow", "step.task"}
    await telemetry.ashutdown()


@pytest.mark.asyncio
async def test_noise_filter_keeps_entities_children_and_manual_spans(
    otlp_receiver: OTLPReceiver,
) -> None:
    telemetry = _telemetry(otlp_receiver)
    library = trace.get_tracer("some.http.client")

    @workflow(name="flow")
    async def flow() -> None:
        with library.start_as_current_span("inside-entity"):
            pass

    with library.start_as_current_span("bare-noise"):
        pass
    with get_client().get_tracer().start_as_current_span("manual-on-purpose"):
        pass
    await flow()
    assert await telemetry.aflush(timeout=10)
    names = {s.name for s in otlp_receiver.spans}
    assert names == {"flow.workflow", "inside-entity", "manual-on-purpose"}
    stats = telemetry.stats  # the bare span was noise from its start: never recorded
    assert (stats.not_recorded, stats.filtered) == (1, 0)
    inside = next(s for s in otlp_receiver.spans if s.name == "inside-entity")
    assert inside.attributes["traceloop.entity.path"] == "flow"
    await telemetry.ashutdown()


@pytest.mark.asyncio
async def test_noise_filter_can_be_turned_off(otlp_receiver: OTLPReceiver) -> None:
    telemetry = _telemetry(otlp_receiver, filter_noise=False)
    with trace.get_tracer("some.http.client").start_as_current_span("bare"):
        pass
    assert await telemetry.aflush(timeout=10)
    assert [s.name for s in otlp_receiver.spans] == ["bare"]
    await telemetry.ashutdown()


@pytest.mark.asyncio
async def test_dead_collector_never_reaches_the_app(
    unused_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = KeywordsAITelemetry(
        api_key=SECRET,
        base_url=unused_endpoint,
        instruments=set(),
        export_timeout=0.5,
    )
    assert await pipeline(3) == [0, 1, 2]
    assert await telemetry.aflush(timeout=2) is False
    await telemetry.ashutdown(timeout=2)
    stats = telemetry.stats
    assert stats.ended == 4
    assert stats.gave_up + stats.deadline + stats.pending == 4
    assert stats.delivered == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 3, [r.getMessage() for r in warnings]
    assert SECRET not in caplog.text


def test_without_api_key_default_endpoint_nothing_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KEYWORDSAI_API_KEY", raising=False)
    monkeypatch.delenv("KEYWORDSAI_BASE_URL", raising=False)
    telemetry = KeywordsAITelemetry(instruments=set())
    assert telemetry.stats.ended == 0
    asyncio.run(pipeline(1))
    assert telemetry.stats.ended == 0


def test_local_collector_without_api_key(threaded_otlp_receiver: OTLPReceiver) -> None:
    telemetry = KeywordsAITelemetry(base_url=threaded_otlp_receiver.base_url, instruments=set())
    asyncio.run(pipeline(1))
    assert telemetry.flush(timeout=10)
    assert "Authorization" not in threaded_otlp_receiver.requests[0].headers


async def _max_loop_stall(work: asyncio.Future[object]) -> float:
    """Longest gap seen by a 1 ms sleep probe while ``work`` runs."""
    worst = 0.0
    while not work.done():
        before = time.monotonic()
        await asyncio.sleep(0.001)
        worst = max(worst, time.monotonic() - before - 0.001)
    return worst


@pytest.mark.parametrize(
    ("faults", "delivered", "failed", "min_retries"),
    [
        ([Fault(status=503), Fault(status=503)], 5, 0, 2),
        ([Fault(status=429, headers={"Retry-After": "1"})], 5, 0, 1),
        ([Fault(drop=True), Fault(drop=True)], 5, 0, 2),
        ([Fault(delay=0.5)], 5, 0, 0),
        ([Fault(status=400)], 0, 5, 0),
    ],
    ids=["503-then-200", "429-retry-after", "dropped-connections", "slow", "400"],
)
@pytest.mark.asyncio
async def test_collector_faults_end_to_end(
    otlp_receiver: OTLPReceiver,
    faults: list[Fault],
    delivered: int,
    failed: int,
    min_retries: int,
) -> None:
    otlp_receiver.script(*faults)
    telemetry = _telemetry(otlp_receiver)
    assert await pipeline(4) == [0, 1, 2, 3]  # the app never sees the fault
    flushing = asyncio.ensure_future(telemetry.aflush(timeout=15))
    stall = await _max_loop_stall(flushing)
    assert await flushing is (failed == 0)
    assert stall < 0.5, f"the event loop stalled {stall:.3f}s during flush"
    stats = telemetry.stats
    assert len(otlp_receiver.spans) == delivered
    assert stats.delivered == delivered
    assert stats.rejected == failed
    assert stats.retries >= min_retries
    assert stats.dropped == failed
    assert stats.queued + stats.in_flight + stats.delivered + stats.dropped == stats.ended
    await telemetry.ashutdown()


def test_custom_exporter_receives_spans_untouched_by_the_noise_filter() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    telemetry = KeywordsAITelemetry(custom_exporter=exporter, instruments=set())
    with trace.get_tracer("some.http.client").start_as_current_span("bare-noise"):
        pass
    assert telemetry.flush(timeout=10)
    assert [s.name for s in exporter.get_finished_spans()] == ["bare-noise"]


def test_queue_size_from_the_environment_bounds_memory(
    monkeypatch: pytest.MonkeyPatch,
    threaded_otlp_receiver: OTLPReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    threaded_otlp_receiver.default = Fault(delay=2.0)  # the first batch stays in flight
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    telemetry = _telemetry(threaded_otlp_receiver)

    @task
    def burst() -> None:
        return None

    for _ in range(25):
        burst()
    stats = telemetry.stats
    # At most one queue and one batch in flight are held: the rest is dropped, counted.
    assert stats.ended == 25
    assert stats.ended - stats.queue_full <= 20
    assert stats.queue_full >= 5
    telemetry.shutdown(timeout=0.5)
    # Besides the rate-limited warning when it happens, shutdown reports the total lost.
    assert f"{stats.queue_full} spans were dropped because the export queue was full" in caplog.text


def _wait_for_child(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise TimeoutError("the forked child hung")


def test_forked_worker_exports_its_own_spans_over_http(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    telemetry = _telemetry(threaded_otlp_receiver)
    asyncio.run(pipeline(2))  # the parent has a session and an export history
    assert telemetry.flush(timeout=10)
    asyncio.run(pipeline(1))  # and spans still queued when it forks
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            asyncio.run(pipeline(4))
            ok = telemetry.flush(timeout=10)
            code = 0 if ok and telemetry.stats.delivered == 5 else 2
        finally:
            os._exit(code)
    assert _wait_for_child(pid, 60) == 0
    assert telemetry.flush(timeout=10)
    assert telemetry.stats.delivered == 5  # 3 + 2: none of the child's
    roots = [s for s in threaded_otlp_receiver.spans if s.name == "pipeline.workflow"]
    assert len(roots) == 3  # two parent workflows and the child's one
    assert len(threaded_otlp_receiver.spans) == 3 + 2 + 5


@pytest.mark.parametrize("bypassed", [False, True])
def test_proxy_from_the_environment_is_honoured(
    threaded_otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, bypassed: bool
) -> None:
    proxy = threaded_otlp_receiver.base_url
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", "collector.invalid" if bypassed else "")
    telemetry = KeywordsAITelemetry(
        api_key=SECRET, base_url="http://collector.invalid", instruments=set(), export_timeout=2
    )
    asyncio.run(pipeline(1))  # exported as the loop shuts down
    telemetry.flush(timeout=5)
    stats = telemetry.stats
    assert len(threaded_otlp_receiver.spans) == (0 if bypassed else 2)
    assert (stats.delivered, stats.gave_up) == ((0, 2) if bypassed else (2, 0))
    telemetry.shutdown(timeout=1)


def test_processor_and_exporter_work_in_a_plain_opentelemetry_setup(
    threaded_otlp_receiver: OTLPReceiver,
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from keywordsai_tracing.exporters import OTLPHttpExporter
    from keywordsai_tracing.processors import AsyncBatchSpanProcessor

    provider = TracerProvider()
    processor = AsyncBatchSpanProcessor(
        OTLPHttpExporter(threaded_otlp_receiver.url, filter_noise=False)
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("plain.otel.user")

    async def work() -> None:
        for i in range(5):
            with tracer.start_as_current_span(f"op-{i}"):
                await asyncio.sleep(0)

    asyncio.run(work())  # delivered as the loop shuts down
    assert len(threaded_otlp_receiver.wait_for_spans(5)) == 5
    provider.shutdown()


def test_a_slow_destination_never_delays_another(threaded_otlp_receiver: OTLPReceiver) -> None:
    from keywordsai_tracing.exporters import OTLPHttpExporter

    with OTLPReceiver().running_in_thread() as slow:
        slow.default = Fault(delay=5.0)
        telemetry = _telemetry(threaded_otlp_receiver, schedule_delay=0.05)
        telemetry.add_processor(OTLPHttpExporter(slow.url, timeout=10))

        @task
        def work() -> None:
            return None

        for _ in range(3):
            work()
        # The fast destination has them while the slow one is still answering the first.
        assert len(threaded_otlp_receiver.wait_for_spans(3, timeout=4.0)) == 3
        assert slow.spans == []
        telemetry.shutdown(timeout=0.5)
