"""Call control in the sans-I/O core: transfers with an outcome, mid-call changes that
survive a new agent connection, the call's details before the agent, participants,
VAIC's notifications, Deepgram's newer messages, and what the caller heard. No sockets,
a hand-moved clock."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from acdg_asgi import events as ev
from acdg_asgi.audio import FORMATS
from acdg_asgi.call import Call, CallState, CloseAgent, CloseVaic, ConnectAgent, Measure
from acdg_asgi.call import commands as cmd
from acdg_asgi.call.state import CallShared, ChooseAgent, PendingTransfer, Timer
from acdg_asgi.config import (
    AgentConfig,
    Limits,
    Participants,
    Playout,
    Reconnect,
    VaicSessionParams,
)
from acdg_asgi.errors import ConfigError, LocalProtocolError
from acdg_asgi.policies import CallOptions
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.protocols import deepgram as dg

PCM16 = FORMATS["raw/lpcm16"]
FRAME = bytes(640)  # 20 ms at 16 kHz
AGENT_ID = "0b0e9c1e-3c1f-4bbd-9a3b-5a4f3c2d1e0f"
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
    "type": "event", "name": "start", "language": "en-US",
    "parameters": {"caller": "+15551230000", "callee": "+18005550100",
                   "callerDisplayName": "Alice", "X-Account": "A-42",
                   "dialoutMetadata": {"campaign": "renewals"}},
}


DEFAULT = AgentConfig(agent=SETTINGS)


def make_call(
    config: AgentConfig | None = DEFAULT, *, limits: Limits | None = None,
    options: CallOptions | None = None, taken_over: tuple[int, list[dg.History], CallShared]
    | None = None, reconnect: Reconnect | None = None,
) -> Call:
    initiate = ac.SessionInitiate(conversation_id="conv-1", caller="+15551230000",
                                  supported_media_formats=("raw/lpcm16",))
    return Call(initiate, session_id="s-1", media_format=PCM16, agent_config=config, now=0.0,
                playout=Playout(lead_ms=100, chunk_ms=20), limits=limits, options=options,
                taken_over=taken_over, reconnect=reconnect)


def drain(call: Call) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    out = (call.to_vaic, call.to_agent, call.events, call.actions)
    call.to_vaic, call.to_agent, call.events, call.actions = [], [], [], []
    return out


def activity(call: Call, now: float, **fields: Any) -> None:
    call.vaic(ac.Activities(activities=({"type": "event", **fields},)), now)


def connect(call: Call, now: float) -> dg.Settings:
    """A new agent connection's handshake; the Settings it was sent."""
    call.agent_connected(now)
    call.agent(dg.Welcome(request_id=f"r{now}"), now)
    (settings,) = [m for m in drain(call)[1] if isinstance(m, dg.Settings)]
    call.agent(dg.SettingsApplied(), now)
    return settings


def ready(call: Call, now: float = 0.0) -> dg.Settings:
    activity(call, now, **{k: v for k, v in START.items() if k != "type"})
    settings = connect(call, now)
    drain(call)
    return settings


def of(events: list[Any], cls: type[ev.Event]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def play_all(call: Call, now: float, until: float) -> float:
    while (deadline := call.next_deadline()) is not None and deadline <= until:
        now = max(now, deadline)
        call.tick(now)
    return now


# --- transfers ------------------------------------------------------------------------------


def transfer(call: Call, now: float, **kwargs: Any) -> ac.Activity:
    cmd.build(cmd.Transfer, {"destination": "sip:queue@pbx", **kwargs}).apply(call, now)
    (sent,) = [m for m in drain(call)[0] if isinstance(m, ac.OutboundActivities)]
    (act,) = sent.activities
    return act


def test_a_failed_transfer_gives_the_call_back_to_the_agent() -> None:
    call = make_call()
    ready(call)
    act = transfer(call, 1.0, transfer_sip_headers=[{"name": "X-Case", "value": "7"}],
                   referred_by_url="sip:bot@acme.example")
    assert act.name == "transfer" and act.activity_params == {
        "transferTarget": "sip:queue@pbx", "transferSipHeaders": [{"name": "X-Case", "value": "7"}],
        "transferReferredByURL": "sip:bot@acme.example"}
    assert call.state is CallState.TRANSFERRING and call.link.ready  # the agent stays up
    assert Timer.TRANSFER in call.timers
    # Meanwhile the caller's audio is not the agent's business.
    call.vaic(ac.UserStreamChunk(audio_chunk=FRAME), 1.5)
    assert drain(call)[1] == []
    activity(call, 8.0, name="transferStatus",
             value={"status": "failed", "reasonCode": "busy", "reason": "486 Busy Here"})
    _, to_agent, events, actions = drain(call)
    assert call.state is CallState.ACTIVE and CloseAgent() not in actions
    (failed,) = of(events, ev.TransferFailedEvent)
    assert (failed.destination, failed.reason_code, failed.reason) == (
        "sip:queue@pbx", "busy", "486 Busy Here")
    (told,) = to_agent
    assert isinstance(told, dg.InjectAgentMessage) and told.behavior == "interrupt"
    assert "the line is busy" in told.message
    # The agent speaks again, and the caller's audio reaches it again.
    call.agent(dg.ConversationText(role="assistant", content=told.message), 8.1)
    call.agent_audio(FRAME * 5, 8.1)
    assert any(isinstance(m, ac.PlayStreamStart) for m in drain(call)[0])
    call.vaic(ac.UserStreamChunk(audio_chunk=FRAME), 8.2)
    assert drain(call)[1] == [FRAME]
    # ... and the application may try again, once the agent has said it.
    call.agent(dg.AgentAudioDone(), 8.2)
    cmd.Transfer(destination="sip:other@pbx").apply(call, 8.2)
    play_all(call, 8.2, 9.0)
    assert call.state is CallState.TRANSFERRING
    assert call.transfer_pending == PendingTransfer(destination="sip:other@pbx")


def test_an_answered_transfer_ends_the_call_with_reason_transfer() -> None:
    call = make_call()
    ready(call)
    transfer(call, 1.0)
    activity(call, 5.0, name="transferStatus", value={"status": "answered"})
    _, _, events, actions = drain(call)
    assert of(events, ev.TransferAnsweredEvent)[0].destination == "sip:queue@pbx"
    assert call.state is CallState.ENDING and CloseAgent() in actions
    call.vaic(ac.SessionEnd(reason_code="transferred", reason="Transferred"), 5.2)
    (end,) = of(drain(call)[2], ev.SessionEndEvent)
    assert (end.reason, end.reason_code, end.detail) == ("transfer", "transferred", "sip:queue@pbx")
    assert end.meaning == "the call was transferred"


def test_vaic_without_regain_control_ends_the_transferred_call_with_session_end() -> None:
    call = make_call()
    ready(call)
    transfer(call, 1.0)
    call.vaic(ac.SessionEnd(reason_code="transferred"), 3.0)
    (end,) = of(drain(call)[2], ev.SessionEndEvent)
    assert end.reason == "transfer" and end.detail == "sip:queue@pbx"


def test_a_transfer_vaic_never_reports_on_ends_after_the_timeout() -> None:
    call = make_call(limits=Limits(transfer_timeout_s=20))
    ready(call)
    transfer(call, 1.0)
    call.tick(21.0)
    _, _, events, actions = drain(call)
    (end,) = of(events, ev.SessionEndEvent)
    assert end.reason == "transfer" and "no outcome" in (end.detail or "")
    assert CloseVaic(reason="transfer") in actions


def test_a_transfer_waits_for_the_last_words_and_refuses_a_second_one() -> None:
    call = make_call()
    ready(call)
    call.agent(dg.ConversationText(role="assistant", content="Let me connect you."), 0.0)
    call.agent_audio(bytes(PCM16.frame_bytes(400)), 0.0)
    call.agent(dg.AgentAudioDone(), 0.0)
    drain(call)
    cmd.Transfer(destination="sip:queue@pbx").apply(call, 0.0)
    assert call.state is CallState.ACTIVE  # the goodbye is still playing
    with pytest.raises(LocalProtocolError, match="already under way"):
        cmd.Transfer(destination="sip:other@pbx").apply(call, 0.1)
    now = play_all(call, 0.0, 1.0)
    assert call.state is CallState.TRANSFERRING and now == pytest.approx(0.4)


def test_a_transfer_survives_a_resume_and_a_take_over() -> None:
    call = make_call()
    ready(call)
    transfer(call, 1.0)
    call.vaic_lost(2.0)
    assert call.state is CallState.DETACHED
    call.vaic_resumed(2.5)
    assert call.state is CallState.TRANSFERRING
    shared = msgspec.json.decode(msgspec.json.encode(call.shared()), type=CallShared)
    assert shared.transfer == PendingTransfer(destination="sip:queue@pbx")
    # Another instance takes it over: still waiting, and a failure comes back to its agent.
    other = make_call(taken_over=(1, list(call.transcript.entries), shared))
    assert other.state is CallState.TRANSFERRING
    connect(other, 3.0)
    activity(other, 4.0, name="transferStatus",
             value={"status": "failed", "reasonCode": "no-answer"})
    _, to_agent, events, _ = drain(other)
    assert other.state is CallState.ACTIVE and of(events, ev.TransferFailedEvent)
    told = to_agent[0]
    assert isinstance(told, dg.InjectAgentMessage) and "nobody answered" in told.message


def test_the_failure_message_is_configurable_or_left_to_the_application() -> None:
    call = make_call(options=CallOptions(transfer_failed_message=None))
    ready(call)
    transfer(call, 1.0)
    activity(call, 2.0, name="transferStatus", value={"status": "failed", "reasonCode": "declined"})
    assert drain(call)[1] == []
    custom = CallOptions(transfer_failed_message="No luck ({reason}).")
    assert custom.transfer_failed_text("declined", None) == "No luck (the call was declined)."


def test_hanging_up_during_a_transfer_ends_the_wait() -> None:
    call = make_call()
    ready(call)
    transfer(call, 1.0)
    cmd.EndSession(reason="done").apply(call, 2.0)
    assert call.state is CallState.ENDING and call.transfer_pending is None


# --- mid-call changes survive a new agent connection -------------------------------------------


def test_updates_are_folded_into_the_settings_of_a_reconnect() -> None:
    seeded = (dg.History(role="user", content="(earlier call) my order is late"),)
    config = AgentConfig(agent=msgspec.structs.replace(SETTINGS, context=dg.Context(seeded)))
    call = make_call(config)
    ready(call)
    call.agent(dg.ConversationText(role="assistant", content="Hello!"), 0.1)
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
        command.apply(call, 0.5)
    sent = drain(call)[1]
    assert [type(m) for m in sent] == [dg.UpdatePrompt, dg.UpdateSpeak, dg.UpdateListen,
                                       dg.UpdateThinkLive]
    call.agent_lost(1.0, "dropped")
    call.tick(1.0)
    settings = connect(call, 1.1)
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
    assert drain(call)[1] == []  # all of it went in the Settings


def test_an_update_while_the_agent_reconnects_is_carried_by_the_next_settings() -> None:
    call = make_call()
    ready(call)
    call.agent_lost(1.0, "dropped")
    cmd.UpdateThink(think=msgspec.structs.replace(THINK, prompt="Be brief.")).apply(call, 1.0)
    _, _, events, _ = drain(call)
    assert not [e for e in events if isinstance(e, ev.WarningEvent)
                and e.code == "AGENT_NOT_READY"]
    call.tick(1.0)
    settings = connect(call, 1.1)
    assert isinstance(settings.agent, dg.AgentSettings)
    assert isinstance(settings.agent.think, dg.ThinkSettings)
    assert settings.agent.think.prompt == "Be brief."
    # An update sent between Settings and SettingsApplied goes right after it.
    call.agent_lost(2.0, "dropped")
    call.tick(2.0)
    call.agent_connected(2.0)
    call.agent(dg.Welcome(), 2.0)
    drain(call)
    cmd.UpdatePrompt(prompt="Mention the sale.").apply(call, 2.0)
    call.agent(dg.SettingsApplied(), 2.1)
    assert drain(call)[1] == [dg.UpdatePrompt(prompt="Mention the sale.")]


def test_a_stored_agent_configuration_gets_its_updates_again_after_settings_applied() -> None:
    call = make_call(AgentConfig(agent=AGENT_ID))
    ready(call)
    cmd.UpdatePrompt(prompt="Answer in Spanish.").apply(call, 0.5)
    call.agent(dg.ConversationText(role="user", content="hola"), 0.6)
    drain(call)
    call.agent_lost(1.0, "dropped")
    call.tick(1.0)
    call.agent_connected(1.1)
    call.agent(dg.Welcome(), 1.1)
    to_agent, events = drain(call)[1:3]
    (settings,) = to_agent
    assert settings.agent == AGENT_ID
    assert b'"agent":"' + AGENT_ID.encode() + b'"' in dg.encode(settings)
    assert "AGENT_HISTORY_NOT_REPLAYED" in [e.code for e in of(events, ev.WarningEvent)]
    call.agent(dg.SettingsApplied(), 1.2)
    assert drain(call)[1] == [dg.UpdatePrompt(prompt="Answer in Spanish.")]


def test_updates_keep_only_what_a_new_connection_needs() -> None:
    call = make_call()
    for prompt in ("one", "two"):
        cmd.UpdatePrompt(prompt=prompt).apply(call, 0.0)
    cmd.UpdateThink(think=THINK).apply(call, 0.0)  # replaces the think config, prompt and all
    cmd.UpdatePrompt(prompt="three").apply(call, 0.0)
    for hints in (["es"], None):
        provider: dict[str, Any] = {"type": "deepgram", "version": "v2",
                                    "model": "flux-general-multi"}
        if hints:
            provider["language_hints"] = hints
        cmd.UpdateListen(listen=dg.ListenSettings(provider=provider)).apply(call, 0.0)
    assert [type(u) for u in call.configuration.updates] == [
        dg.UpdateThink, dg.UpdatePrompt, dg.UpdateListen]
    listen = call.configuration.updates[-1]
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
    call = make_call()
    activity(call, 0.01, **{k: v for k, v in START.items() if k != "type"})
    (start,) = of(drain(call)[2], ev.SessionStartEvent)
    details = start.details
    assert details is not None
    assert (details.caller, details.callee, details.caller_display_name) == (
        "+15551230000", "+18005550100", "Alice")
    assert details.sip_headers == {"X-Account": "A-42"}
    assert details.dialout_metadata == {"campaign": "renewals"} and details.language == "en-US"
    call.tick(1.0)
    assert not of(drain(call)[2], ev.SessionStartEvent)  # once only
    call.end(2.0, "ended")
    (end,) = of(drain(call)[2], ev.SessionEndEvent)
    assert end.record is not None and end.record.details == details


def test_a_factory_waits_for_start_while_the_agent_connection_opens() -> None:
    call = make_call(config=None)
    _, _, _, actions = drain(call)
    assert actions == [ConnectAgent(attempt=1)]
    call.agent_connected(0.05)
    call.agent(dg.Welcome(), 0.06)
    assert drain(call)[1] == []  # no Settings before the agent is chosen
    activity(call, 0.08, **{k: v for k, v in START.items() if k != "type"})
    (choose,) = drain(call)[3]
    assert isinstance(choose, ChooseAgent) and choose.details is not None
    assert choose.details.callee == "+18005550100"
    call.agent_chosen(AgentConfig(agent=SETTINGS), 0.1)
    (settings,) = drain(call)[1]
    assert isinstance(settings, dg.Settings) and settings.agent == SETTINGS


def test_without_start_the_factory_runs_after_the_wait() -> None:
    call = make_call(config=None, limits=Limits(start_wait_s=0.3))
    drain(call)
    call.tick(0.3)
    _, _, events, actions = drain(call)
    assert of(events, ev.SessionStartEvent)[0].details is None
    assert actions == [ChooseAgent(details=None)]
    call.agent_choice_failed(0.4, "RuntimeError: no tenant")
    to_vaic, _, events, _ = drain(call)
    assert of(events, ev.BridgeErrorEvent)[0].code == "AGENT_CONFIG"
    hangup = to_vaic[-1].activities[0]
    assert hangup.activity_params == {"hangupReason": "no agent configuration for this call"}


# --- participants -----------------------------------------------------------------------------


def test_only_the_callers_stream_reaches_the_agent() -> None:
    call = make_call()
    start = {**START, "parameters": {**START["parameters"], "participants": [
        {"participant": "agent", "uriUser": "4001", "displayName": "Bob"},
        {"participant": "customer", "uriUser": "+15551230000"}]}}
    activity(call, 0.0, **{k: v for k, v in start.items() if k != "type"})
    connect(call, 0.0)
    drain(call)
    assert call.hearing == "customer"
    call.vaic(ac.UserStreamStart(participant="agent"), 0.1)
    call.vaic(ac.UserStreamStart(participant="customer"), 0.1)
    to_vaic, _, events, _ = drain(call)
    assert to_vaic == [ac.UserStreamStarted(participant="agent"),
                       ac.UserStreamStarted(participant="customer")]
    for _ in range(3):
        call.vaic(ac.UserStreamChunk(audio_chunk=bytes([1]) * 640, participant="agent"), 0.2)
        call.vaic(ac.UserStreamChunk(audio_chunk=bytes([2]) * 640, participant="customer"), 0.2)
    assert drain(call)[1] == [bytes([2]) * 640] * 3
    (ignored,) = of(events, ev.ParticipantIgnoredEvent)
    assert (ignored.participant, ignored.hearing) == ("agent", "customer")
    assert call.stats.other_participant_frames == 3
    call.agent(dg.UserStartedSpeaking(), 0.3)
    assert ac.UserStreamSpeechStarted(participant="customer") in drain(call)[0]


def test_without_participants_in_start_the_first_stream_decides() -> None:
    call = make_call()
    ready(call)
    call.vaic(ac.UserStreamChunk(audio_chunk=FRAME, participant="p1"), 0.1)
    call.vaic(ac.UserStreamChunk(audio_chunk=FRAME, participant="p2"), 0.1)
    call.vaic(ac.UserStreamChunk(audio_chunk=FRAME), 0.1)  # a plain stream always reaches it
    assert drain(call)[1] == [FRAME, FRAME]
    assert call.hearing == "p1" and call.ignored == ["p2"]


def test_play_streams_can_target_a_participant_and_player() -> None:
    call = make_call(options=CallOptions(participants=Participants(
        agent_hears="customer", play_to="customer", target_player="ToCustomer")))
    ready(call)
    call.agent_audio(FRAME * 5, 0.1)
    start = drain(call)[0][0]
    assert isinstance(start, ac.PlayStreamStart)
    assert (start.participant, start.target_player) == ("customer", "ToCustomer")
    assert b'"targetPlayer":"ToCustomer"' in ac.encode(start)


# --- VAIC's notifications --------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "expected"), [
    ({"name": "noUserInput", "value": 2}, ev.NoUserInputEvent(
        session_id="s-1", conversation_id="conv-1", at=1.0, count=2)),
    ({"name": "playUrlFailed", "value": {"reason": "404", "playUrlUrl": "https://x/a.wav",
                                         "selfGenerated": False}},
     ev.PlayUrlFailedEvent(session_id="s-1", conversation_id="conv-1", at=1.0,
                           url="https://x/a.wav", reason="404", self_generated=False)),
    ({"name": "playFinished"}, ev.PlayFinishedEvent(session_id="s-1", conversation_id="conv-1",
                                                    at=1.0)),
    ({"name": "speechHypothesis", "value": "i want", "parameters": {"participant": "c"}},
     ev.SpeechHypothesisEvent(session_id="s-1", conversation_id="conv-1", at=1.0,
                              text="i want", participant="c")),
    ({"name": "voiceDetected"}, ev.VoiceDetectedEvent(session_id="s-1", conversation_id="conv-1",
                                                      at=1.0)),
    ({"name": "silenceDetected"}, ev.SilenceDetectedEvent(
        session_id="s-1", conversation_id="conv-1", at=1.0)),
    ({"name": "agentConnected", "value": True}, ev.AgentConnectedEvent(
        session_id="s-1", conversation_id="conv-1", at=1.0, value=True)),
    ({"name": "dialoutInitiated",
      "value": {"outboundTarget": "+1555", "dialoutMetadata": {"a": 1}}},
     ev.DialoutInitiatedEvent(session_id="s-1", conversation_id="conv-1", at=1.0,
                              outbound_target="+1555", dialout_metadata={"a": 1})),
    ({"name": "dtmf", "value": "12#"}, ev.DtmfEvent(session_id="s-1", conversation_id="conv-1",
                                                    at=1.0, digits="12#")),
])
def test_each_notification_is_typed_and_still_raw(fields: dict[str, Any], expected: ev.Event
                                                 ) -> None:
    call = make_call()
    ready(call)
    activity(call, 1.0, **fields)
    raw, typed = drain(call)[2]
    assert isinstance(raw, ev.InboundActivityEvent) and raw.activity["name"] == fields["name"]
    assert typed == expected


def test_a_malformed_notification_is_read_tolerantly() -> None:
    call = make_call()
    ready(call)
    activity(call, 1.0, name="noUserInput", value={"odd": True})
    activity(call, 1.0, name="transferStatus", value="nonsense")
    events = drain(call)[2]
    assert of(events, ev.NoUserInputEvent)[0].count is None
    assert [e.code for e in of(events, ev.WarningEvent)] == ["PROTOCOL_ERROR"]


def test_session_end_reason_codes_have_a_meaning() -> None:
    call = make_call()
    ready(call)
    call.vaic(ac.SessionEnd(reason_code="machine-detected", reason="AMD"), 1.0)
    (end,) = of(drain(call)[2], ev.SessionEndEvent)
    assert end.machine_detected and end.meaning == ev.END_REASON_CODES["machine-detected"]
    assert end.record is not None and end.record.meaning == end.meaning


def test_vaic_session_params_go_out_at_call_start() -> None:
    call = make_call(options=CallOptions(vaic_session=VaicSessionParams(
        barge_in=True, send_events_to_bot=("noUserInput", "transferStatus"),
        user_no_input_timeout_ms=8000, extra={"playUrlFailureHandling": "notify-bot"})))
    accepted, config = drain(call)[0]
    assert isinstance(accepted, ac.SessionAccepted)
    wire = msgspec.json.decode(ac.encode(config))
    assert wire == {"type": "activities", "activities": [{"type": "event", "name": "config",
        "sessionParams": {"bargeIn": True, "sendEventsToBot": ["noUserInput", "transferStatus"],
                          "userNoInputTimeoutMS": 8000,
                          "playUrlFailureHandling": "notify-bot"}}]}


# --- Deepgram's newer messages -------------------------------------------------------------------


def test_latency_report_drives_the_measures_and_the_record() -> None:
    call = make_call()
    ready(call)
    call.agent(dg.AgentStartedSpeaking(total_latency=9.0, tts_latency=1.0, ttt_latency=8.0), 1.0)
    call.agent(dg.LatencyReport(stt_latency=0.1, ttt_token_latency=0.3, ttt_text_latency=0.35,
                                ttt_tool_latency=0.2, ttt_thinking_latency=0.25,
                                tts_latency=0.15, total_latency=0.6), 1.5)
    measures = dict(call.observations)
    assert measures[Measure.AGENT_RESPONSE_LATENCY] == 0.6  # not AgentStartedSpeaking's 9 s
    assert measures[Measure.AGENT_TTT_TOOL_LATENCY] == 0.2
    assert measures[Measure.AGENT_STT_LATENCY] == 0.1
    (report,) = of(drain(call)[2], ev.LatencyReportEvent)
    assert report.latency == ev.TurnLatency(stt_ms=100, ttt_token_ms=300, ttt_text_ms=350,
                                            ttt_tool_ms=200, ttt_thinking_ms=250, tts_ms=150,
                                            total_ms=600)
    call.end(2.0, "ended")
    record = of(drain(call)[2], ev.SessionEndEvent)[0].record
    assert record.agent_latency_p50_ms == 600 and record.latency == (report.latency,)


def test_backchannels_and_fillers_stay_out_of_turns_history_and_captions() -> None:
    call = make_call()
    ready(call)
    call.agent(dg.ConversationText(role="assistant", content="Mhmm.",
                                   conversational_behavior="backchannel"), 1.0)
    call.agent_audio(FRAME * 5, 1.0)
    to_vaic, _, events, _ = drain(call)
    start = to_vaic[0]
    assert isinstance(start, ac.PlayStreamStart) and start.alt_text is None  # the audio plays
    (text,) = of(events, ev.ConversationTextEvent)
    assert text.behavior == "backchannel"
    call.agent(dg.ConversationText(role="user", content="hola", languages=("es",)), 2.0)
    assert of(drain(call)[2], ev.ConversationTextEvent)[0].languages == ("es",)
    assert [t[:3] for t in call.transcript.texts()] == [("user", "hola", None)]
    assert call.transcript.turns == 0


def test_newer_server_messages_are_acted_on_or_surfaced() -> None:
    call = make_call()
    ready(call)
    call.agent(dg.FrustrationDetected(count=1, escalated=False), 1.0)
    call.agent(dg.FrustrationDetected(count=2, escalated=True), 1.1)
    call.agent(dg.ListenUpdated(), 1.2)
    call.agent(dg.ThinkLiveUpdated(), 1.2)
    call.agent(dg.CustomFromThinkProvider(content={"x": 1}), 1.3)
    call.agent(dg.ServerFunctionCallResponse(id="f9", name="weather", content="sunny"), 1.4)
    call.agent(dg.History(function_calls=(dg.FunctionCallRecord(
        id="f9", name="weather", client_side=False, arguments='{"city":"Oslo"}',
        response="sunny"),)), 1.4)
    events = drain(call)[2]
    assert [e.escalated for e in of(events, ev.FrustrationDetectedEvent)] == [False, True]
    assert of(events, ev.ListenUpdatedEvent) and of(events, ev.ThinkLiveUpdatedEvent)
    assert of(events, ev.ThinkProviderMessageEvent)[0].content == {"x": 1}
    (result,) = of(events, ev.FunctionCallResponseEvent)
    assert (result.id, result.name, result.content) == ("f9", "weather", "sunny")
    (entry,) = [e for e in call.transcript.history() if e.function_calls]
    assert entry.function_calls is not None
    assert entry.function_calls[0].arguments == '{"city":"Oslo"}'
    call.end(2.0, "ended")
    record = of(drain(call)[2], ev.SessionEndEvent)[0].record
    assert record.frustration == 2 and record.agent_request_ids == ("r0.0",)


def test_listen_and_turn_commands_reach_the_agent() -> None:
    call = make_call()
    ready(call)
    cmd.ForceEndTurn().apply(call, 1.0)
    cmd.build(cmd.SendThinkProviderMessage, {"content": {"k": "v"}}).apply(call, 1.0)
    assert drain(call)[1] == [dg.ForceEndTurn(), dg.CustomToThinkProvider(content={"k": "v"})]


# --- what the caller heard ----------------------------------------------------------------------


def test_a_barge_in_keeps_what_was_heard_and_marks_the_rest_unheard() -> None:
    call = make_call()
    ready(call)
    text = "Your order shipped yesterday and should arrive on Friday morning."
    call.agent(dg.ConversationText(role="assistant", content=text), 0.0)
    call.agent_audio(bytes(PCM16.frame_bytes(2000)), 0.0)  # two seconds, all received
    call.agent(dg.AgentAudioDone(), 0.0)
    call.agent(dg.ConversationText(role="assistant", content="Anything else?"), 0.0)
    call.agent_audio(bytes(PCM16.frame_bytes(500)), 0.0)
    now = play_all(call, 0.0, 1.0)  # about half of the first utterance has played
    drain(call)
    call.agent(dg.UserStartedSpeaking(), now)
    (barge,) = of(drain(call)[2], ev.UserStartedSpeakingEvent)
    assert barge.interrupted
    assert barge.agent_heard_text == "Your order shipped yesterday and"
    assert barge.agent_unheard_text == "should arrive on Friday morning."
    history = call.transcript.history()
    assert [(h.role, h.content) for h in history] == [("assistant", barge.agent_heard_text)]
    call.end(2.0, "ended")
    record = of(drain(call)[2], ev.SessionEndEvent)[0].record
    assert [(t.content, t.unheard) for t in record.transcript] == [
        ("Your order shipped yesterday and", "should arrive on Friday morning."),
        ("", "Anything else?")]


# --- the exact wire ------------------------------------------------------------------------------


def test_send_activity_keeps_every_field_or_names_what_it_cannot_send() -> None:
    call = make_call()
    ready(call)
    cmd.SendActivity(activity=[
        {"type": "event", "name": "transfer", "activity_params": {"transferTarget": "sip:a@b"},
         "delay": 500},
        {"type": "message", "text": "Hi", "activityParams": {"x": 1}, "sessionParams": {"y": 2}},
    ]).apply(call, 1.0)
    (sent,) = drain(call)[0]
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
    call = make_call()
    ready(call)
    call.agent_audio(bytes(PCM16.frame_bytes(300)), 0.0)
    call.agent(dg.AgentAudioDone(), 0.0)
    drain(call)
    cmd.build(cmd.EndSession, {"reason": "resolved", "sip_headers": [
        {"name": "X-Outcome", "value": "sale"}], "params": {"botOperationResult": "ok"}}
    ).apply(call, 0.0)
    assert call.state is CallState.ACTIVE  # still saying goodbye
    sent: list[Any] = []
    now = 0.0
    while call.state is CallState.ACTIVE:
        now = call.next_deadline() or now
        call.tick(now)
        sent += drain(call)[0]
    assert sent[-1].activities[0].activity_params == {
        "hangupReason": "resolved", "hangupSipHeaders": [{"name": "X-Outcome", "value": "sale"}],
        "botOperationResult": "ok"}
    with pytest.raises(cmd.InvalidCommand, match="each SIP header"):
        cmd.build(cmd.EndSession, {"sip_headers": [{"X-Outcome": "sale"}]})


def test_a_transfer_sent_as_a_raw_activity_still_gets_its_outcome() -> None:
    call = make_call()
    ready(call)
    cmd.SendActivity(activity={"type": "event", "name": "transfer",
                               "activityParams": {"transferTarget": "sip:x@y"}}).apply(call, 1.0)
    activity(call, 2.0, name="transferStatus", value={"status": "failed", "reasonCode": "error"})
    _, to_agent, events, _ = drain(call)
    assert of(events, ev.TransferFailedEvent)[0].destination is None  # not the bridge's own
    assert isinstance(to_agent[0], dg.InjectAgentMessage)  # the caller is told all the same
    call.vaic(ac.SessionEnd(reason_code="transferred"), 3.0)
    assert of(drain(call)[2], ev.SessionEndEvent)[0].reason == "transfer"


def test_a_factory_without_an_agent_for_the_call_hangs_up_quietly() -> None:
    call = make_call(config=None)
    activity(call, 0.01, **{k: v for k, v in START.items() if k != "type"})
    drain(call)
    call.agent_chosen(None, 0.02)
    to_vaic, _, events, _ = drain(call)
    assert to_vaic[-1].activities[0].activity_params == {"hangupReason": "no agent for this call"}
    assert not of(events, ev.BridgeErrorEvent) and not of(events, ev.WarningEvent)
    call.vaic(ac.SessionEnd(reason_code="bot-disconnected"), 0.1)
    assert of(drain(call)[2], ev.SessionEndEvent)[0].reason == "ended"
