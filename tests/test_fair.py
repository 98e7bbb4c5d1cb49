"""FairShare: how long CPU work on the loop runs before yielding."""

from __future__ import annotations

import asyncio

import pytest

from keywordsai_tracing._fair import FairShare


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.asyncio
async def test_a_quiet_loop_gets_short_turns_a_busy_one_gives_a_fair_share() -> None:
    clock = Clock()
    fair = FairShare(share=0.5, floor=0.001, cap=0.02, clock=clock)
    busy_for = 0.0
    passes = 0

    async def other_tasks() -> None:  # runs whenever the worker yields
        nonlocal passes
        while True:
            clock.now += busy_for
            passes += 1
            await asyncio.sleep(0)

    others = asyncio.create_task(other_tasks())
    await asyncio.sleep(0)
    yields: list[float] = []
    for busy_for in (0.0, 0.010, 0.100):
        start_turns = len(yields)
        ran = 0.0
        for _ in range(400):  # 400 units of 0.1 ms of work
            clock.now += 0.0001
            ran += 0.0001
            before = passes
            await fair.checkpoint()
            if passes != before:
                yields.append(ran)
                ran = 0.0
        turns = yields[start_turns + 1 :]  # the first turn still reflects the last phase
        expected = min(max(0.001, 0.5 * busy_for), 0.02)
        assert turns
        assert all(abs(turn - expected) < 0.00011 for turn in turns), (busy_for, turns)
    others.cancel()
    with pytest.raises(asyncio.CancelledError):
        await others


def test_turn_is_bounded() -> None:
    clock = Clock()
    fair = FairShare(share=0.5, floor=0.001, cap=0.02, clock=clock)
    assert fair.turn() == 0.001


def test_alone_on_the_private_loop_it_never_yields() -> None:
    from keywordsai_tracing._fair import exporting_alone

    token = exporting_alone.set(True)
    try:
        fair = FairShare(clock=Clock())
    finally:
        exporting_alone.reset(token)
    assert fair.turn() == float("inf")


def test_pressure_grows_the_share() -> None:
    from keywordsai_tracing._fair import export_pressure

    clock = Clock()
    fill = 0.0
    token = export_pressure.set(lambda: fill)
    try:
        fair = FairShare(share=0.5, floor=0.0, cap=1.0, clock=clock)
    finally:
        export_pressure.reset(token)
    fair._away = 0.01  # as if the loop ran 10 ms elsewhere during the last yield
    calm = fair.turn()
    fill = 1.0
    assert calm == pytest.approx(0.005)
    assert fair.turn() == pytest.approx(0.03)  # six times the base share at a full queue
