"""The Call state machine without sockets: a scripted VAIC and a scripted agent around one
call, on a clock moved by hand (:class:`acdg_asgi.testing.CallPair`)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from acdg_asgi import events as ev
from acdg_asgi.audio import FORMATS, wav_header
from acdg_asgi.call import Call, CallState, CloseAgent, CloseVaic, ConnectAgent
from acdg_asgi.config import Limits, Playout, Reconnect
from acdg_asgi.errors import RemoteProtocolError, SessionClosedError
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.testing import CallPair

PCM16 = FORMATS["raw/lpcm16"]
FRAME = bytes(640)  # 20 ms at 16 kHz


def pair(
    fmt: str = "raw/lpcm16", *, lead_ms: int = 100, limits: Limits | None = None,
    reconnect: Reconnect | None = None,
) -> CallPair:
    """A new call (its greeting "Hello!"); the agent not connected yet."""
    return CallPair(fmt, agent=dg.AgentSettings(greeting="Hello!"), caller="+1555",
                    playout=Playout(lead_ms=lead_ms, chunk_ms=20), limits=limits,
                    reconnect=reconnect)


START = {"type": "event", "name": "start",
         "parameters": {"caller": "+1555", "callee": "+1800", "X-Account": "42"}}


def answered(**kwargs: object) -> CallPair:
    """A call whose VAIC start has come and whose agent is ready, what that took taken."""
    p = pair(**kwargs)  # type: ignore[arg-type]
    p.vaic.send(ac.Activities(activities=(START,)))
    p.agent.ready()
    p.take()
    return p


def chunks(messages: list[ac.OutboundMessage]) -> list[ac.PlayStreamChunk]:
    return [m for m in messages if isinstance(m, ac.PlayStreamChunk)]


def test_initiate_accepts_and_asks_for_an_agent() -> None:
    p = pair()
    to_vaic, to_agent, events, actions = p.take()
    assert to_vaic == [ac.SessionAccepted(media_format="raw/lpcm16")]
    assert to_agent == []
    assert events == []  # session_start waits for VAIC's start, a short while
    assert actions == [ConnectAgent(attempt=1)]
    assert p.call.next_deadline() == Limits().start_wait_s
    p.advance(Limits().start_wait_s)
    (start,) = p.take().events
    assert isinstance(start, ev.SessionStartEvent)
    assert start.caller == "+1555" and start.details is None


def test_welcome_sends_settings_for_the_negotiated_format() -> None:
    p = pair("raw/mulaw")
    p.take()
    p.agent.connect()
    (settings,) = p.take().agent
    assert isinstance(settings, dg.Settings)
    assert settings.audio.input == dg.AudioInput(encoding="mulaw", sample_rate=8000)
    assert settings.audio.output == dg.AudioOutput(
        encoding="mulaw", sample_rate=8000, container="none"
    )
    assert settings.agent.greeting == "Hello!"
    assert b'"sample_rate":8000' in dg.encode(settings)


def test_caller_audio_waits_for_settings_applied_in_a_bounded_buffer() -> None:
    p = pair(limits=Limits(pre_ready_audio_ms=100))
    p.take()
    for i in range(10):
        p.vaic.chunk(bytes([i]) * 640)
    assert p.take().agent == []
    p.agent.ready()
    sent = [m for m in p.take().agent if isinstance(m, bytes)]
    assert [m[0] for m in sent] == [5, 6, 7, 8, 9]  # the newest 100 ms survive
    assert p.call.stats.caller_frames_dropped == 5
    p.advance(0.1)
    p.vaic.chunk(FRAME)
    assert p.take().agent == [FRAME]


def test_user_transcript_goes_out_as_recognition_with_alternatives() -> None:
    p = answered()
    p.advance(1.0)
    p.agent.send(dg.ConversationText(role="user", content="pay my bill"))
    to_vaic, _, events, _ = p.take()
    assert to_vaic == [
        ac.UserStreamSpeechRecognition(alternatives=(ac.Alternative(text="pay my bill"),)),
        ac.UserStreamSpeechCommitted(),
    ]
    assert b'"alternatives":[{"text":"pay my bill"}]' in ac.encode(to_vaic[0])
    assert events == [
        ev.ConversationTextEvent(session_id=p.call.session_id, conversation_id="conv-1",
                                 at=1.0, role="user", content="pay my bill")
    ]


def test_agent_audio_is_paced_a_lead_ahead_of_real_time() -> None:
    p = answered(lead_ms=100)
    p.agent.send(dg.ConversationText(role="assistant", content="Sure."))
    p.agent.audio(bytes(PCM16.frame_bytes(1000)))  # one second, in one burst
    to_vaic = p.vaic.take()
    assert isinstance(to_vaic[0], ac.PlayStreamStart)
    assert to_vaic[0].alt_text == "Sure." and to_vaic[0].media_format == "raw/lpcm16"
    assert len(chunks(to_vaic)) == 5  # 100 ms lead
    sent_ms = 100.0
    while (deadline := p.call.next_deadline()) is not None and deadline < 2.0:
        assert deadline >= p.now
        p.step()
        for m in chunks(p.vaic.take()):
            sent_ms += PCM16.duration_ms(len(m.audio_chunk))
            assert sent_ms - p.now * 1000 <= 100 + 20 + 1e-6  # never more than the lead ahead
    assert sent_ms == pytest.approx(1000)
    p.agent.send(dg.AgentAudioDone())
    p.advance(0)
    assert any(isinstance(m, ac.PlayStreamStop) for m in p.vaic.take())


def test_barge_in_stops_the_stream_and_drops_the_rest_of_the_turn() -> None:
    p = answered(lead_ms=100)
    p.agent.audio(bytes(PCM16.frame_bytes(3000)))
    start = p.vaic.take()[0]
    assert isinstance(start, ac.PlayStreamStart)
    p.advance(0.06)
    p.take()
    p.agent.send(dg.UserStartedSpeaking())
    to_vaic, _, events, _ = p.take()
    assert to_vaic == [
        ac.PlayStreamStop(stream_id=start.stream_id), ac.UserStreamSpeechStarted()
    ]
    (event,) = events
    assert isinstance(event, ev.UserStartedSpeakingEvent) and event.interrupted
    assert event.agent_audio_sent_ms == pytest.approx(160)  # what played and the 100 ms lead
    assert event.agent_audio_heard_ms == pytest.approx(60)
    assert event.agent_audio_dropped_ms == pytest.approx(2840)
    # Late frames of the interrupted turn are dropped until the agent's next turn.
    p.advance(0.01)
    p.agent.audio(FRAME)
    assert p.vaic.take() == [] and p.call.next_deadline() is not None
    p.advance(0.43)
    p.agent.send(dg.ConversationText(role="assistant", content="Go on."))
    p.agent.audio(FRAME * 3)
    new_start = p.vaic.take()[0]
    assert isinstance(new_start, ac.PlayStreamStart) and new_start.stream_id != start.stream_id


def test_resume_keeps_the_call_and_the_agent_audio() -> None:
    p = answered(limits=Limits(resume_grace_s=30))
    p.advance(1.0)
    p.vaic.lose()
    assert p.call.state is CallState.DETACHED
    p.advance(1.0)
    p.agent.audio(FRAME * 10)
    assert p.vaic.take() == []  # nowhere to send it yet
    p.advance(1.5)
    p.vaic.resume()
    to_vaic, _, events, _ = p.take()
    assert to_vaic == [ac.SessionAccepted(media_format="raw/lpcm16")]
    assert isinstance(events[0], ev.SessionResumedEvent) and events[0].gap_ms == 2500
    p.advance(0)
    assert len(chunks(p.vaic.take())) == 5  # the buffered audio plays, paced


def test_resume_grace_runs_out() -> None:
    p = answered(limits=Limits(resume_grace_s=5, agent_ping_s=60))
    p.advance(1.0)
    p.vaic.lose()
    assert p.call.next_deadline() == 6.0
    p.advance(5.0)
    _, _, events, actions = p.take()
    (end,) = events
    assert isinstance(end, ev.SessionEndEvent) and end.reason == "timeout"
    assert CloseAgent() in actions and CloseVaic(reason="timeout") in actions
    p.advance(1.0)
    with pytest.raises(SessionClosedError):
        p.vaic.resume()


def test_agent_reconnect_replays_history_without_greeting() -> None:
    p = answered(reconnect=Reconnect(attempts=3, initial_backoff_s=0.5))
    p.advance(0.1)
    p.agent.send(dg.ConversationText(role="assistant", content="Hello!"))
    p.advance(0.9)
    p.agent.send(dg.ConversationText(role="user", content="Hi there"))
    p.advance(1.0)
    p.take()
    p.agent.lose("connection lost")
    assert p.take().actions == []
    assert p.call.next_deadline() == 2.0  # first retry at once
    p.advance(0)
    assert p.take().actions == [ConnectAgent(attempt=2)]
    p.advance(0.1)
    p.agent.connect()
    (settings,) = p.take().agent
    assert isinstance(settings, dg.Settings)
    assert settings.agent.greeting is None
    assert settings.agent.context == dg.Context(messages=(
        dg.History(role="assistant", content="Hello!"), dg.History(role="user", content="Hi there"),
    ))
    p.advance(0.1)
    p.agent.ready()
    (event,) = p.take().events
    assert isinstance(event, ev.AgentReconnectedEvent) and event.gap_ms == pytest.approx(200)


def test_agent_that_never_comes_back_ends_the_call_with_a_reason() -> None:
    p = answered(reconnect=Reconnect(attempts=2, initial_backoff_s=0.1))
    p.advance(1.0)
    p.agent.lose("gone")
    for _ in range(2):
        p.step()
        assert isinstance(p.actions[-1], ConnectAgent)
        p.agent.lose("refused")
    to_vaic, _, events, _ = p.take()
    hangup = to_vaic[-1]
    assert isinstance(hangup, ac.OutboundActivities)
    assert hangup.activities[0].name == "hangup"
    assert hangup.activities[0].activity_params == {"hangupReason": "agent unavailable"}
    assert any(isinstance(e, ev.BridgeErrorEvent) and e.fatal for e in events)
    p.vaic.end(reason_code="bot-disconnected")
    (end,) = [e for e in p.take().events if isinstance(e, ev.SessionEndEvent)]
    assert end.reason == "error" and end.reason_code == "bot-disconnected"


def test_an_agent_refusal_for_good_hangs_up_at_once_without_a_retry() -> None:
    p = pair()
    p.advance(0.5)
    p.take()
    p.agent.reject("the agent refused the API key (HTTP 401) at wss://x", 401)
    to_vaic, _, events, actions = p.take()
    assert not any(isinstance(a, ConnectAgent) for a in actions)
    (hangup,) = to_vaic
    assert isinstance(hangup, ac.OutboundActivities)
    assert hangup.activities[0].activity_params == {
        "hangupReason": "agent refused the connection (HTTP 401)"}
    (error,) = events
    assert isinstance(error, ev.BridgeErrorEvent)
    assert (error.code, error.source, error.fatal, error.status) == (
        "AGENT_REJECTED", "deepgram", True, 401)
    p.advance(9.5)  # no retry is ever due
    assert not any(isinstance(a, ConnectAgent) for a in p.take().actions)


def test_fatal_agent_error_hangs_up() -> None:
    p = answered()
    p.advance(1.0)
    p.agent.send(dg.Error(code="INVALID_SETTINGS", description="bad voice"))
    to_vaic, _, events, _ = p.take()
    assert any(isinstance(e, ev.BridgeErrorEvent) and e.code == "INVALID_SETTINGS" for e in events)
    assert isinstance(to_vaic[-1], ac.OutboundActivities)
    params = to_vaic[-1].activities[0].activity_params
    assert params == {"hangupReason": "agent error INVALID_SETTINGS"}
    assert p.call.state is CallState.ENDING


def test_session_end_is_emitted_once() -> None:
    p = answered()
    p.advance(1.0)
    p.vaic.end()
    p.advance(0.1)
    p.vaic.lose()
    p.advance(99.0)
    ends = [e for e in p.take().events if isinstance(e, ev.SessionEndEvent)]
    assert len(ends) == 1 and ends[0].reason == "caller"


def test_out_of_order_message_names_state_type_and_call() -> None:
    p = answered()
    p.advance(1.0)
    with pytest.raises(RemoteProtocolError, match=r"conv-1.*session.initiate.*active"):
        p.vaic.send(ac.SessionInitiate())


def test_wav_formats_strip_and_write_headers() -> None:
    p = answered(fmt="wav/lpcm16")
    fmt = FORMATS["wav/lpcm16"]
    p.vaic.chunk(wav_header(fmt, 640) + FRAME)
    assert p.take().agent == [FRAME]
    p.agent.audio(FRAME)
    p.agent.send(dg.AgentAudioDone())
    chunk = p.vaic.take()[1]
    assert isinstance(chunk, ac.PlayStreamChunk)
    assert chunk.audio_chunk.startswith(b"RIFF") and chunk.audio_chunk.endswith(FRAME)


def test_keepalive_while_no_caller_audio_flows() -> None:
    p = answered(limits=Limits(keepalive_s=8, agent_ping_s=60))
    assert p.call.next_deadline() == 8.0
    p.advance(8.0)
    assert p.take().agent == [dg.KeepAlive()]


def test_function_call_round_trip_and_cancellation() -> None:
    p = answered()
    p.advance(1.0)
    fn = dg.FunctionCall(id="f1", name="lookup", arguments='{"n":1}', client_side=True)
    p.agent.send(dg.FunctionCallRequest(functions=(fn,)))
    (event,) = p.take().events
    assert isinstance(event, ev.FunctionCallRequestEvent) and event.functions == (fn,)
    p.advance(0.1)
    response = dg.FunctionCallResponse(id="f1", name="lookup", content="42")
    p.command(lambda call, now: call.send_to_agent(response, now))
    assert p.take().agent == [response]
    record = p.call.transcript.history()[-1].function_calls
    assert record == (dg.FunctionCallRecord(id="f1", name="lookup", client_side=True,
                                            arguments='{"n":1}', response="42"),)
    p.advance(0.1)
    p.agent.send(dg.FunctionCallCancelled(functions=(dg.CancelledFunction(id="f2"),)))
    p.advance(0.1)
    late = dg.FunctionCallResponse(id="f2", name="lookup", content="late")
    p.command(lambda call, now: call.send_to_agent(late, now))
    assert p.take().agent == []


def test_commands_after_the_end_raise() -> None:
    p = answered()
    p.advance(1.0)
    p.command(lambda call, now: call.end(now, "ended"))
    p.advance(1.0)
    with pytest.raises(SessionClosedError):
        p.command(lambda call, now: call.send_to_agent(dg.InjectAgentMessage(message="hi"), now))


def test_hangup_waits_for_the_goodbye_to_play() -> None:
    p = answered(lead_ms=100)
    p.agent.audio(bytes(PCM16.frame_bytes(500)))
    p.agent.send(dg.AgentAudioDone())
    p.take()
    p.command(lambda call, now: call.hangup(now, "done"))
    assert p.call.state is CallState.ACTIVE  # the goodbye is still playing
    while p.call.state is CallState.ACTIVE:
        assert p.step() is not None
    assert p.now == pytest.approx(0.5)
    sent = p.vaic.take()
    assert isinstance(sent[-2], ac.PlayStreamStop)
    hangup = sent[-1]
    assert isinstance(hangup, ac.OutboundActivities)
    assert hangup.activities[0].activity_params == {"hangupReason": "done"}


def test_back_to_back_utterances_each_get_a_stream() -> None:
    p = answered(lead_ms=100)
    p.agent.send(dg.ConversationText(role="assistant", content="One."))
    p.agent.audio(bytes(PCM16.frame_bytes(200)))
    p.agent.send(dg.AgentAudioDone())
    p.advance(0.01)  # still playing One
    p.agent.send(dg.ConversationText(role="assistant", content="Two."))
    p.agent.audio(bytes(PCM16.frame_bytes(200)))
    p.agent.send(dg.AgentAudioDone())
    p.advance(1.0)
    sent = [m for m in p.vaic.take() if not isinstance(m, ac.PlayStreamChunk)]
    assert sent == [
        ac.PlayStreamStart(stream_id="1", media_format="raw/lpcm16", alt_text="One."),
        ac.PlayStreamStop(stream_id="1"),
        ac.PlayStreamStart(stream_id="2", media_format="raw/lpcm16", alt_text="Two."),
        ac.PlayStreamStop(stream_id="2"),
    ]


def test_application_hangup_after_the_end_raises() -> None:
    p = answered()
    p.advance(1.0)
    p.vaic.end()
    p.advance(1.0)
    with pytest.raises(SessionClosedError):
        p.command(lambda call, now: call.end_session(now, "late"))


def test_caller_audio_can_go_in_larger_frames() -> None:
    p = answered(limits=Limits(caller_frame_ms=60))
    for i in range(7):
        p.vaic.chunk(bytes([i]) * 640)
    sent = p.take().agent
    assert [len(f) for f in sent] == [1920, 1920]  # 3 x 20 ms each; the 7th waits
    assert sent[1] == bytes([3]) * 640 + bytes([4]) * 640 + bytes([5]) * 640


def test_larger_frames_never_strand_the_last_bit_of_audio() -> None:
    p = answered(lead_ms=100, limits=Limits(caller_frame_ms=60))
    p.advance(1.0)
    p.vaic.chunk(FRAME)
    assert p.take().agent == []
    assert p.call.next_deadline() == pytest.approx(1.06)
    p.step()
    assert p.take().agent == [FRAME]  # sent after one frame's time, not held forever
    # The play side too: a short last chunk goes once what was sent has played.
    p.call.playout.chunk_bytes = PCM16.frame_bytes(40)
    p.advance(0.94)
    p.agent.audio(FRAME * 3)  # 60 ms: one 40 ms chunk and 20 ms left over
    assert [len(c.audio_chunk) for c in chunks(p.vaic.take())] == [1280]
    assert p.call.next_deadline() == pytest.approx(2.04)
    p.step()
    assert [len(c.audio_chunk) for c in chunks(p.vaic.take())] == [640]


# --- rules the socket tests cover end to end, here one at a time --------------------------


def test_a_hangup_during_a_turn_waits_for_its_end_without_waking_the_call_meanwhile() -> None:
    p = answered(lead_ms=100)
    p.agent.send(dg.ConversationText(role="assistant", content="Let me see."))
    p.agent.audio(bytes(PCM16.frame_bytes(100)))  # the agent pauses mid-turn
    p.advance(0.5)  # all of it played; the turn is not over
    p.take()
    p.command(lambda call, now: call.hangup(now, "bye"))
    # Nothing for time to do until the agent goes on (or the goodbye's limit): the pair
    # fails the test if the call asks to be woken for a time already past.
    p.advance(2.0)
    assert p.vaic.take() == [] and p.call.state is CallState.ACTIVE
    p.agent.audio(bytes(PCM16.frame_bytes(60)))
    p.agent.send(dg.AgentAudioDone())
    p.advance(0.2)
    sent = [m for m in p.vaic.take() if not isinstance(m, ac.PlayStreamChunk)]
    assert [type(m) for m in sent] == [ac.PlayStreamStop, ac.OutboundActivities]
    assert p.call.state is CallState.ENDING


def test_the_goodbye_waits_15_seconds_at_most() -> None:
    p = answered(lead_ms=100)
    p.agent.audio(bytes(PCM16.frame_bytes(100)))  # a turn that never ends
    p.command(lambda call, now: call.hangup(now, "bye"))
    p.advance(14.9)
    assert p.call.state is CallState.ACTIVE
    p.advance(0.2)
    assert p.call.state is CallState.ENDING
    to_vaic = p.vaic.take()
    assert isinstance(to_vaic[-2], ac.PlayStreamStop)  # the stream is closed first
    assert isinstance(to_vaic[-1], ac.OutboundActivities)


def test_a_transfer_waits_for_the_goodbye_too() -> None:
    p = answered(lead_ms=100)
    p.agent.audio(bytes(PCM16.frame_bytes(300)))
    p.agent.send(dg.AgentAudioDone())
    transfer = ac.Activity(type="event", name="transfer",
                           activity_params={"transferTarget": "tel:+15550001111"})
    p.command(lambda call, now: call.transfer_call(now, transfer))
    p.advance(0.25)
    assert not any(isinstance(m, ac.OutboundActivities) for m in p.vaic.received)
    p.advance(0.1)
    assert p.vaic.received[-1] == ac.OutboundActivities(activities=(transfer,))
    p.vaic.end(reason_code="transferred", reason="transferred")
    (end,) = [e for e in p.events if isinstance(e, ev.SessionEndEvent)]
    assert (end.reason, end.detail) == ("transfer", "tel:+15550001111")


def test_a_turn_made_while_detached_plays_whole_and_once_after_the_resume() -> None:
    p = answered(lead_ms=100, limits=Limits(resume_grace_s=10))
    p.vaic.lose()
    p.agent.send(dg.ConversationText(role="assistant", content="While you were away."))
    audio = bytes(range(256)) * 50  # 12800 bytes, 400 ms
    p.agent.audio(audio)
    p.agent.send(dg.AgentAudioDone())
    p.advance(1.0)
    assert p.vaic.take() == []
    p.vaic.resume()
    p.advance(1.0)
    start, *middle, stop = p.vaic.take()[1:]
    assert start == ac.PlayStreamStart(stream_id="1", media_format="raw/lpcm16",
                                       alt_text="While you were away.")
    assert b"".join(c.audio_chunk for c in chunks(middle)) == audio  # all of it, once
    assert stop == ac.PlayStreamStop(stream_id="1")


def test_a_stream_cut_by_a_lost_socket_goes_on_as_a_new_stream_after_the_resume() -> None:
    p = answered(lead_ms=100, limits=Limits(resume_grace_s=10))
    p.agent.send(dg.ConversationText(role="assistant", content="A long answer."))
    audio = bytes(range(256)) * 100  # 800 ms
    p.agent.audio(audio)
    p.agent.send(dg.AgentAudioDone())
    p.advance(0.2)
    before = p.vaic.take()
    old = before[0]
    assert isinstance(old, ac.PlayStreamStart) and not isinstance(before[-1], ac.PlayStreamStop)
    p.vaic.lose()
    p.advance(1.0)
    p.vaic.resume()
    p.advance(1.0)
    after = p.vaic.take()[1:]
    new = after[0]
    assert isinstance(new, ac.PlayStreamStart) and new.stream_id != old.stream_id
    assert new.alt_text == "A long answer."
    assert after[-1] == ac.PlayStreamStop(stream_id=new.stream_id)  # no stop for the old one
    assert b"".join(c.audio_chunk for c in chunks(before + after)) == audio


def test_a_resume_before_the_old_socket_is_noticed_lost_takes_over() -> None:
    p = answered(limits=Limits(resume_grace_s=10))
    p.advance(1.0)
    p.vaic.resume()  # the old socket still looks alive
    to_vaic, _, events, actions = p.take()
    assert to_vaic == [ac.SessionAccepted(media_format="raw/lpcm16")]
    assert [type(e) for e in events] == [ev.SessionResumedEvent]
    assert actions == [] and p.call.state is CallState.ACTIVE


def test_a_connection_lost_before_settings_applied_still_greets_once() -> None:
    p = pair(reconnect=Reconnect(attempts=2, initial_backoff_s=0.1))
    p.agent.connect()
    assert p.agent.settings is not None and p.agent.settings.agent.greeting == "Hello!"
    p.agent.lose("connection lost")
    p.step()
    assert p.actions[-1] == ConnectAgent(attempt=2)
    p.agent.connect("request-2")
    settings = p.agent.settings
    assert settings is not None and settings.agent.greeting == "Hello!"  # not said yet
    assert settings.agent.context is None
    p.agent.ready()
    # Once the greeting is part of the conversation, a reconnect does not say it again.
    p.agent.send(dg.ConversationText(role="assistant", content="Hello!"))
    p.agent.lose("connection lost")
    p.step()
    p.agent.connect("request-3")
    settings = p.agent.settings
    assert settings is not None and settings.agent.greeting is None
    assert settings.agent.context == dg.Context(
        messages=(dg.History(role="assistant", content="Hello!"),))


def test_caller_audio_during_a_reconnect_reaches_the_new_connection() -> None:
    p = answered(reconnect=Reconnect(attempts=2, initial_backoff_s=0.1))
    p.agent.lose("connection lost")
    frames = [bytes([i]) * 640 for i in range(25)]
    for frame in frames:
        p.vaic.chunk(frame)
        p.advance(0.02)
    assert p.take().agent == []  # nobody to send it to
    p.agent.ready()
    assert [m for m in p.agent.take() if isinstance(m, bytes)] == frames  # in order, once


def test_an_agent_lost_mid_answer_plays_what_came_and_closes_the_stream() -> None:
    p = answered(lead_ms=100, reconnect=Reconnect(attempts=2, initial_backoff_s=0.1))
    p.agent.send(dg.ConversationText(role="assistant", content="Cut short"))
    p.agent.audio(bytes(PCM16.frame_bytes(300)))
    p.advance(0.05)
    p.agent.lose("connection lost")  # no AgentAudioDone will come
    p.advance(0.5)
    streams = [m for m in p.vaic.take() if not isinstance(m, ac.PlayStreamChunk)]
    assert streams == [
        ac.PlayStreamStart(stream_id="1", media_format="raw/lpcm16", alt_text="Cut short"),
        ac.PlayStreamStop(stream_id="1"),
    ]
    assert p.call.stats.play_bytes == PCM16.frame_bytes(300)


def test_caller_speech_while_the_agent_is_silent_is_no_barge_in() -> None:
    p = answered()
    p.advance(1.0)
    p.agent.send(dg.UserStartedSpeaking())
    to_vaic, _, events, _ = p.take()
    assert to_vaic == [ac.UserStreamSpeechStarted()]
    (event,) = events
    assert isinstance(event, ev.UserStartedSpeakingEvent) and not event.interrupted
    assert event.agent_audio_sent_ms == 0 and p.call.stats.barge_ins == 0
    p.agent.audio(FRAME * 5)  # the agent's answer is not discarded
    assert len(chunks(p.vaic.take())) == 5


def test_after_a_barge_in_the_next_turn_starts_with_the_agent_speaking_again() -> None:
    p = answered(lead_ms=100)
    p.agent.audio(bytes(PCM16.frame_bytes(1000)))
    p.advance(0.1)
    p.agent.send(dg.UserStartedSpeaking())
    p.take()
    p.agent.audio(FRAME * 5)  # the rest of the interrupted turn: dropped
    assert p.vaic.take() == []
    p.advance(0.5)
    p.agent.send(dg.AgentStartedSpeaking(total_latency=0.4))
    p.agent.audio(FRAME * 5)
    to_vaic = p.vaic.take()
    assert isinstance(to_vaic[0], ac.PlayStreamStart) and len(chunks(to_vaic)) == 5


def test_playout_overflow_drops_the_oldest_audio_counts_it_and_says_so() -> None:
    p = answered(lead_ms=100, limits=Limits(resume_grace_s=10))
    p.call.playout.max_buffer = PCM16.frame_bytes(200)
    p.vaic.lose()  # nothing plays out meanwhile
    p.agent.audio(bytes(PCM16.frame_bytes(500)))
    assert p.call.playout.pending == PCM16.frame_bytes(200)
    assert p.call.stats.play_bytes_dropped == PCM16.frame_bytes(300)
    (warning,) = p.take().events
    assert isinstance(warning, ev.WarningEvent) and warning.code == "PLAYOUT_OVERFLOW"
    assert str(PCM16.frame_bytes(300)) in warning.description


def test_the_pair_fails_a_call_that_would_be_woken_without_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = answered()
    monkeypatch.setattr(Call, "next_deadline", lambda self: 0.5)  # slots: not on the call
    with pytest.raises(AssertionError, match="without end"):
        p.advance(1.0)


def test_the_readme_example_runs_as_written() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    (example,) = [textwrap.dedent(b) for b in blocks if "import CallPair" in textwrap.dedent(b)]
    exec(compile(example, "README.md", "exec"), {})  # its own assert checks the result
