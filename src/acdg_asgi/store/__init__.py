"""Call-state stores: in-process (the default) or Redis (shared by many instances)."""

from __future__ import annotations

import os

from ..errors import ConfigError
from .base import CallSnapshot, CallStore, Command, Reply, StoreUnavailable
from .memory import InMemoryStore

__all__ = [
    "CallSnapshot",
    "CallStore",
    "Command",
    "InMemoryStore",
    "Reply",
    "StoreUnavailable",
    "open_store",
]


def open_store(store: CallStore | str | None) -> CallStore:
    """A store object, a ``redis://`` URL, or ``None``: ``$ACDG_REDIS_URL`` if set, else
    the in-process store."""
    if store is None:
        store = os.environ.get("ACDG_REDIS_URL") or None
    if store is None:
        return InMemoryStore()
    if isinstance(store, str):
        try:
            from .redis import RedisStore
        except ImportError:
            raise ConfigError("a Redis store needs: pip install 'acdg-asgi[redis]'") from None
        return RedisStore(store)
    return store
