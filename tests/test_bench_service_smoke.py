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
