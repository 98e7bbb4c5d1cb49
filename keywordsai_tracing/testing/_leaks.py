"""Detect a span or KeywordsAI context left attached by the code a test ran."""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace

from keywordsai_tracing._attributes import ENTITY_PATH_KEY, WORKFLOW_NAME_KEY

__all__ = ["ContextSnapshot", "checking_leaks"]


class ContextSnapshot:
    """The current span and KeywordsAI context values, to compare with later."""

    def __init__(self) -> None:
        self.span = trace.get_current_span().get_span_context()
        self.workflow_name = context_api.get_value(WORKFLOW_NAME_KEY)
        self.entity_path = context_api.get_value(ENTITY_PATH_KEY)

    def leaks_since(self, before: ContextSnapshot) -> list[str]:
        """What differs from ``before``, as readable sentences (empty when nothing)."""
        leaks = []
        if self.span != before.span:
            leaks.append(f"a span is still current ({self.span!r})")
        if self.workflow_name != before.workflow_name:
            leaks.append(f"workflow name {self.workflow_name!r} is still attached")
        if self.entity_path != before.entity_path:
            leaks.append(f"entity path {self.entity_path!r} is still attached")
        return leaks


def _fail_on_leaks(before: ContextSnapshot, where: str) -> None:
    __tracebackhide__ = True
    leaks = ContextSnapshot().leaks_since(before)
    if leaks:
        pytest.fail(
            f"keywordsai_no_leaks: after {where}, " + "; ".join(leaks) + " (a context "
            "attach() without its detach() in the code under test)",
            pytrace=False,
        )


def checking_leaks(function: Callable[..., Any], where: str) -> Callable[..., Any]:
    """``function`` (a test, sync or ``async def``) failing when its body returns leaving
    a span or KeywordsAI context attached that was not there when it started.

    Async tests are checked inside their own task (context changes made there are not
    visible to the fixtures around them). Sync tests run in a copy of the current
    context, checked before it is dropped, so a leak cannot spill into later tests. An
    exception from the body is left alone.
    """
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def check_async(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            before = ContextSnapshot()
            result = await function(*args, **kwargs)
            _fail_on_leaks(before, where)
            return result

        return check_async
    if inspect.isfunction(function) or inspect.ismethod(function):

        @functools.wraps(function)
        def check(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            return contextvars.copy_context().run(checked, *args, **kwargs)

        def checked(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            before = ContextSnapshot()
            result = function(*args, **kwargs)
            _fail_on_leaks(before, where)
            return result

        return check
    raise TypeError(f"keywordsai_no_leaks: cannot check {function!r} (not a test function)")
