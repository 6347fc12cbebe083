"""The bridge end to end: lifecycle, barge-in and the Session methods, over real sockets.

Each test runs BridgeApp under a real uvicorn server on a loopback port, the stand-in
Deepgram agent on another, and a raw WebSocket client (tests/vaic_raw.py) as VAIC.
Scripts are short (few, short words) so the whole file stays fast.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from rig import rig
from vaic_raw import RawVaic, Reply, vaic, wait_until

from acdg_asgi import (
    AgentSettings,
    LocalProtocolError,
    Playout,
    Session,
    SessionClosedError,
)
from acdg_asgi.audio import DEFAULT_PREFERENCE
from acdg_asgi.call import Call
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.runtime.call_runtime import CallRuntime
from acdg_asgi.testing.agent import AgentScript, Turn

pytestmark = pytest.mark.anyio

QUICK = {"ms_per_word": 40, "end_of_turn_ms": 200}


def script(*turns: Turn, **kwargs: Any) -> AgentScript:
    """A quick stand-in script: ``turns`` (one "Sure thing" by default)."""
    return AgentScript(turns=turns or (Turn("Sure thing", heard="help me"),),
                       **{**QUICK, **kwargs})


def index_of(replies: Sequence[Reply], kind: str, start: int = 0) -> int:
    for i in range(start, len(replies)):
        if replies[i].type == kind:
            return i
    raise AssertionError(f"no {kind} after index {start}: {[r.type for r in replies]}")


# --- lifecycle ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "media_formats", "chosen", "encoding", "rate"),
    [
        # The bridge's own preference decides, whatever VAIC's order.
        (["raw/mulaw", "raw/lpcm16_8", "raw/lpcm16"], DEFAULT_PREFERENCE, "raw/lpcm16",
         "linear16", 16000),
        (["raw/mulaw", "raw/lpcm16_8"], DEFAULT_PREFERENCE, "raw/lpcm16_8", "linear16", 8000),
        (["raw/lpcm16_24", "raw/lpcm16"], DEFAULT_PREFERENCE, "raw/lpcm16", "linear16", 16000),
        # media_formats= changes the choice.
        (["raw/lpcm16", "raw/mulaw"], ("raw/mulaw", "raw/lpcm16"), "raw/mulaw", "mulaw", 8000),
        (["raw/lpcm16", "raw/lpcm16_24"], ("raw/lpcm16_24",), "raw/lpcm16_24", "linear16", 24000),
    ],
)
async def test_format_negotiation_reaches_the_agent_settings(
    offered: list[str], media_formats: Sequence[str], chosen: str, encoding: str, rate: int
) -> None:
    async with rig(script(), media_formats=media_formats) as env, vaic(env.host) as caller:
        accepted = await caller.initiate(offered)
        assert accepted == {"type": "session.accepted", "mediaFormat": chosen}
        record = await env.agent_ready()
        assert record.settings is not None
        audio = record.settings.audio
        assert audio.input == dg.AudioInput(encoding=encoding, sample_rate=rate)
        assert audio.output == dg.AudioOutput(encoding=encoding, sample_rate=rate, container="none")
        raw = json.loads(record.settings_raw or "{}")["audio"]
        assert type(raw["input"]["sample_rate"]) is int
        assert type(raw["output"]["sample_rate"]) is int
        start = await env.log.wait_for("session_start")
        assert start.media_format == chosen
        assert start.offered_formats == tuple(offered)
        await caller.end()
        await caller.wait_closed()


async def test_no_common_format_is_refused_naming_both_lists() -> None:
    async with rig(script(), media_formats=("raw/mulaw",)) as env, vaic(env.host) as caller:
        refused = await caller.initiate(["wav/lpcm16", "raw/lpcm16_24"])
        await caller.wait_closed()
    assert refused["type"] == "session.error"
    reason = refused["reason"]
    assert "wav/lpcm16" in reason and "raw/lpcm16_24" in reason and "raw/mulaw" in reason
    assert env.agent.connections == []
    assert env.log.of("session_start") == [] and env.log.of("session_end") == []
    assert env.bridge.calls == {}


async def test_a_call_from_greeting_to_caller_hangup() -> None:
    turns = (Turn("Your order has shipped", heard="where is my order", function="lookup_order",
                  arguments='{"order": "A123"}'),)
    async with rig(script(*turns), agent=AgentSettings(greeting="Hello there")) as env:

        @env.bridge.on("function_call_request")
        async def lookup(session: Session, event: Any) -> None:
            for fn in event.functions:
                await session.respond_to_function_call(fn.id, fn.name, {"status": "shipped"})

        async with vaic(env.host) as caller:
            assert await caller.initiate(["raw/lpcm16"], start={"caller": "+1555"}) == {
                "type": "session.accepted", "mediaFormat": "raw/lpcm16"}
            await caller.start_stream()

            # The greeting plays as one stream.
            await caller.wait_for("playStream.stop")
            (greeting,) = caller.play_streams()
            assert greeting.start.msg["mediaFormat"] == "raw/lpcm16"
            assert greeting.start.msg["altText"] == "Hello there"
            assert greeting.audio_bytes > 0

            # The caller talks; the agent calls a function, then answers quoting it.
            mark = len(caller.replies)
            await caller.speak(voiced_ms=300, silent_ms=400, pace=0.5)
            await caller.wait_for("playStream.stop", start=mark)
            replies = caller.replies
            started = index_of(replies, "userStream.speech.started", mark)
            recognized = index_of(replies, "userStream.speech.recognition", started)
            committed = index_of(replies, "userStream.speech.committed", recognized)
            answer_start = index_of(replies, "playStream.start", committed)
            assert replies[recognized].msg["alternatives"] == [{"text": "where is my order"}]
            greeting, answer = caller.play_streams()
            assert answer.start is replies[answer_start]
            assert answer.start.msg["altText"] == 'Your order has shipped ({"status":"shipped"})'
            assert answer.audio_bytes > 0

            (request,) = env.log.of("function_call_request")
            record = env.agent.connections[0]
            responses = [m for m in record.messages if isinstance(m, dg.FunctionCallResponse)]
            assert responses == [dg.FunctionCallResponse(
                id=request.functions[0].id, name="lookup_order", content='{"status":"shipped"}')]

            # DTMF reaches both the generic activity handler and the dtmf handler.
            await caller.activity(type="event", name="DTMF", value="5")
            dtmf = await env.log.wait_for("dtmf")
            assert dtmf.digits == "5"
            activities = [e.activity for e in env.log.of("activity")]
            assert [a.get("name") for a in activities] == ["start", "DTMF"]
            assert activities[1]["value"] == "5"

            await caller.end()
            await caller.wait_closed()

        await env.settled([caller.conversation_id], end_reasons="caller")
        assert record.close_reason is not None and record.close_reason.startswith("closed")
        (end,) = env.log.of("session_end")
        assert (end.reason, end.reason_code) == ("caller", "client-disconnected")
        assert env.log.names()[-1] == "session_end"
        assert caller.invalid == []
        assert len(caller.play_streams()) == 2


async def test_a_finished_call_is_let_go_at_once() -> None:
    """Nothing keeps an ended call's objects until the deadlines it had asked to be woken
    for (the agent's next keep-alive or ping, seconds away) come due: with many short
    calls that would add up."""
    async with rig(script(), agent=AgentSettings(greeting="Hi")) as env, \
            vaic(env.host) as caller:
        await caller.initiate(["raw/lpcm16"])
        await caller.start_stream()
        await caller.wait_for("playStream.stop")
        await caller.end()
        await caller.wait_closed()
        await env.settled([caller.conversation_id], end_reasons="caller")
        env.sessions.clear()  # the rig's own hold on the call
        gc.collect()
        # (by type: isinstance would look through a dead weak proxy, and raise)
        assert [o for o in gc.get_objects() if type(o) in (Call, CallRuntime)] == []


# --- barge-in -----------------------------------------------------------------------------


async def test_barge_in_stops_the_stream_and_bounds_what_follows() -> None:
    lead_ms, slack_ms = 100, 500
    long_reply = " ".join(["word"] * 60)  # 6 s of audio; burst mode sends it in ~0.6 s
    turns = (Turn(long_reply, heard="hi"),)
    async with (
        rig(script(*turns, ms_per_word=100), playout=Playout(lead_ms=lead_ms)) as env,
        vaic(env.host) as caller,
    ):
        await caller.initiate(["raw/lpcm16"])
        await caller.start_stream()
        await caller.speak(voiced_ms=200, silent_ms=300, pace=0.5)
        start = await caller.wait_for("playStream.start")
        stream_id = start.msg["streamId"]
        await caller.wait_for(lambda r: r.msg.get("streamId") == stream_id, count=12)

        barge_in_at = anyio.current_time()
        mark = len(caller.replies)
        await caller.speak(voiced_ms=200, pace=1.0)
        stop = await caller.wait_for(
            lambda r: r.type == "playStream.stop" and r.msg["streamId"] == stream_id)
        speech = await caller.wait_for("userStream.speech.started", start=mark)
        assert stop.at >= barge_in_at and speech.at >= barge_in_at

        stream = next(s for s in caller.play_streams(complete=False) if s.stream_id == stream_id)
        after = sum(len(c.audio) for c in stream.chunks if c.at > barge_in_at)
        assert after <= caller.fmt.frame_bytes(lead_ms + slack_ms)
        assert stream.audio_bytes < caller.fmt.frame_bytes(6000) // 2  # well short of the reply

        barge = await env.log.wait_for("user_started_speaking", count=2)
        calm = env.log.of("user_started_speaking")[0]
        assert calm.interrupted is False and calm.agent_audio_sent_ms == 0
        assert barge.interrupted is True
        assert barge.agent_audio_sent_ms > 0
        assert barge.agent_audio_dropped_ms > 0  # the buffered rest never went out
        assert env.agent.connections[0].barge_ins == 1
        await caller.end()
        await caller.wait_closed()
    assert caller.invalid == []


# --- Session methods: what VAIC receives --------------------------------------------------


async def expect_activities(caller: RawVaic, command: Any) -> list[dict[str, Any]]:
    """Run a Session command; return the ``activities`` list of the message it caused."""
    mark = len(caller.replies)
    await command
    reply = await caller.wait_for("activities", start=mark)
    activities: list[dict[str, Any]] = reply.msg["activities"]
    return activities


async def test_session_commands_reach_vaic_as_activities() -> None:
    async with rig(script()) as env, vaic(env.host) as caller:
        await caller.initiate()
        await wait_until(lambda: env.sessions, what="session_start")
        session = env.sessions[0]
        assert session.conversation_id == caller.conversation_id
        assert session.caller == "+15551230000"
        assert session.is_active

        acts = await expect_activities(caller, session.play_url("https://example.com/a.wav"))
        assert acts == [{"type": "event", "name": "playUrl",
                         "activityParams": {"playUrlUrl": "https://example.com/a.wav"}}]
        acts = await expect_activities(caller, session.play_url(
            "https://example.com/b.wav", options={"playUrlMediaFormat": "wav/lpcm16"}))
        assert acts[0]["activityParams"] == {"playUrlUrl": "https://example.com/b.wav",
                                             "playUrlMediaFormat": "wav/lpcm16"}

        acts = await expect_activities(caller, session.send_dtmf("12#"))
        assert acts == [{"type": "event", "name": "sendDtmf",
                         "activityParams": {"dtmfDigits": "12#"}}]
        sent = len(caller.of_type("activities"))
        for bad in ("", "12x", "1" * 21):
            with pytest.raises(LocalProtocolError):
                await session.send_dtmf(bad)

        acts = await expect_activities(caller, session.send_meta_data({"case": 42}))
        assert acts == [{"type": "event", "name": "sendMetaData", "value": {"case": 42}}]
        assert len(caller.of_type("activities")) == sent + 1  # the bad digits sent nothing

        acts = await expect_activities(caller, session.abort_prompts())
        assert acts == [{"type": "event", "name": "abortPrompts"}]
        acts = await expect_activities(caller, session.apply_config({"bargeIn": True}))
        assert acts == [{"type": "event", "name": "config", "sessionParams": {"bargeIn": True}}]
        acts = await expect_activities(caller, session.send_activity(
            [{"type": "message", "text": "one moment"}, {"type": "event", "name": "custom",
                                                         "value": 1}]))
        assert acts == [{"type": "message", "text": "one moment"},
                        {"type": "event", "name": "custom", "value": 1}]
        with pytest.raises(LocalProtocolError):
            await session.send_activity({"name": "no type"})

        acts = await expect_activities(
            caller, session.start_call_recording({"recordingName": "r1"}))
        assert acts == [{"type": "event", "name": "startCallRecording",
                         "activityParams": {"recordingName": "r1"}}]
        for command, name in (
            (session.pause_call_recording, "pauseCallRecording"),
            (session.resume_call_recording, "resumeCallRecording"),
            (session.stop_call_recording, "stopCallRecording"),
        ):
            assert await expect_activities(caller, command()) == [
                {"type": "event", "name": name}]

        acts = await expect_activities(caller, session.end_session("done here"))
        assert acts == [{"type": "event", "name": "hangup",
                         "activityParams": {"hangupReason": "done here"}}]
        assert not session.is_active
        with pytest.raises(SessionClosedError):
            await session.play_url("https://example.com/late.wav")
        await caller.end(reason_code="bot-disconnected")
        await caller.wait_closed()
        end = await env.log.wait_for("session_end")
        assert end.reason == "ended" and end.detail == "done here"

        for late in (session.send_dtmf("1"), session.send_agent_message("hello?"),
                     session.apply_config({"bargeIn": False})):
            with pytest.raises(SessionClosedError) as caught:
                await late
            assert isinstance(caught.value, RuntimeError)
    assert caller.invalid == []
    assert len(env.log.of("session_end")) == 1


async def test_transfer_then_vaic_ends_the_session() -> None:
    async with rig(script()) as env, vaic(env.host) as caller:
        await caller.initiate()
        await wait_until(lambda: env.sessions, what="session_start")
        session = env.sessions[0]
        acts = await expect_activities(caller, session.transfer(
            "tel:+15550001111", handover_reason="caller asked for a person",
            transfer_sip_headers=[{"name": "X-Case", "value": "42"}]))
        assert acts == [{"type": "event", "name": "transfer", "activityParams": {
            "transferTarget": "tel:+15550001111",
            "handoverReason": "caller asked for a person",
            "transferSipHeaders": [{"name": "X-Case", "value": "42"}],
        }}]
        assert env.log.of("session_end") == []  # not over until VAIC says so
        await caller.end(reason_code="transferred", reason="transferred")
        await caller.wait_closed()
        end = await env.log.wait_for("session_end")
    assert (end.reason, end.reason_code) == ("transfer", "transferred")
    assert end.detail == "tel:+15550001111"
    assert len(env.log.of("session_end")) == 1


async def test_hangup_and_transfer_after_the_end_raise() -> None:
    async with rig(script()) as env, vaic(env.host) as caller:
        await caller.initiate()
        await wait_until(lambda: env.sessions, what="session_start")
        session = env.sessions[0]
        await caller.end()
        await env.log.wait_for("session_end")
        await caller.wait_closed()
        with pytest.raises(SessionClosedError):
            await session.end_session("late")
        with pytest.raises(SessionClosedError):
            await session.transfer("tel:+15550001111")


# --- Session methods: what the agent receives ---------------------------------------------


async def test_session_commands_reach_the_agent_and_come_back_as_events() -> None:
    async with rig(script(Turn("Sure thing", heard="unused"))) as env:
        failures = 0

        @env.bridge.on("dtmf")
        async def broken(session: Session, event: Any) -> None:
            nonlocal failures
            failures += 1
            raise ValueError("handler bug")

        async with vaic(env.host) as caller:
            await caller.initiate()
            record = await env.agent_ready()
            session = env.sessions[0]

            def sent(kind: type[Any]) -> list[Any]:
                return [m for m in record.messages if isinstance(m, kind)]

            # The agent says an injected line: it reaches VAIC as a play stream.
            await session.send_agent_message("Please hold")
            await caller.wait_for("playStream.stop")
            assert caller.play_streams()[0].start.msg["altText"] == "Please hold"
            assert sent(dg.InjectAgentMessage) == [dg.InjectAgentMessage(message="Please hold")]
            raw = [json.loads(f) for f in record.text_frames if "InjectAgentMessage" in f]
            assert raw == [{"type": "InjectAgentMessage", "message": "Please hold"}]

            # Injected caller text is answered like speech.
            mark = len(caller.replies)
            await session.send_user_message("I need help")
            recognition = await caller.wait_for("userStream.speech.recognition", start=mark)
            assert recognition.msg["alternatives"] == [{"text": "I need help"}]
            await caller.wait_for("playStream.stop", start=mark)
            assert caller.play_streams()[1].start.msg["altText"] == "Sure thing"
            assert sent(dg.InjectUserMessage) == [dg.InjectUserMessage(content="I need help")]

            # Updates are acknowledged and surface as events.
            await session.update_prompt("Be brief.")
            await session.update_speak({"provider": {"type": "deepgram",
                                                     "model": "aura-2-thalia-en"}})
            await session.update_think({"provider": {"type": "open_ai", "model": "gpt-4o-mini"},
                                        "prompt": "Be brief."})
            for name in ("prompt_updated", "speak_updated", "think_updated"):
                await env.log.wait_for(name)
            assert sent(dg.UpdatePrompt) == [dg.UpdatePrompt(prompt="Be brief.")]
            (speak,) = sent(dg.UpdateSpeak)
            assert speak.speak == dg.SpeakSettings(
                provider={"type": "deepgram", "model": "aura-2-thalia-en"})
            (think,) = sent(dg.UpdateThink)
            assert think.think == dg.ThinkSettings(
                provider={"type": "open_ai", "model": "gpt-4o-mini"}, prompt="Be brief.")

            await wait_until(lambda: len(session.get_transcript()) == 3, what="transcript")
            assert [(t.role, t.content) for t in session.get_transcript()] == [
                ("assistant", "Please hold"), ("user", "I need help"), ("assistant", "Sure thing")]

            # A failing handler becomes an error event; the call goes on.
            await caller.activity(type="event", name="DTMF", value="9")
            error = await env.log.wait_for("error")
            assert (error.source, error.code) == ("handler", "HANDLER_FAILED")
            assert "handler bug" in error.message and failures == 1
            await session.send_agent_message("Still here", behavior="queue")
            await caller.wait_for("playStream.stop", count=3)
            assert caller.play_streams()[2].start.msg["altText"] == "Still here"
            assert sent(dg.InjectAgentMessage)[-1] == dg.InjectAgentMessage(
                message="Still here", behavior="queue")
            assert session.is_active

            await caller.end()
            await caller.wait_closed()
        end = await env.log.wait_for("session_end")
        assert end.reason == "caller"
        with pytest.raises(SessionClosedError):
            await session.update_prompt("too late")
        with pytest.raises(RuntimeError):
            await session.send_user_message("too late")
        assert [e.code for e in env.log.of("error")] == ["HANDLER_FAILED"]
        assert caller.invalid == []


async def test_back_to_back_utterances_get_a_stream_each() -> None:
    reply = "one two three four"  # 1.6 s of audio, sent by the stand-in in ~0.16 s
    async with (
        rig(script(Turn(reply, heard="hi"), ms_per_word=400)) as env,
        vaic(env.host) as caller,
    ):
        await caller.initiate()
        await caller.start_stream()
        await caller.speak(voiced_ms=200, silent_ms=300, pace=0.25)
        first = await caller.wait_for("playStream.start")
        # Queued while the first utterance is still being paced out to VAIC.
        await env.sessions[0].send_agent_message("Anything else?", behavior="queue")
        await env.log.wait_for("agent_audio_done", count=2)
        assert caller.of_type("playStream.stop") == []  # the first one is still playing
        await caller.wait_for("playStream.stop", count=2)
        await caller.end()
    first_stream, second_stream = caller.play_streams()
    assert first_stream.start is first
    assert first_stream.start.msg["altText"] == reply
    assert second_stream.start.msg["altText"] == "Anything else?"
    assert first_stream.audio_bytes == caller.fmt.frame_bytes(1600)
    assert second_stream.audio_bytes == caller.fmt.frame_bytes(800)
