"""Fault injection for the reliability and soak tests: a TCP proxy, broken agents, load.

* :class:`TcpProxy` -- sits between the bridge and the agent; can hold the agent's bytes
  back, stop reading the bridge's (an agent that stops reading), cut a connection before
  or after a given server frame (the agent's frames are not masked, so
  ``b"SettingsApplied"`` can be spotted on the wire) or cut everything.
* :func:`broken_agent` -- a raw WebSocket server that accepts the bridge and then never
  says ``Welcome``, or says it and hangs up.
* :func:`load_call` -- a lean VAIC for load: numbered caller frames, the echo checked.

The rig these run in (stand-in agent, bridge, uvicorn, logs) is :mod:`rig`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from acdg_asgi.audio import FORMATS, MediaFormat
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.testing import signals

__all__ = ["BrokenAgent", "LoadCall", "TcpProxy", "broken_agent", "load_call", "numbered_frame"]

# --- a TCP proxy between the bridge and the agent -----------------------------------------


Direction = Literal["up", "down"]  # up: bridge -> agent; down: agent -> bridge


@dataclass(eq=False)
class Link:
    """One proxied connection: the bridge's side and the agent's side."""

    index: int
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    down_bytes: bytearray = field(default_factory=bytearray)  # what the agent sent so far
    cut: bool = False
    done: anyio.Event = field(default_factory=anyio.Event)

    def abort(self) -> None:
        """Both TCP connections die at once, with no WebSocket close frame."""
        self.cut = True
        for writer in (self.client, self.server):
            writer.transport.abort()


class TcpProxy:
    """A loopback TCP proxy in front of a ``ws://`` URL.

    ``hold`` (cleared: the agent's bytes wait in the proxy) keeps the bridge's handshake
    open as long as a test needs. ``hold_up`` (cleared: the proxy reads nothing more from
    the bridge) is an agent that stops reading, so the bridge's writes back up.
    ``cut_before``/``cut_after``, if set, abort the first ``cuts`` connections when the
    agent sends a frame containing those bytes: before or after forwarding it.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._parts = parts
        self.links: list[Link] = []
        self.hold = anyio.Event()
        self.hold.set()
        self.hold_up = anyio.Event()
        self.hold_up.set()
        self.cut_before: bytes | None = None
        self.cut_after: bytes | None = None
        self.cuts = 1
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = urlunsplit(self._parts._replace(netloc=f"127.0.0.1:{port}"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for link in self.links:
            link.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def cut_all(self) -> None:
        for link in self.links:
            if not link.cut:
                link.abort()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        link = Link(len(self.links), writer, up_writer)
        self.links.append(link)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump, link, reader, up_writer, "up")
                tg.start_soon(self._pump, link, up_reader, writer, "down")
        finally:
            link.abort()
            link.done.set()

    async def _pump(self, link: Link, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, direction: Direction) -> None:
        try:
            while True:
                if direction == "up":
                    await self.hold_up.wait()
                if not (data := await reader.read(65536)):
                    break
                if direction == "down":
                    await self.hold.wait()
                    link.down_bytes += data
                    armed = link.index < self.cuts
                    if armed and self.cut_before is not None and self.cut_before in data:
                        link.abort()
                        return
                if link.cut:
                    return
                writer.write(data)
                await writer.drain()
                if (direction == "down" and link.index < self.cuts
                        and self.cut_after is not None and self.cut_after in data):
                    await anyio.sleep(0.05)  # let the bridge read it first
                    link.abort()
                    return
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.abort()  # one side gone: the other goes too, as with a dead path


# --- agents that break the handshake --------------------------------------------------------


BrokenMode = Literal["silent", "no-settings-applied", "welcome-then-close", "welcome-then-abort"]


@dataclass
class BrokenAgent:
    url: str
    connections: int = 0
    settings_seen: int = 0


@asynccontextmanager
async def broken_agent(mode: BrokenMode) -> AsyncIterator[BrokenAgent]:
    """A WebSocket server on the agent path that breaks the Deepgram handshake.

    ``silent``: accepts, then never a word. ``no-settings-applied``: says ``Welcome``,
    reads ``Settings``, never answers. ``welcome-then-close`` / ``-abort``: says
    ``Welcome`` and hangs up (close frame 1011, or a dead TCP connection).
    """
    state = BrokenAgent(url="")

    async def handle(ws: ServerConnection) -> None:
        state.connections += 1
        if mode != "silent":
            await ws.send(dg.encode(dg.Welcome(request_id=f"broken-{state.connections}")).decode())
        if mode in ("silent", "no-settings-applied"):
            async for frame in ws:
                if isinstance(frame, str) and '"Settings"' in frame:
                    state.settings_seen += 1
        elif mode == "welcome-then-close":
            await ws.close(1011, "going away")
        else:
            await anyio.sleep(0.05)
            ws.transport.abort()

    async with ws_serve(handle, "127.0.0.1", 0, compression=None, close_timeout=1) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        state.url = f"ws://127.0.0.1:{port}{dg.AGENT_PATH}"
        yield state


# --- a lean VAIC for load: numbered caller frames, echoed audio checked --------------------

FRAME_NUMBER = struct.Struct("<I")


def numbered_frame(fmt: MediaFormat, number: int, frame_ms: int = 20) -> bytes:
    """A caller frame whose first 4 bytes carry its number (the rest is silence)."""
    frame = bytearray(signals.silence(fmt, frame_ms))
    FRAME_NUMBER.pack_into(frame, 0, number)
    return bytes(frame)


@dataclass
class LoadCall:
    """What one lean VAIC call did and saw."""

    conversation_id: str
    sent: int = 0
    echoed: list[int] = field(default_factory=list)  # frame numbers heard back, in order
    accepted: bool = False
    close_code: int | None = None
    closed_by_bridge: bool = False
    error: str | None = None
    other: list[str] = field(default_factory=list)  # types received besides audio


async def load_call(
    host: str,
    frames: int,
    *,
    agent_bytes: Callable[[str], int],
    frame_ms: int = 20,
    within: float = 30.0,
) -> LoadCall:
    """One call: ``frames`` numbered caller frames at real time, then wait until the agent
    has all their bytes and VAIC has heard every frame echoed back, then ``session.end`` and wait
    for the bridge to close the socket, as VAIC does. Never raises."""
    call = LoadCall(str(uuid.uuid4()))
    cid = call.conversation_id
    fmt = FORMATS["raw/lpcm16"]
    frame_bytes = fmt.frame_bytes(frame_ms)
    changed = anyio.Event()

    def poke() -> None:
        nonlocal changed
        changed.set()
        changed = anyio.Event()

    async def until(condition: Callable[[], bool], seconds: float) -> bool:
        with anyio.move_on_after(seconds):
            while not condition():
                await changed.wait()
            return True
        return False

    async def read(ws: Any) -> None:
        try:
            async for frame in ws:
                msg = json.loads(frame)
                kind = msg.get("type")
                if kind == "playStream.chunk":
                    audio = base64.b64decode(msg["audioChunk"])
                    for i in range(0, len(audio) - FRAME_NUMBER.size + 1, frame_bytes):
                        call.echoed.append(FRAME_NUMBER.unpack_from(audio, i)[0])
                else:
                    call.other.append(str(kind))
                    if kind == "session.accepted":
                        call.accepted = True
                poke()
        except ConnectionClosed:
            pass
        finally:
            call.close_code = ws.close_code
            poke()

    async def poll_agent() -> None:
        # The stand-in's records have no event to wait on: poll them.
        while agent_bytes(cid) < frames * frame_bytes:  # noqa: ASYNC110
            await anyio.sleep(0.05)

    try:
        async with (
            ws_connect(f"ws://{host}/", open_timeout=within, compression=None,
                       proxy=None) as ws,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(read, ws)
            await ws.send(ac.encode(ac.SessionInitiate(
                conversation_id=cid, supported_media_formats=("raw/lpcm16",),
                expect_audio_messages=True)).decode())
            if not await until(lambda: call.accepted or call.close_code is not None, within):
                raise TimeoutError("no session.accepted")
            await ws.send(ac.encode(ac.UserStreamStart(conversation_id=cid)).decode())
            if not await until(lambda: "userStream.started" in call.other, within):
                raise TimeoutError("no userStream.started")
            start = anyio.current_time()
            for number in range(frames):
                await anyio.sleep(max(0.0, start + number * frame_ms / 1000 - anyio.current_time()))
                chunk = ac.UserStreamChunk(conversation_id=cid,
                                           audio_chunk=numbered_frame(fmt, number, frame_ms))
                await ws.send(ac.encode(chunk).decode())
                call.sent += 1
            with anyio.move_on_after(within):
                await poll_agent()
            await until(lambda: len(call.echoed) >= frames, within)
            await ws.send(ac.encode(ac.SessionEnd(
                conversation_id=cid, reason_code="client-disconnected",
                reason="Client Side")).decode())
            call.closed_by_bridge = await until(lambda: call.close_code is not None, within)
            tg.cancel_scope.cancel()
    except Exception as exc:  # reported, not raised: one bad call must not hide the rest
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        call.error = f"{type(exc).__name__}: {exc}"
    return call
