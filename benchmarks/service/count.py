"""One contender's service app driven in-process: ``python count.py SPEC.json`` (run by
`instructions`, under callgrind).

The app is `server.build_app`'s, with the contender's set-up (`server.SETUPS`) and its
lifespan, but no uvicorn: ``SPEC["warmup"]`` then ``SPEC["requests"]`` requests of
``POST /ask`` go through httpx's ASGI transport one after another (the OpenAI call still
goes to the stand-in LLM server over loopback, the spans to the receiver). No lag probe
runs: its wake-ups would count instructions by the second, not by the request.

Started as a script, for the same reason as `server`: the incumbent's interpreter must
import its own ``keywordsai_tracing``; `server` is loaded from this folder by path.
"""

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_server():  # type: ignore[no-untyped-def]
    """`server` as a module of its own (not through this checkout's package)."""
    spec = importlib.util.spec_from_file_location("bench_service_server", HERE / "server.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def drive(app, warmup: int, requests: int, body: dict, headers: dict) -> int:  # type: ignore[no-untyped-def]
    """Serve ``warmup`` then ``requests`` requests inside the app's lifespan; the count
    answered with 200."""
    import httpx

    answered = 0
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for index in range(warmup + requests):
                response = await client.post("/ask", json=body, headers=headers)
                answered += index >= warmup and response.status_code == 200
    return answered


def main(spec_path: str) -> None:
    if sys.path and Path(sys.path[0] or ".").resolve() == HERE:
        del sys.path[0]  # this folder's modules are not top-level modules
    spec = json.loads(Path(spec_path).read_text())
    server = load_server()
    state = server.State({**spec, "probe_lag": False})
    app = server.build_app(state)
    state.before = server.footprint()
    state.setup = server.SETUPS[spec["contender"]](state.spec, app)
    answered = asyncio.run(
        drive(app, spec["warmup"], spec["requests"], spec["body"], spec["headers"])
    )
    print(json.dumps({"answered": answered}))


if __name__ == "__main__":
    main(sys.argv[1])
