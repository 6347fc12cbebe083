"""What both protocol modules decode the same way: tolerant of unknown message types.

Also here: :class:`CheckedKeywords`, the metaclass of the settings Structs, so that a
misspelt keyword names the nearest known one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec

__all__ = ["CheckedKeywords", "DecodeError", "nearest", "not_known", "tags"]

U = TypeVar("U")


class DecodeError(ValueError):
    """The frame is not JSON, not an object, nested too deeply, or a known message with
    wrong field types or values out of bounds."""


def tags(union: Any) -> frozenset[str]:
    """The ``type`` tags of a union of tagged Structs."""
    return frozenset(cls.__struct_config__.tag for cls in union.__args__)


def not_known(
    unknown: msgspec.json.Decoder[U], known_tags: frozenset[str], frame: str | bytes,
    exc: Exception,
) -> U:
    """A frame the decoder of the known messages refused with ``exc``: a message of a
    type not known (decoded by ``unknown``, tolerated), else :class:`DecodeError` for a
    known one with wrong fields or no message at all.

    Each protocol module decodes with its own decoder first and comes here only when
    that fails: the usual frame costs one call into msgspec and nothing more.
    """
    first_error = _why(exc)
    try:
        envelope = unknown.decode(frame)
    except Exception:
        raise DecodeError(first_error) from None
    kind = getattr(envelope, "type", None)
    if kind in known_tags:
        raise DecodeError(f"{kind}: {first_error}") from None
    return envelope


def nearest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean "x"?)`` for the known name closest to ``name``, else the known ones."""
    names = sorted(known)
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if match:
        return f' (did you mean "{match[0]}"?)'
    return f" (known: {', '.join(names)})" if names else ""


class CheckedKeywords(msgspec.StructMeta):
    """Struct construction that names the nearest field for a misspelt keyword:
    ``AgentSettings(greting=...)`` says ``did you mean "greeting"?``. Decoding does not
    pass through here and costs nothing more."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except TypeError:
            fields = cls.__struct_fields__
            unknown = [key for key in kwargs if key not in fields]
            if not unknown:
                raise
            raise TypeError("; ".join(
                f"{cls.__name__}() got an unknown keyword {key!r}{nearest(key, fields)}"
                for key in unknown)) from None


def _why(exc: Exception) -> str:
    """What was wrong with a frame, in one short line."""
    if isinstance(exc, RecursionError):  # msgspec's guard against deep nesting
        return "JSON nested too deeply"
    if isinstance(exc, msgspec.DecodeError):
        return str(exc)[:200]
    return f"{type(exc).__name__}: {exc}"[:200]
