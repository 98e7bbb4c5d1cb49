"""The seam between span processors and exporters that speak asyncio.

Two shapes of exporter are driven by the export engine (`keywordsai_tracing._engine`):

* `AsyncSpanExporter`: ``aexport`` delivers a batch and says whether it was accepted;
  any retrying happens inside it.
* `AttemptExporter`: the engine runs the retries. ``aprepare`` turns a batch into what is
  sent (once, kept across attempts and loops); ``asend`` makes one attempt and reports an
  `Attempt`; the engine waits out backoff (``retry_policy``) between attempts without
  holding an export slot or a loop, so a batch in backoff can move to another loop, and
  a flush or shutdown sees exactly where every span is. The OTLP/HTTP exporter is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from opentelemetry.sdk.trace import ReadableSpan

if TYPE_CHECKING:
    from ._retry import RetryPolicy


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


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch made ready to send: ``payload`` for ``sent`` spans; ``filtered`` spans of
    the batch were left out on purpose (not to be sent at all)."""

    payload: bytes
    sent: int
    filtered: int = 0


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt to send a prepared batch achieved.

    ``delivered`` + ``rejected`` spans when the destination answered (``rejected``: refused
    and not to be retried, e.g. HTTP 400 or a partial success). With ``retry`` nothing was
    accepted and the batch may be tried again: ``status`` is the HTTP status (None: no
    response), ``retry_after`` the raw ``Retry-After`` header, ``refused`` whether the
    connection was refused. ``cause`` describes a failure for the log (never a secret).
    """

    delivered: int = 0
    rejected: int = 0
    retry: bool = False
    status: int | None = None
    retry_after: str | None = None
    refused: bool = False
    cause: str = ""


@runtime_checkable
class AttemptExporter(Protocol):
    """An exporter whose retries the engine runs (see the module docstring)."""

    timeout: float  # seconds a batch may spend in attempts and backoff
    retry_policy: RetryPolicy
    max_concurrent_exports: int

    async def aprepare(self, spans: Sequence[ReadableSpan]) -> Prepared:
        """Filter and encode ``spans`` on the running loop (yielding as it goes)."""
        ...

    async def asend(self, prepared: Prepared, timeout: float) -> Attempt:
        """One attempt, bounded by ``timeout`` seconds; never raises for delivery
        failures; may raise ``asyncio.CancelledError``."""
        ...

    async def aclose(self) -> None:
        """Release what this exporter holds on the running loop (idempotent)."""
        ...

    def shutdown(self) -> None:
        """Thread-safe and idempotent."""
        ...


def concurrent_exports(exporter: object) -> int:
    """How many ``aexport`` calls of ``exporter`` a processor may have in flight at once:
    its ``max_concurrent_exports`` attribute if that is a positive integer, else 1."""
    value = getattr(exporter, "max_concurrent_exports", 1)
    if type(value) is not int or value < 1:
        return 1
    return value
