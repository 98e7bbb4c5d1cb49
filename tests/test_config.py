"""Configuration: defaults, environment, precedence, and clear errors."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import Instruments, KeywordsAITelemetry
from keywordsai_tracing._config import DEFAULT_BASE_URL, Settings, traces_endpoint

_OUR_VARS = (
    "KEYWORDSAI_API_KEY",
    "KEYWORDSAI_BASE_URL",
    "KEYWORDSAI_LOG_LEVEL",
    "KEYWORDSAI_BATCHING_ENABLED",
    "KEYWORDSAI_TRACE_CONTENT",
    "KEYWORDSAI_FILTER_NOISE",
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _OUR_VARS:
        monkeypatch.delenv(var, raising=False)


def test_defaults() -> None:
    settings = Settings.resolve()
    assert settings.app_name == "keywordsai"
    assert settings.api_key is None
    assert settings.base_url == DEFAULT_BASE_URL
    assert settings.traces_endpoint == "https://api.keywordsai.co/api/v1/traces"
    assert settings.log_level == logging.INFO
    assert settings.is_batching_enabled is True
    assert settings.instruments is None
    assert settings.block_instruments == frozenset()
    assert settings.headers == {}
    assert settings.resource_attributes == {}
    assert settings.span_postprocess_callback is None
    assert settings.is_enabled is True
    assert settings.custom_exporter is None
    assert settings.trace_content is True
    assert settings.filter_noise is True
    assert settings.protocol == "http/json"
    assert settings.compression == "none"
    assert settings.export_timeout == 10.0
    assert settings.schedule_delay == 5.0
    assert settings.max_queue_size == 2048
    assert settings.max_export_batch_size == 512
    assert settings.batch_timeout == 30.0  # flush() default, as OpenTelemetry's
    assert settings.shutdown_timeout == 5.0  # exit, SIGTERM and shutdown() default


@pytest.mark.parametrize(
    ("base_url", "endpoint"),
    [
        ("https://example.test/api", "https://example.test/api/v1/traces"),
        ("https://example.test/api/", "https://example.test/api/v1/traces"),
        ("http://127.0.0.1:4318/v1/traces", "http://127.0.0.1:4318/v1/traces"),
        ("http://127.0.0.1:4318/v1/traces/", "http://127.0.0.1:4318/v1/traces"),
    ],
)
def test_traces_endpoint(base_url: str, endpoint: str) -> None:
    assert traces_endpoint(base_url) == endpoint
    assert Settings.resolve(base_url=base_url).traces_endpoint == endpoint


def test_environment_is_used_when_arguments_are_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYWORDSAI_API_KEY", "env-key")
    monkeypatch.setenv("KEYWORDSAI_BASE_URL", "http://collector.test:4318")
    monkeypatch.setenv("KEYWORDSAI_LOG_LEVEL", "debug")
    monkeypatch.setenv("KEYWORDSAI_BATCHING_ENABLED", "FALSE")
    monkeypatch.setenv("KEYWORDSAI_TRACE_CONTENT", "false")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=a%20b,x-env=prod")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_EXPORT_TIMEOUT", "7000")
    monkeypatch.setenv("KEYWORDSAI_SHUTDOWN_TIMEOUT", "2.5")
    settings = Settings.resolve()
    assert settings.api_key == "env-key"
    assert settings.traces_endpoint == "http://collector.test:4318/v1/traces"
    assert settings.log_level == logging.DEBUG
    assert settings.is_batching_enabled is False
    assert settings.trace_content is False
    assert settings.protocol == "http/protobuf"
    assert settings.compression == "gzip"
    assert settings.export_timeout == 2.5
    assert settings.headers == {"x-team": "a b", "x-env": "prod"}
    assert settings.schedule_delay == 0.2
    assert settings.max_queue_size == 100
    assert settings.max_export_batch_size == 10
    assert settings.batch_timeout == 7.0
    assert settings.shutdown_timeout == 2.5


def test_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYWORDSAI_API_KEY", "env-key")
    monkeypatch.setenv("KEYWORDSAI_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("KEYWORDSAI_BATCHING_ENABLED", "false")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-a=env,x-b=env")
    settings = Settings.resolve(
        api_key="arg-key",
        log_level="ERROR",
        is_batching_enabled=True,
        headers={"x-a": "arg"},
        protocol="json",
    )
    assert settings.api_key == "arg-key"
    assert settings.log_level == logging.ERROR
    assert settings.is_batching_enabled is True
    assert settings.headers == {"x-a": "arg", "x-b": "env"}
    assert settings.protocol == "http/json"


@pytest.mark.parametrize(
    ("var", "value", "field", "default"),
    [
        ("KEYWORDSAI_BATCHING_ENABLED", "sometimes", "is_batching_enabled", True),
        ("KEYWORDSAI_LOG_LEVEL", "LOUD", "log_level", logging.INFO),
        ("KEYWORDSAI_BASE_URL", "ftp://nope", "base_url", DEFAULT_BASE_URL),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "-3", "max_queue_size", 2048),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "protocol", "http/json"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", "compression", "none"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "novalue", "headers", {}),
        ("OTEL_BSP_SCHEDULE_DELAY", "inf", "schedule_delay", 5.0),
        ("OTEL_BSP_EXPORT_TIMEOUT", "nan", "batch_timeout", 30.0),
        ("KEYWORDSAI_SHUTDOWN_TIMEOUT", "soon", "shutdown_timeout", 5.0),
        ("KEYWORDSAI_SHUTDOWN_TIMEOUT", "-1", "shutdown_timeout", 5.0),
        ("KEYWORDSAI_SHUTDOWN_TIMEOUT", "inf", "shutdown_timeout", 5.0),
    ],
)
def test_bad_environment_value_warns_and_falls_back(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    var: str,
    value: str,
    field: str,
    default: Any,
) -> None:
    monkeypatch.setenv(var, value)
    with caplog.at_level(logging.WARNING, logger="keywordsai_tracing"):
        settings = Settings.resolve()
    assert getattr(settings, field) == default
    assert var in caplog.text


def test_otel_sdk_disabled_disables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert Settings.resolve().is_enabled is False


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"base_url": "not a url"}, ValueError, "base_url"),
        ({"base_url": "ftp://example.test"}, ValueError, "base_url"),
        ({"base_url": 42}, ValueError, "base_url"),
        ({"log_level": "LOUD"}, ValueError, "log_level"),
        ({"log_level": 7}, ValueError, "log_level"),
        ({"instruments": {"openai"}}, ValueError, "instruments"),
        ({"instruments": "openai"}, TypeError, "instruments"),
        ({"block_instruments": {Instruments.OPENAI, 3}}, ValueError, "block_instruments"),
        ({"custom_exporter": object()}, TypeError, "custom_exporter"),
        ({"headers": ["x"]}, TypeError, "headers"),
        ({"headers": {"x": 1}}, TypeError, "headers"),
        ({"resource_attributes": "env=prod"}, TypeError, "resource_attributes"),
        ({"span_postprocess_callback": 3}, TypeError, "span_postprocess_callback"),
        ({"is_batching_enabled": "yes"}, TypeError, "is_batching_enabled"),
        ({"is_enabled": "no"}, TypeError, "is_enabled"),
        ({"app_name": ""}, ValueError, "app_name"),
        ({"app_name": 5}, TypeError, "app_name"),
        ({"api_key": 123}, TypeError, "api_key"),
        ({"protocol": "grpc"}, ValueError, "protocol"),
        ({"compression": "zstd"}, ValueError, "compression"),
        ({"max_queue_size": 0}, ValueError, "max_queue_size"),
        ({"export_timeout": -1}, ValueError, "export_timeout"),
        ({"shutdown_timeout": 0}, ValueError, "shutdown_timeout"),
        ({"shutdown_timeout": float("nan")}, ValueError, "shutdown_timeout"),
        ({"shutdown_timeout": True}, ValueError, "shutdown_timeout"),
    ],
)
def test_bad_argument_raises_naming_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names):
        Settings.resolve(**kwargs)
    with pytest.raises(error, match=names):
        KeywordsAITelemetry(**kwargs)


def test_api_key_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-very-secret-123"
    settings = Settings.resolve(api_key=secret, headers={"Authorization": "Bearer x"})
    assert secret not in repr(settings)
    telemetry = KeywordsAITelemetry(
        api_key=secret, custom_exporter=InMemorySpanExporter(), instruments=set()
    )
    assert secret not in repr(telemetry)
    assert secret not in str(telemetry)
    assert "app_name='keywordsai'" in repr(telemetry)


def test_log_level_applies_to_our_logger_only(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    KeywordsAITelemetry(
        log_level="DEBUG", custom_exporter=InMemorySpanExporter(), instruments=set()
    )
    assert logging.getLogger("keywordsai_tracing").level == logging.DEBUG
    KeywordsAITelemetry(
        log_level="ERROR", custom_exporter=InMemorySpanExporter(), instruments=set()
    )
    assert logging.getLogger("keywordsai_tracing").level == logging.ERROR
    assert root.level == root_level
    assert root.handlers == root_handlers
    assert logging.getLogger("keywordsai_tracing").handlers == []
    monkeypatch.setenv("KEYWORDSAI_LOG_LEVEL", "WARNING")
    KeywordsAITelemetry(custom_exporter=InMemorySpanExporter(), instruments=set())
    assert logging.getLogger("keywordsai_tracing").level == logging.WARNING
    logging.getLogger("keywordsai_tracing").setLevel(logging.NOTSET)


def test_service_name_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.resolve().app_name == "keywordsai"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    assert Settings.resolve().app_name == "from-env"
    assert Settings.resolve(app_name="from-arg").app_name == "from-arg"


@pytest.mark.parametrize(
    ("environment", "argument", "endpoint"),
    [
        ({}, None, "https://api.keywordsai.co/api/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"}, None, "http://otel:4318/v1/traces"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://otel:4318/custom/traces",
            },
            None,
            "http://otel:4318/custom/traces",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://otel:4318/custom/traces",
                "KEYWORDSAI_BASE_URL": "http://kai.test/api",
            },
            None,
            "http://kai.test/api/v1/traces",
        ),
        (
            {"KEYWORDSAI_BASE_URL": "http://kai.test/api"},
            "http://arg.test",
            "http://arg.test/v1/traces",
        ),
    ],
)
def test_endpoint_precedence(
    monkeypatch: pytest.MonkeyPatch,
    environment: dict[str, str],
    argument: str | None,
    endpoint: str,
) -> None:
    for var, value in environment.items():
        monkeypatch.setenv(var, value)
    settings = Settings.resolve(base_url=argument)
    assert settings.traces_endpoint == endpoint
    assert settings.is_default_endpoint is (endpoint == "https://api.keywordsai.co/api/v1/traces")
