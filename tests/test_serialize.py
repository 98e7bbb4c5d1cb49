"""Input/output capture: readable stand-ins, truncation, never raising."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import uuid
from typing import Any

import pydantic
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import KeywordsAITelemetry, task
from keywordsai_tracing._serialize import MAX_PAYLOAD_CHARS, inputs_to_json, to_json


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class User(pydantic.BaseModel):
    name: str
    age: int


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": [1, 2.5, None, True]}, {"a": [1, 2.5, None, True]}),
        (b"hello", "hello"),
        (b"\xff\x00", "base64:/wA="),
        ({3, 1, 2}, [1, 2, 3]),
        (frozenset({"b", "a"}), ["a", "b"]),
        (Point(1, 2), {"x": 1, "y": 2}),
        (User(name="ada", age=36), {"name": "ada", "age": 36}),
        (Color.RED, "red"),
        (datetime.date(2026, 11, 25), "2026-11-25"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (Opaque(), "<Opaque thing>"),
        (BadRepr(), "<unrepresentable BadRepr>"),
        ({"nested": [Opaque(), {1, 2}]}, {"nested": ["<Opaque thing>", [1, 2]]}),
    ],
)
def test_readable_stand_ins(value: Any, expected: Any) -> None:
    assert json.loads(to_json(value)) == expected


def test_cycles_are_marked_not_fatal() -> None:
    data: dict[str, Any] = {"name": "loop"}
    data["self"] = data
    items: list[Any] = [1]
    items.append(items)
    assert json.loads(to_json(data)) == {"name": "loop", "self": "<cycle>"}
    assert json.loads(to_json(items)) == [1, "<cycle>"]


def test_non_string_keys_survive() -> None:
    decoded = json.loads(to_json({(1, 2): "tuple key", 3: "int key"}))
    assert decoded["3"] == "int key"
    assert "tuple key" in decoded.values()


def test_one_bad_value_does_not_lose_the_rest() -> None:
    data: list[Any] = ["keep me"]
    data.append(data)
    decoded = json.loads(inputs_to_json(("first", data), {"k": BadRepr()}))
    assert decoded["args"][0] == "first"
    assert decoded["args"][1][0] == "keep me"
    assert decoded["kwargs"]["k"] == "<unrepresentable BadRepr>"


def test_large_payload_truncated_with_marker() -> None:
    text = to_json("x" * (MAX_PAYLOAD_CHARS + 10))
    assert len(text) <= MAX_PAYLOAD_CHARS
    assert text.endswith("characters in total]")
    assert "truncated by keywordsai_tracing" in text
    small = to_json("x" * 100, limit=50)
    assert small.startswith('"')
    assert "truncated" in small


def test_decorator_truncates_rather_than_drops(exporter: InMemorySpanExporter) -> None:
    with KeywordsAITelemetry(
        custom_exporter=exporter, is_batching_enabled=False, instruments=set()
    ):

        @task
        def big(blob: str) -> str:
            return blob

        big("y" * (MAX_PAYLOAD_CHARS + 1))
    attrs = exporter.get_finished_spans()[0].attributes or {}
    assert "truncated" in str(attrs["traceloop.entity.input"])
    assert "truncated" in str(attrs["traceloop.entity.output"])


@pytest.mark.parametrize("via_env", [False, True])
def test_content_capture_can_be_turned_off(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, via_env: bool
) -> None:
    if via_env:
        monkeypatch.setenv("KEYWORDSAI_TRACE_CONTENT", "false")
    with KeywordsAITelemetry(
        custom_exporter=exporter,
        is_batching_enabled=False,
        instruments=set(),
        trace_content=None if via_env else False,
    ):

        @task
        def secret(password: str) -> str:
            return password

        secret("hunter2")
    attrs = exporter.get_finished_spans()[0].attributes or {}
    assert "traceloop.entity.input" not in attrs
    assert "traceloop.entity.output" not in attrs
    assert "hunter2" not in str(attrs)


def test_unserialisable_arguments_never_reach_the_user(exporter: InMemorySpanExporter) -> None:
    with KeywordsAITelemetry(
        custom_exporter=exporter, is_batching_enabled=False, instruments=set()
    ):

        @task
        def takes(obj: Any) -> Any:
            return obj

        weird = BadRepr()
        assert takes(weird) is weird
    attrs = exporter.get_finished_spans()[0].attributes or {}
    assert json.loads(str(attrs["traceloop.entity.output"])) == "<unrepresentable BadRepr>"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        ((1, -7, 10**30, True, False, None), {}),
        (("plain", 'quo"te', "new\nline", "ünï", "\x00"), {}),
        ((1.5, 0.1 + 0.2, -0.0, 1e300, float("nan"), float("inf"), float("-inf")), {}),
        ((1,) * 9, {}),  # more than the written-directly path takes
        ((1,), {"k": "v"}),
        ((True, [1, "x"], {"a": 1.5}), {}),
    ],
)
def test_inputs_and_outputs_match_the_json_encoder(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    encoder = json.JSONEncoder(default=str, ensure_ascii=False)
    assert inputs_to_json(args, kwargs) == encoder.encode({"args": args, "kwargs": kwargs})
    for value in (*args, *kwargs.values()):
        assert to_json(value) == encoder.encode(value)
