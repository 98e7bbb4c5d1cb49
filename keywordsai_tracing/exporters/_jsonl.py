"""`JsonLinesFileExporter`: one OTLP/JSON span per line of a file, and `read_spans`."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from keywordsai_tracing._otlp_json import encode_json

from ._util import LogOnce

StrPath = str | os.PathLike[str]

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def encode_line(span: ReadableSpan) -> bytes:
    """One line: an OTLP/JSON ``TracesData`` holding just ``span``, its resource and its
    instrumentation scope (the line shape of the OTLP file exporter), newline-terminated."""
    return encode_json((span,)) + b"\n"


class JsonLinesFileExporter(SpanExporter):
    """Append each span to ``path`` as one line of OTLP/JSON.

    Every line stands alone: it is an OTLP/JSON ``TracesData`` (the body of an OTLP/HTTP
    JSON request, and what the OpenTelemetry Collector's ``otlpjsonfile`` receiver reads)
    with one resource, one scope and one span::

        {"resourceSpans":[{"resource":{"attributes":[...]},
          "scopeSpans":[{"scope":{"name":...,"version":...},"spans":[{...}]}]}]}

    The span object is what the KeywordsAI exporter sends. `read_spans` reads the file
    back. The file and its parent directories are created at the first export; each
    export appends its lines with one unbuffered ``O_APPEND`` write (no flush needed), so
    lines from concurrent threads are never mixed, nor, on a local file system, those of
    forked workers sharing the file. `shutdown` closes the file.

    Never raises into the caller: an unwritable path, a full disk or any other error makes
    ``export()`` return FAILURE and is logged once per cause; the next export tries again.
    Writes are blocking file I/O: with ``KeywordsAITelemetry(is_batching_enabled=True)``
    (the default) they run in the export thread, off the event loop.
    """

    def __init__(self, path: StrPath) -> None:
        self._path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._closed = False
        self._torn = False  # the last write stopped mid-line
        self._log_once = LogOnce()

    @property
    def path(self) -> Path:
        """The file spans are appended to."""
        return self._path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append one line per span; FAILURE (logged once per cause) when that fails."""
        try:
            payload = b"".join([encode_line(span) for span in spans])
        except Exception:
            self._log_once("encode", "Could not encode spans for %s", self._path, exc_info=True)
            return SpanExportResult.FAILURE
        with self._lock:
            if self._closed:
                return SpanExportResult.FAILURE
            if not payload:
                return SpanExportResult.SUCCESS
            fd = self._open()
            if fd is None:
                return SpanExportResult.FAILURE
            if self._torn:  # end the partial line, so that only it is unreadable
                payload = b"\n" + payload
            written = 0
            try:
                while written < len(payload):
                    written += os.write(fd, payload[written:])
            except OSError as exc:
                self._torn = self._torn or written > 0
                self._log_once(
                    ("write", exc.errno),
                    "Could not write spans to %s: %s",
                    self._path,
                    exc.strerror or exc,
                )
                return SpanExportResult.FAILURE
            self._torn = False
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing to do: every export is written before it returns."""
        return True

    def shutdown(self) -> None:
        """Close the file; later exports return FAILURE. Idempotent."""
        with self._lock:
            self._closed = True
            fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                self._log_once(("close", exc.errno), "Could not close %s: %s", self._path, exc)

    def _open(self) -> int | None:
        """The open file descriptor, opening (and creating) the file on first use."""
        if self._fd is not None:
            return self._fd
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self._path, _OPEN_FLAGS, 0o666)
        except OSError as exc:
            self._log_once(
                ("open", exc.errno),
                "Could not open %s for spans: %s",
                self._path,
                exc.strerror or exc,
            )
            return None
        return self._fd


def read_spans(path: StrPath, *, skip_invalid: bool = False) -> Iterator[dict[str, Any]]:
    """Yield each span of an OTLP/JSON lines file as a dict.

    Each dict is the OTLP/JSON ``Span`` object (``traceId``, ``name``, ``attributes``, ...)
    plus two keys from its enclosing groups: ``resource`` and ``scope``. Files written by
    `JsonLinesFileExporter` and by the Collector's file exporter both read. An incomplete
    last line (a write cut short) is skipped; any other line that is not JSON raises
    ``ValueError`` naming the file and line, unless ``skip_invalid``.
    """
    with open(Path(path).expanduser(), "rb") as file:
        for number, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                document = json.loads(raw)
                groups = document["resourceSpans"]
            except (ValueError, KeyError, TypeError) as exc:
                if skip_invalid or not raw.endswith(b"\n"):
                    continue
                raise ValueError(f"{path}:{number}: not an OTLP/JSON line ({exc})") from None
            for group in groups:
                resource = group.get("resource", {})
                for scope_group in group.get("scopeSpans", []):
                    scope = scope_group.get("scope", {})
                    for span in scope_group.get("spans", []):
                        yield {**span, "resource": resource, "scope": scope}
