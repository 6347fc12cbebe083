"""Agent audio over real sockets: the stand-in agent bursts each turn far faster than real
time; what reaches VAIC arrives at playback rate, never more than the lead ahead."""

from __future__ import annotations

import pytest
from rig import rig
from vaic_raw import vaic

from acdg_asgi import AgentSettings, BridgeApp, Limits, Playout
from acdg_asgi.protocols import audiocodes as ac
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


QUEUE_BYTES = 20 * 1000  # about 20 chunks of 20 ms


@pytest.mark.parametrize(("ws", "direct_path"), [
    ("auto", False), ("auto", True), (DirectWebSocketProtocol, True)],
    ids=["uvicorn-asgi", "uvicorn-taken-over", "direct-protocol"])
async def test_a_vaic_that_stops_reading_costs_bounded_memory(
        ws: object, direct_path: bool) -> None:
    """VAIC stops reading mid-greeting: its TCP window is tiny, so writes back up. The
    bridge keeps what waits for VAIC bounded (the oldest audio goes first), says so, and
    carries on once VAIC reads again."""
    greeting = " ".join(["word"] * 60)  # 60 x 150 ms = 9 s of audio, ~400 KB of JSON
    async with rig(AgentScript(ms_per_word=150), agent=AgentSettings(greeting=greeting),
                   tracing=False, playout=Playout(lead_ms=0),
                   limits=Limits(outbound_queue_bytes=QUEUE_BYTES), send_buffer=4096,
                   ws=ws, direct_path=direct_path) as r, \
            vaic(r.host, receive_buffer=4096) as caller:
        caller.stop_reading()
        await caller.send(ac.SessionInitiate(conversation_id=caller.conversation_id,
                                             supported_media_formats=("raw/lpcm16",)))
        # not reading: the warning comes anyway
        await r.log.wait_for("warning", lambda w: "VAIC is slow" in w.description)
        (call,) = r.bridge.calls.values()
        assert call.vaic.socket is not None
        assert (call.vaic.socket.direct is not None) == direct_path
        assert call.vaic.queued_bytes <= QUEUE_BYTES  # the bound holds
        caller.read_again()  # reading again: the call goes on to its end
        await caller.wait_for("playStream.stop")
        await caller.end()
    kinds = caller.types()
    assert kinds[0] == "session.accepted" and "playStream.start" in kinds
