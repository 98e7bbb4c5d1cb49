"""KeywordsAI parameters: the key -> span attribute table and its one conversion."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypedDict

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

logger = logging.getLogger("keywordsai_tracing")

__all__ = [
    "KeywordsAIParams",
    "attribute_value",
    "keywordsai_span_attributes",
    "params_to_attributes",
]


class KeywordsAIParams(TypedDict, total=False):
    """The keys `update_current_span` and `keywordsai_span_attributes` understand."""

    customer_identifier: str | int
    customer_email: str
    customer_name: str
    evaluation_identifier: str | int
    thread_identifier: str | int
    custom_identifier: str | int
    trace_group_identifier: str | int
    metadata: dict[str, Any]


_ATTRIBUTE_OF: dict[str, str] = {
    "customer_identifier": "keywordsai.customer_params.customer_identifier",
    "customer_email": "keywordsai.customer_params.email",
    "customer_name": "keywordsai.customer_params.name",
    "evaluation_identifier": "keywordsai.evaluation_params.evaluation_identifier",
    "thread_identifier": "keywordsai.threads.thread_identifier",
    "custom_identifier": "keywordsai.span_params.custom_identifier",
    "trace_group_identifier": "keywordsai.trace.trace_group_identifier",
}
_IDENTIFIER_TYPES = (str, int)
_TEXT_KEYS = frozenset({"customer_email", "customer_name"})
METADATA_PREFIX = "keywordsai.metadata."


def _as_mapping(params: Any) -> Mapping[str, Any] | None:
    if isinstance(params, Mapping):
        return params
    dump = getattr(params, "model_dump", None)
    if callable(dump):
        try:
            dumped = dump(exclude_none=True)
        except Exception:
            logger.warning("keywordsai_params: model_dump() failed; parameters ignored")
            return None
        if isinstance(dumped, Mapping):
            return dumped
    logger.warning(
        "keywordsai_params: expected a dict or an object with model_dump(), got %s",
        type(params).__name__,
    )
    return None


def attribute_value(value: Any) -> AttributeValue | None:
    """``value`` if OpenTelemetry accepts it as an attribute value as is, else None."""
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple) and value:
        kinds = {type(item) for item in value}
        if len(kinds) == 1 and kinds <= {str, bool, int, float}:
            return list(value)
    return None


def params_to_attributes(params: Any) -> dict[str, AttributeValue]:
    """Span attributes for ``params``; unknown keys and bad types warn, never raise."""
    mapping = _as_mapping(params)
    if mapping is None:
        return {}
    attributes: dict[str, AttributeValue] = {}
    for key, value in mapping.items():
        if value is None:
            continue
        if key == "metadata":
            if not isinstance(value, Mapping):
                logger.warning(
                    "keywordsai_params: 'metadata' must be a dict, got %s", type(value).__name__
                )
                continue
            for meta_key, meta_value in value.items():
                converted = attribute_value(meta_value)
                if converted is None:
                    converted = str(meta_value)
                attributes[f"{METADATA_PREFIX}{meta_key}"] = converted
            continue
        attribute = _ATTRIBUTE_OF.get(key)
        if attribute is None:
            logger.warning("keywordsai_params: unknown key %r ignored", key)
            continue
        expected = (str,) if key in _TEXT_KEYS else _IDENTIFIER_TYPES
        if isinstance(value, bool) or not isinstance(value, expected):
            logger.warning(
                "keywordsai_params: %r must be %s, got %s; ignored",
                key,
                " or ".join(t.__name__ for t in expected),
                type(value).__name__,
            )
            continue
        attributes[attribute] = value
    return attributes


@contextmanager
def keywordsai_span_attributes(keywordsai_params: Any) -> Iterator[None]:
    """Set KeywordsAI parameters on the current span for the duration of the block.

    ``keywordsai_params`` is a dict, a `KeywordsAIParams`, or any object with
    ``model_dump()``. With no recording span the parameters are ignored with a warning.
    """
    span = trace.get_current_span()
    if not span.is_recording():
        logger.warning("keywordsai_span_attributes: no active span; parameters ignored")
    else:
        try:
            span.set_attributes(params_to_attributes(keywordsai_params))
        except Exception:
            logger.exception("keywordsai_span_attributes: could not set the attributes")
    yield
