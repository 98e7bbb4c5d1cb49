"""The service benchmark's harness (`benchmarks.service`), briefly: one contender, a low rate."""

from __future__ import annotations

from pathlib import Path

from benchmarks.run import PARAMS
from benchmarks.service import report, runner

SERVER_FIGURES = (
    "cpu_ms_per_request",
    "gc_full",
    "young_per_request",
    "gc_pause_max_ms",
    "lag_max_ms",
    "lag_p99_ms",
    "lag_over_50ms",
    "lag_over_100ms",
    "rss_bytes",
)


def test_service_bench_reports_every_figure_of_a_contender(tmp_path: Path) -> None:
    quick = PARAMS["service"][1]
    params = quick | {"rate": 20, "seconds": 1.5, "warmup_s": 0.3, "step_s": 0.5}
    params |= {"ramp_rates": [20], "pause_s": 0.1}

    results = runner.run(runner.Plan(params, ["ours"], tmp_path, pin=False))

    ours = results["ours"]
    assert "error" not in ours, ours["error"]
    assert ours["measured"]["ok"] == 30
    assert ours["measured"]["p50_ms"] > 0
    assert ours["measured"]["p99_ms"] >= ours["measured"]["p50_ms"]
    assert all(ours["stats"][key] is not None for key in SERVER_FIGURES), ours["stats"]
    assert ours["stats"]["young_per_request"] > 0  # every span lives until its export
    assert ours["startup_s"] > 0
    assert ours["setup"]["modules"] > 0
    assert ours["setup"]["gc_objects"] > 0
    assert ours["spans_expected"] == ours["served_total"] * 5
    assert ours["spans_unique"] > 0
    assert [step["offered_rps"] for step in ours["ramp"]["steps"]] == [20]
    text = "\n".join(report.section(results, params))
    assert report.NAMES["ours"] in text
    assert "#### Targets (issue #10 item 4)" in text


def _row(cpu_ms: float, p99_ms: float, lag_over_50: int, others_s: float) -> dict[str, object]:
    """A fixed-rate result as the runner returns it: 60 s of window, ``others_s`` CPU
    seconds taken by other processes on the server's CPU."""
    cpu_s = cpu_ms * 9
    return {
        "measured": {"p99_ms": p99_ms},
        "stats": {
            "cpu_ms_per_request": cpu_ms,
            "cpu_s": cpu_s,
            "seconds": 60.0,
            "server_cpu_busy_s": cpu_s + others_s,
            "lag_over_50ms": lag_over_50,
            "lag_max_ms": 40.0,
        },
    }


def test_targets_are_judged_against_a_quiet_baseline_only() -> None:
    quiet = {"untraced": _row(4.0, 15.0, 0, 0.6), "ours": _row(4.8, 25.0, 0, 0.6)}
    text = "\n".join(report.section_targets(quiet))
    assert "1.67x met" in text  # p99 within 2x
    assert "+20% met" in text  # CPU within +25%
    assert "not judged" not in text

    missed = {"untraced": _row(4.0, 15.0, 0, 0.6), "ours": _row(5.2, 45.0, 3, 0.6)}
    text = "\n".join(report.section_targets(missed))
    assert "3.00x **NOT met**" in text
    assert "+30% **NOT met**" in text

    # 9% of the server's CPU taken by other processes in untraced's window: a
    # baseline that slow makes every ratio look good, so nothing is judged against it.
    noisy = {"untraced": _row(4.0, 15.0, 0, 5.4), "ours": _row(4.8, 25.0, 0, 0.6)}
    text = "\n".join(report.section_targets(noisy))
    assert " met" not in text.replace("NOT met", "")
    assert text.count("not judged (disturbed run)") == 4
    assert report.disturbed(noisy)
