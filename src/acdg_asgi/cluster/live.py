"""Live events across instances: a page served by one instance follows a call on another.

Each instance's :class:`~acdg_asgi.observability.live.LiveEvents` puts its calls' events
in a bounded :class:`~acdg_asgi.observability.live.LiveOutbox`; :class:`LiveShipper`, a
task beside the calls, empties it into the shared store. A store that is slow or down
never holds up a call: the outbox drops its oldest events and counts them, the shipper
drops what the store refused and counts that too, and says so once per outage.

:class:`SharedLive` is what the live routes read with a store: a call on this instance
from its own buffer, a call elsewhere and the stream of every call from the store, and
the calls in progress on every live instance.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Final

import anyio

from ..errors import StoreUnavailable
from ..observability.live import LiveCall, LiveEvent, LiveEvents, LiveOutbox, handed_over
from ..observability.logs import for_call
from .store.base import LiveStore

__all__ = ["HANDOVER_WAIT_S", "LiveShipper", "SharedLive"]

HANDOVER_WAIT_S: Final = 0.2  # how long a take-over waits for the old owner's last event

log = logging.getLogger("acdg_asgi.live")


class LiveShipper:
    """Ships an outbox to the store in batches; runs until cancelled."""

    def __init__(self, outbox: LiveOutbox, store: LiveStore, *, timeout_s: float = 2.0) -> None:
        self.outbox = outbox
        self.store = store
        self.timeout_s = timeout_s
        self.shipped = 0
        self.failed = 0  # events the store did not take (the outbox counts its own drops)
        self._down = False

    def __repr__(self) -> str:
        return (f"<LiveShipper shipped={self.shipped} failed={self.failed} "
                f"dropped={self.outbox.dropped}>")

    @property
    def dropped(self) -> int:
        """Events that never reached the store, for whatever reason."""
        return self.failed + self.outbox.dropped

    async def run(self) -> None:
        while True:
            batch = await self.outbox.take()
            try:
                with anyio.fail_after(self.timeout_s):
                    await self.store.live_publish(batch)
            except (StoreUnavailable, TimeoutError) as exc:
                self.failed += len(batch)
                if not self._down:
                    self._down = True
                    log.warning("live events not shared (%s): pages on other instances miss "
                                "them until the store is back; the calls go on", exc or
                                "the store did not answer in time")
            else:
                self.shipped += len(batch)
                if self._down:
                    self._down = False
                    log.info("live events shared again (%d dropped so far)", self.dropped)


class SharedLive:
    """Every instance's calls, through the store (a :class:`LiveSource`)."""

    shared = True

    def __init__(self, local: LiveEvents, store: LiveStore, *, timeout_s: float = 2.0) -> None:
        self.local = local
        self.store = store
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"<SharedLive {self.local!r} {self.store!r}>"

    def full(self) -> bool:
        return self.local.full()

    def follow(self, conversation_id: str | None, after: str) -> AsyncGenerator[LiveEvent, None]:
        if conversation_id is not None and self.local.covers(conversation_id, after):
            here = self.local.follow(conversation_id, after)
            return self._here_then_on(conversation_id, here, after)
        if self.full():
            raise OverflowError(f"{self.local.subscribers} live subscribers already")
        return self._counted(self._from_store(conversation_id, after))

    async def taking_over(self, conversation_id: str) -> None:
        """The call is about to be taken over here: its stream goes on from where it was,
        after the previous owner's last event. That owner, told to let go, ends its part
        with a ``session_end`` (:func:`handed_over`) as soon as the message reaches it; one
        that died never does, and is waited for no longer than ``HANDOVER_WAIT_S``."""
        last = None
        try:
            with anyio.fail_after(self.timeout_s):
                waited = anyio.current_time() + HANDOVER_WAIT_S
                while True:  # polled: the event is another process's, in the store
                    last = await self.store.live_last(conversation_id)
                    if last is None or handed_over(last) or anyio.current_time() >= waited:
                        break
                    await anyio.sleep(0.02)
        except (StoreUnavailable, TimeoutError) as exc:
            for_call(conversation_id, base=log).warning(
                "live events: where the call's stream was is unknown (%s): its seq starts "
                "again here, and pages following it may see numbers repeat",
                exc or "the store did not answer in time")
            self.local.continue_after(conversation_id, None)
            return
        self.local.continue_after(conversation_id, 0 if last is None else last.seq)

    def _from_store(self, conversation_id: str | None, after: str) -> AsyncGenerator[
            LiveEvent, None]:
        return self.store.live_follow(conversation_id, after, wait_s=self.local.wait_for_call_s,
                                      until=lambda: self.local.closed)

    async def _here_then_on(
        self, cid: str, events: AsyncGenerator[LiveEvent, None], after: str
    ) -> AsyncGenerator[LiveEvent, None]:
        """The call's events here; once it has moved to another instance, the rest from
        the store, so that a page here follows it there without a break."""
        last = None
        async with aclosing(events):
            async for event in events:
                last = event
                yield event
        if not self.local.moved(cid):
            return  # it ended here, or the bridge is shutting down
        rest = self._counted(self._from_store(cid, after if last is None else str(last.seq)))
        async with aclosing(rest):
            async for event in rest:
                yield event

    async def _counted(
        self, events: AsyncGenerator[LiveEvent, None]
    ) -> AsyncGenerator[LiveEvent, None]:
        with self.local.seat():
            async with aclosing(events):
                async for event in events:
                    yield event

    async def calls(self) -> list[LiveCall]:
        return await self.store.live_calls()
