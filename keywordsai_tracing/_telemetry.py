"""`KeywordsAITelemetry`: resolve settings, wire provider, pipeline and instrumentors."""

from __future__ import annotations

import asyncio
import atexit
import logging
import math
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    TELEMETRY_SDK_LANGUAGE,
    TELEMETRY_SDK_NAME,
    TELEMETRY_SDK_VERSION,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.version import __version__ as _sdk_version

from . import _instrumentation, _state
from ._attributes import DECORATOR_TRACER_NAME, MANUAL_TRACER_NAME
from ._client import KeywordsAIClient, get_client
from ._config import Settings
from ._export_types import AsyncSpanExporter
from ._exporting import default_exporter, export_processor, filters_noise
from ._fast_span import SpanStarter
from ._pipeline import Dispatcher, Pipeline, Route, SpanFilter
from ._signals import SigtermFlush
from ._stats import TelemetryStats, collect
from ._unrecorded import GatedTracerProvider
from ._version import __version__
from .exporters import exporter_from_spec
from .instruments import Instruments

logger = logging.getLogger("keywordsai_tracing")

__all__ = ["KeywordsAITelemetry"]

_lock = threading.RLock()
_active: KeywordsAITelemetry | None = None
_providers_with_dispatcher: weakref.WeakSet[SDKTracerProvider] = weakref.WeakSet()
_owned_providers: weakref.WeakSet[SDKTracerProvider] = weakref.WeakSet()


def _resource(settings: Settings) -> Resource:
    """SDK attributes, then ``OTEL_RESOURCE_ATTRIBUTES``, then ours (``service.name`` last).

    Built without ``Resource.create``, whose detector thread pool would block an event
    loop when the telemetry is created inside one (a FastAPI lifespan, say).
    """
    sdk = Resource(
        {
            TELEMETRY_SDK_LANGUAGE: "python",
            TELEMETRY_SDK_NAME: "opentelemetry",
            TELEMETRY_SDK_VERSION: _sdk_version,
        }
    )
    ours = Resource({**settings.resource_attributes, SERVICE_NAME: settings.app_name})
    return sdk.merge(OTELResourceDetector().detect()).merge(ours)


def _provider_for(settings: Settings) -> SDKTracerProvider:
    """The application's SDK provider if it installed one, else a provider of ours."""
    current = trace.get_tracer_provider()
    if isinstance(current, SDKTracerProvider) and current not in _owned_providers:
        logger.info("Adding KeywordsAI processors to the application's TracerProvider")
        provider = current
    else:
        # Ours: its third-party tracers skip what no destination wants (`_unrecorded`).
        provider = GatedTracerProvider(resource=_resource(settings), shutdown_on_exit=False)
        _owned_providers.add(provider)
        if isinstance(current, trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
    if provider not in _providers_with_dispatcher:
        provider.add_span_processor(Dispatcher())
        _providers_with_dispatcher.add(provider)
    return provider


class KeywordsAITelemetry:
    """Initialise KeywordsAI tracing once at start-up.

    Parameters, environment variables and defaults are those of keywordsai-tracing
    (see README): ``app_name``, ``api_key`` (``KEYWORDSAI_API_KEY``), ``base_url``
    (``KEYWORDSAI_BASE_URL``), ``log_level`` (``KEYWORDSAI_LOG_LEVEL``, default INFO),
    ``is_batching_enabled`` (``KEYWORDSAI_BATCHING_ENABLED``), ``instruments``,
    ``block_instruments``, ``headers``, ``resource_attributes``,
    ``span_postprocess_callback``, ``is_enabled`` and ``custom_exporter``. Further
    keyword-only settings: ``trace_content`` (``KEYWORDSAI_TRACE_CONTENT``) turns input and
    output capture off, ``filter_noise`` (``KEYWORDSAI_FILTER_NOISE``) keeps bare
    auto-instrumented spans, ``flush_on_sigterm`` (``KEYWORDSAI_FLUSH_ON_SIGTERM``,
    default on) delivers queued spans when SIGTERM ends the process (uvicorn's shutdown
    skips ``atexit``), ``shutdown_timeout`` (``KEYWORDSAI_SHUTDOWN_TIMEOUT``, 5 s) is the
    one budget of interpreter exit, SIGTERM and `shutdown` called without a timeout,
    ``local_exporter`` (``KEYWORDSAI_EXPORTER``: ``console`` or
    ``jsonl:<path>``) shows traces locally as well, and the OTLP settings ``protocol``,
    ``compression``, ``export_timeout``, ``schedule_delay``, ``max_queue_size``,
    ``max_export_batch_size``.
    Invalid arguments raise ``ValueError``/``TypeError`` naming the parameter.

    One instance is active per process. Creating another shuts the previous one down
    (its queued spans are flushed, its instrumentors removed) and makes the new one
    active; decorators and `get_client()` always use the active instance, so nothing is
    exported twice and decorated functions keep working.

    If the application already installed an OpenTelemetry SDK ``TracerProvider``, spans
    are exported through it as well (its resource is kept); otherwise this instance
    installs its own provider globally.
    """

    def __init__(
        self,
        app_name: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        log_level: str | int | None = None,
        is_batching_enabled: bool | None = None,
        instruments: set[Instruments] | None = None,
        block_instruments: set[Instruments] | None = None,
        headers: dict[str, str] | None = None,
        resource_attributes: dict[str, str] | None = None,
        span_postprocess_callback: Callable[[ReadableSpan], None] | None = None,
        is_enabled: bool = True,
        custom_exporter: SpanExporter | None = None,
        *,
        trace_content: bool | None = None,
        filter_noise: bool | None = None,
        flush_on_sigterm: bool | None = None,
        shutdown_timeout: float | None = None,
        local_exporter: str | None = None,
        protocol: str | None = None,
        compression: str | None = None,
        export_timeout: float | None = None,
        schedule_delay: float | None = None,
        max_queue_size: int | None = None,
        max_export_batch_size: int | None = None,
    ) -> None:
        self._settings = Settings.resolve(
            app_name=app_name,
            api_key=api_key,
            base_url=base_url,
            log_level=log_level,
            is_batching_enabled=is_batching_enabled,
            instruments=instruments,
            block_instruments=block_instruments,
            headers=headers,
            resource_attributes=resource_attributes,
            span_postprocess_callback=span_postprocess_callback,
            is_enabled=is_enabled,
            custom_exporter=custom_exporter,
            trace_content=trace_content,
            filter_noise=filter_noise,
            flush_on_sigterm=flush_on_sigterm,
            shutdown_timeout=shutdown_timeout,
            local_exporter=local_exporter,
            protocol=protocol,
            compression=compression,
            export_timeout=export_timeout,
            schedule_delay=schedule_delay,
            max_queue_size=max_queue_size,
            max_export_batch_size=max_export_batch_size,
        )
        settings = self._settings
        logging.getLogger("keywordsai_tracing").setLevel(settings.log_level)
        self._closed = False
        self._dropped_reported = 0
        self._instrumentors: list[Any] = []
        self._content = _instrumentation.ContentSwitch()
        self._pipeline = Pipeline(settings.span_postprocess_callback)
        self._provider: SDKTracerProvider | None = None
        self._sigterm = SigtermFlush(
            self._pipeline.flush_past_blocked_loop, settings.shutdown_timeout
        )
        global _active
        with _lock:
            previous, _active = _active, None
        if previous is not None:
            logger.info("A new KeywordsAITelemetry replaces the active one; shutting it down")
            _retire(previous)
        if not settings.is_enabled:
            logger.info("KeywordsAI tracing is disabled: decorators run without spans")
            return
        exporter = default_exporter(settings)
        if exporter is not None:
            processor = self._make_processor(exporter, None)
            self._pipeline.add_route(Route(processor, drops_noise=filters_noise(exporter)))
        if settings.local_exporter is not None:
            local = exporter_from_spec(settings.local_exporter)
            self._pipeline.add_route(Route(self._make_processor(local, None)))
        if exporter is None and settings.local_exporter is None:
            logger.warning(
                "No api_key and no custom_exporter: spans are traced but not exported "
                "(set KEYWORDSAI_API_KEY, or pass custom_exporter=)"
            )
        self._provider = _provider_for(settings)
        starter = SpanStarter(self._provider.get_tracer(DECORATOR_TRACER_NAME, __version__))
        with _lock:
            _active = self
            Dispatcher.active = self._pipeline
            _state.runtime = _state.Runtime(
                starter=starter,
                manual_tracer=self._provider.get_tracer(MANUAL_TRACER_NAME, __version__),
                trace_content=settings.trace_content,
                owner=self,
            )
        if settings.flush_on_sigterm:
            self._sigterm.install()
        if not settings.trace_content:
            self._content.silence()
        members = _instrumentation.selected(settings.instruments, settings.block_instruments)
        self._instrumentors = _instrumentation.instrument(members, self._provider)

    # -- configuration -------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The resolved configuration (the API key is never shown in its repr)."""
        return self._settings

    def __repr__(self) -> str:
        state = "closed" if self._closed else "enabled" if self.is_enabled else "disabled"
        return (
            f"{type(self).__name__}(app_name={self._settings.app_name!r}, "
            f"endpoint={self._settings.traces_endpoint!r}, {state})"
        )

    @property
    def is_enabled(self) -> bool:
        """Whether this instance traces (False when disabled by argument or environment)."""
        return self._settings.is_enabled

    def is_initialized(self) -> bool:
        """True while this instance is the active, enabled telemetry."""
        return _active is self and not self._closed

    def get_client(self) -> KeywordsAIClient:
        """The `KeywordsAIClient` (same as the module-level `get_client()`)."""
        return get_client()

    @property
    def stats(self) -> TelemetryStats:
        """The SDK's own counters: queued, exported, dropped, failed, retries, ..."""
        return collect(
            (route.processor for route in self._pipeline.routes),
            not_recorded=self._pipeline.not_recorded,
        )

    def _make_processor(self, exporter: Any, batching: bool | None) -> SpanProcessor:
        use_batching = self._settings.is_batching_enabled if batching is None else batching
        return export_processor(exporter, use_batching, self._settings)

    def add_processor(
        self,
        exporter: SpanExporter | AsyncSpanExporter,
        name: str | None = None,
        filter_fn: SpanFilter | None = None,
        is_batching_enabled: bool | None = None,
    ) -> None:
        """Send spans to another exporter as well.

        With ``name``, only spans whose decorator (or an enclosing one) said
        ``processors=name`` go there; ``filter_fn(span) -> bool`` narrows further.
        """
        if not isinstance(exporter, SpanExporter | AsyncSpanExporter):
            raise TypeError("exporter: expected an opentelemetry SpanExporter")
        if name is not None and (not isinstance(name, str) or not name or "," in name):
            raise ValueError("name: expected a non-empty string without commas")
        if filter_fn is not None and not callable(filter_fn):
            raise TypeError("filter_fn: expected a callable")
        if not self.is_enabled or self._closed:
            logger.warning("add_processor ignored: telemetry is disabled or shut down")
            return
        processor = self._make_processor(exporter, is_batching_enabled)
        self._pipeline.add_route(Route(processor, name, filter_fn))

    # -- lifecycle -----------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every span ended so far is delivered or dropped (``timeout``
        seconds, default 30); True only if all were delivered."""
        if not self.is_enabled or self._closed:
            return True
        ok = self._pipeline.force_flush(int(self._timeout(timeout, "flush") * 1000))
        self._report("flush", ok)
        return ok

    async def aflush(self, timeout: float | None = None) -> bool:
        """`flush` for async code: awaits delivery without blocking the event loop."""
        if not self.is_enabled or self._closed:
            return True
        ok = await self._pipeline.aflush(self._timeout(timeout, "flush"))
        self._report("aflush", ok)
        return ok

    def _report(self, what: str, delivered: bool | None = None) -> None:
        """Counters at DEBUG; spans lost to a full queue since the last report at WARNING."""
        stats = self.stats
        logger.debug("%s: delivered=%s %s", what, delivered, stats)
        full = stats.queue_full
        dropped, self._dropped_reported = full - self._dropped_reported, full
        if dropped > 0:
            logger.warning(
                "%d spans were dropped because the export queue was full (%d in all); "
                "raise max_queue_size or OTEL_BSP_MAX_QUEUE_SIZE",
                dropped,
                full,
            )

    def _timeout(self, timeout: float | None, what: str) -> float:
        """``timeout`` checked, or the default: ``OTEL_BSP_EXPORT_TIMEOUT`` (30 s) for a
        flush, ``shutdown_timeout`` (5 s) for a shutdown."""
        if timeout is None:
            settings = self._settings
            return settings.batch_timeout if what == "flush" else settings.shutdown_timeout
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not timeout >= 0
            or not math.isfinite(timeout)
        ):
            raise ValueError(f"timeout: expected a non-negative number, got {timeout!r}")
        return float(timeout)

    def _close(self) -> bool:
        """Stop tracing through this instance; False if it was already closed."""
        global _active
        with _lock:
            if self._closed:
                return False
            self._closed = True
            if _active is self:
                _active = None
                _state.runtime = None
                Dispatcher.active = None
        self._sigterm.uninstall()
        self._content.restore()
        _instrumentation.uninstrument(self._instrumentors)
        self._instrumentors = []
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        """Deliver what is pending within ``timeout`` seconds (default ``shutdown_timeout``,
        5 s), then stop exporting and remove instrumentation; what is left is counted as
        dropped. Idempotent. From a coroutine this blocks its event loop: async code
        should ``await ashutdown()``."""
        budget = self._timeout(timeout, "shutdown")
        if self._close():
            self._pipeline.shutdown(int(budget * 1000))
            self._report("shutdown")

    async def ashutdown(self, timeout: float | None = None) -> None:
        """`shutdown` for async code: awaits delivery without blocking the event loop."""
        budget = self._timeout(timeout, "shutdown")
        if self._close():
            await self._pipeline.ashutdown(budget)
            self._report("ashutdown")

    def _shutdown_at_exit(self) -> None:
        """Interpreter exit: deliver within ``shutdown_timeout``, from the private thread."""
        if self._close():
            self._pipeline.shutdown(int(self._settings.shutdown_timeout * 1000), at_exit=True)
            self._report("exit")

    def __enter__(self) -> KeywordsAITelemetry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    async def __aenter__(self) -> KeywordsAITelemetry:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.ashutdown()


def _retire(previous: KeywordsAITelemetry) -> None:
    """Shut a replaced instance down; in async code without blocking the loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        previous.shutdown()
        return
    if previous._close():  # stops its spans now; its queue drains in the background
        threading.Thread(
            target=previous._pipeline.shutdown,
            args=(int(previous._settings.shutdown_timeout * 1000),),
            name="keywordsai-retire",
            daemon=True,
        ).start()


def _shutdown_active() -> None:
    telemetry = _active
    if telemetry is not None:
        telemetry._shutdown_at_exit()


atexit.register(_shutdown_active)
