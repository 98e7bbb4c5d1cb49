"""The four decorators: `workflow`, `task`, `agent`, `tool`.

Each works on plain functions, coroutine functions, generators, async generators,
methods (``staticmethod``/``classmethod`` in either order) and, with ``method_name=``,
on a class. Both ``@task`` and ``@task(name=...)`` work. Typing keeps the decorated
object's exact type, so mypy sees the original signature (and a class stays a class).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from ._decorators import make_decorator

__all__ = ["agent", "task", "tool", "workflow"]

F = TypeVar("F", bound=Callable[..., Any])
Processors = str | list[str] | tuple[str, ...] | None


@overload
def workflow(target: F, /) -> F: ...
@overload
def workflow(
    target: str | None = None,
    /,
    *,
    name: str | None = None,
    version: str | int | None = None,
    method_name: str | None = None,
    processors: Processors = None,
) -> Callable[[F], F]: ...
def workflow(
    target: Any = None,
    /,
    *,
    name: str | None = None,
    version: str | int | None = None,
    method_name: str | None = None,
    processors: Processors = None,
) -> Any:
    """Trace a function as a workflow: the root of a unit of work.

    Spans started inside it carry ``traceloop.workflow.name``.

    The span is named ``"{name}.workflow"``; ``name`` defaults to the function's (or
    class's) ``__name__``. ``processors`` routes the span, and spans inside it, to
    processors added with ``add_processor(name=...)``.
    """
    return make_decorator("workflow", target, name, version, method_name, processors)


@overload
def task(target: F, /) -> F: ...
@overload
def task(
    target: str | None = None,
    /,
    *,
    name: str | None = None,
    version: str | int | None = None,
    method_name: str | None = None,
    processors: Processors = None,
) -> Callable[[F], F]: ...
def task(
    target: Any = None,
    /,
    *,
    name: str | None = None,
    version: str | int | None = None,
    method_name: str | None = None,
    processors: Processors = None,
) -> Any:
    """Trace a function as a task: a step inside a workflow.

    Its span carries ``traceloop.entity.path``, the dotted path of enclosing tasks.

    The span is named ``"{name}.task"``; ``name`` defaults to the function's (or
    class's) ``__name__``. ``processors`` routes the span, and spans inside it, to
    processors added with ``add_processor(name=...)``.
    """
    return make_decorator("task", target, name, version, method_name, processors)


@overload
def agent(target: F, /) -> F: ...
@overload
def agent(
    target: str | None = None,
    /,
    *,
    name: str | None = None,
    version: str | int | None = None,
    method_name: str | None = None,
    processors: Processors = None,
) -> Callable[[F], F]: ...
def agent(
    target: Any = None,
    /,
    *,
    name: str | None = None,
    version: str | int | None = None,
    method_name: str | None = None,
    processors: Processors = None,
) -> Any:
    """Trace a function as an agent; like a workflow, it names the spans inside it.

    The span is named ``"{name}.agent"``; ``name`` defaults to the function's (or
    class's) ``__name__``. ``processors`` routes the span, and spans inside it, to
    processors added with ``add_processor(name=...)``.
    """
    return make_decorator("agent", target, name, version, method_name, processors)


@overload
def tool(target: F, /) -> F: ...
@overload
def tool(
    target: str | None = None,
    /,
    *,
    name: str | None = None,
    version: str | int | None = None,
    method_name: str | None = None,
    processors: Processors = None,
) -> Callable[[F], F]: ...
def tool(
    target: Any = None,
    /,
    *,
    name: str | None = None,
    version: str | int | None = None,
    method_name: str | None = None,
    processors: Processors = None,
) -> Any:
    """Trace a function as a tool an agent calls; like a task, it extends the path.

    The span is named ``"{name}.tool"``; ``name`` defaults to the function's (or
    class's) ``__name__``. ``processors`` routes the span, and spans inside it, to
    processors added with ``add_processor(name=...)``.
    """
    return make_decorator("tool", target, name, version, method_name, processors)
