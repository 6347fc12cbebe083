"""A tiny raw VAIC for tests: one real WebSocket, JSON frames out, every reply kept.

Replies are decoded to plain dicts (the wire form, camelCase) and stamped with the
event loop's clock on arrival, so a test can assert on order, counts and what arrived
after a given moment. Each reply is also checked against the bridge -> VAIC message
structs; anything that does not decode lands in :attr:`RawVaic.invalid`.

Also here: :class:`EventLog` (every application event a bridge emits) and
:func:`wait_until` (poll a condition under a generous timeout).

Usage::

    async with serve(bridge) as host, vaic(host) as caller:
        accepted = await caller.initiate(["raw/lpcm16"])
        await caller.speak(voiced_ms=200, silent_ms=400)
        await caller.wait_for("userStream.speech.recognition")
        await caller.end()
"""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from acdg_asgi import EVENT_NAMES, BridgeApp
from acdg_asgi.audio import FORMATS, MediaFormat
from acdg_asgi.events import Event
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.testing import signals

TIMEOUT = 10.0  # generous: these machines are noisy
FRAME_MS = 20
DEFAULT_START = {"caller": "+15551230000", "callee": "+15559870000"}


@dataclass
class Reply:
    """One frame the bridge sent, as received."""

    at: float  # anyio.current_time() on arrival
    msg: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.msg.get("type"))

    @property
    def audio(self) -> bytes:
        """The decoded ``audioChunk`` of a ``playStream.chunk`` (empty for other types)."""
        chunk = self.msg.get("audioChunk")
        return base64.b64decode(chunk) if isinstance(chunk, str) else b""


@dataclass
class PlayStream:
    """One play stream as VAIC saw it: its start, its chunks, its stop (if any)."""

    stream_id: str
    start: Reply
    chunks: list[Reply] = field(default_factory=list)
    stop: Reply | None = None

    @property
    def audio_bytes(self) -> int:
        return sum(len(c.audio) for c in self.chunks)


async def wait_until(
    condition: Callable[[], object], *, within: float = TIMEOUT, what: str = "condition"
) -> None:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``within`` seconds.

    For state that has no event to wait on (the stand-in's records, the bridge's calls).
    """
    with anyio.move_on_after(within):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"timed out after {within} s waiting for {what}")


class RawVaic:
    """VAIC's side of one socket."""

    def __init__(self, ws: ClientConnection, conversation_id: str) -> None:
        self.ws = ws
        self.conversation_id = conversation_id
        self.replies: list[Reply] = []
        self.invalid: list[str] = []  # frames that are not a bridge -> VAIC message
        self.binary_frames = 0
        self.fmt: MediaFormat = FORMATS["raw/lpcm16"]
        self.closed = anyio.Event()
        self._changed = anyio.Event()
        self._reading = anyio.Event()
        self._reading.set()

    # --- reading ---------------------------------------------------------------------------

    def stop_reading(self) -> None:
        """Read nothing more until :meth:`read_again`: a VAIC that stops reading (with a
        small ``receive_buffer``, the bridge's writes soon back up)."""
        self._reading = anyio.Event()

    def read_again(self) -> None:
        self._reading.set()

    async def _read(self) -> None:
        try:
            while True:
                await self._reading.wait()
                frame = await self.ws.recv()
                if isinstance(frame, bytes):
                    self.binary_frames += 1
                    continue
                try:
                    ac.decode_outbound(frame)
                except ac.DecodeError:
                    self.invalid.append(frame)
                self.replies.append(Reply(anyio.current_time(), json.loads(frame)))
                self._notify()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def of_type(self, *types: str, after: float = float("-inf")) -> list[Reply]:
        """Replies of the given types (all replies if none given) that arrived after ``after``."""
        return [r for r in self.replies if (not types or r.type in types) and r.at > after]

    def types(self) -> list[str]:
        return [r.type for r in self.replies]

    async def wait_for(
        self,
        match: str | Callable[[Reply], bool],
        *,
        start: int = 0,
        count: int = 1,
        within: float = TIMEOUT,
    ) -> Reply:
        """Wait for the ``count``-th matching reply at index ``start`` or later; return it."""
        test = (lambda r: r.type == match) if isinstance(match, str) else match
        with anyio.move_on_after(within):
            while True:
                found = [r for r in self.replies[start:] if test(r)]
                if len(found) >= count:
                    return found[count - 1]
                if self.closed.is_set():
                    break
                await self._changed.wait()
        raise AssertionError(
            f"no {match if isinstance(match, str) else 'matching reply'} (x{count}) "
            f"after {within} s; got {self.types()[start:]}"
        )

    async def wait_closed(self, within: float = TIMEOUT) -> None:
        with anyio.fail_after(within):
            await self.closed.wait()

    def play_streams(self, *, complete: bool = True) -> list[PlayStream]:
        """The play streams so far, checking the protocol's rules on the way.

        One stream at a time, unique ids, chunks only inside their open stream, a
        ``mediaFormat`` on every start, and (``complete``) a stop for every start.
        """
        streams: list[PlayStream] = []
        seen: set[str] = set()
        current: PlayStream | None = None
        for reply in self.replies:
            kind, sid = reply.type, reply.msg.get("streamId")
            if kind == "playStream.start":
                assert current is None, f"stream {sid} started while {current.stream_id} is open"
                assert isinstance(sid, str) and sid not in seen, f"stream id {sid!r} reused"
                assert reply.msg.get("mediaFormat") in FORMATS, reply.msg
                seen.add(sid)
                current = PlayStream(sid, reply)
                streams.append(current)
            elif kind == "playStream.chunk":
                assert current is not None and sid == current.stream_id, (
                    f"chunk for {sid!r} outside its stream"
                )
                current.chunks.append(reply)
            elif kind == "playStream.stop":
                assert current is not None and sid == current.stream_id, f"stray stop for {sid!r}"
                current.stop = reply
                current = None
        if complete:
            assert current is None, f"stream {current.stream_id} was never stopped"
        return streams

    # --- writing ---------------------------------------------------------------------------

    async def send(self, message: ac.InboundMessage | Mapping[str, Any] | str | bytes) -> None:
        """Send a message struct, a dict (JSON), or a raw text/binary frame as it is."""
        if isinstance(message, str | bytes):
            await self.ws.send(message)
        elif isinstance(message, Mapping):
            await self.ws.send(json.dumps(dict(message)))
        else:
            await self.ws.send(ac.encode(message).decode())

    async def initiate(
        self, formats: Iterable[str] = ("raw/lpcm16",), *,
        start: Mapping[str, Any] | None = DEFAULT_START, **fields: Any,
    ) -> dict[str, Any]:
        """``session.initiate``; returns the ``session.accepted`` or ``session.error`` dict.

        Once accepted, VAIC's ``start`` activity follows with ``start`` as its parameters,
        as VAIC does (``start=None``: none).
        """
        first = len(self.replies)
        await self.send(
            ac.SessionInitiate(
                conversation_id=self.conversation_id,
                supported_media_formats=tuple(formats),
                **{"bot_name": "test_bot", "caller": "+15551230000", **fields},
            )
        )
        reply = await self.wait_for(
            lambda r: r.type in ("session.accepted", "session.error"), start=first
        )
        if reply.type == "session.accepted":
            self.fmt = FORMATS[reply.msg["mediaFormat"]]
            if start is not None:
                await self.activity(type="event", name="start", parameters=dict(start))
        return reply.msg

    async def start_stream(self) -> None:
        start = len(self.replies)
        await self.send(ac.UserStreamStart(conversation_id=self.conversation_id))
        await self.wait_for("userStream.started", start=start)

    async def chunk(self, audio: bytes) -> None:
        await self.send(ac.UserStreamChunk(conversation_id=self.conversation_id, audio_chunk=audio))

    async def speak(self, voiced_ms: int, silent_ms: int = 0, *, pace: float = 1.0) -> None:
        """Caller audio in 20 ms chunks: a tone ("speech"), then silence.

        ``pace`` 1.0 sends at real time, 0.25 four times faster, 0 as fast as possible.
        """
        frames = [signals.tone(self.fmt, FRAME_MS)] * (voiced_ms // FRAME_MS)
        frames += [signals.silence(self.fmt, FRAME_MS)] * (silent_ms // FRAME_MS)
        for frame in frames:
            await self.chunk(frame)
            await anyio.sleep(FRAME_MS / 1000 * pace)

    async def activity(self, **activity: Any) -> None:
        await self.send(
            {"type": "activities", "conversationId": self.conversation_id, "activities": [activity]}
        )

    async def end(
        self, reason_code: str = "client-disconnected", reason: str = "Client Side"
    ) -> None:
        await self.send(
            ac.SessionEnd(conversation_id=self.conversation_id, reason_code=reason_code,
                          reason=reason)
        )


@asynccontextmanager
async def vaic(
    host: str,
    path: str = "/",
    *,
    conversation_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    receive_buffer: int | None = None,
) -> AsyncIterator[RawVaic]:
    """Open a socket to the bridge at ``ws://host/path`` and read it in the background.

    ``receive_buffer`` makes the socket's kernel receive buffer that small and the client
    hold at most one unread message, so that :meth:`RawVaic.stop_reading` soon stops the
    bridge's writes."""
    sock = None
    if receive_buffer is not None:
        name, _, port = host.rpartition(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect((name, int(port)))
    async with connect(
        f"ws://{host}{path}", additional_headers=headers, compression=None, proxy=None,
        open_timeout=TIMEOUT, sock=sock, max_queue=1 if sock is not None else 16,
    ) as ws:
        client = RawVaic(ws, conversation_id or str(uuid.uuid4()))
        async with anyio.create_task_group() as tg:
            tg.start_soon(client._read)
            try:
                yield client
            finally:
                await ws.close()


class EventLog:
    """Every application event of a bridge, in the order its handlers saw them."""

    def __init__(self, bridge: BridgeApp, *, skip: Iterable[str] = ()) -> None:
        self.events: list[tuple[str, Event]] = []
        self._changed = anyio.Event()
        for name in EVENT_NAMES:
            if name not in skip:
                bridge.on(name)(self._recorder(name))

    def _recorder(self, name: str) -> Callable[[Any, Event], None]:
        def record(session: Any, event: Event) -> None:
            self.events.append((name, event))
            self._changed.set()
            self._changed = anyio.Event()

        return record

    def of(self, name: str, conversation_id: str | None = None) -> list[Any]:
        return [
            e for n, e in self.events
            if n == name and (conversation_id is None or e.conversation_id == conversation_id)
        ]

    def names(self, conversation_id: str | None = None) -> list[str]:
        return [
            n for n, e in self.events
            if conversation_id is None or e.conversation_id == conversation_id
        ]

    async def wait_for(
        self,
        name: str,
        match: Callable[[Any], bool] = lambda e: True,
        *,
        count: int = 1,
        within: float = TIMEOUT,
    ) -> Any:
        with anyio.move_on_after(within):
            while True:
                found = [e for e in self.of(name) if match(e)]
                if len(found) >= count:
                    return found[count - 1]
                await self._changed.wait()
        raise AssertionError(f"no {name} event (x{count}) after {within} s: {self.names()}")

