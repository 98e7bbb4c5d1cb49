"""Exporters for seeing traces without any backend.

- `ConsoleTraceExporter` prints each finished trace as an indented tree.
- `JsonLinesFileExporter` appends one OTLP/JSON span per line to a file; `read_spans`
  reads such a file back.
- `exporter_from_spec` builds either from ``"console"`` or ``"jsonl:<path>"``.
- `OTLPHttpExporter` is the asyncio OTLP/HTTP exporter (JSON or protobuf, gzip, retries)
  that `KeywordsAITelemetry` sends with; use it to send to another collector as well::

      telemetry.add_processor(OTLPHttpExporter("http://localhost:4318/v1/traces"))

Pass one as ``custom_exporter`` (or to ``add_processor``)::

    from keywordsai_tracing import KeywordsAITelemetry
    from keywordsai_tracing.exporters import ConsoleTraceExporter

    telemetry = KeywordsAITelemetry(custom_exporter=ConsoleTraceExporter())
"""

from keywordsai_tracing._exporter import OTLPHttpExporter

from ._console import ConsoleTraceExporter
from ._jsonl import JsonLinesFileExporter, read_spans
from ._spec import exporter_from_spec
from ._tree import format_duration

__all__ = [
    "ConsoleTraceExporter",
    "JsonLinesFileExporter",
    "OTLPHttpExporter",
    "exporter_from_spec",
    "format_duration",
    "read_spans",
]
