"""The contact-centre policies in the sans-I/O core: telephony tools for the agent, what
may interrupt it, the caller's silence, keys into the conversation, sensitive mode and
the redaction hook. No sockets, a hand-moved clock (times in seconds)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from acdg_asgi import events as ev
from acdg_asgi.audio import FORMATS, is_loud
from acdg_asgi.call import Call, CallState, CloseAgent
from acdg_asgi.call import commands as cmd
from acdg_asgi.call.state import CallShared, CheckTool, Timer
from acdg_asgi.config import AgentConfig, Limits, Playout
from acdg_asgi.errors import ConfigError
from acdg_asgi.policies import (
    CallOptions,
    DtmfInput,
    Handled,
    Interruption,
    NoInput,
    PlayUrls,
    Proceed,
    Refuse,
    TelephonyTools,
    TransferTarget,
    TransferTargets,
    redact_card_numbers,
)
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.testing import CallPair
from acdg_asgi.testing.signals import silence, tone

PCM16 = FORMATS["raw/lpcm16"]
MULAW = FORMATS["raw/mulaw"]
VOICE = tone(PCM16, 20)  # 20 ms of the caller talking
QUIET = silence(PCM16, 20)
THINK = dg.ThinkSettings(provider={"type": "open_ai", "model": "gpt-4o-mini"}, prompt="Help.")
AGENT = AgentConfig(agent=dg.AgentSettings(think=THINK, greeting="Hello!"))
TOOLS = TelephonyTools(
    end_call=True, send_dtmf=True,
    transfer=TransferTargets({"sales": "sip:sales@pbx", "billing": TransferTarget(
        uri="tel:+15550001111", description="invoices", handover_reason="billing question",
        sip_headers=({"name": "X-Queue", "value": "7"},))}),
    play_url=PlayUrls({"terms": "https://cdn.example.com/terms.wav"}),
)


def make_call(config: AgentConfig | None = AGENT, *, limits: Limits | None = None,
              **options: Any) -> Call:
    initiate = ac.SessionInitiate(conversation_id="conv-1", caller="+15551230000",
                                  supported_media_formats=("raw/lpcm16",))
    return Call(initiate, session_id="s-1", media_format=PCM16, agent_config=config, now=0.0,
                playout=Playout(lead_ms=100, chunk_ms=20), limits=limits or Limits(),
                options=CallOptions(**options))


def drain(call: Call) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    out = (call.to_vaic, call.to_agent, call.events, call.actions)
    call.to_vaic, call.to_agent, call.events, call.actions = [], [], [], []
    return out


def ready(call: Call, now: float = 0.0) -> dg.Settings:
    if not call.session_started:
        call.vaic(ac.Activities(activities=({"type": "event", "name": "start"},)), now)
    call.agent_connected(now)
    call.agent(dg.Welcome(request_id="r1"), now)
    (settings,) = [m for m in drain(call)[1] if isinstance(m, dg.Settings)]
    call.agent(dg.SettingsApplied(), now)
    drain(call)
    return settings


def of(items: list[Any], cls: type) -> list[Any]:
    return [e for e in items if isinstance(e, cls)]


def activities(to_vaic: list[Any]) -> list[ac.Activity]:
    return [a for m in to_vaic if isinstance(m, ac.OutboundActivities) for a in m.activities]


def say(call: Call, now: float, text: str, ms: int = 400, *, done: bool = True) -> None:
    """The agent says ``text``: its words, ``ms`` of audio, and (``done``) AgentAudioDone."""
    call.agent(dg.ConversationText(role="assistant", content=text), now)
    call.agent_audio(bytes(PCM16.frame_bytes(ms)), now)
    if done:
        call.agent(dg.AgentAudioDone(), now)


def ask(call: Call, now: float, name: str, fid: str = "fc1", **arguments: Any) -> None:
    call.agent(dg.FunctionCallRequest(functions=(dg.FunctionCall(
        id=fid, name=name, arguments=json.dumps(arguments)),)), now)


def play_all(call: Call, now: float, until: float) -> float:
    while (deadline := call.next_deadline()) is not None and deadline <= until:
        now = max(now, deadline)
        call.tick(now)
    return now


def answers(to_agent: list[Any]) -> list[tuple[str | None, dict[str, Any]]]:
    return [(m.id, json.loads(m.content)) for m in to_agent
            if isinstance(m, dg.FunctionCallResponse)]


def activity(call: Call, now: float, **fields: Any) -> None:
    call.vaic(ac.Activities(activities=({"type": "event", **fields},)), now)


# --- telephony tools ------------------------------------------------------------------------


def test_the_tools_are_declared_in_the_settings_and_in_each_update_think() -> None:
    own = dg.Function(name="lookup_order", description="Look up an order.")
    config = AgentConfig(agent=dg.AgentSettings(
        think=(msgspec.structs.replace(THINK, functions=(own,)), THINK)))
    call = make_call(config, tools=TOOLS)
    settings = ready(call)
    assert isinstance(settings.agent, dg.AgentSettings) and isinstance(settings.agent.think, tuple)
    for item in settings.agent.think:  # every think of the fallback chain
        names = [f.name for f in item.functions or ()]
        assert names[-4:] == ["end_call", "transfer_call", "send_dtmf", "play_url"]
        assert all(f.defer_until_eot for f in item.functions or () if f.name != "lookup_order")
    transfer = next(f for f in settings.agent.think[0].functions or ()
                    if f.name == "transfer_call")
    assert transfer.parameters["properties"]["target"]["enum"] == ["sales", "billing"]
    assert "billing: invoices" in transfer.description
    cmd.UpdateThink(think=THINK).apply(call, 1.0)
    (update,) = drain(call)[1]
    assert isinstance(update, dg.UpdateThink) and isinstance(update.think, dg.ThinkSettings)
    assert [f.name for f in update.think.functions or ()] == list(TOOLS.names)
    # The stored update stays as the application sent it; the next Settings declares again.
    call.agent_lost(2.0, "dropped")
    call.tick(2.0)
    again = ready(call, 2.1)
    assert isinstance(again.agent, dg.AgentSettings)
    assert isinstance(again.agent.think, dg.ThinkSettings)
    assert len(again.agent.think.functions or ()) == 4


def test_a_function_of_the_applications_own_with_a_tools_name_is_left_to_it() -> None:
    mine = dg.Function(name="end_call", description="my own")
    call = make_call(AgentConfig(agent=dg.AgentSettings(
        think=msgspec.structs.replace(THINK, functions=(mine,)))), tools=TOOLS)
    settings = ready(call)
    assert isinstance(settings.agent, dg.AgentSettings)
    assert isinstance(settings.agent.think, dg.ThinkSettings)
    functions = settings.agent.think.functions or ()
    assert [f.description for f in functions if f.name == "end_call"] == ["my own"]
    ask(call, 1.0, "end_call")
    (request,) = of(drain(call)[2], ev.FunctionCallRequestEvent)  # the application's to answer
    assert request.functions[0].name == "end_call"


def test_a_stored_agent_cannot_be_given_the_tools_but_they_still_run() -> None:
    call = make_call(AgentConfig(agent="0b0e9c1e-3c1f-4bbd-9a3b-5a4f3c2d1e0f"), tools=TOOLS)
    call.agent_connected(0.0)
    call.agent(dg.Welcome(), 0.0)
    (warning,) = of(drain(call)[2], ev.WarningEvent)
    assert warning.code == "TOOLS_NOT_DECLARED" and "end_call" in warning.description
    call.agent(dg.SettingsApplied(), 0.0)
    ask(call, 1.0, "send_dtmf", digits="1")
    assert [a.name for a in activities(drain(call)[0])] == ["sendDtmf"]


def test_end_call_waits_for_the_goodbye_to_play_then_hangs_up() -> None:
    call = make_call(tools=TOOLS)
    ready(call)
    say(call, 1.0, "Goodbye, and thanks for calling!", ms=600)
    ask(call, 1.0, "end_call", reason="the caller is done")
    to_vaic, to_agent, events, _ = drain(call)
    assert not activities(to_vaic) and not answers(to_agent)
    (called,) = of(events, ev.ToolCalledEvent)
    assert called.request == ev.ToolRequest(id="fc1", name="end_call", arguments={
        "reason": "the caller is done"}, target="the caller is done")
    assert not of(events, ev.FunctionCallRequestEvent)  # the bridge's own, not the app's
    now = play_all(call, 1.0, 3.0)
    assert now == pytest.approx(1.6)  # once the goodbye was heard
    to_vaic, to_agent, events, actions = drain(call)
    (hangup,) = activities(to_vaic)
    assert hangup.name == "hangup"
    assert hangup.activity_params == {"hangupReason": "the caller is done"}
    assert call.state is CallState.ENDING and CloseAgent() in actions
    assert answers(to_agent) == []  # the agent is let go: recorded, not sent
    (result,) = of(events, ev.ToolResultEvent)
    assert (result.name, result.status) == ("end_call", "done")
    call.vaic(ac.SessionEnd(reason_code="bot-disconnected"), 2.0)
    (end,) = of(drain(call)[2], ev.SessionEndEvent)
    assert end.reason == "ended" and end.record is not None and end.record.function_calls == 1


def test_end_call_asked_before_the_goodbyes_audio_waits_for_it() -> None:
    call = make_call(tools=TOOLS)
    ready(call)
    call.agent(dg.ConversationText(role="assistant", content="Goodbye!"), 1.0)
    ask(call, 1.0, "end_call")  # the words are there, their audio is not yet
    play_all(call, 1.0, 1.5)
    assert not activities(drain(call)[0])
    call.agent_audio(bytes(PCM16.frame_bytes(300)), 1.5)
    call.agent(dg.AgentAudioDone(), 1.5)
    play_all(call, 1.5, 3.0)
    (hangup,) = activities(drain(call)[0])
    assert hangup.activity_params == {"hangupReason": "the agent ended the call"}


def test_transfer_call_goes_to_the_named_target_and_its_failure_is_the_result() -> None:
    call = make_call(tools=TOOLS)
    ready(call)
    ask(call, 1.0, "transfer_call", target="billing")
    (transfer,) = activities(drain(call)[0])  # nothing was playing: at once
    assert transfer.name == "transfer" and transfer.activity_params == {
        "transferTarget": "tel:+15550001111", "handoverReason": "billing question",
        "transferSipHeaders": [{"name": "X-Queue", "value": "7"}]}
    assert call.state is CallState.TRANSFERRING
    activity(call, 3.0, name="transferStatus", value={"status": "failed", "reasonCode": "busy"})
    _, to_agent, events, _ = drain(call)
    assert answers(to_agent) == [("fc1", {"status": "failed", "reason": "the line is busy",
                                          "reason_code": "busy"})]
    assert not of(to_agent, dg.InjectAgentMessage)  # the result says it; no second message
    assert of(events, ev.TransferFailedEvent) and call.state is CallState.ACTIVE
    # The record lists the transfer and its outcome.
    call.vaic(ac.SessionEnd(reason_code="client-disconnected"), 4.0)
    (end,) = of(drain(call)[2], ev.SessionEndEvent)
    assert end.record.transfers == (ev.TransferRecord(
        destination="tel:+15550001111", outcome="failed", reason_code="busy", at_s=1.0),)


def test_an_answered_transfer_call_ends_the_call() -> None:
    call = make_call(tools=TOOLS)
    ready(call)
    ask(call, 1.0, "transfer_call", target="sales")
    drain(call)
    activity(call, 2.0, name="transferStatus", value={"status": "answered"})
    _, to_agent, events, _ = drain(call)
    assert call.state is CallState.ENDING and answers(to_agent) == []
    assert of(events, ev.ToolResultEvent)[0].status == "done"


def test_a_target_or_prompt_not_configured_is_refused_with_the_known_ones() -> None:
    call = make_call(tools=TOOLS)
    ready(call)
    ask(call, 1.0, "transfer_call", target="ceo")
    ask(call, 1.0, "play_url", "fc2", prompt="https://evil.example.com/x.wav")
    ask(call, 1.0, "send_dtmf", "fc3", digits="12A")
    to_vaic, to_agent, events, _ = drain(call)
    assert activities(to_vaic) == []
    errors = dict(answers(to_agent))
    assert errors["fc1"] == {"error": "no target 'ceo'; known: billing, sales"}
    assert errors["fc2"]["error"].startswith("no prompt 'https://evil")
    assert "0-9 * #" in errors["fc3"]["error"]
    assert [r.status for r in of(events, ev.ToolResultEvent)] == ["failed"] * 3


def test_send_dtmf_and_play_url_act_once_the_words_have_played() -> None:
    call = make_call(tools=TOOLS)
    ready(call)
    say(call, 1.0, "Let me press one for you.", ms=400)
    ask(call, 1.0, "send_dtmf", digits="1#")
    ask(call, 1.0, "play_url", "fc2", prompt="terms")
    assert not activities(drain(call)[0])
    play_all(call, 1.0, 2.0)
    to_vaic, to_agent, _, _ = drain(call)
    sent = activities(to_vaic)
    assert [(a.name, a.activity_params) for a in sent] == [
        ("sendDtmf", {"dtmfDigits": "1#"}),
        ("playUrl", {"playUrlUrl": "https://cdn.example.com/terms.wav"})]
    assert answers(to_agent) == [("fc1", {"status": "sent", "digits": "1#"}),
                                 ("fc2", {"status": "playing"})]


def test_play_url_can_wait_for_vaic_to_say_it_played() -> None:
    tools = msgspec.structs.replace(TOOLS, play_wait_s=30.0)
    call = make_call(tools=tools)
    ready(call)
    ask(call, 1.0, "play_url", prompt="terms")
    ask(call, 1.0, "play_url", "fc2", prompt="terms")
    assert answers(drain(call)[1]) == []
    activity(call, 5.0, name="playFinished")
    assert answers(drain(call)[1]) == [("fc1", {"status": "played"})]
    activity(call, 6.0, name="playUrlFailed", value={"reason": "404"})
    assert answers(drain(call)[1]) == [("fc2", {"status": "failed", "reason": "404"})]
    ask(call, 7.0, "play_url", "fc3", prompt="terms")
    drain(call)
    call.tick(37.0)  # VAIC never said: the agent goes on
    assert answers(drain(call)[1])[0][1]["status"] == "playing"


async def allow(session: Any, request: ev.ToolRequest) -> None:
    return None


def test_the_check_hook_may_refuse_extend_or_handle_a_tool() -> None:
    call = make_call(tools=msgspec.structs.replace(TOOLS, check=allow))
    ready(call)
    ask(call, 1.0, "end_call")
    ask(call, 1.0, "send_dtmf", "fc2", digits="5")
    ask(call, 1.0, "transfer_call", "fc3", target="sales")
    to_vaic, _, _, actions = drain(call)
    assert [a.request.id for a in of(actions, CheckTool)] == ["fc1", "fc2", "fc3"]
    assert activities(to_vaic) == []  # nothing runs before the application says
    call.tool_checked("fc1", Refuse("the caller still owes an answer"), 1.1)
    call.tool_checked("fc2", Handled({"status": "pressed by the CRM"}), 1.1)
    call.tool_checked("fc3", Proceed(params={"transferSipHeaders": [
        {"name": "X-Case", "value": "42"}]}), 1.1)
    to_vaic, to_agent, events, _ = drain(call)
    assert answers(to_agent) == [
        ("fc1", {"status": "refused", "reason": "the caller still owes an answer"}),
        ("fc2", {"status": "pressed by the CRM"})]
    (transfer,) = activities(to_vaic)
    assert transfer.activity_params == {"transferTarget": "sip:sales@pbx", "transferSipHeaders": [
        {"name": "X-Case", "value": "42"}]}
    assert [r.status for r in of(events, ev.ToolResultEvent)] == ["refused", "handled"]
    assert "hangup" not in [a.name for a in activities(to_vaic)]  # refused
    assert call.state is CallState.TRANSFERRING


def test_a_caller_who_talks_over_the_last_words_withdraws_the_tool() -> None:
    call = make_call(tools=TOOLS)
    ready(call)
    say(call, 1.0, "I'll hang up now, goodbye.", ms=1000)
    ask(call, 1.0, "end_call")
    play_all(call, 1.0, 1.3)
    drain(call)
    call.agent(dg.UserStartedSpeaking(), 1.3)  # "wait, one more thing"
    call.agent(dg.FunctionCallCancelled(functions=(dg.CancelledFunction(id="fc1"),)), 1.31)
    play_all(call, 1.31, 5.0)
    to_vaic, to_agent, events, _ = drain(call)
    assert "hangup" not in [a.name for a in activities(to_vaic)]
    assert answers(to_agent) == [] and call.state is CallState.ACTIVE
    assert [r.status for r in of(events, ev.ToolResultEvent)] == ["cancelled"]
    # Cancelled by Deepgram alone, while the hook was still deciding:
    checked = make_call(tools=msgspec.structs.replace(TOOLS, check=allow))
    ready(checked)
    ask(checked, 1.0, "send_dtmf", digits="9")
    checked.agent(dg.FunctionCallCancelled(functions=(dg.CancelledFunction(id="fc1"),)), 1.1)
    checked.tool_checked("fc1", None, 1.2)
    assert activities(drain(checked)[0]) == []


def test_an_answer_goes_only_to_the_agent_connection_that_asked() -> None:
    call = make_call(tools=TOOLS)
    ready(call)
    say(call, 1.0, "Pressing one.", ms=400)
    ask(call, 1.0, "send_dtmf", digits="1")
    call.agent_lost(1.1, "dropped")
    call.tick(1.1)
    ready(call, 1.2)
    play_all(call, 1.2, 3.0)
    to_vaic, to_agent, _, _ = drain(call)
    assert [a.name for a in activities(to_vaic)] == ["sendDtmf"]  # still done
    assert answers(to_agent) == []  # the new connection never asked


def test_tool_configuration_is_checked_where_it_is_given() -> None:
    with pytest.raises(ConfigError, match="sip:, sips: or tel:"):
        TransferTargets({"sales": "https://sales"})
    with pytest.raises(ConfigError, match="name 'a b'"):
        TransferTargets({"a b": "sip:x@y"})
    with pytest.raises(ConfigError, match="http"):
        PlayUrls({"x": "ftp://x"})
    with pytest.raises(ConfigError, match="async function"):
        TelephonyTools(end_call=True, check="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match='did you mean "end_call"'):
        TelephonyTools(end_cal=True)  # type: ignore[call-arg]


# --- interruption ---------------------------------------------------------------------------


def test_a_greeting_the_caller_cannot_cut_plays_in_full() -> None:
    call = make_call(interruption=Interruption(greeting=False))
    ready(call)
    call.agent(dg.ConversationText(role="assistant", content="Hello!"), 0.1)
    call.agent_audio(bytes(PCM16.frame_bytes(2000)), 0.1)
    play_all(call, 0.1, 0.5)
    drain(call)
    call.agent(dg.UserStartedSpeaking(), 0.5)
    to_vaic, _, events, _ = drain(call)
    assert not of(to_vaic, ac.PlayStreamStop) and not of(to_vaic, ac.UserStreamSpeechStarted)
    (started,) = of(events, ev.UserStartedSpeakingEvent)
    assert started.kept_playing and not started.interrupted
    # The caller's audio still reaches the agent, which answers after the greeting.
    call.vaic(ac.UserStreamChunk(audio_chunk=VOICE), 0.55)
    assert drain(call)[1] == [VOICE]
    call.agent(dg.ConversationText(role="user", content="I need help"), 1.0)
    call.agent(dg.ConversationText(role="assistant", content="Sure."), 1.1)
    call.agent_audio(bytes(PCM16.frame_bytes(400)), 1.1)
    play_all(call, 0.5, 4.0)
    to_vaic, _, _, _ = drain(call)
    heard = PCM16.frame_bytes(2000) + PCM16.frame_bytes(400)
    assert call.stats.play_bytes == heard  # every byte of both played
    assert [m.alt_text for m in of(to_vaic, ac.PlayStreamStart)] == ["Sure."]
    # The next utterance is the caller's to cut again.
    call.agent(dg.ConversationText(role="assistant", content="Anything else?"), 4.0)
    call.agent_audio(bytes(PCM16.frame_bytes(1000)), 4.0)
    play_all(call, 4.0, 4.2)
    call.agent(dg.UserStartedSpeaking(), 4.2)
    assert of(drain(call)[0], ac.PlayStreamStop)


def test_a_message_sent_uninterruptible_cannot_be_cut() -> None:
    call = make_call()
    ready(call)
    disclosure = "This call may be recorded for quality purposes."
    cmd.SendAgentMessage(content=disclosure, interruptible=False).apply(call, 1.0)
    (inject,) = drain(call)[1]
    assert inject == dg.InjectAgentMessage(message=disclosure)
    say(call, 1.0, disclosure, ms=1500, done=False)
    play_all(call, 1.0, 1.5)
    call.agent(dg.UserStartedSpeaking(), 1.5)
    assert not of(drain(call)[0], ac.PlayStreamStop)
    play_all(call, 1.5, 3.0)
    assert call.stats.play_bytes == PCM16.frame_bytes(1500)
    assert call.stats.barge_ins == 0


def test_dtmf_only_interruption_ignores_speech_and_cuts_on_a_key() -> None:
    call = make_call(interruption=Interruption(by="dtmf"))
    ready(call)
    call.agent(dg.ConversationText(role="assistant", content="Hello!"), 0.0)  # the greeting
    say(call, 1.0, "Press one for sales or two for billing.", ms=3000, done=False)
    play_all(call, 1.0, 1.5)
    call.agent(dg.UserStartedSpeaking(), 1.5)
    assert not of(drain(call)[0], ac.PlayStreamStop)
    activity(call, 2.0, name="DTMF", value="2")
    to_vaic, _, events, _ = drain(call)
    assert of(to_vaic, ac.PlayStreamStop)
    (cut,) = of(events, ev.AgentInterruptedEvent)
    assert cut.by == "dtmf" and cut.agent_heard_text and cut.agent_unheard_text


def test_speech_must_last_min_speech_ms_before_it_cuts() -> None:
    call = make_call(interruption=Interruption(min_speech_ms=200))
    ready(call)
    call.agent(dg.ConversationText(role="assistant", content="Hello!"), 0.0)
    say(call, 1.0, "Let me tell you about our offers today.", ms=4000, done=False)
    play_all(call, 1.0, 1.2)
    # A cough: 60 ms of voice, then quiet. Nothing is cut.
    call.agent(dg.UserStartedSpeaking(), 1.2)
    for i in range(10):
        call.vaic(ac.UserStreamChunk(audio_chunk=VOICE if i < 3 else QUIET), 1.2 + i * 0.02)
    assert not of(drain(call)[0], ac.PlayStreamStop)
    play_all(call, 1.4, 3.0)  # the pending barge-in lapses
    assert Timer.BARGE_IN not in call.timers and call.link.tap is None
    # The caller really talks: cut once 200 ms of voice came.
    call.agent(dg.ConversationText(role="assistant", content="As I was saying."), 3.0)
    call.agent_audio(bytes(PCM16.frame_bytes(3000)), 3.0)
    play_all(call, 3.0, 3.2)
    drain(call)
    call.agent(dg.UserStartedSpeaking(), 3.2)
    for i in range(9):  # 180 ms of voice: not yet
        call.vaic(ac.UserStreamChunk(audio_chunk=VOICE), 3.2 + i * 0.02)
    assert not of(call.to_vaic, ac.PlayStreamStop)
    call.vaic(ac.UserStreamChunk(audio_chunk=VOICE), 3.38)  # 200 ms
    to_vaic, _, events, _ = drain(call)
    assert of(to_vaic, ac.PlayStreamStop) and of(to_vaic, ac.UserStreamSpeechStarted)
    (cut,) = of(events, ev.AgentInterruptedEvent)
    assert cut.by == "speech"


def test_loud_tells_voice_from_silence_in_both_encodings() -> None:
    for fmt in (PCM16, MULAW):
        assert is_loud(tone(fmt, 20), fmt)
        assert not is_loud(silence(fmt, 20), fmt)
        assert not is_loud(tone(fmt, 20, amplitude=300), fmt)


# --- no input -------------------------------------------------------------------------------


def test_no_input_reprompts_then_says_goodbye_and_hangs_up() -> None:
    # no agent pings: nobody here answers them, and the deadlines below are no-input's
    call = make_call(limits=Limits(agent_ping_s=0), no_input=NoInput(timeout_s=5, reprompts=2))
    ready(call)
    say(call, 0.0, "Hello!", ms=1000)
    play_all(call, 0.0, 1.0)
    drain(call)
    due = call.next_deadline()
    assert due == pytest.approx(6.0)  # from when the greeting was heard
    for count in (1, 2):
        assert due is not None
        call.tick(due)
        _, to_agent, events, _ = drain(call)
        assert to_agent == [dg.InjectAgentMessage(message="Are you still there?")]
        (action,) = of(events, ev.NoInputActionEvent)
        assert (action.action, action.count, action.source) == ("reprompt", count, "bridge")
        say(call, due, "Are you still there?", ms=500)
        play_all(call, due, due + 0.5)
        drain(call)
        due = call.next_deadline()
        assert due == pytest.approx(call.playout.play_head + 5)
    assert due is not None
    call.tick(due)
    _, to_agent, events, _ = drain(call)
    assert of(events, ev.NoInputActionEvent)[0].action == "hangup"
    (goodbye,) = to_agent
    assert "Goodbye" in goodbye.message
    call.tick(due + 0.1)
    assert call.state is CallState.ACTIVE  # the goodbye must be heard first
    assert (call.next_deadline() or 0) > due + 0.1  # and it is waited for, not polled
    say(call, due + 0.2, goodbye.message, ms=800)
    play_all(call, due + 0.2, due + 0.9)
    assert not activities(drain(call)[0])
    play_all(call, due + 0.9, due + 1.1)
    (hangup,) = activities(drain(call)[0])
    assert hangup.activity_params == {"hangupReason": "no input from the caller"}
    call.vaic(ac.SessionEnd(reason_code="bot-disconnected"), due + 2)
    assert of(drain(call)[2], ev.SessionEndEvent)[0].reason == "no_input"


def test_the_caller_speaking_starts_the_count_again_and_the_agent_thinking_pauses_it() -> None:
    call = make_call(no_input=NoInput(timeout_s=5, reprompts=1, reprompt="NO-USER-INPUT-{count}",
                                      reprompt_as="user"))
    ready(call)
    say(call, 0.0, "Hello!", ms=500)
    call.tick(5.5)
    assert drain(call)[1] == [dg.InjectUserMessage(content="NO-USER-INPUT-1")]
    call.agent(dg.UserStartedSpeaking(), 6.0)
    assert Timer.NO_INPUT not in call.timers and call.no_input.count == 0
    call.agent(dg.AgentThinking(content=""), 7.0)
    say(call, 7.5, "How can I help?", ms=500)
    ask(call, 8.5, "lookup")  # the caller waits for the agent: not the caller's silence
    assert Timer.NO_INPUT not in call.timers


def test_vaics_no_user_input_takes_over_from_the_bridges_timer() -> None:
    call = make_call(no_input=NoInput(timeout_s=5, reprompts=1))
    ready(call)
    say(call, 0.0, "Hello!", ms=500)
    activity(call, 3.0, name="noUserInput", value=1)
    _, to_agent, events, _ = drain(call)
    assert of(events, ev.NoInputActionEvent)[0].source == "vaic"
    assert of(to_agent, dg.InjectAgentMessage)
    say(call, 3.1, "Are you still there?", ms=500)
    assert Timer.NO_INPUT not in call.timers  # VAIC times it from now on
    activity(call, 9.0, name="noUserInput", value=2)
    assert of(drain(call)[2], ev.NoInputActionEvent)[0].action == "hangup"


# --- DTMF into the conversation -------------------------------------------------------------


def test_each_key_goes_to_the_agent_as_a_user_message_without_collection() -> None:
    call = make_call(dtmf=DtmfInput())
    ready(call)
    activity(call, 1.0, name="dtmf", value="5")
    _, to_agent, events, _ = drain(call)
    assert to_agent == [dg.InjectUserMessage(content="DTMF-5")]
    assert of(events, ev.DtmfCollectedEvent)[0].ended_by == "key"
    assert of(events, ev.DtmfEvent)[0].digits == "5"


def test_keys_are_collected_up_to_the_terminator_which_ends_the_turn() -> None:
    call = make_call(dtmf=DtmfInput(terminator="#", format="The caller keyed {digits}."))
    ready(call)
    activity(call, 1.0, name="DTMF", value="12")
    activity(call, 1.5, name="DTMF", value="3#")
    _, to_agent, events, _ = drain(call)
    assert to_agent == [dg.ForceEndTurn(), dg.InjectUserMessage(content="The caller keyed 123.")]
    (collected,) = of(events, ev.DtmfCollectedEvent)
    assert (collected.digits, collected.ended_by) == ("123", "terminator")
    # The inter-key timeout ends a collection too.
    activity(call, 2.0, name="DTMF", value="9")
    call.tick(5.0)
    assert of(drain(call)[2], ev.DtmfCollectedEvent)[0].ended_by == "timeout"


def test_max_digits_completes_a_collection() -> None:
    call = make_call(dtmf=DtmfInput(max_digits=4, to_agent=False))
    ready(call)
    activity(call, 1.0, name="DTMF", value="123")
    activity(call, 1.2, name="DTMF", value="45")
    _, to_agent, events, _ = drain(call)
    assert to_agent == []
    assert [(c.digits, c.ended_by) for c in of(events, ev.DtmfCollectedEvent)] == [
        ("1234", "max_digits")]
    call.tick(10.0)
    assert of(drain(call)[2], ev.DtmfCollectedEvent)[0].digits == "5"


# --- sensitive mode and the redaction hook ----------------------------------------------------

CARD = "4111111111111111"


def test_sensitive_mode_pauses_recording_masks_and_keeps_the_caller_from_the_agent() -> None:
    call = make_call(dtmf=DtmfInput(terminator="#"))
    ready(call)
    cmd.EnterSensitiveMode().apply(call, 1.0)
    to_vaic, _, events, _ = drain(call)
    assert [a.name for a in activities(to_vaic)] == ["pauseCallRecording"]
    assert of(events, ev.SensitiveModeEvent)[0].on
    # The caller's audio reaches the agent as silence.
    call.vaic(ac.UserStreamChunk(audio_chunk=VOICE), 1.1)
    assert drain(call)[1] == [bytes(len(VOICE))]
    # Keys: masked for everyone, raw only for the sensitive() block.
    activity(call, 2.0, name="DTMF", value=CARD + "#")
    to_vaic, to_agent, events, _ = drain(call)
    assert call.masking.captured == [CARD]
    assert to_agent == [dg.ForceEndTurn(), dg.InjectUserMessage(content="DTMF-[redacted]")]
    everything = msgspec.json.encode([events, to_vaic, to_agent])
    assert CARD.encode() not in everything and b"[redacted]" in everything
    # What the caller says meanwhile (a turn begun in the mode) is masked, even if its
    # text comes after the mode ended.
    call.agent(dg.UserStartedSpeaking(), 3.0)
    cmd.LeaveSensitiveMode().apply(call, 3.5)
    call.agent(dg.ConversationText(role="user", content=f"my card is {CARD}"), 4.0)
    to_vaic, _, events, _ = drain(call)
    assert [a.name for a in activities(to_vaic)] == ["resumeCallRecording"]
    assert of(events, ev.ConversationTextEvent)[0].content == "[redacted]"
    (recognition,) = of(to_vaic, ac.UserStreamSpeechRecognition)
    assert recognition.alternatives[0].text == "[redacted]"
    # After it, the caller is heard again as they are.
    call.vaic(ac.UserStreamChunk(audio_chunk=VOICE), 4.1)
    assert drain(call)[1] == [VOICE]
    call.agent(dg.UserStartedSpeaking(), 5.0)
    call.agent(dg.ConversationText(role="user", content="thanks"), 5.5)
    assert [t[1] for t in call.transcript.texts()] == ["[redacted]", "thanks"]
    call.vaic(ac.SessionEnd(reason_code="client-disconnected"), 6.0)
    (end,) = of(drain(call)[2], ev.SessionEndEvent)
    assert CARD.encode() not in end.record.to_json()


def test_sensitive_mode_masks_vaics_own_activities_and_survives_a_take_over() -> None:
    call = make_call()
    ready(call)
    cmd.EnterSensitiveMode(pause_recording=False, keep_audio_from_agent=False).apply(call, 1.0)
    assert activities(drain(call)[0]) == []  # no recording pause asked for
    call.vaic(ac.UserStreamChunk(audio_chunk=VOICE), 1.1)
    assert drain(call)[1] == [VOICE]
    activity(call, 2.0, name="DTMF", value="1234")
    activity(call, 2.1, name="speechHypothesis", value="my pin is 1234")
    call.vaic(ac.Activities(activities=({"type": "message", "text": "1234"},)), 2.2)
    _, _, events, _ = drain(call)
    assert b"1234" not in msgspec.json.encode(events)
    assert call.masking.captured == ["1234"]  # without DtmfInput, each activity is one input
    shared = msgspec.json.decode(msgspec.json.encode(call.shared()), type=CallShared)
    other = Call(call.initiate, session_id="s-2", media_format=PCM16, agent_config=AGENT,
                 now=3.0, options=call.options, taken_over=(1, [], shared))
    assert other.masking.on
    other.vaic(ac.Activities(activities=({"type": "event", "name": "DTMF", "value": "99"},)),
               3.5)
    assert b"99" not in msgspec.json.encode(other.events)


def test_the_redaction_hook_runs_over_both_sides_of_the_transcript() -> None:
    call = make_call(redact=redact_card_numbers)
    ready(call)
    call.agent(dg.ConversationText(role="user", content="it is 4111 1111 1111 1111"), 1.0)
    call.agent(dg.ConversationText(role="assistant", content="So 4111-1111-1111-1111?"), 1.1)
    call.agent(dg.ConversationText(role="user", content="order 1234567890123 please"), 1.2)
    to_vaic, _, events, _ = drain(call)
    texts = [e.content for e in of(events, ev.ConversationTextEvent)]
    assert texts == ["it is [card]", "So [card]?", "order 1234567890123 please"]  # not Luhn
    assert [m.alt_text for m in of(to_vaic, ac.PlayStreamStart)] in ([], ["So [card]?"])
    assert [t[1] for t in call.transcript.texts()] == texts
    assert [t[3] for t in call.transcript.texts()] == [1.0, 1.1, 1.2]  # when, for the record


def test_function_calls_are_kept_redacted_while_the_handler_gets_them_as_sent() -> None:
    call = make_call(redact=redact_card_numbers)
    ready(call)
    asked = '{"card": "4111 1111 1111 1111", "amount": 12, "again": 4111111111111111}'
    call.agent(dg.FunctionCallRequest(functions=(
        dg.FunctionCall(id="f1", name="charge", arguments=asked),)), 1.0)
    ((raw, seen),) = call.observed  # the observers (the live view among them): as kept
    assert msgspec.json.decode(seen.functions[0].arguments) == {  # type: ignore[attr-defined]
        "card": "[card]", "amount": 12, "again": "[card]"}
    (request,) = of(drain(call)[2], ev.FunctionCallRequestEvent)
    assert request is raw and request.functions[0].arguments == asked  # the handler acts on it
    call.send_to_agent(dg.FunctionCallResponse(
        id="f1", name="charge", content='{"charged": "4111-1111-1111-1111", "ok": true}'), 1.5)
    assert drain(call)[1][0].content.startswith('{"charged": "4111')  # the agent gets it as sent
    # A server-side function's record, as Deepgram's History gives it.
    call.agent(dg.History(function_calls=(dg.FunctionCallRecord(
        id="f2", name="lookup", client_side=False, arguments='{"q": "4111111111111111"}',
        response="card 4111 1111 1111 1111 on file"),)), 2.0)
    call.agent(dg.ServerFunctionCallResponse(
        id="f2", name="lookup", content="on file: 4111111111111111"), 2.1)
    assert [seen.content for _, seen in call.observed[1:]] == [  # type: ignore[attr-defined]
        "on file: [card]"]
    # The history (so the shared store and a new agent connection) has them redacted.
    call.agent_lost(2.5, "connection lost")
    call.agent_connected(2.6)
    call.agent(dg.Welcome(request_id="r2"), 2.7)
    (settings,) = [m for m in drain(call)[1] if isinstance(m, dg.Settings)]
    context = settings.agent.context
    assert context is not None
    records = [r for m in context.messages for r in m.function_calls or ()]
    assert [(r.name, msgspec.json.decode(r.arguments), r.response) for r in records] == [
        ("charge", {"card": "[card]", "amount": 12, "again": "[card]"},
         '{"charged":"[card]","ok":true}'),
        ("lookup", {"q": "[card]"}, "card [card] on file"),
    ]
    assert b"4111" not in msgspec.json.encode(call.transcript.entries)


def test_in_sensitive_mode_a_function_calls_arguments_are_kept_masked() -> None:
    call = make_call()  # no redaction hook: the mode alone masks
    ready(call)
    cmd.EnterSensitiveMode(pause_recording=False).apply(call, 1.0)
    call.agent(dg.FunctionCallRequest(functions=(dg.FunctionCall(
        id="f1", name="verify", arguments='{"pin": "1234", "tries": 1, "last": null}'),)), 1.1)
    (request,) = of(drain(call)[2], ev.FunctionCallRequestEvent)
    assert request.functions[0].args == {"pin": "1234", "tries": 1, "last": None}
    ((_, seen),) = call.observed
    assert seen.functions[0].args == {  # type: ignore[attr-defined]
        "pin": "[redacted]", "tries": "[redacted]", "last": None}
    cmd.LeaveSensitiveMode().apply(call, 1.2)  # masked as it was asked, answered after
    call.send_to_agent(dg.FunctionCallResponse(id="f1", name="verify", content="verified"), 1.5)
    (entry,) = [e for e in call.transcript.entries if e.function_calls]
    record = entry.function_calls[0]  # type: ignore[index]
    assert msgspec.json.decode(record.arguments) == {
        "pin": "[redacted]", "tries": "[redacted]", "last": None}
    assert record.response == "verified"


def test_in_sensitive_mode_observers_get_a_telephony_tools_request_masked() -> None:
    call = make_call(tools=TOOLS)
    ready(call)
    cmd.EnterSensitiveMode(pause_recording=False).apply(call, 1.0)
    ask(call, 1.1, "send_dtmf", digits="4111")
    (called,) = of(drain(call)[2], ev.ToolCalledEvent)
    assert called.request.arguments == {"digits": "4111"} and called.request.target == "4111"
    ((raw, seen),) = call.observed
    assert raw is called
    assert seen.request.arguments == {"digits": "[redacted]"}  # type: ignore[attr-defined]
    assert seen.request.target == "[redacted]"  # type: ignore[attr-defined]


def test_sensitive_mode_needs_a_live_call() -> None:
    call = make_call()
    call.end(1.0, "shutdown")
    with pytest.raises(RuntimeError):
        cmd.EnterSensitiveMode().apply(call, 2.0)
    cmd.LeaveSensitiveMode().apply(call, 2.0)  # nothing to undo: no error


# --- the README's examples, as written ---------------------------------------------------------


def readme_blocks() -> list[str]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Contact-centre behaviours"):text.index("## Authentication")]
    return [part.split("```", 1)[0] for part in section.split("```python\n")[1:]]


def test_the_readmes_examples_build_what_they_say() -> None:
    import ast

    import acdg_asgi

    built: list[dict[str, Any]] = []
    blocks = readme_blocks()
    assert len(blocks) >= 6
    for block in blocks:
        compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if "await " in block:
            continue  # inside a handler: compiled only
        namespace: dict[str, Any] = {name: getattr(acdg_asgi, name) for name in acdg_asgi.__all__}
        namespace.update(BridgeApp=lambda **kw: built.append(kw), open_now=lambda: True,
                         case_id="42")
        # the names are all there already, and BridgeApp records what it is given
        exec("\n".join(line for line in block.splitlines()
                       if not line.startswith("from acdg_asgi import")), namespace)
        if "check" in namespace:  # the hook example: a tools config that uses it
            assert isinstance(namespace["tools"], TelephonyTools)
    tools = built[0]["tools"]
    assert tools.names == ("end_call", "transfer_call", "send_dtmf", "play_url")
    assert next(b for b in built if "interruption" in b)["interruption"].greeting is False
    assert {k for b in built for k in b} >= {"tools", "interruption", "no_input", "dtmf"}


# --- through the wire's codecs, with CallPair (which also fails a call that asks to be --------
# --- woken without end) --------------------------------------------------------------------------


def test_end_call_over_the_codecs_and_never_a_busy_wake() -> None:
    pair = CallPair(agent=AGENT, options=CallOptions(tools=TOOLS))
    pair.agent.ready()
    assert pair.agent.settings is not None and isinstance(pair.agent.settings.agent,
                                                          dg.AgentSettings)
    pair.agent.send(dg.ConversationText(role="assistant", content="Goodbye!"))
    pair.agent.send(dg.FunctionCallRequest(functions=(dg.FunctionCall(
        id="fc1", name="end_call"),)))
    pair.advance(1.0)  # the goodbye's audio has not come: nothing, and no busy wake
    assert not [a for m in pair.vaic.take() if isinstance(m, ac.OutboundActivities)
                for a in m.activities]
    pair.agent.audio(bytes(PCM16.frame_bytes(500)))
    pair.agent.send(dg.AgentAudioDone())
    pair.advance(1.0)
    hangups = [a for m in pair.vaic.take() if isinstance(m, ac.OutboundActivities)
               for a in m.activities if a.name == "hangup"]
    assert len(hangups) == 1


def test_no_input_and_keys_over_the_codecs() -> None:
    pair = CallPair(agent=AGENT, options=CallOptions(
        no_input=NoInput(timeout_s=2, reprompts=0), dtmf=DtmfInput(terminator="#")))
    pair.agent.ready()
    pair.vaic.send(ac.Activities(activities=({"type": "event", "name": "DTMF",
                                              "value": "42#"},)))
    assert pair.agent.take()[-1] == dg.InjectUserMessage(content="DTMF-42")
    pair.agent.send(dg.ConversationText(role="assistant", content="Hello!"))
    pair.agent.audio(bytes(PCM16.frame_bytes(300)))
    pair.agent.send(dg.AgentAudioDone())
    pair.advance(3.0)  # silent: the goodbye is asked for, and waited for without polling
    assert [m for m in pair.agent.take() if isinstance(m, dg.InjectAgentMessage)]
    pair.advance(5.0)
    pair.agent.send(dg.ConversationText(role="assistant", content="Goodbye."))
    pair.agent.audio(bytes(PCM16.frame_bytes(300)))
    pair.agent.send(dg.AgentAudioDone())
    pair.advance(1.0)
    assert pair.call.state is CallState.ENDING


def test_sensitive_mode_over_the_codecs() -> None:
    pair = CallPair(agent=AGENT)
    pair.agent.ready()
    pair.command(cmd.EnterSensitiveMode().apply)
    pair.vaic.send(ac.Activities(activities=({"type": "event", "name": "DTMF",
                                              "value": CARD},)))
    pair.vaic.chunk(VOICE)
    taken = pair.take()
    assert taken.agent[-1] == bytes(len(VOICE))  # silence, as the agent hears it
    assert CARD.encode() not in msgspec.json.encode([taken.events, taken.vaic])
    assert pair.call.masking.captured == [CARD]
