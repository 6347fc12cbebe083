"""``interned``: one object per number that every call holds alike, and a bounded table."""

from __future__ import annotations

import math

import pytest

from acdg_asgi import interned as module
from acdg_asgi.interned import interned


def test_equal_numbers_worked_out_apart_come_back_as_one_object() -> None:
    size = interned(int("64") * 10)
    again = interned(640 + int("0"))
    assert size == 640 and size is again
    seconds = interned(640 / 32000)
    assert seconds is interned(float("0.02"))


def test_an_int_and_an_equal_float_stay_apart() -> None:
    assert interned(2.0).__class__ is float
    assert interned(2).__class__ is int


def test_a_nan_is_its_own() -> None:
    assert math.isnan(interned(math.nan))
    assert len([k for k in module._known if k[1] != k[1]]) == 0


def test_the_table_is_bounded_whatever_a_peer_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "_known", {})  # the process's own table stays as it was
    for size in range(100_000, 100_000 + 3 * module._MAX):  # a frame of every size
        assert interned(size) == size
    assert len(module._known) <= module._MAX
