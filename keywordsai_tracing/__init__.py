"""keywordsai_tracing: async-first OpenTelemetry tracing for LLM applications."""

from ._client import KeywordsAIClient, get_client
from ._params import KeywordsAIParams, keywordsai_span_attributes
from ._telemetry import KeywordsAITelemetry
from ._version import __version__
from .decorators import agent, task, tool, workflow
from .instruments import Instruments

__all__ = [
    "Instruments",
    "KeywordsAIClient",
    "KeywordsAIParams",
    "KeywordsAITelemetry",
    "__version__",
    "agent",
    "get_client",
    "keywordsai_span_attributes",
    "task",
    "tool",
    "workflow",
]
