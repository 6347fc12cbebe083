"""The call-state store: what other instances need to know about a call.

Per ``conversationId`` the store keeps a :class:`CallSnapshot` (who owns the call, the
agreed media format, what is needed to rebuild the agent config), the conversation
history, appended per turn, and the call's state beyond it (:class:`CallShared`: the
application's changes to the agent, a transfer under way, the call's details),
replaced whenever it changes. Ownership changes only by compare-and-set on ``epoch``,
so when two resumes race, exactly one instance wins.

Every entry expires ``ttl_s`` after its owner last renewed it: an instance that dies
leaves nothing behind for long, and VAIC's resume within that time finds the call.

A store may also carry the calls' live events (:class:`LiveStore`), so that a page served
by one instance follows a call on another.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Protocol, runtime_checkable

import msgspec

from ...call.commands import CommandUnion
from ...call.state import CallShared
from ...observability.live import LiveCall, LiveEvent, LiveItem
from ...protocols import audiocodes as ac
from ...protocols import deepgram as dg

__all__ = [
    "CallShared", "CallSnapshot", "CallStore", "LiveStore", "Message", "Probe", "Release",
    "RemoteCommand", "Reply", "Stored",
]


class CallSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: str
    session_id: str
    owner: str  # instance id; "" while nobody owns it (migrating)
    epoch: int = 0  # bumped by every change of owner
    media_format: str
    initiate: ac.SessionInitiate
    path: str = "/"  # where VAIC connected, for per-call agent factories
    started_wall: float = 0.0


class RemoteCommand(msgspec.Struct, tag=True, frozen=True):
    """A call command to run on the instance that owns the call; answered by a Reply."""

    id: str
    conversation_id: str
    command: CommandUnion
    reply_to: str  # instance id of the requester


class Release(msgspec.Struct, tag=True, frozen=True):
    """Another instance took the call over: let it go here (no answer)."""

    conversation_id: str
    by: str  # instance id of the new owner


class Probe(msgspec.Struct, tag=True, frozen=True):
    """Is the call's VAIC socket alive on its owner? A Reply says: ``ok`` if it is."""

    id: str
    conversation_id: str
    reply_to: str  # instance id of the requester
    probe_s: float  # how long the owner may take to find out


class Reply(msgspec.Struct, tag=True, frozen=True):
    id: str
    ok: bool
    error: str | None = None


Message = RemoteCommand | Release | Probe | Reply
Stored = tuple[CallSnapshot, list[dg.History], CallShared]  # what load() finds of a call


class CallStore(Protocol):
    """State shared by every instance, and a message bus between them. Every method may
    raise :class:`~acdg_asgi.errors.StoreUnavailable`."""

    async def create(self, snapshot: CallSnapshot, ttl_s: float) -> None: ...

    async def load(self, cid: str) -> Stored | None: ...

    async def save(self, cid: str, shared: CallShared) -> None:
        """Replace the call's state beyond its history."""
        ...

    async def take_over(
        self, cid: str, instance: str, expected_epoch: int, ttl_s: float
    ) -> CallSnapshot | None:
        """Become the owner if nobody changed the owner since ``expected_epoch``."""
        ...

    async def renew(self, cid: str, instance: str, ttl_s: float) -> bool:
        """Extend the lease; ``False`` when ``instance`` is no longer the owner."""
        ...

    async def append(self, cid: str, entries: Sequence[dg.History], ttl_s: float) -> None: ...

    async def disown(self, cid: str, instance: str) -> None:
        """Keep the call's state but give up ownership, so another instance can resume it."""
        ...

    async def release(self, cid: str, instance: str) -> None:
        """The call is over: forget it (only if ``instance`` still owns it)."""
        ...

    async def publish(self, instance: str, message: Message) -> bool:
        """Send to ``instance``'s channel; ``False`` if nobody listens there."""
        ...

    def listen(self, instance: str) -> AsyncIterator[Message]: ...

    async def heartbeat(self, instance: str, active_calls: int, ttl_s: float) -> None: ...

    async def cluster_calls(self) -> int: ...

    async def close(self) -> None: ...


@runtime_checkable
class LiveStore(Protocol):
    """Live events shared by every instance: each call's recent events, every call's
    recent events, and the calls in progress. Every method may raise
    :class:`~acdg_asgi.errors.StoreUnavailable`."""

    async def live_publish(self, items: Sequence[LiveItem]) -> None:
        """Append the events and record each call's state (a call ``"ended"`` is no longer
        listed, and its events expire a while later)."""
        ...

    def live_follow(
        self, conversation_id: str | None, after: str, *, wait_s: float,
        until: Callable[[], bool] = bool,
    ) -> AsyncGenerator[LiveEvent, None]:
        """One call's events with ``seq`` above ``after`` (a number, or ``""``), ending
        after ``session_end`` or ``wait_s`` without any; or every call's (``None``) after
        the SSE id ``after`` (``""``: from now), without end. Either ends soon after
        ``until()`` is true. Raises :class:`ValueError` at once for a malformed
        ``after``."""
        ...

    async def live_calls(self) -> list[LiveCall]:
        """The calls in progress on instances that are alive."""
        ...

    async def live_last(self, conversation_id: str) -> LiveEvent | None:
        """The call's last stored event, if any."""
        ...
