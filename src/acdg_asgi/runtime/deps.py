"""What a bridge lends each of its calls."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from ..cluster.cluster import Cluster
from ..observability.observer import Observers
from ..transports.agent_base import AgentConnector
from .app_events import EventHandlers
from .scheduler import Scheduler

__all__ = ["CallDeps"]


class CallDeps(msgspec.Struct, frozen=True):
    """The far end, the timer, the handlers and observers, the cluster."""

    connector: AgentConnector
    agent_url: str
    agent_headers: Mapping[str, str]
    scheduler: Scheduler
    handlers: EventHandlers
    observers: Observers = Observers()
    cluster: Cluster | None = None  # only when the call state is shared with other instances
    end_handler_timeout_s: float = 10.0
