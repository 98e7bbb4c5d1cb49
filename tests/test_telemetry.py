"""KeywordsAITelemetry lifecycle: replacement, coexistence, routing, disabled mode."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import Instruments, KeywordsAITelemetry, task, workflow
from keywordsai_tracing import _instrumentation as instrumentation
from keywordsai_tracing._instrumentation import Instrumentation


def _telemetry(exporter: InMemorySpanExporter, **kwargs: Any) -> KeywordsAITelemetry:
    kwargs.setdefault("is_batching_enabled", False)
    kwargs.setdefault("instruments", set())
    return KeywordsAITelemetry(custom_exporter=exporter, **kwargs)


@task
def unit(x: int) -> int:
    return x


def test_second_instance_replaces_the_first_without_double_export() -> None:
    first_exporter, second_exporter = InMemorySpanExporter(), InMemorySpanExporter()
    first = _telemetry(first_exporter, is_batching_enabled=True)
    unit(1)
    threads_before = threading.active_count()
    second = _telemetry(second_exporter, is_batching_enabled=True)
    assert not first.is_initialized()
    assert second.is_initialized()
    # The first's queued span was flushed when it was replaced.
    assert [s.name for s in first_exporter.get_finished_spans()] == ["unit.task"]
    unit(2)
    assert second.flush()
    assert [s.name for s in second_exporter.get_finished_spans()] == ["unit.task"]
    assert len(first_exporter.get_finished_spans()) == 1
    second.shutdown()
    assert threading.active_count() <= threads_before


def test_second_instance_applies_its_own_configuration() -> None:
    exporter_a, exporter_b = InMemorySpanExporter(), InMemorySpanExporter()
    _telemetry(exporter_a, app_name="service-a")
    unit(1)
    _telemetry(exporter_b, app_name="service-b", trace_content=False)
    unit(2)
    (span_a,) = exporter_a.get_finished_spans()
    (span_b,) = exporter_b.get_finished_spans()
    assert span_a.resource.attributes["service.name"] == "service-a"
    assert span_b.resource.attributes["service.name"] == "service-b"
    assert "traceloop.entity.input" not in (span_b.attributes or {})


def test_resource_attributes_are_added() -> None:
    exporter = InMemorySpanExporter()
    _telemetry(exporter, app_name="svc", resource_attributes={"deployment.environment": "test"})
    unit(1)
    resource = exporter.get_finished_spans()[0].resource.attributes
    assert resource["service.name"] == "svc"
    assert resource["deployment.environment"] == "test"


def test_lifecycle_methods_and_context_managers() -> None:
    exporter = InMemorySpanExporter()
    with _telemetry(exporter, is_batching_enabled=True) as telemetry:
        assert telemetry.is_initialized()
        unit(1)
        assert telemetry.flush(timeout=5)
        assert len(exporter.get_finished_spans()) == 1
    assert not telemetry.is_initialized()
    telemetry.shutdown()  # idempotent
    assert "closed" in repr(telemetry)
    unit(2)  # decorators keep working after shutdown, without spans
    assert len(exporter.get_finished_spans()) == 1


@pytest.mark.asyncio
async def test_async_lifecycle() -> None:
    exporter = InMemorySpanExporter()
    async with _telemetry(exporter, is_batching_enabled=True) as telemetry:

        @workflow
        async def flow() -> int:
            return unit(3)

        assert await flow() == 3
        assert await telemetry.aflush()
        assert len(exporter.get_finished_spans()) == 2
    assert not telemetry.is_initialized()
    await telemetry.ashutdown()


def test_add_processor_routes_by_name_and_filter() -> None:
    main, debug, slow = InMemorySpanExporter(), InMemorySpanExporter(), InMemorySpanExporter()
    telemetry = _telemetry(main)
    telemetry.add_processor(debug, name="debug")
    telemetry.add_processor(slow, filter_fn=lambda span: span.name.startswith("slow"))

    @task(processors="debug")
    def debug_task() -> int:
        return unit(1)

    @task
    def slow_task() -> None:
        return None

    debug_task()
    slow_task()
    assert {s.name for s in main.get_finished_spans()} == {
        "unit.task",
        "debug_task.task",
        "slow_task.task",
    }
    # Routing is inherited: the nested unit span goes to "debug" as well.
    assert {s.name for s in debug.get_finished_spans()} == {"unit.task", "debug_task.task"}
    assert [s.name for s in slow.get_finished_spans()] == ["slow_task.task"]


def test_add_processor_rejects_bad_input() -> None:
    telemetry = _telemetry(InMemorySpanExporter())
    with pytest.raises(TypeError, match="exporter"):
        telemetry.add_processor(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        telemetry.add_processor(InMemorySpanExporter(), name="a,b")
    with pytest.raises(TypeError, match="filter_fn"):
        telemetry.add_processor(InMemorySpanExporter(), filter_fn=3)  # type: ignore[arg-type]


def test_postprocess_callback_runs_once_per_span_and_failures_are_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    def callback(span: ReadableSpan) -> None:
        seen.append(span.name)
        if span.name == "explode.task":
            raise RuntimeError("callback bug")

    exporter = InMemorySpanExporter()
    telemetry = _telemetry(exporter, span_postprocess_callback=callback)
    telemetry.add_processor(InMemorySpanExporter())

    @task
    def explode() -> int:
        return 1

    unit(1)
    assert explode() == 1
    assert seen == ["unit.task", "explode.task"]
    assert len(exporter.get_finished_spans()) == 2
    assert "span_postprocess_callback raised" in caplog.text


def test_failing_exporter_never_reaches_the_user() -> None:
    class Broken(InMemorySpanExporter):
        def export(self, spans: Any) -> Any:
            raise ConnectionError("collector on fire")

    _telemetry(Broken())
    assert unit(5) == 5


def test_without_api_key_or_exporter_warns_and_traces(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEYWORDSAI_API_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="keywordsai_tracing"):
        telemetry = KeywordsAITelemetry(instruments=set())
    assert "No api_key" in caplog.text
    assert telemetry.is_initialized()
    assert unit(1) == 1


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_disabled_is_a_true_no_op(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    created: list[object] = []
    original_init = sdk_trace.Span.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        created.append(self)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(sdk_trace.Span, "__init__", counting_init)
    exporter = InMemorySpanExporter()
    if how == "environment":
        monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
        telemetry = _telemetry(exporter)
    else:
        telemetry = _telemetry(exporter, is_enabled=False)
    assert not telemetry.is_initialized()

    @workflow
    async def flow() -> int:
        return unit(2)

    @task
    def gen() -> Any:
        yield 1

    assert asyncio.run(flow()) == 2
    assert list(gen()) == [1]
    assert telemetry.flush()
    assert created == []
    assert exporter.get_finished_spans() == ()


def test_instrument_selection_rules() -> None:
    everything = instrumentation.selected(None, set())
    assert set(everything) == set(Instruments) - {Instruments.ASYNCIO}
    assert Instruments.ASYNCIO in instrumentation.selected({Instruments.ASYNCIO}, set())
    assert instrumentation.selected(set(), set()) == [Instruments.THREADING]
    assert instrumentation.selected({Instruments.OPENAI}, set()) == [
        Instruments.OPENAI,
        Instruments.THREADING,
    ]
    assert instrumentation.selected(set(), {Instruments.THREADING}) == []
    assert Instruments.REDIS not in instrumentation.selected(None, {Instruments.REDIS})


def test_every_instruments_member_is_in_the_table() -> None:
    assert set(instrumentation.TABLE) == set(Instruments)


class ExplodingInstrumentor:
    is_instrumented_by_opentelemetry = False

    def instrument(self, **kwargs: Any) -> None:
        raise RuntimeError("instrumentor bug")


def test_missing_library_is_skipped_and_failing_instrumentor_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(
        instrumentation.TABLE,
        Instruments.REDIS,
        Instrumentation(None, __name__, "ExplodingInstrumentor"),
    )
    monkeypatch.setitem(
        instrumentation.TABLE,
        Instruments.PYMYSQL,
        Instrumentation("surely_not_installed_lib", "x.y", "Z"),
    )
    with caplog.at_level(logging.DEBUG, logger="keywordsai_tracing"):
        _telemetry(
            InMemorySpanExporter(),
            instruments={Instruments.REDIS, Instruments.PYMYSQL},
            log_level="DEBUG",
        )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["Could not instrument REDIS"]
    assert "PYMYSQL (library surely_not_installed_lib not installed)" in caplog.text
    assert "REDIS (instrumentor failed)" in caplog.text
    assert "Instrumented: THREADING." in caplog.text
    assert unit(1) == 1


def test_shutdown_uninstruments_what_it_instrumented() -> None:
    from opentelemetry.instrumentation.threading import ThreadingInstrumentor

    telemetry = _telemetry(InMemorySpanExporter())
    assert ThreadingInstrumentor().is_instrumented_by_opentelemetry
    telemetry.shutdown()
    assert not ThreadingInstrumentor().is_instrumented_by_opentelemetry


def _run_script(source: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_coexists_with_an_application_tracer_provider() -> None:
    out = _run_script(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from keywordsai_tracing import KeywordsAITelemetry, task

        app_exporter, our_exporter = InMemorySpanExporter(), InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "app"}))
        provider.add_span_processor(SimpleSpanProcessor(app_exporter))
        trace.set_tracer_provider(provider)
        KeywordsAITelemetry(custom_exporter=our_exporter, is_batching_enabled=False,
                            instruments=set())

        @task
        def work():
            with trace.get_tracer("app").start_as_current_span("app-span"):
                return 1

        work()
        print(sorted(s.name for s in app_exporter.get_finished_spans()))
        print(sorted(s.name for s in our_exporter.get_finished_spans()))
        print(trace.get_tracer_provider() is provider)
        """
    )
    assert out.splitlines() == [
        "['app-span', 'work.task']",
        "['app-span', 'work.task']",
        "True",
    ]


def test_installs_its_provider_globally_when_none_exists() -> None:
    out = _run_script(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from keywordsai_tracing import KeywordsAITelemetry, workflow

        exporter = InMemorySpanExporter()
        KeywordsAITelemetry(custom_exporter=exporter, is_batching_enabled=False,
                            instruments=set())

        @workflow
        def flow():
            with trace.get_tracer("lib").start_as_current_span("lib-span"):
                pass

        flow()
        for span in sorted(exporter.get_finished_spans(), key=lambda s: s.name):
            print(span.name, span.attributes.get("traceloop.workflow.name"),
                  span.attributes.get("traceloop.entity.path"))
        """
    )
    assert out.splitlines() == ["flow.workflow flow None", "lib-span flow flow"]


def test_sync_script_flushes_batched_spans_at_exit() -> None:
    out = _run_script(
        """
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
        from keywordsai_tracing import KeywordsAITelemetry, task

        class Printer(SpanExporter):
            def export(self, spans):
                for span in spans:
                    print("exported", span.name, flush=True)
                return SpanExportResult.SUCCESS

        KeywordsAITelemetry(custom_exporter=Printer(), instruments=set())

        @task
        def work():
            return 1

        work()
        """
    )
    assert out.splitlines() == ["exported work.task"]


def test_otel_resource_attributes_merge_under_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=search,service.name=from-env")
    exporter = InMemorySpanExporter()
    _telemetry(exporter, app_name="from-arg", resource_attributes={"team": "arg"})
    unit(1)
    resource = exporter.get_finished_spans()[0].resource.attributes
    assert resource["service.name"] == "from-arg"
    assert resource["team"] == "arg"
    assert resource["telemetry.sdk.language"] == "python"
