"""`OTLPHttpExporter`: KeywordsAI noise filter, OTLP encoding, one POST per attempt.

Encoding (`_otlp_json`), retry policy (`_retry`) and HTTP (`_transport`) are separate
pieces; this module wires them together on the event loop that awaits it. Driven by the
export engine it is an `AttemptExporter`: ``aprepare`` filters and encodes a batch once,
``asend`` makes one attempt and classifies the answer, and the engine runs the retries.
``aexport`` does the whole job (retries included) for use on its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from opentelemetry import context
from opentelemetry.sdk.trace import ReadableSpan

from . import _otlp_json
from ._config import Compression, Protocol, Settings
from ._export_types import Attempt, Prepared
from ._noise import drop_noise
from ._retry import RetryPolicy, is_retryable
from ._transport import USER_AGENT, AiohttpTransport, Response, Transport, TransportFailure

logger = logging.getLogger("keywordsai_tracing.exporter")

_CONTENT_TYPES: Final = {"http/json": "application/json", "http/protobuf": "application/x-protobuf"}
# Batches a processor may have in flight at once (the default transport keeps as many
# connections): a POST round trip spans several turns of a busy event loop.
CONCURRENT_EXPORTS: Final = 4


class RateLimitedLog:
    """Logs a WARNING once per distinct cause per ``interval`` seconds."""

    def __init__(
        self,
        log: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def warning(self, cause: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``cause`` was logged within the interval."""
        now = self._clock()
        with self._lock:
            last = self._last.get(cause)
            if last is not None and now - last < self._interval:
                return False
            if len(self._last) > 256:  # bounded: forget causes older than the interval
                self._last = {k: t for k, t in self._last.items() if now - t < self._interval}
            self._last[cause] = now
        self._log.warning(msg, *args)
        return True


def _partial_success(response: Response, protobuf: bool) -> tuple[int, str]:
    """``(rejectedSpans, errorMessage)`` from a 2xx body; ``(0, "")`` when absent."""
    if not response.body:
        return 0, ""
    content_type = (response.header("Content-Type") or "").lower()
    try:
        if "json" in content_type or (not protobuf and "protobuf" not in content_type):
            data: Any = json.loads(response.body)
            partial = data.get("partialSuccess") if isinstance(data, dict) else None
            if not isinstance(partial, dict):
                return 0, ""
            return int(partial.get("rejectedSpans") or 0), str(partial.get("errorMessage") or "")
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        message = ExportTraceServiceResponse.FromString(response.body)
        return message.partial_success.rejected_spans, message.partial_success.error_message
    except Exception:  # an unreadable body on a 2xx is still an acceptance
        logger.debug("Could not parse the export response body", exc_info=True)
        return 0, ""


def _merge_headers(*layers: Mapping[str, str]) -> dict[str, str]:
    """Later layers win; names compare case-insensitively (one header per name)."""
    merged: dict[str, tuple[str, str]] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name.lower()] = (name, value)
    return dict(merged.values())


def _set_done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class OTLPHttpExporter:
    """Exports spans as OTLP/HTTP (JSON or protobuf) to ``endpoint`` on the running loop.

    ``timeout`` bounds the time one batch may spend in attempts and backoff. ``api_key``
    is sent as ``Authorization: Bearer ...`` and never logged or shown in ``repr``.
    ``headers`` are added to every request and may replace ``User-Agent``;
    ``Authorization`` (when ``api_key`` is given), ``Content-Type`` and
    ``Content-Encoding`` are always ours. Up to ``max_concurrent_exports`` batches may be
    sent at once (a batch processor reads this attribute); an injected ``transport``
    must allow as many requests at once.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        protocol: Protocol = "http/json",
        compression: Compression = "none",
        timeout: float = 10.0,
        filter_noise: bool = True,
        transport: Transport | None = None,
        retry_policy: RetryPolicy | None = None,
        slice_size: int = _otlp_json.SLICE_SIZE,
        log_interval: float = 60.0,
        max_concurrent_exports: int = CONCURRENT_EXPORTS,
    ) -> None:
        if protocol not in _CONTENT_TYPES:
            raise ValueError(f"protocol: expected 'http/json' or 'http/protobuf', got {protocol!r}")
        if compression not in ("gzip", "none"):
            raise ValueError(f"compression: expected 'gzip' or 'none', got {compression!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ValueError(f"timeout: expected a positive number, got {timeout!r}")
        if type(slice_size) is not int or slice_size < 1:
            raise ValueError(f"slice_size: expected a positive integer, got {slice_size!r}")
        if type(max_concurrent_exports) is not int or max_concurrent_exports < 1:
            raise ValueError(
                "max_concurrent_exports: expected a positive integer, "
                f"got {max_concurrent_exports!r}"
            )
        self.endpoint = endpoint
        self.protocol: Protocol = protocol
        self.compression: Compression = compression
        self.timeout = float(timeout)
        self.filter_noise = filter_noise
        self.max_concurrent_exports = max_concurrent_exports
        self.retry_policy = retry_policy if retry_policy is not None else RetryPolicy()
        self._transport: Transport = (
            transport if transport is not None else AiohttpTransport(limit=max_concurrent_exports)
        )
        self._slice_size = slice_size
        self._header_names = sorted(headers or {})
        ours = {"Content-Type": _CONTENT_TYPES[protocol]}
        if compression == "gzip":
            ours["Content-Encoding"] = "gzip"
        if api_key:
            ours["Authorization"] = f"Bearer {api_key}"
        self._headers = _merge_headers({"User-Agent": USER_AGENT}, headers or {}, ours)
        self._warn = RateLimitedLog(logger, log_interval)
        self._lock = threading.Lock()
        self._shutdown = threading.Event()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: Transport | None = None
    ) -> OTLPHttpExporter:
        """An exporter for ``settings.traces_endpoint`` with the resolved options."""
        return cls(
            settings.traces_endpoint,
            api_key=settings.api_key,
            headers=settings.headers,
            protocol=settings.protocol,
            compression=settings.compression,
            timeout=settings.export_timeout,
            filter_noise=settings.filter_noise,
            transport=transport,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(endpoint={self.endpoint!r}, protocol={self.protocol!r}, "
            f"compression={self.compression!r}, timeout={self.timeout!r}, "
            f"filter_noise={self.filter_noise!r}, headers={self._header_names!r})"
        )

    # -- the engine's side: one attempt at a time -----------------------------------------

    async def aprepare(self, spans: Sequence[ReadableSpan]) -> Prepared:
        """Drop noise (if filtering) and encode the rest, yielding to the loop as it goes."""
        kept = drop_noise(spans) if self.filter_noise else spans
        filtered = len(spans) - len(kept)
        if not kept:
            return Prepared(b"", 0, filtered)
        body = await _otlp_json.aencode(
            kept,
            protobuf=self.protocol == "http/protobuf",
            gzip=self.compression == "gzip",
            slice_size=self._slice_size,
        )
        return Prepared(body, len(kept), filtered)

    async def asend(self, prepared: Prepared, timeout: float) -> Attempt:
        """POST ``prepared`` once within ``timeout`` seconds and say what came of it."""
        token = context.attach(
            context.set_value(
                context._SUPPRESS_HTTP_INSTRUMENTATION_KEY,
                True,
                context.set_value(context._SUPPRESS_INSTRUMENTATION_KEY, True),
            )
        )
        try:
            result = await self._transport.post(
                self.endpoint, prepared.payload, self._headers, max(timeout, 0.001)
            )
        except Exception as exc:  # a broken injected transport: not worth retrying
            cause = f"transport error {exc!r}"
            self._warn.warning(f"transport: {type(exc).__name__}", "Export failed: %s", cause)
            return Attempt(cause=cause)
        finally:
            context.detach(token)
        if isinstance(result, TransportFailure):
            return Attempt(
                retry=True,
                refused=result.kind == "refused",
                cause=f"{result.kind} error posting to {self.endpoint}: {result.detail}",
            )
        if 200 <= result.status < 300:
            rejected, message = _partial_success(result, self.protocol == "http/protobuf")
            rejected = min(max(rejected, 0), prepared.sent)
            if rejected or message:
                self._warn.warning(
                    f"partial: {message}",
                    "Collector rejected %d of %d spans: %s",
                    rejected,
                    prepared.sent,
                    message or "(no message)",
                )
            return Attempt(delivered=prepared.sent - rejected, rejected=rejected)
        text = result.body[:200].decode("utf-8", "replace")
        cause = f"{self.endpoint} responded HTTP {result.status}: {text!r}"
        if not is_retryable(result.status):
            self._warn.warning(
                f"HTTP {result.status}",
                "Collector rejected a batch of %d spans (not retried): %s",
                prepared.sent,
                cause,
            )
            return Attempt(rejected=prepared.sent, status=result.status, cause=cause)
        return Attempt(
            retry=True,
            status=result.status,
            retry_after=result.header("Retry-After"),
            cause=cause,
        )

    # -- on its own: the whole job ----------------------------------------------------------

    async def aexport(self, spans: Sequence[ReadableSpan], deadline: float | None = None) -> bool:
        """Filter, encode and deliver ``spans``, retrying within ``timeout`` (and
        ``deadline``, a ``time.monotonic()`` instant); True when the collector accepted
        them. Once `shutdown` is called, at most one more attempt is made."""
        end = time.monotonic() + self.timeout
        if deadline is not None:
            end = min(end, deadline)
        try:
            prepared = await self.aprepare(spans)
        except Exception as exc:
            logger.warning("Could not encode %d spans: %r", len(spans), exc)
            return False
        if not prepared.sent:
            return True
        attempts = 0
        last_cause = ""
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                cause = "export deadline passed"
                if last_cause:  # why the attempts failed, not only that time ran out
                    cause += f"; last attempt: {last_cause}"
                return self._dropped(prepared, cause, attempts)
            attempt = await self.asend(prepared, remaining)
            attempts += 1
            last_cause = attempt.cause
            if not attempt.retry:
                return attempt.delivered > 0
            if self._shutdown.is_set():
                return self._dropped(prepared, attempt.cause, attempts)
            delay = self.retry_policy.next_delay(attempts, attempt.status, end, attempt.retry_after)
            if delay is None:
                return self._dropped(prepared, attempt.cause, attempts)
            logger.debug(
                "Export attempt %d failed (%s); retrying in %.3fs", attempts, attempt.cause, delay
            )
            await self._sleep(delay)

    def _dropped(self, prepared: Prepared, cause: str, attempts: int) -> bool:
        self._warn.warning(
            f"gave up: {cause[:40]}",
            "Dropped a batch of %d spans after %d attempts: %s",
            prepared.sent,
            attempts,
            cause,
        )
        return False

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if `shutdown` is called meanwhile."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        entry = (loop, waiter)
        with self._lock:
            if self._shutdown.is_set():
                return
            self._waiters.add(entry)
        handle = loop.call_later(delay, _set_done, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            with self._lock:
                self._waiters.discard(entry)

    def shutdown(self) -> None:
        """Stop `aexport`'s retries and wake its backoff sleeps (thread-safe, idempotent)."""
        with self._lock:
            self._shutdown.set()
            waiters = list(self._waiters)
        for loop, waiter in waiters:
            try:
                loop.call_soon_threadsafe(_set_done, waiter)
            except RuntimeError:  # that loop is closed; nothing waits there any more
                continue

    async def aclose(self) -> None:
        """Close the transport's resources bound to the running loop (idempotent)."""
        await self._transport.aclose()
