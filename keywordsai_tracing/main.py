"""``from keywordsai_tracing.main import KeywordsAITelemetry`` (the incumbent's tutorial path)."""

from ._client import KeywordsAIClient, get_client
from ._telemetry import KeywordsAITelemetry

__all__ = ["KeywordsAIClient", "KeywordsAITelemetry", "get_client"]
