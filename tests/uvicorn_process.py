"""A real uvicorn server in a subprocess for tests: a free 127.0.0.1 port, waiting until
it serves, requests, SIGTERM, and what it printed.

    with serving("tests.apps.asgi_app:app", env) as server:
        assert server.get("/r0") == "/r0:3"
        seconds, stderr = server.sigterm()
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on (at the moment of the call)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Uvicorn:
    """A running uvicorn process and its port."""

    process: subprocess.Popen[bytes]
    port: int

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> str:
        """The body of ``GET path`` as text."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers=dict(headers or {})
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            body: bytes = reply.read()
        return body.decode()

    def sigterm(self, timeout: float = 45.0) -> tuple[float, str]:
        """Send SIGTERM and wait for the exit: (seconds it took, what it wrote to stderr)."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=timeout)
        return time.monotonic() - sent, stderr.decode()


def _wait_until_serving(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "uvicorn exited early"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("uvicorn did not start")


@contextmanager
def serving(app: str, env: Mapping[str, str]) -> Iterator[Uvicorn]:
    """``uvicorn app`` with exactly ``env`` as its environment, from the repository root;
    killed on the way out if it still runs."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--port", str(port)],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        _wait_until_serving(port, process)
        yield Uvicorn(process, port)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
