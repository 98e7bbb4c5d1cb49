"""Run every contender/scenario pair in its own subprocess and report: ``python -m benchmarks.run``.

Options: ``--quick`` (smaller counts), ``--scenarios``/``--contenders`` (subsets),
``--incumbent-python`` (an interpreter that already has keywordsai-tracing 0.0.59; by
default ``.bench-venvs/incumbent`` is used, created if missing). The report goes to stdout
and to ``benchmarks/results.md``; progress goes to stderr.

The ``service`` scenario (`benchmarks.service`: a FastAPI app under uvicorn at a fixed
rate, then a ramp) always runs an untraced server next to the chosen contenders; its
measured time is ``--set service.seconds=N`` (default 120, in ``service.rounds=2`` windows
of 60 s that the contenders take in turns; quick 10 in one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import incumbent_venv, report
from .receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "_worker.py"

# the service: ``rate`` req/s for ``seconds`` (in ``rounds`` windows, the contenders taking
# turns) after a warm-up each; then the ramp, each rate for
# ``step_s`` until one is not sustained (answered ≥ min_share of offered, p99 ≤ the bound)
SERVICE = {"rate": 150, "pause_s": 0.5, "p99_bound_ms": 250.0, "min_share": 0.95}
RAMP = [50, 75, 100, 125, 150, 200, 250, 300, 400, 500, 600, 800, 1000]
QUICK_RAMP = [50, 100, 150, 200, 300, 400, 600, 800, 1000]

# scenario -> (default params, quick params)
PARAMS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "cost_sync": ({"units": 20_000, "rounds": 5}, {"units": 3_000, "rounds": 3}),
    "cost_async": ({"units": 20_000, "rounds": 5}, {"units": 3_000, "rounds": 3}),
    "disabled": ({"calls": 200_000, "rounds": 7}, {"calls": 50_000, "rounds": 3}),
    "steady": (
        {"rate": 20_000, "seconds": 5.0, "producers": 10},
        {"rate": 20_000, "seconds": 2.0, "producers": 10},
    ),
    # (c) at three levels of concurrency: an export task on the loop gets one turn per
    # round of the loop, so its share falls as coroutines ending spans multiply.
    "flood_c1": ({"spans": 100_000, "concurrency": 1}, {"spans": 20_000, "concurrency": 1}),
    "flood_c10": ({"spans": 100_000, "concurrency": 10}, {"spans": 20_000, "concurrency": 10}),
    "flood_c50": ({"spans": 100_000, "concurrency": 50}, {"spans": 20_000, "concurrency": 50}),
    "down": ({"spans": 200_000, "concurrency": 10}, {"spans": 40_000, "concurrency": 10}),
    "garbage": ({"held_units": 100, "units": 25_000}, {"held_units": 100, "units": 5_000}),
    # (g) instructions per request: ``small`` then ``large`` requests after a warm-up
    "instructions": (
        {"warmup": 20, "small": 20, "large": 120},
        {"warmup": 10, "small": 10, "large": 40},
    ),
    "service": (
        {
            **SERVICE,
            "seconds": 120.0,
            "rounds": 2,
            "warmup_s": 5.0,
            "step_s": 3.0,
            "ramp_rates": RAMP,
        },
        {
            **SERVICE,
            "seconds": 10.0,
            "rounds": 1,
            "warmup_s": 2.0,
            "step_s": 1.5,
            "ramp_rates": QUICK_RAMP,
        },
    ),
}
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:,.]+\s*(- )?")
_DIGITS = re.compile(r"\d+")

# scenario -> the workload function it runs (by default, the scenario's own name)
WORKLOAD = {"flood_c1": "flood", "flood_c10": "flood", "flood_c50": "flood"}

# row label -> (contender module, options)
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("none", {}),
    "stock": ("stock", {}),
    "incumbent": ("incumbent", {}),
    "ours": ("ours", {}),
    "ours-nocontent": ("ours", {"trace_content": False}),
    "ours-disabled": ("ours", {"enabled": False}),
    "ours-freeze": ("ours", {}),  # the service scenario only: `telemetry_lifespan(freeze_gc=True)`
}

SCENARIO_ROWS: dict[str, list[str]] = {
    "cost_sync": ["none", "stock", "incumbent", "ours", "ours-nocontent"],
    "cost_async": ["none", "stock", "incumbent", "ours", "ours-nocontent"],
    "disabled": ["ours-disabled"],
    "steady": ["none", "stock", "incumbent", "ours"],
    "flood_c1": ["none", "stock", "incumbent", "ours"],
    "flood_c10": ["none", "stock", "incumbent", "ours"],
    "flood_c50": ["none", "stock", "incumbent", "ours"],
    "down": ["none", "stock", "incumbent", "ours"],
    "garbage": ["none", "stock", "incumbent", "ours", "ours-nocontent"],
}

# scenario -> runs per contender in default mode (quick mode: one); numbers are medians
REPEATS = {"cost_sync": 3, "cost_async": 3, "steady": 3}
TIMEOUT_S = {"down": 150.0}
DEFAULT_TIMEOUT_S = 120.0


@dataclass
class Environment:
    """What every run needs: interpreters, receiver, a scratch folder."""

    receiver: Receiver
    scratch: Path
    incumbent_python: Path | None
    incumbent_note: str
    dead_url: str
    quick: bool
    infos: dict[str, dict[str, str]] = field(default_factory=dict)


def dead_url() -> str:
    """A loopback URL on a port nobody listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def clean_env() -> dict[str, str]:
    """This environment minus settings that would change any contender's defaults."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "KEYWORDSAI_", "TRACELOOP_", "PYTHON"))
    }


def stderr_summary(output: str, limit: int = 6) -> tuple[int, list[str]]:
    """Line count and up to ``limit`` distinct messages of a worker's output.

    Messages are told apart with timestamps and numbers masked, and shortened.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    shapes: dict[str, str] = {}
    for line in lines:
        message = _TIMESTAMP.sub("", line)
        shape = _DIGITS.sub("#", message)
        if shape not in shapes:
            shapes[shape] = message[:160]
            if len(shapes) == limit:
                break
    return len(lines), list(shapes.values())


def run_one(env: Environment, scenario: str, label: str) -> dict[str, Any]:
    """One contender/scenario pair in a fresh worker process."""
    kind, options = ROWS[label]
    if kind == "incumbent" and env.incumbent_python is None:
        return {"error": f"n/a: {env.incumbent_note}"}
    python = str(env.incumbent_python) if kind == "incumbent" else sys.executable
    default, quick = PARAMS[scenario]
    params = dict(quick if env.quick else default)
    base_url: str | None = None
    if kind != "none":
        base_url = env.dead_url if scenario == "down" else env.receiver.base_url
    if scenario != "down" and base_url is not None:
        params["control_url"] = env.receiver.base_url
    result_path = env.scratch / f"{scenario}-{label}.json"
    spec_path = env.scratch / f"{scenario}-{label}.spec.json"
    spec = {
        "contender": kind,
        "scenario": WORKLOAD.get(scenario, scenario),
        "options": {"base_url": base_url, **options},
        "params": params,
        "result_path": str(result_path),
    }
    spec_path.write_text(json.dumps(spec))
    env.receiver.reset()
    timeout = TIMEOUT_S.get(scenario, DEFAULT_TIMEOUT_S)
    started = time.time()
    process = subprocess.Popen(
        [python, str(WORKER), str(spec_path)],
        cwd=env.scratch,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    killed = False
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        killed = True
    exited = time.time()
    result: dict[str, Any] = {}
    if result_path.exists():
        result = json.loads(result_path.read_text())
    else:
        why = f"killed after {timeout:.0f} s" if killed else f"exit code {process.returncode}"
        result["error"] = f"no result ({why})"
    if "end_of_work" in result:
        result["exit_s"] = exited - result["end_of_work"]
    result["killed"] = killed
    result["returncode"] = process.returncode
    result["wall_s"] = exited - started
    result["stderr_lines"], result["stderr_sample"] = stderr_summary(stderr + stdout)
    if base_url is not None and scenario != "down":
        by_exit = env.receiver.count()["unique"] - result.get("unique_before", 0)
        result["unique_by_exit"] = by_exit
    if "info" in result:
        env.infos.setdefault(label, result["info"])
    return result


def run_interleaved(env: Environment, scenario: str, labels: list[str]) -> dict[str, Any]:
    """Each label's run ``REPEATS`` times, round-robin: a slow spell of this shared
    machine then hits every contender alike. Returns label -> merged result."""
    repeats = 1 if env.quick else REPEATS.get(scenario, 1)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for _ in range(repeats):
        for label in labels:
            result = run_one(env, scenario, label)
            runs[label].append(result)
            status = result.get("error") or f"{result['wall_s']:.1f} s"
            print(f"[bench] {scenario:<10} {label:<15} {status}", file=sys.stderr, flush=True)
    return {label: _merge(label_runs) for label, label_runs in runs.items()}


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each number over the good runs; each run's p99 and delivery kept."""
    good = [run for run in runs if "error" not in run]
    if len(runs) == 1 or not good:
        return runs[0]
    merged = dict(good[0])
    for key, value in good[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values = [run[key] for run in good if isinstance(run.get(key), int | float)]
            merged[key] = statistics.median(values)
    merged["runs"] = len(good)
    merged["p99_ms_runs"] = [run.get("p99_ms") for run in good]
    merged["delivered_runs"] = [
        run["unique"] / run["produced"] for run in good if run.get("unique") is not None
    ]
    return merged


def run_service(env: Environment, contenders: list[str]) -> dict[str, Any]:
    """The service scenario: untraced, then those of stock, incumbent, ours chosen."""
    from .service import runner  # imports this module: loaded only when asked for

    traced = [
        label for label in ("stock", "incumbent", "ours", "ours-freeze") if label in contenders
    ]
    default, quick = PARAMS["service"]
    plan = runner.Plan(
        params=dict(quick if env.quick else default),
        labels=["untraced", *traced],
        scratch=env.scratch,
        incumbent_python=env.incumbent_python,
        incumbent_note=env.incumbent_note,
    )
    return runner.run(plan)


def run_instructions(env: Environment, contenders: list[str]) -> dict[str, Any]:
    """The instructions scenario: untraced, then those of stock, incumbent, ours chosen."""
    from .service import instructions, runner  # they import this module

    why = instructions.available()
    if why is not None:
        return {"untraced": {"error": f"n/a: {why}"}}
    labels = ["untraced", *(x for x in ("stock", "incumbent", "ours") if x in contenders)]
    pythons = dict.fromkeys(labels, sys.executable)
    if "incumbent" in labels:
        plan = runner.Plan(
            params={},
            labels=["incumbent"],
            scratch=env.scratch,
            incumbent_python=env.incumbent_python,
            incumbent_note=env.incumbent_note,
        )
        problem = runner.prepare_incumbent(plan, extra=("httpx",))  # count.py drives httpx
        if problem is None and env.incumbent_python is not None:
            pythons["incumbent"] = os.path.abspath(env.incumbent_python)
        else:
            pythons.pop("incumbent")
    default, quick = PARAMS["instructions"]
    params = quick if env.quick else default
    return instructions.run(labels, pythons, params, env.scratch, clean_env())


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the plan, print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts, for iterating")
    parser.add_argument("--scenarios", nargs="+", choices=list(PARAMS), default=list(PARAMS))
    parser.add_argument("--contenders", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--incumbent-python", type=Path, default=None)
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="SCENARIO.KEY=VALUE",
        help="override a parameter, e.g. flood.concurrency=10 (reported in the tables)",
    )
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results.md")
    args = parser.parse_args(argv)

    for override in args.set:
        target, _, value = override.partition("=")
        scenario, _, key = target.partition(".")
        for params in PARAMS[scenario]:
            params[key] = json.loads(value)
    incumbent_python: Path | None = None
    note = "not requested"
    if "incumbent" in args.contenders:
        incumbent_python, note = incumbent_venv.ensure(
            ROOT / ".bench-venvs" / "incumbent", args.incumbent_python
        )
        print(f"[bench] incumbent: {note}", file=sys.stderr, flush=True)

    results: dict[str, dict[str, dict[str, Any]]] = {}
    began = time.monotonic()
    with (
        Receiver() as receiver,
        tempfile.TemporaryDirectory(prefix="kai-bench-") as scratch,
    ):
        env = Environment(receiver, Path(scratch), incumbent_python, note, dead_url(), args.quick)
        for scenario in args.scenarios:
            if scenario == "service":
                results[scenario] = run_service(env, args.contenders)
                continue
            if scenario == "instructions":
                results[scenario] = run_instructions(env, args.contenders)
                continue
            labels = [label for label in SCENARIO_ROWS[scenario] if label in args.contenders]
            results[scenario] = run_interleaved(env, scenario, labels)
    meta = {
        "mode": "quick" if args.quick else "default",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "incumbent": note,
        "minutes": f"{(time.monotonic() - began) / 60:.1f}",
    }
    text = report.render(
        results, meta, env.infos, {k: v[1 if args.quick else 0] for k, v in PARAMS.items()}
    )
    print(text)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
