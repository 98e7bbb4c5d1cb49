"""keywordsai-tracing 0.0.59, run by the interpreter of its own virtualenv."""

from __future__ import annotations

from typing import Any

from .base import Contender, Options, package_version


def create(options: Options) -> Contender:
    """Its telemetry with ``api_key``/``base_url``; spans by its own decorators."""
    from keywordsai_tracing import KeywordsAITelemetry, task, workflow

    kwargs: dict[str, Any] = {"api_key": "k"} if options.base_url is not None else {}
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

    async def aflush() -> None:
        telemetry.flush()  # it has no async flush: called on the loop, as its users do

    info = {
        "keywordsai-tracing": package_version("keywordsai-tracing"),
        "opentelemetry-sdk": package_version("opentelemetry-sdk"),
    }
    return Contender(unit, aunit, telemetry.flush, aflush, info=info)
