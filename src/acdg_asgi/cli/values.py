"""Values typed on the command line or set in the environment, read with one-line errors.

Each reader takes the text and returns the value, or raises :class:`ConfigError` saying
what is wrong with it and what to give instead; the flag or variable it came from is put
in front by the caller (``argument --port: ...``, ``ACDG_PORT: ...``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..errors import ConfigError

__all__ = ["argument", "chunk_millis", "count", "existing_file", "millis", "port", "seconds"]


def port(text: str) -> int:
    value = text.strip()
    if not value.isdigit() or int(value) > 65535:
        raise ConfigError(f"{text!r} is not a port number: use 1-65535 (0 picks a free one)")
    return int(value)


T = TypeVar("T")


def argument(read: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type`` from one of these readers: its message, as it is."""

    def convert(text: str) -> T:
        try:
            return read(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def count(text: str) -> int:
    value = text.strip()
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{text!r}: give a whole number, 1 or more")
    return int(value)


def _whole(minimum: int, what: str) -> Callable[[str], int]:
    def read(text: str) -> int:
        value = text.strip()
        if not value.isdigit() or int(value) < minimum:
            raise ConfigError(f"{text!r}: give {what} as a whole number, {minimum} or more")
        return int(value)

    return read


millis = _whole(0, "milliseconds")
chunk_millis = _whole(1, "milliseconds")


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ConfigError(f"{text!r}: give seconds, 0 or more (e.g. 20 or 7.5)")
    return value


def existing_file(text: str) -> str:
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"{text!r}: no such file" if not path.exists()
                          else f"{text!r} is not a file")
    return text
