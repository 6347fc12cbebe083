"""Repeats folded: the first few of a kind in each interval are reported one by one, the
rest are counted and reported as one, with the count.

A peer that sends ten thousand bad frames, or a slow VAIC that makes the call drop a
chunk of audio fifty times a second, must not write ten thousand log lines or warning
events. :class:`Fold` decides which occurrence of a kind is reported; its owner reports
the folded rest when :meth:`Fold.due` says their interval is over (the call with a named
timer, :data:`~acdg_asgi.call.state.Timer.WARNINGS`) and what is left at the end
(:meth:`Fold.flush`). Pure: time is passed in.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import msgspec

__all__ = ["Fold", "Folded"]


class Folded(msgspec.Struct, frozen=True):
    """``count`` occurrences of ``key`` that were not reported one by one; ``detail`` is
    the last one's (a description, or whatever its owner keeps to describe it)."""

    key: Hashable
    count: int
    detail: Any
    interval_s: float

    def describe(self) -> str:
        more = "1 more" if self.count == 1 else f"{self.count} more"
        return f"{more} in {self.interval_s:g} s, the last: {self.detail}"


class _Window:
    __slots__ = ("detail", "ends", "folded", "reported")

    def __init__(self, ends: float) -> None:
        self.ends = ends
        self.reported = 0
        self.folded = 0
        self.detail: Any = None


class Fold:
    def __init__(self, interval_s: float, *, burst: int = 3) -> None:
        self.interval_s = interval_s
        self.burst = burst
        self._windows: dict[Hashable, _Window] = {}
        self.next_deadline: float | None = None  # the first window to end with repeats in it

    def add(self, key: Hashable, now: float, detail: Any) -> bool:
        """One occurrence of ``key``: ``True`` to report it now, ``False`` if it was
        counted to be reported with the others of its interval. With an interval of 0
        every occurrence is reported."""
        if self.interval_s <= 0:
            return True
        window = self._windows.get(key)
        if window is None or now >= window.ends:
            if window is not None and window.folded:
                return self._fold(window, detail)  # due() reports the old window first
            window = self._windows[key] = _Window(now + self.interval_s)
        if window.reported < self.burst:
            window.reported += 1
            return True
        return self._fold(window, detail)

    def _fold(self, window: _Window, detail: Any) -> bool:
        window.folded += 1
        window.detail = detail
        if self.next_deadline is None or window.ends < self.next_deadline:
            self.next_deadline = window.ends
        return False

    def due(self, now: float) -> list[Folded]:
        """The repeats folded in every interval that is over by ``now``."""
        if self.next_deadline is None or now < self.next_deadline:
            return []
        out = []
        for key, window in list(self._windows.items()):
            if now >= window.ends:
                if window.folded:
                    out.append(Folded(key, window.folded, window.detail, self.interval_s))
                del self._windows[key]
        self._rearm()
        return out

    def flush(self) -> list[Folded]:
        """Every repeat folded and not yet reported (at the end)."""
        out = [Folded(key, w.folded, w.detail, self.interval_s)
               for key, w in self._windows.items() if w.folded]
        self._windows.clear()
        self.next_deadline = None
        return out

    def _rearm(self) -> None:
        ends = [w.ends for w in self._windows.values() if w.folded]
        self.next_deadline = min(ends) if ends else None
