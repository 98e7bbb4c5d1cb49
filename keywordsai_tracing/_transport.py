"""HTTP transport for the exporter: an injectable protocol and its aiohttp implementation.

`AiohttpTransport` keeps one ``aiohttp.ClientSession`` per event loop, created lazily on the
running loop and reused (keep-alive). A session must be closed on its own loop:

* `aclose` closes the running loop's session;
* a loop shut down by ``asyncio.run`` / ``asyncio.Runner`` / pytest-asyncio without
  ``aclose`` closes it too: each session is guarded by an async generator that the loop's
  ``shutdown_asyncgens()`` finalises on that loop before it closes;
* a loop closed without that step is noticed at the next use of the transport on any loop,
  and its session is released without touching the dead loop (no "Unclosed client
  session" / "Unclosed connector" / "unclosed transport" warnings).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import urllib.parse
import urllib.request
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import aiohttp

from ._fork import FORK_GRAVEYARD
from ._version import __version__

logger = logging.getLogger("keywordsai_tracing.exporter")

USER_AGENT = f"keywordsai-tracing-async/{__version__}"


@dataclass(frozen=True)
class Response:
    """An HTTP response: status, headers (case-insensitive lookup via `header`), body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        value = self.headers.get(name)
        if value is not None:
            return value
        lowered = name.lower()
        for key, val in self.headers.items():
            if key.lower() == lowered:
                return val
        return None


@dataclass(frozen=True)
class TransportFailure:
    """No response: the connection failed (``refused``: nothing listens there) or the
    request timed out (retryable)."""

    kind: Literal["connection", "refused", "timeout"]
    detail: str


@runtime_checkable
class Transport(Protocol):
    """Sends one POST; failures to get any response are returned, not raised."""

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Response | TransportFailure:
        """POST ``body``; ``timeout`` (seconds) bounds the whole request."""
        ...

    async def aclose(self) -> None:
        """Release what the transport holds on the running loop (idempotent)."""
        ...


async def _guard(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Suspended for the session's life; closing it (``aclose()`` or the loop's
    ``shutdown_asyncgens()``) closes the session on its loop."""
    try:
        yield
    finally:
        await session.close()


@dataclass
class _LoopSession:
    loop: asyncio.AbstractEventLoop
    session: aiohttp.ClientSession
    guard: AsyncGenerator[None, None]


def _release_on_closed_loop(entry: _LoopSession) -> None:
    """Free a session whose loop is closed, without scheduling anything on that loop."""
    session = entry.session
    connector = session.connector
    session.detach()  # the session now counts as closed
    if connector is None or connector.closed:
        return
    # Idle keep-alive sockets outlive a closed loop; close them here, since the loop can no
    # longer run the transports' close callbacks. Private aiohttp/asyncio attributes,
    # reached defensively: any surprise falls back to the garbage collector.
    with contextlib.suppress(Exception):
        for protocols in getattr(connector, "_conns", {}).values():
            for protocol, _ in protocols:
                transport = getattr(protocol, "transport", None)
                sock = getattr(transport, "_sock", None)
                if sock is not None:
                    sock.close()
                    transport._sock = None  # type: ignore[union-attr]
    with contextlib.suppress(Exception):
        connector._close()  # marks it closed; returns at once on a closed loop


# In urllib.request, not in its type stubs: does NO_PROXY exempt this host?
_proxy_bypass: Callable[[str], bool] = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]


class AiohttpTransport:
    """`Transport` over aiohttp with one keep-alive ``ClientSession`` per event loop."""

    def __init__(self, *, user_agent: str = USER_AGENT, limit: int = 4) -> None:
        self._user_agent = user_agent
        self._limit = limit
        self._sessions: dict[asyncio.AbstractEventLoop, _LoopSession] = {}
        self._lock = threading.Lock()
        self._proxies: dict[str, str | None] = {}
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)

            def after_fork_in_child() -> None:
                transport = ref()
                if transport is not None:
                    transport._reset_after_fork()

            os.register_at_fork(after_in_child=after_fork_in_child)

    def _reset_after_fork(self) -> None:
        """In a forked child: the parent's sessions belong to loops that do not run here
        and their connections are the parent's; keep them unfinalised, start afresh."""
        FORK_GRAVEYARD.append(self._sessions)
        self._sessions = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AiohttpTransport(sessions={len(self._sessions)})"

    def _sweep(self) -> None:
        """Forget sessions of closed loops (releasing any that were left open)."""
        with self._lock:
            dead = [entry for loop, entry in self._sessions.items() if loop.is_closed()]
            for entry in dead:
                del self._sessions[entry.loop]
        for entry in dead:
            if not entry.session.closed:
                _release_on_closed_loop(entry)

    async def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        entry = self._sessions.get(loop)
        if entry is not None and not entry.session.closed:
            return entry.session
        self._sweep()
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limit),
            headers={"User-Agent": self._user_agent},
            trust_env=False,  # True sends every request's proxy lookup through a thread
        )
        guard = _guard(session)
        await anext(guard)  # registers the generator with this loop's shutdown_asyncgens
        with self._lock:
            self._sessions[loop] = _LoopSession(loop, session, guard)
        return session

    def _proxy_for(self, url: str) -> str | None:
        """The proxy from ``HTTP(S)_PROXY``/``NO_PROXY`` for ``url``, looked up once."""
        if url not in self._proxies:
            parts = urllib.parse.urlsplit(url)
            proxy = urllib.request.getproxies_environment().get(parts.scheme)
            if proxy and _proxy_bypass(parts.hostname or ""):
                proxy = None
            self._proxies[url] = proxy or None
        return self._proxies[url]

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Response | TransportFailure:
        """POST on the running loop's session; connection errors and timeouts are returned."""
        session = await self._session()
        try:
            async with session.post(
                url,
                data=body,
                headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=max(timeout, 0.001)),
                allow_redirects=False,
                proxy=self._proxy_for(url),
            ) as response:
                payload = await response.read()
                return Response(response.status, dict(response.headers), payload)
        except TimeoutError as exc:
            return TransportFailure("timeout", f"no response within {timeout:.3g}s ({exc!r})")
        except (aiohttp.ClientError, OSError) as exc:
            cause = getattr(exc, "os_error", exc)
            kind: Literal["connection", "refused"] = (
                "refused" if isinstance(cause, ConnectionRefusedError) else "connection"
            )
            return TransportFailure(kind, f"{type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        """Close the running loop's session (and forget sessions of closed loops)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._sessions.pop(loop, None)
        self._sweep()
        if entry is not None:
            await entry.guard.aclose()
