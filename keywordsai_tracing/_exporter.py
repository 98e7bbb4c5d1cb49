"""`OTLPHttpExporter`: KeywordsAI noise filter, OTLP encoding, POST with retries.

Encoding (`_otlp_json`), retry policy (`_retry`) and HTTP (`_transport`) are separate
pieces; this module wires them together on the event loop that awaits `aexport`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import context
from opentelemetry.sdk.trace import ReadableSpan

from . import _otlp_json
from ._config import Compression, Protocol, Settings
from ._noise import drop_noise
from ._retry import RetryPolicy, is_retryable
from ._transport import USER_AGENT, AiohttpTransport, Response, Transport, TransportFailure

logger = logging.getLogger("keywordsai_tracing.exporter")

_CONTENT_TYPES: Final = {"http/json": "application/json", "http/protobuf": "application/x-protobuf"}
_BREAKER_THRESHOLD: Final = 3  # consecutive failed attempts: the collector is known down
# Batches a processor may have in flight at once (the default transport keeps as many
# connections): a POST round trip spans several turns of a busy event loop.
CONCURRENT_EXPORTS: Final = 4


@dataclass(frozen=True)
class ExporterStats:
    """A snapshot of the exporter's counters."""

    spans_exported: int = 0
    spans_filtered: int = 0
    batches_failed: int = 0
    spans_failed: int = 0
    retries: int = 0
    spans_rejected: int = 0  # reported by the collector as a partial success


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


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    """Cut backoff sleeps short, on whichever loops they sleep."""
    for loop, waiter in waiters:
        try:
            loop.call_soon_threadsafe(_set_done, waiter)
        except RuntimeError:  # that loop is closed; nothing waits there any more
            continue


class OTLPHttpExporter:
    """Exports spans as OTLP/HTTP (JSON or protobuf) to ``endpoint`` on the running loop.

    ``timeout`` bounds one `aexport` (all attempts and backoff). ``api_key`` is sent as
    ``Authorization: Bearer ...`` and never logged or shown in ``repr``. ``headers`` are
    added to every request and may replace ``User-Agent``; ``Authorization`` (when
    ``api_key`` is given), ``Content-Type`` and ``Content-Encoding`` are always ours.
    ``aexport`` may run up to ``max_concurrent_exports`` times at once (a batch processor
    reads this attribute); an injected ``transport`` must allow as many requests at once.
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
        if timeout <= 0:
            raise ValueError(f"timeout: expected a positive number, got {timeout!r}")
        if slice_size < 1:
            raise ValueError(f"slice_size: expected a positive integer, got {slice_size!r}")
        if type(max_concurrent_exports) is not int or max_concurrent_exports < 1:
            raise ValueError(
                "max_concurrent_exports: expected a positive integer, "
                f"got {max_concurrent_exports!r}"
            )
        self.endpoint = endpoint
        self.protocol: Protocol = protocol
        self.compression: Compression = compression
        self.timeout = timeout
        self.filter_noise = filter_noise
        self.max_concurrent_exports = max_concurrent_exports
        self._transport: Transport = (
            transport if transport is not None else AiohttpTransport(limit=max_concurrent_exports)
        )
        self._policy = retry_policy if retry_policy is not None else RetryPolicy()
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
        self._consecutive_failures = 0
        self._gave_up = False  # a batch exhausted its retries; none accepted since
        self._stats = ExporterStats()

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

    @property
    def stats(self) -> ExporterStats:
        """The counters so far (a frozen snapshot)."""
        return self._stats

    @property
    def collector_down(self) -> bool:
        """True after several consecutive failed attempts (the circuit breaker is open)."""
        return self._consecutive_failures >= _BREAKER_THRESHOLD

    def _count(self, **increments: int) -> None:
        with self._lock:
            current = self._stats
            values = {k: getattr(current, k) + v for k, v in increments.items()}
            self._stats = dataclasses.replace(current, **values)

    async def aexport(self, spans: Sequence[ReadableSpan], deadline: float | None = None) -> bool:
        """Filter, encode and deliver ``spans``; True when the collector accepted them.

        Runs with instrumentation suppressed so the exporter's own request is never traced.
        """
        token = context.attach(
            context.set_value(
                context._SUPPRESS_HTTP_INSTRUMENTATION_KEY,
                True,
                context.set_value(context._SUPPRESS_INSTRUMENTATION_KEY, True),
            )
        )
        try:
            return await self._export(spans, deadline)
        finally:
            context.detach(token)

    async def _export(self, spans: Sequence[ReadableSpan], deadline: float | None) -> bool:
        if self.filter_noise:
            kept = drop_noise(spans)
            if len(kept) != len(spans):
                self._count(spans_filtered=len(spans) - len(kept))
        else:
            kept = list(spans)
        if not kept:
            return True
        end = time.monotonic() + self.timeout
        if deadline is not None:
            end = min(end, deadline)
        try:
            body = await _otlp_json.aencode(
                kept,
                protobuf=self.protocol == "http/protobuf",
                gzip=self.compression == "gzip",
                slice_size=self._slice_size,
            )
        except Exception as exc:
            return self._fail(kept, f"encoding: {type(exc).__name__}", "could not encode: %r", exc)
        return await self._deliver(kept, body, end)

    async def _deliver(self, spans: list[ReadableSpan], body: bytes, end: float) -> bool:
        attempt = 0
        final_try = False  # once shut down: at most one more attempt, none if known down
        cause = kind = ""
        while True:
            if self._shutdown.is_set():
                if final_try or (attempt and self.collector_down):
                    return self._fail(spans, "shutdown", "%s; not retried after shutdown", cause)
                final_try = True
            remaining = end - time.monotonic()
            if remaining <= 0 and attempt:
                return self._give_up(spans, kind, cause, attempt)
            if remaining <= 0:
                return self._fail(spans, "deadline", "export deadline passed before an attempt")
            if attempt:
                self._count(retries=1)
            attempt += 1
            try:
                result = await self._transport.post(self.endpoint, body, self._headers, remaining)
            except Exception as exc:  # a broken injected transport: do not retry
                return self._fail(
                    spans, f"transport: {type(exc).__name__}", "transport error %r", exc
                )
            if isinstance(result, Response):
                if 200 <= result.status < 300:
                    self._accepted(spans, result)
                    return True
                status, kind = result.status, f"HTTP {result.status}"
                retry_after = result.header("Retry-After")
            else:
                status, kind, retry_after = None, result.kind, None
            cause = self._describe(result)
            if not is_retryable(status):
                return self._fail(spans, kind, "%s (not retryable)", cause)
            with self._lock:
                self._consecutive_failures += 1
                gave_up_before = self._gave_up
            if gave_up_before:
                # The last batch exhausted its retries and nothing got through since: one
                # probe per batch until the collector answers, so an outage drains the
                # queue in milliseconds instead of an export timeout per batch.
                return self._fail(spans, kind, "%s; collector still down, not retried", cause)
            if self._shutdown.is_set():
                continue  # the top of the loop decides on a final try
            delay = self._policy.next_delay(attempt, status, end, retry_after)
            if delay is None:
                return self._give_up(spans, kind, cause, attempt)
            logger.debug("Export attempt %d failed (%s); retrying in %.3fs", attempt, cause, delay)
            await self._sleep(delay)

    def _give_up(self, spans: list[ReadableSpan], kind: str, cause: str, attempt: int) -> bool:
        with self._lock:
            self._gave_up = True
            waiters = list(self._waiters)
        # Batches in flight alongside, asleep in backoff, try once more now and stop: the
        # collector is known down, and a flush should not wait out their backoffs.
        _wake(waiters)
        return self._fail(
            spans, f"gave up: {kind}", "%s; gave up after %d attempts", cause, attempt
        )

    def _describe(self, result: Response | TransportFailure) -> str:
        if isinstance(result, TransportFailure):
            return f"{result.kind} error posting to {self.endpoint}: {result.detail}"
        text = result.body[:200].decode("utf-8", "replace")
        return f"{self.endpoint} responded HTTP {result.status}: {text!r}"

    def _accepted(self, spans: list[ReadableSpan], response: Response) -> None:
        with self._lock:
            self._consecutive_failures = 0
            self._gave_up = False
        rejected, message = _partial_success(response, self.protocol == "http/protobuf")
        rejected = min(max(rejected, 0), len(spans))
        if rejected or message:
            self._warn.warning(
                f"partial: {message}",
                "Collector rejected %d of %d spans: %s",
                rejected,
                len(spans),
                message or "(no message)",
            )
        self._count(spans_exported=len(spans) - rejected, spans_rejected=rejected)

    def _fail(self, spans: list[ReadableSpan], cause: str, msg: str, *args: object) -> bool:
        self._count(batches_failed=1, spans_failed=len(spans))
        self._warn.warning(cause, "Dropped a batch of %d spans: " + msg, len(spans), *args)
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
        """Stop retrying and wake every backoff sleep (thread-safe, idempotent)."""
        with self._lock:
            self._shutdown.set()
            waiters = list(self._waiters)
        _wake(waiters)

    async def aclose(self) -> None:
        """Close the transport's resources bound to the running loop (idempotent)."""
        await self._transport.aclose()
