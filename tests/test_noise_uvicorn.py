"""FastAPI under real uvicorn, with FastAPI's own spans on (as they are whenever a global
SDK tracer provider exists, ours included): the noise filter drops those spans, and no
decorated span reaches the collector pointing at a parent it never receives.

One server run (module fixture) serves plain requests and one carrying a ``traceparent``,
then gets SIGTERM. The app also writes every span to a jsonl file (the local exporter):
the original tree, to compare against what the collector received.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from keywordsai_tracing._attributes import LINK_REASON
from keywordsai_tracing.exporters import read_spans
from tests.otlp_receiver import OTLPReceiver, ReceivedSpan
from tests.uvicorn_process import serving

APP = "tests.apps.asgi_lifespan_app:app"  # FastAPI, `telemetry_lifespan`, the middleware
REQUESTS = 6
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
REMOTE_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{REMOTE_SPAN_ID}-01"
CUSTOMER = "keywordsai.customer_params.customer_identifier"


@dataclass(frozen=True)
class Run:
    received: list[ReceivedSpan]
    link_attributes: dict[tuple[str, str], dict[str, Any]]  # (span id, linked id) -> attrs
    original: list[dict[str, Any]]  # OTLP/JSON spans from the local jsonl exporter
    stderr: str

    def workflows(self) -> list[ReceivedSpan]:
        return [s for s in self.received if s.name == "handle_request.workflow"]

    def original_span(self, span_id: str) -> dict[str, Any]:
        (span,) = [s for s in self.original if s["spanId"] == span_id]
        return span


def _link_attributes(receiver: OTLPReceiver) -> dict[tuple[str, str], dict[str, Any]]:
    """Link attributes from the JSON bodies delivered (the receiver records link ids only)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for request in receiver.requests:
        if request.status != 200:
            continue
        for group in json.loads(request.body)["resourceSpans"]:
            for scope_group in group["scopeSpans"]:
                for span in scope_group["spans"]:
                    for link in span.get("links", []):
                        found[span["spanId"], link["spanId"]] = {
                            kv["key"]: kv["value"]["stringValue"]
                            for kv in link.get("attributes", [])
                        }
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    jsonl = tmp_path_factory.mktemp("fastapi") / "original.jsonl"
    with OTLPReceiver().running_in_thread() as receiver:
        env = {
            "KEYWORDSAI_BASE_URL": receiver.url,
            "KEYWORDSAI_EXPORTER": f"jsonl:{jsonl}",
            "PATH": "",
        }
        with serving(APP, env) as server:
            for i in range(REQUESTS):
                assert json.loads(server.get(f"/r{i}", {"X-Id": f"id-{i}"})) == f"/r{i}:3!"
            headers = {"X-Id": "traced", "traceparent": TRACEPARENT}
            assert json.loads(server.get("/traced", headers)) == "/traced:3!"
            _, stderr = server.sigterm(timeout=30)
        receiver.wait_for_spans(3 * (REQUESTS + 1), timeout=10)
        yield Run(
            received=receiver.spans,
            link_attributes=_link_attributes(receiver),
            original=list(read_spans(jsonl)),
            stderr=stderr,
        )


def test_fastapi_under_uvicorn_every_decorated_span_arrives_with_a_parent_that_arrived(
    run: Run,
) -> None:
    assert "Traceback" not in run.stderr, run.stderr
    workflows = REQUESTS + 1
    assert sorted(s.name for s in run.received) == (
        ["handle_request.workflow"] * workflows + ["lookup.task"] * 2 * workflows
    )
    ids = {s.span_id for s in run.received}
    assert len(ids) == len(run.received)
    for span in run.received:
        assert span.parent_span_id in ("", REMOTE_SPAN_ID) or span.parent_span_id in ids
    for workflow in run.workflows():  # each task stays under its own workflow
        tasks = [s for s in run.received if s.parent_span_id == workflow.span_id]
        assert [s.name for s in tasks] == ["lookup.task"] * 2


def test_fastapi_under_uvicorn_workflows_leave_fastapi_spans_as_links(run: Run) -> None:
    # FastAPI's spans exist (the original tree) and parent the workflows there ...
    assert {s["scope"].get("name") for s in run.original} == {"fastapi", "keywordsai_tracing"}
    fastapi_ids = {s["spanId"] for s in run.original if s["scope"].get("name") == "fastapi"}
    assert not fastapi_ids & {s.span_id for s in run.received}  # ... and were filtered
    plain = [w for w in run.workflows() if w.attributes[CUSTOMER] != "traced"]
    assert sorted(w.attributes[CUSTOMER] for w in plain) == [f"id-{i}" for i in range(REQUESTS)]
    for workflow in run.workflows():
        original_parent = run.original_span(workflow.span_id)["parentSpanId"]
        assert original_parent in fastapi_ids
        assert workflow.links == [(workflow.trace_id, original_parent)]
        reason = run.link_attributes[workflow.span_id, original_parent]
        assert reason == {LINK_REASON: "filtered_parent"}
    assert all(w.parent_span_id == "" for w in plain)  # FastAPI's server span was the root


def test_fastapi_under_uvicorn_a_traceparent_request_hangs_under_the_remote_span(
    run: Run,
) -> None:
    (traced,) = [w for w in run.workflows() if w.attributes[CUSTOMER] == "traced"]
    assert traced.trace_id == TRACE_ID
    assert traced.parent_span_id == REMOTE_SPAN_ID
    servers = [s for s in run.original if s["traceId"] == TRACE_ID and s["kind"] == 2]
    assert [s.get("parentSpanId") for s in servers] == [REMOTE_SPAN_ID]
