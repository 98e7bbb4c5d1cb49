"""Turn function inputs and outputs into JSON text for span attributes, never raising.

Strings, ints, floats, booleans and None are written directly; anything else takes one
pass of the C JSON encoder (built per call, so cycle detection stays per call, but without
``json.dumps``'s Python-level set-up); values JSON cannot encode get a readable stand-in
through ``default``. Only when that fails (a reference cycle, a ``__repr__``
that raises, keys that are not strings) does a careful walk build a JSON-safe copy.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import enum
import json
import logging
import math
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any

logger = logging.getLogger("keywordsai_tracing")

# Attribute values at or above this many characters are truncated (API.md: 1 MB).
MAX_PAYLOAD_CHARS = 1_000_000
TRUNCATION_MARKER = "...[truncated by keywordsai_tracing: {size} characters in total]"
_MAX_DEPTH = 32
_MAX_REPR = 1_000
_CYCLE = "<cycle>"


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR] + "...>"


def _stand_in(value: Any) -> Any:
    """A JSON-encodable stand-in for a value ``json`` does not know (one level)."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    if isinstance(value, set | frozenset):
        items = list(value)
        with contextlib.suppress(TypeError):  # unorderable members keep iteration order
            items.sort()
        return items
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal | PurePath | complex):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump) and not isinstance(value, type):
        try:
            return model_dump(mode="json")
        except Exception:
            return _short_repr(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | list):
        return list(value)
    return _short_repr(value)


def _walk(value: Any, seen: set[int], depth: int) -> Any:
    """A JSON-safe deep copy of ``value``: cycles and odd keys made explicit."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if depth >= _MAX_DEPTH:
        return _short_repr(value)
    marker = id(value)
    if marker in seen:
        return _CYCLE
    seen.add(marker)
    try:
        if isinstance(value, dict):
            return {
                (key if isinstance(key, str) else _short_repr(key)): _walk(item, seen, depth + 1)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [_walk(item, seen, depth + 1) for item in value]
        stand_in = _stand_in(value)
        if stand_in is value:
            return _short_repr(value)
        return _walk(stand_in, seen, depth + 1)
    except Exception:
        return _short_repr(value)
    finally:
        seen.discard(marker)


def _truncate(text: str, limit: int) -> str:
    if len(text) < limit:
        return text
    marker = TRUNCATION_MARKER.format(size=len(text))
    return text[: max(limit - len(marker), limit // 2)] + marker


_ENCODER = json.JSONEncoder(default=_stand_in, ensure_ascii=False)
_encode_str: Callable[[str], str] = json.encoder.encode_basestring
_make_c_encoder: Callable[..., Callable[[Any, int], Any]] | None = getattr(
    json.encoder, "c_make_encoder", None
)
_SCALARS: dict[type, Callable[[Any], str]] = {
    str: _encode_str,
    int: int.__repr__,
    bool: lambda flag: "true" if flag else "false",
    type(None): lambda _: "null",
}


def _scalar(value: Any) -> str | None:
    """JSON text of a str, int, bool, None or finite float (as the encoder writes it);
    None for anything else."""
    write = _SCALARS.get(type(value))
    if write is not None:
        return write(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return None


def _encode(value: Any) -> str:
    """``_ENCODER.encode(value)``, for less."""
    text = _scalar(value)
    if text is not None:
        return text
    if _make_c_encoder is None:
        return _ENCODER.encode(value)
    encoder = _make_c_encoder({}, _stand_in, _encode_str, None, ": ", ", ", False, False, True)
    return "".join(encoder(value, 0))


def to_json(value: Any, limit: int = MAX_PAYLOAD_CHARS) -> str:
    """JSON text for ``value``; never raises. Over ``limit`` it is cut, with a marker."""
    try:
        text = _encode(value)
    except Exception:
        try:
            text = _ENCODER.encode(_walk(value, set(), 0))
        except Exception:  # a last resort; _walk only yields JSON-safe values
            logger.debug("Could not serialise a value of type %s", type(value).__name__)
            text = json.dumps(_short_repr(value))
    return _truncate(text, limit)


def inputs_to_json(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """JSON of ``{"args": [...], "kwargs": {...}}`` as the incumbent sends it."""
    if not kwargs and len(args) <= 8:  # scalar positional arguments: written directly
        parts = []
        for arg in args:
            text = _scalar(arg)
            if text is None:
                break
            parts.append(text)
        else:
            return _truncate(
                '{"args": [' + ", ".join(parts) + '], "kwargs": {}}', MAX_PAYLOAD_CHARS
            )
    return to_json({"args": args, "kwargs": kwargs})
