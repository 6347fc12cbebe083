"""The one way out to each socket of a call: an outlet per peer.

An outlet takes a batch of messages from the call (:meth:`offer`) and never waits: where
the socket takes writes at once (a direct VAIC socket that keeps up, a pushing agent
connection) and nothing is queued, it writes them right there; otherwise it queues them
for its own writer task, which awaits the socket. So nothing overtakes what is queued.

A peer that reads slower than real time fills the queue; past ``limit`` bytes
(``Limits.outbound_queue_bytes``: the audio's bytes, a control message counted as
:data:`CONTROL_BYTES`) the oldest audio is dropped, counted in the call's
:class:`~acdg_asgi.call.CallStats` and reported through ``on_shed``, so memory stays
bounded and what is sent stays current. Control messages are kept, unless they alone
fill the queue: then the peer reads nothing at all and VAIC's socket is closed (1008;
VAIC may resume on a new one). A failed write is not an error here: the socket's reader
sees the same loss and reports it to the call.

The socket behind an outlet changes during a call (VAIC resumes on a new socket, the
agent connection is replaced); what was queued for the old one is dropped with it. Audio
that does not get written, for whatever reason, is counted as dropped.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

import anyio

from ..call import CallStats
from ..errors import AgentClosed, VaicClosed
from ..protocols import audiocodes as ac
from ..protocols import deepgram as dg
from ..transports.agent_base import AgentConnection, PushAgentConnection
from ..transports.vaic_asgi import DirectProtocol, VaicSocket
from .scheduler import Kick

__all__ = ["CONTROL_BYTES", "AgentOutlet", "VaicOutlet"]

CONTROL_BYTES: Final = 256  # what a queued control message is counted as
_CHUNK: Final = ac.PlayStreamChunk


# What a queued message counts for (inline on the queue paths: they run per message).
def _vaic_bytes(msg: ac.OutboundMessage) -> int:
    return len(msg.audio_chunk) if msg.__class__ is ac.PlayStreamChunk else CONTROL_BYTES


_EAGER_TRIES = 8  # sends begun at once that had to wait, in a row: then leave it to the writer


class _VaicFramePath:
    # What offer_chunk reads, first in the object (see call.machine._CallFramePath).
    __slots__ = ("_direct", "_queue", "_rest", "_sending", "_stuck", "_waited", "socket")


class VaicOutlet(_VaicFramePath):
    """To VAIC: AudioCodes messages, in order."""

    __slots__ = ("_close_code", "_kick", "_limit", "_on_shed", "_on_stop_written", "_on_stuck",
                 "_queued", "_stats", "closed")

    def __init__(
        self, kick: Kick, stats: CallStats, *, limit: int,
        on_shed: Callable[[str, int], None], on_stop_written: Callable[[], None],
        on_stuck: Callable[[int], None] | None = None,
    ) -> None:
        self.socket: VaicSocket | None = None
        self._direct: DirectProtocol | None = None  # the socket's, while it takes writes now
        self._kick = kick
        self._stats = stats
        self._limit = limit
        self._on_shed = on_shed
        self._on_stuck = on_stuck
        self._on_stop_written = on_stop_written
        self._queue: deque[ac.OutboundMessage] = deque()
        # A send begun at once that has to wait: the writer finishes it before the queue.
        self._rest: tuple[VaicSocket, Awaitable[None], ac.OutboundMessage] | None = None
        self._sending: anyio.CancelScope | None = None  # the writer is in a send
        self._waited = 0  # sends begun at once that had to wait, in a row
        self._queued = 0  # bytes, as _vaic_bytes counts them
        self._stuck: VaicSocket | None = None  # reads nothing: to be closed by the writer
        self._close_code: int | None = None
        self.closed = False  # the writer is done: the call is over

    @property
    def queued_bytes(self) -> int:
        """What waits for the writer, counted as the limit counts it."""
        return self._queued

    def attach(self, socket: VaicSocket) -> VaicSocket | None:
        """Write to ``socket`` from now on; the socket it replaces, if any."""
        old, self.socket, self._direct = self.socket, socket, socket.direct
        self._drop_queued()
        self._waited = 0
        return old

    def detach(self, socket: VaicSocket) -> bool:
        """``socket`` is gone; ``True`` if it was this outlet's."""
        if self.socket is not socket:
            return False
        self.socket = self._direct = None
        self._drop_queued()
        return True

    def offer(self, batch: list[ac.OutboundMessage]) -> None:
        direct = self._direct
        if direct is not None and not self._queue and not direct.backed_up:
            for i, msg in enumerate(batch):
                if not direct.write_text(ac.encode(msg)):
                    self._broken(batch[i:])
                    return
                if msg.__class__ is ac.PlayStreamStop:
                    self._on_stop_written()
            return
        socket = self.socket
        if socket is None:
            self._dropped(batch)  # detached: the call keeps its audio in the playout
            return
        if socket is self._stuck:
            self._dropped(batch)  # it reads nothing: the writer is closing it
            return
        if not (self._queue or self._sending or self._rest) and self._waited < _EAGER_TRIES:
            self._send_now(socket, batch)
            return
        self._enqueue(batch)

    def offer_chunk(self, chunk: ac.PlayStreamChunk) -> None:
        """:meth:`offer` for the steady state's one message, a chunk of agent audio."""
        direct = self._direct
        if direct is not None:
            if not self._queue and not direct.backed_up:
                if not direct.write_text(ac.encode(chunk)):
                    self._broken([chunk])
                return
        elif (socket := self.socket) is not None and socket is not self._stuck \
                and not (self._queue or self._sending or self._rest) \
                and self._waited < _EAGER_TRIES:
            self._send_one(socket, chunk)
            return
        self.offer([chunk])

    def _enqueue(self, batch: list[ac.OutboundMessage]) -> None:
        """Queue ``batch`` for the writer, counted in bytes; past the limit, shed."""
        self._queue.extend(batch)
        for msg in batch:  # as _vaic_bytes counts (inline: it runs per message)
            self._queued += len(msg.audio_chunk) if msg.__class__ is _CHUNK else CONTROL_BYTES
        if self._queued > self._limit:
            self._shed()
        self._kick.set()

    def _send_now(self, socket: VaicSocket, batch: list[ac.OutboundMessage]) -> None:
        """Send each message right here, as far as its send goes without waiting; a send
        that has to wait is the writer's to finish, and what follows it is queued."""
        for i in range(len(batch)):
            if not self._send_one(socket, batch[i]):
                if self._rest is not None:
                    self._enqueue(batch[i + 1 :])
                else:
                    self._dropped(batch[i + 1 :])  # the socket is closed
                return

    def _send_one(self, socket: VaicSocket, msg: ac.OutboundMessage) -> bool:
        """Send ``msg`` right here, as far as its send goes without waiting: ``True`` once
        written; ``False`` if the rest of its send is the writer's (``_rest``), or if the
        socket is closed (then it is dropped: its reader reads what VAIC sent, then
        reports the loss)."""
        try:
            rest = socket.send_text_now(ac.encode(msg))
        except VaicClosed:
            self._dropped((msg,))
            return False
        if rest is not None:
            self._waited += 1
            self._rest = (socket, rest, msg)
            return False
        self._waited = 0
        if msg.__class__ is ac.PlayStreamStop:
            self._on_stop_written()
        return True

    def close(self, code: int) -> None:
        """Close the socket once what is queued is written."""
        self._close_code = code
        self._kick.set()

    async def last_words(self, msg: ac.OutboundMessage) -> None:
        """Write ``msg`` past the queue: the call failed and its writer may be gone."""
        socket = self.socket
        if socket is not None and not socket.closed:
            with contextlib.suppress(VaicClosed):
                await socket.send_text(ac.encode(msg))

    async def run(self) -> None:
        """The writer: what could not be written at once, in order, then the close."""
        queue = self._queue
        while True:
            await self._kick.wait()
            if (stuck := self._stuck) is not None:
                self._stuck = None
                await stuck.close(1008, "VAIC reads nothing")  # its reader reports the loss
            if (begun := self._rest) is not None:
                sent = await self._write(begun[0], begun[1], begun[2])
                self._rest = None
                if not sent:
                    continue  # the loss is counted; a resumed socket kicks the writer again
            while queue and (socket := self.socket) is not None and socket is not stuck:
                msg = queue.popleft()
                self._queued -= len(msg.audio_chunk) if msg.__class__ is _CHUNK else CONTROL_BYTES
                if not await self._write(socket, socket.send_text(ac.encode(msg)), msg):
                    break
            if self._close_code is not None:
                self.closed = True
                if self.socket is not None:
                    await self.socket.close(self._close_code)
                return

    async def _write(self, socket: VaicSocket, send: Awaitable[None],
                     msg: ac.OutboundMessage) -> bool:
        """Await one send to ``socket``; ``False`` if it failed or was given up (what it
        would have written, and the queue if the socket is still this outlet's, counted as
        dropped: its reader reads what VAIC sent, then reports the loss). A socket closed
        meanwhile (one that read nothing, closed by :meth:`run`) is not waited for."""
        with anyio.CancelScope() as scope:
            self._sending = scope
            if socket.closed or socket.broken:
                scope.cancel()
            try:
                await send
            except VaicClosed:
                scope.cancel()
            finally:
                self._sending = None
        if scope.cancel_called:
            self._dropped((msg,))
            if self.socket is socket:  # not already replaced by a resumed socket
                self._drop_queued()
            return False
        if msg.__class__ is ac.PlayStreamStop:
            self._on_stop_written()
        return True

    def _broken(self, unwritten: list[ac.OutboundMessage]) -> None:
        """A direct write failed: the socket is going; its reader reports the loss."""
        self._direct = None
        self._dropped(unwritten)
        if self.socket is not None:
            self.socket.broken = True

    def _shed(self) -> None:
        """Over the limit: drop the oldest audio until the rest fits; if control messages
        alone fill it, VAIC reads nothing at all: close the socket."""
        queue, kept = self._queue, []
        excess = self._queued - self._limit
        for msg in queue:
            if excess > 0 and isinstance(msg, ac.PlayStreamChunk):
                size = _vaic_bytes(msg)
                excess -= size
                self._queued -= size
                self._stats.play_bytes_dropped += len(msg.audio_chunk)
            else:
                kept.append(msg)
        dropped = len(queue) - len(kept)
        queue.clear()
        queue.extend(kept)
        if dropped:
            self._on_shed("VAIC", dropped)
        if self._queued > self._limit and self.socket is not None:
            if self._on_stuck is not None:
                self._on_stuck(len(queue))
            self._stuck, self._direct = self.socket, None
            self._drop_queued()
            if self._sending is not None:  # a send it will never finish: the writer closes it
                self._sending.cancel()

    def _drop_queued(self) -> None:
        self._dropped(self._queue)
        self._queue.clear()
        self._queued = 0

    def _dropped(self, messages: Iterable[ac.OutboundMessage]) -> None:
        for msg in messages:
            if isinstance(msg, ac.PlayStreamChunk):
                self._stats.play_bytes_dropped += len(msg.audio_chunk)


class _AgentFramePath:
    # What offer_audio reads, first in the object (see call.machine._CallFramePath).
    __slots__ = ("_queue", "_stats", "push")


class AgentOutlet(_AgentFramePath):
    """To the agent: Deepgram messages and caller audio (``bytes``), in order."""

    __slots__ = ("_closing", "_kick", "_limit", "_on_shed", "_queued", "conn")

    def __init__(
        self, kick: Kick, stats: CallStats, *, limit: int, on_shed: Callable[[str, int], None],
    ) -> None:
        self.conn: AgentConnection | None = None
        self.push: PushAgentConnection | None = None  # the same, when it takes writes at once
        self._kick = kick
        self._stats = stats
        self._limit = limit
        self._on_shed = on_shed
        self._queue: deque[dg.ClientMessage | bytes] = deque()
        self._queued = 0  # bytes, as _agent_bytes counts them
        self._closing: list[AgentConnection] = []

    def attach(self, conn: AgentConnection) -> PushAgentConnection | None:
        """Write to ``conn`` from now on; the same connection typed as pushing, if it is."""
        self.conn = conn
        self.push = conn if isinstance(conn, PushAgentConnection) else None
        return self.push

    def drop(self, conn: AgentConnection | None = None) -> bool:
        """Forget the connection (``conn``, if given, only if it is the current one);
        ``True`` if one was dropped. What was queued for it goes with it."""
        if self.conn is None or (conn is not None and conn is not self.conn):
            return False
        self.conn = self.push = None
        self._dropped(self._queue)
        self._queue.clear()
        self._queued = 0
        return True

    def ping(self, on_pong: Callable[[], None]) -> bool:
        """Ping the connection; ``on_pong()`` once it answers (if it is still the one).
        ``False`` if it cannot be pinged (a connector without ``ping``)."""
        conn = self.conn
        ping = getattr(conn, "ping", None)  # (PingableConnection; isinstance costs more)
        if ping is None:
            return False

        def answered() -> None:
            if self.conn is conn:
                on_pong()

        with contextlib.suppress(AgentClosed):  # its reader reports the loss
            ping(answered)
        return True

    def close(self) -> None:
        """Drop the connection and close it in the writer task."""
        conn = self.conn
        if self.drop() and conn is not None:
            self._closing.append(conn)
            self._kick.set()

    def offer_audio(self, audio: bytes) -> None:
        """:meth:`offer` for the steady state's one item, a chunk of caller audio."""
        push = self.push
        if push is not None and not self._queue:
            try:
                if not push.write_audio(audio):
                    self._stats.caller_frames_dropped += 1
            except AgentClosed:
                self._stats.caller_frames_dropped += 1  # the connection reports its loss
            return
        self.offer([audio])

    def offer(self, batch: list[dg.ClientMessage | bytes]) -> None:
        push = self.push
        if push is not None and not self._queue:
            try:
                for i, item in enumerate(batch):  # noqa: B007 (the except reads i)
                    if item.__class__ is bytes:
                        if not push.write_audio(item):
                            self._stats.caller_frames_dropped += 1
                    else:
                        push.write_text(dg.encode(item))  # type: ignore[arg-type]
            except AgentClosed:
                self._dropped(batch[i:])  # the connection reports its loss itself
            return
        if self.conn is None:
            # reconnecting: the link holds caller audio meanwhile, the call re-sends the rest
            self._dropped(batch)
            return
        self._queue.extend(batch)
        for item in batch:
            self._queued += len(item) if item.__class__ is bytes else CONTROL_BYTES
        if self._queued > self._limit:
            self._shed()
        self._kick.set()

    async def run(self) -> None:
        """The writer: for connections that must be awaited, and closing old ones."""
        queue = self._queue
        while True:
            await self._kick.wait()
            while self._closing:
                await self._closing.pop().close()
            while queue and (conn := self.conn) is not None:
                item = queue.popleft()
                self._queued -= len(item) if item.__class__ is bytes else CONTROL_BYTES
                try:
                    if isinstance(item, bytes):
                        await conn.send_audio(item)
                    else:
                        await conn.send_text(dg.encode(item))
                except AgentClosed:
                    self._dropped((item, *queue))  # the reader sees the loss and reports it
                    queue.clear()
                    self._queued = 0
                    break

    async def aclose(self) -> None:
        """The call is over: close whatever connection is left."""
        conn = self.conn
        self.drop()
        for c in (*self._closing, *([conn] if conn is not None else [])):
            await c.close()
        self._closing.clear()

    def _shed(self) -> None:
        queue, kept = self._queue, []
        excess = self._queued - self._limit
        for item in queue:
            if excess > 0 and isinstance(item, bytes):
                excess -= len(item)
                self._queued -= len(item)
            else:
                kept.append(item)
        dropped = len(queue) - len(kept)
        queue.clear()
        queue.extend(kept)
        self._stats.caller_frames_dropped += dropped
        if dropped:
            self._on_shed("agent", dropped)

    def _dropped(self, items: Iterable[dg.ClientMessage | bytes]) -> None:
        self._stats.caller_frames_dropped += sum(1 for item in items if isinstance(item, bytes))

