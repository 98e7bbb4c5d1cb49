"""`LeanSpan`: the SDK's span, minus the work most spans never need.

Every SDK span builds two bounded containers at construction (for events and links, a
lock and a deque each, four gc-tracked objects), takes two locks and a recursive value
clean per ``set_attribute``, and copies itself into a `ReadableSpan` at ``end`` for the
processors. Decorator spans and LLM spans almost never carry events or links, an
instrumentation sets a couple of dozen plain attributes per call, and an ended span can
no longer change. So `LeanSpan`, started only by `_fast_span.SpanStarter`:

- creates its event and link containers at the first event or link (an exception, a
  link), never before; until then it reads as the SDK's empty ones do;
- writes a ``str``/``bool``/``int``/``float`` attribute (or a tuple of one of those
  types) straight into its attribute map,
  under the span's lock, when nothing needs cleaning, cutting or dropping (`SpanStarter`
  starts these spans only without a value length limit, and the count limit is checked);
  anything else takes the SDK's path;
- hands itself, ended, to the processors instead of a copy (every setter of an ended
  span is refused, by the SDK's own checks), and swaps its own lock for one shared by
  every ended span: a lock is a gc-tracked object, and all an ended span still locks
  for is to find that it has ended.

Everything else is the SDK's: constructor, start, end, status, exceptions, limits.
`SpanStarter`'s self-test runs the same operations on a `LeanSpan` and on an SDK span
and turns the fast path off when anything differs.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import ReadableSpan, _Span
from opentelemetry.sdk.util import BoundedList
from opentelemetry.util import types

_NO_ITEMS: tuple[()] = ()  # read as an empty container, until the first item
_ENDED_LOCK = threading.Lock()  # what an ended span locks to refuse a change
_PLAIN = frozenset({str, bool, int, float})


def _kept_as_is(value: object) -> bool:
    """Whether the SDK would store ``value`` unchanged (with no length limit): a
    ``str``/``bool``/``int``/``float``, or a tuple of items all of one such type."""
    kind = type(value)
    if kind in _PLAIN:
        return True
    if kind is not tuple or not value:
        return False
    items: tuple[object, ...] = value  # type: ignore[assignment]
    first = type(items[0])
    return first in _PLAIN and all(type(item) is first for item in items)


class LeanSpan(_Span):
    """An SDK span that allocates on first use and skips the end-of-span copy (module
    doc). Constructed without ``events``: `SpanStarter` never passes any."""

    def _new_events(self) -> Any:
        return _NO_ITEMS

    def _new_links(self, links: Sequence[trace_api.Link]) -> Any:
        return super()._new_links(links) if links else _NO_ITEMS

    def _add_event(self, event: Any) -> None:
        if self._events is _NO_ITEMS:
            self._first_container("_events", self._limits.max_events)
        super()._add_event(event)

    def _add_link(self, link: trace_api.Link) -> None:
        if self._links is _NO_ITEMS:
            self._first_container("_links", self._limits.max_links)
        super()._add_link(link)

    def _first_container(self, name: str, maxlen: int | None) -> None:
        """Give the span a bounded list for its first event or link, unless it ended (the
        SDK's check refuses the item then, and an ended span must not change)."""
        with self._lock:
            if getattr(self, name) is _NO_ITEMS and self._end_time is None:
                setattr(self, name, BoundedList(maxlen))

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if type(key) is str and key and _kept_as_is(value):
            with self._lock:
                if self._end_time is None:  # open: its attributes are a BoundedAttributes
                    held: Any = self._attributes
                    plain = held._dict
                    if key in plain:
                        del plain[key]  # as the SDK does: a rewritten key moves last
                        plain[key] = value
                        return
                    limit = held.maxlen
                    if limit is None or len(plain) < limit:
                        plain[key] = value
                        return
        super().set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end_time is not None:
            super().set_attributes(attributes)  # the SDK's one warning for an ended span
            return
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def _readable_span(self) -> ReadableSpan:
        # called by ``end`` once the end time is set, outside the span's lock: a thread
        # inside the old lock keeps and releases it; any later one finds the span ended
        self._lock = _ENDED_LOCK
        return self
