"""No tracing: the same unit of work, undecorated."""

from __future__ import annotations

from .base import Contender, Options


def create(options: Options) -> Contender:
    """Plain functions; flushing does nothing."""

    def step(x: int) -> int:
        return x + 1

    def unit(x: int) -> int:
        return step(x) + step(x) + step(x)

    async def astep(x: int) -> int:
        return x + 1

    async def aunit(x: int) -> int:
        return await astep(x) + await astep(x) + await astep(x)

    async def aflush() -> None:
        return None

    return Contender(unit, aunit, lambda: None, aflush)
