"""A FastAPI app whose telemetry comes from `telemetry_lifespan`; served by uvicorn in tests.

The collector is ``KEYWORDSAI_BASE_URL``. Nothing is created at import: the telemetry is
made at startup (on a worker thread) and ``ashutdown()`` runs when uvicorn shuts down
gracefully on SIGTERM, so every span must arrive without any handler of ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from keywordsai_tracing import task, workflow
from keywordsai_tracing.integrations.asgi import KeywordsAIMiddleware, header, telemetry_lifespan


@asynccontextmanager
async def own_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    yield {"suffix": "!"}


@task
async def lookup(i: int) -> int:
    await asyncio.sleep(0)
    return i


@workflow(name="handle_request")
async def handle(path: str, suffix: str) -> str:
    values = await asyncio.gather(lookup(1), lookup(2))
    return f"{path}:{sum(values)}{suffix}"


lifespan = telemetry_lifespan(
    own_lifespan, app_name="asgi-lifespan-test", api_key="k", instruments=set()
)
app = FastAPI(lifespan=lifespan)
app.add_middleware(
    KeywordsAIMiddleware, params=lambda scope: {"customer_identifier": header(scope, "x-id")}
)


@app.get("/{name}")
async def endpoint(name: str, request: Request) -> str:
    return await handle(f"/{name}", request.state.suffix)
