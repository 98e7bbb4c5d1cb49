"""Pooling a contender's fixed-rate windows into one result.

The machine's speed drifts over minutes (other tenants, frequency): a contender measured
in a faster stretch than the untraced baseline looks cheaper than it is. So the runner
measures every contender in several windows, the contenders taking turns in an order
that reverses each round (A B C, then C B A): a drift that is steady over the run then
weighs on every contender alike. `pool` merges one contender's windows into the figures a
single window reports: counts and CPU seconds add up, latency and loop-lag percentiles
come from every sample of every window, maxima are the largest, the RSS is the last
window's, and start-up and exit figures are the median window's.
"""

from __future__ import annotations

import statistics
from typing import Any

Result = dict[str, Any]

# the raw samples a window carries for pooling; dropped from the pooled result
LATENCIES = "latencies_ms"
LAGS = "lags_ms"


def order(labels: list[str], round_index: int) -> list[str]:
    """The contenders' turns in round ``round_index``: as given, then reversed, and so on."""
    return list(labels) if round_index % 2 == 0 else list(reversed(labels))


def pick(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted samples, as the load generator and server take it."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _sum(windows: list[Result], key: str) -> Any:
    values = [window.get(key) for window in windows]
    if any(value is None for value in values):
        return None
    return sum(values)


def _max(windows: list[Result], key: str) -> Any:
    values = [window[key] for window in windows if window.get(key) is not None]
    return max(values) if values else None


def _median(windows: list[Result], key: str) -> Any:
    values = [window[key] for window in windows if window.get(key) is not None]
    return statistics.median(values) if values else None


def _client(windows: list[Result]) -> Result:
    """The load generator's measured windows, pooled."""
    latencies = sorted(sample for window in windows for sample in window.get(LATENCIES, []))
    ok = _sum(windows, "ok") or 0
    # each window's elapsed time, from what it answered and at what rate
    elapsed = sum(
        window["ok"] / window["achieved_rps"] if window.get("achieved_rps") else window["seconds"]
        for window in windows
    )
    failures: dict[str, int] = {}
    for window in windows:
        for cause, count in window.get("failures", {}).items():
            failures[cause] = failures.get(cause, 0) + count
    return {
        "offered_rps": windows[0]["offered_rps"],
        "seconds": _sum(windows, "seconds"),
        "sent": _sum(windows, "sent"),
        "ok": ok,
        "failed": _sum(windows, "failed"),
        "failures": failures,
        "achieved_rps": ok / elapsed if elapsed else 0.0,
        "p50_ms": pick(latencies, 0.50),
        "p99_ms": pick(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else 0.0,
        "send_late_max_ms": _max(windows, "send_late_max_ms"),
    }


def _server(windows: list[Result]) -> Result:
    """The server's window statistics, pooled."""
    lags = sorted(sample for window in windows for sample in window.get(LAGS, []))
    served = _sum(windows, "served") or 0
    cpu = _sum(windows, "cpu_s")
    young = sum((window.get("young_per_request") or 0) * window["served"] for window in windows)
    collections = [
        sum(counts) for counts in zip(*(w["gc_collections"] for w in windows), strict=True)
    ]
    pooled = {
        "served": served,
        "served_total": _sum(windows, "served_total"),
        "seconds": _sum(windows, "seconds"),
        "cpu_s": cpu,
        "cpu_ms_per_request": cpu * 1000 / served if served and cpu is not None else None,
        "gc_collections": collections,
        "young_per_request": young / served if served else None,
        "gc_full": _sum(windows, "gc_full"),
        "gc_pause_max_ms": _max(windows, "gc_pause_max_ms"),
        "gc_full_pause_max_ms": _max(windows, "gc_full_pause_max_ms"),
        "gc_pause_total_ms": _sum(windows, "gc_pause_total_ms"),
        "lag_samples": len(lags),
        "lag_p50_ms": pick(lags, 0.50),
        "lag_p99_ms": pick(lags, 0.99),
        "lag_max_ms": lags[-1] if lags else 0.0,
        "lag_over_50ms": sum(1 for lag in lags if lag > 50.0),
        "lag_over_100ms": sum(1 for lag in lags if lag > 100.0),
        "rss_bytes": windows[-1].get("rss_bytes"),
        "server_cpu_busy_s": _sum(windows, "server_cpu_busy_s"),
    }
    return {key: value for key, value in pooled.items() if key in windows[0]}


def pool(windows: list[Result]) -> Result:
    """One contender's fixed-rate windows (results of `runner.serve`) as one result."""
    failed = next((window for window in windows if "error" in window), None)
    if failed is not None:
        return failed
    first = windows[0]
    pooled: Result = {
        "windows": len(windows),
        "startup_s": _median(windows, "startup_s"),
        "measured": _client([window["measured"] for window in windows]),
        "stats": _server([window["stats"] for window in windows]),
        "warmup": first.get("warmup"),
        "served_total": _sum(windows, "served_total"),
        "setup": first.get("setup"),
        "versions": first.get("versions"),
        "exit_s": _median(windows, "exit_s"),
        "returncode": next((w["returncode"] for w in windows if w.get("returncode")), 0),
        "spans_received": _sum(windows, "spans_received"),
        "spans_unique": _sum(windows, "spans_unique"),
        "stderr_lines": _sum(windows, "stderr_lines"),
        "stderr_sample": next((w["stderr_sample"] for w in windows if w.get("stderr_sample")), []),
    }
    if all("spans_expected" in window for window in windows):
        pooled["spans_expected"] = _sum(windows, "spans_expected")
    return pooled
