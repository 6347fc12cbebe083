"""The Call state machine, driven without sockets and with a hand-moved clock."""

from __future__ import annotations

import pytest

from acdg_asgi import events as ev
from acdg_asgi.audio import FORMATS, wav_header
from acdg_asgi.call import Call, CallState, CloseAgent, CloseVaic, ConnectAgent
from acdg_asgi.config import AgentConfig, Limits, Playout, Reconnect
from acdg_asgi.errors import RemoteProtocolError, SessionClosedError
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.protocols import deepgram as dg

PCM16 = FORMATS["raw/lpcm16"]
FRAME = bytes(640)  # 20 ms at 16 kHz


def make_call(
    fmt: str = "raw/lpcm16", *, lead_ms: int = 100, limits: Limits | None = None,
    reconnect: Reconnect | None = None,
) -> Call:
    initiate = ac.SessionInitiate(
        conversation_id="conv-1", caller="+1555", supported_media_formats=(fmt,)
    )
    return Call(
        initiate,
        session_id="s-1",
        media_format=FORMATS[fmt],
        agent_config=AgentConfig(agent=dg.AgentSettings(greeting="Hello!")),
        now=0.0,
        playout=Playout(lead_ms=lead_ms, chunk_ms=20),
        limits=limits,
        reconnect=reconnect,
    )


def drain(call: Call) -> tuple[list[object], list[object], list[object], list[object]]:
    out = (call.to_vaic, call.to_agent, call.events, call.actions)
    call.to_vaic, call.to_agent, call.events, call.actions = [], [], [], []
    return out  # type: ignore[return-value]


START = {"type": "event", "name": "start",
         "parameters": {"caller": "+1555", "callee": "+1800", "X-Account": "42"}}


def ready(call: Call, now: float = 0.0) -> None:
    """VAIC's start has come and the agent is ready."""
    call.vaic(ac.Activities(activities=(START,)), now)
    call.agent_connected(now)
    call.agent(dg.Welcome(request_id="r"), now)
    call.agent(dg.SettingsApplied(), now)
    drain(call)


def test_initiate_accepts_and_asks_for_an_agent() -> None:
    call = make_call()
    to_vaic, to_agent, events, actions = drain(call)
    assert to_vaic == [ac.SessionAccepted(media_format="raw/lpcm16")]
    assert to_agent == []
    assert events == []  # session_start waits for VAIC's start, a short while
    assert actions == [ConnectAgent(attempt=1)]
    assert call.next_deadline() == Limits().start_wait_s
    call.tick(Limits().start_wait_s)
    (start,) = drain(call)[2]
    assert isinstance(start, ev.SessionStartEvent)
    assert start.caller == "+1555" and start.details is None


def test_welcome_sends_settings_for_the_negotiated_format() -> None:
    call = make_call("raw/mulaw")
    drain(call)
    call.agent_connected(0.0)
    call.agent(dg.Welcome(request_id="r"), 0.0)
    (settings,) = drain(call)[1]
    assert isinstance(settings, dg.Settings)
    assert settings.audio.input == dg.AudioInput(encoding="mulaw", sample_rate=8000)
    assert settings.audio.output == dg.AudioOutput(
        encoding="mulaw", sample_rate=8000, container="none"
    )
    assert settings.agent.greeting == "Hello!"
    assert b'"sample_rate":8000' in dg.encode(settings)


def test_caller_audio_waits_for_settings_applied_in_a_bounded_buffer() -> None:
    call = make_call(limits=Limits(pre_ready_audio_ms=100))
    drain(call)
    for i in range(10):
        call.vaic(ac.UserStreamChunk(conversation_id="conv-1", audio_chunk=bytes([i]) * 640), 0.0)
    assert drain(call)[1] == []
    call.agent_connected(0.0)
    call.agent(dg.Welcome(), 0.0)
    call.agent(dg.SettingsApplied(), 0.0)
    sent = [m for m in drain(call)[1] if isinstance(m, bytes)]
    assert [m[0] for m in sent] == [5, 6, 7, 8, 9]  # the newest 100 ms survive
    call.vaic(ac.UserStreamChunk(conversation_id="conv-1", audio_chunk=FRAME), 0.1)
    assert drain(call)[1] == [FRAME]


def test_user_transcript_goes_out_as_recognition_with_alternatives() -> None:
    call = make_call()
    ready(call)
    call.agent(dg.ConversationText(role="user", content="pay my bill"), 1.0)
    to_vaic, _, events, _ = drain(call)
    assert to_vaic == [
        ac.UserStreamSpeechRecognition(alternatives=(ac.Alternative(text="pay my bill"),)),
        ac.UserStreamSpeechCommitted(),
    ]
    assert b'"alternatives":[{"text":"pay my bill"}]' in ac.encode(to_vaic[0])  # type: ignore[arg-type]
    assert events == [
        ev.ConversationTextEvent(
            session_id="s-1", conversation_id="conv-1", at=1.0, role="user", content="pay my bill"
        )
    ]


def test_agent_audio_is_paced_a_lead_ahead_of_real_time() -> None:
    call = make_call(lead_ms=100)
    ready(call)
    call.agent(dg.ConversationText(role="assistant", content="Sure."), 0.0)
    call.agent_audio(bytes(PCM16.frame_bytes(1000)), 0.0)  # one second, in one burst
    to_vaic = drain(call)[0]
    assert isinstance(to_vaic[0], ac.PlayStreamStart)
    assert to_vaic[0].alt_text == "Sure." and to_vaic[0].media_format == "raw/lpcm16"
    assert sum(isinstance(m, ac.PlayStreamChunk) for m in to_vaic) == 5  # 100 ms lead
    sent_ms = 100.0
    now = 0.0
    while (deadline := call.next_deadline()) is not None and deadline < 2.0:
        assert deadline >= now
        now = deadline
        call.tick(now)
        for m in drain(call)[0]:
            if isinstance(m, ac.PlayStreamChunk):
                sent_ms += PCM16.duration_ms(len(m.audio_chunk))
                assert sent_ms - now * 1000 <= 100 + 20 + 1e-6  # never more than the lead ahead
    assert sent_ms == pytest.approx(1000)
    call.agent(dg.AgentAudioDone(), now)
    call.tick(call.next_deadline() or now)
    assert any(isinstance(m, ac.PlayStreamStop) for m in drain(call)[0])


def test_barge_in_stops_the_stream_and_drops_the_rest_of_the_turn() -> None:
    call = make_call(lead_ms=100)
    ready(call)
    call.agent_audio(bytes(PCM16.frame_bytes(3000)), 0.0)
    start = drain(call)[0][0]
    assert isinstance(start, ac.PlayStreamStart)
    call.tick(0.05)
    drain(call)
    call.agent(dg.UserStartedSpeaking(), 0.06)
    to_vaic, _, events, _ = drain(call)
    assert to_vaic == [
        ac.PlayStreamStop(stream_id=start.stream_id), ac.UserStreamSpeechStarted()
    ]
    (event,) = events
    assert isinstance(event, ev.UserStartedSpeakingEvent) and event.interrupted
    assert event.agent_audio_sent_ms == pytest.approx(140)  # 100 ms lead at t=0.05
    assert event.agent_audio_heard_ms == pytest.approx(60)
    assert event.agent_audio_dropped_ms == pytest.approx(2860)
    # Late frames of the interrupted turn are dropped until the agent's next turn.
    call.agent_audio(FRAME, 0.07)
    assert drain(call)[0] == [] and call.next_deadline() is not None
    call.agent(dg.ConversationText(role="assistant", content="Go on."), 0.5)
    call.agent_audio(FRAME * 3, 0.5)
    new_start = drain(call)[0][0]
    assert isinstance(new_start, ac.PlayStreamStart) and new_start.stream_id != start.stream_id


def test_resume_keeps_the_call_and_the_agent_audio() -> None:
    call = make_call(limits=Limits(resume_grace_s=30))
    ready(call)
    call.vaic_lost(1.0)
    assert call.state is CallState.DETACHED
    call.agent_audio(FRAME * 10, 2.0)
    assert drain(call)[0] == []  # nowhere to send it yet
    call.vaic_resumed(3.5)
    to_vaic, _, events, _ = drain(call)
    assert to_vaic == [ac.SessionAccepted(media_format="raw/lpcm16")]
    assert isinstance(events[0], ev.SessionResumedEvent) and events[0].gap_ms == 2500
    call.tick(3.5)
    chunks = [m for m in drain(call)[0] if isinstance(m, ac.PlayStreamChunk)]
    assert len(chunks) == 5  # the buffered audio plays, paced


def test_resume_grace_runs_out() -> None:
    call = make_call(limits=Limits(resume_grace_s=5))
    ready(call)
    call.vaic_lost(1.0)
    assert call.next_deadline() == 6.0
    call.tick(6.0)
    _, _, events, actions = drain(call)
    (end,) = events
    assert isinstance(end, ev.SessionEndEvent) and end.reason == "timeout"
    assert CloseAgent() in actions and CloseVaic(reason="timeout") in actions
    with pytest.raises(SessionClosedError):
        call.vaic_resumed(7.0)


def test_agent_reconnect_replays_history_without_greeting() -> None:
    call = make_call(reconnect=Reconnect(attempts=3, initial_backoff_s=0.5))
    ready(call)
    call.agent(dg.ConversationText(role="assistant", content="Hello!"), 0.1)
    call.agent(dg.ConversationText(role="user", content="Hi there"), 1.0)
    drain(call)
    call.agent_lost(2.0, "connection lost")
    assert drain(call)[3] == []
    assert call.next_deadline() == 2.0  # first retry at once
    call.tick(2.0)
    assert drain(call)[3] == [ConnectAgent(attempt=2)]
    call.agent_connected(2.1)
    call.agent(dg.Welcome(), 2.1)
    (settings,) = drain(call)[1]
    assert isinstance(settings, dg.Settings)
    assert settings.agent.greeting is None
    assert settings.agent.context == dg.Context(messages=(
        dg.History(role="assistant", content="Hello!"), dg.History(role="user", content="Hi there"),
    ))
    call.agent(dg.SettingsApplied(), 2.2)
    (event,) = drain(call)[2]
    assert isinstance(event, ev.AgentReconnectedEvent) and event.gap_ms == pytest.approx(200)


def test_agent_that_never_comes_back_ends_the_call_with_a_reason() -> None:
    call = make_call(reconnect=Reconnect(attempts=2, initial_backoff_s=0.1))
    ready(call)
    now = 1.0
    call.agent_lost(now, "gone")
    for _ in range(2):
        now = call.next_deadline() or now
        call.tick(now)
        assert isinstance(drain(call)[3][-1], ConnectAgent)
        call.agent_lost(now, "refused")
    to_vaic, _, events, _ = drain(call)
    hangup = to_vaic[-1]
    assert isinstance(hangup, ac.OutboundActivities)
    assert hangup.activities[0].name == "hangup"
    assert hangup.activities[0].activity_params == {"hangupReason": "agent unavailable"}
    assert any(isinstance(e, ev.BridgeErrorEvent) and e.fatal for e in events)
    call.vaic(ac.SessionEnd(conversation_id="conv-1", reason_code="bot-disconnected"), now)
    (end,) = [e for e in drain(call)[2] if isinstance(e, ev.SessionEndEvent)]
    assert end.reason == "error" and end.reason_code == "bot-disconnected"


def test_an_agent_refusal_for_good_hangs_up_at_once_without_a_retry() -> None:
    call = make_call()
    drain(call)
    call.agent_rejected(0.5, "the agent refused the API key (HTTP 401) at wss://x", 401)
    to_vaic, _, events, actions = drain(call)
    assert not any(isinstance(a, ConnectAgent) for a in actions)
    (hangup,) = to_vaic
    assert isinstance(hangup, ac.OutboundActivities)
    assert hangup.activities[0].activity_params == {
        "hangupReason": "agent refused the connection (HTTP 401)"}
    (error,) = events
    assert isinstance(error, ev.BridgeErrorEvent)
    assert (error.code, error.source, error.fatal, error.status) == (
        "AGENT_REJECTED", "deepgram", True, 401)
    call.tick(10.0)  # no retry is ever due
    assert not any(isinstance(a, ConnectAgent) for a in drain(call)[3])


def test_fatal_agent_error_hangs_up() -> None:
    call = make_call()
    ready(call)
    call.agent(dg.Error(code="INVALID_SETTINGS", description="bad voice"), 1.0)
    to_vaic, _, events, _ = drain(call)
    assert any(isinstance(e, ev.BridgeErrorEvent) and e.code == "INVALID_SETTINGS" for e in events)
    assert isinstance(to_vaic[-1], ac.OutboundActivities)
    params = to_vaic[-1].activities[0].activity_params
    assert params == {"hangupReason": "agent error INVALID_SETTINGS"}
    assert call.state is CallState.ENDING


def test_session_end_is_emitted_once() -> None:
    call = make_call()
    ready(call)
    call.vaic(ac.SessionEnd(conversation_id="conv-1", reason_code="client-disconnected"), 1.0)
    call.vaic_lost(1.1)
    call.tick(100.0)
    ends = [e for e in drain(call)[2] if isinstance(e, ev.SessionEndEvent)]
    assert len(ends) == 1 and ends[0].reason == "caller"


def test_out_of_order_message_names_state_type_and_call() -> None:
    call = make_call()
    ready(call)
    with pytest.raises(RemoteProtocolError, match=r"conv-1.*session.initiate.*active"):
        call.vaic(ac.SessionInitiate(conversation_id="conv-1"), 1.0)


def test_wav_formats_strip_and_write_headers() -> None:
    call = make_call("wav/lpcm16")
    ready(call)
    fmt = FORMATS["wav/lpcm16"]
    call.vaic(ac.UserStreamChunk(audio_chunk=wav_header(fmt, 640) + FRAME), 0.0)
    assert drain(call)[1] == [FRAME]
    call.agent_audio(FRAME, 0.0)
    call.agent(dg.AgentAudioDone(), 0.0)
    to_vaic = drain(call)[0]
    chunk = to_vaic[1]
    assert isinstance(chunk, ac.PlayStreamChunk)
    assert chunk.audio_chunk.startswith(b"RIFF") and chunk.audio_chunk.endswith(FRAME)


def test_keepalive_while_no_caller_audio_flows() -> None:
    call = make_call(limits=Limits(keepalive_s=8))
    ready(call)
    assert call.next_deadline() == 8.0
    call.tick(8.0)
    assert drain(call)[1] == [dg.KeepAlive()]


def test_function_call_round_trip_and_cancellation() -> None:
    call = make_call()
    ready(call)
    fn = dg.FunctionCall(id="f1", name="lookup", arguments='{"n":1}', client_side=True)
    call.agent(dg.FunctionCallRequest(functions=(fn,)), 1.0)
    (event,) = drain(call)[2]
    assert isinstance(event, ev.FunctionCallRequestEvent) and event.functions == (fn,)
    call.send_to_agent(dg.FunctionCallResponse(id="f1", name="lookup", content="42"), 1.1)
    assert drain(call)[1] == [dg.FunctionCallResponse(id="f1", name="lookup", content="42")]
    record = call.transcript.history()[-1].function_calls
    assert record == (dg.FunctionCallRecord(id="f1", name="lookup", client_side=True,
                                            arguments='{"n":1}', response="42"),)
    call.agent(dg.FunctionCallCancelled(functions=(dg.CancelledFunction(id="f2"),)), 1.2)
    call.send_to_agent(dg.FunctionCallResponse(id="f2", name="lookup", content="late"), 1.3)
    assert drain(call)[1] == []


def test_commands_after_the_end_raise() -> None:
    call = make_call()
    ready(call)
    call.end(1.0, "ended")
    with pytest.raises(SessionClosedError):
        call.send_to_agent(dg.InjectAgentMessage(message="hi"), 2.0)


def test_hangup_waits_for_the_goodbye_to_play() -> None:
    call = make_call(lead_ms=100)
    ready(call)
    call.agent_audio(bytes(PCM16.frame_bytes(500)), 0.0)
    call.agent(dg.AgentAudioDone(), 0.0)
    drain(call)
    call.hangup(0.0, "done")
    assert call.state is CallState.ACTIVE  # the goodbye is still playing
    now = 0.0
    sent = []
    while call.state is CallState.ACTIVE:
        now = call.next_deadline() or now
        call.tick(now)
        sent += drain(call)[0]
    assert now == pytest.approx(0.5)
    assert isinstance(sent[-2], ac.PlayStreamStop)
    hangup = sent[-1]
    assert isinstance(hangup, ac.OutboundActivities)
    assert hangup.activities[0].activity_params == {"hangupReason": "done"}


def test_back_to_back_utterances_each_get_a_stream() -> None:
    call = make_call(lead_ms=100)
    ready(call)
    call.agent(dg.ConversationText(role="assistant", content="One."), 0.0)
    call.agent_audio(bytes(PCM16.frame_bytes(200)), 0.0)
    call.agent(dg.AgentAudioDone(), 0.0)
    call.agent(dg.ConversationText(role="assistant", content="Two."), 0.01)  # still playing One
    call.agent_audio(bytes(PCM16.frame_bytes(200)), 0.01)
    call.agent(dg.AgentAudioDone(), 0.01)
    sent: list[object] = []
    now = 0.0
    while (deadline := call.next_deadline()) is not None and deadline < 1.0:
        now = max(now, deadline)
        call.tick(now)
        sent += drain(call)[0]
    sent = [m for m in sent if not isinstance(m, ac.PlayStreamChunk)]
    assert sent == [
        ac.PlayStreamStart(stream_id="1", media_format="raw/lpcm16", alt_text="One."),
        ac.PlayStreamStop(stream_id="1"),
        ac.PlayStreamStart(stream_id="2", media_format="raw/lpcm16", alt_text="Two."),
        ac.PlayStreamStop(stream_id="2"),
    ]


def test_application_hangup_after_the_end_raises() -> None:
    call = make_call()
    ready(call)
    call.vaic(ac.SessionEnd(conversation_id="conv-1"), 1.0)
    with pytest.raises(SessionClosedError):
        call.end_session(2.0, "late")


def test_caller_audio_can_go_in_larger_frames() -> None:
    call = make_call(limits=Limits(caller_frame_ms=60))
    ready(call)
    for i in range(7):
        call.vaic(ac.UserStreamChunk(conversation_id="conv-1", audio_chunk=bytes([i]) * 640), 0.0)
    sent = drain(call)[1]
    assert [len(f) for f in sent] == [1920, 1920]  # 3 x 20 ms each; the 7th waits
    assert sent[1] == bytes([3]) * 640 + bytes([4]) * 640 + bytes([5]) * 640


def test_larger_frames_never_strand_the_last_bit_of_audio() -> None:
    call = make_call(lead_ms=100, limits=Limits(caller_frame_ms=60))
    ready(call)
    call.vaic(ac.UserStreamChunk(conversation_id="conv-1", audio_chunk=FRAME), 1.0)
    assert drain(call)[1] == []
    assert call.next_deadline() == pytest.approx(1.06)
    call.tick(1.06)
    assert drain(call)[1] == [FRAME]  # sent after one frame's time, not held forever
    # The play side too: a short last chunk goes once what was sent has played.
    call.playout.chunk_bytes = PCM16.frame_bytes(40)
    call.agent_audio(FRAME * 3, 2.0)  # 60 ms: one 40 ms chunk and 20 ms left over
    chunks = [m for m in drain(call)[0] if isinstance(m, ac.PlayStreamChunk)]
    assert [len(c.audio_chunk) for c in chunks] == [1280]
    assert call.next_deadline() == pytest.approx(2.04)
    call.tick(2.04)
    chunks = [m for m in drain(call)[0] if isinstance(m, ac.PlayStreamChunk)]
    assert [len(c.audio_chunk) for c in chunks] == [640]
