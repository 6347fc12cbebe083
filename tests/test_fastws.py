"""The bridge under uvicorn with the direct WebSocket protocol (``acdg_asgi.fastws``): the
same calls, conformance and fault handling as on the standard path."""

from __future__ import annotations

import json

import anyio
import pytest
from websockets.asyncio.client import connect

from acdg_asgi import AgentSettings, BridgeApp, Limits
from acdg_asgi.fastws import DirectWebSocketProtocol
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call

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
