"""``acdg demo``: a whole phone call on this machine, with no key and no network.

Three real servers on loopback: the stand-in Deepgram agent, the bridge under uvicorn,
and the simulated VAIC placing a call. The caller listens to the greeting, asks about an
order (the agent calls the demo's ``lookup_order`` function), presses a key, talks over
the agent's long answer (barge-in), says goodbye; the agent calls ``end_call`` and the
application hangs up once the goodbye has played.

``acdg demo --browser`` serves the same bridge with its browser phone instead, and you
are the caller: with ``DEEPGRAM_API_KEY`` set it talks to Deepgram's agent (an LLM with
the same two functions), without it to the stand-in agent.
"""

from __future__ import annotations

import os
import sys
import time
import wave
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

import anyio
import uvicorn

from .. import events as ev
from ..app import BridgeApp
from ..config import Playout
from ..errors import ConfigError
from ..protocols import deepgram as dg
from ..serving import DrainingServer
from ..session import Session
from ..testing.agent import AgentScript, StandInAgent, Turn
from ..testing.report import CallEvent, CallReport
from ..testing.script import CallScript, Utterance
from ..testing.server import serve
from ..testing.vaic import run_call
from .checks import bind

TURNS = (
    Turn("Let me look that up for you.", heard="Hi, where is my order A one two three?",
         function="lookup_order", arguments='{"order_id": "A123"}'),
    Turn("Delivery is by ground freight from our warehouse in Ohio; the driver calls about "
         "thirty minutes before arrival, and if nobody is home the parcel goes to the nearest "
         "pickup point, where it is kept for seven days before it returns to us.",
         heard="How will it be delivered?"),
    Turn("Glad I could help. Goodbye!", heard="Okay, that's all I needed, thanks.",
         function="end_call"),
)

CALLER = CallScript(
    utterances=(
        Utterance(speech_ms=0, pause_ms=2600),  # listen to the greeting
        Utterance(speech_ms=700, pause_ms=3600),
        Utterance(speech_ms=700, pause_ms=1800),  # the answer is long: talk over it
        Utterance(speech_ms=700, pause_ms=400),
    ),
    dtmf=((5200, "1"),),
    wait_for_hangup=True,
    max_duration_ms=25_000,
)

_START = time.monotonic()


def _line(out: TextIO, who: str, text: str) -> None:
    out.write(f"{time.monotonic() - _START:6.2f}s  {who:<8} {text}\n")
    out.flush()


GREETING = "Hello! You've reached Acme. How can I help?"

# Deepgram's agent for the browser demo: what the stand-in plays from its script.
LIVE_AGENT = dg.AgentSettings(
    listen=dg.ListenSettings(provider={"type": "deepgram", "model": "nova-3"}),
    think=dg.ThinkSettings(
        provider={"type": "open_ai", "model": "gpt-4o-mini"},
        prompt="You are the phone agent of Acme, a small online shop. Keep every answer to "
        "one or two short sentences. When the caller asks about an order, call "
        "lookup_order. When the caller is done, say goodbye, then call end_call.",
        functions=(
            dg.Function(name="lookup_order", description="Look up an order by its number",
                        parameters={"type": "object", "required": ["order_id"],
                                    "properties": {"order_id": {"type": "string"}}}),
            dg.Function(name="end_call", description="Hang up after saying goodbye"),
        ),
    ),
    speak=dg.SpeakSettings(provider={"type": "deepgram", "model": "aura-2-thalia-en"}),
    greeting=GREETING,
)


def build_bridge(agent_url: str | None, out: TextIO, *, agent: dg.AgentSettings | None = None,
                 **bridge_kwargs: Any) -> BridgeApp:
    bridge = BridgeApp(
        agent=agent or dg.AgentSettings(greeting=GREETING),
        deepgram_url=agent_url,  # None: $DEEPGRAM_URL, else Deepgram's
        playout=Playout(lead_ms=100),
        **bridge_kwargs,
    )
    ending: set[str] = set()

    @bridge.on("conversation_text")
    async def text(event: ev.ConversationTextEvent) -> None:
        _line(out, event.role, f"“{event.content}”")

    @bridge.on("user_started_speaking")
    async def barge_in(event: ev.UserStartedSpeakingEvent) -> None:
        if event.interrupted:
            _line(out, "app", f"barge-in: caller heard {event.agent_audio_heard_ms:.0f} ms of "
                  f"the answer; {event.agent_audio_dropped_ms:.0f} ms never sent")

    @bridge.on("function_call_request")
    async def functions(session: Session, event: ev.FunctionCallRequestEvent) -> None:
        for fn in event.functions:
            _line(out, "app", f"function {fn.name}({fn.arguments})")
            if fn.name == "lookup_order":
                await session.respond_to_function_call(fn.id, fn.name, "shipped, arrives Friday")
            elif fn.name == "end_call":
                ending.add(session.conversation_id)
                await session.respond_to_function_call(fn.id, fn.name, "ok")

    @bridge.on("dtmf")
    async def dtmf(event: ev.DtmfEvent) -> None:
        _line(out, "app", f"caller pressed {event.digits}")

    @bridge.on("agent_audio_done")
    async def done(session: Session, event: ev.AgentAudioDoneEvent) -> None:
        if session.conversation_id in ending:
            await session.end_session("caller finished")

    @bridge.on("session_end")
    async def end(event: ev.SessionEndEvent) -> None:
        _line(out, "app", f"session_end: {event.reason} after {event.duration_s:.1f} s")

    return bridge


def _show(out: TextIO, event: CallEvent) -> None:
    if event.type in ("userStream.chunk", "playStream.chunk", "userStream.speech.recognition"):
        return
    arrow = {"sent": "→", "received": "←"}.get(event.direction, "·")
    _line(out, "vaic", f"{arrow} {event.type} {event.summary}".rstrip())


def report_summary(report: CallReport, out: TextIO) -> None:
    out.write("\nWhat the simulated VAIC measured\n")
    for lat in report.latencies:
        out.write(f"  reply latency, utterance {lat.utterance}: {lat.latency_ms:.0f} ms "
                  "(end of caller speech to first agent audio)\n")
    for b in report.barge_ins:
        stop = f"{b.stopped_ms - b.talk_ms:.0f} ms" if b.stopped_ms is not None else "never"
        out.write(f"  barge-in: stream {b.stream_id} stopped {stop} after the caller spoke; "
                  f"{b.agent_audio_after_ms:.0f} ms of agent audio arrived after that\n")
    out.write(f"  play streams: {len(report.play_streams)}, hang-up reason: "
              f"{report.hangup_reason!r}, ended by: {report.ended_by}\n")
    verdict = "clean" if not report.violations else f"{len(report.violations)} violations"
    out.write(f"  conformance: {verdict}\n")
    for v in report.violations:
        out.write(f"    {v.code}: {v.message}\n")


def save_audio(report: CallReport, path: Path) -> None:
    """Both sides on one timeline: caller left, agent right (16-bit PCM WAV)."""
    from ..audio import FORMATS
    from ..testing.signals import decode_samples

    fmt = FORMATS[report.media_format or "raw/lpcm16"]
    caller = decode_samples(report.caller_audio or b"", fmt)
    t0 = report.first_frame_ms or 0.0
    agent: list[int] = [0] * len(caller)
    for stream in report.play_streams:
        if stream.audio is None or stream.first_chunk_ms is None:
            continue
        start = max(0, int((stream.first_chunk_ms - t0) * fmt.sample_rate / 1000))
        samples = decode_samples(stream.audio, fmt)
        end = start + len(samples)
        if end > len(agent):
            agent.extend([0] * (end - len(agent)))
        agent[start:end] = samples
    caller.extend([0] * (len(agent) - len(caller)))
    frames = bytearray()
    for left, right in zip(caller, agent, strict=True):
        frames += left.to_bytes(2, "little", signed=True) + right.to_bytes(2, "little", signed=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(fmt.sample_rate)
        wav.writeframes(bytes(frames))


SCRIPT = AgentScript(turns=TURNS, ms_per_word=180)


async def demo(save: Path | None = None, out: TextIO = sys.stdout, port: int = 0) -> int:
    """The call; with ``port``, the bridge listens there and the stand-in agent on the
    next port (:class:`ConfigError` if either is taken), else both on free ports."""
    if port >= 65535:
        raise ConfigError(f"--port {port}: the stand-in agent takes the next port; use a "
                          "lower one")
    agent_port = port + 1 if port else 0
    for taken in {port, agent_port} - {0}:
        bind("127.0.0.1", taken).close()  # one line now, rather than a server's traceback
    async with StandInAgent(script=SCRIPT, port=agent_port) as agent:
        bridge = build_bridge(agent.url, out)
        async with serve(bridge, port=port, lifespan="on") as host:
            url = f"ws://{host}/"
            out.write(f"bridge on {url}, stand-in Deepgram agent on {agent.url}\n\n")
            report = await run_call(url, CALLER, on_event=lambda e: _show(out, e),
                                    record_audio=save is not None)
    report_summary(report, out)
    if save is not None:
        save_audio(report, save)
        out.write(f"  audio of both sides saved to {save} (caller left, agent right)\n")
    return 0 if report.ok and report.hangup_reason else 1


async def browser_demo(host: str = "127.0.0.1", port: int = 8000,
                       out: TextIO = sys.stdout) -> int:
    """The bridge with its browser phone, until Ctrl-C; you are the caller."""
    async with AsyncExitStack() as stack:
        if os.environ.get("DEEPGRAM_API_KEY"):
            bridge = build_bridge(None, out, agent=LIVE_AGENT, phone=True)
            who = "Deepgram's voice agent (DEEPGRAM_API_KEY is set)"
        else:
            agent = await stack.enter_async_context(StandInAgent(script=SCRIPT))
            bridge = build_bridge(agent.url, out, phone=True)
            who = ("the stand-in agent (set DEEPGRAM_API_KEY for Deepgram's): any sound counts "
                   "as speech, and it answers from its script")
        config = uvicorn.Config(bridge, host=host, port=port, lifespan="on", log_level="warning")
        server = DrainingServer(config, bridges=[bridge])
        async with anyio.create_task_group() as tg:
            tg.start_soon(_announce, server, host, who, out)
            await server.serve()
            tg.cancel_scope.cancel()
    return 0


async def _announce(server: uvicorn.Server, host: str, who: str, out: TextIO) -> None:
    """Say where the page is, once the server listens."""
    while not server.started:  # noqa: ASYNC110 - uvicorn has only a flag
        await anyio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    out.write(f"Browser phone: open http://{shown}:{port}/phone and press Call.\n"
              f"It calls the bridge at ws://{shown}:{port}/, which talks to {who}.\n")
    if host not in ("127.0.0.1", "localhost", "::1"):
        out.write("Browsers allow the microphone only on https:// or localhost: open the page "
                  "on this machine, or through a TLS proxy.\n")
    out.write("Ctrl-C to stop.\n\n")
    out.flush()
