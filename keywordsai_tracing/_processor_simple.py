"""`SimpleAsyncSpanProcessor`: every span goes to the exporter as it ends (no batching).

A sync ``SpanExporter`` is called inline, in the thread and context where the span ended,
so request-scoped ``contextvars`` are visible inside ``export()`` (exporters written for
keywordsai-tracing's ``is_batching_enabled=False`` rely on this). An `AsyncSpanExporter` is
never awaited inline: each span is scheduled, one export at a time and in order, on the
running loop (or the private loop thread when none runs) by the same machinery as
`AsyncBatchSpanProcessor` with batches of one, so flushes, loop shutdowns and forks behave
the same way.
"""

from __future__ import annotations

import asyncio
import threading

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import TraceFlags

from ._export_types import AsyncSpanExporter
from ._processor import AsyncBatchSpanProcessor
from ._processor_ledger import ProcessorStats
from ._processor_util import RateLimitedWarning, check_limits, logger

_SAMPLED = TraceFlags.SAMPLED


class SimpleAsyncSpanProcessor(SpanProcessor):
    """Hand each sampled span to ``exporter`` when it ends.

    With an `AsyncSpanExporter`, up to ``max_queue_size`` spans may wait for their turn;
    each export has ``export_timeout`` seconds.
    """

    def __init__(
        self,
        exporter: AsyncSpanExporter | SpanExporter,
        *,
        max_queue_size: int = 2048,
        export_timeout: float = 30.0,
        exit_flush_timeout: float | None = 5.0,
    ) -> None:
        self._sync: SpanExporter | None = None
        self._async: AsyncBatchSpanProcessor | None = None
        if isinstance(exporter, AsyncSpanExporter):
            self._async = AsyncBatchSpanProcessor(
                exporter,
                max_queue_size=max_queue_size,
                max_export_batch_size=1,
                export_timeout=export_timeout,
                exit_flush_timeout=exit_flush_timeout,
            )
        elif isinstance(exporter, SpanExporter):
            check_limits(max_queue_size, 1, 1.0, export_timeout)
            self._sync = exporter
        else:
            raise TypeError(
                "exporter: expected an AsyncSpanExporter or an opentelemetry SpanExporter, "
                f"got {type(exporter).__name__}"
            )
        self._lock = threading.Lock()
        self._exported = self._failed = 0
        self._shutdown = False
        self._failure_warning = RateLimitedWarning("Span exporter raised while exporting a span")

    @property
    def stats(self) -> ProcessorStats:
        """A snapshot of the counters (for a sync exporter nothing is ever pending)."""
        if self._async is not None:
            return self._async.stats
        with self._lock:
            done = self._exported + self._failed
            return ProcessorStats(done, self._exported, 0, self._failed, self._failed, 0)

    def on_end(self, span: ReadableSpan) -> None:
        """Export ``span`` now (sync exporter) or schedule its export (async exporter)."""
        if self._async is not None:
            self._async.on_end(span)
            return
        if self._shutdown or not span.context.trace_flags & _SAMPLED or self._sync is None:
            return
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            ok = self._sync.export((span,)) is SpanExportResult.SUCCESS
        except Exception:
            self._failure_warning(exc_info=True)
            ok = False
        finally:
            detach(token)
        with self._lock:
            if ok:
                self._exported += 1
            else:
                self._failed += 1

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait for scheduled exports (async exporter) or flush the sync exporter."""
        if self._async is not None:
            return self._async.force_flush(timeout_millis)
        if self._sync is None:
            return True
        # The base SpanExporter.force_flush returns None: only False means failure.
        return self._sync.force_flush(timeout_millis) is not False

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
        if self._sync is not None:
            try:
                self._sync.shutdown()
            except Exception:
                logger.warning("exporter.shutdown() raised", exc_info=True)

    async def ashutdown(self, timeout: float | None = None) -> None:
        """`shutdown` for async code. A sync exporter's ``shutdown()`` runs inline."""
        if self._async is not None:
            await self._async.ashutdown(timeout)
            return
        self.shutdown()
