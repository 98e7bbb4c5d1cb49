"""A real uvicorn server: SIGTERM after N requests delivers every span (no atexit needed)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.otlp_receiver import OTLPReceiver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


@pytest.mark.parametrize("requests", [3, 60])
def test_sigterm_delivers_every_span(threaded_otlp_receiver: OTLPReceiver, requests: int) -> None:
    port = _free_port()
    env = {
        "KEYWORDSAI_BASE_URL": threaded_otlp_receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # nothing leaves before shutdown
        "PATH": "",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.apps.asgi_app:app", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_until_serving(port, process)
        for i in range(requests):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/r{i}", timeout=10) as reply:
                assert reply.read() == f"/r{i}:3".encode()
        assert threaded_otlp_receiver.spans == []
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    spans = threaded_otlp_receiver.wait_for_spans(3 * requests, timeout=5)
    assert len(spans) == 3 * requests
    roots = [s for s in spans if s.name == "handle_request.workflow"]
    assert sorted(
        s.attributes["keywordsai.customer_params.customer_identifier"] for s in roots
    ) == (sorted(f"/r{i}" for i in range(requests)))
    text = stderr.decode()
    for bad in (
        "Traceback",
        "Task was destroyed",
        "Unclosed client session",
        "Event loop is closed",
    ):
        assert bad not in text, text
