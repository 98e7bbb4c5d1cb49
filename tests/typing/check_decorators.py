"""Typing contract, checked by ``mypy --strict`` in ``nox -s typecheck`` (not run by pytest):
decorated objects keep their exact signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import assert_type

from keywordsai_tracing import agent, task, tool, workflow


@task
def add(a: int, b: int = 0) -> int:
    return a + b


@workflow(name="flow", version=1)
async def flow(x: str) -> list[str]:
    return [x]


@tool
def numbers(n: int) -> Iterator[int]:
    yield from range(n)


@agent(name="streamer")
async def stream(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


@task(name="cls", method_name="run")
class Runner:
    def run(self, x: int) -> int:
        return x


assert_type(add(1, b=2), int)


async def _use_flow() -> None:
    assert_type(await flow("x"), list[str])


assert_type(numbers(3), Iterator[int])
assert_type(stream(3), AsyncIterator[int])
assert_type(Runner().run(1), int)
runner: Runner = Runner()

# With strict mypy an unused "type: ignore" is an error, so these prove the wrong
# calls are rejected: the decorated signatures are not Any.
add("one")  # type: ignore[arg-type]
numbers()  # type: ignore[call-arg]
