"""Instrumentation helpers that work out a constant on every call, answered once.

opentelemetry-instrumentation-openai asks ``is_openai_v1()`` several times per call
(and ``is_reasoning_supported()`` per chat call), and each asks ``packaging`` to parse
two version strings: about 10% of that instrumentation's own time in the service
benchmark, for an answer that depends only on the openai version it read once at
import. While the instrumentation is on, those names in its modules are bound to a
function returning what the original returned at `install`; `uninstall` (at shutdown)
puts the originals back. A helper that is missing, takes arguments, raises or does not
answer a bool is left alone, so a future release that changes them changes nothing here.
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("keywordsai_tracing.instrumentation")

# Per instrumented library: the module defining the helpers, and their names.
_HELPERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "openai": (
        "opentelemetry.instrumentation.openai.utils",
        ("is_openai_v1", "is_reasoning_supported"),
    ),
}

# Per library: (module, name, original) for each binding replaced.
_replaced: dict[str, list[tuple[types.ModuleType, str, Callable[[], Any]]]] = {}


def _answering(answer: bool, original: Callable[[], Any]) -> Callable[[], bool]:
    def constant() -> bool:
        return answer

    constant.__name__ = getattr(original, "__name__", "constant")
    constant.__qualname__ = getattr(original, "__qualname__", constant.__name__)
    constant.__doc__ = f"{answer} (answered once by keywordsai_tracing; see _constant_helpers)"
    constant.__wrapped__ = original  # type: ignore[attr-defined]
    return constant


def install(library: str) -> None:
    """Answer ``library``'s instrumentation helpers once (it must be instrumented)."""
    if library in _replaced or library not in _HELPERS:
        return
    module_name, names = _HELPERS[library]
    module = sys.modules.get(module_name)
    if module is None:  # not imported by the instrumentor: nothing calls it
        return
    package = module_name.rsplit(".", 1)[0]
    replaced: list[tuple[types.ModuleType, str, Callable[[], Any]]] = []
    for name in names:
        found = vars(module).get(name)
        if not isinstance(found, types.FunctionType) or found.__code__.co_argcount:
            continue
        original: types.FunctionType = found
        try:
            answer = original()
        except Exception:
            logger.debug("%s.%s raised; left as it is", module_name, name)
            continue
        if type(answer) is not bool:
            continue
        constant = _answering(answer, original)
        for owner_name, owner in list(sys.modules.items()):
            if owner is None or not (owner_name == package or owner_name.startswith(package + ".")):
                continue
            if vars(owner).get(name) is original:
                setattr(owner, name, constant)
                replaced.append((owner, name, original))
    _replaced[library] = replaced


def uninstall(library: str) -> None:
    """Put back every helper `install` replaced for ``library``."""
    for owner, name, original in _replaced.pop(library, []):
        current = vars(owner).get(name)
        if getattr(current, "__wrapped__", None) is original:  # still ours
            setattr(owner, name, original)


def installed(library: str) -> int:
    """How many bindings are answered by a constant for ``library`` (for tests)."""
    return len(_replaced.get(library, ()))
