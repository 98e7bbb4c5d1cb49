"""`exporter_from_spec`: a local exporter from a short text, e.g. an environment value."""

from __future__ import annotations

import sys

from opentelemetry.sdk.trace.export import SpanExporter

from ._console import ConsoleTraceExporter
from ._jsonl import JsonLinesFileExporter

SPEC_HELP = "expected 'console', 'console:stdout', 'console:stderr' or 'jsonl:<path>'"


def exporter_from_spec(spec: str) -> SpanExporter:
    """The exporter ``spec`` names: ``console`` (trees on stdout), ``console:stderr``, or
    ``jsonl:<path>`` (OTLP/JSON lines appended to ``<path>``; ``~`` is expanded).

    Nothing is opened or written until the first export. Raises ``ValueError`` naming
    the spec otherwise.
    """
    if not isinstance(spec, str):
        raise TypeError(f"exporter spec: expected a string, got {type(spec).__name__}")
    kind, sep, argument = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "console":
        target = argument.strip().lower()
        if not sep or target == "stdout":
            return ConsoleTraceExporter()
        if target == "stderr":
            return ConsoleTraceExporter(stream=sys.stderr)
    elif kind == "jsonl" and argument.strip():
        return JsonLinesFileExporter(argument.strip())
    raise ValueError(f"exporter spec {spec!r}: {SPEC_HELP}")
