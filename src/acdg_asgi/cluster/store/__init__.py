"""The shared call-state store: Redis, for many instances behind one load balancer.

Without one (the default), an instance keeps its calls to itself: nothing is stored
outside the process, and ``session.resume`` finds only the calls of this instance.
"""

from __future__ import annotations

import os

from ...errors import ConfigError, StoreUnavailable
from .base import CallSnapshot, CallStore, Message, Release, RemoteCommand, Reply

__all__ = [
    "CallSnapshot",
    "CallStore",
    "Message",
    "Release",
    "RemoteCommand",
    "Reply",
    "StoreUnavailable",
    "open_store",
]


def open_store(store: CallStore | str | None) -> CallStore | None:
    """A store object, a ``redis://`` URL, or ``None``: ``$ACDG_REDIS_URL`` if set, else
    no shared store."""
    if store is None:
        store = os.environ.get("ACDG_REDIS_URL") or None
    if store is None:
        return None
    if isinstance(store, str):
        try:
            from .redis import RedisStore
        except ImportError:
            raise ConfigError("a Redis store needs: pip install 'acdg-asgi[redis]'") from None
        return RedisStore(store)
    return store
