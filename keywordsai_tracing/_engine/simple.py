"""`SimpleAsyncSpanProcessor`: every span goes to the exporter as it ends (no batching).

A sync exporter is called inline, in the thread and context where the span ended, so
request-scoped ``contextvars`` are visible inside ``export()`` (exporters written for
keywordsai-tracing's ``is_batching_enabled=False`` rely on this). An async exporter is
never awaited inline: each span is scheduled, one export at a time and in order, on the
running loop (or the private loop thread when none runs) by the same machinery as
`AsyncBatchSpanProcessor` with batches of one, so flushes, loop shutdowns, retries and
forks behave the same way.
"""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import TraceFlags

from .channels import Channel, ThreadChannel, channel_for, succeeded
from .processor import AsyncBatchSpanProcessor
from .records import ProcessorStats
from .util import RateLimitedWarning, check_limits, logger

_SAMPLED = TraceFlags.SAMPLED


def _seconds(millis: object) -> object:
    """Milliseconds as seconds for validation; a bad value fails naming the parameter."""
    if isinstance(millis, bool) or not isinstance(millis, int | float) or not millis > 0:
        raise ValueError(f"export_timeout_millis: expected a positive number, got {millis!r}")
    if not math.isfinite(millis):
        raise ValueError(f"export_timeout_millis: expected a positive number, got {millis!r}")
    return millis / 1000


class SimpleAsyncSpanProcessor(SpanProcessor):
    """Hand each sampled span to ``span_exporter`` when it ends (see module docstring).

    With an async exporter, up to ``max_queue_size`` spans may wait for their turn; each
    export has ``export_timeout_millis`` (None: as `AsyncBatchSpanProcessor`).
    """

    def __init__(
        self,
        span_exporter: Any,
        *,
        max_queue_size: int | None = None,
        export_timeout_millis: float | None = None,
        exit_flush_timeout: float | None = 5.0,
    ) -> None:
        check_limits(
            1 if max_queue_size is None else max_queue_size,
            1,
            1.0,
            1.0 if export_timeout_millis is None else _seconds(export_timeout_millis),
        )
        channel: Channel = channel_for(span_exporter, "keywordsai-sync-export")
        self._span_exporter = span_exporter
        self._sync: Any = None
        self._async: AsyncBatchSpanProcessor | None = None
        if isinstance(channel, ThreadChannel):
            self._sync = span_exporter
        else:
            self._async = AsyncBatchSpanProcessor(
                span_exporter,
                max_queue_size=max_queue_size,
                max_export_batch_size=1,
                export_timeout_millis=export_timeout_millis,
                exit_flush_timeout=exit_flush_timeout,
            )
        self._channel = channel
        self._lock = threading.Lock()
        self._delivered = self._failed = self._after_shutdown = 0
        self._shutdown = False
        self._failure_warning = RateLimitedWarning("Span exporter raised while exporting a span")

    @property
    def span_exporter(self) -> Any:
        """The exporter spans are handed to."""
        return self._span_exporter

    @property
    def stats(self) -> ProcessorStats:
        """A snapshot of the counters (for a sync exporter nothing is ever pending)."""
        if self._async is not None:
            return self._async.stats
        with self._lock:
            dropped = self._failed + self._after_shutdown
            return ProcessorStats(
                ended=self._delivered + dropped,
                delivered=self._delivered,
                dropped=dropped,
                failed=self._failed,
                after_shutdown=self._after_shutdown,
            )

    def on_end(self, span: ReadableSpan) -> None:
        """Export ``span`` now (sync exporter) or schedule its export (async exporter)."""
        if self._async is not None:
            self._async.on_end(span)
            return
        if not span.context.trace_flags & _SAMPLED:
            return
        if self._shutdown:
            with self._lock:
                self._after_shutdown += 1
            return
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            ok = succeeded(self._sync.export((span,)))
        except Exception:
            self._failure_warning(exc_info=True)
            ok = False
        finally:
            detach(token)
        with self._lock:
            if ok:
                self._delivered += 1
            else:
                self._failed += 1

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait for scheduled exports (async exporter) or flush the sync exporter."""
        if self._async is not None:
            return self._async.force_flush(timeout_millis)
        flush = getattr(self._sync, "force_flush", None)
        if not callable(flush):
            return True
        try:
            # The base SpanExporter.force_flush returns None: only False means failure.
            ok = flush(timeout_millis) is not False
        except Exception:
            logger.warning("exporter.force_flush() raised", exc_info=True)
            ok = False
        if not ok:
            logger.warning("Flush incomplete: exporter.force_flush() failed")
        return ok

    def flush_past_blocked_loop(
        self, loop: asyncio.AbstractEventLoop | None, timeout_millis: int
    ) -> bool:
        """See `AsyncBatchSpanProcessor.flush_past_blocked_loop` (a sync exporter has
        nothing pending: its ``export()`` ran inline)."""
        if self._async is not None:
            return self._async.flush_past_blocked_loop(loop, timeout_millis)
        return True

    async def aflush(self, timeout: float | None = None) -> bool:
        """Await scheduled exports; a sync exporter has none pending (``export()`` ran
        inline), so its own ``force_flush`` is not called from the event loop."""
        if self._async is not None:
            return await self._async.aflush(timeout)
        return True

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Deliver what is scheduled, then shut the exporter down. Idempotent."""
        if self._async is not None:
            self._async.shutdown(timeout_millis)
            return
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
        self._channel.shutdown_exporter(timeout_millis)

    def shutdown_at_exit(self, timeout_millis: float) -> None:
        """Interpreter exit (see `AsyncBatchSpanProcessor.shutdown_at_exit`)."""
        if self._async is not None:
            self._async.shutdown_at_exit(timeout_millis)
            return
        self.shutdown(timeout_millis)

    async def ashutdown(self, timeout: float | None = None) -> None:
        """`shutdown` for async code. A sync exporter's ``shutdown()`` runs inline."""
        if self._async is not None:
            await self._async.ashutdown(timeout)
            return
        self.shutdown()
