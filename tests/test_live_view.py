"""The live view over real sockets: every call's events, the calls in progress, and both
across two instances sharing a real Redis; a store that cannot be reached costs the
calls nothing.

The bridge runs under uvicorn with the stand-in agent; calls are placed with the VAIC
simulator; the streams and the listing are read with httpx, as the supervisor page
reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx
import msgspec
import pytest
import redis

from acdg_asgi import AgentSettings, BridgeApp
from acdg_asgi.cluster.live import LiveShipper
from acdg_asgi.errors import StoreUnavailable
from acdg_asgi.observability.live import LiveCall, LiveEvent, LiveEvents, LiveOutbox
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import CallReport, run_call

pytestmark = pytest.mark.anyio

TOKEN = "supervisor-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCRIPT = AgentScript(turns=(Turn("Sure", heard="help me"), Turn("Right", heard="and then")),
                     ms_per_word=40, end_of_turn_ms=200)
SHORT = CallScript(utterances=(Utterance(speech_ms=0, pause_ms=300), Utterance(speech_ms=300)),
                   max_duration_ms=8000)
# Stays on the line until the bot hangs up: the tests end it through the control route.
LONG = CallScript(utterances=(Utterance(speech_ms=0, pause_ms=300), Utterance(speech_ms=300)),
                  wait_for_hangup=True, silence_timeout_ms=60_000, max_duration_ms=60_000,
                  caller="+15550177",
                  callee="+15550999")


def bridge(agent: StandInAgent, *, live: Any = True, **kwargs: Any) -> BridgeApp:
    return BridgeApp(deepgram_url=agent.url, agent=AgentSettings(greeting="Hi"), live=live,
                     control_auth=TOKEN, tracing=False, **kwargs)


async def read_until(
    client: httpx.AsyncClient, url: str, done: Callable[[list[dict[str, Any]]], bool],
    headers: dict[str, str] | None = None, connected: anyio.Event | None = None,
    frames: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The frames of an SSE stream (``id``, ``event``, ``data`` decoded) until ``done``,
    each appended to ``frames`` as it comes."""
    frames = [] if frames is None else frames
    with anyio.fail_after(30):
        async with client.stream("GET", url, headers={**AUTH, **(headers or {})},
                                 timeout=None) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            if connected is not None:
                connected.set()
            fields: dict[str, Any] = {}
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    continue
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                if "data" in fields:
                    fields["data"] = msgspec.json.decode(fields["data"])
                    frames.append(fields)
                    if done(frames):
                        return frames
                fields = {}
    return frames


async def until(condition: Callable[[], bool], within_s: float) -> None:
    with anyio.fail_after(within_s):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.02)


def ended(*cids: str) -> Callable[[list[dict[str, Any]]], bool]:
    def check(frames: list[dict[str, Any]]) -> bool:
        over = {f["data"]["conversation_id"] for f in frames if f["event"] == "session_end"
                and f["data"]["reason"] != "migrated"}  # a hand-over: the call goes on
        return over >= set(cids)
    return check


async def listed(client: httpx.AsyncClient, base: str, cid: str) -> dict[str, Any]:
    """The listing, once it has call ``cid``."""
    with anyio.fail_after(15):
        while True:
            body: dict[str, Any] = (await client.get(f"{base}/live/calls", headers=AUTH)).json()
            if any(c["conversation_id"] == cid for c in body["calls"]):
                return body
            await anyio.sleep(0.05)


def texts(frames: list[dict[str, Any]], cid: str) -> list[tuple[str, str]]:
    return [(f["data"]["role"], f["data"]["content"]) for f in frames
            if f["event"] == "conversation_text" and f["data"]["conversation_id"] == cid]


async def test_every_calls_stream_and_the_listing_on_one_instance() -> None:
    reports: dict[str, CallReport] = {}

    async def call(name: str, script: CallScript) -> None:
        reports[name] = await run_call(f"ws://{host}/", script)

    async with StandInAgent(script=SCRIPT) as agent, AsyncExitStack() as stack:
        app = bridge(agent, instance_id="solo")
        host = await stack.enter_async_context(serve(app, lifespan="on"))
        base = f"http://{host}"
        client = await stack.enter_async_context(httpx.AsyncClient())
        connected = anyio.Event()
        everything: list[dict[str, Any]] = []
        long_cid, short_cid = "supervised-long", "supervised-short"
        async with anyio.create_task_group() as tg:
            async def watch() -> None:
                everything.extend(await read_until(client, f"{base}/live/events",
                                                   ended(long_cid, short_cid),
                                                   connected=connected))
            tg.start_soon(watch)
            await connected.wait()
            tg.start_soon(call, "long", msgspec.structs.replace(LONG, conversation_id=long_cid))
            during = await listed(client, base, long_cid)
            await call("short", msgspec.structs.replace(SHORT, conversation_id=short_cid))
            hangup = await client.post(f"{base}/calls/{long_cid}/end_session",
                                       json={"reason": "supervisor"}, headers=AUTH)
        after = (await client.get(f"{base}/live/calls", headers=AUTH)).json()
        refused = [await client.get(f"{base}/live/calls"),
                   await client.get(f"{base}/live/events"),
                   await client.get(f"{base}/live/calls", headers={"Authorization": "Bearer x"}),
                   await client.get(f"{base}/live/events?after=junk", headers=AUTH)]

    assert reports["short"].ok and reports["long"].ok, reports
    assert hangup.status_code == 200 and reports["long"].hangup_reason == "supervisor"
    (entry,) = [c for c in during["calls"] if c["conversation_id"] == long_cid]
    assert entry.items() >= {"caller": "+15550177", "callee": "+15550999", "owner": "solo",
                             "state": "active"}.items()
    assert entry["started"] > 0 and entry["session_id"]
    assert during["instance"] == "solo" and during["shared"] is False
    assert after["calls"] == []
    # Both calls on one stream, each event naming its call; ids count across calls, each
    # call's seq has no gaps.
    ids = [int(f["id"]) for f in everything]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for cid in (long_cid, short_cid):
        seqs = [f["data"]["seq"] for f in everything if f["data"]["conversation_id"] == cid]
        assert seqs == list(range(1, len(seqs) + 1))
        assert texts(everything, cid)[:2] == [("assistant", "Hi"), ("user", "help me")]
    assert [r.status_code for r in refused] == [401, 401, 401, 400]


async def test_a_call_on_one_instance_is_followed_and_hung_up_from_another(
    redis_url: str,
) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    report: list[CallReport] = []
    cid = "followed-elsewhere"
    async with StandInAgent(script=SCRIPT) as agent, AsyncExitStack() as stack:
        a, b = bridge(agent, store=redis_url, instance_id="a"), bridge(
            agent, store=redis_url, instance_id="b")
        host_a = await stack.enter_async_context(serve(a, lifespan="on"))
        host_b = await stack.enter_async_context(serve(b, lifespan="on"))
        on_b = f"http://{host_b}"
        client = await stack.enter_async_context(httpx.AsyncClient())
        async with anyio.create_task_group() as tg:
            async def call() -> None:
                script = msgspec.structs.replace(LONG, conversation_id=cid)
                report.append(await run_call(f"ws://{host_a}/", script))

            tg.start_soon(call)
            during = await listed(client, on_b, cid)
            followed: list[dict[str, Any]] = []

            async def follow() -> None:
                await read_until(client, f"{on_b}/live/events?call={cid}", ended(cid),
                                 frames=followed)
            tg.start_soon(follow)
            # The agent's answer reaches B's page; then B hangs up.
            await until(lambda: ("assistant", "Sure") in texts(followed, cid), 15)
            hangup = await client.post(f"{on_b}/calls/{cid}/end_session",
                                       json={"reason": "from b"}, headers=AUTH)
        everything = await read_until(client, f"{on_b}/live/events", ended(cid),
                                      headers={"Last-Event-ID": "0-0"})
        resumed = await read_until(client, f"{on_b}/live/events?call={cid}", ended(cid),
                                   headers={"Last-Event-ID": "3"})
        at_home = await read_until(client, f"http://{host_a}/live/events?call={cid}",
                                   ended(cid))
        after = (await client.get(f"{on_b}/live/calls", headers=AUTH)).json()

    (call_report,) = report
    assert hangup.status_code == 200 and call_report.hangup_reason == "from b"
    (entry,) = during["calls"]
    assert entry.items() >= {"conversation_id": cid, "owner": "a", "caller": "+15550177",
                             "state": "active"}.items()
    assert during["instance"] == "b" and during["shared"] is True
    # B's page saw what A's own stream holds, event for event.
    assert [(f["id"], f["event"], f["data"]) for f in followed] == [
        (f["id"], f["event"], f["data"]) for f in at_home]
    assert followed[-1]["event"] == "session_end"
    assert ("assistant", "Sure") in texts(followed, cid)
    assert [f["id"] for f in resumed] == [f["id"] for f in followed[3:]]
    assert [f["data"] for f in everything] == [f["data"] for f in followed]
    assert all("-" in f["id"] for f in everything)  # the store's ids, to resume after
    assert after["calls"] == []


async def test_a_call_that_moves_to_another_instance_stays_one_stream_on_every_page(
    redis_url: str,
) -> None:
    """VAIC loses A and resumes the call on B: pages on A and B, following from the start,
    see one stream with no gap, A's hand-over, and no end until the call's own; a page
    that comes later, to either, or resumes after an id from before the move, gets the
    same."""
    redis.Redis.from_url(redis_url).flushdb()
    cid = "moved-mid-call"
    talk = CallScript(utterances=(Utterance(speech_ms=0, pause_ms=300),
                                  *(Utterance(speech_ms=300, pause_ms=700) for _ in range(3))),
                      conversation_id=cid, max_duration_ms=20_000)
    async with StandInAgent(script=SCRIPT) as agent, AsyncExitStack() as stack:
        a, b = bridge(agent, store=redis_url, instance_id="a"), bridge(
            agent, store=redis_url, instance_id="b")
        host_a = await stack.enter_async_context(serve(a, lifespan="on"))
        host_b = await stack.enter_async_context(serve(b, lifespan="on"))
        client = await stack.enter_async_context(httpx.AsyncClient())
        pages: dict[str, list[dict[str, Any]]] = {"on a": [], "on b": []}
        listings: list[dict[str, Any]] = []
        over = anyio.Event()

        async def watch_listing() -> None:
            while not over.is_set():
                body = (await client.get(f"http://{host_b}/live/calls", headers=AUTH)).json()
                listings.extend(c for c in body["calls"] if c["conversation_id"] == cid)
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            for name, host in (("on a", host_a), ("on b", host_b)):
                tg.start_soon(read_until, client, f"http://{host}/live/events?call={cid}",
                              ended(cid), None, None, pages[name])
            tg.start_soon(watch_listing)
            await anyio.sleep(0.3)  # both pages wait for the call
            script = msgspec.structs.replace(talk, drop_and_resume_at_ms=2300,
                                             resume_urls=(f"ws://{host_b}/",))
            report = await run_call(f"ws://{host_a}/", script)
            over.set()
        later = {name: await read_until(client, f"http://{host}/live/events?call={cid}",
                                        ended(cid))
                 for name, host in (("later on a", host_a), ("later on b", host_b))}
        resumed = await read_until(client, f"http://{host_a}/live/events?call={cid}",
                                   ended(cid), headers={"Last-Event-ID": "2"})

    assert report.resumed and report.ok, report.timeline
    # The listing names the new owner, and the call's own start, not the take-over's.
    assert [owner for owner in dict.fromkeys(c["owner"] for c in listings)] == ["a", "b"]
    assert len({c["started"] for c in listings}) == 1, listings
    stream = pages["on a"]
    assert [f["id"] for f in stream] == [str(n) for n in range(1, len(stream) + 1)]
    assert [f["data"]["seq"] for f in stream] == list(range(1, len(stream) + 1))
    # A's part ends with its hand-over, which does not end the stream; B's with the call.
    ends = [(i, f["data"]["reason"]) for i, f in enumerate(stream) if f["event"] == "session_end"]
    assert [reason for _, reason in ends] == ["migrated", "caller"]
    assert ends[-1][0] == len(stream) - 1
    (moved,) = [i for i, f in enumerate(stream) if f["event"] == "session_resumed"]
    assert stream[moved]["data"]["taken_over"] is True and moved == ends[0][0] + 1
    said = texts(stream, cid)
    assert ("assistant", "Hi") in said[:1] and said.count(("assistant", "Sure")) == 1
    assert "assistant" in [role for role, _ in texts(stream[moved:], cid)]  # B's part too
    for name, frames in (*pages.items(), *later.items()):
        assert [(f["id"], f["event"], f["data"]) for f in frames] == [
            (f["id"], f["event"], f["data"]) for f in stream], name
    assert [f["id"] for f in resumed] == [f["id"] for f in stream[2:]]


async def test_a_call_handed_over_that_no_instance_takes_up_ends_its_stream(
    redis_url: str,
) -> None:
    """A migrating drain hands the call over and VAIC never resumes it: a page following
    it waits ``wait_for_call_s`` for a next owner, then its stream ends, with the
    hand-over last."""
    redis.Redis.from_url(redis_url).flushdb()
    cid = "handed-over-for-nobody"
    async with StandInAgent(script=SCRIPT) as agent, AsyncExitStack() as stack:
        a, b = (bridge(agent, store=redis_url, instance_id=name,
                       live=LiveEvents(wait_for_call_s=1.0)) for name in ("a", "b"))
        host_a = await stack.enter_async_context(serve(a, lifespan="on"))
        host_b = await stack.enter_async_context(serve(b, lifespan="on"))
        client = await stack.enter_async_context(httpx.AsyncClient())
        frames: list[dict[str, Any]] = []
        page_ended = anyio.Event()
        async with anyio.create_task_group() as tg:
            async def page() -> None:
                await read_until(client, f"http://{host_b}/live/events?call={cid}",
                                 lambda _: False, frames=frames)
                page_ended.set()

            async def call() -> None:
                script = msgspec.structs.replace(LONG, conversation_id=cid)
                await run_call(f"ws://{host_a}/", script)

            tg.start_soon(page)
            tg.start_soon(call)
            await until(lambda: ("assistant", "Sure") in texts(frames, cid), 15)
            await a.drain(migrate=True)
            with anyio.fail_after(10):  # the stream ends by itself
                await page_ended.wait()

    assert frames[-1]["event"] == "session_end" and frames[-1]["data"]["reason"] == "migrated"
    assert [f["data"]["seq"] for f in frames] == list(range(1, len(frames) + 1))


class _Stuck:
    """A store that never answers."""

    def __init__(self) -> None:
        self.tried = 0

    async def live_publish(self, items: object) -> None:
        self.tried += 1
        await anyio.sleep_forever()


class _Down:
    async def live_publish(self, items: object) -> None:
        raise StoreUnavailable("redis: connection refused")


def _item(cid: str, seq: int) -> tuple[LiveCall, LiveEvent]:
    return LiveCall(conversation_id=cid), LiveEvent(seq, "dtmf", b"{}")


async def test_a_store_that_does_not_answer_costs_the_call_nothing() -> None:
    outbox = LiveOutbox(size=3)
    for seq in range(1, 11):  # the call's side: never waits, the oldest go
        outbox.put(_item("c", seq))
    assert (len(outbox), outbox.dropped) == (3, 7)
    stuck = _Stuck()
    shipper = LiveShipper(outbox, stuck, timeout_s=0.05)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(shipper.run)
        await until(lambda: shipper.failed >= 3, 10)
        outbox.put(_item("c", 11))
        await until(lambda: shipper.failed >= 4, 10)
        tg.cancel_scope.cancel()
    assert (shipper.shipped, shipper.dropped, stuck.tried) == (0, 11, 2)

    down = LiveShipper(outbox := LiveOutbox(), _Down())  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(down.run)
        outbox.put(_item("c", 1))
        await until(lambda: down.failed >= 1, 10)
        tg.cancel_scope.cancel()
    assert down.dropped == 1


async def test_calls_and_their_local_view_go_on_when_redis_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with StandInAgent(script=SCRIPT) as agent:
        app = bridge(agent, store="redis://127.0.0.1:9/0")
        async with serve(app, lifespan="on") as host, httpx.AsyncClient() as client:
            report = await run_call(f"ws://{host}/", SHORT)
            local = await read_until(
                client, f"http://{host}/live/events?call={report.conversation_id}",
                ended(report.conversation_id))
            listing = await client.get(f"http://{host}/live/calls", headers=AUTH)
            assert app.live_shipper is not None
            shipper = app.live_shipper
            await until(lambda: shipper.dropped >= len(local), 10)

    assert report.ok, report.violations
    assert texts(local, report.conversation_id)[:2] == [("assistant", "Hi"), ("user", "help me")]
    assert listing.status_code == 503 and "redis" in listing.json()["error"]
    assert app.live_shipper.shipped == 0 and app.live_shipper.dropped >= len(local)
    warnings = [r.getMessage() for r in caplog.records if "live events not shared" in
                r.getMessage()]
    assert len(warnings) == 1 and "the calls go on" in warnings[0]


async def test_the_supervisor_page_and_its_files() -> None:
    app = BridgeApp(deepgram_url="ws://127.0.0.1:9/v1/agent/converse", live=True,
                    control_auth=TOKEN)
    async with serve(app, lifespan="on") as host, httpx.AsyncClient() as client:
        base = f"http://{host}/live"
        page = await client.get(base)
        slash = await client.get(base + "/")
        assets = {name: await client.get(f"{base}/{name}")
                  for name in ("live.js", "events.js", "live.css", "phone.js")}

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="live/live.js"' in page.text and "cfg-token" in page.text  # relative links
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from elsewhere
    assert slash.status_code == 308 and slash.headers["location"] == "../live"
    assert assets["live.js"].headers["content-type"].startswith("text/javascript")
    assert "Authorization" in assets["live.js"].text and "token=" not in assets["live.js"].text
    assert assets["live.css"].headers["content-type"].startswith("text/css")
    assert 'src="live/events.js"' in page.text
    assert assets["events.js"].text.startswith("// Server-Sent Events")
    assert assets["phone.js"].status_code == 404  # the phone's files are the phone's
