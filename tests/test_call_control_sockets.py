"""Call control over real sockets: the simulated VAIC (or a raw client) and the stand-in
agent, with the bridge under uvicorn between them, and real Redis for the take-over.

Transfers that fail and that are answered, mid-call updates after a Deepgram drop and
after a take-over, an agent chosen from ``start``'s callee and SIP header, agent assist
with two participants, VAIC's notifications, LatencyReport in the metrics, backchannels
kept out of the transcript, a stored agent configuration, and what the caller heard.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
import redis
from rig import rig, sample, scrape
from vaic_raw import EventLog, vaic

from acdg_asgi import (
    AgentConfig,
    AgentSettings,
    BridgeApp,
    CallInfo,
    Limits,
    Session,
    ThinkSettings,
    VaicSessionParams,
)
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call

pytestmark = pytest.mark.anyio

QUICK = {"ms_per_word": 60, "end_of_turn_ms": 200}
THINK = ThinkSettings(provider={"type": "open_ai", "model": "gpt-4o-mini"}, prompt="Be kind.")
AGENT = AgentSettings(think=THINK, greeting="Hi")
TALK = (Utterance(speech_ms=0, pause_ms=700), Utterance(speech_ms=400, pause_ms=2500),
        Utterance(speech_ms=400, pause_ms=1500))


def transfer_on(bridge: BridgeApp, said: str, destination: str = "sip:queue@pbx") -> None:
    """The application transfers when the agent says ``said``."""

    @bridge.on("conversation_text")
    async def on_text(session: Session, event: Any) -> None:
        if event.role == "assistant" and event.content == said:
            await session.transfer(destination, handover_reason="the caller asked")


# --- transfers -----------------------------------------------------------------------------------


async def test_a_failed_transfer_returns_the_caller_to_the_agent_who_speaks_again() -> None:
    turns = (Turn("Let me transfer you.", heard="a human please"),
             Turn("What else can I do?", heard="never mind"))
    async with rig(AgentScript(turns=turns, **QUICK), agent=AGENT, tracing=False) as r:
        transfer_on(r.bridge, "Let me transfer you.")
        script = CallScript(utterances=TALK, transfer_status="failed:busy",
                            max_duration_ms=15_000)
        report = await run_call(r.url, script)
        await r.log.wait_for("session_end")
        await r.settled(r.call_ids)
    (attempt,) = report.transfers
    assert (attempt.target, attempt.status, attempt.reason_code) == ("sip:queue@pbx", "failed",
                                                                     "busy")
    assert attempt.back_to_caller_ms is not None  # the agent spoke again
    said = [s.alt_text for s in report.play_streams]
    failure = next(t for t in said if t and "couldn't transfer" in t)
    assert "the line is busy" in failure
    assert said.index(failure) < said.index("What else can I do?")  # and the call went on
    (failed,) = r.log.of("transfer_failed")
    assert (failed.destination, failed.reason_code) == ("sip:queue@pbx", "busy")
    (end,) = r.log.of("session_end")
    assert end.reason == "caller"
    assert len(r.agent.connections) == 1  # the agent was never let go
    assert report.violations == [], report.violations


async def test_an_answered_transfer_ends_the_call_with_reason_transfer() -> None:
    script = AgentScript(turns=(Turn("Transferring now.", heard="agent"),), **QUICK)
    async with rig(script, agent=AGENT, tracing=False) as r:
        transfer_on(r.bridge, "Transferring now.")
        report = await run_call(r.url, CallScript(
            utterances=TALK[:2], transfer_status="answered", max_duration_ms=10_000))
        end = await r.log.wait_for("session_end")
        await r.settled(r.call_ids)
    assert report.ended_by == "transfer" and report.transfers[0].status == "answered"
    assert r.log.of("transfer_answered")[0].destination == "sip:queue@pbx"
    assert (end.reason, end.reason_code) == ("transfer", "transferred")
    assert report.violations == []


# --- mid-call changes survive ------------------------------------------------------------------


async def test_an_update_prompt_survives_a_deepgram_drop() -> None:
    seeded = (dg.History(role="user", content="(last week) my router is broken"),)
    config = AgentConfig(agent=AgentSettings(think=THINK, greeting="Hi",
                                             context=dg.Context(messages=seeded)))
    async with rig(AgentScript(**QUICK), agent=config, tracing=False) as r, \
            r.call_ready() as (caller, _):
        await caller.wait_for("playStream.stop")  # the greeting
        session = (await r.log.wait_for("session_start"))
        sessions = [s for s in r.bridge.calls.values()]
        await sessions[0].session.update_prompt("Answer in Spanish.")
        await sessions[0].session.update_speak(
            {"provider": {"type": "deepgram", "model": "aura-2-celeste-es"}})
        await r.log.wait_for("speak_updated")
        await r.agent.drop_all()
        await r.log.wait_for("agent_reconnected")
        await caller.end()
        await caller.wait_closed()
        await r.settled(r.call_ids)
    assert session.details is not None and session.details.callee == "+15559870000"
    replay = r.agent.connections[1].settings
    assert replay is not None and isinstance(replay.agent, dg.AgentSettings)
    assert isinstance(replay.agent.think, dg.ThinkSettings)
    assert replay.agent.think.prompt == "Be kind.\nAnswer in Spanish."
    assert isinstance(replay.agent.speak, dg.SpeakSettings)
    assert replay.agent.speak.provider["model"] == "aura-2-celeste-es"
    assert replay.agent.context is not None
    assert replay.agent.context.messages == (*seeded, dg.History(role="assistant", content="Hi"))


@asynccontextmanager
async def two_instances(redis_url: str, agent: StandInAgent, config: AgentConfig
                        ) -> AsyncIterator[list[tuple[BridgeApp, str, EventLog]]]:
    redis.Redis.from_url(redis_url).flushdb()
    async with AsyncExitStack() as stack:
        out = []
        for i in range(2):
            bridge = BridgeApp(agent=config, deepgram_url=agent.url, store=redis_url,
                               instance_id=f"i{i}", tracing=False)
            host = await stack.enter_async_context(serve(bridge, lifespan="on"))
            out.append((bridge, f"ws://{host}/", EventLog(bridge)))
        yield out


async def test_updates_and_a_pending_transfer_survive_a_take_over(redis_url: str) -> None:
    seeded = (dg.History(role="assistant", content="(earlier) Your ticket is 42."),)
    config = AgentConfig(agent=AgentSettings(think=THINK, greeting="Hi",
                                             context=dg.Context(messages=seeded)))
    turns = (Turn("Connecting you.", heard="a human please"), Turn("Sure.", heard="ok"))
    async with StandInAgent(script=AgentScript(turns=turns, ms_per_word=80)) as agent, \
            two_instances(redis_url, agent, config) as ((a, a_url, a_log), (_, b_url, b_log)):

        @a.on("session_start")
        async def personalise(session: Session, event: Any) -> None:
            await session.update_prompt("The caller is a gold member.")

        transfer_on(a, "Connecting you.")
        script = CallScript(
            utterances=(Utterance(speech_ms=0, pause_ms=700),
                        Utterance(speech_ms=400, pause_ms=4000), Utterance(speech_ms=400)),
            transfer_status="failed:no-answer", transfer_status_after_ms=1500,
            drop_and_resume_at_ms=2500, resume_urls=(b_url,), max_duration_ms=15_000)
        report = await run_call(a_url, script)
        await b_log.wait_for("session_end")
    assert report.resumed is True, report.timeline
    (moved,) = a_log.of("session_end")
    assert moved.reason == "migrated"
    # B's agent connection knows the update and the seeded context, then the call.
    replay = agent.connections[-1].settings
    assert replay is not None and isinstance(replay.agent, dg.AgentSettings)
    assert isinstance(replay.agent.think, dg.ThinkSettings)
    assert replay.agent.think.prompt == "Be kind.\nThe caller is a gold member."
    assert replay.agent.context is not None
    messages = [(m.role, m.content) for m in replay.agent.context.messages]
    assert messages[0] == ("assistant", "(earlier) Your ticket is 42.")
    assert ("assistant", "Connecting you.") in messages
    # The transfer sent on A failed on B: B's agent told the caller, and the call went on.
    (failed,) = b_log.of("transfer_failed")
    assert (failed.destination, failed.reason_code) == ("sip:queue@pbx", "no-answer")
    assert any(s.alt_text and "nobody answered" in s.alt_text for s in report.play_streams)


# --- context before the agent ------------------------------------------------------------------


async def test_the_agent_factory_sees_the_callee_and_a_sip_header_from_start() -> None:
    seen: list[CallInfo] = []

    async def choose(info: CallInfo) -> AgentSettings:
        seen.append(info)
        tenant = info.sip_headers.get("X-Tenant", "us")
        return AgentSettings(greeting=f"Welcome to {tenant}, you dialled {info.callee}.")

    async with rig(AgentScript(**QUICK), agent=choose, tracing=False) as r:
        report = await run_call(r.url, CallScript(
            callee="+18005550100", start_parameters={"X-Tenant": "Globex"},
            utterances=(Utterance(speech_ms=0, pause_ms=600),)))
        end = await r.log.wait_for("session_end")
        await r.settled(r.call_ids)
    assert report.play_streams[0].alt_text == "Welcome to Globex, you dialled +18005550100."
    (info,) = seen
    assert info.details is not None and info.details.caller_display_name is None
    start = r.log.of("session_start")[0]
    assert start.details == info.details
    assert end.record.details.sip_headers == {"X-Tenant": "Globex"}
    assert report.violations == []


async def test_without_start_the_factory_runs_after_the_wait() -> None:
    seen: list[CallInfo] = []

    async def choose(info: CallInfo) -> AgentSettings:
        seen.append(info)
        return AgentSettings(greeting="Hello anyway")

    async with rig(AgentScript(**QUICK), agent=choose, tracing=False,
                   limits=Limits(start_wait_s=0.2)) as r:
        report = await run_call(r.url, CallScript(
            start=False, utterances=(Utterance(speech_ms=0, pause_ms=800),)))
        await r.settled(r.call_ids)
    assert [i.details for i in seen] == [None]
    assert report.play_streams[0].alt_text == "Hello anyway"


async def test_a_stored_agent_configuration_id_is_sent_as_the_agent() -> None:
    agent_id = "6f1b1f3e-9c4f-4d53-8f2a-1d6c1b7f0a11"
    script = AgentScript(stored_agents={agent_id: AgentSettings(greeting="Stored hello")}, **QUICK)
    async with rig(script, agent=agent_id, tracing=False) as r:
        report = await run_call(r.url, CallScript(
            utterances=(Utterance(speech_ms=0, pause_ms=600),)))
        await r.settled(r.call_ids)
    assert report.play_streams[0].alt_text == "Stored hello"
    raw = r.agent.connections[0].settings_raw or ""
    assert f'"agent":"{agent_id}"' in raw


# --- participants ------------------------------------------------------------------------------


async def test_two_participants_only_the_caller_reaches_the_agent() -> None:
    async with rig(AgentScript(**QUICK), agent=AGENT, tracing=False, metrics=True) as r:
        report = await run_call(r.url, CallScript(
            participants=("customer", "agent"), utterances=TALK[:2]))
        end = await r.log.wait_for("session_end")
        metrics = await scrape(r.host)
        await r.settled(r.call_ids)
    per_stream = PCM_BYTES_PER_MS * report.caller_audio_ms  # what one stream carried
    heard = r.agent.connections[0].audio_bytes
    assert 0.5 * per_stream <= heard <= per_stream + 1  # one stream, not two
    (ignored,) = r.log.of("participant_ignored")
    assert (ignored.participant, ignored.hearing) == ("agent", "customer")
    assert end.record.participants_ignored == ("agent",)
    assert 'acdg_dropped_total{what="other_participant_frames"}' in metrics
    assert "acdg_participants_ignored_total 1.0" in metrics
    assert report.violations == []  # each userStream.start was answered with its participant


PCM_BYTES_PER_MS = 32  # raw/lpcm16


# --- VAIC's notifications ------------------------------------------------------------------


async def test_every_typed_notification_reaches_the_application() -> None:
    notifications: list[tuple[dict[str, Any], str]] = [
        ({"name": "noUserInput", "value": 1}, "no_user_input"),
        ({"name": "transferStatus", "value": {"status": "failed", "reasonCode": "declined"}},
         "transfer_failed"),
        ({"name": "playUrlFailed", "value": {"reason": "404", "playUrlUrl": "https://x/a.wav"}},
         "play_url_failed"),
        ({"name": "playFinished"}, "play_finished"),
        ({"name": "speechHypothesis", "value": "i want"}, "speech_hypothesis"),
        ({"name": "voiceDetected"}, "voice_detected"),
        ({"name": "silenceDetected"}, "silence_detected"),
        ({"name": "agentConnected", "value": True}, "agent_connected"),
        ({"name": "dialoutInitiated", "value": {"outboundTarget": "+1555"}}, "dialout_initiated"),
        ({"name": "dtmf", "value": "7"}, "dtmf"),
    ]
    async with rig(AgentScript(**QUICK), agent=AGENT, tracing=False) as r, \
            vaic(r.host) as caller:
        await caller.initiate()
        for fields, _ in notifications:
            await caller.activity(type="event", **fields)
        for _, name in notifications:
            await r.log.wait_for(name)
        await caller.end(reason_code="machine-detected", reason="AMD")
        end = await r.log.wait_for("session_end")
        await r.settled(r.call_ids)
    assert [e.activity.get("name") for e in r.log.of("activity")][1:] == [
        f["name"] for f, _ in notifications]  # each also came raw, after start
    assert r.log.of("no_user_input")[0].count == 1
    assert r.log.of("play_url_failed")[0].url == "https://x/a.wav"
    assert r.log.of("dtmf")[0].digits == "7"
    assert r.log.of("dialout_initiated")[0].outbound_target == "+1555"
    assert end.machine_detected and "answering machine" in (end.meaning or "")


async def test_vaic_session_params_are_sent_at_call_start() -> None:
    params = VaicSessionParams(barge_in=True, send_events_to_bot=("noUserInput",))
    async with rig(AgentScript(**QUICK), agent=AGENT, tracing=False, vaic_session=params) as r, \
            vaic(r.host) as caller:
        await caller.initiate()
        config = await caller.wait_for("activities")
        await caller.end()
        await r.settled(r.call_ids)
    assert config.msg["activities"] == [{"type": "event", "name": "config", "sessionParams": {
        "bargeIn": True, "sendEventsToBot": ["noUserInput"]}}]


# --- Deepgram's newer messages ------------------------------------------------------------------


async def test_latency_report_and_frustration_reach_the_metrics_and_the_record() -> None:
    turns = (Turn("Sorry about that.", heard="this is useless", frustrated=True),)
    async with rig(AgentScript(turns=turns, **QUICK), agent=AGENT, tracing=False,
                   metrics=True) as r:
        await run_call(r.url, CallScript(utterances=TALK[:2]))
        end = await r.log.wait_for("session_end")
        metrics = await scrape(r.host)
        await r.settled(r.call_ids)
    (sent,) = r.agent.connections[0].latency_reports
    assert sent.total_latency and sent.tts_latency  # a missing sample reads as 0
    assert sample(metrics, "acdg_agent_response_latency_seconds_count") == 1
    assert sample(metrics, "acdg_agent_response_latency_seconds_sum") == pytest.approx(
        sent.total_latency)
    assert sample(metrics, "acdg_agent_latency_seconds_count", stage="stt") == 1
    assert sample(metrics, "acdg_agent_latency_seconds_sum", stage="tts") == pytest.approx(
        sent.tts_latency)
    assert sample(metrics, "acdg_frustration_detected_total") == 1
    (report,) = r.log.of("latency_report")
    assert report.latency.total_ms == pytest.approx((sent.total_latency or 0) * 1000)
    assert end.record.latency == (report.latency,) and end.record.frustration == 1
    assert r.log.of("frustration_detected")[0].count == 1


async def test_a_backchannel_stays_out_of_the_transcript() -> None:
    turns = (Turn("Got it, thanks.", heard="my account number is seven"),)
    script = AgentScript(turns=turns, backchannel="Mhmm.", backchannel_after_ms=200, **QUICK)
    async with rig(script, agent=AGENT, tracing=False) as r:
        report = await run_call(r.url, CallScript(utterances=(
            Utterance(speech_ms=0, pause_ms=700), Utterance(speech_ms=1200, pause_ms=1500))))
        end = await r.log.wait_for("session_end")
        await r.settled(r.call_ids)
    (aside,) = [e for e in r.log.of("conversation_text") if e.behavior == "backchannel"]
    assert aside.content == "Mhmm."
    assert [t.content for t in end.record.transcript] == [
        "Hi", "my account number is seven", "Got it, thanks."]
    assert end.record.turns == 2
    alt_texts = [s.alt_text for s in report.play_streams]
    assert None in alt_texts and "Mhmm." not in alt_texts  # played, with no caption
    assert "Mhmm." not in [m.content for m in r.agent.connections[0].history]


# --- what the caller heard ------------------------------------------------------------------------


async def test_a_barge_in_records_what_the_caller_heard() -> None:
    long = "one two three four five six seven eight nine ten eleven twelve"
    script = AgentScript(turns=(Turn(long, heard="tell me"),), ms_per_word=150,
                         end_of_turn_ms=200)
    async with rig(script, agent=AGENT, tracing=False) as r:
        await run_call(r.url, CallScript(
            utterances=(Utterance(speech_ms=0, pause_ms=700),
                        Utterance(speech_ms=400, pause_ms=300),
                        Utterance(speech_ms=400, pause_ms=1500)),
            barge_in_after_ms=600))
        end = await r.log.wait_for("session_end")
        await r.settled(r.call_ids)
    (barge,) = [e for e in r.log.of("user_started_speaking") if e.interrupted]
    heard, unheard = barge.agent_heard_text, barge.agent_unheard_text
    assert heard and unheard and f"{heard} {unheard}" == long
    line = next(t for t in end.record.transcript if t.unheard)
    assert (line.content, line.unheard) == (heard, unheard)


# --- acdg call ------------------------------------------------------------------------------------


async def test_acdg_call_produces_and_reports_transfer_status_and_participants(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from acdg_asgi.cli import main

    turns = (Turn("Let me transfer you.", heard="a human"), Turn("Anything else?", heard="no"))
    async with rig(AgentScript(turns=turns, **QUICK), agent=AGENT, tracing=False) as r:
        transfer_on(r.bridge, "Let me transfer you.")
        argv = ["call", r.url, "--utterances", "2", "--transfer-status",
                "failed:busy", "--participants", "customer,agent", "--start-param",
                "X-Tenant=Acme", "--activity",
                '300:{"type":"event","name":"noUserInput","value":1}',
                "--max-duration", "9000"]
        status = await anyio.to_thread.run_sync(main, argv)
        await r.log.wait_for("session_end")
        await r.settled(r.call_ids)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "transfer to sip:queue@pbx" in out and "failed (busy); the bot spoke again" in out
    assert r.log.of("no_user_input") and r.log.of("participant_ignored")
    assert r.log.of("session_start")[0].details.sip_headers == {"X-Tenant": "Acme"}
