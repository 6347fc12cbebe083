"""Who watches calls: the interface that metrics and tracing implement.

The runtime tells observers about the rare things (calls starting and ending, events,
timings the call measured, refusals, protocol errors). Per-frame counting is not here:
it lives in :class:`~acdg_asgi.stats.CallStats` and is read when someone asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from .events import Event

if TYPE_CHECKING:
    from .runtime import CallRuntime

__all__ = ["Observer", "Observers"]


class Observer(Protocol):
    def call_started(self, runtime: CallRuntime) -> None: ...

    def call_event(self, runtime: CallRuntime, event: Event) -> None: ...

    def call_observed(self, runtime: CallRuntime, name: str, value: float) -> None: ...

    def call_finished(self, runtime: CallRuntime) -> None: ...

    def refused(self, cause: str) -> None: ...

    def protocol_error(self, peer: str, kind: str) -> None: ...


class Observers:
    """Several observers as one; an empty one costs a truth test per call."""

    __slots__ = ("_all",)

    def __init__(self, observers: Sequence[Observer] = ()) -> None:
        self._all = tuple(observers)

    def __bool__(self) -> bool:
        return bool(self._all)

    def call_started(self, runtime: CallRuntime) -> None:
        for o in self._all:
            o.call_started(runtime)

    def call_event(self, runtime: CallRuntime, event: Event) -> None:
        for o in self._all:
            o.call_event(runtime, event)

    def call_observed(self, runtime: CallRuntime, name: str, value: float) -> None:
        for o in self._all:
            o.call_observed(runtime, name, value)

    def call_finished(self, runtime: CallRuntime) -> None:
        for o in self._all:
            o.call_finished(runtime)

    def refused(self, cause: str) -> None:
        for o in self._all:
            o.refused(cause)

    def protocol_error(self, peer: str, kind: str) -> None:
        for o in self._all:
            o.protocol_error(peer, kind)
