"""Shared fixtures: an in-memory telemetry, and checks that every test leaves no span,
no KeywordsAI context and no active telemetry behind."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from blockbuster import blockbuster_ctx
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import KeywordsAITelemetry, _attributes, _telemetry
from keywordsai_tracing.integrations import REQUEST_PARAMS_KEY
from tests.otlp_receiver import OTLPReceiver, otlp_receiver, threaded_otlp_receiver, unused_endpoint

__all__ = ["otlp_receiver", "threaded_otlp_receiver", "unused_endpoint"]  # shared fixtures


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(exporter: InMemorySpanExporter) -> Iterator[KeywordsAITelemetry]:
    """Telemetry exporting inline to ``exporter``; only threading instrumentation."""
    instance = KeywordsAITelemetry(
        app_name="tests", custom_exporter=exporter, is_batching_enabled=False, instruments=set()
    )
    yield instance
    instance.shutdown()


def telemetry_to(
    receiver: OTLPReceiver, app_name: str, api_key: str = "sk-test", **kwargs: Any
) -> KeywordsAITelemetry:
    """A telemetry exporting to ``receiver`` with no instrumentation (beyond threading)."""
    return KeywordsAITelemetry(
        app_name=app_name,
        api_key=api_key,
        base_url=receiver.base_url,
        instruments=set(),
        **kwargs,
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def spans_by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    """Finished spans keyed by name (names must be unique in the test)."""
    spans = exporter.get_finished_spans()
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [s.name for s in spans]
    return named


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


@pytest.fixture(autouse=True)
def _never_block_the_loop() -> Iterator[None]:
    """Fail a test in which our package makes a blocking call on an event loop thread."""
    with blockbuster_ctx(["keywordsai_tracing"]):
        yield


@pytest.fixture(autouse=True)
def _nothing_left_behind() -> Iterator[None]:
    """Fail a test that leaves a span or our context attached; reset the telemetry."""
    before = context_api.get_current()
    our_logger = logging.getLogger("keywordsai_tracing")
    level = our_logger.level
    yield
    our_logger.setLevel(level)
    try:
        assert not trace.get_current_span().get_span_context().is_valid, "a span leaked"
        assert context_api.get_value(_attributes.WORKFLOW_NAME_KEY) is None
        assert context_api.get_value(_attributes.ENTITY_PATH_KEY) is None
        assert context_api.get_value(REQUEST_PARAMS_KEY) is None
        assert context_api.get_current() == before, "context leaked"
    finally:
        _telemetry._shutdown_active()
