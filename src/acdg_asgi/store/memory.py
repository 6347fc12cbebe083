"""The in-process store: the zero-setup default, for a single instance."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import msgspec

from ..protocols import deepgram as dg
from .base import CallSnapshot, Command, Reply

__all__ = ["InMemoryStore"]


class InMemoryStore:
    """Keeps call state in this process. Nothing is shared, so nothing expires or races."""

    shared = False

    def __init__(self) -> None:
        self._calls: dict[str, CallSnapshot] = {}
        self._history: dict[str, list[dg.History]] = {}

    async def create(self, snapshot: CallSnapshot, ttl_s: float) -> None:
        self._calls[snapshot.conversation_id] = snapshot
        self._history[snapshot.conversation_id] = []

    async def load(self, cid: str) -> tuple[CallSnapshot, list[dg.History]] | None:
        snapshot = self._calls.get(cid)
        return None if snapshot is None else (snapshot, list(self._history.get(cid, ())))

    async def take_over(
        self, cid: str, instance: str, expected_epoch: int, ttl_s: float
    ) -> CallSnapshot | None:
        snapshot = self._calls.get(cid)
        if snapshot is None or snapshot.epoch != expected_epoch:
            return None
        snapshot = msgspec.structs.replace(snapshot, owner=instance, epoch=snapshot.epoch + 1)
        self._calls[cid] = snapshot
        return snapshot

    async def renew(self, cid: str, instance: str, ttl_s: float) -> bool:
        snapshot = self._calls.get(cid)
        return snapshot is not None and snapshot.owner == instance

    async def append(self, cid: str, entries: Sequence[dg.History], ttl_s: float) -> None:
        self._history.setdefault(cid, []).extend(entries)

    async def disown(self, cid: str, instance: str) -> None:
        snapshot = self._calls.get(cid)
        if snapshot is not None and snapshot.owner == instance:
            self._calls[cid] = msgspec.structs.replace(snapshot, owner="")

    async def release(self, cid: str, instance: str) -> None:
        snapshot = self._calls.get(cid)
        if snapshot is not None and snapshot.owner == instance:
            del self._calls[cid]
            self._history.pop(cid, None)

    async def publish(self, instance: str, message: Command | Reply) -> bool:
        return False  # one process: every call is local

    async def listen(self, instance: str) -> AsyncIterator[Command | Reply]:
        return
        yield  # an async generator that ends at once

    async def heartbeat(self, instance: str, active_calls: int, ttl_s: float) -> None:
        pass

    async def cluster_calls(self) -> int:
        return len(self._calls)

    async def close(self) -> None:
        pass
