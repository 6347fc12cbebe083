"""Events out of a call: to the log, to observers, and to the application's handlers.

Application code must not stall audio, so handlers never run inside a reader: events go
through a bounded stream to one dispatcher task per call, in order. When the stream is
full (a handler is stuck), new events are dropped with a warning, except ``session_end``,
which always gets through.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from . import events as ev
from .handlers import EventHandlers
from .observe import Observers

if TYPE_CHECKING:
    from .runtime import CallRuntime

__all__ = ["EventDispatch"]


class EventDispatch:
    def __init__(
        self,
        runtime: CallRuntime,
        handlers: EventHandlers,
        observers: Observers,
        log: logging.LoggerAdapter[Any],
        *,
        queue: int,
    ) -> None:
        self._runtime = runtime
        self._handlers = handlers
        self.observers = observers
        self._log = log
        self._in, self._out = anyio.create_memory_object_stream[ev.Event](queue)
        self.finished = anyio.Event()  # every event was handed to the handlers

    def deliver(self, events: list[ev.Event], tg: TaskGroup | None) -> None:
        runtime, observers = self._runtime, self.observers
        for event in events:
            self._log_event(event)
            if observers:
                observers.call_event(runtime, event)
            try:
                self._in.send_nowait(event)
            except anyio.WouldBlock:
                if isinstance(event, ev.SessionEndEvent) and tg is not None:
                    tg.start_soon(self._in.send, event)
                else:
                    self._log.warning("event queue full: %s dropped", type(event).__name__)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # the call is over and its dispatcher gone

    def observe(self, observations: list[tuple[str, float]]) -> None:
        if self.observers:
            for name, value in observations:
                self.observers.call_observed(self._runtime, name, value)

    def close(self) -> None:
        """No more events: the dispatcher finishes once it has handed over the rest."""
        self._in.close()

    async def run(self) -> None:
        session = self._runtime.session
        try:
            async with self._out:
                async for event in self._out:
                    await self._handlers.dispatch(session, event, self._log)
        finally:
            self.finished.set()

    def _log_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.WarningEvent):
            self._log.warning("%s %s: %s", event.source, event.code, event.description)
        elif isinstance(event, ev.BridgeErrorEvent):
            self._log.error("%s %s: %s", event.source, event.code, event.message)
        elif isinstance(event, ev.SessionEndEvent):
            self._log.info("call ended: %s (%s)", event.reason, event.detail or event.reason_code)
