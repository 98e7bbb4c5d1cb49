"""A light OTLP/HTTP trace receiver on loopback, run as its own process.

``python -m benchmarks.receiver`` listens on 127.0.0.1 (port 0), prints ``PORT <n>`` and
serves ``POST /v1/traces`` (protobuf or JSON, gzip or plain: spans are counted, unique
span ids too), ``GET /count`` (the tally as JSON) and ``POST /reset``. It stops when its
stdin closes (the parent went away) or after ``--max-seconds``.

It stands in for a collector on another machine, so it keeps request bodies as they come
and decodes them only when asked to count: decoding a batch of hundreds of spans takes
milliseconds of the CPU the load generator and the stand-in LLM server share with it,
which would slow the traced contenders' requests and not the untraced one's. A body it
cannot decode is counted in ``errors`` then.

`Receiver` starts and queries it from the (synchronous) benchmark runner.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

_GZIP_MAGIC = b"\x1f\x8b"


class Tally:
    """Spans received since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.pending: list[tuple[bytes, bool]] = []  # (body, is JSON), not decoded yet
        self.spans = 0
        self.requests = 0
        self.bytes = 0
        self.errors = 0
        self.ids: set[tuple[Any, Any]] = set()

    def add(self, body: bytes, is_json: bool) -> None:
        """Keep a request body for the next count."""
        self.requests += 1
        self.bytes += len(body)
        self.pending.append((body, is_json))

    def decode_pending(self) -> None:
        """Count the spans of every body kept since the last count."""
        pending, self.pending = self.pending, []
        for body, is_json in pending:
            try:
                if body[:2] == _GZIP_MAGIC:
                    body = gzip.decompress(body)
                self.add_json(body) if is_json else self.add_protobuf(body)
            except Exception:
                self.errors += 1

    def snapshot(self) -> dict[str, int]:
        """The counters as plain numbers (kept bodies decoded first)."""
        self.decode_pending()
        return {
            "spans": self.spans,
            "unique": len(self.ids),
            "requests": self.requests,
            "bytes": self.bytes,
            "errors": self.errors,
        }

    def add_protobuf(self, body: bytes) -> None:
        """Count the spans of an ``ExportTraceServiceRequest``."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans += 1
                    self.ids.add((span.trace_id, span.span_id))

    def add_json(self, body: bytes) -> None:
        """Count the spans of an OTLP/JSON request."""
        document = json.loads(body)
        for resource_spans in document.get("resourceSpans", ()):
            for scope_spans in resource_spans.get("scopeSpans", ()):
                for span in scope_spans.get("spans", ()):
                    self.spans += 1
                    self.ids.add((span.get("traceId"), span.get("spanId")))


async def serve(max_seconds: float) -> None:
    """Serve until stdin closes or ``max_seconds`` pass."""
    from aiohttp import web

    tally = Tally()

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp already inflates a gzip Content-Encoding
        is_json = "json" in request.content_type
        tally.add(body, is_json)
        if is_json:
            return web.Response(body=b"{}", content_type="application/json")
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def count(request: web.Request) -> web.Response:
        return web.json_response(tally.snapshot())

    async def reset(request: web.Request) -> web.Response:
        tally.reset()
        return web.json_response({})

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/count", count)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock, backlog=512).start()
    print(f"PORT {port}", flush=True)

    loop = asyncio.get_running_loop()
    parent_gone = asyncio.Event()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(parent_gone.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        with contextlib.suppress(TimeoutError):  # a bounded life even if nobody stops it
            await asyncio.wait_for(parent_gone.wait(), max_seconds)
    finally:
        await runner.cleanup()


class Receiver:
    """The receiver subprocess, seen from the runner."""

    def __init__(self, python: str = sys.executable, max_seconds: float = 3600.0) -> None:
        root = Path(__file__).resolve().parent.parent
        self._process = subprocess.Popen(
            [python, "-m", "benchmarks.receiver", "--max-seconds", str(max_seconds)],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(f"receiver did not start: {line!r}")
        self.port = int(line.split()[1])
        self.base_url = f"http://127.0.0.1:{self.port}"

    def _call(self, method: str, path: str) -> dict[str, int]:
        request = urllib.request.Request(f"{self.base_url}{path}", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, int] = json.loads(response.read())
        return result

    def count(self) -> dict[str, int]:
        """The tally since the last reset."""
        return self._call("GET", "/count")

    def reset(self) -> None:
        """Start a new tally."""
        self._call("POST", "/reset")

    def close(self) -> None:
        """Close its stdin (it stops by itself) and wait for it."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args()
    asyncio.run(serve(args.max_seconds))


if __name__ == "__main__":
    main()
