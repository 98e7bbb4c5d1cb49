"""The service under test: ``python benchmarks/service/server.py SPEC.json`` (run by `runner`).

A FastAPI app served by uvicorn (one worker, asyncio loop, h11). ``POST /ask`` runs the
``ask`` workflow, which awaits three tasks; the second calls the stand-in LLM with the
real ``AsyncOpenAI`` client (5 spans a request once the OpenAI call is instrumented). The
contender's set-up (`SETUPS`) supplies the ``workflow``/``task`` decorators and, for
ours, the lifespan and middleware; the app code is the same for all.

``GET /_bench/stats`` reports the window since ``POST /_bench/reset``: process CPU (every
thread) and requests served; garbage collections (``gc.callbacks``); event-loop lag (a
10 ms ``asyncio.sleep`` probe: how late it wakes); RSS now; and, measured once at start,
what the tracing set-up added (modules, gc-tracked objects, RSS; fastapi, openai and
uvicorn were imported before, for every contender).

Started as a script, not with ``-m``: the incumbent's interpreter must import its own
``keywordsai_tracing``, not this checkout. The top imports only the standard library, and
there is no ``from __future__ import annotations``: FastAPI reads the handlers'
annotations, which name classes local to `build_app`.
"""

import asyncio
import contextlib
import functools
import gc
import inspect
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SPANS_PER_REQUEST = 5  # ask.workflow, three tasks, the OpenAI call's span
LAG_PROBE_S = 0.010
MODEL = "gpt-4o-mini"
APP_NAME = "bench-service"
VERSIONS = (
    "keywordsai-tracing",
    "keywordsai-tracing-async",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-openai",
    "openai",
    "fastapi",
    "uvicorn",
)

Decorator = Callable[..., Callable[[Callable[..., Any]], Callable[..., Any]]]
Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def rss_bytes() -> int:
    """The resident set size of this process (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def footprint() -> dict[str, int]:
    """Modules loaded, gc-tracked objects (frozen ones too) and RSS, after a full collection."""
    gc.collect()
    objects = len(gc.get_objects()) + gc.get_freeze_count()
    return {"modules": len(sys.modules), "gc_objects": objects, "rss": rss_bytes()}


def cpu_seconds() -> float:
    """User + system CPU time of this process, every thread."""
    times = os.times()
    return times.user + times.system


class Probes:
    """What the process measures about itself, per window (`reset` starts one)."""

    def __init__(self) -> None:
        self.served_total = 0
        self._gc_started = 0.0
        self.reset()
        gc.callbacks.append(self._on_gc)

    def reset(self) -> None:
        """Start a new window."""
        self.served = 0
        self.cpu_start = cpu_seconds()
        self.wall_start = time.monotonic()
        self.collections = [0, 0, 0]
        self.gc_pause_max = 0.0
        self.full_pause_max = 0.0
        self.gc_pause_total = 0.0
        self.lags: list[float] = []
        # gc-tracked objects allocated and not yet freed when a collection starts, summed:
        # what the requests left for the collector (allocations freed at once cost it nothing)
        self.young = -gc.get_count()[0]

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.young += gc.get_count()[0]  # the young count before this collection resets it
            self._gc_started = time.perf_counter()
            return
        pause = time.perf_counter() - self._gc_started
        generation = info["generation"]
        self.collections[generation] += 1
        self.gc_pause_total += pause
        self.gc_pause_max = max(self.gc_pause_max, pause)
        if generation == 2:
            self.full_pause_max = max(self.full_pause_max, pause)

    async def probe_lag(self) -> None:
        """Sleep 10 ms in a loop and record how late each wake-up is, for ever."""
        clock = time.perf_counter
        while True:
            start = clock()
            await asyncio.sleep(LAG_PROBE_S)
            self.lags.append(clock() - start - LAG_PROBE_S)

    def stats(self) -> dict[str, Any]:
        """The window's figures (times in ms)."""
        lags = sorted(self.lags)

        def pick(q: float) -> float:
            return lags[min(len(lags) - 1, int(q * len(lags)))] * 1000 if lags else 0.0

        cpu = cpu_seconds() - self.cpu_start
        return {
            "served": self.served,
            "served_total": self.served_total,
            "seconds": time.monotonic() - self.wall_start,
            "cpu_s": cpu,
            "cpu_ms_per_request": cpu * 1000 / self.served if self.served else None,
            "gc_collections": list(self.collections),
            "young_per_request": (
                (self.young + gc.get_count()[0]) / self.served if self.served else None
            ),
            "gc_full": self.collections[2],
            "gc_pause_max_ms": self.gc_pause_max * 1000,
            "gc_full_pause_max_ms": self.full_pause_max * 1000,
            "gc_pause_total_ms": self.gc_pause_total * 1000,
            "lag_samples": len(lags),
            "lag_p50_ms": pick(0.50),
            "lag_p99_ms": pick(0.99),
            "lag_max_ms": lags[-1] * 1000 if lags else 0.0,
            "lag_over_50ms": sum(1 for lag in lags if lag > 0.050),
            "lag_over_100ms": sum(1 for lag in lags if lag > 0.100),
            "lags_ms": [round(lag * 1000, 3) for lag in lags],  # for pooling windows
            "rss_bytes": rss_bytes(),
        }


# -- the contenders' set-ups ------------------------------------------------------------------


@dataclass
class Setup:
    """What a contender gives the app: its decorators, and a lifespan to run it in."""

    workflow: Decorator
    task: Decorator
    lifespan: Lifespan | None = None


def setup_untraced(spec: dict[str, Any], app: Any) -> Setup:
    """Our SDK with ``is_enabled=False``: decorators present, nothing traced."""
    from keywordsai_tracing import KeywordsAITelemetry, task, workflow

    KeywordsAITelemetry(app_name=APP_NAME, is_enabled=False)
    return Setup(workflow, task)


def setup_stock(spec: dict[str, Any], app: Any) -> Setup:
    """The OpenTelemetry SDK: BatchSpanProcessor, OTLP/HTTP protobuf, OpenAIInstrumentor."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": APP_NAME}))
    exporter = OTLPSpanExporter(endpoint=f"{spec['receiver_url']}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    OpenAIInstrumentor().instrument()
    tracer = trace.get_tracer("bench")

    def decorator(kind: str) -> Decorator:
        def named(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
            def wrap(function: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
                span_name = f"{name}.{kind}"

                @functools.wraps(function)
                async def traced(*args: Any, **kwargs: Any) -> Any:
                    with tracer.start_as_current_span(span_name):
                        return await function(*args, **kwargs)

                return traced

            return wrap

        return named

    return Setup(decorator("workflow"), decorator("task"))


def setup_incumbent(spec: dict[str, Any], app: Any) -> Setup:
    """keywordsai-tracing 0.0.59 as its README shows (default instruments)."""
    from keywordsai_tracing import KeywordsAITelemetry, task, workflow

    KeywordsAITelemetry(app_name=APP_NAME, base_url=spec["receiver_url"], api_key="bench")
    return Setup(workflow, task)


def setup_ours(spec: dict[str, Any], app: Any, freeze_gc: bool = False) -> Setup:
    """Ours as its README shows for FastAPI: `telemetry_lifespan` and the middleware."""
    from keywordsai_tracing import Instruments, task, workflow
    from keywordsai_tracing.integrations.asgi import (
        KeywordsAIMiddleware,
        header,
        telemetry_lifespan,
    )

    app.add_middleware(
        KeywordsAIMiddleware,
        params=lambda scope: {"customer_identifier": header(scope, "x-customer-id")},
    )
    lifespan = telemetry_lifespan(
        app_name=APP_NAME,
        api_key="bench",
        base_url=spec["receiver_url"],
        instruments={Instruments.OPENAI},
        freeze_gc=freeze_gc,
    )
    return Setup(workflow, task, lifespan)


def setup_ours_frozen(spec: dict[str, Any], app: Any) -> Setup:
    """Ours as the README recommends for a service: the same, with ``freeze_gc=True``."""
    return setup_ours(spec, app, freeze_gc=True)


SETUPS: dict[str, Callable[[dict[str, Any], Any], Setup]] = {
    "untraced": setup_untraced,
    "stock": setup_stock,
    "incumbent": setup_incumbent,
    "ours": setup_ours,
    "ours-freeze": setup_ours_frozen,
}


# -- the app ----------------------------------------------------------------------------------


def build_pipeline(setup: Setup, client: Any) -> Callable[[str], Awaitable[dict[str, Any]]]:
    """The traced code: a workflow awaiting three tasks, the second calling the LLM."""
    workflow, task = setup.workflow, setup.task

    @task(name="prepare")
    async def prepare(question: str) -> list[dict[str, str]]:
        await asyncio.sleep(0)  # as a cache or database look-up would yield
        return [
            {"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": question},
        ]

    @task(name="ask_llm")
    async def ask_llm(messages: list[dict[str, str]]) -> str:
        completion = await client.chat.completions.create(model=MODEL, messages=messages)
        return str(completion.choices[0].message.content or "")

    @task(name="summarise")
    async def summarise(answer: str) -> dict[str, Any]:
        return {"answer": answer, "words": len(answer.split())}

    @workflow(name="ask")
    async def ask(question: str) -> dict[str, Any]:
        messages = await prepare(question)
        answer = await ask_llm(messages)
        result: dict[str, Any] = await summarise(answer)
        return result

    return ask


@dataclass
class State:
    """The process's shared state; `setup` is filled in after the app is built."""

    spec: dict[str, Any]
    probes: Probes = field(default_factory=Probes)
    before: dict[str, int] = field(default_factory=dict)
    setup_cost: dict[str, int] = field(default_factory=dict)
    setup: Setup | None = None
    client: Any = None
    pipeline: Callable[[str], Awaitable[dict[str, Any]]] | None = None


def versions() -> dict[str, str]:
    """Installed versions of the packages that matter here."""
    found = {}
    for name in VERSIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def build_app(state: State) -> Any:
    """The FastAPI app; its lifespan runs the contender's, then measures what it added."""
    import openai
    from fastapi import FastAPI
    from pydantic import BaseModel

    class Question(BaseModel):
        question: str

    # Created (and its chat resource loaded) before the set-up is measured, for everyone.
    state.client = openai.AsyncOpenAI(
        base_url=state.spec["llm_url"], api_key="bench", max_retries=0, timeout=30.0
    )
    assert state.client.chat.completions.create is not None

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        assert state.setup is not None
        own = state.setup.lifespan
        async with own(app) if own is not None else contextlib.nullcontext():
            after = footprint()
            state.setup_cost = {key: after[key] - state.before[key] for key in after}
            state.pipeline = build_pipeline(state.setup, state.client)
            # the lag probe (`count` turns it off: it would count instructions by the second)
            probe = None
            if state.spec.get("probe_lag", True):
                probe = asyncio.create_task(state.probes.probe_lag())
            try:
                yield
            finally:
                if probe is not None:
                    probe.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await probe
                await state.client.close()

    options: dict[str, Any] = {"openapi_url": None, "docs_url": None, "redoc_url": None}
    if "telemetry" in inspect.signature(FastAPI).parameters:
        # FastAPI's own OpenTelemetry spans and metrics (newer releases) would follow any
        # global tracer provider a contender installs: off, so only the SDKs are compared.
        options["telemetry"] = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(lifespan=lifespan, **options)

    @app.post("/ask")
    async def ask(item: Question) -> dict[str, Any]:
        assert state.pipeline is not None
        result = await state.pipeline(item.question)
        state.probes.served += 1
        state.probes.served_total += 1
        return result

    @app.get("/_bench/stats")
    async def stats() -> dict[str, Any]:
        return {**state.probes.stats(), "setup": state.setup_cost, "versions": versions()}

    @app.post("/_bench/reset")
    async def reset() -> dict[str, Any]:
        state.probes.reset()
        return {}

    return app


def main(spec_path: str) -> None:
    """Build the app, measure the contender's set-up, serve until SIGTERM."""
    if sys.path and Path(sys.path[0] or ".").resolve() == HERE:
        del sys.path[0]  # this folder's modules are not top-level modules
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("cpu") is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {spec["cpu"]})
    import uvicorn

    state = State(spec)
    app = build_app(state)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=spec["port"],
        loop="asyncio",
        http="h11",
        ws="none",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    config.load()  # imports uvicorn's protocol modules now, outside the set-up's footprint
    state.before = footprint()
    state.setup = SETUPS[spec["contender"]](spec, app)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main(sys.argv[1])
