"""End LLM stream spans when the stream is closed, not only when it is exhausted.

The openai and anthropic instrumentations wrap a streaming response in a proxy that ends
its span when the stream is consumed to the end. A stream the application abandons
(``break`` then ``close()``/``aclose()``, leaving ``with``/``async with``, or dropping it)
left the span open until garbage collection (openai) or forever (anthropic). These
shims give the proxies ``close``/``aclose``/``__exit__``/``__aexit__``/``__del__`` that
first finish the span with what was received, then do what the stream would have done.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("keywordsai_tracing.instrumentation")

# Per instrumented library: (module, proxy class, its method that ends the span;
# idempotent in both libraries). Only the enabled library's module is ever imported:
# the anthropic one imports the whole anthropic package.
_PROXIES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "openai": (
        (
            "opentelemetry.instrumentation.openai.shared.chat_wrappers",
            "ChatStream",
            "_ensure_cleanup",
        ),
    ),
    "anthropic": (
        (
            "opentelemetry.instrumentation.anthropic.streaming",
            "AnthropicStream",
            "_complete_instrumentation",
        ),
        (
            "opentelemetry.instrumentation.anthropic.streaming",
            "AnthropicAsyncStream",
            "_complete_instrumentation",
        ),
    ),
}
_MARK = "__keywordsai_stream_shim__"


def _finisher(method: str) -> Callable[[Any], None]:
    def finish(proxy: Any) -> None:
        try:
            getattr(proxy, method)()
        except Exception:  # never let span bookkeeping break the application's stream
            logger.debug("Could not end the span of an abandoned stream", exc_info=True)

    return finish


def _shims(finish: Callable[[Any], None], cls: type) -> dict[str, Any]:
    def close(self: Any, *args: Any, **kwargs: Any) -> Any:
        finish(self)
        return self.__wrapped__.close(*args, **kwargs)  # a coroutine for async streams

    def aclose(self: Any, *args: Any, **kwargs: Any) -> Any:
        finish(self)
        return self.__wrapped__.aclose(*args, **kwargs)

    def __exit__(self: Any, *exc: Any) -> Any:
        finish(self)
        return self.__wrapped__.__exit__(*exc)

    async def __aexit__(self: Any, *exc: Any) -> Any:
        finish(self)
        return await self.__wrapped__.__aexit__(*exc)

    def __del__(self: Any) -> None:
        finish(self)

    shims: dict[str, Any] = {"close": close, "aclose": aclose, "__aexit__": __aexit__}
    if "__exit__" not in vars(cls):  # openai's proxy already finishes there
        shims["__exit__"] = __exit__
    if "__del__" not in vars(cls):  # openai's proxy already finishes there
        shims["__del__"] = __del__
    return shims


def install(library: str) -> None:
    """Patch the stream proxies of ``library``'s instrumentation (once per process)."""
    for module_name, class_name, method in _PROXIES.get(library, ()):
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        if getattr(cls, _MARK, False) or not hasattr(cls, method):
            continue
        for name, function in _shims(_finisher(method), cls).items():
            setattr(cls, name, function)
        setattr(cls, _MARK, True)
