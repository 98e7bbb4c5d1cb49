"""Configuration: one table of settings, one resolver, one frozen result.

This is the only module that reads ``os.environ``. Every setting resolves in the same
order: explicit constructor argument, then environment variables (first one set wins),
then the default. Bad arguments raise ``ValueError``/``TypeError`` naming the parameter;
bad environment values log a warning naming the variable and fall back to the default.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter

from .instruments import Instruments

logger = logging.getLogger("keywordsai_tracing")

DEFAULT_BASE_URL = "https://api.keywordsai.co/api"
TRACES_PATH = "/v1/traces"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

Protocol = Literal["http/json", "http/protobuf"]
Compression = Literal["gzip", "none"]

_UNSET: Any = object()


class _Invalid(Exception):
    """A value that does not parse; the message says why."""


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _Invalid("expected true or false")


def _parse_log_level(value: Any) -> int:
    if isinstance(value, bool):
        raise _Invalid("expected a log level name")
    if isinstance(value, int):
        if value in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
            return value
        raise _Invalid(f"expected one of {', '.join(LOG_LEVELS)}")
    if isinstance(value, str) and value.strip().upper() in LOG_LEVELS:
        level: int = logging.getLevelName(value.strip().upper())
        return level
    raise _Invalid(f"expected one of {', '.join(LOG_LEVELS)}")


def _parse_url(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("expected a string URL")
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _Invalid("expected an http:// or https:// URL")
    return url


def _positive_number(kind: type[int] | type[float]) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise _Invalid("expected a number")
        try:
            number = kind(value)
        except (TypeError, ValueError, OverflowError):
            raise _Invalid("expected a number") from None
        if not number > 0 or not math.isfinite(number):
            raise _Invalid("expected a finite positive number")
        return number

    return parse


def _parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("expected a string")
    return value


def _parse_protocol(value: Any) -> str:
    text = str(value).strip().lower() if isinstance(value, str) else value
    aliases = {"json": "http/json", "http/json": "http/json"}
    aliases |= {"protobuf": "http/protobuf", "http/protobuf": "http/protobuf"}
    if text not in aliases:
        raise _Invalid("expected 'http/json' or 'http/protobuf'")
    return aliases[text]


def _parse_compression(value: Any) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in ("gzip", "none"):
        raise _Invalid("expected 'gzip' or 'none'")
    return str(text)


def _parse_header_list(value: Any) -> dict[str, str]:
    """Parse the OTEL ``k=v,k2=v2`` header list (values URL-encoded)."""
    if not isinstance(value, str):
        raise _Invalid("expected k=v,k2=v2")
    headers: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise _Invalid("expected k=v,k2=v2")
        headers[unquote(key.strip())] = unquote(val.strip())
    return headers


def _parse_exporter_spec(value: Any) -> str:
    from .exporters import exporter_from_spec  # builds nothing that opens or writes

    try:
        exporter_from_spec(value)
    except (TypeError, ValueError) as exc:
        raise _Invalid(str(exc)) from None
    return str(value).strip()


@dataclass(frozen=True)
class _Setting:
    """One row of the table: environment variables, default and parser."""

    env: tuple[str, ...]
    default: Any
    parse: Callable[[Any], Any]


# Setting name -> (environment variables, first wins; default; parser).
SETTINGS: dict[str, _Setting] = {
    "api_key": _Setting(("KEYWORDSAI_API_KEY",), None, _parse_str),
    "app_name": _Setting(("OTEL_SERVICE_NAME",), "keywordsai", _parse_str),
    "base_url": _Setting(("KEYWORDSAI_BASE_URL",), None, _parse_url),
    # Used only when neither base_url nor KEYWORDSAI_BASE_URL is set.
    "otel_traces_endpoint": _Setting(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",), None, _parse_url),
    "otel_endpoint": _Setting(("OTEL_EXPORTER_OTLP_ENDPOINT",), None, _parse_url),
    "log_level": _Setting(("KEYWORDSAI_LOG_LEVEL",), logging.INFO, _parse_log_level),
    "is_batching_enabled": _Setting(("KEYWORDSAI_BATCHING_ENABLED",), True, _parse_bool),
    "trace_content": _Setting(("KEYWORDSAI_TRACE_CONTENT",), True, _parse_bool),
    "sdk_disabled": _Setting(("OTEL_SDK_DISABLED",), False, _parse_bool),
    "filter_noise": _Setting(("KEYWORDSAI_FILTER_NOISE",), True, _parse_bool),
    "flush_on_sigterm": _Setting(("KEYWORDSAI_FLUSH_ON_SIGTERM",), True, _parse_bool),
    # Seconds: the one budget for interpreter exit, SIGTERM and shutdown() without a timeout.
    "shutdown_timeout": _Setting(("KEYWORDSAI_SHUTDOWN_TIMEOUT",), 5.0, _positive_number(float)),
    # A local exporter next to the configured one: "console", "jsonl:<path>".
    "local_exporter": _Setting(("KEYWORDSAI_EXPORTER",), None, _parse_exporter_spec),
    "protocol": _Setting(
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
        "http/json",
        _parse_protocol,
    ),
    "compression": _Setting(
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"),
        "none",
        _parse_compression,
    ),
    # Seconds (the spec's milliseconds env values are converted by ``_ms``).
    "export_timeout": _Setting(
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
        10.0,
        _positive_number(float),
    ),
    "env_headers": _Setting(
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"),
        {},
        _parse_header_list,
    ),
    "schedule_delay": _Setting(("OTEL_BSP_SCHEDULE_DELAY",), 5.0, _positive_number(float)),
    "batch_timeout": _Setting(("OTEL_BSP_EXPORT_TIMEOUT",), 30.0, _positive_number(float)),
    "max_queue_size": _Setting(("OTEL_BSP_MAX_QUEUE_SIZE",), 2048, _positive_number(int)),
    "max_export_batch_size": _Setting(
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE",), 512, _positive_number(int)
    ),
}

# Environment variables whose value is in milliseconds while the setting is in seconds.
_MILLISECOND_VARS = frozenset(
    {
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_BSP_EXPORT_TIMEOUT",
    }
)


def resolve(name: str, argument: Any = _UNSET, environ: Mapping[str, str] | None = None) -> Any:
    """Resolve one setting: argument, then environment, then default.

    An invalid ``argument`` raises ``ValueError`` naming the parameter; an invalid
    environment value logs a warning naming the variable and falls back.
    """
    setting = SETTINGS[name]
    if argument is not _UNSET and argument is not None:
        try:
            return setting.parse(argument)
        except _Invalid as exc:
            raise ValueError(f"{name}: {exc}, got {argument!r}") from None
    env = os.environ if environ is None else environ
    for var in setting.env:
        raw = env.get(var)
        if raw is None or raw.strip() == "":
            continue
        try:
            value = setting.parse(raw)
        except _Invalid as exc:
            shown = "<redacted>" if name == "api_key" else repr(raw)
            logger.warning(
                "Ignoring environment variable %s=%s (%s); using the default", var, shown, exc
            )
            return setting.default
        return value / 1000.0 if var in _MILLISECOND_VARS else value
    return setting.default


def traces_endpoint(base_url: str) -> str:
    """``{base_url}/v1/traces``: strip a trailing ``/``, append the path unless present."""
    url = base_url.rstrip("/")
    return url if url.endswith(TRACES_PATH) else url + TRACES_PATH


def _resolve_endpoint(base: str | None, get: Callable[[str], Any]) -> tuple[str, str]:
    """``base_url``/``KEYWORDSAI_BASE_URL`` (+ ``/v1/traces``), else
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (as is), else ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (+ ``/v1/traces``), else the KeywordsAI endpoint. Returns (base URL, traces URL)."""
    if base is not None:
        return base, traces_endpoint(base)
    exact: str | None = get("otel_traces_endpoint")
    if exact is not None:
        return exact, exact
    general: str | None = get("otel_endpoint")
    if general is not None:
        return general, traces_endpoint(general)
    return DEFAULT_BASE_URL, traces_endpoint(DEFAULT_BASE_URL)


def _check_instruments(name: str, value: Any) -> frozenset[Instruments] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Collection):
        raise TypeError(f"{name}: expected a set of Instruments, got {type(value).__name__}")
    for item in value:
        if not isinstance(item, Instruments):
            raise ValueError(f"{name}: {item!r} is not an Instruments member")
    return frozenset(value)


def _check_str_mapping(name: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name}: expected a dict of str to str, got {type(value).__name__}")
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise TypeError(f"{name}: expected str keys and values, got {key!r}: {val!r}")
    return dict(value)


def _check_type(name: str, value: Any, kind: type | tuple[type, ...], expected: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__}")


@dataclass(frozen=True)
class Settings:
    """The resolved, validated configuration of one `KeywordsAITelemetry`."""

    app_name: str
    api_key: str | None = field(repr=False)
    base_url: str
    endpoint: str
    log_level: int
    is_batching_enabled: bool
    instruments: frozenset[Instruments] | None
    block_instruments: frozenset[Instruments]
    headers: Mapping[str, str] = field(repr=False)
    resource_attributes: Mapping[str, str]
    span_postprocess_callback: Callable[[ReadableSpan], None] | None
    is_enabled: bool
    custom_exporter: SpanExporter | None
    trace_content: bool
    filter_noise: bool
    flush_on_sigterm: bool
    shutdown_timeout: float
    local_exporter: str | None
    protocol: Protocol
    compression: Compression
    export_timeout: float
    schedule_delay: float
    batch_timeout: float
    max_queue_size: int
    max_export_batch_size: int

    @property
    def traces_endpoint(self) -> str:
        """Where the HTTP exporter POSTs (``{base_url}/v1/traces``, or the OTLP endpoint)."""
        return self.endpoint

    @property
    def is_default_endpoint(self) -> bool:
        """True when spans would go to the KeywordsAI cloud endpoint."""
        return self.endpoint == traces_endpoint(DEFAULT_BASE_URL)

    @classmethod
    def resolve(
        cls,
        *,
        app_name: Any = None,
        api_key: Any = None,
        base_url: Any = None,
        log_level: Any = None,
        is_batching_enabled: Any = None,
        instruments: Any = None,
        block_instruments: Any = None,
        headers: Any = None,
        resource_attributes: Any = None,
        span_postprocess_callback: Any = None,
        is_enabled: Any = True,
        custom_exporter: Any = None,
        trace_content: Any = None,
        filter_noise: Any = None,
        flush_on_sigterm: Any = None,
        shutdown_timeout: Any = None,
        local_exporter: Any = None,
        protocol: Any = None,
        compression: Any = None,
        export_timeout: Any = None,
        schedule_delay: Any = None,
        max_queue_size: Any = None,
        max_export_batch_size: Any = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Validate arguments and resolve every setting against the environment."""
        _check_type("app_name", app_name, str, "a string")
        if app_name is not None and not app_name:
            raise ValueError("app_name: must not be empty")
        _check_type("api_key", api_key, str, "a string")
        _check_type("is_enabled", is_enabled, bool, "a bool")
        for flag_name, flag in (
            ("is_batching_enabled", is_batching_enabled),
            ("trace_content", trace_content),
            ("filter_noise", filter_noise),
            ("flush_on_sigterm", flush_on_sigterm),
        ):
            _check_type(flag_name, flag, bool, "a bool or None")
        if span_postprocess_callback is not None and not callable(span_postprocess_callback):
            raise TypeError("span_postprocess_callback: expected a callable")
        _check_type(
            "custom_exporter", custom_exporter, SpanExporter, "an opentelemetry SpanExporter"
        )

        def get(name: str, argument: Any = _UNSET) -> Any:
            return resolve(name, argument, environ)

        base, endpoint = _resolve_endpoint(get("base_url", base_url), get)
        explicit_headers = _check_str_mapping("headers", headers)
        resource = _check_str_mapping("resource_attributes", resource_attributes)
        disabled_by_env: bool = get("sdk_disabled")
        return cls(
            app_name=get("app_name", app_name) or "keywordsai",
            api_key=get("api_key", api_key) or None,
            base_url=base,
            endpoint=endpoint,
            log_level=get("log_level", log_level),
            is_batching_enabled=get("is_batching_enabled", is_batching_enabled),
            instruments=_check_instruments("instruments", instruments),
            block_instruments=_check_instruments("block_instruments", block_instruments)
            or frozenset(),
            headers={**get("env_headers"), **explicit_headers},
            resource_attributes=resource,
            span_postprocess_callback=span_postprocess_callback,
            is_enabled=bool(is_enabled) and not disabled_by_env,
            custom_exporter=custom_exporter,
            trace_content=get("trace_content", trace_content),
            filter_noise=get("filter_noise", filter_noise),
            flush_on_sigterm=get("flush_on_sigterm", flush_on_sigterm),
            shutdown_timeout=get("shutdown_timeout", shutdown_timeout),
            local_exporter=get("local_exporter", local_exporter),
            protocol=get("protocol", protocol),
            compression=get("compression", compression),
            export_timeout=get("export_timeout", export_timeout),
            schedule_delay=get("schedule_delay", schedule_delay),
            batch_timeout=get("batch_timeout"),
            max_queue_size=get("max_queue_size", max_queue_size),
            max_export_batch_size=get("max_export_batch_size", max_export_batch_size),
        )
