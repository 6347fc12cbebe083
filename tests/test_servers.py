"""The bridge under each of uvicorn's WebSocket implementations (hypercorn is covered in
test_frameworks.py): a whole call with a barge-in, conformance-checked."""

from __future__ import annotations

import pytest

from acdg_asgi import AgentSettings, BridgeApp
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto", "websockets"])
async def test_a_call_under_each_uvicorn_websocket_implementation(ws: str) -> None:
    script = AgentScript(turns=(Turn("One two three four five six.", heard="hi"),
                                Turn("Done.", heard="bye")), ms_per_word=120)
    call = CallScript(utterances=(Utterance(speech_ms=0, pause_ms=600),
                                  Utterance(speech_ms=300, pause_ms=350),
                                  Utterance(speech_ms=300, pause_ms=900)),
                      barge_in_after_ms=300, dtmf=((200, "9"),))
    digits: list[str] = []
    async with StandInAgent(script=script) as agent:
        bridge = BridgeApp(agent=AgentSettings(greeting="Hi"), deepgram_url=agent.url,
                           auth="tok", tracing=False)
        bridge.on("dtmf")(lambda event: digits.append(event.digits))
        async with serve(bridge, ws=ws) as host:
            report = await run_call(f"ws://{host}/", call, token="tok")
            refused = await run_call(f"ws://{host}/", call, token="wrong")
    assert report.ok, report.violations
    assert report.barge_ins and all(b.stopped_ms is not None for b in report.barge_ins)
    assert digits == ["9"] and len(report.play_streams) >= 3
    assert agent.connections[0].audio_bytes == report.caller_frames * 640
    assert refused.connect_error is not None and "401" in refused.connect_error
