"""Instructions per request: the service app's cost, counted the same way in every run.

CPU time on a shared machine moves from run to run by more than the differences between
two versions of a request path (the same code measured +19% and +30% over untraced on one
day). callgrind counts the instructions a process executes, which does not depend on what
else the machine is doing. So each contender's app (`count`: the service benchmark's app
and set-up, driven in-process through httpx's ASGI transport) runs under
``valgrind --tool=callgrind`` twice, with the same warm-up and ``small`` then ``large``
measured requests; the difference divided by ``large - small`` is the instructions one
request costs, start-up, warm-up and shutdown cancelling out. The two runs go side by
side (callgrind is single-threaded; one per CPU).

What it cannot see: cache misses and memory stalls (a pipeline that holds more memory
costs more time per instruction), and the export's timing (a batch exported by the
5 s timer rather than by size is counted where it falls). The service benchmark's CPU
per request is the figure that includes those; this one is the repeatable one.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.receiver import Receiver
from benchmarks.report import NA, num, ratio, table, times
from keywordsai_tracing.testing.llm_server import StandInLLMServer

from .loadgen import BODY, HEADERS
from .report import NAMES

COUNT = Path(__file__).resolve().parent / "count.py"
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")
TIMEOUT_S = 1800.0


def available() -> str | None:
    """Why callgrind cannot run here, or None."""
    if shutil.which("valgrind") is None:
        return "valgrind is not installed (Debian: apt-get install valgrind)"
    return None


def _count(
    python: str, spec: dict[str, Any], scratch: Path, label: str, requests: int, env: dict[str, str]
) -> int:
    """Instructions of one process serving ``requests`` measured requests."""
    spec_path = scratch / f"count-{label}-{requests}.json"
    spec_path.write_text(json.dumps({**spec, "requests": requests}))
    out = scratch / f"callgrind-{label}-{requests}.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        python,
        str(COUNT),
        str(spec_path),
    ]
    done = subprocess.run(
        command, cwd=scratch, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        # the program's own last line, not valgrind's summary (its lines start with ==pid==)
        own = [line for line in done.stderr.splitlines() if line and not line.startswith("==")]
        tail = (own or ["no output"])[-1]
        raise RuntimeError(f"{label}: the counted run failed: {tail[:200]}")
    answered = json.loads(done.stdout.strip().splitlines()[-1])["answered"]
    if answered != requests:
        raise RuntimeError(f"{label}: {answered} of {requests} requests answered")
    out.unlink(missing_ok=True)
    return int(found.group(1))


def run(
    labels: list[str],
    pythons: dict[str, str],
    params: dict[str, Any],
    scratch: Path,
    env: dict[str, str],
) -> dict[str, dict[str, Any]]:
    """label -> ``{"per_request": instructions}`` (or ``{"error": why}``)."""
    results: dict[str, dict[str, Any]] = {}
    small, large = int(params["small"]), int(params["large"])
    with Receiver() as receiver, StandInLLMServer() as llm:
        base = {
            "llm_url": llm.openai_base_url,
            "receiver_url": receiver.base_url,
            "warmup": int(params["warmup"]),
            "body": BODY,
            "headers": HEADERS,
        }
        for label in labels:
            python = pythons.get(label)
            if python is None:
                results[label] = {"error": "n/a: no interpreter for it"}
                continue
            spec = {**base, "contender": label}
            try:
                with concurrent.futures.ThreadPoolExecutor(2) as pool:
                    runs = [
                        pool.submit(_count, python, spec, scratch, label, n, env)
                        for n in (small, large)
                    ]
                    low, high = (future.result() for future in runs)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
                results[label] = {"error": str(error)}
                continue
            results[label] = {"per_request": (high - low) / (large - small)}
            print(
                f"[bench] instructions {label:<15} {results[label]['per_request'] / 1e6:.2f} M",
                file=sys.stderr,
                flush=True,
            )
    return results


LABELS = ("untraced", "stock", "incumbent", "ours")


def section(rows: dict[str, dict[str, Any]], params: dict[str, Any]) -> list[str]:
    """The Markdown section: instructions per request, and what tracing adds to them."""
    base = rows.get("untraced", {}).get("per_request")
    ours = rows.get("ours", {}).get("per_request")
    counted = isinstance(base, int | float)
    ours_added = ours - base if counted and isinstance(ours, int | float) else None
    body = []
    for label in LABELS:
        name = NAMES[label]
        result = rows.get(label)
        if result is None:
            continue
        if "error" in result:
            body.append([name, str(result["error"]), NA, NA, NA])
            continue
        value = result["per_request"]
        added = value - base if counted and label != "untraced" else None
        versus = times(ratio(added, ours_added)) if added is not None else NA
        body.append(
            [
                name,
                num(value / 1e6, 2),
                times(ratio(value, base)),
                NA if added is None else num(added / 1e6, 2),
                versus,
            ]
        )
    header = [
        "contender",
        "M instructions/request",
        "÷ untraced",
        "M added by tracing",
        "added ÷ ours added",
    ]
    return [
        "### (g) Instructions per request of the same app, counted by callgrind",
        "",
        "`python -m benchmarks.run --scenarios instructions`: the app of (e) with each "
        "contender's set-up, driven in-process through httpx's ASGI transport (no uvicorn), "
        f"under `valgrind --tool=callgrind`: {params.get('small')} and {params.get('large')} "
        f"requests after {params.get('warmup')} warm-up requests; the difference per request "
        "(start-up and shutdown cancel out). Instruction counts do not move with the "
        "machine's other load, so this is the figure to compare two versions of the code "
        "by; it does not see cache misses or memory stalls, which (e)'s CPU per request "
        "does. The client side of the ASGI transport is counted too, the same for all.",
        "",
        *table(header, body),
    ]
