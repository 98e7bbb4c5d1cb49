"""OTLPHttpExporter against a real aiohttp OTLP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import email.utils
import gc
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from opentelemetry import context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing._attributes import (
    DECORATOR_TRACER_NAME,
    ENTITY_PATH,
    MANUAL_TRACER_NAME,
    SPAN_KIND,
)
from keywordsai_tracing._config import Settings
from keywordsai_tracing._export_types import AsyncSpanExporter
from keywordsai_tracing._exporter import OTLPHttpExporter, RateLimitedLog
from keywordsai_tracing._retry import RetryPolicy
from keywordsai_tracing._transport import AiohttpTransport, Response, TransportFailure
from keywordsai_tracing._version import __version__
from tests.otlp_receiver import (
    Fault,
    OTLPReceiver,
    not_listening_url,
    partial_success,
)

API_KEY = "sk-test-SECRET-0123456789"
FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
LOGGER = "keywordsai_tracing.exporter"


def make_spans(
    count: int,
    attributes: Mapping[str, Any] | None = None,
    scope: str = DECORATOR_TRACER_NAME,
    prefix: str = "span",
) -> tuple[ReadableSpan, ...]:
    memory = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "exporter-tests"}))
    tp.add_span_processor(SimpleSpanProcessor(memory))
    tracer = tp.get_tracer(scope, "0.1")
    attrs = {SPAN_KIND: "task"} if attributes is None else dict(attributes)
    for index in range(count):
        with tracer.start_as_current_span(f"{prefix}-{index}", attributes=attrs):
            pass
    return memory.get_finished_spans()


@asynccontextmanager
async def exporting(url: str, **kwargs: Any) -> AsyncIterator[OTLPHttpExporter]:
    options: dict[str, Any] = {"api_key": API_KEY, "retry_policy": FAST, "timeout": 10.0}
    options.update(kwargs)
    exporter = OTLPHttpExporter(url, **options)
    try:
        yield exporter
    finally:
        await exporter.aclose()


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING
    ]


@pytest.mark.asyncio
async def test_delivers_json_with_auth_user_agent_and_custom_headers(
    otlp_receiver: OTLPReceiver,
) -> None:
    spans = make_spans(3)
    async with exporting(otlp_receiver.url, headers={"X-Custom": "yes"}) as exporter:
        assert isinstance(exporter, AsyncSpanExporter)
        assert await exporter.aexport(spans) is True
    [request] = otlp_receiver.requests
    assert request.path == "/v1/traces"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["User-Agent"] == f"keywordsai-tracing-async/{__version__}"
    assert request.headers["X-Custom"] == "yes"
    assert request.headers["Content-Type"] == "application/json"
    assert "Content-Encoding" not in request.headers
    assert [s.name for s in otlp_receiver.spans] == ["span-0", "span-1", "span-2"]
    assert otlp_receiver.spans[0].attributes == {SPAN_KIND: "task"}
    assert otlp_receiver.spans[0].resource["service.name"] == "exporter-tests"
    assert otlp_receiver.errors == []


@pytest.mark.asyncio
@pytest.mark.parametrize("protocol", ["http/json", "http/protobuf"])
@pytest.mark.parametrize("compression", ["none", "gzip"])
async def test_protocols_and_compression(
    otlp_receiver: OTLPReceiver,
    protocol: Any,
    compression: Any,
) -> None:
    spans = make_spans(150)  # several encoding slices
    async with exporting(otlp_receiver.url, protocol=protocol, compression=compression) as exp:
        assert await exp.aexport(spans)
    [request] = otlp_receiver.requests
    expected_type = "application/json" if protocol == "http/json" else "application/x-protobuf"
    assert request.headers["Content-Type"] == expected_type
    if compression == "gzip":
        assert request.headers["Content-Encoding"] == "gzip"
        assert request.raw_body[:2] == b"\x1f\x8b"
    else:
        assert "Content-Encoding" not in request.headers
    assert otlp_receiver.errors == []
    assert [s.name for s in otlp_receiver.spans] == [s.name for s in spans]
    assert {s.kind for s in otlp_receiver.spans} == {1}


@pytest.mark.asyncio
async def test_retries_503_until_accepted(otlp_receiver: OTLPReceiver) -> None:
    otlp_receiver.script(Fault(status=503), Fault(status=503))
    async with exporting(otlp_receiver.url) as exporter:
        assert await exporter.aexport(make_spans(2))
    assert [r.status for r in otlp_receiver.requests] == [503, 503, 200]
    assert len(otlp_receiver.spans) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_429_waits_at_least_retry_after(
    otlp_receiver: OTLPReceiver,
    form: str,
) -> None:
    # An HTTP-date has one-second resolution: ask for 2 s to wait at least ~1 s.
    value = "1" if form == "seconds" else email.utils.formatdate(time.time() + 2, usegmt=True)
    otlp_receiver.script(Fault(status=429, headers={"Retry-After": value}))
    async with exporting(otlp_receiver.url) as exporter:
        started = time.monotonic()
        assert await exporter.aexport(make_spans(1))
        waited = time.monotonic() - started
    assert waited >= 0.95
    assert [r.status for r in otlp_receiver.requests] == [429, 200]


@pytest.mark.asyncio
async def test_slow_collector_within_timeout_is_fine(otlp_receiver: OTLPReceiver) -> None:
    otlp_receiver.script(Fault(delay=0.3))
    async with exporting(otlp_receiver.url, timeout=10.0) as exporter:
        assert await exporter.aexport(make_spans(2))


@pytest.mark.asyncio
async def test_collector_slower_than_the_timeout_fails_the_batch(
    otlp_receiver: OTLPReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    otlp_receiver.default = Fault(delay=5.0)
    async with exporting(otlp_receiver.url, timeout=0.5) as exporter:
        started = time.monotonic()
        assert await exporter.aexport(make_spans(4)) is False
        assert time.monotonic() - started < 4.0  # bounded by the timeout, not the collector
    assert any("timeout" in m for m in warnings_logged(caplog))


@pytest.mark.asyncio
async def test_dropped_connections_are_retried(otlp_receiver: OTLPReceiver) -> None:
    otlp_receiver.script(Fault(drop=True), Fault(drop=True))
    async with exporting(otlp_receiver.url) as exporter:
        assert await exporter.aexport(make_spans(3))
    assert [r.status for r in otlp_receiver.requests] == [0, 0, 200]
    assert len(otlp_receiver.spans) == 3


@pytest.mark.asyncio
async def test_400_is_dropped_without_retry(
    otlp_receiver: OTLPReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    otlp_receiver.script(Fault(status=400, body=b"bad request body"))
    async with exporting(otlp_receiver.url) as exporter:
        assert await exporter.aexport(make_spans(5)) is False
    assert len(otlp_receiver.requests) == 1
    [message] = warnings_logged(caplog)
    assert "HTTP 400" in message
    assert "bad request body" in message


@pytest.mark.asyncio
@pytest.mark.parametrize("protocol", ["http/json", "http/protobuf"])
async def test_partial_success_is_logged_not_retried(
    otlp_receiver: OTLPReceiver,
    caplog: pytest.LogCaptureFixture,
    protocol: Any,
) -> None:
    otlp_receiver.script(partial_success(2, "two spans too big", protobuf=protocol != "http/json"))
    async with exporting(otlp_receiver.url, protocol=protocol) as exporter:
        assert await exporter.aexport(make_spans(5)) is True
    assert len(otlp_receiver.requests) == 1
    [message] = warnings_logged(caplog)
    assert "rejected 2 of 5" in message
    assert "two spans too big" in message


@pytest.mark.asyncio
async def test_collector_not_listening_fails_within_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with exporting(not_listening_url(), timeout=0.5) as exporter:
        assert await exporter.aexport(make_spans(2)) is False
    [message] = warnings_logged(caplog)
    assert "refused" in message


@pytest.mark.asyncio
async def test_noise_filter_keeps_entities_and_manual_spans(
    otlp_receiver: OTLPReceiver,
) -> None:
    batch = (
        make_spans(1, {SPAN_KIND: "workflow"}, prefix="kind")
        + make_spans(1, {ENTITY_PATH: "wf.task"}, prefix="path")
        + make_spans(1, {ENTITY_PATH: ""}, prefix="empty-path")
        + make_spans(
            2, {"http.method": "GET"}, scope="opentelemetry.instrumentation.x", prefix="noise"
        )
        + make_spans(1, {}, scope=MANUAL_TRACER_NAME, prefix="manual")
    )
    async with exporting(otlp_receiver.url) as exporter:
        assert await exporter.aexport(batch)
    assert sorted(s.name for s in otlp_receiver.spans) == ["kind-0", "manual-0", "path-0"]


@pytest.mark.asyncio
async def test_noise_filter_can_be_turned_off(otlp_receiver: OTLPReceiver) -> None:
    async with exporting(otlp_receiver.url, filter_noise=False) as exporter:
        assert await exporter.aexport(make_spans(2, {}))
    assert len(otlp_receiver.spans) == 2


@pytest.mark.asyncio
async def test_all_noise_sends_nothing(otlp_receiver: OTLPReceiver) -> None:
    async with exporting(otlp_receiver.url) as exporter:
        assert await exporter.aexport(make_spans(4, {}))
        assert await exporter.aexport([])
    assert otlp_receiver.requests == []


@pytest.mark.asyncio
async def test_shutdown_from_another_thread_cuts_a_long_retry_after_short(
    otlp_receiver: OTLPReceiver,
) -> None:
    otlp_receiver.script(Fault(status=429, headers={"Retry-After": "30"}))
    async with exporting(otlp_receiver.url, timeout=50.0) as exporter:
        task = asyncio.create_task(exporter.aexport(make_spans(2)))
        await otlp_receiver.await_requests(1)
        await asyncio.sleep(0.05)  # now in the 30 s backoff
        started = time.monotonic()
        threading.Thread(target=exporter.shutdown).start()
        assert await asyncio.wait_for(task, timeout=10) is True  # the one final try succeeds
        assert time.monotonic() - started < 10
    assert [r.status for r in otlp_receiver.requests] == [429, 200]
    exporter.shutdown()  # idempotent


@pytest.mark.asyncio
async def test_after_shutdown_at_most_one_try(otlp_receiver: OTLPReceiver) -> None:
    otlp_receiver.default = Fault(status=503)
    async with exporting(otlp_receiver.url) as exporter:
        exporter.shutdown()
        assert await exporter.aexport(make_spans(1)) is False
    assert len(otlp_receiver.requests) == 1


@pytest.mark.asyncio
async def test_one_warning_per_cause_for_many_failing_batches(
    otlp_receiver: OTLPReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    otlp_receiver.default = Fault(status=400)
    async with exporting(otlp_receiver.url) as exporter:
        for _ in range(25):
            assert await exporter.aexport(make_spans(10)) is False
        otlp_receiver.default = Fault(status=413)
        for _ in range(5):
            assert await exporter.aexport(make_spans(10)) is False
    messages = warnings_logged(caplog)
    assert len(messages) == 2
    assert "HTTP 400" in messages[0]
    assert "HTTP 413" in messages[1]


def test_rate_limited_log_repeats_after_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RateLimitedLog(logging.getLogger(LOGGER), interval=60.0, clock=lambda: now[0])
    assert log.warning("a", "first %s", "a")
    assert not log.warning("a", "again")
    assert log.warning("b", "other cause")
    now[0] = 61.0
    assert log.warning("a", "after a minute")
    assert warnings_logged(caplog) == ["first a", "other cause", "after a minute"]


@pytest.mark.asyncio
async def test_api_key_never_in_logs_or_repr(
    otlp_receiver: OTLPReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    otlp_receiver.script(Fault(status=503), Fault(status=401, body=b"unauthorized"))
    async with exporting(otlp_receiver.url, headers={"X-Team": "t"}) as exporter:
        assert await exporter.aexport(make_spans(1)) is False
        assert await exporter.aexport(make_spans(1)) is True
        text = repr(exporter) + str(exporter)
    assert caplog.records
    assert API_KEY not in caplog.text
    assert API_KEY not in text
    assert "X-Team" in text


@pytest.mark.asyncio
async def test_export_runs_with_instrumentation_suppressed() -> None:
    seen: list[tuple[object, object]] = []

    class Recording:
        async def post(
            self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
        ) -> Response | TransportFailure:
            seen.append(
                (
                    context.get_value(context._SUPPRESS_INSTRUMENTATION_KEY),
                    context.get_value(context._SUPPRESS_HTTP_INSTRUMENTATION_KEY),
                )
            )
            return Response(200)

        async def aclose(self) -> None:
            return None

    before = context.get_current()
    exporter = OTLPHttpExporter("http://127.0.0.1:9/v1/traces", transport=Recording())
    assert await exporter.aexport(make_spans(1))
    assert seen == [(True, True)]
    assert context.get_current() == before


@pytest.mark.asyncio
async def test_a_broken_transport_never_raises() -> None:
    class Broken:
        async def post(
            self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
        ) -> Response | TransportFailure:
            raise RuntimeError("bug")

        async def aclose(self) -> None:
            return None

    exporter = OTLPHttpExporter("http://127.0.0.1:9/v1/traces", transport=Broken())
    assert await exporter.aexport(make_spans(2)) is False


@pytest.mark.asyncio
async def test_cancellation_propagates_and_detaches_the_context(
    otlp_receiver: OTLPReceiver,
) -> None:
    otlp_receiver.script(Fault(status=503, headers={"Retry-After": "30"}))
    before = context.get_current()
    async with exporting(otlp_receiver.url, timeout=50.0) as exporter:
        task = asyncio.create_task(exporter.aexport(make_spans(1)))
        await otlp_receiver.await_requests(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert context.get_current() == before


@pytest.mark.asyncio
async def test_past_deadline_sends_nothing(otlp_receiver: OTLPReceiver) -> None:
    async with exporting(otlp_receiver.url) as exporter:
        assert await exporter.aexport(make_spans(1), deadline=time.monotonic() - 1) is False
    assert otlp_receiver.requests == []


@pytest.mark.asyncio
async def test_from_settings(otlp_receiver: OTLPReceiver) -> None:
    base = otlp_receiver.base_url
    settings = Settings.resolve(
        api_key=API_KEY,
        base_url=base,
        headers={"X-From": "settings"},
        protocol="http/protobuf",
        compression="gzip",
        export_timeout=3.0,
        filter_noise=False,
        environ={},
    )
    exporter = OTLPHttpExporter.from_settings(settings)
    try:
        assert exporter.endpoint == otlp_receiver.url
        assert exporter.timeout == 3.0
        assert await exporter.aexport(make_spans(2, {}))
    finally:
        await exporter.aclose()
    [request] = otlp_receiver.requests
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["X-From"] == "settings"
    assert request.headers["Content-Type"] == "application/x-protobuf"
    assert request.headers["Content-Encoding"] == "gzip"
    assert len(otlp_receiver.spans) == 2


@contextmanager
def no_unraisable(caplog: pytest.LogCaptureFixture) -> Iterator[list[Any]]:
    """Collect unraisable exceptions (e.g. ResourceWarnings raised in ``__del__``)."""
    seen: list[Any] = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
        gc.collect()
    finally:
        sys.unraisablehook = previous
    assert [f"{u.exc_type.__name__}: {u.exc_value}" for u in seen] == []
    assert "Unclosed" not in caplog.text


def test_sync_callers_one_session_per_loop_closed_by_asyncio_run(
    threaded_otlp_receiver: OTLPReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = AiohttpTransport()
    exporter = OTLPHttpExporter(
        threaded_otlp_receiver.url, api_key=API_KEY, transport=transport, retry_policy=FAST
    )
    with no_unraisable(caplog):
        for _ in range(3):  # a new loop each time, never aclose()d
            assert asyncio.run(exporter.aexport(make_spans(2)))
    assert len(threaded_otlp_receiver.wait_for_spans(6)) == 6


def test_session_of_a_manually_closed_loop_is_released_quietly(
    threaded_otlp_receiver: OTLPReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = OTLPHttpExporter(threaded_otlp_receiver.url, retry_policy=FAST)
    with no_unraisable(caplog):
        loop = asyncio.new_event_loop()
        assert loop.run_until_complete(exporter.aexport(make_spans(1)))
        loop.close()  # no aclose(), no shutdown_asyncgens()
        assert asyncio.run(exporter.aexport(make_spans(1)))  # noticed and released here

        async def export_and_close() -> bool:
            try:
                return await exporter.aexport(make_spans(1))
            finally:
                await exporter.aclose()

        assert asyncio.run(export_and_close())
    assert len(threaded_otlp_receiver.wait_for_spans(3)) == 3


@pytest.mark.asyncio
async def test_keep_alive_reuses_one_connection(otlp_receiver: OTLPReceiver) -> None:
    async with exporting(otlp_receiver.url) as exporter:
        for _ in range(3):
            assert await exporter.aexport(make_spans(1))
    peers = {r.peer for r in otlp_receiver.requests}
    assert len(otlp_receiver.requests) == 3
    assert len(peers) == 1  # one connection, kept alive


def test_repr_lists_header_names_only() -> None:
    exporter = OTLPHttpExporter(
        "https://example.invalid/v1/traces", api_key=API_KEY, headers={"X-Secret": "value"}
    )
    assert "X-Secret" in repr(exporter)
    assert "value" not in repr(exporter)
    assert API_KEY not in repr(exporter)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"protocol": "grpc"}, "protocol"),
        ({"compression": "br"}, "compression"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OTLPHttpExporter("https://example.invalid/v1/traces", **kwargs)


@pytest.mark.asyncio
async def test_our_headers_win_case_insensitively(otlp_receiver: OTLPReceiver) -> None:
    user = {"authorization": "Basic nope", "content-type": "text/plain", "user-agent": "mine"}
    async with exporting(otlp_receiver.url, headers=user) as exporter:
        assert await exporter.aexport(make_spans(1))
    [request] = otlp_receiver.requests
    assert request.headers.getall("Authorization") == [f"Bearer {API_KEY}"]
    assert request.headers.getall("Content-Type") == ["application/json"]
    assert request.headers.getall("User-Agent") == ["mine"]


@pytest.mark.asyncio
async def test_transport_maps_timeouts_and_connection_errors(
    otlp_receiver: OTLPReceiver,
) -> None:
    otlp_receiver.script(Fault(delay=2.0))
    json_headers = {"Content-Type": "application/json"}
    transport = AiohttpTransport()
    try:
        slow = await transport.post(otlp_receiver.url, b"{}", json_headers, timeout=0.2)
        refused = await transport.post(not_listening_url(), b"{}", {}, timeout=5)
        ok = await transport.post(otlp_receiver.url, b"{}", json_headers, timeout=5)
    finally:
        await transport.aclose()
        await transport.aclose()  # idempotent
    assert isinstance(slow, TransportFailure)
    assert slow.kind == "timeout"
    assert isinstance(refused, TransportFailure)
    assert refused.kind == "refused"
    assert isinstance(ok, Response)
    assert ok.status == 200
    assert ok.header("content-type") == "application/json"
