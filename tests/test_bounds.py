"""The bounds that keep a hostile or broken peer from hurting a call, without sockets:
decoding, the read budget, folded warnings, the playout after a stall, agent liveness
and the dead-air budget, driven with a hand-moved clock. The same bounds over real
sockets, beside healthy calls: test_hostile.py."""

from __future__ import annotations

import json
import logging
from typing import Any

import msgspec
import pytest

from acdg_asgi import events as ev
from acdg_asgi.audio import FORMATS
from acdg_asgi.call import Call, CallState, CloseAgent, PingAgent
from acdg_asgi.call import commands as cmd
from acdg_asgi.call.fold import Fold
from acdg_asgi.call.playout import PlayoutClock
from acdg_asgi.call.state import Timer
from acdg_asgi.config import AgentConfig, Budget, Limits, Playout
from acdg_asgi.errors import ConfigError
from acdg_asgi.observability.logs import TextFormatter, get_logger, peer_text
from acdg_asgi.policies import CallOptions, NoInput
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.transports.budget import ReadBudget

PCM16 = FORMATS["raw/lpcm16"]
CHUNK = bytes(640)  # 20 ms at 16 kHz


# --- decoding ----------------------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("where", ["activity", "chunk", "initiate", "top"])
@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deep_nesting_anywhere_is_a_malformed_frame(where: str, depth: int) -> None:
    frames = {
        "activity": '{"type":"activities","activities":[{"type":"event","value":%s}]}',
        "chunk": '{"type":"userStream.chunk","audioChunk":"AAAA","junk":%s}',
        "initiate": '{"type":"session.initiate","conversationId":"c","x":%s}',
        "top": "%s",
    }
    with pytest.raises(ac.DecodeError, match=None if where == "top" else "nested"):
        ac.decode(frames[where] % nested(depth))  # (not an object at all, at the top)


def test_activities_are_bounded_in_number_and_depth() -> None:
    many = {"type": "activities", "activities": [{"type": "event", "name": "DTMF"}] * 65}
    with pytest.raises(ac.DecodeError, match="65 activities"):
        ac.decode(json.dumps(many))
    deep: object = "x"
    for _ in range(33):
        deep = {"a": deep}
    with pytest.raises(ac.DecodeError, match="deeper than 32"):
        ac.decode(json.dumps({"type": "activities", "activities": [{"value": deep}]}))
    fine = ac.decode(json.dumps({"type": "activities", "activities": [{"type": "event"}] * 64}))
    assert isinstance(fine, ac.Activities) and len(fine.activities) == 64


def test_session_end_with_wrong_typed_reasons_still_ends_the_call() -> None:
    msg = ac.decode('{"type":"session.end","conversationId":"c","reasonCode":5,"reason":{}}')
    assert isinstance(msg, ac.SessionEnd)
    assert ac.text_field(msg.reason_code) == "5" and ac.text_field(msg.reason) is None
    call = make_call()
    call.vaic(msg, 1.0)
    (end,) = [e for e in call.events if isinstance(e, ev.SessionEndEvent)]
    assert end.reason == "caller" and end.reason_code == "5"


@pytest.mark.parametrize("cid, problem", [
    ("0f6c2b1e-7a41-4c1b-9a57-2f1d9e3b8c10", None),
    ("", "no conversationId"),
    (None, "no conversationId"),
    ("x" * 129, "129 characters"),
    ("a\nb", "characters other than"),
    ("a/b", "characters other than"),
    ("conv 1", "characters other than"),
])
def test_conversation_id_problem(cid: str | None, problem: str | None) -> None:
    found = ac.conversation_id_problem(cid)
    assert (found is None) if problem is None else (found is not None and problem in found)


# --- logs ----------------------------------------------------------------------------------


def test_peer_text_escapes_control_characters_and_truncates() -> None:
    forged = "c1\n2026-01-01 00:00:00 INFO acdg_asgi.call: [c2] call accepted\r\u202e"
    safe = peer_text(forged)
    assert "\n" not in safe and "\r" not in safe and "\u202e" not in safe
    assert safe.startswith("c1\\x0a2026") and safe.endswith("\\x0d\\u202e")
    long = peer_text("x" * 100_000)
    assert len(long) < 400 and long.endswith("(+99700 chars)")


def test_the_bridges_loggers_make_every_argument_safe(caplog: pytest.LogCaptureFixture) -> None:
    log = get_logger("acdg_asgi.test_bounds")
    with caplog.at_level(logging.INFO, logger="acdg_asgi.test_bounds"):
        log.info("[%s] unknown type %r ignored", "c\nforged", "t" * 10_000)
    (record,) = caplog.records
    line = TextFormatter("%(message)s").format(record)
    assert "\n" not in line and len(line) < 1000


# --- the read budget -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def spend(budget: ReadBudget, size: int = 100) -> float:
    """One frame read, as a reader takes it: the pause it asks for."""
    return budget.take(size)


def test_the_read_budget_lets_a_burst_through_then_paces_then_closes() -> None:
    clock, told = Clock(), []
    budget = ReadBudget(Budget(messages_per_s=100, bytes_per_s=100_000, burst_s=1,
                               warn_after_s=1, close_after_s=3),
                        max_frame_bytes=1000, clock=clock)
    budget.on_over = lambda stage, why: told.append(stage)
    assert [spend(budget, 0) for _ in range(100)] == [0.0] * 100  # the burst allowance
    pause = spend(budget, 0)
    assert pause == pytest.approx(0.05)  # a few frames' worth, not one at a time
    sent = 101
    while budget.closing is None:  # a flood of tiny messages: one pause after another
        clock.now += pause
        for _ in range(5):
            sent += 1
            pause = spend(budget, 0) or pause
            if budget.closing is not None:
                break
    assert told == ["warn", "close"]
    assert 3.0 <= clock.now < 3.2 and sent <= 100 + 100 * clock.now + 5
    assert "over its budget" in budget.closing


def test_large_frames_are_held_to_the_byte_rate() -> None:
    clock = Clock()
    budget = ReadBudget(Budget(messages_per_s=1000, bytes_per_s=100_000, burst_s=1),
                        max_frame_bytes=50_000, clock=clock)
    read = 0
    while clock.now < 10:
        pause = spend(budget, 50_000)
        read += 50_000
        clock.now += pause
    assert read <= 100_000 * (1 + clock.now) + 50_000


def test_an_honest_socket_never_pauses_and_a_short_burst_is_forgiven() -> None:
    clock = Clock()
    budget = ReadBudget(Budget(), max_frame_bytes=256 * 1024, clock=clock)
    for _ in range(3000):  # a minute of 20 ms audio frames, ~1.4 KB each (24 kHz)
        clock.now += 0.02
        assert spend(budget, 1400) == 0.0
    for _ in range(400):  # VAIC flushes a two-second backlog after a network hiccup
        spend(budget, 1400)
    clock.now += 3
    assert spend(budget, 1400) == 0.0 and budget.over_since is None and budget.closing is None


def test_one_frame_of_the_largest_size_always_fits() -> None:
    budget = ReadBudget(Budget(bytes_per_s=1000), max_frame_bytes=256 * 1024, clock=Clock())
    assert spend(budget, 256 * 1024) == 0.0


def test_budget_settings_are_checked() -> None:
    with pytest.raises(ConfigError):
        Budget(messages_per_s=0)
    with pytest.raises(ConfigError):
        Budget(warn_after_s=5, close_after_s=1)


# --- folded repeats --------------------------------------------------------------------------


def test_fold_reports_a_few_then_one_line_per_interval() -> None:
    fold = Fold(5.0, burst=3)
    passed = [fold.add("k", 0.01 * i, f"frame {i}") for i in range(1000)]
    assert passed[:3] == [True] * 3 and not any(passed[3:])
    assert fold.next_deadline == 5.0
    assert fold.due(4.9) == []
    (folded,) = fold.due(5.0)
    assert (folded.count, folded.detail) == (997, "frame 999")
    assert folded.describe() == "997 more in 5 s, the last: frame 999"
    assert fold.add("k", 5.1, "again")  # a new interval
    assert fold.flush() == [] and fold.next_deadline is None


def test_a_call_folds_repeated_warnings_of_one_kind() -> None:
    call = make_call()
    ready(call)
    for i in range(10_000):
        call.protocol_warning(1.0 + i / 10_000, "audiocodes", f"malformed message {i}",
                              "malformed")
    call.protocol_warning(1.5, "audiocodes", "binary frame ignored", "binary")
    warnings = [e for e in drain(call) if isinstance(e, ev.WarningEvent)]
    assert len(warnings) == 4  # three malformed, one binary
    assert call.stats.warnings == 10_001
    call.tick(call.timers.first or 0)
    (summary,) = [e for e in drain(call) if isinstance(e, ev.WarningEvent)]
    assert summary.count == 9997 and "malformed message 9999" in summary.description


# --- the playout after a stall of the bridge -------------------------------------------------


def playout(lead_ms: int = 100) -> PlayoutClock:
    ids = iter(range(1, 100))
    return PlayoutClock(PCM16, lead_ms=lead_ms, chunk_ms=20, max_buffer_ms=60_000,
                        next_stream_id=lambda: str(next(ids)))


def stream_echo(clock: PlayoutClock, start: float, frames: int) -> list[ac.OutboundMessage]:
    """A stream fed at real time, as an echoing agent does."""
    out: list[ac.OutboundMessage] = []
    for i in range(frames):
        now = start + i * 0.02
        chunk = clock.pass_through(CHUNK, now)
        if chunk is not None:
            out.append(chunk)
        else:
            clock.push(CHUNK)
            clock.pull(now, out)
    return out


@pytest.mark.parametrize("notice_first", [True, False])
def test_audio_made_late_by_a_stall_is_skipped_so_no_delay_lasts(notice_first: bool) -> None:
    clock = playout()
    stream_echo(clock, 0.0, 50)
    # The bridge stalls for a second at t=1: the agent's audio for it arrives at once.
    now, out = 2.0, []
    if notice_first:  # under uvloop, timers (the stall watch) run before sockets are read
        assert clock.stalled(now, 1.0)
    for _ in range(50):
        clock.push(CHUNK)
        clock.pull(now, out)
    if not notice_first:
        assert clock.stalled(now, 1.0)
        clock.pull(now, out)
    lag = clock.play_head - now + clock.pending / clock.bytes_per_s
    assert lag <= 0.1 + 0.021  # what is ahead of the caller: the lead, no more
    assert clock.stats.play_bytes_late == PCM16.frame_bytes(900)
    out = stream_echo(clock, now + 0.02, 50)  # and the stream goes on at real time
    assert clock.pending <= 2 * 640


def test_a_gap_from_the_agent_is_a_pause_not_a_loss() -> None:
    clock = playout()
    stream_echo(clock, 0.0, 10)
    out: list[ac.OutboundMessage] = []
    for _ in range(50):  # the next sentence, a second late, all at once
        clock.push(CHUNK)
        clock.pull(1.2, out)
    assert clock.stats.play_bytes_late == 0
    assert clock.pending + sum(len(m.audio_chunk) for m in out
                               if isinstance(m, ac.PlayStreamChunk)) == 50 * 640


def test_a_stall_shorter_than_the_lead_or_between_streams_skips_nothing() -> None:
    clock = playout(lead_ms=200)
    stream_echo(clock, 0.0, 10)
    assert not clock.stalled(0.5, 0.15)
    idle = playout()
    assert not idle.stalled(1.0, 2.0)  # nothing was playing: nothing is late


def test_the_call_warns_once_when_a_stall_skips_audio() -> None:
    call = make_call()
    ready(call)
    call.agent(dg.ConversationText(role="assistant", content="one two"), 0.0)
    for i in range(10):
        call.agent_audio(CHUNK, i * 0.02)
    drain(call)
    call.stalled(1.5, 1.0)
    (warning,) = [e for e in drain(call) if isinstance(e, ev.WarningEvent)]
    assert warning.code == "BRIDGE_STALLED" and "1000 ms" in warning.description


def test_a_playout_that_overflows_holds_at_most_its_bound_plus_the_slack() -> None:
    """Agent audio far faster than real time for a VAIC that takes nothing: the oldest is
    dropped, and the buffer's memory stays within max_buffer and 64 KiB (and the room a
    bytearray keeps to grow)."""
    clock = PlayoutClock(PCM16, lead_ms=100, chunk_ms=20, max_buffer_ms=10_000,
                         next_stream_id=lambda: "1")
    clock.begin("words")
    out: list[ac.OutboundMessage] = []
    for i in range(6000):  # 120 s of audio in 6 s
        clock.push(CHUNK)
        clock.pull(i * 0.001, out)
        assert clock.pending <= clock.max_buffer
        assert clock.held <= (clock.max_buffer + 65536 + len(CHUNK)) * 1.2  # growth room
    assert clock.stats.play_bytes_dropped > 0


# --- agent liveness --------------------------------------------------------------------------


def test_a_silent_agent_connection_is_pinged_then_lost() -> None:
    call = make_call(limits=Limits(agent_ping_s=4, agent_pong_timeout_s=2, keepalive_s=60))
    ready(call)
    assert call.next_deadline() == 4.0
    call.tick(4.0)
    assert PingAgent() in call.actions
    drain(call)
    call.agent_pong(4.1)  # answered: the next ping in four seconds
    assert call.next_deadline() == pytest.approx(8.1)
    call.tick(8.1)
    drain(call)
    assert call.next_deadline() == pytest.approx(10.1)
    call.tick(10.1)  # not answered
    warnings = [e for e in call.events if isinstance(e, ev.WarningEvent)]
    assert CloseAgent() in call.actions
    assert [w.code for w in warnings] == ["AGENT_CONNECTION_LOST"]
    assert "did not answer a ping within 2 s" in warnings[0].description


# --- the dead-air budget ---------------------------------------------------------------------


def test_no_agent_within_the_dead_air_budget_hangs_up_politely() -> None:
    call = make_call(limits=Limits(dead_air_s=3, handshake_timeout_s=60))
    drain(call)
    assert call.next_deadline() == 3.0  # the first connection must be ready by then
    call.tick(3.0)
    hangup = [m for m in call.to_vaic if isinstance(m, ac.OutboundActivities)]
    assert hangup[0].activities[0].activity_params == {"hangupReason": "agent unavailable"}
    (error,) = [e for e in call.events if isinstance(e, ev.BridgeErrorEvent)]
    assert error.code == "AGENT_UNAVAILABLE" and error.fatal and "3 s" in error.message


def test_dead_air_starts_once_the_caller_has_heard_what_the_agent_said() -> None:
    call = make_call(limits=Limits(dead_air_s=2, agent_ping_s=0))
    ready(call)
    call.agent(dg.ConversationText(role="assistant", content="a long answer"), 0.0)
    for _ in range(50):  # one second of audio, sent faster than real time
        call.agent_audio(CHUNK, 0.0)
    call.agent_lost(0.1, "connection lost")
    assert call.timers.first == pytest.approx(3.0)  # 1 s still to play, then 2 s of budget


def test_with_a_hold_prompt_the_caller_hears_it_and_the_reconnects_go_on() -> None:
    url = "https://prompts.example.com/hold.wav"
    call = make_call(limits=Limits(dead_air_s=2, hold_prompt_url=url, agent_ping_s=0))
    ready(call)
    call.agent_lost(1.0, "connection lost")
    drain(call)
    call.tick(3.0)
    (play,) = [m for m in call.to_vaic if isinstance(m, ac.OutboundActivities)]
    assert play.activities[0].name == "playUrl"
    assert play.activities[0].activity_params == {"playUrlUrl": url}
    assert call.is_active and call.on_hold
    drain(call)
    call.agent_connected(4.0)
    call.agent(dg.Welcome(), 4.0)
    call.agent(dg.SettingsApplied(), 4.1)  # back: the hold prompt stops
    (stop,) = [m for m in call.to_vaic if isinstance(m, ac.OutboundActivities)]
    assert stop.activities[0].name == "abortPrompts" and not call.on_hold


def test_a_transfer_under_way_is_not_dead_air_and_a_failed_one_starts_the_budget() -> None:
    call = make_call(limits=Limits(dead_air_s=2, agent_ping_s=0, handshake_timeout_s=60))
    ready(call)
    cmd.Transfer(destination="sip:queue@pbx").apply(call, 1.0)
    assert call.state is CallState.TRANSFERRING
    call.agent_lost(1.5, "connection lost")  # the agent goes while the caller is ringing
    for now in (3.5, 6.0, 9.0):
        call.tick(now)
        assert not hangups(call.to_vaic) and not of(drain(call), ev.BridgeErrorEvent)
    assert call.state is CallState.TRANSFERRING
    activities = ({"type": "event", "name": "transferStatus",
                   "value": {"status": "failed", "reasonCode": "busy"}},)
    call.vaic(ac.Activities(activities=activities), 10.0)
    assert call.state is CallState.ACTIVE  # back, with no agent: the budget from here
    assert call.timers.at(Timer.DEAD_AIR) == pytest.approx(12.0)
    drain(call)
    call.tick(12.0)
    assert hangups(call.to_vaic) == [{"hangupReason": "agent unavailable"}]


def test_no_input_leaves_a_silence_without_an_agent_to_the_dead_air_budget() -> None:
    """The two never act on one silence: while no agent is ready the no-input policy
    neither times nor counts it (VAIC's noUserInput neither), the budget hangs up."""
    call = make_call(limits=Limits(dead_air_s=4, agent_ping_s=0, handshake_timeout_s=60),
                     no_input=NoInput(timeout_s=2, reprompts=1))
    ready(call)
    call.agent(dg.ConversationText(role="assistant", content="Hello!"), 0.0)
    call.agent(dg.AgentAudioDone(), 0.0)
    assert Timer.NO_INPUT in call.timers
    call.agent_lost(1.0, "connection lost")
    assert Timer.NO_INPUT not in call.timers
    call.vaic(ac.Activities(activities=(
        {"type": "event", "name": "noUserInput", "value": 1},)), 3.0)
    for now in (3.0, 4.0):
        call.tick(now)
    events = drain(call)
    assert not of(events, ev.NoInputActionEvent) and call.no_input.count == 0
    call.tick(5.0)  # the budget, from the agent's loss
    assert hangups(call.to_vaic) == [{"hangupReason": "agent unavailable"}]
    assert not of(drain(call), ev.NoInputActionEvent)


def test_once_an_agent_is_back_the_callers_silence_is_timed_again() -> None:
    call = make_call(limits=Limits(dead_air_s=4, agent_ping_s=0),
                     no_input=NoInput(timeout_s=2, reprompts=1))
    ready(call)
    call.agent(dg.AgentAudioDone(), 0.0)
    call.agent_lost(1.0, "connection lost")
    call.agent_connected(2.0)
    call.agent(dg.Welcome(request_id="r2"), 2.0)
    call.agent(dg.SettingsApplied(), 2.1)
    assert Timer.DEAD_AIR not in call.timers
    assert call.timers.at(Timer.NO_INPUT) == pytest.approx(4.1)
    drain(call)
    call.tick(4.1)
    (action,) = of(drain(call), ev.NoInputActionEvent)
    assert (action.action, action.count) == ("reprompt", 1)


# --- helpers -------------------------------------------------------------------------------


def make_call(*, limits: Limits | None = None, **options: Any) -> Call:
    """A call whose session starts at once (no wait for VAIC's ``start``)."""
    initiate = ac.SessionInitiate(conversation_id="c1", supported_media_formats=("raw/lpcm16",))
    limits = msgspec.structs.replace(limits or Limits(), start_wait_s=0)
    return Call(initiate, session_id="s1", media_format=PCM16, now=0.0,
                agent_config=AgentConfig(agent=dg.AgentSettings()),
                playout=Playout(lead_ms=100, chunk_ms=20), limits=limits,
                options=CallOptions(**options))


def ready(call: Call, now: float = 0.0) -> None:
    call.agent_connected(now)
    call.agent(dg.Welcome(request_id="r"), now)
    call.agent(dg.SettingsApplied(), now)
    drain(call)


def drain(call: Call) -> list[ev.Event]:
    events = call.events
    call.to_vaic, call.to_agent, call.events, call.actions = [], [], [], []
    return events


def of(events: list[ev.Event], cls: type[ev.Event]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def hangups(to_vaic: list[Any]) -> list[Any]:
    return [a.activity_params for m in to_vaic if isinstance(m, ac.OutboundActivities)
            for a in m.activities if a.name == "hangup"]
