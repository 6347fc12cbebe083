"""What the bridge lends each call, and the logger that names the call on every line."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec

from .agent import AgentConnector
from .cluster import Cluster
from .handlers import EventHandlers
from .observe import Observers
from .scheduler import Scheduler

__all__ = ["CallLog", "Services", "logger"]

logger = logging.getLogger("acdg_asgi.call")


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """Every line names the call: ``conversation_id`` and ``session_id`` ride in ``extra``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[{extra.get('conversation_id')}] {msg}", kwargs


class Services(msgspec.Struct, frozen=True):
    """What the app lends each call: the far end, the timer and the handlers."""

    connector: AgentConnector
    agent_url: str
    agent_headers: Mapping[str, str]
    scheduler: Scheduler
    handlers: EventHandlers
    observers: Observers = Observers()
    cluster: Cluster | None = None  # only when the call state is shared with other instances
    end_handler_timeout_s: float = 10.0
