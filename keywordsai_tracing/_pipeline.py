"""What happens to a span between the tracer and the exporters.

`Pipeline` is one telemetry instance's processor: on start it stamps auto-instrumented
spans with the enclosing workflow, entity path and routing, and marks those that are
noise with their nearest kept ancestor (`_noise`); on end it runs the user's
post-process callback once and hands the span to each route whose filter accepts it.
`Dispatcher` is the only processor ever added to a `TracerProvider`; it forwards to the
active pipeline, so replacing the telemetry never double-exports.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from . import _attributes as attrs
from ._compact import compact, plain_attributes
from ._noise import note_start
from .integrations import apply_request_params

logger = logging.getLogger("keywordsai_tracing")

SpanFilter = Callable[[ReadableSpan], bool]
# Past a shutdown's budget, how long a route's shutdown may still take to return.
_STOP_GRACE = 0.5


@dataclass(frozen=True, slots=True)
class Route:
    """One destination: a processor, plus which spans it takes."""

    processor: SpanProcessor
    name: str | None = None
    filter_fn: SpanFilter | None = None
    drops_noise: bool = False  # its exporter filters noise (`_noise`)
    takes_all: bool = field(init=False)  # no name, no filter: every span

    def __post_init__(self) -> None:
        object.__setattr__(self, "takes_all", self.name is None and self.filter_fn is None)

    @property
    def wants_noise(self) -> bool:
        """Whether a noise span could reach its exporter. A named route takes only
        spans inside an entity that named it, and those are never noise."""
        return not self.drops_noise and (self.name is None or self.filter_fn is not None)

    @property
    def label(self) -> str:
        return f"processor {self.name!r}" if self.name else "the default processor"

    def accepts(self, span: ReadableSpan) -> bool:
        if self.name is not None:
            routed = (span.attributes or {}).get(attrs.PROCESSORS)
            if not isinstance(routed, str) or self.name not in routed.split(","):
                return False
        return self.filter_fn is None or bool(self.filter_fn(span))


class Pipeline(SpanProcessor):
    """Enrich spans on start; post-process and route them on end."""

    def __init__(self, postprocess: Callable[[ReadableSpan], None] | None = None) -> None:
        self._postprocess = postprocess
        self._routes: tuple[Route, ...] = ()
        # Whether no route wants noise, so tracers need not record it (`_unrecorded`).
        self.skips_noise = True
        self._lock = threading.Lock()
        self._not_recorded = 0

    @property
    def not_recorded(self) -> int:
        """Spans never recorded because no route wanted them (`_unrecorded`)."""
        return self._not_recorded

    def count_not_recorded(self) -> None:
        with self._lock:
            self._not_recorded += 1

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    def add_route(self, route: Route) -> None:
        self._routes = (*self._routes, route)
        self.skips_noise = not any(each.wants_noise for each in self._routes)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        scope = span.instrumentation_scope
        if scope is not None and scope.name == attrs.DECORATOR_TRACER_NAME:
            return  # a decorator span: it starts with its own attributes, request's included
        apply_request_params(span, parent_context)
        current = plain_attributes(span)
        ctx = parent_context if parent_context is not None else context_api.get_current()
        workflow = context_api.get_value(attrs.WORKFLOW_NAME_KEY, ctx)
        path = context_api.get_value(attrs.ENTITY_PATH_KEY, ctx) or workflow
        processors = context_api.get_value(attrs.PROCESSORS_KEY, ctx)
        if workflow and attrs.WORKFLOW_NAME not in current:
            span.set_attribute(attrs.WORKFLOW_NAME, str(workflow))
        if path and attrs.ENTITY_PATH not in current:
            span.set_attribute(attrs.ENTITY_PATH, str(path))
        if processors and attrs.PROCESSORS not in current:
            span.set_attribute(attrs.PROCESSORS, str(processors))
        note_start(span)  # after the stamping, which decides whether the span is noise

    def on_end(self, span: ReadableSpan) -> None:
        if self._postprocess is not None:
            try:
                self._postprocess(span)
            except Exception:
                logger.exception("span_postprocess_callback raised; the span is still exported")
        compact(span)  # after the callback: it gets the span exactly as the SDK made it
        for route in self._routes:
            try:
                if route.takes_all or route.accepts(span):
                    route.processor.on_end(span)
            except Exception:
                logger.exception("Routing span %r to %s failed", span.name, route.label)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._flush_each(
            timeout_millis / 1000, lambda processor, ms: processor.force_flush(ms)
        )

    def flush_past_blocked_loop(
        self, loop: asyncio.AbstractEventLoop | None, timeout: float
    ) -> bool:
        """Flush every route while ``loop``'s thread is blocked (see `SigtermFlush`)."""

        def flush(processor: SpanProcessor, millis: int) -> bool:
            past = getattr(processor, "flush_past_blocked_loop", None)
            return bool(past(loop, millis) if past is not None else processor.force_flush(millis))

        return self._flush_each(timeout, flush)

    def _flush_each(self, timeout: float, flush: Callable[[SpanProcessor, int], bool]) -> bool:
        """``flush(processor, milliseconds left)`` each route, one shared deadline."""
        deadline = time.monotonic() + timeout
        ok = True
        for route in self._routes:
            try:
                ok = flush(route.processor, _millis_until(deadline)) and ok
            except Exception:
                logger.exception("Flushing %s failed", route.label)
                ok = False
        return ok

    async def aflush(self, timeout: float) -> bool:
        """Flush every route concurrently without blocking the running loop."""
        results = await asyncio.gather(*(_aflush(route, timeout) for route in self._routes))
        return all(results)

    def shutdown(self, timeout_millis: int = 30_000, *, at_exit: bool = False) -> None:
        """Shut every route down within one budget, the routes side by side (a collector
        that hangs must not use up a local exporter's time). ``at_exit``: the interpreter
        is exiting, no application loop runs again."""

        def stop(route: Route) -> None:
            processor = route.processor
            try:
                exit_hook = getattr(processor, "shutdown_at_exit", None)
                if at_exit and exit_hook is not None:
                    exit_hook(_millis_until(deadline))
                elif isinstance(processor, _AsyncCapable):
                    processor.shutdown(_millis_until(deadline))
                else:
                    processor.shutdown()
            except Exception:
                logger.exception("Shutting down %s failed", route.label)

        deadline = time.monotonic() + timeout_millis / 1000
        if len(self._routes) < 2:
            for route in self._routes:
                stop(route)
            return
        threads = [
            threading.Thread(target=stop, args=(route,), name="keywordsai-shutdown", daemon=True)
            for route in self._routes
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + _STOP_GRACE)

    async def ashutdown(self, timeout: float) -> None:
        """Shut every route down concurrently without blocking the running loop."""
        await asyncio.gather(*(_ashutdown(route, timeout) for route in self._routes))


@runtime_checkable
class _AsyncCapable(Protocol):
    """Our processors: awaitable flush and shutdown, and a deadline on shutdown."""

    async def aflush(self, timeout: float | None = None) -> bool: ...
    async def ashutdown(self, timeout: float | None = None) -> None: ...
    def shutdown(self, timeout_millis: float = 30_000) -> None: ...


def _millis_until(deadline: float) -> int:
    return int(max(deadline - time.monotonic(), 0.0) * 1000)


async def _aflush(route: Route, timeout: float) -> bool:
    try:
        if isinstance(route.processor, _AsyncCapable):
            return await route.processor.aflush(timeout)
        return await asyncio.to_thread(route.processor.force_flush, int(timeout * 1000))
    except Exception:
        logger.exception("Flushing %s failed", route.label)
        return False


async def _ashutdown(route: Route, timeout: float) -> None:
    try:
        if isinstance(route.processor, _AsyncCapable):
            await route.processor.ashutdown(timeout)
        else:
            await asyncio.to_thread(route.processor.shutdown)
    except Exception:
        logger.exception("Shutting down %s failed", route.label)


class Dispatcher(SpanProcessor):
    """Forwards to whichever `Pipeline` is active; added once per `TracerProvider`."""

    active: Pipeline | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pipeline = Dispatcher.active
        if pipeline is not None:
            try:
                pipeline.on_start(span, parent_context)
            except Exception:
                logger.exception("Enriching span %r failed", span.name)

    def on_end(self, span: ReadableSpan) -> None:
        pipeline = Dispatcher.active
        if pipeline is not None:
            pipeline.on_end(span)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        pipeline = Dispatcher.active
        return True if pipeline is None else pipeline.force_flush(timeout_millis)

    def shutdown(self) -> None:
        pipeline = Dispatcher.active
        if pipeline is not None:
            pipeline.shutdown()
