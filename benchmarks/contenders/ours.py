"""This repository's keywordsai_tracing, with default settings unless the run says otherwise."""

from __future__ import annotations

from typing import Any

from .base import Contender, Options, package_version


def create(options: Options) -> Contender:
    """Our telemetry with ``api_key``/``base_url``; spans by our decorators."""
    import keywordsai_tracing
    from keywordsai_tracing import KeywordsAITelemetry, task, workflow

    kwargs: dict[str, Any] = {"api_key": "k"} if options.base_url is not None else {}
    if options.trace_content is not None:
        kwargs["trace_content"] = options.trace_content
    telemetry = KeywordsAITelemetry(
        app_name="bench",
        base_url=options.base_url,
        instruments=set(),
        is_enabled=options.enabled,
        **kwargs,
    )

    @task(name="step")
    def step(x: int) -> int:
        return x + 1

    @workflow(name="unit")
    def unit(x: int) -> int:
        return step(x) + step(x) + step(x)

    @task(name="step")
    async def astep(x: int) -> int:
        return x + 1

    @workflow(name="unit")
    async def aunit(x: int) -> int:
        return await astep(x) + await astep(x) + await astep(x)

    info = {
        "keywordsai_tracing": keywordsai_tracing.__version__,
        "from": str(keywordsai_tracing.__file__),
        "opentelemetry-sdk": package_version("opentelemetry-sdk"),
    }
    return Contender(unit, aunit, telemetry.flush, telemetry.aflush, task(name="f"), info)
