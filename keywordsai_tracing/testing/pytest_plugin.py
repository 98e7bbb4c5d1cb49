"""pytest fixtures for testing code traced with keywordsai_tracing.

Installed with the package (``pytest11`` entry point); nothing happens unless a test asks
for one of these fixtures. Without the entry point, load it with
``-p keywordsai_tracing.testing.pytest_plugin`` or
``pytest_plugins = ["keywordsai_tracing.testing.pytest_plugin"]`` in a ``conftest.py``.

- ``keywordsai_spans`` -> `CapturedSpans`: a `KeywordsAITelemetry` exporting every span
  inline to memory, so the spans are there as soon as the traced call returns (sync,
  pytest-asyncio with any loop scope, anyio). ``.spans``, ``.find(name=, kind=)``,
  ``.one(...)``, ``.children(span)``, ``.roots()``, ``.tree()``, ``.assert_tree(text)``,
  ``.clear()``. The telemetry is created per test, outside any event loop, and shut
  down after it.
- ``keywordsai_deterministic`` -> the same capture, showing spans with sequential trace
  and span ids and fake timestamps (1 s, 2 s, ... in the order things happened), for
  snapshot assertions.
- ``keywordsai_telemetry_options`` -> ``dict``: extra `KeywordsAITelemetry` arguments for
  the capture (override it, e.g. to pick ``instruments``).
- ``keywordsai_no_leaks``: fails the test if its body leaves a span or KeywordsAI context
  (workflow name, entity path) attached; async tests are checked inside their own task.
  Use it as ``@pytest.mark.usefixtures("keywordsai_no_leaks")``.
- ``stand_in_llm`` -> `StandInLLMServer` on a thread of its own: point ``openai`` /
  ``anthropic`` clients (sync or async) at ``.openai_base_url`` / ``.anthropic_base_url``.

Only one `KeywordsAITelemetry` is active per process: ``keywordsai_spans`` replaces (and
shuts down) one the test suite created earlier.

PYTEST_DONT_REWRITE (this module has no bare ``assert``; the marker stops pytest warning
that it cannot rewrite the already-imported plugin in nested, e.g. pytester, runs).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from keywordsai_tracing import KeywordsAITelemetry

from ._capture import CapturedSpans
from ._leaks import checking_leaks
from .llm_server import StandInLLMServer

__all__ = [
    "CapturedSpans",
    "keywordsai_deterministic",
    "keywordsai_no_leaks",
    "keywordsai_spans",
    "keywordsai_telemetry_options",
    "stand_in_llm",
]


@pytest.fixture
def keywordsai_telemetry_options() -> dict[str, Any]:
    """Extra `KeywordsAITelemetry` keyword arguments for ``keywordsai_spans``.

    Empty by default: every installed instrumentation is on, as in production.
    Override it in a ``conftest.py`` or test module, e.g.
    ``return {"instruments": {Instruments.OPENAI}}``. ``custom_exporter`` and
    ``is_batching_enabled`` are the capture's own and cannot be overridden.
    """
    return {}


@pytest.fixture
def keywordsai_spans(keywordsai_telemetry_options: dict[str, Any]) -> Iterator[CapturedSpans]:
    """Every span the test produces, in memory, available right after each call returns.

    A sync fixture on purpose: the telemetry is created outside any event loop, so it
    works unchanged under pytest-asyncio (any loop scope), anyio and plain sync tests.
    """
    for reserved in ("custom_exporter", "is_batching_enabled"):
        if reserved in keywordsai_telemetry_options:
            raise pytest.UsageError(f"keywordsai_telemetry_options: {reserved} is reserved")
    capture = CapturedSpans()
    options: dict[str, Any] = {"app_name": "tests", "flush_on_sigterm": False}
    options.update(keywordsai_telemetry_options)
    telemetry = KeywordsAITelemetry(
        **options, custom_exporter=capture.exporter, is_batching_enabled=False
    )
    try:
        yield capture
    finally:
        telemetry.shutdown()


@pytest.fixture
def keywordsai_deterministic(keywordsai_spans: CapturedSpans) -> CapturedSpans:
    """``keywordsai_spans`` with sequential ids and fake timestamps in every view.

    Trace and span ids are 1, 2, ... in the order spans started; timestamps are 1 s,
    2 s, ... in the order starts, ends and events happened. Equal across runs of code that
    starts and ends its spans in the same order, so spans can be compared to snapshots.
    """
    keywordsai_spans.deterministic = True
    return keywordsai_spans


@pytest.fixture
def keywordsai_no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if its body leaves a span or KeywordsAI context attached.

    The test function is wrapped so the check runs where the body ran: in the test's
    own task for ``async def`` tests (pytest-asyncio or anyio), in the calling thread
    for sync ones.
    """
    item = request.node
    if not isinstance(item, pytest.Function):
        raise pytest.UsageError("keywordsai_no_leaks is a function-scoped test fixture")
    original = item.obj
    item.obj = checking_leaks(original, f"test {item.name}")
    try:
        yield
    finally:
        item.obj = original


@pytest.fixture
def stand_in_llm() -> Iterator[StandInLLMServer]:
    """A `StandInLLMServer` on its own thread and event loop, for sync and async tests.

    ``.openai_base_url`` and ``.anthropic_base_url`` for the clients; ``.requests``,
    ``.fail_next(...)`` and ``.chunk_delay`` to inspect or steer it.
    """
    with StandInLLMServer() as server:
        yield server
