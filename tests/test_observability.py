"""Metrics, logs, per-call records and traces, observed during real calls on loopback."""

from __future__ import annotations

import base64
import logging
import re

import anyio
import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rig import sample, scrape
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from acdg_asgi import AgentSettings, BridgeApp, SessionEndEvent
from acdg_asgi.audio import FORMATS
from acdg_asgi.cli.serve import write_records
from acdg_asgi.events import CallRecord
from acdg_asgi.observability.logs import JsonFormatter
from acdg_asgi.observability.tracing import CallTracer
from acdg_asgi.testing import signals
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call

pytestmark = pytest.mark.anyio

TOKEN = "vaic-secret-token-123"
API_KEY = "dg-secret-key-456"
SCRIPT = AgentScript(
    turns=(Turn("Sure, one moment please.", heard="hello"),
           Turn("That is everything I know about that topic, really everything.",
                heard="tell me more")),
    ms_per_word=100,
)
CALL = CallScript(
    utterances=(Utterance(speech_ms=0, pause_ms=900), Utterance(speech_ms=300, pause_ms=1200),
                Utterance(speech_ms=300, pause_ms=1000)),
    barge_in_after_ms=250,
)


async def test_metrics_move_with_a_call() -> None:
    async with StandInAgent(script=SCRIPT, api_key=API_KEY) as agent:
        bridge = BridgeApp(agent=AgentSettings(greeting="Hi there"), deepgram_url=agent.url,
                           deepgram_api_key=API_KEY, auth=TOKEN, metrics=True, tracing=False)
        started = anyio.Event()
        bridge.on("session_start")(lambda event: started.set())
        async with serve(bridge) as host:
            before = await scrape(host)
            assert sample(before, "acdg_active_calls") == 0
            async with anyio.create_task_group() as tg:
                reports = []

                async def call() -> None:
                    reports.append(await run_call(f"ws://{host}/", CALL, token=TOKEN))

                tg.start_soon(call)
                await started.wait()
                await anyio.sleep(0.3)
                during = await scrape(host)
                await anyio.sleep(0.3)
                later = await scrape(host)
            with pytest.raises(InvalidStatus):
                async with connect(f"ws://{host}/", additional_headers={
                        "Authorization": "Bearer wrong"}):
                    pass
            after = await scrape(host)
    (report,) = reports
    assert report.ok, report.violations
    assert sample(during, "acdg_active_calls") == 1
    flow = {"direction": "caller_to_agent"}
    assert 0 < sample(during, "acdg_frames_total", **flow) < sample(later, "acdg_frames_total",
                                                                     **flow)
    # Every caller frame VAIC sent is counted once, live and after the call alike.
    assert sample(after, "acdg_frames_total", **flow) == report.caller_frames
    assert sample(after, "acdg_audio_bytes_total", **flow) == report.caller_frames * 640
    played = sum(s.chunks for s in report.play_streams)
    assert sample(after, "acdg_frames_total", direction="bridge_to_vaic") == played
    assert sample(after, "acdg_active_calls") == 0
    assert sample(after, "acdg_calls_started_total") == 1
    assert sample(after, "acdg_calls_ended_total", reason="caller") == 1
    assert sample(after, "acdg_call_duration_seconds_count") == 1
    assert sample(after, "acdg_agent_handshake_seconds_count") == 1
    assert sample(after, "acdg_agent_response_latency_seconds_count") >= 2
    assert sample(after, "acdg_barge_ins_total") == len(report.barge_ins) >= 1
    assert sample(after, "acdg_barge_in_reaction_seconds_count") >= 1
    assert sample(after, "acdg_refused_total", cause="auth") == 1
    assert "conversation" not in after  # no per-call labels


async def test_protocol_errors_are_counted_by_kind() -> None:
    async with StandInAgent(script=SCRIPT) as agent:
        bridge = BridgeApp(agent=AgentSettings(), deepgram_url=agent.url, metrics=True,
                           tracing=False)
        async with serve(bridge) as host, connect(f"ws://{host}/") as ws:
            await ws.send('{"type":"session.initiate","conversationId":"c1",'
                          '"supportedMediaFormats":["raw/lpcm16"]}')
            assert "session.accepted" in str(await ws.recv())
            await ws.send("{not json")
            await ws.send('{"type":"userStream.chunk","conversationId":"c1","audioChunk":"%%"}')
            await ws.send(b"\x00\x01")
            await ws.send('{"type":"session.end","conversationId":"c1"}')
            await ws.wait_closed()
            text = await scrape(host)
    assert sample(text, "acdg_protocol_errors_total", peer="audiocodes", kind="malformed") == 2
    assert sample(text, "acdg_protocol_errors_total", peer="audiocodes", kind="binary") == 1


async def test_logs_name_the_call_and_never_carry_audio_or_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fmt = FORMATS["raw/lpcm16"]
    tone_b64 = base64.b64encode(signals.tone(fmt, 20)).decode()
    async with StandInAgent(script=SCRIPT, api_key=API_KEY) as agent:
        bridge = BridgeApp(agent=AgentSettings(greeting="Hi"), deepgram_url=agent.url,
                           deepgram_api_key=API_KEY, auth=TOKEN, tracing=False)
        assert API_KEY not in repr(bridge) and TOKEN not in repr(bridge)
        async with serve(bridge) as host:
            report = await run_call(f"ws://{host}/", CALL, token=TOKEN)
    assert report.ok
    records = caplog.records
    # The stand-in's websockets server logs the handshake headers it got at DEBUG level,
    # the agent's Authorization among them: seen, and masked.
    assert any(r.name == "acdg_asgi.testing.agent.websocket" and r.levelno == logging.DEBUG
               for r in records)
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in records)
    assert API_KEY not in text
    assert TOKEN not in text
    assert tone_b64[:40] not in text
    call_lines = [r for r in records if r.name == "acdg_asgi.call"]
    assert call_lines and all(
        getattr(r, "conversation_id", None) == report.conversation_id for r in call_lines
    )
    line = JsonFormatter().format(call_lines[0])
    decoded = msgspec.json.decode(line)
    assert decoded["conversation_id"] == report.conversation_id
    assert decoded["session_id"] and decoded["level"] == "info"


async def test_per_call_record_is_handed_over_and_written(tmp_path: object) -> None:
    path = tmp_path / "calls.jsonl"  # type: ignore[operator]
    ends: list[SessionEndEvent] = []
    async with StandInAgent(script=SCRIPT) as agent:
        bridge = BridgeApp(agent=AgentSettings(greeting="Hi there"), deepgram_url=agent.url,
                           tracing=False)
        bridge.on("session_end")(ends.append)
        write_records(bridge, path)
        async with serve(bridge) as host:
            report = await run_call(f"ws://{host}/", CALL)
    (end,) = ends
    record = end.record
    assert record is not None
    assert record.conversation_id == report.conversation_id
    assert record.end_reason == "caller" and record.reason_code == "client-disconnected"
    assert record.media_format == "raw/lpcm16"
    assert record.turns == 3  # the greeting and two answers
    assert [t.role for t in record.transcript][:2] == ["assistant", "user"]
    assert record.barge_ins == len(report.barge_ins) >= 1
    assert record.agent_latency_p50_ms is not None
    assert record.caller_audio_s == pytest.approx(report.caller_audio_ms / 1000, abs=0.05)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*\+00:00", record.started_at)
    lines = path.read_bytes().splitlines()  # type: ignore[attr-defined]
    assert [msgspec.json.decode(line, type=CallRecord) for line in lines] == [record]


async def test_traces_have_a_span_per_call_with_handshake_and_turns() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = CallTracer(provider.get_tracer("test"))
    async with StandInAgent(script=SCRIPT) as agent:
        bridge = BridgeApp(agent=AgentSettings(greeting="Hi there"), deepgram_url=agent.url,
                           tracing=False, observers=[tracer])
        async with serve(bridge) as host:
            report = await run_call(f"ws://{host}/", CALL)
    spans = exporter.get_finished_spans()
    (call,) = [s for s in spans if s.name == "acdg.call"]
    assert call.attributes is not None
    assert call.attributes["acdg.conversation_id"] == report.conversation_id
    assert call.attributes["acdg.end_reason"] == "caller"
    children = [s for s in spans if s.parent is not None]
    assert all(s.parent.span_id == call.context.span_id for s in children)  # type: ignore[union-attr]
    assert [s.name for s in children].count("acdg.agent.handshake") == 1
    turns = [s for s in children if s.name == "acdg.agent.turn"]
    assert len(turns) == 3
    assert sum(bool(s.attributes and s.attributes["acdg.interrupted"]) for s in turns) >= 1
