"""Hold ended spans in fewer objects, so the garbage collector has less to walk.

An ended SDK span keeps its attributes, events and links in bounded containers (with a
lock each, a deque each) even when it has no events or links and dropped nothing: seven
objects the cyclic garbage collector tracks for every span waiting in a queue or in
flight. Under load that is most of the young objects that survive into the oldest
generation, so full collections (tens of milliseconds each, on the event loop) come
several times a second. `compact` swaps those containers for what they hold: a plain
dict (of strings and numbers: not tracked) and empty tuples. `ReadableSpan` accepts
exactly these (its constructor takes any mapping and sequences), so every public
property reads the same; containers that dropped anything, or hold events or links, are
left as they are. The pipeline compacts a span after `span_postprocess_callback` ran, so
the callback still gets the span exactly as the SDK made it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util import BoundedList


def compact(span: ReadableSpan) -> None:
    """Swap an ended span's empty bounded containers for plain ones (see module doc)."""
    held: Any = span
    try:
        attributes = held._attributes
        if type(attributes) is BoundedAttributes and not attributes.dropped:
            plain = attributes._dict
            if type(plain) is dict:
                held._attributes = plain
        events = held._events
        if type(events) is BoundedList and not events.dropped and not events._dq:  # type: ignore[attr-defined]
            held._events = ()
        links = held._links
        if type(links) is BoundedList and not links.dropped and not links._dq:  # type: ignore[attr-defined]
            held._links = ()
    except AttributeError:  # an SDK that keeps these elsewhere: nothing to do
        return


def plain_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """The dict behind ``span.attributes`` when there is one: a compacted span's, or the
    one inside the SDK's ``BoundedAttributes`` (whose public view costs a Python call per
    lookup and a raised ``KeyError`` per missing key). Read-only use: writes must go
    through the span."""
    held = getattr(span, "_attributes", None)
    if type(held) is dict:  # an ended span, see `compact`
        return held
    plain = getattr(held, "_dict", None)  # the SDK's BoundedAttributes
    if type(plain) is dict:
        return plain
    return span.attributes or {}
