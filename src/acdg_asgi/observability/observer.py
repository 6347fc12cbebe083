"""Who watches calls: the interface that metrics and tracing implement, and the view of a
call they get.

The runtime tells observers about the rare things (calls starting and ending, events,
timings the call measured, refusals, protocol errors). Per-frame counting is not here:
it lives in :class:`~acdg_asgi.call.CallStats` and is read when someone asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..audio import MediaFormat
from ..call import CallState, CallStats, Measure
from ..events import Event

__all__ = ["CallView", "Observer", "Observers"]


class CallView(Protocol):
    """A call as observers see it: read it, never change it."""

    @property
    def conversation_id(self) -> str: ...

    @property
    def session_id(self) -> str: ...

    @property
    def media_format(self) -> MediaFormat: ...

    @property
    def state(self) -> CallState: ...

    @property
    def stats(self) -> CallStats: ...

    def unplayed_s(self, now: float) -> float:
        """Seconds of agent audio produced that the caller has not heard yet."""
        ...


class Observer(Protocol):
    def call_started(self, call: CallView) -> None: ...

    def call_event(self, call: CallView, event: Event) -> None: ...

    def call_observed(self, call: CallView, measure: Measure, value: float) -> None: ...

    def call_finished(self, call: CallView) -> None: ...

    def refused(self, cause: str) -> None: ...

    def protocol_error(self, peer: str, kind: str) -> None: ...


class Observers:
    """Several observers as one; an empty one costs a truth test per call."""

    __slots__ = ("_all",)

    def __init__(self, observers: Sequence[Observer] = ()) -> None:
        self._all = tuple(observers)

    def __bool__(self) -> bool:
        return bool(self._all)

    def call_started(self, call: CallView) -> None:
        for o in self._all:
            o.call_started(call)

    def call_event(self, call: CallView, event: Event) -> None:
        for o in self._all:
            o.call_event(call, event)

    def call_observed(self, call: CallView, measure: Measure, value: float) -> None:
        for o in self._all:
            o.call_observed(call, measure, value)

    def call_finished(self, call: CallView) -> None:
        for o in self._all:
            o.call_finished(call)

    def refused(self, cause: str) -> None:
        for o in self._all:
            o.refused(cause)

    def protocol_error(self, peer: str, kind: str) -> None:
        for o in self._all:
            o.protocol_error(peer, kind)
