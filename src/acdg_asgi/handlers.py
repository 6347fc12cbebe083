"""Application handlers: registration by event name or class, and safe dispatch.

A handler is ``async def handler(session, event)`` (or, as some predecessor examples
had it, ``async def handler(event)``); plain functions work too. A handler that raises
becomes an ``error`` event and a log line: it never takes the call down.
"""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ConfigError
from .events import EVENT_NAMES, BridgeErrorEvent, Event

if TYPE_CHECKING:
    from .session import Session

__all__ = ["EventHandlers", "Handler"]

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
