"""The seam between span processors and exporters that speak asyncio."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from opentelemetry.sdk.trace import ReadableSpan


@runtime_checkable
class AsyncSpanExporter(Protocol):
    """An exporter whose I/O runs on the event loop that awaits it.

    ``aexport`` may be awaited on different event loops over the exporter's life (an
    application loop, then a private loop thread); resources bound to a loop (an aiohttp
    ``ClientSession``) are kept per loop and released by ``aclose`` on that loop.

    An exporter whose ``aexport`` may run several times at once on one loop says so with
    an integer attribute ``max_concurrent_exports`` (see `concurrent_exports`); without
    it, the batch processor awaits one ``aexport`` at a time.
    """

    async def aexport(self, spans: Sequence[ReadableSpan], deadline: float | None = None) -> bool:
        """Deliver ``spans``; True when accepted. ``deadline`` is a ``time.monotonic()``
        instant after which no further attempt is started. Never raises for delivery
        failures (they are logged and counted); may raise ``asyncio.CancelledError``."""
        ...

    async def aclose(self) -> None:
        """Release what this exporter holds on the running loop (idempotent)."""
        ...

    def shutdown(self) -> None:
        """Thread-safe and idempotent: stop retrying, cut backoff sleeps short."""
        ...


def concurrent_exports(exporter: object) -> int:
    """How many ``aexport`` calls of ``exporter`` a processor may have in flight at once:
    its ``max_concurrent_exports`` attribute if that is a positive integer, else 1."""
    value = getattr(exporter, "max_concurrent_exports", 1)
    if type(value) is not int or value < 1:
        return 1
    return value
