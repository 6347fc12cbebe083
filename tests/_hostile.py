"""What the hostile-peer tests share: healthy calls that measure what they hear, a raw
attacking socket, a TCP proxy that can black-hole a connection, and the rig.

* :class:`Healthy` -- one well-behaved VAIC call: numbered caller frames at real time
  (the frame's number and the call's index in its first 8 bytes), the stand-in agent
  echoes them, and the call notes when each comes back. From that :func:`measure` gives,
  for a window of time, the worst gap between echoes, the frames that never came back,
  echoes of another call's frames, and the latency.

  The caller talks in spurts (:data:`SPURT_FRAMES`, then :data:`PAUSE_FRAMES` of
  nothing), so the echo pauses as an agent does between its sentences. Without pauses
  the echo's audio comes exactly as fast as it plays: any delay upstream of the playout
  (the callers and the agent share this process with the attack) would stay in the call
  for good, held as an agent's pause is, which the bridge cannot tell from lateness and
  must not cut. With them, audio held up meanwhile plays out in the next pause, as it
  does on a real call.
* :class:`Attacker` -- a raw WebSocket client that writes exactly what it is told (frames
  built ahead, written in one go, so sending ten thousand costs the test nothing).
* :class:`HoleProxy` -- :class:`~_faults.TcpProxy` that can also black-hole one link (no
  data either way, no FIN, no RST), reset every new connection before the upgrade's
  answer, or hold that answer back.
* :func:`hostile_rig` -- the stand-in agent (echo) behind a :class:`HoleProxy`, a
  BridgeApp with short liveness and budget settings, served by uvicorn with the direct
  protocol and the guarded HTTP protocol, as ``acdg serve`` runs it, on a listening socket
  with a small send buffer (so a VAIC that stops reading backs writes up at once).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import socket
import statistics
import struct
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from _faults import Direction, Link, TcpProxy
from rig import LogCapture
from vaic_raw import EventLog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from acdg_asgi import AgentSettings, BridgeApp, Budget, CallInfo, Limits, Playout
from acdg_asgi.audio import FORMATS
from acdg_asgi.observability.observer import CallView
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.testing.agent import AgentScript, StandInAgent
from acdg_asgi.transports.http_guard import guarded_http
from acdg_asgi.transports.vaic_direct import DirectWebSocketProtocol
from acdg_asgi.transports.wsframe import CLOSE, FIN, MASKED, TEXT, apply_mask, header, read_header

FRAME_MS = 20
FMT = FORMATS["raw/lpcm16"]
FRAME_BYTES = FMT.frame_bytes(FRAME_MS)
TAG = struct.Struct("<II")  # frame number, call index
SPURT_FRAMES = 15  # 300 ms of the caller's speech,
PAUSE_FRAMES = 10  # then 200 ms without (a pause that outlasts the playout's lead)
SETTLE_S = 10.0

# The rig's settings: short, so that each attack runs its course in a few seconds.
LIMITS = Limits(
    resume_grace_s=3, resume_probe_s=1.0, agent_ping_s=1.0, agent_pong_timeout_s=1.0,
    dead_air_s=2.0, handshake_timeout_s=5.0, initiate_timeout_s=5.0,
    vaic_budget=Budget(warn_after_s=0.5, close_after_s=2.0),
)
PLAYOUT = Playout(lead_ms=100, max_buffer_ms=10_000)
HEAD_TIMEOUT_S = 1.0  # the guarded HTTP protocol's deadline for an upgrade request
SLOW_GREETING = " ".join(["word"] * 60)  # 60 words of 500 ms: 30 s of audio in about 3 s


# --- healthy calls -------------------------------------------------------------------------


@dataclass
class Healthy:
    index: int
    cid: str = field(default_factory=lambda: f"healthy-{uuid.uuid4()}")
    start: float = 0.0  # when frame 0 was due
    sent: int = 0
    heard: list[tuple[int, float]] = field(default_factory=list)  # (number, arrival)
    foreign: int = 0  # echoed frames that carried another call's index
    ready: anyio.Event = field(default_factory=anyio.Event)
    error: str | None = None

    def due(self, number: int) -> float:
        spurts, at = divmod(number, SPURT_FRAMES)
        return self.start + (spurts * (SPURT_FRAMES + PAUSE_FRAMES) + at) * FRAME_MS / 1000

    def due_by(self, when: float) -> int:
        """How many frames are due by ``when``."""
        slots = max(0, int((when - self.start) * 1000 / FRAME_MS))
        spurts, at = divmod(slots, SPURT_FRAMES + PAUSE_FRAMES)
        return spurts * SPURT_FRAMES + min(at, SPURT_FRAMES)

    async def run(self, host: str, stop: anyio.Event,
                  agent_ready: Callable[[str], bool] | None = None) -> None:
        """The call, until ``stop``. With ``agent_ready``, its audio starts once the bridge
        says the call's agent is ready: otherwise the audio held meanwhile comes back from
        the echo all at once and stays in the playout as a backlog (a real agent does not
        echo it)."""
        try:
            async with connect(f"ws://{host}/", compression=None, proxy=None,
                               open_timeout=SETTLE_S) as ws:
                await ws.send(ac.encode(ac.SessionInitiate(
                    conversation_id=self.cid, supported_media_formats=("raw/lpcm16",))).decode())
                await _expect(ws, "session.accepted")
                await ws.send(ac.encode(ac.UserStreamStart(conversation_id=self.cid)).decode())
                await _expect(ws, "userStream.started")
                if agent_ready is not None:
                    with anyio.fail_after(SETTLE_S):
                        while not agent_ready(self.cid):  # noqa: ASYNC110 - the bridge's state
                            await anyio.sleep(0.01)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._read, ws)
                    await self._send(ws, stop)
                    await ws.send(ac.encode(ac.SessionEnd(conversation_id=self.cid)).decode())
                    with anyio.move_on_after(SETTLE_S):
                        await ws.wait_closed()
                    tg.cancel_scope.cancel()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()

    async def _send(self, ws: ClientConnection, stop: anyio.Event) -> None:
        frame = bytearray(FRAME_BYTES)
        self.start = anyio.current_time()
        self.ready.set()
        number = 0
        while not stop.is_set():
            await anyio.sleep(max(0.0, self.due(number) - anyio.current_time()))
            TAG.pack_into(frame, 0, number, self.index)
            await ws.send(ac.encode(ac.UserStreamChunk(conversation_id=self.cid,
                                                       audio_chunk=bytes(frame))).decode())
            number += 1
            self.sent = number

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") != "playStream.chunk":
                    continue
                now = anyio.current_time()
                audio = base64.b64decode(msg["audioChunk"])
                for at in range(0, len(audio) - TAG.size + 1, FRAME_BYTES):
                    number, index = TAG.unpack_from(audio, at)
                    if index != self.index:
                        self.foreign += 1
                    else:
                        self.heard.append((number, now))


async def _expect(ws: ClientConnection, kind: str) -> None:
    with anyio.fail_after(SETTLE_S):
        while json.loads(await ws.recv()).get("type") != kind:
            pass


@dataclass
class Measure:
    """What the healthy calls heard in one window of time, the worst of them."""

    worst_gap_s: float  # between two echoes in a row of one spurt, any call
    lost: list[str]  # "call: frames" that never came back
    foreign: int  # echoes of another call's frames
    latency_s: float  # the median call's median latency: caller frame due to its echo
    errors: list[str]

    def excess_gap_s(self) -> float:
        return max(0.0, self.worst_gap_s - FRAME_MS / 1000)


def measure(calls: Iterable[Healthy], start: float, end: float, *,
            latency_from: float | None = None) -> Measure:
    """The window [start, end] of arrival times. Frames due before ``end`` less a second
    must all have come back; the latency is of frames due after ``latency_from``."""
    gaps, lost, foreign, latencies, errors = [0.0], [], 0, [], []
    for call in calls:
        if call.error:
            errors.append(f"{call.cid}: {call.error}")
        heard = [(n, t) for n, t in call.heard if start <= t <= end]
        gaps.extend(b - a for (m, a), (n, b) in itertools.pairwise(heard)
                    if n == m + 1 and n // SPURT_FRAMES == m // SPURT_FRAMES)
        numbers = [n for n, _ in call.heard]
        first = next((n for n, t in call.heard if t >= start), None)
        checked_until = call.due_by(end - 1.0)
        if first is not None and checked_until > first:
            wanted = set(range(first, checked_until))
            missing = wanted - set(numbers)
            if missing:
                lost.append(f"{call.cid}: {len(missing)} frames, first {min(missing)}")
        if numbers != sorted(set(numbers)):
            lost.append(f"{call.cid}: frames out of order or twice")
        foreign += call.foreign
        since = latency_from if latency_from is not None else start
        own = [t - call.due(n) for n, t in call.heard if call.due(n) >= since and t <= end]
        if own:
            latencies.append(statistics.median(own))
    return Measure(max(gaps), lost, foreign,
                   statistics.median(latencies) if latencies else float("inf"), errors)


# --- an attacking socket -------------------------------------------------------------------


class Attacker:
    """A raw WebSocket client: frames are built ahead (:meth:`text`) and written at once."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = b""
        self.closed_with: int | None = None

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, host: str, *, upgrade: bool = True, sock: socket.socket | None = None
    ) -> AsyncIterator[Attacker]:
        """Connected (on ``sock`` if given: one with a small receive buffer, say) and, if
        ``upgrade``, upgraded."""
        name, port = host.split(":")
        if sock is None:
            reader, writer = await asyncio.open_connection(name, int(port))
        else:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (name, int(port)))
            reader, writer = await asyncio.open_connection(sock=sock)
        attacker = cls(reader, writer)
        try:
            if upgrade:
                await attacker.upgrade(host)
            yield attacker
        finally:
            writer.transport.abort()

    async def upgrade(self, host: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write(
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        with anyio.fail_after(SETTLE_S):
            while b"\r\n\r\n" not in self.buf:
                self.buf += await self._more()
        response, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 101"), response

    @staticmethod
    def text(message: str | bytes | dict[str, Any]) -> bytes:
        """One masked text frame."""
        payload = (json.dumps(message).encode() if isinstance(message, dict)
                   else message.encode() if isinstance(message, str) else message)
        mask = os.urandom(4)
        return header(FIN | TEXT, len(payload), MASKED) + mask + apply_mask(payload, mask)

    def send(self, data: bytes) -> None:
        """Write now (the transport keeps what the kernel does not take yet)."""
        self.writer.write(data)

    async def _more(self) -> bytes:
        data = await self.reader.read(65536)
        if not data:
            raise EOFError("closed by the bridge")
        return data

    async def read(self) -> dict[str, Any] | None:
        """The next text message from the bridge, or ``None`` at its close frame."""
        while True:
            while (got := read_header(self.buf, 0)) is None or len(self.buf) < got[3] + got[2]:
                self.buf += await self._more()
            first, _, length, head = got
            payload, self.buf = self.buf[head: head + length], self.buf[head + length:]
            if first == FIN | CLOSE:
                self.closed_with = int.from_bytes(payload[:2], "big") if payload else 1005
                return None
            if first == FIN | TEXT:
                return json.loads(payload)  # type: ignore[no-any-return]

    async def expect(self, kind: str, *, within: float = SETTLE_S) -> dict[str, Any]:
        with anyio.fail_after(within):
            while (msg := await self.read()) is not None:
                if msg.get("type") == kind:
                    return msg
        raise AssertionError(f"closed ({self.closed_with}) before a {kind}")

    async def until_closed(self, *, within: float = SETTLE_S) -> int | None:
        """Read everything up to the bridge's close frame (or the end): its code."""
        with anyio.fail_after(within):
            with contextlib.suppress(EOFError, ConnectionError):
                while await self.read() is not None:
                    pass
        return self.closed_with


def initiate(cid: str, **fields: Any) -> dict[str, Any]:
    return {"type": "session.initiate", "conversationId": cid,
            "supportedMediaFormats": ["raw/lpcm16"], **fields}


# --- a proxy that can black-hole -----------------------------------------------------------


class HoleProxy(TcpProxy):
    """:class:`TcpProxy`, plus: :meth:`black_hole` a link; ``reset_upgrades`` aborts every
    new connection when the upgrade's answer comes; ``stall_upgrades`` holds it back."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.holes: set[int] = set()  # links whose bytes vanish, both ways
        self.answered: set[int] = set()  # links the agent sent something down (not kept:
        # the slow-reader test counts this process's memory)
        self.reset_upgrades = False
        self.stall_upgrades = False
        self.resets = 0

    def black_hole(self, link: Link) -> None:
        self.holes.add(link.index)

    async def _pump(self, link: Link, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, direction: Direction) -> None:
        try:
            while data := await reader.read(65536):
                if link.index in self.holes:
                    continue  # read and dropped: no data, no FIN, no RST
                if direction == "down" and link.index not in self.answered:
                    if self.reset_upgrades:
                        self.resets += 1
                        link.abort()
                        return
                    while self.stall_upgrades and link.index not in self.holes:  # noqa: ASYNC110
                        await anyio.sleep(0.05)  # (a test's switch: polled)
                if direction == "down":
                    self.answered.add(link.index)
                if link.cut:
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.abort()


# --- the rig -------------------------------------------------------------------------------


class Finished:
    """An observer: each finished call's counters, and every refusal's cause."""

    def __init__(self) -> None:
        self.late: dict[str, int] = {}
        self.refusals: list[str] = []

    def call_finished(self, call: CallView) -> None:
        self.late[call.conversation_id] = call.stats.play_bytes_late

    def refused(self, cause: str) -> None:
        self.refusals.append(cause)

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None  # the other observer methods: nothing to do


@dataclass
class HostileRig:
    agent: StandInAgent
    proxy: HoleProxy
    bridge: BridgeApp
    host: str
    log: EventLog
    logs: LogCapture
    seen: Finished

    def agent_ready(self, cid: str) -> bool:
        runtime = self.bridge.calls.get(cid)
        return runtime is not None and runtime.call.link.ready


async def _agent_for(info: CallInfo) -> AgentSettings:
    if (info.initiate.conversation_id or "").startswith("slow-"):
        return AgentSettings(greeting=SLOW_GREETING)
    return AgentSettings()


@asynccontextmanager
async def hostile_rig() -> AsyncIterator[HostileRig]:
    logs = LogCapture()
    with logs.installed():
        script = AgentScript(echo=True, idle_timeout=600)
        async with StandInAgent(script=script) as agent, HoleProxy(agent.url) as proxy:
            seen = Finished()
            bridge = BridgeApp(deepgram_url=proxy.url, agent=_agent_for, limits=LIMITS,
                               playout=PLAYOUT, tracing=False, observers=[seen])
            log = EventLog(bridge)
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            listener.bind(("127.0.0.1", 0))
            listener.listen(256)
            server = uvicorn.Server(uvicorn.Config(
                bridge, ws=DirectWebSocketProtocol, http=guarded_http(HEAD_TIMEOUT_S),
                log_config=None, log_level="warning"))
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve, [listener])
                while not server.started:  # noqa: ASYNC110 - uvicorn only offers a flag
                    await anyio.sleep(0.005)
                try:
                    yield HostileRig(agent, proxy, bridge,
                                     f"127.0.0.1:{listener.getsockname()[1]}", log, logs, seen)
                finally:
                    server.should_exit = True
