"""Trace a small async workflow and print its spans: no API key, no network.

Run: python examples/async/quickstart.py
"""

from __future__ import annotations

import asyncio

from keywordsai_tracing import KeywordsAITelemetry, get_client, task, workflow
from keywordsai_tracing.exporters import ConsoleTraceExporter


@task(name="joke_creation")
async def create_joke(topic: str) -> str:
    await asyncio.sleep(0.01)
    return f"Why did the {topic} cross the road? To get to the other trace."


@task(name="signature_generation")
async def generate_signature(joke: str) -> str:
    await asyncio.sleep(0.01)
    return joke + "\n\n-- keywordsai_tracing"


@task(name="audience_reaction")
def audience_reaction(joke: str) -> str:
    return "laughs" if "trace" in joke else "silence"


@workflow(name="joke_workflow")
async def joke_workflow() -> str:
    joke = await create_joke("opentelemetry span")
    get_client().update_current_span(keywordsai_params={"customer_identifier": "demo-user"})
    signed, reaction = await asyncio.gather(
        generate_signature(joke), asyncio.to_thread(audience_reaction, joke)
    )
    return f"{signed}\n(audience: {reaction})"


async def main() -> None:
    async with KeywordsAITelemetry(
        app_name="quickstart", custom_exporter=ConsoleTraceExporter(), is_batching_enabled=False
    ):
        print(await joke_workflow())


if __name__ == "__main__":
    asyncio.run(main())
