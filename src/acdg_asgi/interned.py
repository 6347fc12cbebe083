"""One object for each number that every call holds alike.

A call keeps a few numbers it reads for every frame: a chunk's size and length in
seconds, the largest frame it takes, a budget's cost per message. Worked out call by
call, each is an object of its own, and each call's frame fetches its own copy from
memory; one object for all calls stays in the cache.

A count the frame path keeps stays below :data:`SMALL_COUNT` and is folded into the
stats from there: CPython keeps one ready-made object for each integer from -5 to 256,
so such a count replaces no object as it grows.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["SMALL_COUNT", "interned"]

SMALL_COUNT = 255  # the most a per-frame count reaches before it is folded

_N = TypeVar("_N", int, float)
_MAX = 1024  # values kept; beyond, each is its own (a peer's frame sizes may be many)
_known: dict[tuple[type, float], float] = {}


def interned(value: _N) -> _N:
    """The one object of ``value``'s type and value (a NaN, or any value once
    :data:`_MAX` are kept, is its own)."""
    if value != value:
        return value
    key = (value.__class__, value)
    known = _known.get(key)
    if known is not None:
        return known  # type: ignore[return-value]
    if len(_known) < _MAX:
        _known[key] = value
    return value
