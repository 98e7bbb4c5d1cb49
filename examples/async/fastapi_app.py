"""A FastAPI service whose endpoints await traced coroutines that call OpenAI.

Run: python examples/async/fastapi_app.py [--port PORT]

This serves the app with uvicorn on 127.0.0.1 (a random port unless given), sends a few
requests with httpx, checks the answers and stops the server gracefully. To serve it
yourself: ``cd examples/async && uvicorn fastapi_app:app``.

The telemetry is created when the app starts and shut down (flushed) when it stops, in
the lifespan. Each request's workflow span carries the caller's ``X-Customer-Id`` header
as ``customer_identifier``. Offline by default, like every example here (``_setup.py``).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, cast

import httpx
import uvicorn
from _setup import EMBEDDING_MODEL, OPENAI_MODEL, LLMClients, llm_clients, make_telemetry
from fastapi import FastAPI, Header
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from keywordsai_tracing import get_client, task, workflow


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    telemetry = make_telemetry("joke-service")
    try:
        async with llm_clients() as clients:
            app.state.llm = clients
            yield
    finally:
        await telemetry.ashutdown()  # delivers every queued span before the process ends


app = FastAPI(lifespan=lifespan)
CustomerId = Annotated[str, Header()]


def llm() -> LLMClients:
    return cast(LLMClients, app.state.llm)


def set_customer(customer: str) -> None:
    get_client().update_current_span(keywordsai_params={"customer_identifier": customer})


# -- traced code ----------------------------------------------------------------------------


@task(name="joke_creation")
async def create_joke(topic: str) -> str:
    completion = await llm().openai.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": f"Tell me a short joke about {topic}"}],
    )
    return completion.choices[0].message.content or ""


@workflow(name="joke_request")
async def joke_request(topic: str, customer: str) -> str:
    set_customer(customer)
    return await create_joke(topic)


@workflow(name="joke_stream_request")
async def joke_stream_request(topic: str, customer: str) -> AsyncIterator[str]:
    """A traced async generator: the span lasts until the response is fully sent."""
    set_customer(customer)
    stream = await llm().openai.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": f"Tell me a short joke about {topic}"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content


@task(name="embed")
async def embed(texts: list[str]) -> list[int]:
    response = await llm().openai.embeddings.create(model=EMBEDDING_MODEL, input=texts)
    return [len(item.embedding) for item in response.data]


@workflow(name="embedding_request")
async def embedding_request(texts: list[str], customer: str) -> list[int]:
    set_customer(customer)
    return await embed(texts)


# -- endpoints ------------------------------------------------------------------------------


class JokeRequest(BaseModel):
    topic: str


class EmbeddingRequest(BaseModel):
    texts: list[str]


@app.post("/jokes")
async def post_joke(body: JokeRequest, x_customer_id: CustomerId = "anonymous") -> dict[str, str]:
    return {"joke": await joke_request(body.topic, customer=x_customer_id)}


@app.get("/jokes/stream")
async def stream_joke(topic: str, x_customer_id: CustomerId = "anonymous") -> StreamingResponse:
    pieces = joke_stream_request(topic, customer=x_customer_id)
    return StreamingResponse(pieces, media_type="text/plain")


@app.post("/embeddings")
async def post_embeddings(
    body: EmbeddingRequest, x_customer_id: CustomerId = "anonymous"
) -> dict[str, list[int]]:
    return {"dimensions": await embedding_request(body.texts, customer=x_customer_id)}


# -- self-check: serve, call, stop ------------------------------------------------------------


async def call_endpoints(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        response = await http.post(
            "/jokes", json={"topic": "pirates"}, headers={"X-Customer-Id": "alice"}
        )
        response.raise_for_status()
        print(f"POST /jokes (alice): {response.json()['joke']}")

        params = {"topic": "parrots"}
        headers = {"X-Customer-Id": "bob"}
        async with http.stream("GET", "/jokes/stream", params=params, headers=headers) as reply:
            reply.raise_for_status()
            text = "".join([piece async for piece in reply.aiter_text()])
        assert text, "the streamed joke is empty"
        print(f"GET /jokes/stream (bob): {text}")

        response = await http.post("/embeddings", json={"texts": ["yo", "ho ho"]})
        response.raise_for_status()
        print(f"POST /embeddings (anonymous): {response.json()['dimensions']}")


async def main(port: int) -> None:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:
            if serving.done():
                await serving  # start-up failed: raise its error
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        await call_endpoints(f"http://127.0.0.1:{bound_port}")
    finally:
        server.should_exit = True  # graceful: finishes requests, then runs the lifespan end
        await serving
    print()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    asyncio.run(main(parser.parse_args().port))
