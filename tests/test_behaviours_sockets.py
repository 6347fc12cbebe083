"""The contact-centre policies over real sockets: the simulated VAIC (or a raw client),
the bridge under uvicorn, and the stand-in agent asking for the telephony tools.

Each tool's effect on the wire, the check hook, a greeting and a disclosure the caller
cannot cut, DTMF-only interruption, a minimum barge-in, the no-input policy from the
bridge's timer and from VAIC's ``noUserInput``, keys into the conversation.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from deepgram.agent.v1.types import AgentV1Settings
from rig import standin
from test_wire_sdk import extras
from vaic_raw import EventLog, vaic, wait_until

from acdg_asgi import (
    AgentSettings,
    BridgeApp,
    DtmfInput,
    Interruption,
    ListenSettings,
    NoInput,
    PlayUrls,
    Refuse,
    Session,
    TelephonyTools,
    ThinkSettings,
    ToolRequest,
    TransferTargets,
    VaicSessionParams,
)
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.testing.agent import AgentScript, Turn
from acdg_asgi.testing.report import CallReport
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call

pytestmark = pytest.mark.anyio

QUICK = {"ms_per_word": 60, "end_of_turn_ms": 200}
LEAD_MS = 100  # the bridge's default pacing lead
THINK = ThinkSettings(provider={"type": "open_ai", "model": "gpt-4o-mini"}, prompt="Be kind.")
FLUX = ListenSettings(provider={"type": "deepgram", "version": "v2", "model": "flux-general-en"})
AGENT = AgentSettings(think=THINK, listen=FLUX, greeting="Hi")
TOOLS = TelephonyTools(
    end_call=True, send_dtmf=True, transfer=TransferTargets({"sales": "sip:sales@pbx"}),
    play_url=PlayUrls({"terms": "https://cdn.example.com/terms.wav"}))
# The greeting plays, then the caller says one thing and waits.
ONE_TURN = (Utterance(speech_ms=0, pause_ms=500), Utterance(speech_ms=300, pause_ms=3000))


def sent_to_agent(agent: Any, kind: type[dg.ClientMessage]) -> list[Any]:
    return [m for c in agent.connections for m in c.messages if isinstance(m, kind)]


def activities(report: CallReport, name: str) -> list[Any]:
    return [a for a in report.activities if a.activity.name == name]


# --- telephony tools ------------------------------------------------------------------------


async def test_the_agent_hangs_up_with_end_call_once_its_goodbye_has_played() -> None:
    turns = (Turn("unused", heard="that's all", function="end_call",
                  arguments='{"reason": "the caller is done"}',
                  before="Thanks for calling, goodbye!"),)
    async with standin(AgentScript(turns=turns, **QUICK)) as agent:
        bridge = BridgeApp(agent=AGENT, deepgram_url=agent.url, tracing=False, tools=TOOLS)
        log = EventLog(bridge)
        async with serve(bridge) as host:
            report = await run_call(f"ws://{host}/", CallScript(
                utterances=ONE_TURN, wait_for_hangup=True, max_duration_ms=10_000))
            end = await log.wait_for("session_end")
    assert report.ended_by == "bot-hangup" and report.hangup_reason == "the caller is done"
    goodbye = next(s for s in report.play_streams if s.alt_text == "Thanks for calling, goodbye!")
    (hangup,) = activities(report, "hangup")
    assert goodbye.stopped_ms is not None and goodbye.first_chunk_ms is not None
    # Not before the goodbye was heard: its last chunk went out at most the lead early.
    assert hangup.t_ms >= goodbye.stopped_ms
    assert hangup.t_ms >= goodbye.first_chunk_ms + goodbye.audio_ms - LEAD_MS
    (called,) = log.of("tool_called")
    assert called.request.name == "end_call" and not log.of("function_call_request")
    assert log.of("tool_result")[0].status == "done"
    assert end.reason == "ended" and end.record.function_calls == 1
    # The Settings declared the tools as Deepgram's own SDK knows them.
    raw = agent.connections[0].settings_raw or ""
    parsed = AgentV1Settings.model_validate_json(raw)
    assert extras(parsed) == []
    functions = json.loads(raw)["agent"]["think"]["functions"]
    assert [(f["name"], f["defer_until_eot"]) for f in functions] == [
        ("end_call", True), ("transfer_call", True), ("send_dtmf", True), ("play_url", True)]
    assert report.violations == [], report.violations


async def test_a_failed_transfer_call_is_the_function_result_and_the_agent_goes_on() -> None:
    turns = (Turn("Sorry, they are busy. Anything else?", heard="sales please",
                  function="transfer_call", arguments='{"target": "sales"}',
                  before="Transferring you to sales."),)
    async with standin(AgentScript(turns=turns, **QUICK)) as agent:
        bridge = BridgeApp(agent=AGENT, deepgram_url=agent.url, tracing=False, tools=TOOLS)
        log = EventLog(bridge)
        async with serve(bridge) as host:
            report = await run_call(f"ws://{host}/", CallScript(
                utterances=ONE_TURN, transfer_status="failed:busy", max_duration_ms=10_000))
            await log.wait_for("session_end")
    (attempt,) = report.transfers
    assert (attempt.target, attempt.status, attempt.reason_code) == ("sip:sales@pbx", "failed",
                                                                     "busy")
    said = [s.alt_text or "" for s in report.play_streams]
    assert said.index("Transferring you to sales.") < next(
        i for i, t in enumerate(said) if t.startswith("Sorry, they are busy."))
    (answer,) = sent_to_agent(agent, dg.FunctionCallResponse)
    assert json.loads(answer.content) == {"status": "failed", "reason": "the line is busy",
                                          "reason_code": "busy"}
    assert "the line is busy" in said[-1]  # the reply quotes the function's result
    assert sent_to_agent(agent, dg.InjectAgentMessage) == []  # no second message about it
    assert report.violations == [], report.violations


async def test_send_dtmf_and_play_url_reach_vaic_and_the_agent_hears_back() -> None:
    turns = (Turn("Pressed.", heard="press one", function="send_dtmf",
                  arguments='{"digits": "1#"}'),
             Turn("Played.", heard="the terms please", function="play_url",
                  arguments='{"prompt": "terms"}'))
    talk = (Utterance(speech_ms=0, pause_ms=500), Utterance(speech_ms=300, pause_ms=1500),
            Utterance(speech_ms=300, pause_ms=1500))
    async with standin(AgentScript(turns=turns, **QUICK)) as agent:
        bridge = BridgeApp(agent=AGENT, deepgram_url=agent.url, tracing=False, tools=TOOLS)
        async with serve(bridge) as host:
            report = await run_call(f"ws://{host}/", CallScript(utterances=talk))
    (dtmf,) = activities(report, "sendDtmf")
    assert dtmf.activity.activity_params == {"dtmfDigits": "1#"}
    (play,) = activities(report, "playUrl")
    assert play.activity.activity_params == {"playUrlUrl": "https://cdn.example.com/terms.wav"}
    said = [s.alt_text for s in report.play_streams]
    assert 'Pressed. ({"status":"sent","digits":"1#"})' in said
    assert 'Played. ({"status":"playing"})' in said
    assert report.violations == [], report.violations


async def test_the_check_hook_refuses_a_transfer_and_the_agent_is_told_why() -> None:
    seen: list[ToolRequest] = []

    async def office_hours(session: Session, request: ToolRequest) -> Refuse | None:
        seen.append(request)
        assert session.conversation_id
        return Refuse("sales is closed now") if request.name == "transfer_call" else None

    turns = (Turn("I see.", heard="sales please", function="transfer_call",
                  arguments='{"target": "sales"}'),)
    async with standin(AgentScript(turns=turns, **QUICK)) as agent:
        tools = TelephonyTools(transfer=TransferTargets({"sales": "sip:sales@pbx"}),
                               check=office_hours)
        bridge = BridgeApp(agent=AGENT, deepgram_url=agent.url, tracing=False, tools=tools)
        async with serve(bridge) as host:
            report = await run_call(f"ws://{host}/", CallScript(utterances=ONE_TURN))
    assert [r.target for r in seen] == ["sip:sales@pbx"]
    assert report.transfers == [] and activities(report, "transfer") == []
    assert any(s.alt_text and "sales is closed now" in s.alt_text for s in report.play_streams)


# --- interruption -------------------------------------------------------------------------


async def greeting_heard(interruption: Interruption | None) -> tuple[CallReport, Any]:
    """A long greeting the caller talks over at once; what VAIC received of it."""
    greeting = ("Welcome to Acme. Calls are recorded for training and quality purposes, and "
                "by staying on the line you agree to our terms of service.")
    async with standin(AgentScript(turns=(Turn("How can I help?", heard="hello"),),
                                   **QUICK)) as agent:
        bridge = BridgeApp(agent=AgentSettings(think=THINK, greeting=greeting),
                           deepgram_url=agent.url, tracing=False, interruption=interruption)
        async with serve(bridge) as host:
            report = await run_call(f"ws://{host}/", CallScript(utterances=(
                Utterance(speech_ms=0, pause_ms=300), Utterance(speech_ms=300, pause_ms=3000))))
    stream = report.play_streams[0]
    assert stream.alt_text == greeting
    return report, agent.connections[0]


async def test_a_greeting_the_caller_cannot_cut_plays_in_full_and_is_answered_after() -> None:
    cut, _ = await greeting_heard(None)
    kept, record = await greeting_heard(Interruption(greeting=False))
    whole = len(cut.play_streams[0].alt_text.split()) * QUICK["ms_per_word"]  # type: ignore[union-attr]
    assert cut.play_streams[0].audio_ms < whole / 2  # by default the caller cuts it short
    assert kept.play_streams[0].audio_ms == pytest.approx(whole, abs=20)  # played in full
    assert record.barge_ins == 1  # the agent did hear the caller start talking
    # ... and answered what the caller said, after the greeting.
    assert [s.alt_text for s in kept.play_streams][1] == "How can I help?"
    assert kept.play_streams[1].started_ms >= kept.play_streams[0].stopped_ms  # type: ignore[operator]
    assert kept.violations == [], kept.violations


async def test_a_disclosure_sent_uninterruptible_plays_in_full() -> None:
    disclosure = "Before we go on: this call is recorded and may be used to train our staff."
    async with standin(AgentScript(**QUICK)) as agent:
        bridge = BridgeApp(agent=AGENT, deepgram_url=agent.url, tracing=False)

        @bridge.on("conversation_text")
        async def disclose(session: Session, event: Any) -> None:
            if event.content == "Hi":  # after the greeting
                await session.send_agent_message(disclosure, behavior="queue",
                                                 interruptible=False)

        async with serve(bridge) as host:
            report = await run_call(f"ws://{host}/", CallScript(utterances=(
                Utterance(speech_ms=0, pause_ms=400), Utterance(speech_ms=300, pause_ms=3000))))
    stream = next(s for s in report.play_streams if s.alt_text == disclosure)
    assert stream.audio_ms == pytest.approx(len(disclosure.split()) * 60, abs=20)
    assert report.barge_ins and report.barge_ins[0].stream_id == stream.stream_id  # talked over


async def test_with_dtmf_only_interruption_speech_does_not_cut_but_a_key_does() -> None:
    menu = "For sales press one, for billing press two, for anything else stay on the line."
    turns = (Turn(menu, heard="hello"), Turn("Billing it is.", heard="DTMF-2"))
    async with standin(AgentScript(turns=turns, ms_per_word=120, end_of_turn_ms=200)) as agent:
        bridge = BridgeApp(agent=AgentSettings(think=THINK, listen=FLUX), deepgram_url=agent.url,
                           tracing=False, interruption=Interruption(by="dtmf"))
        log = EventLog(bridge)
        async with serve(bridge) as host, vaic(host) as caller:
            await caller.initiate()
            await caller.start_stream()
            await caller.speak(voiced_ms=300, silent_ms=300)
            start = await caller.wait_for(lambda r: r.type == "playStream.start"
                                          and r.msg.get("altText") == menu)
            await caller.speak(voiced_ms=200, silent_ms=100)  # talking over the menu
            kept = await log.wait_for("user_started_speaking", lambda e: e.kept_playing)
            assert not [r for r in caller.of_type("playStream.stop") if r.at > start.at]
            await caller.activity(type="event", name="DTMF", value="2")
            stop = await caller.wait_for(lambda r: r.type == "playStream.stop"
                                         and r.msg["streamId"] == start.msg["streamId"])
            cut = await log.wait_for("agent_interrupted")
            await caller.end()
    sent = sum(len(r.audio) for r in caller.of_type("playStream.chunk")
               if r.msg["streamId"] == start.msg["streamId"])
    assert sent < caller.fmt.frame_bytes(len(menu.split()) * 120)  # the key cut it short
    assert stop.at > kept.at and cut.by == "dtmf" and cut.agent_unheard_text


async def test_a_short_sound_does_not_cut_the_agent_but_real_speech_does() -> None:
    talk = "Let me tell you everything about our new offers, one by one, starting today."
    async with standin(AgentScript(turns=(Turn(talk, heard="tell me"), Turn(talk, heard="hm")),
                                   ms_per_word=100, end_of_turn_ms=200)) as agent:
        bridge = BridgeApp(agent=AgentSettings(think=THINK), deepgram_url=agent.url,
                           tracing=False, interruption=Interruption(min_speech_ms=400))
        log = EventLog(bridge)
        async with serve(bridge) as host, vaic(host) as caller:
            await caller.initiate()
            await caller.start_stream()
            await caller.speak(voiced_ms=300, silent_ms=300)
            first = await caller.wait_for(lambda r: r.type == "playStream.start")
            await log.wait_for("agent_audio_done")  # all of it synthesised, not yet heard
            await caller.speak(voiced_ms=100, silent_ms=600)  # "hm"
            await log.wait_for("user_started_speaking", lambda e: e.kept_playing)
            stopped = await caller.wait_for(lambda r: r.type == "playStream.stop")
            second = await caller.wait_for(lambda r: r.type == "playStream.start", count=2)
            await caller.speak(voiced_ms=800, silent_ms=200)  # the caller really talks
            cut = await log.wait_for("agent_interrupted")
            await caller.end()
    streams = caller.play_streams(complete=False)
    whole = caller.fmt.frame_bytes(len(talk.split()) * 100)
    assert first.msg["streamId"] == stopped.msg["streamId"]
    assert streams[0].audio_bytes == pytest.approx(whole, abs=caller.fmt.frame_bytes(20))
    assert streams[1].stream_id == second.msg["streamId"] and streams[1].audio_bytes < whole
    assert cut.by == "speech"


# --- no input -------------------------------------------------------------------------------


async def test_a_silent_caller_is_reprompted_then_hung_up_on_politely() -> None:
    async with standin(AgentScript(**QUICK)) as agent:
        bridge = BridgeApp(agent=AGENT, deepgram_url=agent.url, tracing=False,
                           no_input=NoInput(timeout_s=0.6, reprompts=1))
        log = EventLog(bridge)
        async with serve(bridge) as host:
            report = await run_call(f"ws://{host}/", CallScript(
                utterances=(Utterance(speech_ms=0, pause_ms=100),), wait_for_hangup=True,
                max_duration_ms=10_000))
            end = await log.wait_for("session_end")
    said = [s.alt_text for s in report.play_streams]
    assert said[:2] == ["Hi", "Are you still there?"]
    assert said[2] is not None and said[2].endswith("Goodbye.")
    assert report.ended_by == "bot-hangup" and report.hangup_reason == "no input from the caller"
    assert [(a.action, a.count) for a in log.of("no_input_action")] == [("reprompt", 1),
                                                                         ("hangup", 2)]
    (hangup,) = activities(report, "hangup")
    assert hangup.t_ms >= report.play_streams[2].stopped_ms  # type: ignore[operator]
    assert end.reason == "no_input" and end.record.end_reason == "no_input"


async def test_vaics_no_user_input_drives_the_policy_when_it_sends_it() -> None:
    no_input = ac.Activity(type="event", name="noUserInput", value=1)
    async with standin(AgentScript(**QUICK)) as agent:
        bridge = BridgeApp(agent=AGENT, deepgram_url=agent.url, tracing=False,
                           no_input=NoInput(reprompts=1, reprompt="NO-USER-INPUT-{count}",
                                            reprompt_as="user", bridge_timer=False),
                           vaic_session=VaicSessionParams(send_events_to_bot=("noUserInput",)))
        log = EventLog(bridge)
        async with serve(bridge) as host:
            report = await run_call(f"ws://{host}/", CallScript(
                utterances=(Utterance(speech_ms=0, pause_ms=2500),),
                activities=((800, no_input),)))
            await log.wait_for("session_end")
    assert sent_to_agent(agent, dg.InjectUserMessage) == [
        dg.InjectUserMessage(content="NO-USER-INPUT-1")]
    assert [(a.action, a.source) for a in log.of("no_input_action")] == [("reprompt", "vaic")]
    assert len(report.play_streams) == 2  # the agent answered the reprompt


# --- DTMF into the conversation -------------------------------------------------------------


async def test_keys_up_to_the_terminator_end_the_turn_and_reach_the_agent() -> None:
    async with standin(AgentScript(turns=(Turn("Thanks, account 1234 found."),), **QUICK)) as agent:
        bridge = BridgeApp(agent=AGENT, deepgram_url=agent.url, tracing=False,
                           dtmf=DtmfInput(terminator="#"))
        log = EventLog(bridge)
        async with serve(bridge) as host:
            report = await run_call(f"ws://{host}/", CallScript(
                utterances=(Utterance(speech_ms=0, pause_ms=2500),),
                dtmf=((500, "12"), (800, "34#"))))
            await log.wait_for("session_end")
    messages = [m for m in agent.connections[0].messages
                if isinstance(m, dg.ForceEndTurn | dg.InjectUserMessage)]
    assert messages == [dg.ForceEndTurn(), dg.InjectUserMessage(content="DTMF-1234")]
    (collected,) = log.of("dtmf_collected")
    assert (collected.digits, collected.ended_by) == ("1234", "terminator")
    assert report.play_streams[-1].alt_text == "Thanks, account 1234 found."
    user_turns = [t.text for t in report.transcripts if t.final]
    assert user_turns == ["DTMF-1234"]  # the agent took the keys as the caller's turn
    await wait_until(lambda: True)
