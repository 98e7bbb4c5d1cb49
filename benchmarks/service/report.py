"""The service benchmark's Markdown section: a table per group of figures, then the targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.report import NA, num, percent, ratio, table, times

Result = dict[str, Any]
Rows = dict[str, Result]

LABELS = ("untraced", "stock", "incumbent", "ours", "ours-freeze")
NAMES = {
    "untraced": "untraced (ours, `is_enabled=False`)",
    "stock": "stock OTel (BSP + OTLP/HTTP + OpenAIInstrumentor)",
    "incumbent": "incumbent keywordsai-tracing 0.0.59",
    "ours": "ours (`telemetry_lifespan` + middleware)",
    "ours-freeze": "ours + `freeze_gc=True` (the README's service set-up)",
}
MB = 1024 * 1024
DISTURBED_PERCENT = 5


def measured(result: Result, key: str) -> Any:
    """A figure of the fixed-rate run: the client's, the server's or the start-up's."""
    for part in ("measured", "stats", "setup"):
        inner = result.get(part)
        if isinstance(inner, dict) and key in inner:
            return inner[key]
    return result.get(key)


def delivery(result: Result) -> float | None:
    """Distinct spans received per span expected (5 per request served in full; a request
    the client gave up on may leave spans of its own, so this can exceed 1)."""
    return ratio(result.get("spans_unique"), result.get("spans_expected"))


def delivered(result: Result) -> str:
    """Delivery as a percentage, duplicates noted; a dash where no span is expected."""
    if not result.get("spans_expected"):
        got = result.get("spans_unique")
        return "—" if not got else f"{got:,} spans (none expected)"
    extra = (result.get("spans_received") or 0) - (result.get("spans_unique") or 0)
    text = percent(delivery(result)) + (f" (+{extra:,} dup.)" if extra > 0 else "")
    if (delivery(result) or 0) > 1:  # requests given up by the client leave part-trees
        text += " (with spans of requests cut short)"
    return text


def busy(result: Result) -> float | None:
    """The server's CPU seconds per second of the window, in percent of one core."""
    stats = result.get("stats", {})
    share = ratio(stats.get("cpu_s"), stats.get("seconds"))
    return None if share is None else share * 100


def others(result: Result) -> float | None:
    """Other processes' use of the server's CPU during the window (``/proc/stat``), in
    percent of that CPU."""
    stats = result.get("stats", {})
    whole, own = stats.get("server_cpu_busy_s"), stats.get("cpu_s")
    if whole is None or own is None:
        return None
    return max(ratio(whole - own, stats.get("seconds")) or 0.0, 0.0) * 100


def steps(result: Result) -> str:
    """The ramp's steps: offered→answered req/s (p99 ms), the failing one marked."""
    ramp = result.get("ramp", {})
    if "error" in ramp:
        return str(ramp["error"])
    return ", ".join(
        f"{step['offered_rps']:g}→{step['achieved_rps']:.0f} ({step['p99_ms']:.0f} ms)"
        + ("" if step.get("sustained") else " ✗")
        for step in ramp.get("steps", [])
    )


def overloaded(result: Result) -> bool:
    """Whether the server answered under 95% of the offered rate in the window."""
    window = result.get("measured", {})
    return bool(window) and window["achieved_rps"] < 0.95 * window["offered_rps"]


def megabytes(value: Any) -> float | None:
    """Bytes as MB."""
    return value / MB if isinstance(value, int | float) else None


@dataclass(frozen=True)
class Figure:
    """A number read from a result; ``lower`` says which way is better."""

    read: Callable[[Result], Any]
    digits: int = 1
    lower: bool = True


FIGURES = {
    "p50 latency ms": Figure(lambda r: measured(r, "p50_ms"), 2),
    "p99 latency ms": Figure(lambda r: measured(r, "p99_ms"), 2),
    "CPU ms/request": Figure(lambda r: measured(r, "cpu_ms_per_request"), 3),
    "CPU % of a core": Figure(busy, 0),
    "RSS at end MB": Figure(lambda r: megabytes(measured(r, "rss_bytes"))),
    "gc objects left per request": Figure(lambda r: measured(r, "young_per_request"), 1),
    "full GCs": Figure(lambda r: measured(r, "gc_full"), 0),
    "longest GC pause ms": Figure(lambda r: measured(r, "gc_pause_max_ms"), 2),
    "loop lag max ms": Figure(lambda r: measured(r, "lag_max_ms")),
    "loop lag p99 ms": Figure(lambda r: measured(r, "lag_p99_ms"), 2),
    "lag wakes > 50 ms": Figure(lambda r: measured(r, "lag_over_50ms"), 0),
    "first response s": Figure(lambda r: r.get("startup_s"), 2),
    "modules added": Figure(lambda r: measured(r, "modules"), 0),
    "gc objects added": Figure(lambda r: measured(r, "gc_objects"), 0),
    "RSS added MB": Figure(lambda r: megabytes(measured(r, "rss"))),
    "spans delivered %": Figure(lambda r: (delivery(r) or 0) * 100, 1, lower=False),
    "highest sustained req/s": Figure(
        lambda r: r.get("ramp", {}).get("sustained_rps") or 0, 0, lower=False
    ),
}

# columns shown but not compared
COLUMNS: dict[str, Callable[[Result], str]] = {
    "max ms": lambda r: num(measured(r, "max_ms")),
    "answered req/s": lambda r: (
        num(measured(r, "achieved_rps")) + (" (overloaded)" if overloaded(r) else "")
    ),
    "failed": lambda r: f"{measured(r, 'failed') or 0:,}",
    "spans delivered": delivered,
    "others on its CPU %": lambda r: num(others(r), 0),
    "longest full GC ms": lambda r: num(measured(r, "gc_full_pause_max_ms"), 2),
    "GCs gen 0/1/2": lambda r: "/".join(map(str, measured(r, "gc_collections") or [])) or NA,
    "wakes > 100 ms": lambda r: f"{measured(r, 'lag_over_100ms') or 0:,}",
    "samples": lambda r: f"{measured(r, 'lag_samples') or 0:,}",
    "exit after SIGTERM s": lambda r: num(r.get("exit_s"), 2),
    "steps": steps,
    "spans delivered in the ramp": lambda r: delivered(r.get("ramp", {})),
}


def contender_table(rows: Rows, columns: list[str], ratios: tuple[str, ...] = ()) -> list[str]:
    """One row per contender; a ``÷ untraced`` column after each figure in ``ratios``."""
    header = ["contender"]
    for column in columns:
        header += [column, "÷ untraced"] if column in ratios else [column]
    base = rows.get("untraced", {})
    lines = []
    for label in LABELS:
        result = rows.get(label)
        if result is None:
            continue
        if "error" in result:
            lines.append([NAMES[label], str(result["error"])] + [NA] * (len(header) - 2))
            continue
        cells = [NAMES[label]]
        for column in columns:
            figure = FIGURES.get(column)
            if figure is None:
                cells.append(COLUMNS[column](result))
                continue
            value = figure.read(result)
            cells.append(num(value, figure.digits))
            if column in ratios:
                cells.append(times(None if "error" in base else ratio(value, figure.read(base))))
        lines.append(cells)
    return table(header, lines)


def _verdict(ok: bool | None) -> str:
    return NA if ok is None else ("met" if ok else "**NOT met**")


def section_targets(rows: Rows) -> list[str]:
    """The issue's targets for each traced contender, against untraced of the same run."""
    base = rows.get("untraced", {})
    traced = [label for label in LABELS[1:] if label in rows]

    def judged(label: str, ok: bool) -> str:
        if is_disturbed(base) or is_disturbed(rows[label]):
            return "not judged (disturbed run)"
        return _verdict(ok)

    def bounded(label: str, figure: str, bound: float, as_percent: bool = False) -> str:
        result, read = rows[label], FIGURES[figure].read
        value = None if "error" in result or "error" in base else ratio(read(result), read(base))
        if value is None:
            return NA
        shown = f"{(value - 1) * 100:+.0f}%" if as_percent else times(value)
        return f"{shown} {judged(label, value <= bound)}"

    def lag(label: str) -> str:
        result = rows[label]
        if "error" in result or "error" in base:
            return NA
        over, base_over = measured(result, "lag_over_50ms"), measured(base, "lag_over_50ms")
        if over is None or base_over is None:
            return NA
        longest = num(measured(result, "lag_max_ms"))
        return f"{over} (untraced {base_over}), max {longest} ms {judged(label, over <= base_over)}"

    lines = [
        ["p99 latency ≤ 2x untraced", *(bounded(label, "p99 latency ms", 2.0) for label in traced)],
        [
            "stretch: p99 latency ≤ 1.5x untraced",
            *(bounded(label, "p99 latency ms", 1.5) for label in traced),
        ],
        [
            "CPU per request ≤ untraced's + 25%",
            *(bounded(label, "CPU ms/request", 1.25, as_percent=True) for label in traced),
        ],
        [
            "no loop lag over 50 ms from the SDK: wakes > 50 ms no more than untraced's",
            *(lag(label) for label in traced),
        ],
    ]
    return table(["target (at the fixed rate)", *traced], lines)


def section_versus(rows: Rows, label: str = "ours") -> list[str]:
    """Ours (``label``) against stock on every figure (equal as printed: a tie)."""
    ours, stock = rows.get(label, {}), rows.get("stock", {})
    if not ours or not stock or "error" in ours or "error" in stock:
        return [f"{NAMES[label]} against stock: n/a (one of them did not run)."]
    lines, worse = [], []
    for name, figure in FIGURES.items():
        mine, theirs = figure.read(ours), figure.read(stock)
        shown = num(mine, figure.digits), num(theirs, figure.digits)
        if NA in shown:
            verdict = NA
        elif shown[0] == shown[1]:
            verdict = "tie"
        elif (mine < theirs) == figure.lower:
            verdict = "better"
        else:
            verdict = "**worse**"
            worse.append(name)
        lines.append([name, *shown, verdict])
    summary = f"{NAMES[label]} better than stock on every figure (ties allowed): "
    summary += _verdict(not worse)
    if worse:
        summary += f"; worse on: {', '.join(worse)}"
    return [*table(["figure", label, "stock", f"{label} vs stock"], lines), "", summary + "."]


def introduction(rows: Rows, params: dict[str, Any]) -> list[str]:
    """How the figures were taken."""
    cpus = next((result["cpus"] for result in rows.values() if result.get("cpus")), None)
    if cpus and cpus[0] is not None:
        pinning = (
            f"pinned to CPU {cpus[0]} (the load generator, stand-in LLM server and receiver "
            f"on CPU {cpus[1]}; 'others on its CPU' is what other processes took of CPU "
            f"{cpus[0]} during the window)"
        )
    else:
        pinning = "not pinned (fewer than two CPUs, or no `sched_setaffinity`)"
    versions = "; ".join(
        f"{label}: "
        + ", ".join(f"{name} {version}" for name, version in result["versions"].items())
        for label, result in rows.items()
        if result.get("versions")
    )
    rounds = max(1, int(params.get("rounds", 1)))
    turns = (
        f"The fixed rate runs in {rounds} windows of {params['seconds'] / rounds:g} s per "
        "contender, the contenders taking turns in an order that reverses each round (a "
        "drift in the machine's speed then weighs on all alike); each contender's windows "
        "are pooled: counts and CPU add up, percentiles come from every sample, maxima are "
        "the largest, RSS is the last window's, start-up and exit the median window's. "
        if rounds > 1
        else ""
    )
    return [
        f"### (e) A FastAPI service at {params['rate']} req/s for {params['seconds']:g} s, "
        "then a ramp",
        "",
        "Each contender serves the same FastAPI app from one uvicorn worker (asyncio loop, "
        f"h11), a fresh process for each window, {pinning}. {turns}`POST /ask` runs an `ask` "
        "workflow awaiting three tasks, one calling the stand-in LLM server with the real "
        "`AsyncOpenAI` client: 5 spans a request. The load is open-loop (aiohttp): requests "
        "leave on schedule whatever the answers and latency runs from the scheduled send, "
        f"so queueing counts. After a {params['warmup_s']:g} s warm-up the server's counters "
        "are reset; CPU is the server process's (every thread) per request answered, GCs "
        "and their pauses come from `gc.callbacks`; 'gc objects left per request' counts "
        "the gc-tracked objects allocated and still alive when a collection starts (the "
        "young generation's count, summed over the window, per request): what makes "
        "collections happen, as objects freed at once do not; loop lag from a 10 ms "
        "`asyncio.sleep` probe in the server. Start-up: process start to first answer, and "
        "what importing and configuring the tracing added (modules, gc-tracked objects, "
        "RSS) with fastapi, openai and uvicorn already imported; untraced's figures are "
        "our SDK imported and disabled, plus what starting uvicorn adds for everyone. "
        "Delivery: distinct spans at the receiver once the server has exited after SIGTERM "
        "(uvicorn re-raises the signal after its graceful shutdown, so exit hooks such as "
        "the SDK `TracerProvider`'s flush at exit do not run; a lifespan's end does). "
        "FastAPI's own OpenTelemetry support is turned off. Ratios are against untraced in "
        "this same run.",
        f"Versions: {versions or NA}.",
    ]


def is_disturbed(result: Result) -> bool:
    """Other processes took more than `DISTURBED_PERCENT` of the server's CPU."""
    return (others(result) or 0) > DISTURBED_PERCENT


def disturbed(rows: Rows) -> list[str]:
    """A warning naming the contenders whose server shared its CPU with other processes
    for more than `DISTURBED_PERCENT` of the measured window."""
    names = [
        f"{label} ({others(rows[label]):.0f}%)"
        for label in LABELS
        if label in rows and is_disturbed(rows[label])
    ]
    if not names:
        return []
    return [
        "",
        f"**Disturbed**: other processes took over {DISTURBED_PERCENT}% of the server's CPU "
        f"during the window of {', '.join(names)}: those rows measure this machine's other "
        "load as much as the contender, and ratios against them mislead.",
    ]


def section(rows: Rows, params: dict[str, Any]) -> list[str]:
    """The whole service section."""
    rate = params["rate"]
    rule = (
        f"answered requests per second ≥ {params['min_share'] * 100:g}% of the offered rate "
        f"and p99 ≤ {params['p99_bound_ms']:g} ms (both client-side)"
    )
    return [
        *introduction(rows, params),
        *disturbed(rows),
        "",
        f"#### Latency at {rate} req/s",
        "",
        *contender_table(
            rows,
            [
                "p50 latency ms",
                "p99 latency ms",
                "max ms",
                "answered req/s",
                "failed",
                "spans delivered",
            ],
            ratios=("p50 latency ms", "p99 latency ms"),
        ),
        "",
        "Overloaded: answering under 95% of the offered rate, so a backlog grows for the "
        "whole window and its latencies measure that backlog more than the cost of a request.",
        "",
        f"#### Server cost at {rate} req/s",
        "",
        *contender_table(
            rows,
            [
                "CPU ms/request",
                "CPU % of a core",
                "others on its CPU %",
                "RSS at end MB",
                "gc objects left per request",
                "full GCs",
                "longest GC pause ms",
                "longest full GC ms",
                "GCs gen 0/1/2",
            ],
            ratios=("CPU ms/request", "RSS at end MB"),
        ),
        "",
        f"#### Event-loop lag at {rate} req/s (how late a 10 ms sleep wakes)",
        "",
        *contender_table(
            rows,
            [
                "loop lag max ms",
                "loop lag p99 ms",
                "lag wakes > 50 ms",
                "wakes > 100 ms",
                "samples",
            ],
            ratios=("loop lag max ms", "loop lag p99 ms"),
        ),
        "",
        "#### Start-up and shutdown",
        "",
        *contender_table(
            rows,
            [
                "first response s",
                "modules added",
                "gc objects added",
                "RSS added MB",
                "exit after SIGTERM s",
            ],
            ratios=("first response s",),
        ),
        "",
        "#### Ramp",
        "",
        f"Rates {', '.join(map(str, params['ramp_rates']))} req/s, {params['step_s']:g} s "
        f"each after a warm-up, until one is not sustained. Sustained: {rule}. Steps: "
        "offered→answered req/s (p99 ms); ✗ marks the first not sustained.",
        "",
        *contender_table(
            rows,
            ["highest sustained req/s", "steps", "spans delivered in the ramp"],
            ratios=("highest sustained req/s",),
        ),
        "",
        "#### Targets (issue #10 item 4)",
        "",
        *section_targets(rows),
        "",
        *section_versus(rows),
        "",
        *(section_versus(rows, "ours-freeze") if "ours-freeze" in rows else []),
    ]
