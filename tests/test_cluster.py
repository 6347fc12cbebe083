"""Several bridge instances sharing one real Redis: resume anywhere, control from anywhere,
migrate-drain, and an instance killed mid-call."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import httpx
import msgspec
import pytest
import redis
from redis import asyncio as aioredis
from websockets.asyncio.client import connect

from acdg_asgi import AgentSettings, BridgeApp, CallNotFound, Event
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call
from acdg_asgi.transports.wsframe import FIN, MASKED, TEXT, apply_mask, header

pytestmark = pytest.mark.anyio

SCRIPT = AgentScript(
    turns=(Turn("First answer.", heard="first question"),
           Turn("Second answer.", heard="second question"),
           Turn("Third answer.", heard="third question")),
    ms_per_word=100,
)
TALK = (
    Utterance(speech_ms=0, pause_ms=600),
    *(Utterance(speech_ms=300, pause_ms=900) for _ in range(4)),
)
CONTROL_TOKEN = "control-secret"


class Instance:
    def __init__(self, bridge: BridgeApp, host: str) -> None:
        self.bridge = bridge
        self.host = host
        self.url = f"ws://{host}/"
        self.http = f"http://{host}"
        self.events: list[Event] = []

    def of(self, name: str) -> list[Event]:
        return [e for e in self.events if type(e).__name__ == name]


@asynccontextmanager
async def cluster(redis_url: str, agent: StandInAgent, n: int) -> AsyncIterator[list[Instance]]:
    redis.Redis.from_url(redis_url).flushdb()
    async with AsyncExitStack() as stack:
        instances = []
        for i in range(n):
            bridge = BridgeApp(agent=AgentSettings(greeting="Hello"), deepgram_url=agent.url,
                               store=redis_url, instance_id=f"i{i}", tracing=False,
                               control_auth=CONTROL_TOKEN)
            host = await stack.enter_async_context(serve(bridge, lifespan="on"))
            instance = Instance(bridge, host)
            for name in ("session_start", "session_end", "session_resumed", "conversation_text"):
                bridge.on(name)(instance.events.append)
            instances.append(instance)
        yield instances


@asynccontextmanager
async def silent_socket(host: str, first: dict[str, object]) -> AsyncIterator[str]:
    """A VAIC socket that sends ``first``, reads the reply (yielded) and then nothing more:
    no frame, no pong, no close."""
    name, _, port = host.rpartition(":")
    async with await anyio.connect_tcp(name, int(port)) as stream:
        await stream.send(
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade"
            "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13"
            "\r\n\r\n".encode())
        got = b""
        while b"\r\n\r\n" not in got:
            got += await stream.receive()
        assert got.startswith(b"HTTP/1.1 101"), got
        mask = os.urandom(4)
        payload = json.dumps(first).encode()
        await stream.send(header(FIN | TEXT, len(payload), MASKED) + mask
                          + apply_mask(payload, mask))
        reply = b""
        while not reply.endswith(b"}"):
            reply += await stream.receive()
        yield reply.decode(errors="replace")


async def wait_for(condition: object, within_s: float = 10.0) -> None:
    with anyio.fail_after(within_s):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110
            await anyio.sleep(0.02)


async def test_resume_on_another_instance_carries_the_history(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with StandInAgent(script=SCRIPT) as agent, cluster(redis_url, agent, 2) as (a, b):
        script = CallScript(utterances=TALK, drop_and_resume_at_ms=4200, resume_urls=(b.url,))
        report = await run_call(a.url, script)
        await wait_for(lambda: not a.bridge.calls and not b.bridge.calls)
    assert report.resumed is True, report.timeline
    assert report.media_format == "raw/lpcm16"
    (moved,) = a.of("SessionEndEvent")
    assert moved.reason == "migrated"  # type: ignore[attr-defined]
    (resumed,) = b.of("SessionResumedEvent")
    assert resumed.taken_over and resumed.conversation_id == report.conversation_id  # type: ignore[attr-defined]
    (ended,) = b.of("SessionEndEvent")
    assert ended.reason == "caller"  # type: ignore[attr-defined]
    # The agent connection opened by B was seeded with what was said on A.
    said_on_a = [(e.role, e.content) for e in a.of("ConversationTextEvent")]  # type: ignore[attr-defined]
    second = agent.connections[-1]
    assert second.settings is not None and not isinstance(second.settings.agent, str)
    context = second.settings.agent.context
    assert context is not None
    assert [(m.role, m.content) for m in context.messages] == said_on_a
    assert len(said_on_a) >= 3 and second.settings.agent.greeting is None
    assert not report.violations
    # B names the instance it took the call from, not itself
    (line,) = [r for r in caplog.records if "taken over from" in r.getMessage()]
    assert line.getMessage() == f"[{report.conversation_id}] resumed here, taken over from i0"
    assert line.conversation_id == report.conversation_id  # type: ignore[attr-defined]


async def test_two_racing_resumes_have_exactly_one_winner(redis_url: str) -> None:
    answers: dict[str, str] = {}

    async def resume(instance: Instance) -> None:
        async with connect(instance.url) as other:
            await other.send('{"type":"session.resume","conversationId":"race"}')
            answers[instance.url] = str(await other.recv())
            await anyio.sleep(0.5)
            if "session.accepted" in answers[instance.url]:  # else the winner waits for
                await other.send('{"type":"session.end","conversationId":"race"}')  # a resume

    async with (
        StandInAgent(script=SCRIPT) as agent,
        cluster(redis_url, agent, 3) as (a, b, c),
        # The call on ``a`` lives on through the race, on a socket that has gone silent
        # (VAIC lost it without a FIN): it neither sends nor answers a ping.
        silent_socket(a.host, {"type": "session.initiate", "conversationId": "race",
                               "supportedMediaFormats": ["raw/mulaw"]}) as accepted,
    ):
        assert "session.accepted" in accepted
        async with anyio.create_task_group() as tg:
            tg.start_soon(resume, b)
            tg.start_soon(resume, c)
    accepted = [url for url, text in answers.items() if "session.accepted" in text]
    refused = [text for text in answers.values() if "session.error" in text]
    assert len(accepted) == 1 and len(refused) == 1, answers
    assert '"mediaFormat":"raw/mulaw"' in answers[accepted[0]]
    assert "resumed elsewhere" in refused[0]


async def test_control_from_another_instance(redis_url: str) -> None:
    reports = []

    async def call(url: str) -> None:
        script = CallScript(utterances=TALK, wait_for_hangup=True, max_duration_ms=15_000)
        reports.append(await run_call(url, script))

    async with (
        StandInAgent(script=SCRIPT) as agent,
        cluster(redis_url, agent, 2) as (a, b),
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(call, a.url)
        await wait_for(lambda: a.bridge.calls)
        (cid,) = a.bridge.calls
        await b.bridge.control(cid).play_url("https://media.example.com/hold.wav")
        async with httpx.AsyncClient() as client:
            headers = {"Authorization": f"Bearer {CONTROL_TOKEN}"}
            ok = await client.post(f"{b.http}/calls/{cid}/send_dtmf", json={"digits": "42"},
                                   headers=headers)
            missing = await client.post(f"{b.http}/calls/nope/end_session", json={},
                                        headers=headers)
            unauthorized = await client.post(f"{b.http}/calls/{cid}/end_session", json={})
            bad = await client.post(f"{b.http}/calls/{cid}/send_dtmf",
                                    json={"digits": "not digits"}, headers=headers)
            typo = await client.post(f"{b.http}/calls/{cid}/transfer",
                                     json={"destinaton": "sip:x@y"}, headers=headers)
            wrong_type = await client.post(f"{b.http}/calls/{cid}/play_url", json={"url": 5},
                                           headers=headers)
            no_such = await client.post(f"{b.http}/calls/{cid}/explode", json={},
                                        headers=headers)
            hangup = await client.post(f"{b.http}/calls/{cid}/end_session",
                                       json={"reason": "done elsewhere"}, headers=headers)
        with pytest.raises(CallNotFound):
            await b.bridge.control("nope").end_session()
    (report,) = reports
    assert (ok.status_code, missing.status_code, unauthorized.status_code) == (200, 404, 401)
    assert bad.status_code == 400 and "DTMF" in bad.json()["error"]  # refused before it travels
    assert typo.status_code == 400 and "destinaton" in typo.json()["error"]
    assert wrong_type.status_code == 400 and "$.url" in wrong_type.json()["error"]
    assert no_such.status_code == 400 and "send_dtmf" in no_such.json()["error"]  # the known ones
    assert hangup.status_code == 200
    names = [(a.activity.name, a.activity.activity_params) for a in report.activities]
    assert ("playUrl", {"playUrlUrl": "https://media.example.com/hold.wav"}) in names
    assert ("sendDtmf", {"dtmfDigits": "42"}) in names
    assert report.hangup_reason == "done elsewhere"


async def test_migrate_drain_moves_live_calls(redis_url: str) -> None:
    async with StandInAgent(script=SCRIPT) as agent, cluster(redis_url, agent, 2) as (a, b):
        script = CallScript(utterances=TALK, resume_on_close=True, resume_urls=(b.url,))
        async with anyio.create_task_group() as tg:
            reports = []

            async def call() -> None:
                reports.append(await run_call(a.url, script))

            for _ in range(3):
                tg.start_soon(call)
            await wait_for(lambda: len(a.bridge.calls) == 3)
            await anyio.sleep(2.5)
            await a.bridge.drain(migrate=True)
            assert not a.bridge.calls
    assert all(r.resumed for r in reports), [r.ended_by for r in reports]
    assert all(r.ended_by == "script-end" for r in reports)
    assert [e.reason for e in a.of("SessionEndEvent")] == ["migrated"] * 3  # type: ignore[attr-defined]
    assert len(b.of("SessionResumedEvent")) == 3
    gaps = [g for r in reports for g in r.resume_gaps_ms]
    print(f"migrate-drain gap (socket lost -> session.accepted): {sorted(gaps)} ms")


async def test_killed_instance_loses_no_transcript(redis_url: str) -> None:
    async with StandInAgent(script=SCRIPT) as agent, cluster(redis_url, agent, 1) as (b,):
        code = (
            "import asyncio, uvicorn\n"
            "from acdg_asgi import BridgeApp, AgentSettings\n"
            f"bridge = BridgeApp(agent=AgentSettings(greeting='Hello'), deepgram_url={agent.url!r},"
            " instance_id='doomed', tracing=False)\n"
            "server = uvicorn.Server(uvicorn.Config(bridge, host='127.0.0.1', port=0,"
            " log_level='warning'))\n"
            "async def main():\n"
            "    task = asyncio.create_task(server.serve())\n"
            "    while not server.started: await asyncio.sleep(0.01)\n"
            "    print(server.servers[0].sockets[0].getsockname()[1], flush=True)\n"
            "    await task\n"
            "asyncio.run(main())\n"
        )
        env = {**os.environ, "ACDG_REDIS_URL": redis_url}
        async with (
            aioredis.from_url(redis_url) as store,
            await anyio.open_process([sys.executable, "-c", code], env=env) as proc,
        ):
            assert proc.stdout is not None
            with anyio.fail_after(20):
                port = (await proc.stdout.receive()).decode().strip()
            url_a = f"ws://127.0.0.1:{port}/"
            script = CallScript(utterances=TALK, resume_on_close=True, resume_urls=(b.url,),
                                conversation_id="killed")
            async with anyio.create_task_group() as tg:
                reports = []

                async def call() -> None:
                    reports.append(await run_call(url_a, script))

                shared: list[tuple[str | None, str | None]] = []

                async def three_turns_shared() -> bool:
                    entries = await store.lrange("acdg:history:killed", 0, -1)
                    history = [msgspec.json.decode(e, type=dg.History) for e in entries]
                    shared[:] = [(h.role, h.content) for h in history if h.role]
                    return len(shared) >= 3

                tg.start_soon(call)
                # The instance is killed once it has written three turns to Redis: that
                # much must survive, whatever it had not written yet.
                with anyio.fail_after(20):
                    while not await three_turns_shared():  # noqa: ASYNC110 (polling Redis)
                        await anyio.sleep(0.02)
                proc.send_signal(signal.SIGKILL)
    (report,) = reports
    assert report.resumed is True
    said_before = [(h.role, h.content) for h in agent.connections[0].history if h.role]
    second = agent.connections[-1]
    assert second.settings is not None and not isinstance(second.settings.agent, str)
    context = second.settings.agent.context
    assert context is not None
    replayed = [(m.role, m.content) for m in context.messages if m.role]
    # What was shared before the kill survived it, in order, and nothing else came in.
    assert replayed[: len(shared)] == shared
    assert replayed == said_before[: len(replayed)]
    (resumed,) = b.of("SessionResumedEvent")
    assert resumed.taken_over  # type: ignore[attr-defined]


async def test_calls_go_on_when_redis_is_unreachable() -> None:
    async with StandInAgent(script=SCRIPT) as agent:
        bridge = BridgeApp(agent=AgentSettings(greeting="Hello"), deepgram_url=agent.url,
                           store="redis://127.0.0.1:9/0", tracing=False)
        async with serve(bridge, lifespan="on") as host:
            report = await run_call(f"ws://{host}/", CallScript(utterances=TALK[:3]))
            async with connect(f"ws://{host}/") as ws:
                await ws.send('{"type":"session.resume","conversationId":"elsewhere"}')
                answer = json.loads(await ws.recv())
    assert report.ok and report.ended_by == "script-end" and len(report.play_streams) >= 2
    assert answer == {"type": "session.error", "reason": "call state unavailable",
                      "conversationId": "elsewhere"}


async def test_a_resume_elsewhere_takes_a_call_only_from_a_dead_socket(redis_url: str) -> None:
    """The same rule as on one instance: a resume is answered only once the call's socket,
    on whichever instance owns it, has gone silent; while it is alive, the resume is
    refused and the call stays where it is."""
    from _hostile import HoleProxy  # VAIC's path to instance a, which can die silently

    cid = "hijacked"
    async with (
        StandInAgent(script=AgentScript(echo=True, idle_timeout=60)) as agent,
        cluster(redis_url, agent, 2) as (a, b),
        HoleProxy(a.url) as path,
        connect(path.url, close_timeout=0.5) as owner,  # its close goes into the hole
        anyio.create_task_group() as tg,
    ):
        await owner.send(json.dumps({"type": "session.initiate", "conversationId": cid,
                                     "supportedMediaFormats": ["raw/lpcm16"]}))
        assert "session.accepted" in str(await owner.recv())

        async def stream() -> None:  # VAIC sends caller audio all the time
            chunk = json.dumps({"type": "userStream.chunk", "conversationId": cid,
                                "audioChunk": "AAAA" * 200})
            while True:
                await owner.send(chunk)
                await anyio.sleep(0.02)

        tg.start_soon(stream)
        async with connect(b.url) as thief:
            await thief.send(json.dumps({"type": "session.resume", "conversationId": cid}))
            with anyio.fail_after(10):
                refused = json.loads(await thief.recv())
        assert refused == {"type": "session.error", "conversationId": cid,
                           "reason": "conversation is live on another socket"}
        assert cid in a.bridge.calls and cid not in b.bridge.calls
        path.black_hole(path.links[0])  # VAIC's path to a dies: no data, no FIN, no RST
        async with connect(b.url) as vaic:
            await vaic.send(json.dumps({"type": "session.resume", "conversationId": cid}))
            with anyio.fail_after(10):
                accepted = json.loads(await vaic.recv())
            assert accepted["type"] == "session.accepted"
            await wait_for(lambda: cid not in a.bridge.calls)  # a let go
            await vaic.send(json.dumps({"type": "session.end", "conversationId": cid}))
        tg.cancel_scope.cancel()
    assert [e.reason for e in a.of("SessionEndEvent")] == ["migrated"]  # type: ignore[attr-defined]
