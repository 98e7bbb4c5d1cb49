"""The service benchmark's conductor: `run` returns each contender's figures.

Each contender gets fresh server processes (`server`): one per round at the fixed rate
(start-up figures, a warm-up, the measured window, then SIGTERM; delivery is counted once
it has exited) and one for the ramp. The ``rounds`` windows of the fixed rate (each
``seconds / rounds`` long) take turns in an order that reverses each round, and
`rounds.pool` merges a contender's windows, so a drift in the machine's speed weighs on
every contender alike. The stand-in LLM server runs on a thread of this process,
the span receiver in a process of its own. With two CPUs or more, the server under test
is pinned to the first, and this process (so the LLM server), the receiver and the load
generator to the second.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import incumbent_venv
from benchmarks.receiver import Receiver
from benchmarks.run import clean_env, stderr_summary
from keywordsai_tracing.testing.llm_server import StandInLLMServer

from .loadgen import BODY, HEADERS, REQUEST_TIMEOUT_S
from .rounds import order, pool
from .server import SPANS_PER_REQUEST

ROOT = Path(__file__).resolve().parents[2]
SERVER = Path(__file__).resolve().parent / "server.py"
SERVER_PACKAGES = ["fastapi", "uvicorn", "openai"]  # what the incumbent's venv needs too
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


class BenchError(Exception):
    """A server or load-generator failure that ends this contender's run."""


@dataclass
class Plan:
    """What to run and with what."""

    params: dict[str, Any]
    labels: list[str]
    scratch: Path
    incumbent_python: Path | None = None
    incumbent_note: str = "not requested"
    pin: bool = True
    cpus: tuple[int | None, int | None] = (None, None)  # (server, helpers), set by `run`
    env: dict[str, str] = field(default_factory=clean_env)


@dataclass
class Helpers:
    """The processes and threads every contender's server talks to."""

    receiver: Receiver
    llm: StandInLLMServer


@contextlib.contextmanager
def pinned(plan: Plan) -> Iterator[None]:
    """Pin this process (and so every helper it starts) to the second CPU, keeping the
    first for the server; restore the affinity after. Sets ``plan.cpus``."""
    if not plan.pin or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    if len(before) < 2:
        yield
        return
    server, helpers = sorted(before)[:2]
    plan.cpus = (server, helpers)
    os.sched_setaffinity(0, {helpers})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def call(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One JSON request with urllib; the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(HEADERS))
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def wait_ready(process: subprocess.Popen[bytes], base_url: str, started: float) -> float:
    """Seconds from ``started`` to the first answered ``POST /ask``."""
    while time.monotonic() - started < START_TIMEOUT_S:
        if process.poll() is not None:
            raise BenchError(f"server exited during start-up (code {process.returncode})")
        try:
            call("POST", f"{base_url}/ask", BODY)
        except (ConnectionError, urllib.error.URLError):
            time.sleep(0.005)
            continue
        return time.monotonic() - started
    raise BenchError(f"server not answering after {START_TIMEOUT_S:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> tuple[float | None, int | None]:
    """SIGTERM (uvicorn's graceful shutdown), then kill after `STOP_TIMEOUT_S`: the
    seconds to exit (None if killed) and the exit code."""
    if process.poll() is not None:
        return 0.0, process.returncode
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None, process.returncode
    return time.monotonic() - began, process.returncode


def load(plan: Plan, mode: str, base_url: str, seconds: float | None = None) -> dict[str, Any]:
    """Run the load generator (`loadgen`) in its own process; its JSON result. A fixed-rate
    window lasts ``seconds`` (default: the plan's)."""
    params = {**plan.params, **({} if seconds is None else {"seconds": seconds})}
    spec = {**params, "mode": mode, "base_url": base_url}
    spec |= {"cpu": plan.cpus[1], "server_cpu": plan.cpus[0]}
    spec_path = plan.scratch / f"loadgen-{mode}.json"
    spec_path.write_text(json.dumps(spec))
    if mode == "fixed":
        windows = [params["warmup_s"], params["seconds"]]
    else:
        windows = [params["warmup_s"], *[params["step_s"]] * len(params["ramp_rates"])]
    # each window waits for its late answers; the measurement calls may be slow (overload)
    budget = sum(windows) + len(windows) * (REQUEST_TIMEOUT_S + params["pause_s"]) + 300
    command = [sys.executable, "-m", "benchmarks.service.loadgen", str(spec_path)]
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=plan.env, capture_output=True, text=True, timeout=budget
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"load generator still running after {budget:.0f} s") from error
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"load generator failed: {tail[:200]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def serve(
    plan: Plan, helpers: Helpers, label: str, mode: str, seconds: float | None = None
) -> dict[str, Any]:
    """One server process of ``label``: start it, load it (``mode``; a fixed-rate window of
    ``seconds``), stop it, count."""
    python = sys.executable
    if label == "incumbent":  # absolute, symlinks kept: the venv's python is a symlink
        python = os.path.abspath(plan.incumbent_python or "")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    spec = {
        "contender": label,
        "port": port,
        "llm_url": helpers.llm.openai_base_url,
        "receiver_url": helpers.receiver.base_url,
        "cpu": plan.cpus[0],
    }
    spec_path = plan.scratch / f"{label}-{mode}.json"
    spec_path.write_text(json.dumps(spec))
    log_path = plan.scratch / f"{label}-{mode}.log"
    helpers.receiver.reset()
    result: dict[str, Any] = {}
    with log_path.open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            [python, str(SERVER), str(spec_path)],
            cwd=plan.scratch,
            env=plan.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        result["startup_s"] = wait_ready(process, base_url, started)
        result.update(load(plan, mode, base_url, seconds))
        final = call("GET", f"{base_url}/_bench/stats")
        result["served_total"] = final["served_total"]
        result["setup"] = final["setup"]
        result["versions"] = final["versions"]
    except (BenchError, OSError, ValueError) as error:
        result["error"] = str(error) or type(error).__name__
    finally:
        result["exit_s"], result["returncode"] = stop(process)
        helpers.llm.clear_requests()
    tally = helpers.receiver.count()
    result["spans_received"] = tally["spans"]
    result["spans_unique"] = tally["unique"]
    if "served_total" in result and label != "untraced":
        result["spans_expected"] = result["served_total"] * SPANS_PER_REQUEST
    output = log_path.read_text(errors="replace")
    result["stderr_lines"], result["stderr_sample"] = stderr_summary(output)
    return result


def prepare_incumbent(plan: Plan, extra: tuple[str, ...] = ()) -> str | None:
    """Why the incumbent cannot run, or None once its venv has the server's packages
    (and ``extra`` ones), at the versions installed here."""
    if plan.incumbent_python is None:
        return f"n/a: {plan.incumbent_note}"
    names = [*SERVER_PACKAGES, *extra]
    wanted = [f"{name}=={metadata.version(name)}" for name in names]
    problem = incumbent_venv.add_packages(plan.incumbent_python, wanted, names)
    return None if problem is None else f"n/a: {problem}"


def run(plan: Plan) -> dict[str, dict[str, Any]]:
    """Every label of the plan: label -> its pooled fixed-rate figures (`rounds.pool`),
    with the ramp's under ``"ramp"``."""
    results: dict[str, dict[str, Any]] = {}
    if "incumbent" in plan.labels:
        problem = prepare_incumbent(plan)
        if problem is not None:
            results["incumbent"] = {"error": problem}
    labels = [label for label in plan.labels if label not in results]
    rounds = max(1, int(plan.params.get("rounds", 1)))
    window_s = plan.params["seconds"] / rounds
    windows: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    with pinned(plan), Receiver() as receiver, StandInLLMServer() as llm:
        helpers = Helpers(receiver, llm)
        for round_index in range(rounds):
            for label in order(labels, round_index):
                if any("error" in window for window in windows[label]):
                    continue  # a contender that failed once is not run again
                began = time.monotonic()
                window = serve(plan, helpers, label, "fixed", window_s)
                windows[label].append(window)
                status = window.get("error") or f"{time.monotonic() - began:.1f} s"
                print(
                    f"[bench] service    {label:<15} round {round_index + 1}/{rounds} {status}",
                    file=sys.stderr,
                    flush=True,
                )
        for label in labels:
            result = pool(windows[label])
            if "error" not in result:
                began = time.monotonic()
                result["ramp"] = serve(plan, helpers, label, "ramp")
                status = result["ramp"].get("error") or f"{time.monotonic() - began:.1f} s"
                print(f"[bench] service    {label:<15} ramp {status}", file=sys.stderr, flush=True)
            results[label] = result
    for result in results.values():
        result["cpus"] = list(plan.cpus)
    return {label: results[label] for label in plan.labels if label in results}
