"""Span attribute keys, tracer names and context keys shared across the package."""

from __future__ import annotations

from typing import Final

from opentelemetry.context import create_key
from opentelemetry.semconv_ai import SpanAttributes

SPAN_KIND: Final = SpanAttributes.TRACELOOP_SPAN_KIND
ENTITY_NAME: Final = SpanAttributes.TRACELOOP_ENTITY_NAME
ENTITY_VERSION: Final = SpanAttributes.TRACELOOP_ENTITY_VERSION
ENTITY_PATH: Final = SpanAttributes.TRACELOOP_ENTITY_PATH
ENTITY_INPUT: Final = SpanAttributes.TRACELOOP_ENTITY_INPUT
ENTITY_OUTPUT: Final = SpanAttributes.TRACELOOP_ENTITY_OUTPUT
WORKFLOW_NAME: Final = SpanAttributes.TRACELOOP_WORKFLOW_NAME
LOG_METHOD: Final = "keywordsai.entity.log_method"
LOG_METHOD_VALUE: Final = "python_tracing"
PROCESSORS: Final = "processors"
# On the link a re-parented span keeps to the parent the noise filter dropped (`_noise`).
LINK_REASON: Final = "keywordsai.link.reason"
LINK_REASON_FILTERED_PARENT: Final = "filtered_parent"

# Instrumentation scope of spans made by the decorators.
DECORATOR_TRACER_NAME: Final = "keywordsai_tracing"
# Instrumentation scope of the tracer handed out by ``get_client().get_tracer()``:
# spans a user creates on purpose, always exported (never filtered as noise).
MANUAL_TRACER_NAME: Final = "keywordsai_tracing.manual"

# OpenTelemetry context keys; values travel with the context (tasks, threads).
WORKFLOW_NAME_KEY: Final = create_key("keywordsai_workflow_name")
ENTITY_PATH_KEY: Final = create_key("keywordsai_entity_path")
PROCESSORS_KEY: Final = create_key("keywordsai_processors")
