"""Integrations with web frameworks; the request-scoped KeywordsAI parameters they share.

`keywordsai_tracing.integrations.asgi` holds the ASGI lifespan helper and middleware
(Starlette, FastAPI, any ASGI server). This package itself only defines what the span
pipeline needs and imports nothing heavy, so ``_pipeline`` can import it:

- `REQUEST_PARAMS_KEY`: the OpenTelemetry context key under which a middleware puts the
  span attributes of the current request's KeywordsAI parameters (``customer_identifier``,
  ``thread_identifier``, ...), already converted and read-only;
- `request_params_context` builds such a context;
- `add_request_params` puts them into a decorated span's attributes before it starts;
- `apply_request_params` sets them on any other span as it starts (called from the
  pipeline's ``on_start``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from opentelemetry import context as context_api
from opentelemetry.context import Context, create_key
from opentelemetry.sdk.trace import Span
from opentelemetry.util.types import AttributeValue

from keywordsai_tracing._attributes import ENTITY_PATH_KEY, WORKFLOW_NAME_KEY
from keywordsai_tracing._compact import plain_attributes
from keywordsai_tracing._params import attribute_value, params_to_attributes

__all__ = [
    "REQUEST_PARAMS_KEY",
    "add_request_params",
    "apply_request_params",
    "request_params_context",
]

# Value: a read-only ``Mapping[str, AttributeValue]`` (span attributes, not raw params).
REQUEST_PARAMS_KEY: Final = create_key("keywordsai_request_params")


def request_params_context(params: Any, context: Context | None = None) -> Context:
    """``context`` (default: the current one) carrying ``params`` for every span inside.

    ``params`` is what ``keywordsai_params=`` accepts (a dict, a `KeywordsAIParams`, an
    object with ``model_dump()``); invalid keys or values are logged and left out. Values
    already in the context (an enclosing scope's) are kept unless ``params`` overrides
    them. Returns ``context`` unchanged when there is nothing to add.
    """
    base = context if context is not None else context_api.get_current()
    attributes = params_to_attributes(params) if params is not None else {}
    if not attributes:
        return base
    outer = base.get(REQUEST_PARAMS_KEY)
    if isinstance(outer, Mapping):
        attributes = {**outer, **attributes}
    return context_api.set_value(REQUEST_PARAMS_KEY, MappingProxyType(attributes), base)


_PLAIN: Final = frozenset({str, int, float, bool})


def add_request_params(attributes: dict[str, Any], parent_context: Context) -> None:
    """Add the request's KeywordsAI parameters in ``parent_context`` to ``attributes``,
    the attributes a decorated span (workflow, task, agent, tool) starts with.

    Keys already in ``attributes`` are kept. Values are ones OpenTelemetry takes as they
    are (a sequence becomes a tuple, so spans never share a mutable value); anything else
    under the key (set by hand, not by `request_params_context`) is left out.
    """
    params = parent_context.get(REQUEST_PARAMS_KEY)
    if not params or not (type(params) is MappingProxyType or isinstance(params, Mapping)):
        return
    for key, value in params.items():
        if key in attributes or type(key) is not str:
            continue
        if type(value) in _PLAIN:
            attributes[key] = value
            continue
        converted = attribute_value(value)
        if converted is not None:
            attributes[key] = tuple(converted) if isinstance(converted, list) else converted


def apply_request_params(span: Span, parent_context: Context | None) -> None:
    """Set the request's KeywordsAI parameters on ``span``, a span not started by our
    decorators (they start with them, `add_request_params`), as it starts.

    Only spans inside a decorated entity (an LLM call in a task, say) get them, so spans
    of the web framework or of its instrumentation are left alone. Attributes the span
    already has are kept, and a later ``update_current_span(keywordsai_params=...)``
    overrides these.
    """
    ctx = parent_context if parent_context is not None else context_api.get_current()
    attributes = ctx.get(REQUEST_PARAMS_KEY)
    if not attributes or not isinstance(attributes, Mapping):  # cheap test first: hot path
        return
    if ctx.get(WORKFLOW_NAME_KEY) is None and ctx.get(ENTITY_PATH_KEY) is None:
        return
    current = plain_attributes(span)
    missing: dict[str, AttributeValue] = {
        key: value for key, value in attributes.items() if key not in current
    }
    if missing:
        span.set_attributes(missing)
