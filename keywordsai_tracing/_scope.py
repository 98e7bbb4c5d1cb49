"""The one span helper behind every decorator: open an entity span, attach, detach, end.

`EntityScope` builds the span and the context its body runs in, but attaches nothing
by itself: the sync and coroutine wrappers attach once around the call, the generator
wrappers attach around each step, so a token is always detached in the context that
created it and nothing is left attached while a consumer runs between items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from . import _attributes as attrs
from ._serialize import inputs_to_json, to_json
from ._state import Runtime

WORKFLOW_KINDS = frozenset({"workflow", "agent"})
PATH_KINDS = frozenset({"task", "tool"})


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """What a decorator knows at decoration time."""

    kind: str
    name: str
    version: str | int | None
    processors: str | None
    skip_first_arg: bool

    @property
    def span_name(self) -> str:
        return f"{self.name}.{self.kind}"


class EntityScope:
    """One call of a decorated function: its span and the context it runs in."""

    __slots__ = ("_token", "context", "runtime", "span")

    def __init__(
        self, runtime: Runtime, spec: EntitySpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.runtime = runtime
        parent = context_api.get_current()
        attributes: dict[str, Any] = {
            attrs.SPAN_KIND: spec.kind,
            attrs.ENTITY_NAME: spec.name,
            attrs.LOG_METHOD: attrs.LOG_METHOD_VALUE,
        }
        if spec.version is not None:
            attributes[attrs.ENTITY_VERSION] = spec.version
        ctx = parent
        workflow = context_api.get_value(attrs.WORKFLOW_NAME_KEY, parent)
        if spec.kind in WORKFLOW_KINDS:
            workflow = spec.name
            ctx = context_api.set_value(attrs.WORKFLOW_NAME_KEY, workflow, ctx)
        if workflow is not None:
            attributes[attrs.WORKFLOW_NAME] = workflow
        path = context_api.get_value(attrs.ENTITY_PATH_KEY, parent)
        if spec.kind in PATH_KINDS:
            path = f"{path}.{spec.name}" if path else spec.name
            ctx = context_api.set_value(attrs.ENTITY_PATH_KEY, path, ctx)
        if path:
            attributes[attrs.ENTITY_PATH] = path
        processors = spec.processors or context_api.get_value(attrs.PROCESSORS_KEY, parent)
        if processors:
            attributes[attrs.PROCESSORS] = processors
            if spec.processors:
                ctx = context_api.set_value(attrs.PROCESSORS_KEY, processors, ctx)
        if runtime.trace_content:
            shown = args[1:] if spec.skip_first_arg else args
            attributes[attrs.ENTITY_INPUT] = inputs_to_json(shown, kwargs)
        self.span: Span = runtime.tracer.start_span(
            spec.span_name, context=parent, attributes=attributes
        )
        self.context = trace.set_span_in_context(self.span, ctx)
        self._token: object = None

    def __enter__(self) -> EntityScope:
        self._token = context_api.attach(self.context)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        context_api.detach(self._token)  # type: ignore[arg-type]
        self.finish(exc)

    def attach(self) -> object:
        """Make the span current; return the token for `detach`."""
        return context_api.attach(self.context)

    @staticmethod
    def detach(token: object) -> None:
        context_api.detach(token)  # type: ignore[arg-type]

    def set_output(self, value: Any) -> None:
        if self.runtime.trace_content:
            self.span.set_attribute(attrs.ENTITY_OUTPUT, to_json(value))

    def finish(self, exc: BaseException | None = None) -> None:
        """Record a failure (an ``Exception``, not a cancellation) and end the span."""
        if isinstance(exc, Exception):
            self.span.record_exception(exc, escaped=True)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self.span.end()
