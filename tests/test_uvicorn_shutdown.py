"""A real uvicorn server: SIGTERM after N requests delivers every span (no atexit needed)."""

from __future__ import annotations

import pytest

from tests.otlp_receiver import OTLPReceiver
from tests.uvicorn_process import serving


@pytest.mark.parametrize("requests", [3, 60])
def test_sigterm_delivers_every_span(threaded_otlp_receiver: OTLPReceiver, requests: int) -> None:
    env = {
        "KEYWORDSAI_BASE_URL": threaded_otlp_receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # nothing leaves before shutdown
        "PATH": "",
    }
    with serving("tests.apps.asgi_app:app", env) as server:
        for i in range(requests):
            assert server.get(f"/r{i}") == f"/r{i}:3"
        assert threaded_otlp_receiver.spans == []
        _, text = server.sigterm(timeout=30)
    spans = threaded_otlp_receiver.wait_for_spans(3 * requests, timeout=5)
    assert len(spans) == 3 * requests
    roots = [s for s in spans if s.name == "handle_request.workflow"]
    assert sorted(
        s.attributes["keywordsai.customer_params.customer_identifier"] for s in roots
    ) == (sorted(f"/r{i}" for i in range(requests)))
    for bad in (
        "Traceback",
        "Task was destroyed",
        "Unclosed client session",
        "Event loop is closed",
    ):
        assert bad not in text, text
