"""Agent audio over real sockets: the stand-in agent bursts each turn far faster than real
time; what reaches VAIC arrives at playback rate, never more than the lead ahead."""

from __future__ import annotations

import pytest

from acdg_asgi import AgentSettings, BridgeApp, Playout
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call

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
