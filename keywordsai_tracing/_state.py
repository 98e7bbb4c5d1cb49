"""The process-wide state decorators and the client read on every call.

``runtime`` is None until an enabled `KeywordsAITelemetry` is created, and again after it
shuts down: decorators then call straight through with no span (the disabled fast path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from opentelemetry.trace import Tracer

from ._fast_span import SpanStarter


class Flushable(Protocol):
    def flush(self, timeout: float | None = None) -> bool: ...
    async def aflush(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the active telemetry lends to decorators and the client."""

    starter: SpanStarter  # starts the decorator spans
    manual_tracer: Tracer
    trace_content: bool
    owner: Flushable


runtime: Runtime | None = None
