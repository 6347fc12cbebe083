"""A queue that one task of a call reads: what callbacks hand to a task.

A call's runtime hands work to its own tasks from socket and timer callbacks, which
cannot wait: agent connection requests, tasks to start, events for the handlers. anyio's
memory object stream does that, but a receiver that waits costs an event, a receiver
record and a future each time, some 3 KB a call for a reader that waits all call long.
A :class:`Mailbox` is a list and a :class:`~.scheduler.Kick`: a reader that waits costs
one future. (A list, not a deque: an empty deque takes 760 bytes, and a call's
mailboxes are empty nearly all the time and hold a few items at most.)

As a memory object stream's receiver does, the reader yields to the event loop before
each item it finds waiting, so a burst of items does not hold the loop.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType
from typing import Generic, TypeVar

from anyio.lowlevel import checkpoint

from .scheduler import Kick

__all__ = ["Mailbox"]

T = TypeVar("T")


class Mailbox(Generic[T]):
    """Items in order for one reader (``async for item in mailbox``), at most ``limit``
    waiting. Closed, it takes nothing more: after :meth:`close` the reader's loop ends
    once it has read what was left; the reader's ``async with`` ending drops the rest."""

    __slots__ = ("_items", "_kick", "closed", "limit")

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float = math.inf) -> None:
        self._items: list[T] = []
        self._kick = Kick(loop)
        self.limit = limit
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Queue ``item`` for the reader; ``False`` (and dropped) if full or closed."""
        if self.closed or len(self._items) >= self.limit:
            return False
        self._items.append(item)
        self._kick.set()
        return True

    def close(self) -> None:
        self.closed = True
        self._kick.set()

    def __aiter__(self) -> Mailbox[T]:
        return self

    async def __anext__(self) -> T:
        items = self._items
        if items:
            await checkpoint()
        while not items:
            if self.closed:
                raise StopAsyncIteration
            await self._kick.wait()
        return items.pop(0)

    async def __aenter__(self) -> Mailbox[T]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
        self._items.clear()
