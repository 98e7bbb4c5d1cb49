"""get_client(), KeywordsAIClient and keywordsai_params."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pydantic
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer, StatusCode

from keywordsai_tracing import (
    KeywordsAIClient,
    KeywordsAIParams,
    KeywordsAITelemetry,
    get_client,
    keywordsai_span_attributes,
    task,
    workflow,
)

ALL_PARAMS: KeywordsAIParams = {
    "customer_identifier": "cust-1",
    "customer_email": "a@example.test",
    "customer_name": "Ada",
    "evaluation_identifier": "eval-1",
    "thread_identifier": "thread-1",
    "custom_identifier": "custom-1",
    "trace_group_identifier": "group-1",
    "metadata": {"plan": "pro", "seats": 3, "beta": True, "tags": ["a", "b"]},
}
EXPECTED_ATTRIBUTES = {
    "keywordsai.customer_params.customer_identifier": "cust-1",
    "keywordsai.customer_params.email": "a@example.test",
    "keywordsai.customer_params.name": "Ada",
    "keywordsai.evaluation_params.evaluation_identifier": "eval-1",
    "keywordsai.threads.thread_identifier": "thread-1",
    "keywordsai.span_params.custom_identifier": "custom-1",
    "keywordsai.trace.trace_group_identifier": "group-1",
    "keywordsai.metadata.plan": "pro",
    "keywordsai.metadata.seats": 3,
    "keywordsai.metadata.beta": True,
    "keywordsai.metadata.tags": ("a", "b"),
}


class ParamsModel(pydantic.BaseModel):
    customer_identifier: str
    metadata: dict[str, Any] | None = None


def _attrs(exporter: InMemorySpanExporter) -> dict[str, Any]:
    (span,) = exporter.get_finished_spans()
    return dict(span.attributes or {})


def test_get_client_is_a_client_and_the_same_everywhere(telemetry: KeywordsAITelemetry) -> None:
    assert isinstance(get_client(), KeywordsAIClient)
    assert telemetry.get_client() is get_client()


@pytest.mark.usefixtures("telemetry")
def test_ids_inside_a_span(exporter: InMemorySpanExporter) -> None:
    seen: dict[str, Any] = {}

    @task
    def inside() -> None:
        client = get_client()
        seen["trace"] = client.get_current_trace_id()
        seen["span"] = client.get_current_span_id()
        seen["recording"] = client.is_recording()
        seen["span_obj"] = client.get_current_span()

    inside()
    (span,) = exporter.get_finished_spans()
    assert span.context is not None
    assert seen["trace"] == format(span.context.trace_id, "032x")
    assert seen["span"] == format(span.context.span_id, "016x")
    assert seen["recording"] is True
    assert seen["span_obj"].get_span_context() == span.context


@pytest.mark.usefixtures("telemetry")
@pytest.mark.parametrize(
    "params",
    [ALL_PARAMS, dict(ALL_PARAMS)],
    ids=["typeddict", "dict"],
)
def test_update_current_span_with_every_param(exporter: InMemorySpanExporter, params: Any) -> None:
    @task
    def inside() -> bool:
        return get_client().update_current_span(keywordsai_params=params)

    assert inside() is True
    attrs = _attrs(exporter)
    for key, value in EXPECTED_ATTRIBUTES.items():
        assert attrs[key] == value


@pytest.mark.usefixtures("telemetry")
def test_params_from_a_model_dump_object(exporter: InMemorySpanExporter) -> None:
    @task
    def inside() -> None:
        get_client().update_current_span(
            keywordsai_params=ParamsModel(customer_identifier="m-1", metadata={"k": "v"})
        )

    inside()
    attrs = _attrs(exporter)
    assert attrs["keywordsai.customer_params.customer_identifier"] == "m-1"
    assert attrs["keywordsai.metadata.k"] == "v"


@pytest.mark.usefixtures("telemetry")
def test_unknown_key_and_bad_type_warn_by_name(
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    @task
    def inside() -> bool:
        return get_client().update_current_span(
            keywordsai_params={
                "customer_identifer": "typo",
                "customer_email": 42,
                "thread_identifier": "ok",
                "metadata": "not a dict",
            }
        )

    with caplog.at_level(logging.WARNING, logger="keywordsai_tracing"):
        assert inside() is True
    assert "customer_identifer" in caplog.text
    assert "customer_email" in caplog.text
    assert "metadata" in caplog.text
    attrs = _attrs(exporter)
    assert attrs["keywordsai.threads.thread_identifier"] == "ok"
    assert "keywordsai.customer_params.email" not in attrs


@pytest.mark.usefixtures("telemetry")
def test_update_attributes_status_and_name(exporter: InMemorySpanExporter) -> None:
    @task
    def inside() -> None:
        client = get_client()
        assert client.update_current_span(
            attributes={"custom.attr": "v", "bad": object()},
            status=StatusCode.ERROR,
            status_description="went wrong",
            name="renamed",
        )
        assert client.add_event("checkpoint", {"step": 1})
        assert client.record_exception(ValueError("recorded"))

    inside()
    (span,) = exporter.get_finished_spans()
    assert span.name == "renamed"
    assert (span.attributes or {})["custom.attr"] == "v"
    assert "bad" not in (span.attributes or {})
    assert span.status.status_code == StatusCode.ERROR
    assert [e.name for e in span.events] == ["checkpoint", "exception"]
    assert (span.events[1].attributes or {})["exception.message"] == "recorded"


@pytest.mark.usefixtures("telemetry")
def test_keywordsai_span_attributes_context_manager(exporter: InMemorySpanExporter) -> None:
    @workflow
    def flow() -> None:
        with keywordsai_span_attributes(keywordsai_params={"customer_identifier": "cm-1"}):
            pass

    flow()
    assert _attrs(exporter)["keywordsai.customer_params.customer_identifier"] == "cm-1"


def _exercise(client: KeywordsAIClient) -> list[Any]:
    return [
        client.get_current_span(),
        client.get_current_trace_id(),
        client.get_current_span_id(),
        client.update_current_span(keywordsai_params={"customer_identifier": "x"}),
        client.add_event("e"),
        client.record_exception(ValueError("x")),
        client.is_recording(),
    ]


@pytest.mark.usefixtures("telemetry")
def test_no_active_span_warns_and_returns_false_or_none(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="keywordsai_tracing"):
        results = _exercise(get_client())
        with keywordsai_span_attributes({"customer_identifier": "x"}):
            pass
    assert results == [None, None, None, False, False, False, False]
    assert "No active span" in caplog.text
    assert "no active span" in caplog.text


def test_before_initialisation_nothing_raises(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="keywordsai_tracing"):
        results = _exercise(get_client())
        assert get_client().flush() is False
        assert isinstance(get_client().get_tracer(), NoOpTracer)
    assert results == [None, None, None, False, False, False, False]
    assert "not initialised" in caplog.text


def test_get_tracer_manual_spans_reach_the_exporter(
    telemetry: KeywordsAITelemetry, exporter: InMemorySpanExporter
) -> None:
    tracer = get_client().get_tracer()
    with tracer.start_as_current_span("manual-root"), tracer.start_as_current_span("manual-child"):
        assert get_client().is_recording()
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["manual-child", "manual-root"]
    scopes = {s.instrumentation_scope.name for s in exporter.get_finished_spans()}  # type: ignore[union-attr]
    assert scopes == {"keywordsai_tracing.manual"}


def test_client_flush_and_aflush(telemetry: KeywordsAITelemetry) -> None:
    assert get_client().flush() is True
    assert asyncio.run(get_client().aflush()) is True


def test_get_tracer_is_noop_when_disabled() -> None:
    KeywordsAITelemetry(is_enabled=False)
    assert isinstance(get_client().get_tracer(), NoOpTracer)
