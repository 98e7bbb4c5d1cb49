"""The one span helper behind every decorator: open an entity span, attach, detach, end.

`EntityScope` builds the span and the context its body runs in, but attaches nothing
by itself: the sync and coroutine wrappers attach once around the call, the generator
wrappers attach around each step, so a token is always detached in the context that
created it and nothing is left attached while a consumer runs between items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode

from . import _attributes as attrs
from ._fast_span import SPAN_KEY
from ._serialize import inputs_to_json, to_json
from ._state import Runtime
from .integrations import add_request_params

WORKFLOW_KINDS = frozenset({"workflow", "agent"})
PATH_KINDS = frozenset({"task", "tool"})


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """What a decorator knows at decoration time (derived flags precomputed)."""

    kind: str
    name: str
    version: str | int | None
    processors: str | None
    skip_first_arg: bool
    span_name: str = field(init=False)
    names_workflow: bool = field(init=False)
    extends_path: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "span_name", f"{self.name}.{self.kind}")
        object.__setattr__(self, "names_workflow", self.kind in WORKFLOW_KINDS)
        object.__setattr__(self, "extends_path", self.kind in PATH_KINDS)


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
        ours: dict[str, object] = {}  # what this entity adds to the context
        workflow = spec.name if spec.names_workflow else parent.get(attrs.WORKFLOW_NAME_KEY)
        if isinstance(workflow, str):
            attributes[attrs.WORKFLOW_NAME] = workflow
            if spec.names_workflow:
                ours[attrs.WORKFLOW_NAME_KEY] = workflow
        path = parent.get(attrs.ENTITY_PATH_KEY)
        if spec.extends_path:
            path = f"{path}.{spec.name}" if path else spec.name
            ours[attrs.ENTITY_PATH_KEY] = path
        if path and isinstance(path, str):
            attributes[attrs.ENTITY_PATH] = path
        processors = spec.processors or parent.get(attrs.PROCESSORS_KEY)
        if processors and isinstance(processors, str):
            attributes[attrs.PROCESSORS] = processors
            if spec.processors:
                ours[attrs.PROCESSORS_KEY] = processors
        if runtime.trace_content:
            shown = args[1:] if spec.skip_first_arg else args
            attributes[attrs.ENTITY_INPUT] = inputs_to_json(shown, kwargs)
        add_request_params(attributes, parent)
        self.span: Span = runtime.starter.start(spec.span_name, parent, attributes)
        ours[SPAN_KEY] = self.span  # as trace.set_span_in_context, in the same copy
        self.context = Context({**parent, **ours})
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
