"""Call control in the sans-I/O core: transfers with an outcome, mid-call changes that
survive a new agent connection, the call's details before the agent, participants,
VAIC's notifications, Deepgram's newer messages, and what the caller heard. No sockets:
each call is a :class:`~acdg_asgi.testing.CallPair`, its clock moved by hand."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from acdg_asgi import events as ev
from acdg_asgi.audio import FORMATS
from acdg_asgi.call import CallState, CloseAgent, CloseVaic, ConnectAgent, Measure
from acdg_asgi.call import commands as cmd
from acdg_asgi.call.state import CallShared, ChooseAgent, PendingTransfer, Timer
from acdg_asgi.config import (
    AgentConfig,
    Limits,
    Participants,
    Playout,
    VaicSessionParams,
)
from acdg_asgi.errors import ConfigError, LocalProtocolError
from acdg_asgi.policies import CallOptions
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.testing import CallPair

PCM16 = FORMATS["raw/lpcm16"]
FRAME = bytes(640)  # 20 ms at 16 kHz
AGENT_ID = "0b0e9c1e-3c1f-4bbd-9a3b-5a4f3c2d1e0f"
SESSION_ID = "session-conv-1"  # CallPair's, for conversation conv-1
THINK = dg.ThinkSettings(provider={"type": "open_ai", "model": "gpt-4o-mini"},
                         prompt="You are Acme's agent.")
SETTINGS = dg.AgentSettings(
    listen=dg.ListenSettings(provider={"type": "deepgram", "version": "v2",
                                       "model": "flux-general-multi", "language_hints": ["en"]}),
    think=THINK,
    speak=dg.SpeakSettings(provider={"type": "deepgram", "model": "aura-2-thalia-en"}),
    greeting="Hello!",
)
START: dict[str, Any] = {
    "name": "start", "language": "en-US",
    "parameters": {"caller": "+15551230000", "callee": "+18005550100",
                   "callerDisplayName": "Alice", "X-Account": "A-42",
                   "dialoutMetadata": {"campaign": "renewals"}},
}


DEFAULT = AgentConfig(agent=SETTINGS)


def make_pair(agent: AgentConfig | None = DEFAULT, **kwargs: Any) -> CallPair:
    """This module's call: its agent (``None``: chosen by a factory), a 100 ms lead."""
    return CallPair(agent=agent, factory=agent is None,
                    playout=Playout(lead_ms=100, chunk_ms=20), **kwargs)


def activity(pair: CallPair, **fields: Any) -> None:
    """An ``event`` activity from VAIC."""
    pair.vaic.send(ac.Activities(activities=({"type": "event", **fields},)))


def connect(pair: CallPair) -> dg.Settings:
    """A new agent connection's handshake; the Settings it was sent (what reached the
    agent before ``SettingsApplied`` is taken, what comes after is left)."""
    pair.agent.connect()
    (settings,) = [m for m in pair.agent.take() if isinstance(m, dg.Settings)]
    pair.agent.send(dg.SettingsApplied())
    return settings


def ready(pair: CallPair) -> dg.Settings:
    activity(pair, **START)
    settings = connect(pair)
    pair.take()
    return settings


def of(events: list[Any], cls: type[ev.Event]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def play(pair: CallPair, until: float) -> float:
    """Tick the call at each deadline up to the time ``until``, as ``advance`` does, and
    say when the last tick was (the clock stays there)."""
    last = pair.now
    while (deadline := pair.call.next_deadline()) is not None and deadline <= until:
        at = pair.step()
        assert at is not None
        last = at
    return last


# --- transfers ------------------------------------------------------------------------------


def transfer(pair: CallPair, **kwargs: Any) -> ac.Activity:
    pair.command(cmd.build(cmd.Transfer, {"destination": "sip:queue@pbx", **kwargs}).apply)
    (sent,) = [m for m in pair.take().vaic if isinstance(m, ac.OutboundActivities)]
    (act,) = sent.activities
    return act


def test_a_failed_transfer_gives_the_call_back_to_the_agent() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    act = transfer(pair, transfer_sip_headers=[{"name": "X-Case", "value": "7"}],
                   referred_by_url="sip:bot@acme.example")
    assert act.name == "transfer" and act.activity_params == {
        "transferTarget": "sip:queue@pbx", "transferSipHeaders": [{"name": "X-Case", "value": "7"}],
        "transferReferredByURL": "sip:bot@acme.example"}
    call = pair.call
    assert call.state is CallState.TRANSFERRING and call.link.ready  # the agent stays up
    assert Timer.TRANSFER in call.timers
    # Meanwhile the caller's audio is not the agent's business.
    pair.advance(0.5)
    pair.agent.take()
    pair.vaic.chunk(FRAME)
    assert pair.agent.take() == []
    pair.advance(6.5)
    pair.agent.take()  # the keep-alives meanwhile
    activity(pair, name="transferStatus",
             value={"status": "failed", "reasonCode": "busy", "reason": "486 Busy Here"})
    _, to_agent, events, actions = pair.take()
    assert call.state is CallState.ACTIVE and CloseAgent() not in actions
    (failed,) = of(events, ev.TransferFailedEvent)
    assert (failed.destination, failed.reason_code, failed.reason) == (
        "sip:queue@pbx", "busy", "486 Busy Here")
    (told,) = to_agent
    assert isinstance(told, dg.InjectAgentMessage) and told.behavior == "interrupt"
    assert "the line is busy" in told.message
    # The agent speaks again, and the caller's audio reaches it again.
    pair.advance(0.1)
    pair.agent.send(dg.ConversationText(role="assistant", content=told.message))
    pair.agent.audio(FRAME * 5)
    assert any(isinstance(m, ac.PlayStreamStart) for m in pair.vaic.take())
    pair.advance(0.1)
    pair.agent.take()
    pair.vaic.chunk(FRAME)
    assert pair.agent.take() == [FRAME]
    # ... and the application may try again, once the agent has said it.
    pair.agent.send(dg.AgentAudioDone())
    pair.command(cmd.Transfer(destination="sip:other@pbx").apply)
    pair.advance(0.8)
    assert call.state is CallState.TRANSFERRING
    assert call.transfer_pending == PendingTransfer(destination="sip:other@pbx")


def test_an_answered_transfer_ends_the_call_with_reason_transfer() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    transfer(pair)
    pair.advance(4.0)
    activity(pair, name="transferStatus", value={"status": "answered"})
    _, _, events, actions = pair.take()
    assert of(events, ev.TransferAnsweredEvent)[0].destination == "sip:queue@pbx"
    assert pair.call.state is CallState.ENDING and CloseAgent() in actions
    pair.advance(0.2)
    pair.vaic.end(reason_code="transferred", reason="Transferred")
    (end,) = of(pair.take().events, ev.SessionEndEvent)
    assert (end.reason, end.reason_code, end.detail) == ("transfer", "transferred", "sip:queue@pbx")
    assert end.meaning == "the call was transferred"


def test_vaic_without_regain_control_ends_the_transferred_call_with_session_end() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    transfer(pair)
    pair.advance(2.0)
    pair.vaic.send(ac.SessionEnd(reason_code="transferred"))
    (end,) = of(pair.take().events, ev.SessionEndEvent)
    assert end.reason == "transfer" and end.detail == "sip:queue@pbx"


def test_a_transfer_vaic_never_reports_on_ends_after_the_timeout() -> None:
    pair = make_pair(limits=Limits(transfer_timeout_s=20))
    ready(pair)
    pair.advance(1.0)
    transfer(pair)
    pair.advance(20.0)
    _, _, events, actions = pair.take()
    (end,) = of(events, ev.SessionEndEvent)
    assert end.reason == "transfer" and "no outcome" in (end.detail or "")
    assert CloseVaic(reason="transfer") in actions


def test_a_transfer_waits_for_the_last_words_and_refuses_a_second_one() -> None:
    pair = make_pair()
    ready(pair)
    pair.agent.send(dg.ConversationText(role="assistant", content="Let me connect you."))
    pair.agent.audio(bytes(PCM16.frame_bytes(400)))
    pair.agent.send(dg.AgentAudioDone())
    pair.take()
    pair.command(cmd.Transfer(destination="sip:queue@pbx").apply)
    assert pair.call.state is CallState.ACTIVE  # the goodbye is still playing
    pair.advance(0.1)
    with pytest.raises(LocalProtocolError, match="already under way"):
        pair.command(cmd.Transfer(destination="sip:other@pbx").apply)
    now = play(pair, 1.0)
    assert pair.call.state is CallState.TRANSFERRING and now == pytest.approx(0.4)


def test_a_transfer_survives_a_resume_and_a_take_over() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    transfer(pair)
    pair.advance(1.0)
    pair.vaic.lose()
    assert pair.call.state is CallState.DETACHED
    pair.advance(0.5)
    pair.vaic.resume()
    assert pair.call.state is CallState.TRANSFERRING
    shared = msgspec.json.decode(msgspec.json.encode(pair.call.shared()), type=CallShared)
    assert shared.transfer == PendingTransfer(destination="sip:queue@pbx")
    # Another instance takes it over: still waiting, and a failure comes back to its agent.
    other = make_pair(taken_over=(1, list(pair.call.transcript.entries), shared))
    assert other.call.state is CallState.TRANSFERRING
    other.advance(3.0)
    connect(other)
    other.advance(1.0)
    activity(other, name="transferStatus", value={"status": "failed", "reasonCode": "no-answer"})
    _, to_agent, events, _ = other.take()
    assert other.call.state is CallState.ACTIVE and of(events, ev.TransferFailedEvent)
    told = to_agent[0]
    assert isinstance(told, dg.InjectAgentMessage) and "nobody answered" in told.message


def test_the_failure_message_is_configurable_or_left_to_the_application() -> None:
    pair = make_pair(options=CallOptions(transfer_failed_message=None))
    ready(pair)
    pair.advance(1.0)
    transfer(pair)
    pair.advance(1.0)
    activity(pair, name="transferStatus", value={"status": "failed", "reasonCode": "declined"})
    assert pair.agent.take() == []
    custom = CallOptions(transfer_failed_message="No luck ({reason}).")
    assert custom.transfer_failed_text("declined", None) == "No luck (the call was declined)."


def test_hanging_up_during_a_transfer_ends_the_wait() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    transfer(pair)
    pair.advance(1.0)
    pair.command(cmd.EndSession(reason="done").apply)
    assert pair.call.state is CallState.ENDING and pair.call.transfer_pending is None


# --- mid-call changes survive a new agent connection -------------------------------------------


def test_updates_are_folded_into_the_settings_of_a_reconnect() -> None:
    seeded = (dg.History(role="user", content="(earlier call) my order is late"),)
    config = AgentConfig(agent=msgspec.structs.replace(SETTINGS, context=dg.Context(seeded)))
    pair = make_pair(config)
    ready(pair)
    pair.advance(0.1)
    pair.agent.send(dg.ConversationText(role="assistant", content="Hello!"))
    pair.advance(0.4)
    for command in (
        cmd.UpdatePrompt(prompt="Answer in Spanish."),
        cmd.build(cmd.UpdateSpeak, {"speak": {"provider": {"type": "deepgram",
                                                          "model": "aura-2-celeste-es"}}}),
        cmd.build(cmd.UpdateListen, {"listen": {"provider": {"type": "deepgram", "version": "v2",
                                                            "model": "flux-general-multi",
                                                            "eot_threshold": 0.8}}}),
        cmd.build(cmd.UpdateThinkLive, {"think_live": {"provider": {"type": "deepgram",
                                                                   "version": "v1"}}}),
    ):
        pair.command(command.apply)
    sent = pair.agent.take()
    assert [type(m) for m in sent] == [dg.UpdatePrompt, dg.UpdateSpeak, dg.UpdateListen,
                                       dg.UpdateThinkLive]
    pair.advance(0.5)
    pair.agent.lose("dropped")
    pair.advance(0.1)
    settings = connect(pair)
    agent = settings.agent
    assert isinstance(agent, dg.AgentSettings) and agent.greeting is None
    assert isinstance(agent.think, dg.ThinkSettings)
    assert agent.think.prompt == "You are Acme's agent.\nAnswer in Spanish."
    assert isinstance(agent.speak, dg.SpeakSettings)
    assert agent.speak.provider["model"] == "aura-2-celeste-es"
    assert agent.listen is not None and agent.listen.provider == {
        "type": "deepgram", "version": "v2", "model": "flux-general-multi", "eot_threshold": 0.8}
    assert agent.think_live == dg.ThinkLiveSettings()
    assert agent.context is not None
    assert agent.context.messages == (*seeded, dg.History(role="assistant", content="Hello!"))
    assert pair.agent.take() == []  # all of it went in the Settings


def test_an_update_while_the_agent_reconnects_is_carried_by_the_next_settings() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    pair.agent.lose("dropped")
    pair.command(cmd.UpdateThink(think=msgspec.structs.replace(THINK, prompt="Be brief.")).apply)
    _, _, events, _ = pair.take()
    assert not [e for e in events if isinstance(e, ev.WarningEvent)
                and e.code == "AGENT_NOT_READY"]
    pair.advance(0.1)
    settings = connect(pair)
    assert isinstance(settings.agent, dg.AgentSettings)
    assert isinstance(settings.agent.think, dg.ThinkSettings)
    assert settings.agent.think.prompt == "Be brief."
    # An update sent between Settings and SettingsApplied goes right after it.
    pair.advance(0.9)
    pair.agent.lose("dropped")
    pair.advance(0.0)
    pair.agent.connect()
    pair.take()
    pair.command(cmd.UpdatePrompt(prompt="Mention the sale.").apply)
    pair.advance(0.1)
    pair.agent.send(dg.SettingsApplied())
    assert pair.agent.take() == [dg.UpdatePrompt(prompt="Mention the sale.")]


def test_a_stored_agent_configuration_gets_its_updates_again_after_settings_applied() -> None:
    pair = make_pair(AgentConfig(agent=AGENT_ID))
    ready(pair)
    pair.advance(0.5)
    pair.command(cmd.UpdatePrompt(prompt="Answer in Spanish.").apply)
    pair.advance(0.1)
    pair.agent.send(dg.ConversationText(role="user", content="hola"))
    pair.take()
    pair.advance(0.4)
    pair.agent.lose("dropped")
    pair.advance(0.1)
    pair.agent.connect()
    to_agent, events = pair.take()[1:3]
    (settings,) = to_agent
    assert isinstance(settings, dg.Settings) and settings.agent == AGENT_ID
    assert b'"agent":"' + AGENT_ID.encode() + b'"' in dg.encode(settings)
    assert "AGENT_HISTORY_NOT_REPLAYED" in [e.code for e in of(events, ev.WarningEvent)]
    pair.advance(0.1)
    pair.agent.send(dg.SettingsApplied())
    assert pair.agent.take() == [dg.UpdatePrompt(prompt="Answer in Spanish.")]


def test_updates_keep_only_what_a_new_connection_needs() -> None:
    pair = make_pair()
    for prompt in ("one", "two"):
        pair.command(cmd.UpdatePrompt(prompt=prompt).apply)
    pair.command(cmd.UpdateThink(think=THINK).apply)  # replaces the think config, prompt and all
    pair.command(cmd.UpdatePrompt(prompt="three").apply)
    for hints in (["es"], None):
        provider: dict[str, Any] = {"type": "deepgram", "version": "v2",
                                    "model": "flux-general-multi"}
        if hints:
            provider["language_hints"] = hints
        pair.command(cmd.UpdateListen(listen=dg.ListenSettings(provider=provider)).apply)
    updates = pair.call.configuration.updates
    assert [type(u) for u in updates] == [dg.UpdateThink, dg.UpdatePrompt, dg.UpdateListen]
    listen = updates[-1]
    assert isinstance(listen, dg.UpdateListen) and "language_hints" not in listen.listen.provider


def test_agent_config_accepts_an_id_and_refuses_what_is_not_one() -> None:
    assert AgentConfig(agent=AGENT_ID).stored
    with pytest.raises(ConfigError, match="neither agent settings nor the id"):
        AgentConfig(agent="You are a helpful agent.")
    with pytest.raises(ConfigError, match="owns them"):
        AgentConfig(extra={"audio": {}})


def test_settings_extra_reaches_deepgram_as_given() -> None:
    config = AgentConfig(agent=SETTINGS, extra={"agent": {"think": {"new_knob": 3}},
                                                "future_flag": True})
    wire = msgspec.json.decode(dg.encode(config.settings(PCM16.deepgram_audio())))
    assert wire["future_flag"] is True and "extra" not in wire
    assert wire["agent"]["think"]["new_knob"] == 3
    assert wire["agent"]["think"]["prompt"] == "You are Acme's agent."


# --- the call's details before the agent ---------------------------------------------------


def test_start_carries_the_details_to_session_start_and_the_record() -> None:
    pair = make_pair()
    pair.advance(0.01)
    activity(pair, **START)
    (start,) = of(pair.take().events, ev.SessionStartEvent)
    details = start.details
    assert details is not None
    assert (details.caller, details.callee, details.caller_display_name) == (
        "+15551230000", "+18005550100", "Alice")
    assert details.sip_headers == {"X-Account": "A-42"}
    assert details.dialout_metadata == {"campaign": "renewals"} and details.language == "en-US"
    pair.advance(0.99)
    assert not of(pair.take().events, ev.SessionStartEvent)  # once only
    pair.advance(1.0)
    pair.command(lambda call, now: call.end(now, "ended"))
    (end,) = of(pair.take().events, ev.SessionEndEvent)
    assert end.record is not None and end.record.details == details


def test_a_factory_waits_for_start_while_the_agent_connection_opens() -> None:
    pair = make_pair(None)
    assert pair.take().actions == [ConnectAgent(attempt=1)]
    pair.advance(0.05)
    pair.agent.connect()
    assert pair.agent.take() == []  # no Settings before the agent is chosen
    pair.advance(0.03)
    activity(pair, **START)
    (choose,) = pair.take().actions
    assert isinstance(choose, ChooseAgent) and choose.details is not None
    assert choose.details.callee == "+18005550100"
    pair.advance(0.02)
    pair.command(lambda call, now: call.agent_chosen(AgentConfig(agent=SETTINGS), now))
    (settings,) = pair.agent.take()
    assert isinstance(settings, dg.Settings) and settings.agent == SETTINGS


def test_without_start_the_factory_runs_after_the_wait() -> None:
    pair = make_pair(None, limits=Limits(start_wait_s=0.3))
    pair.take()
    pair.advance(0.3)
    _, _, events, actions = pair.take()
    assert of(events, ev.SessionStartEvent)[0].details is None
    assert actions == [ChooseAgent(details=None)]
    pair.advance(0.1)
    pair.command(lambda call, now: call.agent_choice_failed(now, "RuntimeError: no tenant"))
    to_vaic, _, events, _ = pair.take()
    assert of(events, ev.BridgeErrorEvent)[0].code == "AGENT_CONFIG"
    hangup = to_vaic[-1]
    assert isinstance(hangup, ac.OutboundActivities)
    assert hangup.activities[0].activity_params == {
        "hangupReason": "no agent configuration for this call"}


# --- participants -----------------------------------------------------------------------------


def test_only_the_callers_stream_reaches_the_agent() -> None:
    pair = make_pair()
    activity(pair, **{**START, "parameters": {**START["parameters"], "participants": [
        {"participant": "agent", "uriUser": "4001", "displayName": "Bob"},
        {"participant": "customer", "uriUser": "+15551230000"}]}})
    connect(pair)
    pair.take()
    assert pair.call.hearing == "customer"
    pair.advance(0.1)
    pair.vaic.send(ac.UserStreamStart(participant="agent"))
    pair.vaic.send(ac.UserStreamStart(participant="customer"))
    to_vaic, _, events, _ = pair.take()
    assert to_vaic == [ac.UserStreamStarted(participant="agent"),
                       ac.UserStreamStarted(participant="customer")]
    pair.advance(0.1)
    for _ in range(3):
        pair.vaic.send(ac.UserStreamChunk(audio_chunk=bytes([1]) * 640, participant="agent"))
        pair.vaic.send(ac.UserStreamChunk(audio_chunk=bytes([2]) * 640, participant="customer"))
    assert pair.take().agent == [bytes([2]) * 640] * 3
    (ignored,) = of(events, ev.ParticipantIgnoredEvent)
    assert (ignored.participant, ignored.hearing) == ("agent", "customer")
    assert pair.call.stats.other_participant_frames == 3
    pair.advance(0.1)
    pair.agent.send(dg.UserStartedSpeaking())
    assert ac.UserStreamSpeechStarted(participant="customer") in pair.take().vaic


def test_without_participants_in_start_the_first_stream_decides() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(0.1)
    pair.vaic.send(ac.UserStreamChunk(audio_chunk=FRAME, participant="p1"))
    pair.vaic.send(ac.UserStreamChunk(audio_chunk=FRAME, participant="p2"))
    pair.vaic.chunk(FRAME)  # a plain stream always reaches it
    assert pair.agent.take() == [FRAME, FRAME]
    assert pair.call.hearing == "p1" and pair.call.ignored == ["p2"]


def test_play_streams_can_target_a_participant_and_player() -> None:
    pair = make_pair(options=CallOptions(participants=Participants(
        agent_hears="customer", play_to="customer", target_player="ToCustomer")))
    ready(pair)
    pair.advance(0.1)
    pair.agent.audio(FRAME * 5)
    start = pair.vaic.take()[0]
    assert isinstance(start, ac.PlayStreamStart)
    assert (start.participant, start.target_player) == ("customer", "ToCustomer")
    assert b'"targetPlayer":"ToCustomer"' in ac.encode(start)


# --- VAIC's notifications --------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "expected"), [
    ({"name": "noUserInput", "value": 2}, ev.NoUserInputEvent(
        session_id=SESSION_ID, conversation_id="conv-1", at=1.0, count=2)),
    ({"name": "playUrlFailed", "value": {"reason": "404", "playUrlUrl": "https://x/a.wav",
                                         "selfGenerated": False}},
     ev.PlayUrlFailedEvent(session_id=SESSION_ID, conversation_id="conv-1", at=1.0,
                           url="https://x/a.wav", reason="404", self_generated=False)),
    ({"name": "playFinished"}, ev.PlayFinishedEvent(session_id=SESSION_ID,
                                                    conversation_id="conv-1", at=1.0)),
    ({"name": "speechHypothesis", "value": "i want", "parameters": {"participant": "c"}},
     ev.SpeechHypothesisEvent(session_id=SESSION_ID, conversation_id="conv-1", at=1.0,
                              text="i want", participant="c")),
    ({"name": "voiceDetected"}, ev.VoiceDetectedEvent(session_id=SESSION_ID,
                                                      conversation_id="conv-1", at=1.0)),
    ({"name": "silenceDetected"}, ev.SilenceDetectedEvent(
        session_id=SESSION_ID, conversation_id="conv-1", at=1.0)),
    ({"name": "agentConnected", "value": True}, ev.AgentConnectedEvent(
        session_id=SESSION_ID, conversation_id="conv-1", at=1.0, value=True)),
    ({"name": "dialoutInitiated",
      "value": {"outboundTarget": "+1555", "dialoutMetadata": {"a": 1}}},
     ev.DialoutInitiatedEvent(session_id=SESSION_ID, conversation_id="conv-1", at=1.0,
                              outbound_target="+1555", dialout_metadata={"a": 1})),
    ({"name": "dtmf", "value": "12#"}, ev.DtmfEvent(session_id=SESSION_ID,
                                                    conversation_id="conv-1", at=1.0,
                                                    digits="12#")),
])
def test_each_notification_is_typed_and_still_raw(fields: dict[str, Any], expected: ev.Event
                                                 ) -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    activity(pair, **fields)
    raw, typed = pair.take().events
    assert isinstance(raw, ev.InboundActivityEvent) and raw.activity["name"] == fields["name"]
    assert typed == expected


def test_a_malformed_notification_is_read_tolerantly() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    activity(pair, name="noUserInput", value={"odd": True})
    activity(pair, name="transferStatus", value="nonsense")
    events = pair.take().events
    assert of(events, ev.NoUserInputEvent)[0].count is None
    assert [e.code for e in of(events, ev.WarningEvent)] == ["PROTOCOL_ERROR"]


def test_session_end_reason_codes_have_a_meaning() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    pair.vaic.end(reason_code="machine-detected", reason="AMD")
    (end,) = of(pair.take().events, ev.SessionEndEvent)
    assert end.machine_detected and end.meaning == ev.END_REASON_CODES["machine-detected"]
    assert end.record is not None and end.record.meaning == end.meaning


def test_vaic_session_params_go_out_at_call_start() -> None:
    pair = make_pair(options=CallOptions(vaic_session=VaicSessionParams(
        barge_in=True, send_events_to_bot=("noUserInput", "transferStatus"),
        user_no_input_timeout_ms=8000, extra={"playUrlFailureHandling": "notify-bot"})))
    accepted, config = pair.take().vaic
    assert isinstance(accepted, ac.SessionAccepted)
    wire = msgspec.json.decode(ac.encode(config))
    assert wire == {"type": "activities", "activities": [{"type": "event", "name": "config",
        "sessionParams": {"bargeIn": True, "sendEventsToBot": ["noUserInput", "transferStatus"],
                          "userNoInputTimeoutMS": 8000,
                          "playUrlFailureHandling": "notify-bot"}}]}


# --- Deepgram's newer messages -------------------------------------------------------------------


def test_latency_report_drives_the_measures_and_the_record() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    pair.agent.send(dg.AgentStartedSpeaking(total_latency=9.0, tts_latency=1.0, ttt_latency=8.0))
    pair.advance(0.5)
    pair.agent.send(dg.LatencyReport(stt_latency=0.1, ttt_token_latency=0.3,
                                     ttt_text_latency=0.35, ttt_tool_latency=0.2,
                                     ttt_thinking_latency=0.25, tts_latency=0.15,
                                     total_latency=0.6))
    measures = dict(pair.measures)
    assert measures[Measure.AGENT_RESPONSE_LATENCY] == 0.6  # not AgentStartedSpeaking's 9 s
    assert measures[Measure.AGENT_TTT_TOOL_LATENCY] == 0.2
    assert measures[Measure.AGENT_STT_LATENCY] == 0.1
    (report,) = of(pair.take().events, ev.LatencyReportEvent)
    assert report.latency == ev.TurnLatency(stt_ms=100, ttt_token_ms=300, ttt_text_ms=350,
                                            ttt_tool_ms=200, ttt_thinking_ms=250, tts_ms=150,
                                            total_ms=600)
    pair.advance(0.5)
    pair.command(lambda call, now: call.end(now, "ended"))
    record = of(pair.take().events, ev.SessionEndEvent)[0].record
    assert record.agent_latency_p50_ms == 600 and record.latency == (report.latency,)


def test_backchannels_and_fillers_stay_out_of_turns_history_and_captions() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    pair.agent.send(dg.ConversationText(role="assistant", content="Mhmm.",
                                        conversational_behavior="backchannel"))
    pair.agent.audio(FRAME * 5)
    to_vaic, _, events, _ = pair.take()
    start = to_vaic[0]
    assert isinstance(start, ac.PlayStreamStart) and start.alt_text is None  # the audio plays
    (text,) = of(events, ev.ConversationTextEvent)
    assert text.behavior == "backchannel"
    pair.advance(1.0)
    pair.agent.send(dg.ConversationText(role="user", content="hola", languages=("es",)))
    assert of(pair.take().events, ev.ConversationTextEvent)[0].languages == ("es",)
    assert [t[:3] for t in pair.call.transcript.texts()] == [("user", "hola", None)]
    assert pair.call.transcript.turns == 0


def test_newer_server_messages_are_acted_on_or_surfaced() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    pair.agent.send(dg.FrustrationDetected(count=1, escalated=False))
    pair.advance(0.1)
    pair.agent.send(dg.FrustrationDetected(count=2, escalated=True))
    pair.advance(0.1)
    pair.agent.send(dg.ListenUpdated())
    pair.agent.send(dg.ThinkLiveUpdated())
    pair.advance(0.1)
    pair.agent.send(dg.CustomFromThinkProvider(content={"x": 1}))
    pair.advance(0.1)
    pair.agent.send(dg.ServerFunctionCallResponse(id="f9", name="weather", content="sunny"))
    pair.agent.send(dg.History(function_calls=(dg.FunctionCallRecord(
        id="f9", name="weather", client_side=False, arguments='{"city":"Oslo"}',
        response="sunny"),)))
    events = pair.take().events
    assert [e.escalated for e in of(events, ev.FrustrationDetectedEvent)] == [False, True]
    assert of(events, ev.ListenUpdatedEvent) and of(events, ev.ThinkLiveUpdatedEvent)
    assert of(events, ev.ThinkProviderMessageEvent)[0].content == {"x": 1}
    (result,) = of(events, ev.FunctionCallResponseEvent)
    assert (result.id, result.name, result.content) == ("f9", "weather", "sunny")
    (entry,) = [e for e in pair.call.transcript.history() if e.function_calls]
    assert entry.function_calls is not None
    assert entry.function_calls[0].arguments == '{"city":"Oslo"}'
    pair.advance(0.6)
    pair.command(lambda call, now: call.end(now, "ended"))
    record = of(pair.take().events, ev.SessionEndEvent)[0].record
    assert record.frustration == 2 and record.agent_request_ids == ("request-1",)


def test_listen_and_turn_commands_reach_the_agent() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    pair.command(cmd.ForceEndTurn().apply)
    pair.command(cmd.build(cmd.SendThinkProviderMessage, {"content": {"k": "v"}}).apply)
    assert pair.agent.take() == [dg.ForceEndTurn(), dg.CustomToThinkProvider(content={"k": "v"})]


# --- what the caller heard ----------------------------------------------------------------------


def test_a_barge_in_keeps_what_was_heard_and_marks_the_rest_unheard() -> None:
    pair = make_pair()
    ready(pair)
    text = "Your order shipped yesterday and should arrive on Friday morning."
    pair.agent.send(dg.ConversationText(role="assistant", content=text))
    pair.agent.audio(bytes(PCM16.frame_bytes(2000)))  # two seconds, all received
    pair.agent.send(dg.AgentAudioDone())
    pair.agent.send(dg.ConversationText(role="assistant", content="Anything else?"))
    pair.agent.audio(bytes(PCM16.frame_bytes(500)))
    play(pair, 1.0)  # about half of the first utterance has played
    pair.take()
    pair.agent.send(dg.UserStartedSpeaking())
    (barge,) = of(pair.take().events, ev.UserStartedSpeakingEvent)
    assert barge.interrupted
    assert barge.agent_heard_text == "Your order shipped yesterday and"
    assert barge.agent_unheard_text == "should arrive on Friday morning."
    history = pair.call.transcript.history()
    assert [(h.role, h.content) for h in history] == [("assistant", barge.agent_heard_text)]
    pair.advance(2.0 - pair.now)
    pair.command(lambda call, now: call.end(now, "ended"))
    record = of(pair.take().events, ev.SessionEndEvent)[0].record
    assert [(t.content, t.unheard) for t in record.transcript] == [
        ("Your order shipped yesterday and", "should arrive on Friday morning."),
        ("", "Anything else?")]


# --- the exact wire ------------------------------------------------------------------------------


def test_send_activity_keeps_every_field_or_names_what_it_cannot_send() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    pair.command(cmd.SendActivity(activity=[
        {"type": "event", "name": "transfer", "activity_params": {"transferTarget": "sip:a@b"},
         "delay": 500},
        {"type": "message", "text": "Hi", "activityParams": {"x": 1}, "sessionParams": {"y": 2}},
    ]).apply)
    (sent,) = pair.take().vaic
    wire = msgspec.json.decode(ac.encode(sent))["activities"]
    assert wire == [
        {"type": "event", "name": "transfer", "activityParams": {"transferTarget": "sip:a@b"},
         "delay": 500},
        {"type": "message", "text": "Hi", "activityParams": {"x": 1}, "sessionParams": {"y": 2}}]
    with pytest.raises(cmd.InvalidCommand, match="no field 'activityParms'"):
        cmd.SendActivity(activity={"type": "event", "name": "x", "activityParms": {}})
    with pytest.raises(cmd.InvalidCommand, match="given twice"):
        cmd.SendActivity(activity={"type": "event", "activity_params": {}, "activityParams": {}})


def test_hangup_with_sip_headers_waits_for_the_goodbye() -> None:
    pair = make_pair()
    ready(pair)
    pair.agent.audio(bytes(PCM16.frame_bytes(300)))
    pair.agent.send(dg.AgentAudioDone())
    pair.take()
    pair.command(cmd.build(cmd.EndSession, {"reason": "resolved", "sip_headers": [
        {"name": "X-Outcome", "value": "sale"}], "params": {"botOperationResult": "ok"}}).apply)
    assert pair.call.state is CallState.ACTIVE  # still saying goodbye
    while pair.call.state is CallState.ACTIVE:
        assert pair.step() is not None
    hangup = pair.vaic.take()[-1]
    assert isinstance(hangup, ac.OutboundActivities)
    assert hangup.activities[0].activity_params == {
        "hangupReason": "resolved", "hangupSipHeaders": [{"name": "X-Outcome", "value": "sale"}],
        "botOperationResult": "ok"}
    with pytest.raises(cmd.InvalidCommand, match="each SIP header"):
        cmd.build(cmd.EndSession, {"sip_headers": [{"X-Outcome": "sale"}]})


def test_a_transfer_sent_as_a_raw_activity_still_gets_its_outcome() -> None:
    pair = make_pair()
    ready(pair)
    pair.advance(1.0)
    pair.command(cmd.SendActivity(activity={
        "type": "event", "name": "transfer",
        "activityParams": {"transferTarget": "sip:x@y"}}).apply)
    pair.advance(1.0)
    activity(pair, name="transferStatus", value={"status": "failed", "reasonCode": "error"})
    _, to_agent, events, _ = pair.take()
    assert of(events, ev.TransferFailedEvent)[0].destination is None  # not the bridge's own
    assert isinstance(to_agent[0], dg.InjectAgentMessage)  # the caller is told all the same
    pair.advance(1.0)
    pair.vaic.send(ac.SessionEnd(reason_code="transferred"))
    assert of(pair.take().events, ev.SessionEndEvent)[0].reason == "transfer"


def test_a_factory_without_an_agent_for_the_call_hangs_up_quietly() -> None:
    pair = make_pair(None)
    pair.advance(0.01)
    activity(pair, **START)
    pair.take()
    pair.advance(0.01)
    pair.command(lambda call, now: call.agent_chosen(None, now))
    to_vaic, _, events, _ = pair.take()
    hangup = to_vaic[-1]
    assert isinstance(hangup, ac.OutboundActivities)
    assert hangup.activities[0].activity_params == {"hangupReason": "no agent for this call"}
    assert not of(events, ev.BridgeErrorEvent) and not of(events, ev.WarningEvent)
    pair.advance(0.08)
    pair.vaic.send(ac.SessionEnd(reason_code="bot-disconnected"))
    assert of(pair.take().events, ev.SessionEndEvent)[0].reason == "ended"
