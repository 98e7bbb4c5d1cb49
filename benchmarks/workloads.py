"""The scenarios, run inside a worker process against one `Contender`.

Each takes the contender and the run's parameters and returns plain numbers. Only the
standard library is used here: the incumbent's interpreter runs this module too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from statistics import median
from typing import Any

from .contenders import Contender

Params = dict[str, Any]
Result = dict[str, Any]
SPANS_PER_UNIT = 4
PROBE_INTERVAL = 0.001  # the 1 ms asyncio.sleep probe


def received(control_url: str | None) -> dict[str, int]:
    """The receiver's tally right now (empty without a receiver)."""
    if control_url is None:
        return {}
    with urllib.request.urlopen(f"{control_url}/count", timeout=10) as response:
        tally: dict[str, int] = json.loads(response.read())
    return tally


def quantiles(samples: list[float]) -> dict[str, float]:
    """p50, p99 and max of ``samples`` (seconds), in milliseconds."""
    if not samples:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": ordered[-1] * 1000}


class LagProbe:
    """Sleeps 1 ms in a loop on the running event loop and records how late it wakes."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        clock = time.perf_counter
        while True:
            start = clock()
            await asyncio.sleep(PROBE_INTERVAL)
            self.lags.append(clock() - start - PROBE_INTERVAL)

    def start(self) -> None:
        """Start probing on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> list[float]:
        """Let a sample in progress complete, then stop; the lags in seconds."""
        await asyncio.sleep(PROBE_INTERVAL * 5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.lags


class RssSampler:
    """Samples the resident set size from a thread every 10 ms and keeps the peak."""

    def __init__(self) -> None:
        self.baseline = current_rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, current_rss())

    def stop(self) -> int:
        """Stop sampling; the peak growth over the baseline, in bytes."""
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())
        return self.peak - self.baseline


def current_rss() -> int:
    """The resident set size of this process in bytes (peak RSS if /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def delivery(
    produced: int, control_url: str | None, before: dict[str, int] | None = None
) -> Result:
    """The produced count next to what the receiver got, after the flush.

    ``before``: the receiver's tally before this phase of the run.
    """
    tally = received(control_url)
    if not tally:
        return {"produced": produced, "received": None, "unique": None}
    before = before or {}
    return {
        "produced": produced,
        "received": tally["spans"] - before.get("spans", 0),
        "unique": tally["unique"] - before.get("unique", 0),
        "unique_before": before.get("unique", 0),
        "receiver_errors": tally["errors"],
    }


# -- (a) decorator cost ------------------------------------------------------------------
#
# Two figures per run. "decorator": timed rounds of ROUND_UNITS units (fewer spans than a
# 512-span batch, so no export wakes up during a round), each followed by an untimed flush,
# so the time is the span path alone. "sustained": units back to back with export running
# alongside (a sync producer shares the GIL with an export thread; a coroutine with an
# export task), the median of SUSTAINED_CHUNKS chunks.

ROUND_UNITS = 100
SUSTAINED_CHUNKS = 5


def _per_span_us(timings: list[float], units: int) -> float:
    return median(timings) / units / SPANS_PER_UNIT * 1e6


def cost_sync(contender: Contender, params: Params) -> Result:
    """Sync units: the decorator alone, then sustained with background export."""
    unit, flush, clock = contender.sync_unit, contender.flush, time.perf_counter
    control_url = params.get("control_url")
    for i in range(ROUND_UNITS):  # warm-up
        unit(i)
    flush()
    rounds = []
    for _ in range(params["units"] // ROUND_UNITS):
        start = clock()
        for i in range(ROUND_UNITS):
            unit(i)
        rounds.append(clock() - start)
        flush()
    before = received(control_url)
    chunk = params["units"] // SUSTAINED_CHUNKS
    chunks = []
    for _ in range(SUSTAINED_CHUNKS):
        start = clock()
        for i in range(chunk):
            unit(i)
        chunks.append(clock() - start)
    start = clock()
    flush()
    flushed = clock() - start
    return {
        "us_per_span": _per_span_us(rounds, ROUND_UNITS),
        "sustained_us_per_span": _per_span_us(chunks, chunk),
        "flush_s": flushed,
        **delivery(chunk * SUSTAINED_CHUNKS * SPANS_PER_UNIT, control_url, before),
    }


def cost_async(contender: Contender, params: Params) -> Result:
    """`cost_sync` for coroutines, yielding between units as I/O-bound code does."""
    return asyncio.run(_cost_async(contender, params))


async def _cost_async(contender: Contender, params: Params) -> Result:
    unit, aflush, clock, sleep = (
        contender.async_unit,
        contender.aflush,
        time.perf_counter,
        asyncio.sleep,
    )
    control_url = params.get("control_url")
    for i in range(ROUND_UNITS):
        await unit(i)
        await sleep(0)
    await aflush()
    rounds = []
    for _ in range(params["units"] // ROUND_UNITS):
        start = clock()
        for i in range(ROUND_UNITS):
            await unit(i)
            await sleep(0)
        rounds.append(clock() - start)
        await aflush()
    before = received(control_url)
    chunk = params["units"] // SUSTAINED_CHUNKS
    chunks = []
    for _ in range(SUSTAINED_CHUNKS):
        start = clock()
        for i in range(chunk):
            await unit(i)
            await sleep(0)
        chunks.append(clock() - start)
    start = clock()
    await aflush()
    flushed = clock() - start
    return {
        "us_per_span": _per_span_us(rounds, ROUND_UNITS),
        "sustained_us_per_span": _per_span_us(chunks, chunk),
        "flush_s": flushed,
        **delivery(chunk * SUSTAINED_CHUNKS * SPANS_PER_UNIT, control_url, before),
    }


def _best_ns(call: Callable[[], None], rounds: int) -> float:
    clock = time.perf_counter_ns
    best = float("inf")
    for _ in range(rounds):
        start = clock()
        call()
        best = min(best, clock() - start)
    return best


def disabled(contender: Contender, params: Params) -> Result:
    """ns per call of a ``@task`` function with tracing disabled vs the undecorated function."""
    assert contender.decorate_task is not None, "only for contenders with decorate_task"
    calls, rounds = params["calls"], params["rounds"]

    def plain(x: int) -> int:
        return x + 1

    async def aplain(x: int) -> int:
        return x + 1

    decorated = contender.decorate_task(plain)
    adecorated = contender.decorate_task(aplain)
    batch = range(calls)

    def loop_over(fn: Callable[[int], Any]) -> Callable[[], None]:
        def run() -> None:
            for i in batch:
                fn(i)

        return run

    def aloop_over(fn: Callable[[int], Coroutine[Any, Any, int]]) -> Callable[[], None]:
        async def body() -> None:
            for i in batch:
                await fn(i)

        def run() -> None:
            coroutine = body()
            with contextlib.suppress(StopIteration):
                coroutine.send(None)  # nothing suspends: one send runs it to the end

        return run

    result: Result = {}
    for key, run_plain, run_decorated in (
        ("sync", loop_over(plain), loop_over(decorated)),
        ("async", aloop_over(aplain), aloop_over(adecorated)),
    ):
        base = _best_ns(run_plain, rounds) / calls
        traced = _best_ns(run_decorated, rounds) / calls
        result[f"{key}_plain_ns"] = base
        result[f"{key}_overhead_ns"] = traced - base
    return result


# -- (b) steady rate ---------------------------------------------------------------------


def steady(contender: Contender, params: Params) -> Result:
    """Coroutines end spans at a steady rate while the 1 ms probe measures loop lag."""
    return asyncio.run(_steady(contender, params))


async def _steady(contender: Contender, params: Params) -> Result:
    rate, seconds, producers = params["rate"], params["seconds"], params["producers"]
    period = producers * SPANS_PER_UNIT / rate  # each producer's seconds between units
    unit = contender.async_unit
    loop = asyncio.get_running_loop()
    produced = 0

    async def producer(offset: float, end: float) -> None:
        nonlocal produced
        due = loop.time() + offset
        while due < end:
            delay = due - loop.time()
            await asyncio.sleep(delay if delay > 0 else 0)
            await unit(produced)
            produced += 1
            due += period

    probe = LagProbe()
    probe.start()
    cpu = time.process_time()
    start = loop.time()
    end = start + seconds
    await asyncio.gather(*(producer(i * period / producers, end) for i in range(producers)))
    elapsed = loop.time() - start
    cpu = time.process_time() - cpu
    lags = await probe.stop()
    flush_start = time.perf_counter()
    await contender.aflush()
    flushed = time.perf_counter() - flush_start
    return {
        **quantiles(lags),
        "spans_per_s": produced * SPANS_PER_UNIT / elapsed,
        "cpu_s": cpu,
        "flush_s": flushed,
        **delivery(produced * SPANS_PER_UNIT, params.get("control_url")),
    }


# -- (c) flat out, (d) collector down ----------------------------------------------------


async def _flat_out(contender: Contender, spans: int, concurrency: int) -> float:
    """Coroutines awaiting units as fast as they can (yielding between units); seconds."""
    unit = contender.async_unit
    per_producer = spans // SPANS_PER_UNIT // concurrency

    async def producer() -> None:
        for i in range(per_producer):
            await unit(i)
            await asyncio.sleep(0)

    start = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(concurrency)))
    return time.perf_counter() - start


def flood(contender: Contender, params: Params) -> Result:
    """``spans`` spans produced flat out, then an awaited flush."""
    return asyncio.run(_flood(contender, params))


async def _flood(contender: Contender, params: Params) -> Result:
    spans, concurrency = params["spans"], params["concurrency"]
    spans -= spans % (SPANS_PER_UNIT * concurrency)
    produce_s = await _flat_out(contender, spans, concurrency)
    flush_start = time.perf_counter()
    await contender.aflush()
    flushed = time.perf_counter() - flush_start
    return {
        "produce_s": produce_s,
        "spans_per_s": spans / produce_s,
        "flush_s": flushed,
        **delivery(spans, params.get("control_url")),
    }


def down(contender: Contender, params: Params) -> Result:
    """Flat out with nothing listening: RSS growth, loop stall during flush, end-of-work time.

    The runner measures the time from ``end_of_work`` (wall clock) to the process's exit.
    """
    return asyncio.run(_down(contender, params))


async def _down(contender: Contender, params: Params) -> Result:
    spans, concurrency = params["spans"], params["concurrency"]
    spans -= spans % (SPANS_PER_UNIT * concurrency)
    rss = RssSampler()
    produce_s = await _flat_out(contender, spans, concurrency)
    end_of_work = time.time()
    probe = LagProbe()
    probe.start()
    await asyncio.sleep(0)  # let the probe start sleeping before the flush
    flush_start = time.perf_counter()
    await contender.aflush()
    flushed = time.perf_counter() - flush_start
    lags = await probe.stop()
    growth = rss.stop()
    return {
        "produced": spans,
        "produce_s": produce_s,
        "flush_s": flushed,
        "flush_stall_ms": max(lags, default=0.0) * 1000,
        "rss_growth_mb": growth / 2**20,
        "end_of_work": end_of_work,
    }


def garbage(contender: Contender, params: Params) -> Result:
    """What the span path leaves for the garbage collector (issue #10 item 3).

    Held: ``held_units`` async units (fewer spans than a batch, so nothing is exported
    before the schedule delay): the gc-tracked objects and bytes (tracemalloc) each
    span keeps alive until its export; a tracked object that outlives a young
    collection is promoted, and every full collection walks it. Churn: ``units`` async
    units with the export running, and how many collections of each generation that
    cost per 1,000 spans.
    """
    return asyncio.run(_garbage(contender, params))


async def _garbage(contender: Contender, params: Params) -> Result:
    import gc
    import tracemalloc

    for i in range(50):  # warm: first-call caches, the export task started and idle
        await contender.async_unit(i)
    await contender.aflush()
    held = params["held_units"]
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        objects, memory = len(gc.get_objects()), tracemalloc.get_traced_memory()[0]
        for i in range(held):
            await contender.async_unit(i)
        objects = len(gc.get_objects()) - objects
        memory = tracemalloc.get_traced_memory()[0] - memory
    finally:
        tracemalloc.stop()
        gc.enable()
    await contender.aflush()
    gc.collect()
    tally = received(params.get("control_url"))
    before = [generation["collections"] for generation in gc.get_stats()]
    units = params["units"]
    for i in range(units):
        await contender.async_unit(i)
        if i % 10 == 9:
            await asyncio.sleep(0)  # as an awaited I/O call would: the export runs
    await contender.aflush()
    after = [generation["collections"] for generation in gc.get_stats()]
    spans = units * SPANS_PER_UNIT
    per_1000 = [(b - a) * 1000 / spans for a, b in zip(before, after, strict=True)]
    return {
        "objects_per_span": objects / (held * SPANS_PER_UNIT),
        "bytes_per_span": memory / (held * SPANS_PER_UNIT),
        "gen0_per_1000": per_1000[0],
        "gen1_per_1000": per_1000[1],
        "gen2_per_1000": per_1000[2],
        **delivery(spans, params.get("control_url"), tally),
    }


SCENARIOS: dict[str, Callable[[Contender, Params], Result]] = {
    "garbage": garbage,
    "cost_sync": cost_sync,
    "cost_async": cost_async,
    "disabled": disabled,
    "steady": steady,
    "flood": flood,
    "down": down,
}
