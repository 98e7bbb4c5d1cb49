"""What a contender hands to the workloads: the 4-span unit of work and its flush calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

SyncUnit = Callable[[int], int]
AsyncUnit = Callable[[int], Awaitable[int]]


@dataclass(frozen=True)
class Options:
    """How the worker asks a contender to set itself up."""

    base_url: str | None  # e.g. "http://127.0.0.1:PORT"; spans go to {base_url}/v1/traces
    enabled: bool = True
    trace_content: bool | None = None  # None: the contender's default


@dataclass
class Contender:
    """A configured tracing setup.

    ``sync_unit``/``async_unit`` run one ``workflow`` calling three ``task``s (4 spans).
    ``flush`` is what a sync user calls; ``aflush`` what an async user awaits (for
    contenders with no async flush, their sync flush called on the loop).
    """

    sync_unit: SyncUnit
    async_unit: AsyncUnit
    flush: Callable[[], object]
    aflush: Callable[[], Awaitable[object]]
    decorate_task: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None
    info: dict[str, str] = field(default_factory=dict)


def package_version(distribution: str) -> str:
    """Installed version of ``distribution``, or "?"."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"
