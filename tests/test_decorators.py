"""Decorators on every function flavour: names, attributes, status, metadata."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from keywordsai_tracing import KeywordsAITelemetry, agent, task, tool, workflow
from keywordsai_tracing.decorators import task as task_from_public_module
from tests.conftest import parent_id, span_id, spans_by_name

pytestmark = pytest.mark.usefixtures("telemetry")


def test_sync_function_span_name_and_attributes(exporter: InMemorySpanExporter) -> None:
    @task(name="add", version=2)
    def add(a: int, b: int = 0) -> int:
        return a + b

    assert add(1, b=2) == 3
    (span,) = exporter.get_finished_spans()
    assert span.name == "add.task"
    attrs = dict(span.attributes or {})
    assert attrs["traceloop.span.kind"] == "task"
    assert attrs["traceloop.entity.name"] == "add"
    assert attrs["traceloop.entity.version"] == 2
    assert attrs["traceloop.entity.path"] == "add"
    assert attrs["keywordsai.entity.log_method"] == "python_tracing"
    assert json.loads(str(attrs["traceloop.entity.input"])) == {"args": [1], "kwargs": {"b": 2}}
    assert json.loads(str(attrs["traceloop.entity.output"])) == 3
    assert "processors" not in attrs
    assert "traceloop.workflow.name" not in attrs
    assert span.status.status_code == StatusCode.UNSET


def test_name_defaults_to_function_name(exporter: InMemorySpanExporter) -> None:
    @workflow
    def my_flow() -> None:
        return None

    my_flow()
    assert [s.name for s in exporter.get_finished_spans()] == ["my_flow.workflow"]


@pytest.mark.parametrize(
    ("decorator", "kind"),
    [(workflow, "workflow"), (task, "task"), (agent, "agent"), (tool, "tool")],
)
def test_each_kind_sets_its_span_kind(
    exporter: InMemorySpanExporter, decorator: Any, kind: str
) -> None:
    @decorator(name="thing")
    def thing() -> str:
        return "ok"

    assert thing() == "ok"
    (span,) = exporter.get_finished_spans()
    assert span.name == f"thing.{kind}"
    assert span.attributes is not None
    assert span.attributes["traceloop.span.kind"] == kind
    if kind in ("workflow", "agent"):
        assert span.attributes["traceloop.workflow.name"] == "thing"
        assert "traceloop.entity.path" not in span.attributes
    else:
        assert span.attributes["traceloop.entity.path"] == "thing"


def test_positional_name_form(exporter: InMemorySpanExporter) -> None:
    @task("named")
    def f() -> None:
        return None

    f()
    assert exporter.get_finished_spans()[0].name == "named.task"


def test_processors_attribute_joined(exporter: InMemorySpanExporter) -> None:
    @task(processors=["debug", "prod"])
    def f() -> None:
        return None

    @task(processors="solo")
    def g() -> None:
        return None

    f()
    g()
    spans = spans_by_name(exporter)
    assert (spans["f.task"].attributes or {})["processors"] == "debug,prod"
    assert (spans["g.task"].attributes or {})["processors"] == "solo"


@pytest.mark.asyncio
async def test_coroutine_function_keeps_its_flavour(exporter: InMemorySpanExporter) -> None:
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    traced = task(fetch)
    assert inspect.iscoroutinefunction(traced)
    assert traced.__name__ == "fetch"
    assert traced.__wrapped__ is fetch  # type: ignore[attr-defined]
    assert await traced(4) == 8
    (span,) = exporter.get_finished_spans()
    assert (span.attributes or {})["traceloop.entity.output"] == "8"


def test_generator_flavour_and_span_lifetime(exporter: InMemorySpanExporter) -> None:
    @task
    def count(n: int) -> Iterator[int]:
        yield from range(n)

    assert inspect.isgeneratorfunction(count)
    gen = count(3)
    assert exporter.get_finished_spans() == ()
    assert next(gen) == 0
    assert exporter.get_finished_spans() == ()
    assert list(gen) == [1, 2]
    (span,) = exporter.get_finished_spans()
    assert span.name == "count.task"
    assert "traceloop.entity.output" not in (span.attributes or {})


def test_generator_return_value_and_send(exporter: InMemorySpanExporter) -> None:
    @task
    def echo() -> Iterator[Any]:
        received = yield "ready"
        while received is not None:
            received = yield f"got {received}"
        return "done"

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("a") == "got a"
    with pytest.raises(StopIteration) as stop:
        gen.send(None)
    assert stop.value.value == "done"
    assert len(exporter.get_finished_spans()) == 1


def test_generator_throw_is_forwarded(exporter: InMemorySpanExporter) -> None:
    @task
    def resilient() -> Iterator[str]:
        try:
            yield "first"
        except KeyError:
            yield "recovered"

    gen = resilient()
    assert next(gen) == "first"
    assert gen.throw(KeyError("x")) == "recovered"
    gen.close()
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.UNSET


@pytest.mark.asyncio
async def test_async_generator_flavour(exporter: InMemorySpanExporter) -> None:
    @task
    async def ticks(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    assert inspect.isasyncgenfunction(ticks)
    assert [i async for i in ticks(3)] == [0, 1, 2]
    (span,) = exporter.get_finished_spans()
    assert span.name == "ticks.task"


@pytest.mark.asyncio
async def test_async_generator_asend_and_athrow(exporter: InMemorySpanExporter) -> None:
    @tool
    async def conversation() -> AsyncIterator[str]:
        reply = yield "hello"
        try:
            yield f"you said {reply}"
        except ValueError as exc:
            yield f"caught {exc}"

    gen = conversation()
    assert await gen.asend(None) == "hello"
    assert await gen.asend("hi") == "you said hi"
    assert await gen.athrow(ValueError("oops")) == "caught oops"
    await gen.aclose()
    assert len(exporter.get_finished_spans()) == 1


def test_exception_recorded_status_error_and_reraised(exporter: InMemorySpanExporter) -> None:
    @task
    def boom() -> None:
        raise RuntimeError("bad thing")

    with pytest.raises(RuntimeError, match="bad thing"):
        boom()
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "RuntimeError: bad thing"
    (event,) = span.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "RuntimeError"


@pytest.mark.asyncio
async def test_async_exception_recorded(exporter: InMemorySpanExporter) -> None:
    @workflow
    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        await failing()
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR


def test_generator_exception_recorded(exporter: InMemorySpanExporter) -> None:
    @task
    def breaks() -> Iterator[int]:
        yield 1
        raise KeyError("gone")

    gen = breaks()
    assert next(gen) == 1
    with pytest.raises(KeyError):
        next(gen)
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR


@pytest.mark.asyncio
async def test_cancellation_is_not_an_error(exporter: InMemorySpanExporter) -> None:
    @task
    async def slow() -> None:
        await asyncio.sleep(10)

    running = asyncio.create_task(slow())
    await asyncio.sleep(0.01)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.UNSET
    assert span.end_time is not None


class Service:
    prefix = "svc"

    @task
    def method(self, x: int) -> str:
        return f"{self.prefix}{x}"

    @task
    async def amethod(self, x: int) -> str:
        return f"a{x}"

    @staticmethod
    @task
    def static_inner(x: int) -> int:
        return x

    @task
    @staticmethod
    def static_outer(x: int) -> int:
        return x + 1

    @classmethod
    @task
    def class_inner(cls, x: int) -> str:
        return f"{cls.__name__}{x}"

    @task
    @classmethod
    def class_outer(cls, x: int) -> str:
        return f"{cls.__name__}-{x}"


def _input(exporter: InMemorySpanExporter, name: str) -> Any:
    return json.loads(
        str((spans_by_name(exporter)[name].attributes or {})["traceloop.entity.input"])
    )


def test_methods_exclude_self_and_cls(exporter: InMemorySpanExporter) -> None:
    service = Service()
    assert service.method(1) == "svc1"
    assert Service.static_inner(2) == 2
    assert service.static_outer(3) == 4
    assert Service.class_inner(4) == "Service4"
    assert service.class_outer(5) == "Service-5"
    assert _input(exporter, "method.task") == {"args": [1], "kwargs": {}}
    assert _input(exporter, "static_inner.task") == {"args": [2], "kwargs": {}}
    assert _input(exporter, "static_outer.task") == {"args": [3], "kwargs": {}}
    assert _input(exporter, "class_inner.task") == {"args": [4], "kwargs": {}}
    assert _input(exporter, "class_outer.task") == {"args": [5], "kwargs": {}}


@pytest.mark.asyncio
async def test_async_method(exporter: InMemorySpanExporter) -> None:
    assert inspect.iscoroutinefunction(Service.amethod)
    assert await Service().amethod(7) == "a7"
    assert _input(exporter, "amethod.task") == {"args": [7], "kwargs": {}}


def test_class_form_with_method_name(exporter: InMemorySpanExporter) -> None:
    @agent(method_name="run")
    class Researcher:
        def run(self, topic: str) -> str:
            return f"researched {topic}"

    @tool(name="calc", method_name="compute")
    class Calculator:
        @staticmethod
        def compute(x: int) -> int:
            return x * x

    assert Researcher().run("otel") == "researched otel"
    assert Calculator.compute(3) == 9
    spans = spans_by_name(exporter)
    assert set(spans) == {"Researcher.agent", "calc.tool"}
    assert _input(exporter, "Researcher.agent") == {"args": ["otel"], "kwargs": {}}


def test_class_without_method_name_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="method_name"):

        @task
        class Nope:
            pass


def test_class_form_with_unknown_method_name() -> None:
    class Empty:
        pass

    with pytest.raises(ValueError, match="method_name"):
        task(method_name="missing")(Empty)


def test_bad_decorator_arguments() -> None:
    with pytest.raises(TypeError, match="processors"):
        task(processors=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        task(42)  # type: ignore[call-overload]


def test_wraps_metadata_kept() -> None:
    def documented(x: int) -> int:
        """Docs."""
        return x

    traced = task(documented)
    assert traced.__doc__ == "Docs."
    assert traced.__qualname__ == documented.__qualname__
    assert inspect.signature(traced) == inspect.signature(documented)
    assert isinstance(traced, type(functools.wraps(documented)(lambda x: x)))


def test_public_module_paths_are_the_same_objects() -> None:
    assert task_from_public_module is task


def test_nesting_builds_entity_path_and_workflow_name(exporter: InMemorySpanExporter) -> None:
    @tool
    def leaf() -> str:
        return "leaf"

    @task
    def middle() -> str:
        return leaf()

    @task
    def outer() -> str:
        return middle()

    @workflow(name="flow")
    def flow() -> str:
        return outer()

    assert flow() == "leaf"
    spans = spans_by_name(exporter)
    assert (spans["outer.task"].attributes or {})["traceloop.entity.path"] == "outer"
    assert (spans["middle.task"].attributes or {})["traceloop.entity.path"] == "outer.middle"
    assert (spans["leaf.tool"].attributes or {})["traceloop.entity.path"] == "outer.middle.leaf"
    for span in spans.values():
        assert (span.attributes or {})["traceloop.workflow.name"] == "flow"
    assert parent_id(spans["leaf.tool"]) == span_id(spans["middle.task"])
    assert parent_id(spans["middle.task"]) == span_id(spans["outer.task"])
    assert parent_id(spans["outer.task"]) == span_id(spans["flow.workflow"])
    assert parent_id(spans["flow.workflow"]) is None


def test_agent_inside_workflow_renames_the_workflow(exporter: InMemorySpanExporter) -> None:
    @task
    def step() -> None:
        return None

    @agent(name="planner")
    def planner() -> None:
        step()

    @workflow(name="outer")
    def outer() -> None:
        planner()

    outer()
    spans = spans_by_name(exporter)
    assert (spans["step.task"].attributes or {})["traceloop.workflow.name"] == "planner"
    assert (spans["outer.workflow"].attributes or {})["traceloop.workflow.name"] == "outer"


def test_routing_is_inherited_by_child_spans(exporter: InMemorySpanExporter) -> None:
    @task
    def child() -> None:
        return None

    @workflow(processors="debug")
    def routed() -> None:
        child()

    routed()
    spans = spans_by_name(exporter)
    assert (spans["child.task"].attributes or {})["processors"] == "debug"


def test_decorated_before_telemetry_exists_starts_tracing_once_created(
    exporter: InMemorySpanExporter, telemetry: KeywordsAITelemetry
) -> None:
    telemetry.shutdown()

    @task
    def early() -> int:
        return 1

    assert early() == 1
    assert exporter.get_finished_spans() == ()
    late = InMemorySpanExporter()
    with KeywordsAITelemetry(custom_exporter=late, is_batching_enabled=False, instruments=set()):
        assert early() == 1
    assert [s.name for s in late.get_finished_spans()] == ["early.task"]
