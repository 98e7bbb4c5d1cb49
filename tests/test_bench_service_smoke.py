"""The service benchmark's harness (`benchmarks.service`), briefly: one contender, a low
rate, two windows pooled; and the pooling and the targets on made-up windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.run import PARAMS
from benchmarks.service import report, rounds, runner

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
    params = quick | {"rate": 20, "seconds": 3.0, "rounds": 2, "warmup_s": 0.3, "step_s": 0.5}
    params |= {"ramp_rates": [20], "pause_s": 0.1}

    results = runner.run(runner.Plan(params, ["ours"], tmp_path, pin=False))

    ours = results["ours"]
    assert "error" not in ours, ours["error"]
    assert ours["windows"] == 2
    assert ours["measured"]["ok"] == 60  # two windows of 1.5 s at 20 req/s, pooled
    assert rounds.LATENCIES not in ours["measured"]  # raw samples are not reported
    assert rounds.LAGS not in ours["stats"]
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
    assert "2 windows of 1.5 s per contender" in text


def test_the_contenders_take_turns_in_an_order_that_reverses_each_round() -> None:
    labels = ["untraced", "stock", "ours"]
    assert [rounds.order(labels, index) for index in range(3)] == [
        labels,
        labels[::-1],
        labels,
    ]


def _window(latencies: list[float], lags: list[float], cpu_s: float, served: int) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "startup_s": 2.0,
        "exit_s": 0.2,
        "returncode": 0,
        "served_total": served + 10,
        "spans_received": served * 5,
        "spans_unique": served * 5,
        "spans_expected": (served + 10) * 5,
        "stderr_lines": 0,
        "stderr_sample": [],
        "measured": {
            "offered_rps": 150,
            "seconds": 60.0,
            "sent": len(ordered),
            "ok": len(ordered),
            "failed": 0,
            "failures": {},
            "achieved_rps": len(ordered) / 60.0,
            "p50_ms": rounds.pick(ordered, 0.5),
            "p99_ms": rounds.pick(ordered, 0.99),
            "max_ms": ordered[-1],
            "send_late_max_ms": 1.0,
            rounds.LATENCIES: ordered,
        },
        "stats": {
            "served": served,
            "served_total": served + 10,
            "seconds": 60.0,
            "cpu_s": cpu_s,
            "cpu_ms_per_request": cpu_s * 1000 / served,
            "gc_collections": [10, 1, 0],
            "young_per_request": 40.0,
            "gc_full": 0,
            "gc_pause_max_ms": 3.0,
            "gc_full_pause_max_ms": 0.0,
            "gc_pause_total_ms": 30.0,
            "lag_samples": len(lags),
            "lag_p50_ms": rounds.pick(sorted(lags), 0.5),
            "lag_p99_ms": rounds.pick(sorted(lags), 0.99),
            "lag_max_ms": max(lags),
            "lag_over_50ms": sum(1 for lag in lags if lag > 50),
            "lag_over_100ms": sum(1 for lag in lags if lag > 100),
            "rss_bytes": 100,
            rounds.LAGS: sorted(lags),
        },
    }


SAMPLES = st.lists(st.floats(min_value=0.1, max_value=500.0), min_size=1, max_size=200)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(SAMPLES, SAMPLES, st.integers(1, 20_000)), min_size=1, max_size=4))
def test_pooled_windows_read_as_one_window_of_every_sample(
    windows: list[tuple[list[float], list[float], int]],
) -> None:
    made = [_window(lat, lags, served / 1000 * 4.5, served) for lat, lags, served in windows]
    pooled = rounds.pool(made)
    every_latency = sorted(x for lat, _, _ in windows for x in lat)
    every_lag = sorted(x for _, lags, _ in windows for x in lags)
    served = sum(served for _, _, served in windows)
    assert pooled["windows"] == len(windows)
    assert pooled["measured"]["ok"] == len(every_latency)
    assert pooled["measured"]["p99_ms"] == rounds.pick(every_latency, 0.99)
    assert pooled["measured"]["max_ms"] == every_latency[-1]
    assert pooled["stats"]["lag_p99_ms"] == rounds.pick(every_lag, 0.99)
    assert pooled["stats"]["lag_over_50ms"] == sum(1 for lag in every_lag if lag > 50)
    assert abs(pooled["stats"]["cpu_ms_per_request"] - 4.5) < 1e-9
    assert pooled["stats"]["served"] == served
    assert pooled["stats"]["gc_collections"] == [10 * len(windows), len(windows), 0]
    assert pooled["spans_expected"] == sum((s + 10) * 5 for _, _, s in windows)
    assert rounds.LATENCIES not in pooled["measured"]
    assert rounds.LAGS not in pooled["stats"]
    if len(windows) == 1:  # one window pools to its own figures
        only = made[0]
        for key in ("p50_ms", "p99_ms", "max_ms", "ok"):
            assert pooled["measured"][key] == only["measured"][key]
        for key in ("lag_p99_ms", "lag_max_ms", "cpu_ms_per_request", "gc_full"):
            assert pooled["stats"][key] == only["stats"][key]


def test_a_window_that_failed_fails_the_contender() -> None:
    good = _window([5.0], [1.0], 1.0, 100)
    assert rounds.pool([good, {"error": "server died"}]) == {"error": "server died"}


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


def test_the_counted_app_answers_every_request_and_spans_arrive(tmp_path: Path) -> None:
    """`count.py` (what callgrind runs for (g)) serves the service app in-process, here
    without valgrind: every measured request is answered and ours exports its spans."""
    import json
    import subprocess
    import sys

    from benchmarks.receiver import Receiver
    from benchmarks.service import instructions
    from benchmarks.service.loadgen import BODY, HEADERS
    from keywordsai_tracing.testing.llm_server import StandInLLMServer

    with Receiver() as receiver, StandInLLMServer() as llm:
        spec = {
            "contender": "ours",
            "llm_url": llm.openai_base_url,
            "receiver_url": receiver.base_url,
            "warmup": 2,
            "requests": 3,
            "body": BODY,
            "headers": HEADERS,
        }
        spec_path = tmp_path / "spec.json"
        spec_path.write_text(json.dumps(spec))
        done = subprocess.run(
            [sys.executable, str(instructions.COUNT), str(spec_path)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {"answered": 3}
        assert receiver.count()["unique"] == (2 + 3) * 5  # the lifespan's shutdown flushed


def test_the_instructions_section_reports_what_tracing_adds() -> None:
    from benchmarks.service import instructions

    rows = {
        "untraced": {"per_request": 10e6},
        "stock": {"per_request": 13e6},
        "ours": {"per_request": 11.5e6},
        "incumbent": {"error": "n/a: not requested"},
    }
    text = "\n".join(instructions.section(rows, PARAMS["instructions"][0]))
    assert "| ours (`telemetry_lifespan` + middleware) | 11.50 | 1.15x | 1.50 | 1.00x |" in text
    assert (
        "| stock OTel (BSP + OTLP/HTTP + OpenAIInstrumentor) | 13.00 | 1.30x | 3.00 | 2.00x |"
        in text
    )
    assert "n/a: not requested" in text


def test_the_instructions_scenario_says_why_without_valgrind(
    tmp_path: Path, monkeypatch: Any
) -> None:
    import shutil

    from benchmarks import run

    monkeypatch.setattr(shutil, "which", lambda name: None)
    env = run.Environment(None, tmp_path, None, "not requested", "", True)  # type: ignore[arg-type]
    result = run.run_instructions(env, ["ours"])
    assert result == {
        "untraced": {"error": "n/a: valgrind is not installed (Debian: apt-get install valgrind)"}
    }
