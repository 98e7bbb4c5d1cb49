"""The open-loop load generator: ``python -m benchmarks.service.loadgen SPEC.json`` prints JSON.

Request ``i`` of a window is sent at ``start + i / rate`` whatever the earlier ones are
doing, each in a task of its own (aiohttp, up to `CONNECTIONS` connections), so a server
that falls behind meets a growing queue. A latency runs from the request's *scheduled*
send time to the end of its response, so the queueing (the client's own included) counts.

Modes: ``fixed`` (a warm-up window, ``POST /_bench/reset``, the measured window, ``GET
/_bench/stats``) and ``ramp`` (a warm-up, then one window per rate, each followed by the
server's stats, until a rate is not sustained: fewer than ``min_share`` of the offered
requests answered per second, or p99 over ``p99_bound_ms``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp

CONNECTIONS = 256
REQUEST_TIMEOUT_S = 10.0
CONTROL_TIMEOUT_S = 120.0
BODY = {"question": "What is the capital of France? Answer in one word."}
HEADERS = {"x-customer-id": "bench-customer"}


def cpu_busy_s(cpu: int | None) -> float | None:
    """Seconds CPU ``cpu`` has been busy since boot, every process and steal included
    (``/proc/stat``); None without it."""
    if cpu is None:
        return None
    try:
        with open("/proc/stat") as stat:
            for line in stat:
                if line.startswith(f"cpu{cpu} "):
                    ticks = [int(field) for field in line.split()[1:9]]
                    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
                    return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    return None


def pick(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted seconds, in ms (0 when empty)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def window(
    session: aiohttp.ClientSession, url: str, rate: float, seconds: float
) -> dict[str, Any]:
    """Send ``rate`` requests a second for ``seconds`` on schedule; wait for every answer."""
    loop = asyncio.get_running_loop()
    total = max(1, round(rate * seconds))
    latencies: list[float] = []
    failures: dict[str, int] = {}
    last_done = 0.0
    send_late = 0.0

    async def one(scheduled: float) -> None:
        nonlocal last_done
        outcome = "ok"
        try:
            async with session.post(url, json=BODY, headers=HEADERS) as response:
                await response.read()
                if response.status != 200:
                    outcome = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as error:
            outcome = type(error).__name__
        done = loop.time()
        last_done = max(last_done, done)
        if outcome == "ok":
            latencies.append(done - scheduled)
        else:
            failures[outcome] = failures.get(outcome, 0) + 1

    start = loop.time() + 0.01
    tasks = []
    for index in range(total):
        scheduled = start + index / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        send_late = max(send_late, loop.time() - scheduled)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    elapsed = max(seconds, last_done - start)
    ordered = sorted(latencies)
    return {
        "offered_rps": rate,
        "seconds": seconds,
        "sent": total,
        "ok": len(ordered),
        "failed": sum(failures.values()),
        "failures": failures,
        "achieved_rps": len(ordered) / elapsed,
        "p50_ms": pick(ordered, 0.50),
        "p99_ms": pick(ordered, 0.99),
        "max_ms": ordered[-1] * 1000 if ordered else 0.0,
        "send_late_max_ms": send_late * 1000,
        "latencies_ms": [round(latency * 1000, 3) for latency in ordered],  # for pooling
    }


async def call(session: aiohttp.ClientSession, method: str, url: str) -> dict[str, Any]:
    """A JSON call to the server's measurement endpoints."""
    async with session.request(method, url) as response:
        response.raise_for_status()
        result: dict[str, Any] = await response.json()
        return result


def sustained(step: dict[str, Any], spec: dict[str, Any]) -> bool:
    """The ramp's rule: enough answered per second, and p99 within the bound."""
    enough = step["achieved_rps"] >= spec["min_share"] * step["offered_rps"]
    return bool(enough and step["ok"] and step["p99_ms"] <= spec["p99_bound_ms"])


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's mode against ``spec["base_url"]``. The measurement calls have their own
    connection and a long timeout: an overloaded server answers them late, not never."""
    base = spec["base_url"]
    ask = f"{base}/ask"
    load = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONNECTIONS),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )
    control = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CONTROL_TIMEOUT_S))
    async with load, control:
        if spec["mode"] == "fixed":
            warmup = await window(load, ask, spec["rate"], spec["warmup_s"])
            await call(control, "POST", f"{base}/_bench/reset")
            busy = cpu_busy_s(spec.get("server_cpu"))
            measured = await window(load, ask, spec["rate"], spec["seconds"])
            stats = await call(control, "GET", f"{base}/_bench/stats")
            after = cpu_busy_s(spec.get("server_cpu"))
            if busy is not None and after is not None:
                stats["server_cpu_busy_s"] = after - busy  # the server's and anyone else's
            return {"warmup": warmup, "measured": measured, "stats": stats}
        rates = spec["ramp_rates"]
        warmup = await window(load, ask, rates[0], spec["warmup_s"])
        steps = []
        best = None
        for rate in rates:
            await asyncio.sleep(spec["pause_s"])
            await call(control, "POST", f"{base}/_bench/reset")
            step = await window(load, ask, rate, spec["step_s"])
            step["stats"] = await call(control, "GET", f"{base}/_bench/stats")
            step["sustained"] = sustained(step, spec)
            steps.append(step)
            if not step["sustained"]:
                break
            best = rate
        return {"warmup": warmup, "steps": steps, "sustained_rps": best}


def main(spec_path: str) -> None:
    """Read the spec, pin to its CPU if it names one, run, print the result as JSON."""
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("cpu") is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {spec["cpu"]})
    print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main(sys.argv[1])
