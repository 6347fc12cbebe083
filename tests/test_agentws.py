"""The lean agent WebSocket client against real servers: the stand-in agent, and a
``websockets`` server that fragments, pings and closes on purpose."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from websockets.asyncio.server import ServerConnection, serve

from acdg_asgi import AgentSettings, BridgeApp, Limits
from acdg_asgi.errors import AgentClosed, AgentConnectError
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve as serve_app
from acdg_asgi.testing.vaic import run_call
from acdg_asgi.transports.agent_base import PushAgentConnection
from acdg_asgi.transports.agent_lean import LeanConnection, LeanConnector
from acdg_asgi.transports.agent_websockets import WebsocketsConnector

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def server(handler: object) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, compression=None) as srv:  # type: ignore[arg-type]
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/path?x=1"


async def test_a_conversation_with_the_stand_in_agent() -> None:
    async with StandInAgent(script=AgentScript(echo=True), api_key="k") as agent:
        conn = await LeanConnector().connect(agent.url, {"Authorization": "Token k"})
        assert isinstance(conn, PushAgentConnection)
        welcome = dg.decode_server(await conn.recv())
        assert isinstance(welcome, dg.Welcome) and welcome.request_id
        settings = dg.Settings(
            audio=dg.AudioSettings(
                input=dg.AudioInput(encoding="linear16", sample_rate=16000),
                output=dg.AudioOutput(encoding="linear16", sample_rate=16000, container="none"),
            ),
            agent=dg.AgentSettings(),
        )
        await conn.send_text(dg.encode(settings))
        assert isinstance(dg.decode_server(await conn.recv()), dg.SettingsApplied)
        got: list[str | bytes] = []
        closed: list[str] = []
        sizes = [1, 125, 126, 640, 65535, 65536, 200_000]  # every length encoding
        all_back = anyio.Event()

        def on_message(message: str | bytes) -> None:
            got.append(message)
            if len(got) == len(sizes):
                all_back.set()

        conn.listen(on_message, closed.append)
        for n in sizes:
            conn.write_audio(bytes([n % 251]) * n)
        with anyio.fail_after(5):
            await all_back.wait()
        assert [len(m) for m in got] == sizes
        assert all(isinstance(m, bytes) and m == bytes([len(m) % 251]) * len(m) for m in got)
        await conn.close()
        assert closed and "1000" in closed[0]
        with pytest.raises(AgentClosed):
            conn.write_text(b"{}")
        record = agent.connections[0]
        assert record.audio_frames == len(sizes) and record.settings == settings


async def test_refused_upgrades_carry_the_status() -> None:
    async with StandInAgent(api_key="right") as agent:
        with pytest.raises(AgentConnectError) as refused:
            await LeanConnector().connect(agent.url, {"Authorization": "Token wrong"})
        assert refused.value.status == 401
        wrong_path = agent.url.replace("/v1/agent/converse", "/nope")
        with pytest.raises(AgentConnectError) as missing:
            await LeanConnector().connect(wrong_path, {"Authorization": "Token right"})
        assert missing.value.status == 404
    with pytest.raises(AgentConnectError):
        await LeanConnector().connect(agent.url, {})  # nobody listens there any more


async def test_fragments_pings_and_a_close_from_the_server() -> None:
    seen_path: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen_path.append(ws.request.path)
        await ws.send(["frag", "mented ", "text"])  # one message in three frames
        await ws.send([b"\x01\x02", b"\x03"])
        await ws.ping(b"hello")
        echoed = await ws.recv()
        await ws.send(echoed)
        await ws.close(4001, "done here")

    async with server(handler) as url:
        conn = await LeanConnector().connect(url, {})
        assert await conn.recv() == "fragmented text"
        assert await conn.recv() == b"\x01\x02\x03"
        await conn.send_text(b'{"type":"KeepAlive"}')
        assert await conn.recv() == '{"type":"KeepAlive"}'
        with pytest.raises(AgentClosed, match="4001"):
            await conn.recv()
    assert seen_path == ["/path?x=1"]


async def test_a_slow_agent_does_not_grow_memory() -> None:
    release = anyio.Event()

    async def handler(ws: ServerConnection) -> None:
        await release.wait()  # read nothing meanwhile

    async with server(handler) as url:
        conn = await LeanConnector().connect(url, {})
        assert isinstance(conn, LeanConnection)
        frame = bytes(64 * 1024)
        try:  # 12.8 MB offered to a peer that reads nothing
            written = [conn.write_audio(frame) for _ in range(200)]
        finally:
            release.set()
            conn.abort()
        assert written[0] and not written[-1]  # dropped once the agent stopped reading


@pytest.mark.parametrize("connector", ["lean", "websockets"])
async def test_a_call_over_either_connector(connector: str) -> None:
    """The general path (a connector that is awaited for each message, here the
    ``websockets`` library) and the push path (the lean client) behave alike."""
    chosen: LeanConnector | WebsocketsConnector = (
        LeanConnector() if connector == "lean" else WebsocketsConnector()
    )
    script = AgentScript(turns=(Turn("One two three four five six.", heard="hi"),
                                Turn("Done.", heard="bye")), ms_per_word=120)
    call = CallScript(utterances=(Utterance(speech_ms=0, pause_ms=600),
                                  Utterance(speech_ms=300, pause_ms=350),
                                  Utterance(speech_ms=300, pause_ms=900)),
                      barge_in_after_ms=300)
    async with StandInAgent(script=script) as agent:
        bridge = BridgeApp(agent=AgentSettings(greeting="Hi"), deepgram_url=agent.url,
                           connector=chosen, tracing=False, limits=Limits(keepalive_s=0.5))
        async with serve_app(bridge) as host:
            report = await run_call(f"ws://{host}/", call)
    assert report.ok, report.violations
    assert report.barge_ins and all(b.stopped_ms is not None for b in report.barge_ins)
    (record,) = agent.connections
    assert record.audio_bytes == report.caller_frames * 640  # every caller frame arrived
    assert len(report.play_streams) >= 3
