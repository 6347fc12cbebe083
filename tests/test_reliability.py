"""Reliability over real loopback sockets: resume, agent reconnect, drain, limits, faults.

Every test runs BridgeApp under real uvicorn, the stand-in Deepgram agent (sometimes
behind a TCP proxy that cuts it at a chosen moment) and raw WebSocket clients as VAIC.
Assertions are structural (what arrived, in what order, how often); timeouts are
generous and only bound a wait.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from _faults import broken_agent
from anyio.abc import Process
from rig import (
    SETTLE_S,
    LogCapture,
    call_ready,
    hangup_reason,
    is_hangup,
    rig,
    standin,
    upgrade_status,
)
from vaic_raw import PlayStream, RawVaic, vaic, wait_until

from acdg_asgi import AgentSettings, Limits, Playout, Reconnect
from acdg_asgi.call import CallState
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.testing import signals
from acdg_asgi.testing.agent import AgentConnectionRecord, AgentScript, Turn
from acdg_asgi.testing.server import serve

pytestmark = pytest.mark.anyio

TURNS = (
    Turn("one two three", heard="first"),
    Turn("four five six", heard="second"),
    Turn("seven eight nine", heard="third"),
)
QUICK = AgentScript(turns=TURNS, ms_per_word=40, end_of_turn_ms=200)
GREETING = AgentSettings(greeting="Hello there")


# --- helpers --------------------------------------------------------------------------------


async def exchange(caller: RawVaic, *, within: float = SETTLE_S) -> PlayStream:
    """The caller says something and hears the agent's whole answer; return that stream."""
    mark = len(caller.replies)
    await caller.speak(voiced_ms=200, silent_ms=300, pace=0.25)
    heard = await caller.wait_for("userStream.speech.recognition", start=mark, within=within)
    after = caller.replies.index(heard)
    start = await caller.wait_for("playStream.start", start=after, within=within)
    sid = start.msg["streamId"]
    await caller.wait_for(lambda x: x.type == "playStream.stop" and x.msg["streamId"] == sid,
                          start=after, within=within)
    stream = next(s for s in caller.play_streams(complete=False) if s.stream_id == sid)
    assert stream.audio_bytes > 0
    return stream


def abort(caller: RawVaic) -> None:
    """VAIC's TCP connection dies: no close frame, no session.end."""
    caller.ws.transport.abort()


@asynccontextmanager
async def resumed(host: str, cid: str) -> AsyncIterator[RawVaic]:
    """A new VAIC socket for ``cid`` that has sent ``session.resume`` and got its answer."""
    async with vaic(host, conversation_id=cid) as caller:
        await caller.send(ac.SessionResume(conversation_id=cid))
        await caller.wait_for(lambda r: r.type in ("session.accepted", "session.error"))
        yield caller


async def _first_stream(caller: RawVaic) -> PlayStream:
    """The first play stream on this socket, once it has stopped."""
    await caller.wait_for("playStream.stop")
    return caller.play_streams()[0]


def answer(caller: RawVaic) -> dict[str, Any]:
    reply = next(r for r in caller.replies if r.type in ("session.accepted", "session.error"))
    return reply.msg


async def agent_turn_sent(record: AgentConnectionRecord, count: int = 1) -> None:
    """Wait until the stand-in has sent ``count`` whole utterances (AgentAudioDone)."""
    await wait_until(lambda: record.sent_types.count("AgentAudioDone") >= count,
                     what=f"{count} agent utterance(s) sent")


# --- 0. the harness can see what it asserts on ---------------------------------------------


async def test_the_log_capture_sees_a_traceback_in_the_server() -> None:
    """``settled`` asserts that uvicorn logged no traceback: prove the capture catches one."""

    async def broken_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            raise RuntimeError("bug in the app")

    logs = LogCapture()
    with logs.installed():
        async with serve(broken_app, log_config=None) as host, vaic(host) as caller:
            await caller.wait_closed()
        await wait_until(logs.problems, what="the traceback to be logged")
    assert any("Exception in ASGI application" in p and "bug in the app" in p
               for p in logs.problems())


# --- 1. session resume ----------------------------------------------------------------------


async def test_resume_plays_audio_buffered_while_detached_and_the_call_goes_on() -> None:
    async with rig(QUICK, limits=Limits(resume_grace_s=10)) as r:
        async with r.call_ready(["raw/mulaw", "raw/lpcm16"]) as (old, record):
            cid = old.conversation_id
            assert answer(old)["mediaFormat"] == "raw/lpcm16"
            # The caller talks, and the line drops before the agent answers.
            await old.speak(voiced_ms=200, pace=0.25)
            abort(old)
        await wait_until(lambda: r.bridge.calls[cid].call.state is CallState.DETACHED,
                         what="the call detached")
        await agent_turn_sent(record)  # the whole answer was produced while detached
        runtime = r.bridge.calls[cid]
        assert runtime.call.playout.pending == record.sent_audio_bytes
        assert r.log.of("session_end") == []

        async with resumed(r.host, cid) as new:
            assert answer(new) == {"type": "session.accepted", "mediaFormat": "raw/lpcm16"}
            stream = await _first_stream(new)
            assert stream.audio_bytes == record.sent_audio_bytes  # nothing lost, nothing twice
            assert stream.start.msg["altText"] == "one two three"
            resumed_event = await r.log.wait_for("session_resumed")
            assert resumed_event.conversation_id == cid and resumed_event.gap_ms > 0

            # Caller audio reaches the same agent connection, and the call carries on.
            before = record.audio_bytes
            await new.start_stream()
            second = await exchange(new)
            assert second.start.msg["altText"] == "four five six"
            assert record.audio_bytes > before
            assert len(r.agent.connections) == 1 and not record.closed.is_set()
            await new.end()
            await new.wait_closed()
        assert new.invalid == []
        await r.settled([cid], end_reasons="caller")
    assert len(r.log.of("session_resumed")) == 1


async def test_no_resume_within_the_grace_period_ends_the_call_and_frees_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="acdg_asgi")
    async with rig(QUICK, limits=Limits(resume_grace_s=0.5)) as r:
        async with r.call_ready() as (caller, record):
            cid = caller.conversation_id
            await caller.speak(voiced_ms=100, pace=0.25)
            abort(caller)
        end = await r.log.wait_for("session_end", within=SETTLE_S)
        assert (end.conversation_id, end.reason) == (cid, "timeout")
        await wait_until(lambda: not r.bridge.calls, what="the call released")
        with anyio.fail_after(SETTLE_S):
            await record.closed.wait()
        assert record.close_reason is not None and record.close_reason.startswith("closed")

        async with resumed(r.host, cid) as late:
            assert answer(late)["type"] == "session.error"
            await late.wait_closed()
        async with resumed(r.host, "no-such-conversation") as unknown:
            assert answer(unknown)["type"] == "session.error"
            await unknown.wait_closed()
        assert r.bridge.calls == {} and len(r.agent.connections) == 1
        await r.settled([cid], end_reasons="timeout")
    assert r.log.of("session_resumed") == []
    # The wait for a resume is said when it begins, with the call's id, not only at its end.
    (lost,) = [rec for rec in caplog.records if "closed without session.end" in rec.getMessage()]
    assert lost.getMessage() == (f"[{cid}] VAIC's socket closed without session.end: waiting "
                                 "up to 0.5 s for its session.resume")

async def test_a_resume_racing_the_old_socket_takes_over_and_the_old_one_is_closed() -> None:
    # On the standard ASGI path a socket proves alive only by sending (the old one is
    # silent here). On the direct path it proves alive by its pongs, which this client
    # answers: there the resume is refused (test_cluster's racing resumes use a socket
    # that answers nothing).
    async with rig(QUICK, agent=GREETING, limits=Limits(resume_grace_s=10),
                   direct_path=False) as r:
        async with r.call_ready() as (old, record):
            cid = old.conversation_id
            await old.wait_for("playStream.stop")  # the greeting
            async with resumed(r.host, cid) as new:
                assert answer(new) == {"type": "session.accepted", "mediaFormat": "raw/lpcm16"}
                await old.wait_closed()  # the bridge let go of the stale socket
                assert old.ws.close_code == 1000
                await r.log.wait_for("session_resumed")
                await new.start_stream()
                stream = await exchange(new)
                assert stream.start.msg["altText"] == "one two three"
                assert len(r.agent.connections) == 1 and not record.closed.is_set()
                await new.end()
                await new.wait_closed()
        assert old.invalid == [] and new.invalid == []
        assert not any(r.type.startswith("playStream") for r in old.replies[
            old.types().index("playStream.stop") + 1:])
        await r.settled([cid], end_reasons="caller")


async def test_vaic_hanging_up_right_after_a_burst_ends_the_call_as_caller() -> None:
    """VAIC sends audio, session.end and closes its socket at once, while the bridge is
    busy writing to it (the echo agent makes every caller frame a write to VAIC). Six
    calls do it together, so the race is all but certain to show in one of them."""
    calls = 6
    async with rig(AgentScript(echo=True), limits=Limits(resume_grace_s=2)) as r:
        ids: list[str] = []

        async def one() -> None:
            async with vaic(r.host) as caller:
                ids.append(caller.conversation_id)
                await caller.initiate()
                await caller.start_stream()
                await r.agent_ready(calls - 1)  # every call is up
                tone = signals.tone(caller.fmt, 20)
                for _ in range(300):
                    await caller.chunk(tone)
                await caller.end()
                await caller.ws.close()

        async with anyio.create_task_group() as tg:
            for _ in range(calls):
                tg.start_soon(one)
        await r.log.wait_for("session_end", count=calls, within=SETTLE_S)
        assert [w.description for w in r.log.of("warning")] == []
        assert [e.reason for e in r.log.of("session_end")] == ["caller"] * calls
        await r.settled(ids, end_reasons="caller")


# --- 2. agent reconnect ---------------------------------------------------------------------


async def test_agent_drop_reconnects_with_the_history_and_no_second_greeting() -> None:
    async with rig(QUICK, agent=GREETING) as r:
        async with r.call_ready() as (caller, first):
            cid = caller.conversation_id
            await caller.wait_for("playStream.stop")  # the greeting
            await exchange(caller)
            frames_first = first.audio_frames

            await r.agent.drop_all()
            second = await r.agent_ready(1)
            reconnected = await r.log.wait_for("agent_reconnected")
            assert reconnected.conversation_id == cid and reconnected.attempts >= 1

            assert second.settings is not None
            agent = second.settings.agent
            assert not isinstance(agent, str)
            assert agent.greeting is None
            assert agent.context is not None
            assert [(m.role, m.content) for m in agent.context.messages] == [
                ("assistant", "Hello there"), ("user", "first"), ("assistant", "one two three")]
            raw = json.loads(second.settings_raw or "{}")
            assert "greeting" not in raw["agent"]
            assert raw["agent"]["context"]["messages"][0] == {
                "type": "History", "role": "assistant", "content": "Hello there"}

            # The caller goes on talking to the new connection; the script goes on too.
            stream = await exchange(caller)
            assert stream.start.msg["altText"] == "four five six"
            assert second.audio_frames > 0 and first.audio_frames == frames_first
            alt_texts = [s.start.msg.get("altText") for s in caller.play_streams()]
            assert alt_texts == ["Hello there", "one two three", "four five six"]
            assert not any(is_hangup(x) for x in caller.replies)
            await caller.end()
            await caller.wait_closed()
        assert caller.invalid == []
        await r.settled([cid], end_reasons="caller")
    assert len(r.agent.connections) == 2
    assert len(r.log.of("agent_reconnected")) == 1
    assert [e.code for e in r.log.of("error")] == []


async def test_caller_audio_during_an_agent_reconnect_reaches_the_new_connection() -> None:
    async with rig(QUICK, proxy=True) as r:
        proxy = r.proxy
        assert proxy is not None
        async with r.call_ready() as (caller, first):
            cid = caller.conversation_id
            await exchange(caller)
            proxy.hold = anyio.Event()  # the next connection hangs in its handshake
            proxy.cut_all()
            await wait_until(lambda: len(proxy.links) == 2, what="the reconnect")
            frames = 25  # 0.5 s of caller audio, well inside pre_ready_audio_ms
            for _ in range(frames):
                await caller.chunk(signals.silence(caller.fmt, 20))
            proxy.hold.set()
            second = await r.agent_ready(1)
            await wait_until(lambda: second.audio_frames >= frames, what="the held audio")
            assert second.audio_frames == frames and first.audio_frames > 0
            stream = await exchange(caller)
            assert stream.start.msg["altText"] == "four five six"
            await caller.end()
            await caller.wait_closed()
        await r.settled([cid], end_reasons="caller")


async def test_agent_drop_while_vaic_is_detached_then_resume() -> None:
    async with rig(QUICK, agent=GREETING, limits=Limits(resume_grace_s=10)) as r:
        async with r.call_ready() as (old, _):
            cid = old.conversation_id
            await old.wait_for("playStream.stop")
            await exchange(old)
            abort(old)
        await wait_until(lambda: r.bridge.calls[cid].call.state is CallState.DETACHED,
                         what="the call detached")
        await r.agent.drop_all()  # both sockets lost at once
        second = await r.agent_ready(1)
        await r.log.wait_for("agent_reconnected")
        async with resumed(r.host, cid) as new:
            assert answer(new)["type"] == "session.accepted"
            await new.start_stream()
            stream = await exchange(new)
            assert stream.start.msg["altText"] == "four five six"
            assert second.settings is not None and not isinstance(second.settings.agent, str)
            assert second.settings.agent.greeting is None
            assert not any(x.type == "playStream.start" and x.msg.get("altText") == "Hello there"
                           for x in new.replies)
            await new.end()
            await new.wait_closed()
        await r.settled([cid], end_reasons="caller")


async def test_agent_gone_for_good_while_vaic_is_detached_refuses_the_resume() -> None:
    reconnect = Reconnect(attempts=1, initial_backoff_s=0.05, max_backoff_s=0.1)
    async with rig(QUICK, reconnect=reconnect, limits=Limits(resume_grace_s=10)) as r:
        async with r.call_ready(stream=False) as (old, _):
            cid = old.conversation_id
            abort(old)
        await wait_until(lambda: r.bridge.calls[cid].call.state is CallState.DETACHED,
                         what="the call detached")
        r.agent.refuse_next(100)
        await r.agent.drop_all()
        end = await r.log.wait_for("session_end")  # nobody to hang up on: it just ends
        assert end.reason == "error"
        async with resumed(r.host, cid) as new:
            refused = answer(new)
            await new.wait_closed()
        assert refused["type"] == "session.error" and refused["reason"]
        await r.settled([cid], end_reasons="error")


async def test_agent_gone_for_good_hangs_up_with_a_reason() -> None:
    reconnect = Reconnect(attempts=2, initial_backoff_s=0.05, max_backoff_s=0.1)
    async with rig(QUICK, reconnect=reconnect) as r:
        async with r.call_ready() as (caller, _):
            cid = caller.conversation_id
            await exchange(caller)
            r.agent.refuse_next(100)
            await r.agent.drop_all()
            reason = await hangup_reason(caller)
            error = await r.log.wait_for("error")
            await caller.end(reason_code="bot-disconnected", reason="Bot Side")
            await caller.wait_closed()
        assert "unavailable" in reason
        assert (error.code, error.fatal) == ("AGENT_UNAVAILABLE", True)
        assert r.agent.refused == 2  # attempts=2: two retries, then the hangup
        await r.settled([cid], end_reasons="error",
                        allow_logs=lambda line: "AGENT_UNAVAILABLE" in line)


# --- 3. graceful drain ----------------------------------------------------------------------


async def test_drain_refuses_new_calls_and_lets_the_active_one_finish() -> None:
    async with rig(QUICK) as r, httpx.AsyncClient() as http:
        assert (await http.get(f"http://{r.host}/ready")).status_code == 200
        async with r.call_ready() as (caller, _), anyio.create_task_group() as tg:
            cid = caller.conversation_id
            drained = anyio.Event()

            async def drain() -> None:
                await r.bridge.drain(timeout_s=30)
                drained.set()

            tg.start_soon(drain)
            await wait_until(lambda: r.bridge.draining, what="draining")
            ready = await http.get(f"http://{r.host}/ready")
            assert ready.status_code == 503
            assert ready.json()["ready"] is False
            assert await upgrade_status(r.host) == 503

            # The active call is not touched: it talks, hears answers, ends as usual.
            await exchange(caller)
            await exchange(caller)
            assert not drained.is_set()
            assert not any(is_hangup(x) for x in caller.replies)
            await caller.end()
            await caller.wait_closed()
            with anyio.fail_after(SETTLE_S):
                await drained.wait()
        assert caller.invalid == []
        await r.settled([cid], end_reasons="caller")
    assert len(r.agent.connections) == 1


async def test_a_call_can_resume_during_a_drain() -> None:
    async with rig(QUICK, limits=Limits(resume_grace_s=10)) as r:
        async with r.call_ready() as (old, _), anyio.create_task_group() as tg:
            cid = old.conversation_id
            tg.start_soon(r.bridge.drain, 20)
            await wait_until(lambda: r.bridge.draining, what="draining")
            abort(old)
            await wait_until(lambda: r.bridge.calls[cid].call.state is CallState.DETACHED,
                             what="the call detached")
            # While a call waits for its resume the upgrade is let in; a new call is still
            # turned away, now at the session level.
            async with vaic(r.host) as newcomer:
                refused = await newcomer.initiate()
                await newcomer.wait_closed()
            assert refused["type"] == "session.error"
            async with resumed(r.host, cid) as new:
                assert answer(new) == {"type": "session.accepted", "mediaFormat": "raw/lpcm16"}
                await new.start_stream()
                await exchange(new)
                assert not any(is_hangup(x) for x in new.replies)
                await new.end()
                await new.wait_closed()
            await r.log.wait_for("session_end")
            assert await upgrade_status(r.host) == 503  # nothing left to resume
        await r.settled([cid], end_reasons="caller")
    assert newcomer.conversation_id not in {e.conversation_id for e in r.log.of("session_start")}


async def test_drain_deadline_hangs_up_politely_with_reason_shutdown() -> None:
    async with rig(QUICK, limits=Limits(hangup_timeout_s=1)) as r:
        async with r.call_ready() as (caller, _), r.call_ready(stream=False) as (silent, _):
            # ``silent`` is a VAIC that never confirms the hangup
            with anyio.fail_after(SETTLE_S + r.bridge.limits.hangup_timeout_s):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(r.bridge.drain, 0.5)
                    assert await hangup_reason(caller) == "service shutting down"
                    assert await hangup_reason(silent) == "service shutting down"
                    await caller.end(reason_code="bot-disconnected", reason="Bot Side")
                    await caller.wait_closed()
            await silent.wait_closed()  # ended by the hangup timeout
        ids = [caller.conversation_id, silent.conversation_id]
        await r.settled(ids, end_reasons="shutdown")
    ends = {e.conversation_id: e for e in r.log.of("session_end")}
    assert ends[caller.conversation_id].reason_code == "bot-disconnected"


async def test_drain_deadline_ends_a_detached_call_at_once() -> None:
    async with rig(QUICK, limits=Limits(resume_grace_s=30)) as r:
        async with r.call_ready(stream=False) as (caller, _):
            cid = caller.conversation_id
            abort(caller)
        await wait_until(lambda: r.bridge.calls[cid].call.state is CallState.DETACHED,
                         what="the call detached")
        with anyio.fail_after(SETTLE_S):  # well before the 30 s grace period
            await r.bridge.drain(0.2)
        await r.settled([cid], end_reasons="shutdown")


async def test_concurrent_drains_all_return_when_the_last_call_ends() -> None:
    async with rig(QUICK) as r:
        async with r.call_ready(stream=False) as (caller, _), anyio.create_task_group() as tg:
            cid = caller.conversation_id
            done: list[int] = []

            async def drain(n: int) -> None:
                await r.bridge.drain(30)
                done.append(n)

            tg.start_soon(drain, 1)
            await wait_until(lambda: r.bridge.draining, what="draining")
            tg.start_soon(drain, 2)  # e.g. SIGTERM and an admin route at the same time
            await anyio.sleep(0.1)
            await caller.end()
            await caller.wait_closed()
            try:
                await wait_until(lambda: len(done) == 2, within=3,
                                 what=f"both drains to return (returned: {done})")
            finally:
                tg.cancel_scope.cancel()
        assert sorted(done) == [1, 2]
        assert [e.reason for e in r.log.of("session_end", cid)] == ["caller"]


SERVER = """
import logging, socket, sys
import uvicorn
from acdg_asgi import BridgeApp, Limits
from acdg_asgi.serving import DrainingServer

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
grace = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
bridge = BridgeApp(deepgram_url=sys.argv[1], drain_timeout_s=float(sys.argv[2]),
                   limits=Limits(resume_grace_s=grace))
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(128)
print(sock.getsockname()[1], flush=True)
server = DrainingServer(uvicorn.Config(bridge, log_level="info"), bridges=[bridge])
server.run(sockets=[sock])
"""


@asynccontextmanager
async def bridge_process(*args: str) -> AsyncIterator[tuple[Process, str]]:
    """``SERVER`` in a process of its own: the process, and its ``host:port``."""
    process = await anyio.open_process([sys.executable, "-c", SERVER, *args],
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        with anyio.fail_after(SETTLE_S):
            port = int((await process.stdout.receive()).split()[0])
        yield process, f"127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        with contextlib.suppress(Exception):
            await process.aclose()


async def test_sigterm_drains_a_real_server_process_without_cutting_the_call() -> None:
    stderr = bytearray()
    async with (
        standin(QUICK) as agent,
        httpx.AsyncClient() as http,
        bridge_process(agent.url, "60") as (process, host),
    ):

        async def collect_stderr() -> None:
            assert process.stderr is not None
            async for data in process.stderr:
                stderr.extend(data)

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect_stderr)
            async with call_ready(host, agent) as (caller, _):
                await exchange(caller)

                process.send_signal(signal.SIGTERM)

                async def not_ready() -> bool:
                    return (await http.get(f"http://{host}/ready")).status_code == 503

                with anyio.fail_after(SETTLE_S):
                    while not await not_ready():  # noqa: ASYNC110 (polling over HTTP)
                        await anyio.sleep(0.05)
                assert (await http.get(f"http://{host}/ready")).json()["ready"] is False
                assert await upgrade_status(host) == 503

                # The call is not cut: the caller keeps talking and hearing answers.
                stream = await exchange(caller)
                assert stream.start.msg["altText"] == "four five six"
                assert process.returncode is None
                assert not any(is_hangup(x) for x in caller.replies)
                await caller.end()
                await caller.wait_closed()
            assert caller.ws.close_code == 1000  # closed by the call's end, not uvicorn
            with anyio.fail_after(SETTLE_S):
                assert await process.wait() == 0
    lines = stderr.decode(errors="replace").splitlines()
    errors = [line for line in lines if "ERROR" in line]
    assert not any("Traceback" in line for line in lines) and errors == [], "\n".join(lines)
    assert any("SIGTERM received: draining" in line for line in lines), "\n".join(lines)


# --- 4. bounded everything ------------------------------------------------------------------


async def test_max_calls_refuses_the_third_call_and_leaves_the_others_alone() -> None:
    async with rig(QUICK, limits=Limits(max_calls=2)) as r:
        async with r.call_ready(stream=False) as (a, _), r.call_ready(stream=False) as (b, _):
            async with vaic(r.host) as c:
                refused = await c.initiate()
                await c.wait_closed()
            assert refused["type"] == "session.error"
            assert refused["reason"] == "bridge at capacity"
            assert len(r.bridge.calls) == 2 and len(r.agent.connections) == 2
            for caller in (a, b):
                await caller.start_stream()
                await exchange(caller)
                await caller.end()
                await caller.wait_closed()
        # Capacity frees up with the calls.
        async with vaic(r.host) as d:
            assert (await d.initiate())["type"] == "session.accepted"
            await d.end()
            await d.wait_closed()
        ids = [a.conversation_id, b.conversation_id, d.conversation_id]
        await r.settled(ids)
    assert c.conversation_id not in {e.conversation_id for e in r.log.of("session_start")}


async def test_oversize_frame_is_ignored_with_a_warning() -> None:
    limit = 4096
    async with rig(QUICK, limits=Limits(max_frame_bytes=limit)) as r:
        async with r.call_ready() as (caller, record):
            cid = caller.conversation_id
            before = record.audio_bytes
            big = ac.UserStreamChunk(conversation_id=cid, audio_chunk=bytes(limit))
            frame = ac.encode(big).decode()  # about 5.5 KiB of JSON once base64-encoded
            await caller.send(frame)
            warning = await r.log.wait_for("warning")
            assert (warning.source, warning.code) == ("audiocodes", "PROTOCOL_ERROR")
            assert str(len(frame)) in warning.description
            await exchange(caller)  # the call did not notice
            assert record.audio_bytes - before == caller.fmt.frame_bytes(500)
            await caller.end()
            await caller.wait_closed()
        await r.settled([cid], end_reasons="caller")
    assert len(r.log.of("warning")) == 1


async def test_a_socket_that_never_initiates_is_closed() -> None:
    async with rig(QUICK, limits=Limits(initiate_timeout_s=0.3)) as r:
        async with vaic(r.host) as idle, vaic(r.host) as chatty:
            await chatty.send({"type": "userStream.start", "conversationId": "x"})
            await idle.wait_closed()
            await chatty.wait_closed()
        assert idle.ws.close_code == 1008 and chatty.ws.close_code == 1008
        assert idle.replies == [] and chatty.replies == []
        await r.settled([])
    assert r.agent.connections == [] and r.log.events == []


@pytest.mark.parametrize(
    "mode", ["silent", "no-settings-applied", "welcome-then-close", "welcome-then-abort"])
async def test_an_agent_that_never_completes_the_handshake_ends_in_a_hangup(mode: Any) -> None:
    reconnect = Reconnect(attempts=2, initial_backoff_s=0.05, max_backoff_s=0.1)
    limits = Limits(handshake_timeout_s=0.5)
    async with broken_agent(mode) as broken, rig(
        QUICK, agent_url=broken.url, reconnect=reconnect, limits=limits
    ) as r:
        async with vaic(r.host) as caller:
            cid = caller.conversation_id
            assert (await caller.initiate())["type"] == "session.accepted"
            await caller.start_stream()
            await caller.speak(voiced_ms=100, pace=0.25)  # audio waits, bounded, meanwhile
            reason = await hangup_reason(caller, within=SETTLE_S)
            await caller.end(reason_code="bot-disconnected", reason="Bot Side")
            await caller.wait_closed()
        assert "unavailable" in reason
        error = await r.log.wait_for("error")
        assert (error.code, error.fatal) == ("AGENT_UNAVAILABLE", True)
        if mode in ("silent", "no-settings-applied"):
            assert "timed out" in error.message
        assert broken.connections == 3  # the first try and two retries
        assert broken.settings_seen == (3 if mode == "no-settings-applied" else 0)
        await r.settled([cid], end_reasons="error")
    assert not any(r.type.startswith("playStream") for r in caller.replies)


async def test_keepalive_keeps_a_quiet_agent_connection_open() -> None:
    script = AgentScript(turns=TURNS, ms_per_word=40, end_of_turn_ms=200, idle_timeout=1.0)
    async with rig(script, limits=Limits(keepalive_s=0.3, resume_grace_s=10)) as r:
        async with r.call_ready() as (caller, record):
            cid = caller.conversation_id
            await caller.speak(voiced_ms=0, silent_ms=100, pace=0.5)
            # VAIC withholds audio (bargeIn off while it plays a prompt, a hold, ...)
            # for twice the agent's idle timeout.
            await anyio.sleep(2.0)
            keepalives = [f for f in record.text_frames if json.loads(f)["type"] == "KeepAlive"]
            assert len(keepalives) >= 2
            assert not record.closed.is_set() and record.close_reason is None
            assert r.log.of("error") == [] and r.log.of("warning") == []
            stream = await exchange(caller)  # and the call is still alive
            assert stream.start.msg["altText"] == "one two three"
            # VAIC's socket drops: no audio at all while the call waits for the resume.
            abort(caller)
        await anyio.sleep(1.5)
        async with resumed(r.host, cid) as new:
            assert answer(new)["type"] == "session.accepted"
            await new.start_stream()
            stream = await exchange(new)
            assert stream.start.msg["altText"] == "four five six"
            await new.end()
            await new.wait_closed()
        await r.settled([cid], end_reasons="caller")
        assert len(r.agent.connections) == 1 and record.close_reason is not None
        assert record.close_reason.startswith("closed")  # by the bridge, at the end


async def test_playout_overflow_while_detached_drops_the_oldest_audio() -> None:
    long_reply = " ".join(["word"] * 40)  # 4 s of agent audio, sent in a 0.4 s burst
    script = AgentScript(turns=(Turn(long_reply, heard="hi"),), ms_per_word=100,
                         end_of_turn_ms=200)
    max_ms = 400
    async with rig(script, playout=Playout(max_buffer_ms=max_ms),
                   limits=Limits(resume_grace_s=10)) as r:
        async with r.call_ready() as (old, record):
            cid = old.conversation_id
            await old.speak(voiced_ms=200, pace=0.25)
            abort(old)
        await agent_turn_sent(record)
        call = r.bridge.calls[cid].call
        limit = call.media_format.frame_bytes(max_ms)
        assert call.state is CallState.DETACHED
        assert call.playout.pending <= limit  # memory is bounded by the setting
        assert call.stats.play_bytes_dropped == record.sent_audio_bytes - call.playout.pending
        warning = await r.log.wait_for("warning", lambda w: w.code == "PLAYOUT_OVERFLOW")
        assert warning.source == "bridge"

        async with resumed(r.host, cid) as new:
            stop = await new.wait_for("playStream.stop")
            (stream,) = new.play_streams()
            assert stream.stop is stop
            assert 0 < stream.audio_bytes <= limit  # only the newest part was kept
            await new.end()
            await new.wait_closed()
        await r.settled([cid], end_reasons="caller",
                        allow_logs=lambda line: "PLAYOUT_OVERFLOW" in line)


# --- 5. kill each socket at every phase of a call ------------------------------------------

LONG = " ".join(["word"] * 30)  # 1.2 s of agent audio at 40 ms a word
FAULT_TURNS = (Turn(LONG, heard="first"), Turn("four five six", heard="second"),
               Turn("seven eight nine", heard="third"))
FAULT_RECONNECT = Reconnect(attempts=2, initial_backoff_s=0.05, max_backoff_s=0.1)


async def open_stream(caller: RawVaic, mark: int, chunks: int = 5) -> str:
    """Wait until a play stream is open (started at or after ``mark``) with some audio."""
    start = await caller.wait_for("playStream.start", start=mark)
    sid = start.msg["streamId"]
    await caller.wait_for(lambda x: x.msg.get("streamId") == sid and x.type == "playStream.chunk",
                          start=mark, count=chunks)
    assert not any(x.type == "playStream.stop" and x.msg.get("streamId") == sid
                   for x in caller.replies), "the stream ended before the fault"
    return str(sid)


VAIC_PHASES = ["before-initiate", "after-initiate", "mid-stream", "play-stream", "during-resume"]


@pytest.mark.parametrize("then", ["resume", "abandon"])
@pytest.mark.parametrize("phase", VAIC_PHASES)
async def test_vaic_socket_dies(phase: str, then: str) -> None:
    """VAIC's socket is aborted (no close frame, no session.end) at ``phase``; VAIC then
    resumes on a new socket, or never comes back."""
    script = AgentScript(turns=FAULT_TURNS, ms_per_word=40, end_of_turn_ms=200)
    grace = 10.0 if then == "resume" else 0.5
    async with rig(script, proxy=True, agent=GREETING,
                   limits=Limits(resume_grace_s=grace)) as r, contextlib.AsyncExitStack() as stack:
        assert r.proxy is not None
        old = await stack.enter_async_context(vaic(r.host))
        cid = old.conversation_id
        called = phase != "before-initiate"
        open_sid = None
        if phase == "before-initiate":
            abort(old)
        elif phase == "after-initiate":
            r.proxy.hold = anyio.Event()  # the agent's answer to the upgrade waits in the proxy
            await old.send(ac.SessionInitiate(conversation_id=cid,
                                              supported_media_formats=("raw/lpcm16",)))
            await wait_until(lambda: r.proxy is not None and r.proxy.links,
                             what="the agent connection to open")
            abort(old)
            await wait_until(lambda: cid in r.bridge.calls, what="the call")
            # still in the agent handshake: not a byte of the agent's answer got through
            assert [bytes(link.down_bytes) for link in r.proxy.links] == [b""]
            await wait_until(lambda: cid not in r.bridge.calls
                             or r.bridge.calls[cid].call.state is not CallState.ACTIVE,
                             what="the loss noticed")
            r.proxy.hold.set()
        else:
            await old.initiate()
            await r.agent_ready()
            await old.start_stream()
            await old.wait_for("playStream.stop")  # the greeting
            if phase == "mid-stream":
                await old.speak(voiced_ms=100, silent_ms=100, pace=0.25)
                abort(old)
            elif phase == "play-stream":
                mark = len(old.replies)
                await old.speak(voiced_ms=200, silent_ms=300, pace=0.25)
                open_sid = await open_stream(old, mark)
                abort(old)
            else:  # during-resume: the socket of the resume dies too
                abort(old)
                await wait_until(lambda: r.bridge.calls[cid].call.state is CallState.DETACHED,
                                 what="the call detached")
                second = await stack.enter_async_context(vaic(r.host, conversation_id=cid))
                await second.send(ac.SessionResume(conversation_id=cid))
                abort(second)

        if then == "resume":
            async with resumed(r.host, cid) as new:
                if not called:
                    assert answer(new)["type"] == "session.error"
                    await new.wait_closed()
                else:
                    assert answer(new) == {"type": "session.accepted", "mediaFormat": "raw/lpcm16"}
                    await new.start_stream()
                    if phase == "after-initiate":
                        await new.wait_for("playStream.stop")  # the greeting, after the resume
                        assert new.play_streams()[0].start.msg["altText"] == "Hello there"
                    if open_sid is not None:  # the interrupted answer plays on, as a new stream
                        first = await _first_stream(new)
                        assert first.stream_id != open_sid and first.audio_bytes > 0
                    stream = await exchange(new)
                    assert stream.audio_bytes > 0
                    assert not any(is_hangup(x) for x in new.replies)
                    new.play_streams()  # well-formed: every stream started and stopped
                    await new.end()
                    await new.wait_closed()
                    assert len(r.agent.connections) == 1  # one agent connection throughout
                    assert new.invalid == []
            reasons = {cid: "caller"}
        else:
            if called:
                end = await r.log.wait_for("session_end", within=SETTLE_S)
                assert end.reason == "timeout"
            reasons = {cid: "timeout"}
        await stack.aclose()
        await r.settled([cid] if called else [], end_reasons=reasons)
        if not called:
            assert r.log.events == [] and r.agent.connections == []
        else:
            # The dying resume socket counts if the bridge read its session.resume first.
            resumes = len(r.log.of("session_resumed"))
            expected = (1 if then == "resume" else 0) + (phase == "during-resume")
            assert expected - (phase == "during-resume") <= resumes <= expected


AGENT_PHASES = ["before-settings-applied", "after-welcome", "mid-stream", "play-stream"]


@pytest.mark.parametrize("then", ["reconnect", "gone"])
@pytest.mark.parametrize("phase", AGENT_PHASES)
async def test_agent_socket_dies(phase: str, then: str) -> None:
    """The agent's TCP connection dies at ``phase``; the agent comes back, or never does."""
    script = AgentScript(turns=FAULT_TURNS, ms_per_word=40, end_of_turn_ms=200, realtime=True)
    async with rig(script, proxy=True, agent=GREETING, reconnect=FAULT_RECONNECT) as r:
        proxy = r.proxy
        assert proxy is not None
        proxy.cuts = 1 if then == "reconnect" else 1000
        if phase == "before-settings-applied":
            proxy.cut_before = b'"SettingsApplied"'
        elif phase == "after-welcome":
            proxy.cut_after = b'"Welcome"'
        async with vaic(r.host) as caller:
            cid = caller.conversation_id
            await caller.initiate()
            await caller.start_stream()
            if phase in ("mid-stream", "play-stream"):
                await caller.wait_for("playStream.stop")  # the greeting
                if phase == "mid-stream":
                    await caller.speak(voiced_ms=100, pace=0.25)  # the caller is talking
                else:
                    mark = len(caller.replies)
                    await caller.speak(voiced_ms=200, silent_ms=300, pace=0.25)
                    await open_stream(caller, mark)
                if then == "gone":
                    r.agent.refuse_next(1000)
                proxy.cut_all()
            if then == "reconnect":
                await r.log.wait_for("agent_reconnected")
                if phase in ("before-settings-applied", "after-welcome"):
                    await caller.wait_for("playStream.stop")  # the greeting, once reconnected
                if phase == "play-stream":  # the cut-off answer is closed, not left open
                    await wait_until(lambda: caller.types().count("playStream.stop") >= 2,
                                     what="the interrupted stream to stop")
                    caller.play_streams()
                stream = await exchange(caller)
                assert stream.audio_bytes > 0
                assert not any(is_hangup(x) for x in caller.replies)
                greetings = [s for s in caller.play_streams()
                             if s.start.msg.get("altText") == "Hello there"]
                assert len(greetings) == 1  # never greeted twice
                await caller.end()
                reason = "caller"
            else:
                assert "unavailable" in await hangup_reason(caller)
                error = await r.log.wait_for("error")
                assert (error.code, error.fatal) == ("AGENT_UNAVAILABLE", True)
                await caller.end(reason_code="bot-disconnected", reason="Bot Side")
                reason = "error"
            await caller.wait_closed()
            caller.play_streams()
            assert caller.invalid == []
        await r.settled([cid], end_reasons=reason)
        assert len(r.log.of("agent_reconnected")) == (1 if then == "reconnect" else 0)


async def test_a_second_sigterm_stops_the_server_at_once() -> None:
    async with (
        standin(QUICK) as agent,
        bridge_process(agent.url, "60", "20") as (process, host),
        call_ready(host, agent) as (caller, _),
    ):
        process.send_signal(signal.SIGTERM)
        await anyio.sleep(0.3)  # the drain has started
        process.send_signal(signal.SIGTERM)
        # The caller is told, not just cut off.
        assert await hangup_reason(caller)
        await caller.wait_closed()
        with anyio.move_on_after(5):  # the call's grace period is 20 s
            await process.wait()
        assert process.returncode is not None, "still running 5 s after the 2nd SIGTERM"
        assert process.returncode == 0
