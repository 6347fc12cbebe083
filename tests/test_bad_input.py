"""Bad input from either peer: the call it hits carries on, other calls never notice.

Real uvicorn, the stand-in agent and raw WebSockets, as in test_bridge.py.
"""

from __future__ import annotations

import base64
import json
import socket

import anyio
import httpx
import pytest
from rig import hangup_reason, rig
from vaic_raw import vaic, wait_until

from acdg_asgi import Limits, Reconnect
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.testing import signals
from acdg_asgi.testing.agent import AgentScript, Turn

pytestmark = pytest.mark.anyio

SCRIPT = AgentScript(turns=(Turn("Got it", heard="hello"),), ms_per_word=40, end_of_turn_ms=200)
MAX_FRAME = 4096  # well above a 20 ms chunk (about 900 bytes of JSON), well below 8 KiB


def chunk_frame(cid: str, audio_chunk: object) -> str:
    return json.dumps({"type": "userStream.chunk", "conversationId": cid,
                       "audioChunk": audio_chunk})


async def test_bad_frames_warn_and_leave_both_calls_running() -> None:
    async with rig(SCRIPT, limits=Limits(max_frame_bytes=MAX_FRAME)) as r:
        async with r.call_ready() as (a, record_a), r.call_ready() as (b, record_b):

            # Call B streams silence at real time through everything that follows.
            b_sent = 0
            stop_b = anyio.Event()

            async def stream_b() -> None:
                nonlocal b_sent
                frame = signals.silence(b.fmt, 20)
                while not stop_b.is_set():
                    await b.chunk(frame)
                    b_sent += len(frame)
                    await anyio.sleep(0.02)

            cid = a.conversation_id
            big = base64.b64encode(bytes(MAX_FRAME * 2)).decode()
            bad: list[str | bytes] = [
                "{not json",
                chunk_frame(cid, 12345),  # audioChunk must be a base64 string
                chunk_frame(cid, "%%% not base64 %%%"),
                b"\x00\x01\x02\x03",  # the protocol has no binary frames
                chunk_frame(cid, big),  # over Limits.max_frame_bytes
                ac.encode(ac.SessionInitiate(
                    conversation_id=cid, supported_media_formats=("raw/lpcm16",))).decode(),
                # Unknown types are logged and ignored, as every implementation does.
                json.dumps({"type": "playStream.mark.reached", "conversationId": cid}),
            ]
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream_b)
                await anyio.sleep(0.1)
                b_before = record_b.audio_bytes
                for frame in bad:
                    await a.send(frame)
                    mark = len(a.replies)  # A still answers right after each one
                    await a.send(ac.UserStreamStart(conversation_id=cid))
                    await a.wait_for("userStream.started", start=mark)
                await r.log.wait_for("warning", count=len(bad) - 1)
                warnings = r.log.of("warning")
                assert {w.conversation_id for w in warnings} == {cid}
                assert {(w.source, w.code) for w in warnings} == {("audiocodes", "PROTOCOL_ERROR")}
                assert len({w.description for w in warnings}) == len(warnings)

                # Call A still works: replies to stream control, forwards audio, answers.
                mark = len(a.replies)
                await a.send(ac.UserStreamStop(conversation_id=cid))
                await a.wait_for("userStream.stopped", start=mark)
                await a.start_stream()
                a_before = record_a.audio_bytes
                await a.speak(voiced_ms=200, silent_ms=300, pace=0.25)
                await a.wait_for("playStream.stop")
                assert record_a.audio_bytes >= a_before + a.fmt.frame_bytes(500)
                assert a.play_streams()[0].start.msg["altText"] == "Got it"
                stop_b.set()

            # Every frame B sent reached the agent, during the bad input too.
            assert record_b.audio_bytes > b_before
            await wait_until(lambda: record_b.audio_bytes == b_sent, what="all of B's audio")
            assert len(r.log.of("warning")) == len(bad) - 1  # none for the unknown type
            assert r.log.of("warning", b.conversation_id) == []
            assert r.log.of("error") == []
            assert [x.type for x in b.replies] == ["session.accepted", "userStream.started"]
            assert "session.error" not in a.types()
            assert a.binary_frames == 0 and a.invalid == [] and b.invalid == []

            for caller in (a, b):
                await caller.end()
                await caller.wait_closed()
        ends = await r.log.wait_for("session_end", count=2)
        assert ends.reason == "caller"
        assert sorted(e.conversation_id for e in r.log.of("session_end")) == sorted(
            [a.conversation_id, b.conversation_id])
        await wait_until(lambda: not r.bridge.calls, what="both calls released")


async def test_a_bad_frame_on_an_idle_call_warns_at_once() -> None:
    async with (
        rig(SCRIPT, limits=Limits(keepalive_s=60)) as r,
        r.call_ready(stream=False) as (caller, _),
    ):
        await caller.send("{not json")
        warning = await r.log.wait_for("warning", within=3)
        assert warning.conversation_id == caller.conversation_id
        await caller.end()


async def test_chunk_before_initiate_is_ignored() -> None:
    async with rig(SCRIPT) as r, vaic(r.host) as caller:
        await caller.chunk(signals.tone(caller.fmt, 20))
        await caller.send("{garbage before the session")
        assert (await caller.initiate())["type"] == "session.accepted"
        await caller.end()
        await caller.wait_closed()
    assert caller.types()[0] == "session.accepted"
    assert r.log.of("warning") == []  # no call existed for those frames to warn about


async def test_second_initiate_on_a_new_socket_for_a_live_call_is_refused() -> None:
    async with rig(SCRIPT) as r, vaic(r.host) as first:
        await first.initiate()
        async with vaic(r.host, conversation_id=first.conversation_id) as second:
            refused = await second.initiate()
            await second.wait_closed()
        assert refused["type"] == "session.error"
        assert "in progress" in refused["reason"]
        assert list(r.bridge.calls) == [first.conversation_id]  # the first call is untouched
        await first.end()
        await first.wait_closed()
    assert len(r.log.of("session_end")) == 1


async def test_resume_of_an_unknown_conversation_is_refused() -> None:
    async with rig(SCRIPT) as r, vaic(r.host) as caller:
        await caller.send(ac.SessionResume(conversation_id="no-such-call"))
        reply = await caller.wait_for("session.error")
        await caller.wait_closed()
    assert reply.msg["reason"] == "conversation not found"


async def test_a_socket_without_initiate_is_closed() -> None:
    async with (
        rig(SCRIPT, limits=Limits(initiate_timeout_s=0.5)) as r,
        vaic(r.host) as caller,
    ):
        await caller.wait_closed()
        assert caller.ws.close_code == 1008
    assert caller.replies == [] and r.agent.connections == [] and r.log.events == []


async def test_connection_validate_outside_a_call() -> None:
    async with rig(SCRIPT) as r, vaic(r.host) as caller:
        await caller.send({"type": "connection.validate"})
        reply = await caller.wait_for("connection.validated")
    assert reply.msg == {"type": "connection.validated", "success": True}
    assert r.agent.connections == [] and r.log.events == []


async def test_live_hub_probe_and_readiness() -> None:
    async with rig(SCRIPT) as r, httpx.AsyncClient() as http:
        probe = await http.get(f"http://{r.host}/")
        ready = await http.get(f"http://{r.host}/ready")
        missing = await http.get(f"http://{r.host}/nope")
    assert probe.status_code == 200
    assert probe.headers["content-type"] == "application/json"
    assert probe.json() == {"type": "ac-bot-api", "success": True}
    assert ready.status_code == 200
    assert ready.json()["ready"] is True and ready.json()["calls"] == 0
    assert missing.status_code == 404


# --- the agent side -----------------------------------------------------------------------


async def test_settings_refused_by_the_agent_hangs_up_with_a_reason() -> None:
    script = AgentScript(fail_settings=("INVALID_SETTINGS", "bad"))
    async with rig(script) as r, vaic(r.host) as caller:
        await caller.initiate()
        reason = await hangup_reason(caller)
        assert "INVALID_SETTINGS" in reason
        error = await r.log.wait_for("error")
        assert (error.code, error.message, error.source) == ("INVALID_SETTINGS", "bad", "deepgram")
        assert error.fatal is True
        await caller.end(reason_code="bot-disconnected")
        await caller.wait_closed()
        end = await r.log.wait_for("session_end")
    assert end.reason == "error"
    assert len(r.agent.connections) == 1  # a config error is not retried
    assert not r.bridge.calls


async def test_agent_unreachable_hangs_up_after_the_retries() -> None:
    async with rig(SCRIPT, reconnect=Reconnect(attempts=1)) as r:
        r.agent.refuse_next(10)
        async with vaic(r.host) as caller:
            await caller.initiate()
            reason = await hangup_reason(caller)
            error = await r.log.wait_for("error")
            await caller.end(reason_code="bot-disconnected")
            await caller.wait_closed()
        end = await r.log.wait_for("session_end")
    assert "unavailable" in reason
    assert (error.code, error.source, error.fatal) == ("AGENT_UNAVAILABLE", "bridge", True)
    assert "503" in error.message
    assert r.agent.refused == 2  # the first attempt and one retry
    assert r.agent.connections == []
    assert end.reason == "error"
    assert not r.bridge.calls


async def test_agent_side_dead_port_is_an_error_not_a_crash() -> None:
    # Nothing listens on the agent URL at all: connection refused, not an HTTP status. The
    # port stays bound (never listening) so that nothing else can take it meanwhile.
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{dead.getsockname()[1]}{dg.AGENT_PATH}"
        async with rig(agent_url=url, reconnect=Reconnect(attempts=0)) as r, \
                vaic(r.host) as caller:
            await caller.initiate()
            await hangup_reason(caller)
            await caller.end(reason_code="bot-disconnected")
            await caller.wait_closed()
            await r.log.wait_for("session_end")
    assert [e.code for e in r.log.of("error")] == ["AGENT_UNAVAILABLE"]

