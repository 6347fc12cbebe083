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
    from_env = store is None
    if store is None:
        store = os.environ.get("ACDG_REDIS_URL") or None
    if store is None:
        return None
    if isinstance(store, str):
        where = "ACDG_REDIS_URL" if from_env else "store="
        if not store.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"{where} must be a Redis URL such as redis://localhost:6379/0 "
                              f"(rediss:// for TLS), not {_masked(store)!r}")
        try:
            from .redis import RedisStore
        except ImportError:
            raise ConfigError("a Redis store needs: pip install 'acdg-asgi[redis]'") from None
        try:
            return RedisStore(store)
        except ValueError as exc:
            raise ConfigError(f"{where}: not a usable Redis URL ({exc})") from None
    for method in ("create", "load", "take_over", "listen", "publish", "close"):
        if not callable(getattr(store, method, None)):
            raise ConfigError(f"store must be a Redis URL or a CallStore, not {store!r}")
    return store


def _masked(url: str) -> str:
    """``url`` without the password it may carry."""
    scheme, sep, rest = url.rpartition("://")
    return f"{scheme}{sep}****@{rest.rpartition('@')[2]}" if "@" in rest else url
