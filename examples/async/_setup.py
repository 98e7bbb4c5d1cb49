"""Shared set-up of the async examples: which LLM endpoints, and where traces go.

- `llm_clients()` yields an ``AsyncOpenAI`` and an ``AsyncAnthropic`` client. Each talks
  to the real API when ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY`` is set, and otherwise to
  a local `StandInLLMServer` (deterministic echo replies: no network, no keys).
- `make_telemetry()` creates the `KeywordsAITelemetry`. With ``KEYWORDSAI_API_KEY`` set,
  spans go to KeywordsAI; otherwise each trace is printed as a tree. ``KEYWORDSAI_EXPORTER``
  (``console`` or ``jsonl:<path>``) adds a local exporter on its own: the SDK reads it.

Models can be changed with ``OPENAI_MODEL``, ``OPENAI_EMBEDDING_MODEL`` and
``ANTHROPIC_MODEL``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from keywordsai_tracing import KeywordsAITelemetry
from keywordsai_tracing.exporters import ConsoleTraceExporter
from keywordsai_tracing.testing import StandInLLMServer

OPENAI_MODEL = os.environ.get("OPENAI_MODEL", "gpt-4.1-mini")
EMBEDDING_MODEL = os.environ.get("OPENAI_EMBEDDING_MODEL", "text-embedding-3-small")
ANTHROPIC_MODEL = os.environ.get("ANTHROPIC_MODEL", "claude-haiku-4-5")


@dataclass(frozen=True)
class LLMClients:
    openai: AsyncOpenAI
    anthropic: AsyncAnthropic
    stand_in: StandInLLMServer | None  # the local server, when a key is missing


@asynccontextmanager
async def llm_clients() -> AsyncIterator[LLMClients]:
    """Real clients where an API key is set, stand-in clients elsewhere; closed on exit."""
    use_openai = bool(os.environ.get("OPENAI_API_KEY"))
    use_anthropic = bool(os.environ.get("ANTHROPIC_API_KEY"))
    async with AsyncExitStack() as stack:
        stand_in = None
        if not (use_openai and use_anthropic):
            stand_in = await stack.enter_async_context(StandInLLMServer())
        if use_openai:
            openai_client = AsyncOpenAI()
        else:
            assert stand_in is not None
            openai_client = AsyncOpenAI(base_url=stand_in.openai_base_url, api_key="stand-in")
        if use_anthropic:
            anthropic_client = AsyncAnthropic()
        else:
            assert stand_in is not None
            anthropic_client = AsyncAnthropic(
                base_url=stand_in.anthropic_base_url, api_key="stand-in"
            )
        await stack.enter_async_context(openai_client)
        await stack.enter_async_context(anthropic_client)
        yield LLMClients(openai_client, anthropic_client, stand_in)


def make_telemetry(app_name: str) -> KeywordsAITelemetry:
    """KeywordsAI export with ``KEYWORDSAI_API_KEY``, else trace trees on the console.

    When ``KEYWORDSAI_EXPORTER`` is set the SDK adds that exporter itself, so no console
    exporter is added here.
    """
    configured = os.environ.get("KEYWORDSAI_API_KEY") or os.environ.get("KEYWORDSAI_EXPORTER")
    console = None if configured else ConsoleTraceExporter()
    return KeywordsAITelemetry(app_name=app_name, custom_exporter=console)
