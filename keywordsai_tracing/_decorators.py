"""One decorator implementation behind `workflow`, `task`, `agent` and `tool`.

At decoration time the function's flavour picks one of four thin wrappers (sync,
coroutine, generator, async generator), each built on `EntityScope`. Every wrapper reads
``_state.runtime`` per call: with no enabled telemetry it calls straight through.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Any, ParamSpec, TypeVar, overload

from . import _state
from ._scope import EntityScope, EntitySpec

logger = logging.getLogger("keywordsai_tracing")

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")
S = TypeVar("S")


def _open(spec: EntitySpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> EntityScope | None:
    runtime = _state.runtime
    if runtime is None:
        return None
    try:
        return EntityScope(runtime, spec, args, kwargs)
    except Exception:  # the SDK never breaks the user's call
        logger.exception("Could not start the span for %s", spec.span_name)
        return None


def _wrap_sync(fn: Callable[P, R], spec: EntitySpec) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if _state.runtime is None:
            return fn(*args, **kwargs)
        scope = _open(spec, args, kwargs)
        if scope is None:
            return fn(*args, **kwargs)
        with scope:
            result = fn(*args, **kwargs)
            scope.set_output(result)
            return result

    return wrapper


def _wrap_coroutine(fn: Callable[P, Awaitable[R]], spec: EntitySpec) -> Callable[P, Awaitable[R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if _state.runtime is None:
            return await fn(*args, **kwargs)
        scope = _open(spec, args, kwargs)
        if scope is None:
            return await fn(*args, **kwargs)
        with scope:
            result = await fn(*args, **kwargs)
            scope.set_output(result)
            return result

    return wrapper


def _wrap_generator(
    fn: Callable[P, Generator[Y, S, R]], spec: EntitySpec
) -> Callable[P, Generator[Y, S, R]]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Generator[Y, S, R]:
        scope = _open(spec, args, kwargs)
        if scope is None:
            return (yield from fn(*args, **kwargs))
        error: BaseException | None = None
        try:
            inner = fn(*args, **kwargs)
            step: Callable[[Any], Y] = inner.send
            value: Any = None
            while True:
                token = scope.attach()
                try:
                    item = step(value)
                except StopIteration as stop:
                    result: R = stop.value
                    return result
                finally:
                    scope.detach(token)
                try:
                    value = yield item
                    step = inner.send
                except GeneratorExit:
                    token = scope.attach()
                    try:
                        inner.close()
                    finally:
                        scope.detach(token)
                    raise
                except BaseException as exc:  # thrown in by the consumer: forward it
                    step, value = inner.throw, exc
        except BaseException as exc:
            error = exc
            raise
        finally:
            scope.finish(error)

    return wrapper


def _wrap_async_generator(
    fn: Callable[P, AsyncGenerator[Y, S]], spec: EntitySpec
) -> Callable[P, AsyncGenerator[Y, S]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[Y, S]:
        # Stepped by hand in the consumer's own task: no helper task per item, so
        # timeouts, cancel scopes and aclosing() behave as they do undecorated.
        scope = _open(spec, args, kwargs)
        error: BaseException | None = None
        try:
            inner = fn(*args, **kwargs)
            step: Callable[[Any], Awaitable[Y]] = inner.asend
            value: Any = None
            while True:
                token = scope.attach() if scope is not None else None
                try:
                    item = await step(value)
                except StopAsyncIteration:
                    return
                finally:
                    if scope is not None:
                        scope.detach(token)
                try:
                    value = yield item
                    step = inner.asend
                except GeneratorExit:
                    token = scope.attach() if scope is not None else None
                    try:
                        await inner.aclose()
                    finally:
                        if scope is not None:
                            scope.detach(token)
                    raise
                except BaseException as exc:  # thrown in by the consumer: forward it
                    step, value = inner.athrow, exc
        except BaseException as exc:
            error = exc
            raise
        finally:
            if scope is not None:
                scope.finish(error)

    return wrapper


def _wrap_function(fn: Callable[..., Any], spec: EntitySpec) -> Callable[..., Any]:
    """Pick the wrapper for ``fn``'s flavour; the wrapper keeps that flavour."""
    if inspect.isasyncgenfunction(fn):
        return _wrap_async_generator(fn, spec)
    if inspect.iscoroutinefunction(fn):
        return _wrap_coroutine(fn, spec)
    if inspect.isgeneratorfunction(fn):
        return _wrap_generator(fn, spec)
    return _wrap_sync(fn, spec)


def _takes_self(fn: Callable[..., Any]) -> bool:
    """True when the first parameter is ``self``/``cls``: it is left out of the input."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0].name in ("self", "cls")


def _normalise_processors(processors: str | list[str] | tuple[str, ...] | None) -> str | None:
    if processors is None:
        return None
    if isinstance(processors, str):
        return processors or None
    if isinstance(processors, list | tuple) and all(isinstance(p, str) for p in processors):
        return ",".join(processors) or None
    raise TypeError("processors: expected a str or a list of str")


def decorate(
    target: Any,
    kind: str,
    name: str | None,
    version: str | int | None,
    method_name: str | None,
    processors: str | None,
) -> Any:
    """Wrap a function, method descriptor, or (with ``method_name``) a class."""
    if isinstance(target, type):
        if not method_name:
            raise TypeError(f"@{kind} on a class needs method_name= naming the method to wrap")
        try:
            original = inspect.getattr_static(target, method_name)
        except AttributeError:
            raise ValueError(
                f"method_name: {target.__name__} has no attribute {method_name!r}"
            ) from None
        wrapped = decorate(original, kind, name or target.__name__, version, None, processors)
        setattr(target, method_name, wrapped)
        return target
    if isinstance(target, staticmethod | classmethod):
        inner = decorate(target.__func__, kind, name, version, None, processors)
        return type(target)(inner)
    if not callable(target):
        raise TypeError(f"@{kind} expects a function, method or class, got {type(target).__name__}")
    entity_name = name or getattr(target, "__name__", None) or type(target).__name__
    spec = EntitySpec(kind, entity_name, version, processors, _takes_self(target))
    return _wrap_function(target, spec)


def make_decorator(
    kind: str,
    target: Any,
    name: str | None,
    version: str | int | None,
    method_name: str | None,
    processors: str | list[str] | tuple[str, ...] | None,
) -> Any:
    """The shared body of `workflow`/`task`/`agent`/`tool`: bare or called form."""
    if isinstance(target, str) and name is None:
        target, name = None, target  # @task("name"): a positional name
    joined = _normalise_processors(processors)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    if target is not None:
        return decorate(target, kind, name, version, method_name, joined)

    def decorator(fn: Any) -> Any:
        return decorate(fn, kind, name, version, method_name, joined)

    return decorator


F = TypeVar("F", bound=Callable[..., Any])
Processors = str | list[str] | tuple[str, ...] | None


class EntityDecorator:
    """A decorator factory for one span kind; `workflow`, `task`, `agent` and `tool` are
    its four instances. Typing keeps the decorated object's exact type, so mypy sees the
    original signature (and a class stays a class)."""

    def __init__(self, kind: str, doc: str) -> None:
        self.kind = kind
        self.__doc__ = doc

    def __repr__(self) -> str:
        return f"<keywordsai_tracing.{self.kind} decorator>"

    @overload
    def __call__(self, target: F, /) -> F: ...
    @overload
    def __call__(
        self,
        target: str | None = None,
        /,
        *,
        name: str | None = None,
        version: str | int | None = None,
        method_name: str | None = None,
        processors: Processors = None,
    ) -> Callable[[F], F]: ...
    def __call__(
        self,
        target: Any = None,
        /,
        *,
        name: str | None = None,
        version: str | int | None = None,
        method_name: str | None = None,
        processors: Processors = None,
    ) -> Any:
        return make_decorator(self.kind, target, name, version, method_name, processors)


__all__ = ["EntityDecorator", "decorate", "make_decorator"]
