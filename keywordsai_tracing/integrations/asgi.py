"""ASGI integration (Starlette, FastAPI, any ASGI server): lifespan and request middleware.

Lifespan::

    from fastapi import FastAPI
    from keywordsai_tracing.integrations.asgi import KeywordsAIMiddleware, header
    from keywordsai_tracing.integrations.asgi import telemetry_lifespan

    app = FastAPI(lifespan=telemetry_lifespan(app_name="my-service"))
    app.add_middleware(
        KeywordsAIMiddleware,
        params=lambda scope: {"customer_identifier": header(scope, "x-customer-id")},
    )

`telemetry_lifespan` creates the `KeywordsAITelemetry` when the application starts and
awaits `ashutdown()` (which delivers every queued span) when it stops; it can wrap the
application's own lifespan. `KeywordsAIMiddleware` makes every workflow and task run
while handling a request carry that request's KeywordsAI parameters, and continues the
caller's trace (W3C ``traceparent``). It creates no span of its own: a server span per
request is opentelemetry-instrumentation-asgi's (or -fastapi's) job, and both work
together.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any, Generic, TypeVar, overload

from opentelemetry import context as context_api
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter

from keywordsai_tracing._telemetry import KeywordsAITelemetry

from . import REQUEST_PARAMS_KEY, request_params_context

__all__ = [
    "REQUEST_PARAMS_KEY",
    "KeywordsAIMiddleware",
    "TelemetryLifespan",
    "header",
    "telemetry_lifespan",
]

logger = logging.getLogger("keywordsai_tracing")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
ParamsCallable = Callable[[Scope], Any]
"""``(scope) -> params | None``, or a coroutine function returning that; ``params`` is
what ``keywordsai_params=`` accepts (a dict of `KeywordsAIParams` keys, say)."""

AppT = TypeVar("AppT")
StateT = TypeVar("StateT")

_TRACED_SCOPES = frozenset({"http", "websocket"})


# -- lifespan ---------------------------------------------------------------------------------


class TelemetryLifespan(Generic[AppT, StateT]):
    """A lifespan (``lifespan=`` of FastAPI/Starlette) owning a `KeywordsAITelemetry`.

    Built by `telemetry_lifespan`. At startup the telemetry is created (unless one was
    given) before the wrapped lifespan starts, so the application's own startup code is
    traced; at shutdown the wrapped lifespan ends first, then ``await ashutdown()``
    delivers every queued span. ``telemetry`` is the instance of the last startup.
    """

    def __init__(
        self,
        lifespan: Callable[[AppT], AbstractAsyncContextManager[StateT]] | None,
        telemetry: KeywordsAITelemetry | None,
        telemetry_kwargs: dict[str, Any],
        shutdown_timeout: float | None,
        freeze_gc: bool = False,
    ) -> None:
        self._lifespan = lifespan
        self._given = telemetry
        self._kwargs = telemetry_kwargs
        self._shutdown_timeout = shutdown_timeout
        self._freeze_gc = freeze_gc
        self.telemetry: KeywordsAITelemetry | None = telemetry

    def __call__(self, app: AppT) -> AbstractAsyncContextManager[StateT]:
        return self._run(app)

    @asynccontextmanager
    async def _run(self, app: AppT) -> AsyncIterator[StateT]:
        telemetry = self._given
        if telemetry is None:
            # Created on a worker thread: set-up imports the instrumentation packages and
            # reads files, which would block the event loop for a noticeable time.
            telemetry = await asyncio.to_thread(KeywordsAITelemetry, **self._kwargs)
        self.telemetry = telemetry
        try:
            if self._lifespan is None:
                with _frozen_heap(self._freeze_gc):
                    yield None  # type: ignore[misc]  # StateT is None without a wrapped lifespan
            else:
                async with self._lifespan(app) as state:
                    with _frozen_heap(self._freeze_gc):
                        yield state
        finally:
            await telemetry.ashutdown(self._shutdown_timeout)


@contextmanager
def _frozen_heap(freeze: bool) -> Iterator[None]:
    """With ``freeze``: everything alive once start-up is over (modules, the app, the
    telemetry) moves to the collector's permanent generation while the app serves, so
    full collections walk only what requests create; unfrozen at shutdown. An
    application that froze its heap itself manages freezing: nothing is done (an
    unfreeze cannot tell its objects from ours)."""
    if not freeze or gc.get_freeze_count():
        yield
        return
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@overload
def telemetry_lifespan(
    lifespan: None = None,
    /,
    *,
    telemetry: KeywordsAITelemetry | None = None,
    shutdown_timeout: float | None = None,
    freeze_gc: bool = False,
    **telemetry_kwargs: Any,
) -> TelemetryLifespan[Any, None]: ...


@overload
def telemetry_lifespan(
    lifespan: Callable[[AppT], AbstractAsyncContextManager[StateT]],
    /,
    *,
    telemetry: KeywordsAITelemetry | None = None,
    shutdown_timeout: float | None = None,
    freeze_gc: bool = False,
    **telemetry_kwargs: Any,
) -> TelemetryLifespan[AppT, StateT]: ...


def telemetry_lifespan(
    lifespan: Callable[[Any], AbstractAsyncContextManager[Any]] | None = None,
    /,
    *,
    telemetry: KeywordsAITelemetry | None = None,
    shutdown_timeout: float | None = None,
    freeze_gc: bool = False,
    **telemetry_kwargs: Any,
) -> TelemetryLifespan[Any, Any]:
    """A lifespan that starts KeywordsAI tracing with the application and flushes it at the end.

    ``telemetry_kwargs`` are `KeywordsAITelemetry`'s arguments; the instance is created at
    startup on a worker thread (``asyncio.to_thread``), so the event loop is not blocked
    by its imports. Pass ``telemetry=`` instead to use one created earlier (at import,
    say); it is then only shut down. ``lifespan`` is the application's own lifespan,
    wrapped: it starts after the telemetry and ends before it; the state it yields is
    passed on unchanged. ``shutdown_timeout`` bounds the final delivery (default: the
    telemetry's own ``shutdown_timeout``, 5 s); a telemetry created here takes it as its
    ``shutdown_timeout`` too.

    ``freeze_gc=True`` (opt-in; off by default because it is the application's heap):
    once start-up is over (the wrapped lifespan's too), ``gc.collect()`` then
    ``gc.freeze()`` move every object alive to the collector's permanent generation, so
    each full collection while serving walks only what requests created (the imported
    modules of a FastAPI + OpenAI app are hundreds of thousands of objects);
    ``gc.unfreeze()`` at shutdown. If the application already froze objects itself,
    nothing is frozen or unfrozen.

    SIGTERM: created this way the telemetry does not install its SIGTERM handler (that
    needs the main thread, and uvicorn has installed its own by then anyway). None is
    needed: uvicorn, hypercorn and granian turn SIGTERM into a graceful shutdown, which
    runs this lifespan's end and its ``ashutdown()``. A telemetry created at import time
    (``telemetry=``) keeps its handler, which covers servers that skip the lifespan.
    """
    if telemetry is not None and telemetry_kwargs:
        raise TypeError("telemetry_lifespan: pass telemetry= or KeywordsAITelemetry arguments")
    if telemetry is not None and not isinstance(telemetry, KeywordsAITelemetry):
        raise TypeError("telemetry: expected a KeywordsAITelemetry")
    if lifespan is not None and not callable(lifespan):
        raise TypeError("lifespan: expected a callable returning an async context manager")
    if not isinstance(freeze_gc, bool):
        raise TypeError("freeze_gc: expected a bool")
    if telemetry is None and shutdown_timeout is not None:
        telemetry_kwargs["shutdown_timeout"] = shutdown_timeout
    return TelemetryLifespan(lifespan, telemetry, telemetry_kwargs, shutdown_timeout, freeze_gc)


# -- middleware -------------------------------------------------------------------------------


class _ASGIHeaderGetter(Getter[Scope]):
    """Reads W3C trace-context headers from an ASGI scope (header names are lowercase)."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        wanted = key.lower().encode("latin-1")
        values = [
            value.decode("latin-1")
            for name, value in carrier.get("headers") or ()
            if name.lower() == wanted
        ]
        return values or None

    def keys(self, carrier: Scope) -> list[str]:
        return [name.decode("latin-1") for name, _ in carrier.get("headers") or ()]


_getter = _ASGIHeaderGetter()


def _carries_any(scope: Scope, fields: set[str]) -> bool:
    """Whether the request has a header among ``fields`` (the propagator's, as it
    declares them); True when it declares none, so such a propagator always runs."""
    if not fields:
        return True
    wanted = {field.lower().encode("latin-1") for field in fields}
    return any(name.lower() in wanted for name, _ in scope.get("headers") or ())


def header(scope: Scope, name: str) -> str | None:
    """The value of request header ``name`` (case-insensitive) in ``scope``, or None.

    Repeated headers are joined with ``", "``. Meant for ``params=`` callables, e.g.
    ``lambda scope: {"customer_identifier": header(scope, "x-customer-id")}`` (None
    values are left out of the parameters).
    """
    values = _getter.get(scope, name)
    return ", ".join(values) if values else None


class KeywordsAIMiddleware:
    """Pure ASGI middleware: per-request KeywordsAI parameters and W3C trace context.

    For each HTTP or WebSocket connection, ``params(scope)`` (sync or async) returns the
    KeywordsAI parameters of the request (``customer_identifier`` from a header, a
    ``thread_identifier``, ``metadata``, ...) or None; every workflow, task, agent and
    tool span started while the request is handled (in the endpoint, in tasks it spawns,
    in threads via ``to_thread``, in a streaming response's body, in background tasks)
    gets them as attributes, as do LLM spans inside those entities. An exception raised
    by ``params`` is logged and the request proceeds without parameters.

    With ``propagate=True`` (default) and no span current yet, the trace context of the
    request headers (``traceparent``, via the globally configured propagator) becomes the
    parent of the request's workflows, so they join the caller's trace (a request with
    none of the headers the propagator declares in ``fields`` skips extraction). When
    opentelemetry-instrumentation-asgi/-fastapi already opened a server span (it extracts
    the same headers), that span stays the parent.

    The middleware never creates a span. Its context is attached for the request and
    detached in the same task when the application returns.
    """

    def __init__(
        self,
        app: ASGIApp,
        params: ParamsCallable | None = None,
        *,
        propagate: bool = True,
    ) -> None:
        if params is not None and not callable(params):
            raise TypeError("params: expected a callable (scope) -> dict | None")
        self.app = app
        self._params = params
        self._propagate = propagate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in _TRACED_SCOPES:
            await self.app(scope, receive, send)
            return
        ctx = self._request_context(scope)
        if self._params is not None:
            ctx = request_params_context(await self._call_params(scope), ctx)
        if ctx is context_api.get_current():
            await self.app(scope, receive, send)
            return
        token = context_api.attach(ctx)
        try:
            await self.app(scope, receive, send)
        finally:
            context_api.detach(token)

    def _request_context(self, scope: Scope) -> context_api.Context:
        current = context_api.get_current()
        if not self._propagate or trace.get_current_span(current).get_span_context().is_valid:
            return current
        if not _carries_any(scope, propagate.get_global_textmap().fields):
            return current  # no header the propagator reads: nothing to extract
        extracted = propagate.extract(scope, context=current, getter=_getter)
        if not trace.get_current_span(extracted).get_span_context().is_valid:
            return current  # no (valid) traceparent: nothing to join
        return extracted

    async def _call_params(self, scope: Scope) -> Any:
        assert self._params is not None
        try:
            params = self._params(scope)
            if inspect.isawaitable(params):
                params = await params
        except Exception:
            logger.exception("KeywordsAIMiddleware: params(scope) raised; no parameters set")
            return None
        return params
