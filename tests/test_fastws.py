"""The bridge under uvicorn with the direct WebSocket protocol
(``acdg_asgi.transports.vaic_direct``): the same calls, conformance and fault handling as
on the standard path."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
from websockets.asyncio.client import connect

from acdg_asgi import AgentSettings, BridgeApp, Limits
from acdg_asgi.asgi import admission
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call
from acdg_asgi.transports import vaic_direct
from acdg_asgi.transports.vaic_direct import DirectWebSocketBase, DirectWebSocketProtocol
from acdg_asgi.transports.wsframe import (
    CLOSE,
    FIN,
    MASKED,
    PING,
    PONG,
    TEXT,
    apply_mask,
    header,
    read_header,
)

pytestmark = pytest.mark.anyio

SCRIPT = AgentScript(
    turns=(Turn("One two three four five six seven eight.", heard="hello"),
           Turn("Fine.", heard="again")),
    ms_per_word=120,
)


async def test_a_whole_call_with_barge_in_dtmf_and_resume() -> None:
    script = CallScript(
        utterances=(Utterance(speech_ms=0, pause_ms=700), Utterance(speech_ms=300, pause_ms=400),
                    Utterance(speech_ms=300, pause_ms=900)),
        barge_in_after_ms=300, dtmf=((400, "7"),), drop_and_resume_at_ms=1500,
    )
    digits: list[str] = []
    async with StandInAgent(script=SCRIPT) as agent:
        bridge = BridgeApp(agent=AgentSettings(greeting="Hi there"), deepgram_url=agent.url,
                           tracing=False, limits=Limits(resume_grace_s=5))
        bridge.on("dtmf")(lambda e: digits.append(e.digits))
        async with serve(bridge, ws=DirectWebSocketProtocol) as host:
            report = await run_call(f"ws://{host}/", script)
        assert not bridge.calls
    assert report.ok, report.violations
    assert report.resumed is True and digits == ["7"]
    assert report.barge_ins and all(b.stopped_ms is not None for b in report.barge_ins)
    assert len(report.play_streams) >= 3 and report.transcripts
    assert len(agent.connections) == 1  # the resume kept the same agent connection
    assert agent.connections[0].audio_bytes == report.caller_frames * 640


async def test_bad_input_is_answered_on_the_direct_path_too() -> None:
    warnings: list[str] = []
    async with StandInAgent(script=SCRIPT) as agent:
        bridge = BridgeApp(agent=AgentSettings(), deepgram_url=agent.url, tracing=False)
        bridge.on("warning")(lambda e: warnings.append(e.description))
        async with serve(bridge, ws=DirectWebSocketProtocol) as host, connect(
                f"ws://{host}/") as ws:
            await ws.send(json.dumps({"type": "session.initiate", "conversationId": "d1",
                                      "supportedMediaFormats": ["raw/mulaw"]}))
            assert json.loads(await ws.recv())["type"] == "session.accepted"
            await ws.send("{broken")
            await ws.send(b"\x00binary")
            await ws.send('{"type":"session.initiate","conversationId":"d1"}')
            await anyio.sleep(0.3)  # binary frames take uvicorn's queue, text the direct path
            await ws.send('{"type":"session.end","conversationId":"d1"}')
            await ws.wait_closed()
    assert len(warnings) == 3
    assert any("malformed" in w for w in warnings) and any("binary" in w for w in warnings)
    assert any("session.initiate" in w for w in warnings)


# --- frames read by hand ------------------------------------------------------------------


class RawClient:
    """A WebSocket client that writes exactly the bytes it is told to, for frame edge cases."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def upgrade(self, host: str) -> None:
        await self.send_upgrade(host)
        await self.read_upgrade()

    async def send_upgrade(self, host: str) -> None:
        await self.stream.send(
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .encode())

    async def read_upgrade(self) -> None:
        while b"\r\n\r\n" not in self.buf:
            self.buf += await self.stream.receive()
        response, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 101")

    @staticmethod
    def frame(first: int, payload: bytes) -> bytes:
        mask = os.urandom(4)
        return header(first, len(payload), MASKED) + mask + apply_mask(payload, mask)

    @staticmethod
    def text(message: dict[str, object]) -> bytes:
        return RawClient.frame(FIN | TEXT, json.dumps(message).encode())

    async def read(self) -> tuple[int, bytes]:
        """The next frame from the server: first byte and payload."""
        while (got := read_header(self.buf, 0)) is None or len(self.buf) < got[3] + got[2]:
            self.buf += await self.stream.receive()
        first, _, length, head = got
        payload, self.buf = self.buf[head : head + length], self.buf[head + length :]
        return first, payload

    async def closed_with(self) -> int:
        """Read up to the server's close frame; its code."""
        while (frame := await self.read())[0] != FIN | CLOSE:
            pass
        return int.from_bytes(frame[1][:2], "big")

    async def read_until(self, kind: str) -> dict[str, object]:
        while True:
            first, payload = await self.read()
            if first == FIN | TEXT and (msg := json.loads(payload))["type"] == kind:
                return msg  # type: ignore[no-any-return]


@pytest.fixture(params=["configured", "stock"])
def ws(request: pytest.FixtureRequest) -> Any:
    """uvicorn with ``--ws acdg_asgi.serving:DirectWebSocketProtocol``, or with its
    default protocol, which the bridge takes over once a socket is accepted."""
    return DirectWebSocketProtocol if request.param == "configured" else "auto"


@asynccontextmanager
async def raw_call(bridge: BridgeApp, cid: str, ws: Any = DirectWebSocketProtocol, *,
                   before_accept: int = 0,
                   ) -> AsyncIterator[tuple[RawClient, DirectWebSocketBase]]:
    """A call on the direct path, accepted, from a client that writes raw frames; yields
    the client and the server's protocol object for the connection. ``before_accept``:
    how many bytes of session.initiate the client sends before it has the upgrade's
    answer (the app waits for them before it accepts)."""
    gate = anyio.Event() if before_accept else None

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if gate is not None and scope["type"] == "websocket":
            await gate.wait()
        await bridge(scope, receive, send)

    async with serve(app, ws=ws) as host:
        name, port = host.split(":")
        async with await anyio.connect_tcp(name, int(port)) as stream:
            client = RawClient(stream)
            initiate = client.text({"type": "session.initiate", "conversationId": cid,
                                    "supportedMediaFormats": ["raw/lpcm16"]})
            if gate is None:
                await client.upgrade(host)
            else:
                await client.send_upgrade(host)
                await anyio.sleep(0.1)  # the server reads the request: the app waits
                await stream.send(initiate[:before_accept])
                await anyio.sleep(0.1)  # ... and what came after it
                gate.set()
                await client.read_upgrade()
                initiate = initiate[before_accept:]
            await stream.send(initiate)
            await client.read_until("session.accepted")
            (runtime,) = bridge.calls.runtimes()
            assert runtime.vaic.socket is not None
            direct = runtime.vaic.socket.direct
            assert isinstance(direct, DirectWebSocketBase), "the direct path not taken"
            yield client, direct


def dtmf(cid: str, digit: str) -> dict[str, object]:
    return {"type": "activities", "conversationId": cid,
            "activities": [{"type": "event", "name": "DTMF", "value": digit}]}


async def test_frames_read_by_hand_however_they_arrive(ws: Any) -> None:
    digits: list[str] = []
    async with StandInAgent(script=SCRIPT) as agent:
        bridge = BridgeApp(agent=AgentSettings(), deepgram_url=agent.url, tracing=False)
        bridge.on("dtmf")(lambda e: digits.append(e.digits))
        async with raw_call(bridge, "f1", ws) as (client, protocol):
            assert protocol._by_hand
            await client.stream.send(client.frame(FIN | PING, b"p1"))
            assert await client.read() == (FIN | PONG, b"p1")
            # A frame split into single bytes, then two frames in one write.
            for byte in client.text({"type": "userStream.start", "conversationId": "f1"}):
                await client.stream.send(bytes((byte,)))
                await anyio.sleep(0.001)
            await client.read_until("userStream.started")
            await client.stream.send(client.text(dtmf("f1", "1")) + client.text(dtmf("f1", "2")))
            # A fragmented message goes to the websockets parser, for good.
            whole = json.dumps(dtmf("f1", "3")).encode()
            await client.stream.send(client.frame(TEXT, whole[:10])
                                     + client.frame(FIN, whole[10:]))
            await client.stream.send(client.text(dtmf("f1", "4")))
            await client.stream.send(client.text({"type": "session.end", "conversationId": "f1"}))
            code = await client.closed_with()
    assert code == 1000
    assert digits == ["1", "2", "3", "4"]
    assert not protocol._by_hand


# session.initiate's frame: a 2-byte head, a 16-bit length, the mask, then the JSON. After
# 2 or 8 bytes the parser has taken them all and waits for the rest: nothing is buffered.
@pytest.mark.parametrize("before_accept", [2, 5, 8, 40])
async def test_a_frame_begun_before_the_upgrade_answer_stays_with_the_parser(
        ws: Any, before_accept: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that starts a frame before it has the 101 (none should), and the call
    goes on. Taken over, the connection is read by the websockets parser, which holds
    part of that frame; the configured protocol reads by hand from the upgrade on, and
    holds the part itself."""
    by_hand_at_take_over: list[bool] = []

    def spy(receive: object) -> DirectWebSocketProtocol | None:
        protocol = vaic_direct.take_over(receive)
        by_hand_at_take_over.append(protocol is not None and protocol._by_hand)
        return protocol

    monkeypatch.setattr(admission, "take_over", spy)
    digits: list[str] = []
    async with StandInAgent(script=SCRIPT) as agent:
        bridge = BridgeApp(agent=AgentSettings(), deepgram_url=agent.url, tracing=False)
        bridge.on("dtmf")(lambda e: digits.append(e.digits))
        async with raw_call(bridge, "p1", ws, before_accept=before_accept) as (client, protocol):
            if ws is DirectWebSocketProtocol:
                assert by_hand_at_take_over == [] and protocol._by_hand
            else:
                assert by_hand_at_take_over == [False]
            await client.stream.send(client.text(dtmf("p1", "1")))
            await client.stream.send(client.text({"type": "session.end", "conversationId": "p1"}))
            code = await client.closed_with()
    assert code == 1000 and digits == ["1"]


async def test_a_broken_frame_is_answered_by_uvicorn(ws: Any) -> None:
    async with StandInAgent(script=SCRIPT) as agent:
        bridge = BridgeApp(agent=AgentSettings(), deepgram_url=agent.url, tracing=False,
                           limits=Limits(resume_grace_s=0.2))
        async with raw_call(bridge, "b1", ws) as (client, _):
            await client.stream.send(client.frame(FIN | TEXT, b"\xff\xfe not UTF-8"))
            code = await client.closed_with()
    assert code == 1007


async def test_nothing_reaches_the_call_after_the_bridge_closed(
        ws: Any, caplog: pytest.LogCaptureFixture) -> None:
    digits: list[str] = []
    async with StandInAgent(script=SCRIPT) as agent:
        bridge = BridgeApp(agent=AgentSettings(), deepgram_url=agent.url, tracing=False)
        bridge.on("dtmf")(lambda e: digits.append(e.digits))
        async with raw_call(bridge, "c1", ws) as (client, _):
            await client.stream.send(client.text({"type": "session.end", "conversationId": "c1"}))
            await client.closed_with()
            caplog.clear()
            # VAIC has not read our close yet: a DTMF, then its close reply.
            await client.stream.send(client.text(dtmf("c1", "9")))
            await client.stream.send(client.frame(FIN | CLOSE, (1000).to_bytes(2, "big")))
            with anyio.fail_after(5):  # the server closes the TCP connection
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    while await client.stream.receive():
                        pass
                while bridge.calls:  # noqa: ASYNC110 - the bridge offers no event for it
                    await anyio.sleep(0.02)
    assert digits == []
    assert not [r for r in caplog.records if r.name.startswith("acdg_asgi")
                and r.levelno >= logging.WARNING], caplog.text


async def test_a_large_message_in_pieces_goes_to_the_websockets_parser(ws: Any) -> None:
    warnings: list[str] = []
    async with StandInAgent(script=SCRIPT) as agent:
        bridge = BridgeApp(agent=AgentSettings(), deepgram_url=agent.url, tracing=False)
        bridge.on("warning")(lambda e: warnings.append(e.description))
        async with raw_call(bridge, "l1", ws) as (client, protocol):
            big = client.text({"type": "activities", "conversationId": "l1",
                               "pad": "x" * 300_000})
            for at in range(0, len(big), 8192):
                await client.stream.send(big[at : at + 8192])
                await anyio.sleep(0.001)
            await client.stream.send(client.text({"type": "session.end", "conversationId": "l1"}))
            await client.closed_with()
    assert not protocol._by_hand
    assert any("bytes ignored" in w for w in warnings), warnings
