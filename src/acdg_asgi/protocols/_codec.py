"""What both protocol modules decode the same way: tolerant of unknown message types."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

__all__ = ["DecodeError", "decode_known", "tags"]

M = TypeVar("M")
U = TypeVar("U")


class DecodeError(ValueError):
    """The frame is not JSON, not an object, or a known message with wrong field types."""


def tags(union: Any) -> frozenset[str]:
    """The ``type`` tags of a union of tagged Structs."""
    return frozenset(cls.__struct_config__.tag for cls in union.__args__)


def decode_known(
    decoder: msgspec.json.Decoder[M],
    unknown: msgspec.json.Decoder[U],
    known_tags: frozenset[str],
    frame: str | bytes,
) -> M | U:
    """A message of a known type, or (decoded by ``unknown``) one of a type not known.

    Only when the fast decode fails is the frame looked at again, to tell an unknown
    type (tolerated) from a known one with wrong fields or no message at all (errors).
    """
    try:
        return decoder.decode(frame)
    except msgspec.DecodeError as exc:
        first_error = exc
    try:
        envelope = unknown.decode(frame)
    except msgspec.DecodeError:
        raise DecodeError(str(first_error)) from None
    kind = getattr(envelope, "type", None)
    if kind in known_tags:
        raise DecodeError(f"{kind}: {first_error}") from None
    return envelope
