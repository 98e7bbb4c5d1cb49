"""The pytest plugin, exercised the way users meet it: small test files run by pytester."""

from __future__ import annotations

import textwrap
import warnings

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import KeywordsAITelemetry

pytest_plugins = ["pytester"]

PLUGIN = "keywordsai_tracing.testing.pytest_plugin"

# A strict user configuration: warnings are errors (the OpenAI instrumentation's own
# deprecation warning aside), pytest-asyncio in strict mode.
INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings =
    error
    ignore:Support for class-based `config` is deprecated:DeprecationWarning
"""

# Code under test shared by the user test files below.
TRACED = """
import asyncio

import anyio
import pytest
from opentelemetry import context, trace

from keywordsai_tracing import task, workflow
from keywordsai_tracing._attributes import ENTITY_PATH_KEY, WORKFLOW_NAME_KEY


@task(name="step")
async def step(n: int) -> int:
    await asyncio.sleep(0)
    return n * 2


@workflow(name="pipeline")
async def pipeline(count: int) -> list[int]:
    return list(await asyncio.gather(*(step(n) for n in range(count))))


@workflow(name="anyio_pipeline")
async def anyio_pipeline(count: int) -> None:
    async with anyio.create_task_group() as group:
        for n in range(count):
            group.start_soon(step_anyio, n)


@task(name="step")
async def step_anyio(n: int) -> int:
    await anyio.sleep(0)
    return n * 2


@task(name="sync_step")
def sync_step() -> str:
    return "done"


@workflow(name="sync_pipeline")
def sync_pipeline() -> str:
    return sync_step()


def leak_workflow_name() -> None:
    context.attach(context.set_value(WORKFLOW_NAME_KEY, "leaky"))


def leak_entity_path() -> None:
    context.attach(context.set_value(ENTITY_PATH_KEY, "leaky.path"))


def leak_span() -> None:
    span = trace.get_tracer("leaky").start_span("leaky")
    context.attach(trace.set_span_in_context(span))
"""


@pytest.fixture(scope="module", autouse=True)
def _instrumentations_imported() -> None:
    """Import every instrumentation once, here: pytester's in-process runs unload the
    modules they import, so each run would otherwise import them again (seconds)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Support for class-based", DeprecationWarning)
        KeywordsAITelemetry(
            custom_exporter=InMemorySpanExporter(),
            is_batching_enabled=False,
            flush_on_sigterm=False,
        ).shutdown()


def run(pytester: pytest.Pytester, tests: str, *args: str) -> pytest.RunResult:
    """Write ``traced.py``, an ini and ``test_user.py``; run pytest with the plugin."""
    pytester.makeini(INI)
    pytester.makepyfile(traced=TRACED)
    pytester.makepyfile(test_user=textwrap.dedent(tests))
    return pytester.runpytest("-p", PLUGIN, "-p", "no:cacheprovider", *args)


def test_sync_test_sees_spans_as_soon_as_the_call_returns(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        from traced import sync_pipeline

        def test_spans(keywordsai_spans):
            assert keywordsai_spans.spans == []
            assert sync_pipeline() == "done"
            root = keywordsai_spans.one("sync_pipeline.workflow")
            assert [s.name for s in keywordsai_spans.children(root)] == ["sync_step.task"]
            assert keywordsai_spans.tree() == "sync_pipeline.workflow\\n  sync_step.task"
        """,
    )
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("loop_scope", ["function", "module", "session"])
def test_pytest_asyncio_tests_capture_spans_in_any_loop_scope(
    pytester: pytest.Pytester, loop_scope: str
) -> None:
    result = run(
        pytester,
        f"""
        import pytest
        from traced import pipeline

        pytestmark = pytest.mark.asyncio(loop_scope="{loop_scope}")

        async def test_first(keywordsai_spans):
            assert await pipeline(2) == [0, 2]
            keywordsai_spans.assert_tree('''
                pipeline.workflow
                  step.task
                  step.task
            ''')

        async def test_second(keywordsai_spans):
            assert await pipeline(1) == [0]
            assert [s.name for s in keywordsai_spans.spans] == ["step.task", "pipeline.workflow"]
        """,
    )
    result.assert_outcomes(passed=2)


def test_anyio_tests_capture_spans_on_asyncio_and_trio(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import pytest
        from traced import anyio_pipeline

        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            return request.param

        @pytest.mark.anyio
        async def test_capture(keywordsai_spans):
            await anyio_pipeline(3)
            assert len(keywordsai_spans.find("step.task")) == 3
            assert keywordsai_spans.one(kind="workflow").name == "anyio_pipeline.workflow"
            root = keywordsai_spans.one(kind="workflow")
            assert len(keywordsai_spans.children(root)) == 3
        """,
    )
    result.assert_outcomes(passed=2)


def test_each_test_sees_only_its_own_spans(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import pytest
        from keywordsai_tracing import _telemetry
        from traced import pipeline, sync_pipeline

        def test_plain_tests_create_no_telemetry():
            assert _telemetry._active is None

        @pytest.mark.asyncio(loop_scope="module")
        async def test_a(keywordsai_spans):
            await pipeline(4)
            assert len(keywordsai_spans) == 5

        def test_b(keywordsai_spans):
            assert keywordsai_spans.spans == []
            sync_pipeline()
            assert len(keywordsai_spans) == 2

        @pytest.mark.asyncio(loop_scope="module")
        async def test_c(keywordsai_spans):
            assert keywordsai_spans.spans == []

        def test_telemetry_is_shut_down_after_each_test():
            assert _telemetry._active is None
        """,
        "-p",
        "no:randomly",
    )
    result.assert_outcomes(passed=5)


def test_find_one_children_roots_and_clear(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import pytest
        from opentelemetry.trace import SpanKind
        from traced import pipeline, sync_pipeline

        @pytest.mark.asyncio
        async def test_helpers(keywordsai_spans):
            await pipeline(2)
            sync_pipeline()
            assert [s.name for s in keywordsai_spans.roots()] == [
                "pipeline.workflow", "sync_pipeline.workflow"
            ]
            assert len(keywordsai_spans.find(kind="task")) == 3
            assert len(keywordsai_spans.find("step.task", kind="task")) == 2
            assert keywordsai_spans.find("step.task", kind="workflow") == []
            assert len(keywordsai_spans.find(kind=SpanKind.INTERNAL)) == 5
            with pytest.raises(AssertionError, match="found 2"):
                keywordsai_spans.one("step.task")
            with pytest.raises(AssertionError, match="found 0"):
                keywordsai_spans.one("missing")
            root = keywordsai_spans.one("pipeline.workflow")
            assert [s.name for s in keywordsai_spans.children(root)] == ["step.task"] * 2
            keywordsai_spans.assert_tree('''
                pipeline.workflow
                  step.task
                  step.task
                sync_pipeline.workflow
                  sync_step.task
            ''')
            keywordsai_spans.clear()
            assert keywordsai_spans.spans == []
            assert keywordsai_spans.tree() == ""
            sync_pipeline()
            assert len(keywordsai_spans) == 2
        """,
    )
    result.assert_outcomes(passed=1)


def test_assert_tree_failure_shows_both_trees(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        from traced import sync_pipeline

        def test_wrong_shape(keywordsai_spans):
            sync_pipeline()
            keywordsai_spans.assert_tree('''
                sync_pipeline.workflow
                sync_step.task
            ''')
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*span tree differs.",
            "*expected:",
            "*sync_pipeline.workflow",
            "*sync_step.task",
            "*captured:",
            "*sync_pipeline.workflow",
            "*  sync_step.task",
        ]
    )


LEAKY_TESTS = """
import pytest
from traced import leak_entity_path, leak_span, leak_workflow_name, pipeline, sync_pipeline

pytestmark = pytest.mark.usefixtures("keywordsai_no_leaks")

@pytest.fixture
def anyio_backend():
    return "asyncio"

def test_sync_leak():
    leak_workflow_name()

@pytest.mark.asyncio
async def test_asyncio_leak():
    leak_entity_path()

@pytest.mark.anyio
async def test_anyio_leak():
    leak_span()

def test_sync_clean(keywordsai_spans):
    sync_pipeline()

@pytest.mark.asyncio
async def test_asyncio_clean(keywordsai_spans):
    await pipeline(2)

@pytest.mark.anyio
async def test_anyio_clean(keywordsai_spans):
    await pipeline(2)

class TestInAClass:
    def test_method_leak(self):
        leak_workflow_name()

    def test_after_a_leak_the_context_is_clean(self):
        from opentelemetry import context
        from keywordsai_tracing._attributes import WORKFLOW_NAME_KEY
        assert context.get_value(WORKFLOW_NAME_KEY) is None
"""


def test_no_leaks_fails_leaking_tests_and_passes_clean_ones(pytester: pytest.Pytester) -> None:
    result = run(pytester, LEAKY_TESTS, "-p", "no:randomly")
    result.assert_outcomes(passed=4, failed=4)
    result.stdout.fnmatch_lines(
        [
            "keywordsai_no_leaks: after test test_sync_leak, "
            "workflow name 'leaky' is still attached (a context attach() without its "
            "detach() in the code under test)",
            "keywordsai_no_leaks: after test test_asyncio_leak, entity path 'leaky.path' *",
            "keywordsai_no_leaks: after test test_anyio_leak, a span is still current *",
            "keywordsai_no_leaks: after test test_method_leak, workflow name 'leaky' *",
        ],
        consecutive=False,
    )


def test_no_leaks_leaves_failing_tests_their_own_error(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import pytest
        from traced import leak_workflow_name

        @pytest.mark.usefixtures("keywordsai_no_leaks")
        @pytest.mark.asyncio
        async def test_fails():
            leak_workflow_name()
            raise ValueError("the test's own failure")
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ValueError: the test's own failure*"])
    result.stdout.no_fnmatch_line("*keywordsai_no_leaks:*")


DETERMINISTIC = """
import json

import pytest
from traced import pipeline

@pytest.mark.asyncio
async def test_snapshot(keywordsai_deterministic):
    await pipeline(2)
    spans = keywordsai_deterministic.spans
    ids = [(s.name, s.context.trace_id, s.context.span_id, s.parent and s.parent.span_id)
           for s in spans]
    assert ids == [("step.task", 1, 2, 1), ("step.task", 1, 3, 1),
                   ("pipeline.workflow", 1, 1, None)]
    root = keywordsai_deterministic.one("pipeline.workflow")
    assert root.start_time == 1_000_000_000
    assert root.end_time == 6_000_000_000
    keywordsai_deterministic.assert_tree('''
        pipeline.workflow
          step.task
          step.task
    ''')
    snapshot = [json.loads(s.to_json()) for s in spans]
    with open("snapshot.json", "a") as file:
        file.write(json.dumps(snapshot, sort_keys=True) + "\\n")
"""


def test_deterministic_ids_and_times_are_equal_across_runs(pytester: pytest.Pytester) -> None:
    for _ in range(2):
        run(pytester, DETERMINISTIC).assert_outcomes(passed=1)
    snapshots = (pytester.path / "snapshot.json").read_text().splitlines()
    assert len(snapshots) == 2
    assert snapshots[0] == snapshots[1]
    assert '"trace_id": "0x00000000000000000000000000000001"' in snapshots[0]


def test_stand_in_llm_serves_sync_and_async_clients(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import anthropic
        import openai
        import pytest
        from keywordsai_tracing import Instruments, task
        from keywordsai_tracing.testing import reply_text

        @pytest.fixture
        def keywordsai_telemetry_options():
            return {"instruments": {Instruments.OPENAI}}

        @task(name="ask")
        def ask(client: openai.OpenAI) -> str:
            completion = client.chat.completions.create(
                model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi there"}]
            )
            return completion.choices[0].message.content or ""

        def test_sync_openai(stand_in_llm, keywordsai_spans):
            with openai.OpenAI(base_url=stand_in_llm.openai_base_url, api_key="t") as client:
                assert ask(client) == reply_text("hi there")
            keywordsai_spans.assert_tree('''
                ask.task
                  openai.chat
            ''')
            assert keywordsai_spans.one(kind="llm").name == "openai.chat"
            assert len(stand_in_llm.requests) == 1

        @pytest.mark.asyncio
        async def test_async_anthropic(stand_in_llm):
            async with anthropic.AsyncAnthropic(
                base_url=stand_in_llm.anthropic_base_url, api_key="t"
            ) as client:
                message = await client.messages.create(
                    model="claude-haiku-4-5", max_tokens=10,
                    messages=[{"role": "user", "content": "hello"}],
                )
            assert message.content[0].text == reply_text("hello")
        """,
    )
    result.assert_outcomes(passed=2)


def test_telemetry_options_can_be_overridden_but_not_the_capture(
    pytester: pytest.Pytester,
) -> None:
    result = run(
        pytester,
        """
        import pytest
        from traced import sync_pipeline

        @pytest.fixture
        def keywordsai_telemetry_options(request):
            if request.node.name == "test_reserved":
                return {"is_batching_enabled": True}
            return {"trace_content": False, "instruments": set()}

        def test_no_content(keywordsai_spans):
            sync_pipeline()
            assert "traceloop.entity.input" not in keywordsai_spans.one("sync_step.task").attributes

        def test_reserved(keywordsai_spans):
            pass
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*is_batching_enabled is reserved*"])
