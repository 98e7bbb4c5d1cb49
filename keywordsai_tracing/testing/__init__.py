"""Test helpers for code traced with keywordsai_tracing.

`StandInLLMServer` is a loopback server speaking the OpenAI and Anthropic HTTP APIs, so the
real clients (and their auto-instrumentation) can be exercised without network or keys.
"""

from __future__ import annotations

from .llm_server import InjectedFailure, RecordedRequest, StandInLLMServer, reply_text

__all__ = ["InjectedFailure", "RecordedRequest", "StandInLLMServer", "reply_text"]
