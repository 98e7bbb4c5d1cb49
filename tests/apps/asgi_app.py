"""A bare ASGI app whose requests await decorated coroutines; served by uvicorn in tests.

The telemetry is created at import with the collector from ``KEYWORDSAI_BASE_URL`` and is
never flushed by the app: delivery on SIGTERM must come from the SDK alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from keywordsai_tracing import KeywordsAITelemetry, get_client, task, workflow

telemetry = KeywordsAITelemetry(app_name="asgi-test", api_key="k", instruments=set())


@task
async def lookup(i: int) -> int:
    await asyncio.sleep(0)
    return i


@workflow(name="handle_request")
async def handle(path: str) -> str:
    get_client().update_current_span(keywordsai_params={"customer_identifier": path})
    values = await asyncio.gather(lookup(1), lookup(2))
    return f"{path}:{sum(values)}"


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = (await handle(scope["path"])).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
