"""Test helpers for code traced with keywordsai_tracing.

`StandInLLMServer` is a loopback server speaking the OpenAI and Anthropic HTTP APIs, so the
real clients (and their auto-instrumentation) can be exercised without network or keys.
`CapturedSpans` is what the pytest plugin's ``keywordsai_spans`` fixture returns (the
plugin, ``keywordsai_tracing.testing.pytest_plugin``, is registered as a pytest11 entry
point and does nothing unless a test uses its fixtures).
"""

from __future__ import annotations

from ._capture import CapturedSpans
from .llm_server import InjectedFailure, RecordedRequest, StandInLLMServer, reply_text

__all__ = ["CapturedSpans", "InjectedFailure", "RecordedRequest", "StandInLLMServer", "reply_text"]
