"""`KeywordsAIClient`: read and update the current span from anywhere in user code."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer
from opentelemetry.util.types import Attributes

from . import _state
from ._params import attribute_value, params_to_attributes

logger = logging.getLogger("keywordsai_tracing")

__all__ = ["KeywordsAIClient", "get_client"]

_NOOP_TRACER = trace.NoOpTracer()


class KeywordsAIClient:
    """Access to the current span and context; every method is safe to call anywhere.

    With no active span (or before `KeywordsAITelemetry` is created) each method logs a
    warning and returns False/None; none raises.
    """

    __slots__ = ()

    def get_current_span(self) -> Span | None:
        """The current recording span, or None."""
        if _state.runtime is None:
            logger.warning("KeywordsAI telemetry is not initialised or is disabled")
            return None
        span = trace.get_current_span()
        if not span.is_recording():
            logger.warning("No active span")
            return None
        return span

    def get_current_trace_id(self) -> str | None:
        """The current trace id as 32 lowercase hex characters, or None."""
        span = self.get_current_span()
        return None if span is None else format(span.get_span_context().trace_id, "032x")

    def get_current_span_id(self) -> str | None:
        """The current span id as 16 lowercase hex characters, or None."""
        span = self.get_current_span()
        return None if span is None else format(span.get_span_context().span_id, "016x")

    def get_tracer(self) -> Tracer:
        """A tracer for manual spans (always exported); a no-op tracer when disabled."""
        runtime = _state.runtime
        if runtime is None:
            logger.warning("KeywordsAI telemetry is not initialised or is disabled")
            return _NOOP_TRACER
        return runtime.manual_tracer

    def update_current_span(
        self,
        keywordsai_params: Any = None,
        attributes: Mapping[str, Any] | None = None,
        status: Status | StatusCode | None = None,
        status_description: str | None = None,
        name: str | None = None,
    ) -> bool:
        """Update the current span's KeywordsAI parameters, attributes, status or name."""
        span = self.get_current_span()
        if span is None:
            return False
        try:
            if keywordsai_params is not None:
                span.set_attributes(params_to_attributes(keywordsai_params))
            for key, value in (attributes or {}).items():
                converted = attribute_value(value)
                if converted is None:
                    logger.warning(
                        "Attribute %r ignored: %s is not a valid attribute value",
                        key,
                        type(value).__name__,
                    )
                else:
                    span.set_attribute(key, converted)
            if isinstance(status, StatusCode):
                status = Status(status, status_description)
            if status is not None:
                span.set_status(status)
            if name is not None:
                span.update_name(name)
        except Exception:
            logger.exception("Could not update the current span")
            return False
        return True

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> bool:
        """Add an event to the current span."""
        span = self.get_current_span()
        if span is None:
            return False
        try:
            span.add_event(name, attributes, timestamp)
        except Exception:
            logger.exception("Could not add event %r", name)
            return False
        return True

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> bool:
        """Record ``exception`` on the current span and set its status to ERROR."""
        span = self.get_current_span()
        if span is None:
            return False
        try:
            span.record_exception(exception, attributes, timestamp, escaped)
            span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))
        except Exception:
            logger.exception("Could not record the exception")
            return False
        return True

    def is_recording(self) -> bool:
        """Whether there is a current span that is recording."""
        return _state.runtime is not None and trace.get_current_span().is_recording()

    def get_context_value(self, key: str) -> Any:
        """A value from the current OpenTelemetry context, or None."""
        return context_api.get_value(key)

    def set_context_value(self, key: str, value: Any) -> bool:
        """Set a value in the current context (it ends with the enclosing span's scope)."""
        try:
            context_api.attach(context_api.set_value(key, value))
        except Exception:
            logger.exception("Could not set context value %r", key)
            return False
        return True

    def flush(self) -> bool:
        """Export every span ended so far; True when all were delivered."""
        runtime = _state.runtime
        if runtime is None:
            logger.warning("KeywordsAI telemetry is not initialised or is disabled")
            return False
        return runtime.owner.flush()

    async def aflush(self) -> bool:
        """Awaitable `flush` that never blocks the event loop."""
        runtime = _state.runtime
        if runtime is None:
            logger.warning("KeywordsAI telemetry is not initialised or is disabled")
            await asyncio.sleep(0)
            return False
        return await runtime.owner.aflush()


_CLIENT = KeywordsAIClient()


def get_client() -> KeywordsAIClient:
    """The `KeywordsAIClient` (stateless; it always reads the current context)."""
    return _CLIENT
