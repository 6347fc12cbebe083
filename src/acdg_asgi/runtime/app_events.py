"""The application's side of a call's events: handlers, and delivery to them.

A handler is ``async def handler(session, event)`` (or, as some predecessor examples
had it, ``async def handler(event)``); plain functions work too. A handler that raises
becomes an ``error`` event and a log line: it never takes the call down.

Application code must not stall audio, so handlers never run inside a reader: events go
through a bounded queue (a :class:`~.mailbox.Mailbox`) to one dispatcher task per call,
in order. When the queue is full (a handler is stuck), new events are dropped with a
warning, except ``session_end``, which always gets through. Every event is also logged
where it matters and shown to the observers (metrics, tracing) as it happens.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .. import events as ev
from ..call import Measure
from ..errors import ConfigError
from ..events import EVENT_NAMES, BridgeErrorEvent, Event
from ..observability.logs import FoldedLog
from ..observability.observer import CallView, Observers
from ..session import Session
from .mailbox import Mailbox
from .scheduler import Kick

__all__ = ["EventDispatch", "EventHandlers", "Handler"]

Handler = Callable[..., Awaitable[None] | None]
H = TypeVar("H", bound=Handler)


class EventHandlers:
    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[tuple[Handler, bool]]] = defaultdict(list)

    def on(self, event: str | type[Event]) -> Callable[[H], H]:
        """Decorator: ``@bridge.on("conversation_text")`` or ``@bridge.on(ConversationText…)``."""
        if isinstance(event, str):
            if event not in EVENT_NAMES:
                known = ", ".join(sorted(EVENT_NAMES))
                raise ConfigError(f"unknown event {event!r}; known events: {known}")
            cls = EVENT_NAMES[event]
        elif isinstance(event, type) and issubclass(event, Event):
            cls = event
        else:
            raise ConfigError(f"not an event name or class: {event!r}")

        def register(fn: H) -> H:
            self._handlers[cls].append((fn, _takes_session(fn)))
            return fn

        return register

    def __contains__(self, cls: type[Event]) -> bool:
        return bool(self._handlers.get(cls))

    async def dispatch(
        self, session: Session, event: Event, log: logging.LoggerAdapter[Any]
    ) -> None:
        for fn, with_session in self._handlers.get(type(event), ()):
            try:
                result = fn(session, event) if with_session else fn(event)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                name = getattr(fn, "__qualname__", repr(fn))
                log.exception("handler %s failed on %s", name, type(event).__name__)
                if isinstance(event, BridgeErrorEvent):
                    continue  # an error handler that fails must not loop
                error = BridgeErrorEvent(
                    session_id=event.session_id,
                    conversation_id=event.conversation_id,
                    at=event.at,
                    code="HANDLER_FAILED",
                    message=f"{name} raised {exc!r} on {type(event).__name__}",
                    source="handler",
                )
                await self.dispatch(session, error, log)


def _takes_session(fn: Handler) -> bool:
    try:
        params = [
            p for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return True
    return len(params) != 1


class EventDispatch:
    def __init__(
        self,
        session: Session,
        call: CallView,
        handlers: EventHandlers,
        observers: Observers,
        log: logging.LoggerAdapter[Any],
        *,
        queue: int,
        loop: asyncio.AbstractEventLoop,
        folded: FoldedLog | None = None,
    ) -> None:
        self._session = session
        self._call = call
        self._handlers = handlers
        self.observers = observers
        self._log = log
        self._folded = folded or FoldedLog(log, time.monotonic)
        self._queue = Mailbox[ev.Event](loop, limit=queue)
        self._last: ev.SessionEndEvent | None = None  # the end, when the queue was full
        self.finished = Kick(loop)  # every event was handed to the handlers (one waiter)

    def deliver(self, events: list[ev.Event], observed: dict[int, ev.Event] | None = None) -> None:
        """Hand ``events`` to the observers at once and to the handlers in turn; where
        ``observed`` has an event (by ``id``), the observers get that version of it."""
        call, observers = self._call, self.observers
        for event in events:
            self._log_event(event)
            if observers:
                observers.call_event(call, observed.get(id(event), event) if observed else event)
            if self._queue.put(event) or self._queue.closed:
                continue  # (closed: the call is over and its dispatcher gone)
            if isinstance(event, ev.SessionEndEvent):
                self._last = event  # handed over after the rest
            else:
                self._folded.log("queue full", logging.WARNING, "event queue full: %s dropped",
                                 type(event).__name__)

    def observe(self, observations: list[tuple[Measure, float]]) -> None:
        if self.observers:
            for measure, value in observations:
                self.observers.call_observed(self._call, measure, value)

    def close(self) -> None:
        """No more events: the dispatcher finishes once it has handed over the rest."""
        self._queue.close()

    async def run(self) -> None:
        session = self._session
        try:
            async with self._queue:
                async for event in self._queue:
                    await self._handlers.dispatch(session, event, self._log)
            if self._last is not None:
                await self._handlers.dispatch(session, self._last, self._log)
        finally:
            self.finished.set()

    def _log_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.WarningEvent):
            self._log.warning("%s %s: %s", event.source, event.code, event.description)
        elif isinstance(event, ev.BridgeErrorEvent):
            self._log.error("%s %s: %s", event.source, event.code, event.message)
        elif isinstance(event, ev.SessionEndEvent):
            self._log.info("call ended: %s (%s)", event.reason, event.detail or event.reason_code)
