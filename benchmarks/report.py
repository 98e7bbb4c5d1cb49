"""The Markdown report: one table per scenario, ratios against the same run's baselines."""

from __future__ import annotations

import datetime
import re
from typing import Any

Results = dict[str, dict[str, dict[str, Any]]]

NAMES = {
    "none": "no tracing",
    "stock": "stock OTel (BatchSpanProcessor + OTLP/HTTP protobuf)",
    "incumbent": "incumbent keywordsai-tracing 0.0.59",
    "ours": "ours (defaults: content capture on)",
    "ours-nocontent": "ours (trace_content=False)",
}
NA = "n/a"
FLOODS = ("flood_c1", "flood_c10", "flood_c50")
QUOTE = "'"


def num(value: Any, digits: int = 1) -> str:
    """A number with ``digits`` decimals, or n/a."""
    if not isinstance(value, int | float):
        return NA
    return f"{value:,.{digits}f}"


def ratio(numerator: Any, denominator: Any) -> float | None:
    """numerator / denominator when both are positive numbers."""
    numbers = isinstance(numerator, int | float) and isinstance(denominator, int | float)
    if numbers and denominator > 0:
        return float(numerator) / float(denominator)
    return None


def times(value: float | None) -> str:
    """A ratio as ``1.23x`` or n/a."""
    return NA if value is None else f"{value:.2f}x"


def share(result: dict[str, Any], key: str = "unique") -> float | None:
    """Spans at the receiver (distinct span ids) per span produced."""
    return ratio(result.get(key), result.get("produced")) if "produced" in result else None


def percent(value: float | None) -> str:
    """A share as a percentage, or n/a."""
    return NA if value is None else f"{value * 100:.1f}%"


def delivered(result: dict[str, Any]) -> str:
    """Share delivered after flush, with duplicates and later arrivals noted."""
    if result.get("received") is None:
        return "—"
    text = percent(share(result))
    duplicates = (result.get("received") or 0) - (result.get("unique") or 0)
    if duplicates:
        text += f" (+{duplicates:,} dup.)"
    by_exit = result.get("unique_by_exit")
    if isinstance(by_exit, int) and by_exit != result.get("unique"):
        text += f"; {percent(ratio(by_exit, result['produced']))} by exit"
    return text


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _get(results: Results, scenario: str, label: str) -> dict[str, Any]:
    return results.get(scenario, {}).get(label, {})


def _error_row(result: dict[str, Any], width: int) -> list[str] | None:
    if "error" in result:
        return [str(result["error"])] + [NA] * (width - 1)
    return None


def net_cost(results: Results, scenario: str, label: str, key: str = "us_per_span") -> float | None:
    """µs per span of ``label`` minus the no-tracing run's, in ``scenario``."""
    value = _get(results, scenario, label).get(key)
    base = _get(results, scenario, "none").get(key)
    if isinstance(value, int | float) and isinstance(base, int | float):
        return float(value) - float(base)
    return None


def section_cost(results: Results) -> list[str]:
    """(a) µs per span, sync and async, net of the no-tracing baseline."""
    header = ["contender", "sync µs/span", "÷ ours", "async µs/span", "÷ ours"]
    header += ["sustained sync", "sustained async", "delivered (sustained) sync; async"]
    rows = []
    for label in ("none", "stock", "incumbent", "ours", "ours-nocontent"):
        sync, asyn = _get(results, "cost_sync", label), _get(results, "cost_async", label)
        if not sync and not asyn:
            continue
        error = _error_row(sync or asyn, len(header) - 1)
        if error is not None:
            rows.append([NAMES[label], *error])
            continue
        if label == "none":
            raw = [
                num(_get(results, scenario, "none").get(key), 2)
                for scenario, key in (
                    ("cost_sync", "us_per_span"),
                    ("cost_async", "us_per_span"),
                    ("cost_sync", "sustained_us_per_span"),
                    ("cost_async", "sustained_us_per_span"),
                )
            ]
            rows.append([NAMES[label] + " (raw; subtracted below)", raw[0], "", raw[1], ""])
            rows[-1] += [raw[2], raw[3], "—"]
            continue
        cells = [NAMES[label]]
        for scenario in ("cost_sync", "cost_async"):
            mine = net_cost(results, scenario, label)
            cells += [num(mine, 2), times(ratio(mine, net_cost(results, scenario, "ours")))]
        for scenario in ("cost_sync", "cost_async"):
            cells.append(num(net_cost(results, scenario, label, "sustained_us_per_span"), 2))
        cells.append(f"{delivered(sync)}; {delivered(asyn)}")
        rows.append(cells)
    lines = [
        "### (a) Decorator cost per span",
        "",
        "One `workflow` calling three `task`s (4 spans); no-tracing time subtracted. First",
        "columns: the span path alone (median of timed rounds of 100 units, each followed by",
        "an untimed flush, so no export runs during a round). Sustained: units back to back",
        "with the export running alongside (a thread for stock/incumbent, for ours its task",
        "or, in sync code, its private loop thread). Async: one coroutine awaiting units with",
        "an `await asyncio.sleep(0)` between them (in the baseline too). In default mode",
        "each contender runs three times, the contenders taking turns (so a slow spell of",
        "the machine hits them alike); figures are the medians of the runs.",
        "",
        *table(header, rows),
    ]
    disabled = _get(results, "disabled", "ours-disabled")
    if disabled:
        if "error" in disabled:
            lines += ["", f"`is_enabled=False`: {disabled['error']}"]
        else:
            lines += [
                "",
                "Ours with `is_enabled=False`, per call of a `@task` function vs the same "
                "function undecorated (best of rounds): sync "
                f"**+{num(disabled['sync_overhead_ns'], 0)} ns** "
                f"(undecorated {num(disabled['sync_plain_ns'], 0)} ns), async "
                f"**+{num(disabled['async_overhead_ns'], 0)} ns** "
                f"(undecorated {num(disabled['async_plain_ns'], 0)} ns).",
            ]
    return lines


def _runs(values: list[float] | None, scale: float, unit: str = "") -> str:
    """`` (a / b / c)``: each run's value, when there were several."""
    if not values or len(values) < 2:
        return ""
    return " (" + " / ".join(f"{v * scale:.1f}{unit}" for v in values) + ")"


def section_steady(results: Results, params: dict[str, Any]) -> list[str]:
    """(b) loop lag at a steady span rate."""
    stock_p99 = _get(results, "steady", "stock").get("p99_ms")
    header = ["contender", "spans/s", "lag p50 ms", "p99 ms", "max ms", "p99 ÷ stock"]
    header += ["CPU s", "flush s", "delivered"]
    rows = []
    for label in ("none", "stock", "incumbent", "ours"):
        result = _get(results, "steady", label)
        if not result:
            continue
        error = _error_row(result, len(header) - 1)
        if error is not None:
            rows.append([NAMES[label], *error])
            continue
        rows.append(
            [
                NAMES[label],
                num(result["spans_per_s"], 0),
                num(result["p50_ms"], 2),
                num(result["p99_ms"], 2) + _runs(result.get("p99_ms_runs"), 1),
                num(result["max_ms"], 1),
                times(ratio(result["p99_ms"], stock_p99)),
                num(result["cpu_s"], 2),
                num(result["flush_s"], 2),
                delivered(result) + _runs(result.get("delivered_runs"), 100, "%"),
            ]
        )
    return [
        f"### (b) Event-loop lag at {params['rate']:,} spans/s for {params['seconds']:g} s",
        "",
        f"{params['producers']} coroutines end spans on schedule; the probe is a 1 ms",
        "`asyncio.sleep` (lag = how late it wakes). CPU = process CPU during the load.",
        "With several runs per contender (taking turns): medians, each run's p99 and",
        "delivery in brackets.",
        "",
        *table(header, rows),
    ]


def section_flood(results: Results, params: dict[str, dict[str, Any]]) -> list[str]:
    """(c) flat out then flush, one row per contender and level of concurrency."""
    header = ["contender", "coroutines", "produce s", "spans/s", "flush s", "delivered"]
    rows = []
    spans = None
    for scenario in FLOODS:
        if scenario not in results:
            continue
        spans = params[scenario]["spans"]
        for label in ("none", "stock", "incumbent", "ours"):
            result = _get(results, scenario, label)
            if not result:
                continue
            concurrency = str(params[scenario]["concurrency"])
            error = _error_row(result, len(header) - 2)
            if error is not None:
                rows.append([NAMES[label], concurrency, *error])
                continue
            rows.append(
                [
                    NAMES[label],
                    concurrency,
                    num(result["produce_s"], 2),
                    num(result["spans_per_s"], 0),
                    num(result["flush_s"], 2),
                    delivered(result),
                ]
            )
    return [
        f"### (c) {spans or 0:,} spans flat out, then flush",
        "",
        "N coroutines awaiting units back to back (each yields once between units, as an",
        "awaited I/O call would), default settings, then the awaited flush (a sync flush on",
        "the loop for contenders without an async one).",
        "",
        *table(header, rows),
    ]


def section_garbage(results: Results, params: dict[str, Any]) -> list[str]:
    """(f) what the span path leaves for the garbage collector."""
    header = ["contender", "gc-tracked objects held per span", "÷ stock", "bytes held per span"]
    header += ["÷ stock", "young collections per 1,000 spans", "÷ stock", "gen 1 / gen 2"]
    header += ["delivered"]
    stock = _get(results, "garbage", "stock") or {}
    rows = []
    for label in ("none", "stock", "incumbent", "ours", "ours-nocontent"):
        result = _get(results, "garbage", label)
        if not result:
            continue
        error = _error_row(result, len(header) - 1)
        if error is not None and "objects_per_span" not in result:
            rows.append([NAMES[label], *error])
            continue
        rows.append(
            [
                NAMES[label],
                num(result["objects_per_span"], 1),
                _ratio(result["objects_per_span"], stock.get("objects_per_span")),
                num(result["bytes_per_span"], 0),
                _ratio(result["bytes_per_span"], stock.get("bytes_per_span")),
                num(result["gen0_per_1000"], 1),
                _ratio(result["gen0_per_1000"], stock.get("gen0_per_1000")),
                f"{num(result['gen1_per_1000'], 2)} / {num(result['gen2_per_1000'], 3)}",
                _delivered(result),
            ]
        )
    return [
        "### (f) Garbage: what each span leaves for the collector",
        "",
        f"Held: {params['held_units']} async units (4 spans each, fewer than a batch) with "
        "the collector off; what they keep alive until their export: gc-tracked objects "
        "(each one that survives a young collection is promoted, and every full collection "
        "walks it) and bytes (tracemalloc). Churn: "
        f"{params['units']:,} units with the export running (a yield every 10 units), "
        "and the collections that caused per 1,000 spans (full collections walk the whole "
        "heap: in a service with openai and fastapi loaded, hundreds of milliseconds). A "
        "pipeline that drops spans (a full queue) frees them at once and so collects less: "
        "read the churn next to what was delivered.",
        "",
        *table(header, rows),
    ]


def _delivered(result: dict[str, Any]) -> str:
    unique, produced = result.get("unique"), result.get("produced")
    if not isinstance(unique, int) or not produced:
        return "—"
    return f"{unique / produced:.1%}"


def _ratio(value: Any, base: Any) -> str:
    if not isinstance(value, int | float) or not isinstance(base, int | float) or base <= 0:
        return NA
    return f"{value / base:.2f}x"


def section_down(results: Results, params: dict[str, Any]) -> list[str]:
    """(d) collector not listening."""
    header = ["contender", "RSS growth MB", "longest stall in flush ms", "flush s"]
    header += ["end of work → exit s", "of which after flush", "stderr lines"]
    rows = []
    for label in ("none", "stock", "incumbent", "ours"):
        result = _get(results, "down", label)
        if not result:
            continue
        error = _error_row(result, len(header) - 1)
        if error is not None and "end_of_work" not in result:
            rows.append([NAMES[label], *error])
            continue
        exit_s = num(result.get("exit_s"), 1)
        after_flush = None
        if isinstance(result.get("exit_s"), int | float):
            after_flush = result["exit_s"] - result["flush_s"]
        if result.get("killed"):
            exit_s = f"> {exit_s} (killed)"
        rows.append(
            [
                NAMES[label],
                num(result["rss_growth_mb"], 1),
                num(result["flush_stall_ms"], 1),
                num(result["flush_s"], 2),
                exit_s,
                num(after_flush, 1),
                f"{result.get('stderr_lines', 0):,}",
            ]
        )
    return [
        f"### (d) Collector not listening, {params['spans']:,} spans",
        "",
        "Produced flat out as in (c) to a port nobody listens on; then flush with the probe",
        "running (`await aflush()` for ours; the sync flush called on the loop for the",
        "others), then the process ends as an app would (no explicit shutdown).",
        "",
        *table(header, rows),
    ]


def _verdict(ok: bool | None) -> str:
    return NA if ok is None else ("met" if ok else "**NOT met**")


def section_targets(results: Results) -> list[str]:
    """Our targets, read off the tables above."""

    def cost(scenario: str, label: str) -> float | None:
        return net_cost(results, scenario, label)

    rows = []
    for scenario, mode in (("cost_sync", "sync"), ("cost_async", "async")):
        ours, stock = cost(scenario, "ours"), cost(scenario, "stock")
        inc = cost(scenario, "incumbent")
        r_stock, r_inc = ratio(ours, stock), ratio(inc, ours)
        rows.append(
            [
                f"(a) {mode}: ours ≤ 0.8x stock",
                f"ours ÷ stock = {times(r_stock)}",
                _verdict(None if r_stock is None else r_stock <= 0.8),
            ]
        )
        rows.append(
            [
                f"(a) {mode}: about 3x cheaper than the incumbent (≥ 2.7x)",
                f"incumbent ÷ ours = {times(r_inc)}",
                _verdict(None if r_inc is None else r_inc >= 2.7),
            ]
        )
    disabled = _get(results, "disabled", "ours-disabled")
    worst = max(disabled.get("sync_overhead_ns", -1), disabled.get("async_overhead_ns", -1))
    rows.append(
        [
            "(a) `is_enabled=False` well under 1 µs per call",
            f"+{num(worst, 0)} ns (worse of sync/async)" if worst >= 0 else NA,
            _verdict(None if worst < 0 else worst < 500),
        ]
    )
    steady, steady_stock = _get(results, "steady", "ours"), _get(results, "steady", "stock")
    r_p99 = ratio(steady.get("p99_ms"), steady_stock.get("p99_ms"))
    rows.append(
        [
            "(b) p99 lag ≤ ½ stock's",
            f"ours ÷ stock = {times(r_p99)}",
            _verdict(None if r_p99 is None else r_p99 <= 0.5),
        ]
    )
    got = share(steady) if steady and "error" not in steady else None
    rows.append(["(b) 100% delivered", percent(got), _verdict(None if got is None else got >= 1.0)])
    for scenario in FLOODS:
        flood = _get(results, scenario, "ours")
        got = share(flood) if flood and "error" not in flood else None
        coroutines = scenario.removeprefix("flood_c")
        rows.append(
            [
                f"(c) ≥ 99.9% delivered ({coroutines} coroutines)",
                percent(got),
                _verdict(None if got is None else got >= 0.999),
            ]
        )
    down, down_stock = _get(results, "down", "ours"), _get(results, "down", "stock")
    stall = down.get("flush_stall_ms")
    rows.append(
        [
            "(d) no loop stall over 10 ms",
            f"{num(stall, 1)} ms",
            _verdict(None if stall is None else stall <= 10),
        ]
    )
    exit_s = down.get("exit_s")
    rows.append(
        [
            "(d) exit within 6 s of the end of work",
            f"{num(exit_s, 1)} s",
            _verdict(None if exit_s is None else exit_s <= 6 and not down.get("killed")),
        ]
    )
    growth, stock_growth = down.get("rss_growth_mb"), down_stock.get("rss_growth_mb")
    bound = stock_growth + 32 if isinstance(stock_growth, int | float) else None
    rows.append(
        [
            "(d) RSS growth bounded by the queue (≤ stock's + 32 MB; same 2,048-span queue)",
            f"{num(growth, 1)} MB (stock {num(stock_growth, 1)} MB)",
            _verdict(None if growth is None or bound is None else growth <= bound),
        ]
    )
    return ["### Targets for ours", "", *table(["target", "measured", "verdict"], rows)]


def section_messages(results: Results) -> list[str]:
    """What each contender's workers printed (stderr and stdout), by distinct message."""
    lines = ["### Printed by the workers", ""]
    for label in NAMES | {"ours-disabled": "ours (is_enabled=False)"}:
        counts = [
            f"{scenario} {rows[label].get('stderr_lines', 0):,}"
            for scenario, rows in results.items()
            if label in rows and rows[label].get("stderr_lines")
        ]
        if not counts:
            continue
        shapes: dict[str, str] = {}  # numbers masked (ports, counts) -> first message
        for rows in results.values():
            for sample in rows.get(label, {}).get("stderr_sample", []):
                shapes.setdefault(re.sub(r"\d+", "#", sample), sample)
        samples = list(shapes.values())
        lines.append(f"- {label}: lines per scenario: {', '.join(counts)}. Distinct messages:")
        lines += [f"  - `{sample.replace('`', QUOTE)}`" for sample in samples[:8]]
    if len(lines) == 2:
        lines.append("Nothing.")
    return lines


# The scenarios the micro "Targets for ours" table judges.
MICRO_TARGETED = {"cost_sync", "cost_async", "disabled", "steady", "down", *FLOODS}


def render(
    results: Results,
    meta: dict[str, str],
    infos: dict[str, dict[str, str]],
    params: dict[str, dict[str, Any]],
) -> str:
    """The whole report."""
    versions = "; ".join(
        f"{label}: " + ", ".join(f"{k} {v}" for k, v in info.items() if k != "from")
        for label, info in infos.items()
        if info
    )
    lines = [
        f"## Benchmarks ({meta['mode']} mode, {datetime.date.today().isoformat()})",
        "",
        f"Python {meta['python']} on {meta['platform']}, {meta['cpus']} CPUs; "
        f"{meta['minutes']} min in total. Each contender/scenario pair ran in a fresh process; "
        "one local receiver process (aiohttp, OTLP protobuf and JSON) counted distinct "
        "span ids. Ratios compare runs of this same invocation.",
        f"Versions: {versions or NA}. Incumbent: {meta['incumbent']}.",
        "",
    ]
    if "cost_sync" in results or "cost_async" in results or "disabled" in results:
        lines += [*section_cost(results), ""]
    if "steady" in results:
        lines += [*section_steady(results, params["steady"]), ""]
    if any(scenario in results for scenario in FLOODS):
        lines += [*section_flood(results, params), ""]
    if "down" in results:
        lines += [*section_down(results, params["down"]), ""]
    if "garbage" in results:
        lines += [*section_garbage(results, params["garbage"]), ""]
    if set(results) & MICRO_TARGETED:
        lines += [*section_targets(results), ""]
    if "service" in results:
        from .service import report as service_report  # it imports this module's helpers

        lines += [*service_report.section(results["service"], params.get("service", {})), ""]
    if "instructions" in results:
        from .service import instructions

        lines += [*instructions.section(results["instructions"], params["instructions"]), ""]
    lines += section_messages(results)
    return "\n".join(lines) + "\n"
