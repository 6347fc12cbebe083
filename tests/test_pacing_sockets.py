"""Agent audio over real sockets: the stand-in agent bursts each turn far faster than real
time; what reaches VAIC arrives at playback rate, never more than the lead ahead."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
import uvicorn
from websockets.asyncio.client import connect

from acdg_asgi import AgentSettings, BridgeApp, Limits, Playout
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call
from acdg_asgi.transports.vaic_direct import DirectWebSocketProtocol

pytestmark = pytest.mark.anyio

LEAD_MS = 100
SLACK_MS = 150  # loopback and a shared machine: wide, and still far below a burst


@pytest.mark.parametrize("lead_ms", [LEAD_MS, 0])
async def test_a_burst_reaches_vaic_at_playback_rate(lead_ms: int) -> None:
    reply = " ".join(["word"] * 12)  # 12 x 150 ms = 1.8 s of audio, sent in ~0.2 s
    script = AgentScript(turns=(Turn(reply, heard="hi"),), ms_per_word=150)
    call = CallScript(utterances=(Utterance(speech_ms=0, pause_ms=300),
                                  Utterance(speech_ms=300, pause_ms=2600)))
    async with StandInAgent(script=script) as agent:
        bridge = BridgeApp(agent=AgentSettings(), deepgram_url=agent.url, tracing=False,
                           playout=Playout(lead_ms=lead_ms))
        async with serve(bridge) as host:
            report = await run_call(f"ws://{host}/", call)
    assert report.ok, report.violations
    (stream,) = [s for s in report.play_streams if s.audio_ms >= 1500]
    times = stream.chunk_times_ms
    first, last = times[0], times[-1]
    ahead = max((i + 1) * 20 - (t - first) for i, t in enumerate(times))  # 20 ms chunks
    if lead_ms:
        # Paced: spread over the audio's own length, never more than the lead ahead.
        assert last - first >= stream.audio_ms - LEAD_MS - SLACK_MS
        assert ahead <= LEAD_MS + 20 + SLACK_MS
    else:
        # Unpaced (the old behaviour): the burst goes straight through.
        assert last - first < stream.audio_ms / 2
        assert ahead > 1000


@asynccontextmanager
async def small_buffers_server(app: BridgeApp, ws: object) -> AsyncIterator[str]:
    """uvicorn on a listening socket whose connections get a small kernel send buffer
    (fixed, not grown by the kernel), so a client that stops reading backs writes up."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    server = uvicorn.Server(uvicorn.Config(app, ws=ws, log_level="warning"))  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [listener])
        while not server.started:  # noqa: ASYNC110 - uvicorn only offers a flag
            await anyio.sleep(0.005)
        try:
            yield f"127.0.0.1:{listener.getsockname()[1]}"
        finally:
            server.should_exit = True


@pytest.mark.parametrize("ws", ["websockets-sansio", DirectWebSocketProtocol])
async def test_a_vaic_that_stops_reading_costs_bounded_memory(ws: object) -> None:
    """VAIC stops reading mid-greeting: its TCP window is tiny, so writes back up. The
    bridge keeps what waits for VAIC bounded (the oldest audio goes first), says so, and
    carries on once VAIC reads again."""
    greeting = " ".join(["word"] * 60)  # 60 x 150 ms = 9 s of audio, ~400 KB of JSON
    warnings: list[str] = []
    async with StandInAgent(script=AgentScript(ms_per_word=150)) as agent:
        bridge = BridgeApp(agent=AgentSettings(greeting=greeting), deepgram_url=agent.url,
                           tracing=False, playout=Playout(lead_ms=0),
                           limits=Limits(outbound_queue=20))
        bridge.on("warning")(lambda e: warnings.append(e.description))
        async with small_buffers_server(bridge, ws) as host:
            name, port = host.split(":")
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((name, int(port)))
            async with connect(f"ws://{host}/", sock=sock, max_queue=1, proxy=None) as ws_:
                await ws_.send(json.dumps({"type": "session.initiate", "conversationId": "s1",
                                           "supportedMediaFormats": ["raw/lpcm16"]}))
                with anyio.fail_after(10):  # not reading: the warning comes anyway
                    while not any("VAIC is slow" in w for w in warnings):  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                (call,) = bridge.calls.values()
                assert len(call.call.to_vaic) <= 20 + 1
                kinds = []
                with anyio.fail_after(10):  # reading again: the call goes on to its end
                    while "playStream.stop" not in kinds:
                        kinds.append(json.loads(await ws_.recv())["type"])
                await ws_.send(json.dumps({"type": "session.end", "conversationId": "s1"}))
    assert kinds[0] == "session.accepted" and "playStream.start" in kinds
