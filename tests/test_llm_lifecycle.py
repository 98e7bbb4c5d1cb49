"""Instrument / uninstrument cycles: each telemetry traces each call once, and a telemetry
that is shut down leaves no LLM instrumentation behind (every test creates and shuts one)."""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import Instruments, KeywordsAITelemetry, task
from keywordsai_tracing.testing import StandInLLMServer
from tests.test_llm_instrumentation import IMPORT_WARNING, MESSAGES, named, sync_server

__all__ = ["sync_server"]  # fixture
pytestmark = pytest.mark.filterwarnings(IMPORT_WARNING)
LLM = {Instruments.OPENAI, Instruments.ANTHROPIC}


def _telemetry(exporter: InMemorySpanExporter, instruments: set[Instruments]) -> None:
    KeywordsAITelemetry(
        custom_exporter=exporter, is_batching_enabled=False, instruments=instruments
    )


def _caller(server: StandInLLMServer) -> tuple[Callable[[], None], Callable[[], None]]:
    oai = openai.OpenAI(base_url=server.openai_base_url, api_key="test")
    claude = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test")

    @task(name="ask")
    def ask() -> None:
        oai.chat.completions.create(model="m", messages=MESSAGES)
        claude.messages.create(model="c", max_tokens=50, messages=MESSAGES)

    def close() -> None:
        oai.close()
        claude.close()

    return ask, close


@pytest.mark.parametrize("span_name", ["openai.chat", "anthropic.chat"])
def test_each_of_several_telemetries_traces_a_call_once(
    sync_server: StandInLLMServer, span_name: str
) -> None:
    ask, close = _caller(sync_server)
    try:
        for _ in range(3):
            exporter = InMemorySpanExporter()
            _telemetry(exporter, LLM)  # replaces (shuts down) the previous one
            ask()
            assert len(named(exporter, span_name)) == 1
    finally:
        close()


@pytest.mark.parametrize("span_name", ["openai.chat", "anthropic.chat"])
def test_shut_down_telemetry_leaves_no_llm_instrumentation(
    sync_server: StandInLLMServer, span_name: str
) -> None:
    ask, close = _caller(sync_server)
    try:
        _telemetry(InMemorySpanExporter(), LLM)
        exporter = InMemorySpanExporter()
        _telemetry(exporter, set())
        ask()
    finally:
        close()
    assert named(exporter, "ask.task")
    assert named(exporter, span_name) == []
