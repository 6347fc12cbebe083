"""The live event stream and the browser phone's routes, over real sockets.

The bridge runs under uvicorn with the stand-in agent; calls are placed with the VAIC
simulator, and the stream is read with httpx as a page would, late or early.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from rig import standin
from starlette.applications import Starlette
from starlette.routing import Mount, WebSocketRoute

from acdg_asgi import AgentSettings, BridgeApp, ConfigError
from acdg_asgi.events import EVENT_NAMES
from acdg_asgi.observability.live import SCHEMA_VERSION, LiveEvents
from acdg_asgi.testing.agent import AgentScript, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call

pytestmark = pytest.mark.anyio

SCRIPT = AgentScript(turns=(Turn("Sure", heard="help me"),), ms_per_word=40, end_of_turn_ms=200)
CALL = CallScript(utterances=(Utterance(speech_ms=0, pause_ms=300), Utterance(speech_ms=300)),
                  max_duration_ms=8000)


@asynccontextmanager
async def bridge_at_audiocodes(**kwargs: Any) -> AsyncIterator[str]:
    async with standin(SCRIPT) as agent:
        bridge = BridgeApp(deepgram_url=agent.url, agent=AgentSettings(greeting="Hi"), **kwargs)
        app = Starlette(routes=[WebSocketRoute("/audiocodes", bridge),
                                Mount("/audiocodes", bridge)])
        async with serve(app) as host:
            yield host


def parse_sse(text: str) -> list[dict[str, str]]:
    frames = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        if "data" in fields:
            frames.append(fields)
    return frames


async def read_stream(client: httpx.AsyncClient, url: str, **kwargs: Any) -> list[dict[str, str]]:
    with anyio.fail_after(15):
        async with client.stream("GET", url, **kwargs) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            return parse_sse((await response.aread()).decode())


async def test_a_late_page_gets_the_whole_call_and_the_stream_ends_after_session_end() -> None:
    async with bridge_at_audiocodes(phone=True) as host, httpx.AsyncClient() as client:
        report = await run_call(f"ws://{host}/audiocodes", CALL)
        assert report.ok, report.violations
        url = f"http://{host}/audiocodes/live/events?call={report.conversation_id}"
        frames = await read_stream(client, url)

    names = [f["event"] for f in frames]
    assert "session_start" in names[:2] and names[-1] == "session_end"  # after VAIC's start
    assert "conversation_text" in names and set(names) <= set(EVENT_NAMES)
    events = [msgspec.json.decode(f["data"]) for f in frames]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [f["id"] for f in frames] == [str(e["seq"]) for e in events]
    for frame, event in zip(frames, events, strict=True):
        assert event["event"] == frame["event"]
        assert event["conversation_id"] == report.conversation_id
        assert isinstance(event["time"], float) and isinstance(event["at"], float)
    texts = [(e["role"], e["content"]) for e in events if e["event"] == "conversation_text"]
    assert texts == [("assistant", "Hi"), ("user", "help me"), ("assistant", "Sure")]
    assert events[-1]["reason"] == "caller"


async def test_an_early_page_follows_the_call_live_and_resumes_after_an_id() -> None:
    async with bridge_at_audiocodes(phone=True) as host, httpx.AsyncClient() as client:
        cid = "early-page-call"
        url = f"http://{host}/audiocodes/live/events?call={cid}"
        seen: list[dict[str, str]] = []
        async with anyio.create_task_group() as tg:
            async def page() -> None:
                seen.extend(await read_stream(client, url))

            tg.start_soon(page)
            await anyio.sleep(0.2)  # subscribed before the call exists
            report = await run_call(f"ws://{host}/audiocodes",
                                    msgspec.structs.replace(CALL, conversation_id=cid))
        resumed = await read_stream(client, url, headers={"Last-Event-ID": "3"})
        after = await read_stream(client, url + "&after=3")

    assert report.ok
    assert "session_start" in [f["event"] for f in seen[:2]] and seen[-1]["event"] == "session_end"
    assert [f["id"] for f in resumed] == [f["id"] for f in seen[3:]]
    assert after == resumed


async def test_the_stream_is_authenticated_like_the_bot_url_or_by_control_auth() -> None:
    tokens = {"auth": "bot-token", "control_auth": "ops-token"}
    async with bridge_at_audiocodes(phone=True, **tokens) as host, httpx.AsyncClient() as client:
        report = await run_call(f"ws://{host}/audiocodes", CALL, token="bot-token")
        url = f"http://{host}/audiocodes/live/events?call={report.conversation_id}"
        nothing = await client.get(url)
        wrong = await client.get(url, headers={"Authorization": "Bearer nope"})
        as_bot = await read_stream(client, url, headers={"Authorization": "Bearer bot-token"})
        as_ops = await read_stream(client, url, headers={"Authorization": "Bearer ops-token"})
        no_call = await client.get(url.partition("?")[0] + "?call=",
                                   headers={"Authorization": "Bearer ops-token"})

    assert report.ok
    assert (nothing.status_code, wrong.status_code) == (401, 401)
    assert as_bot == as_ops and as_bot[-1]["event"] == "session_end"
    assert no_call.status_code == 400 and "leave call= out" in no_call.json()["error"]


async def test_off_unless_enabled() -> None:
    async with bridge_at_audiocodes() as host, httpx.AsyncClient() as client:
        page = await client.get(f"http://{host}/audiocodes/phone")
        events = await client.get(f"http://{host}/audiocodes/live/events?call=x")
        calls = await client.get(f"http://{host}/audiocodes/live/calls")
        supervisor = await client.get(f"http://{host}/audiocodes/live")
    assert (page.status_code, events.status_code) == (404, 404)
    assert (calls.status_code, supervisor.status_code) == (404, 404)
    with pytest.raises(ConfigError, match="control_auth"):
        BridgeApp(deepgram_url="ws://127.0.0.1:9/v1/agent/converse", live=True)


async def test_the_page_and_its_files_with_their_types() -> None:
    async with bridge_at_audiocodes(phone=True) as host, httpx.AsyncClient() as client:
        base = f"http://{host}/audiocodes/phone"
        page = await client.get(base)
        slash = await client.get(base + "/?token=t")
        assets = {name: await client.get(f"{base}/{name}")
                  for name in ("phone.js", "events.js", "phone-worklet.js", "phone.css",
                               "nope.js")}

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<meta name="acdg-events" content="live/events">' in page.text
    assert 'href="phone/phone.css"' in page.text  # relative: works behind any prefix
    assert slash.status_code == 308 and slash.headers["location"] == "../phone?token=t"
    assert assets["phone.js"].headers["content-type"].startswith("text/javascript")
    assert assets["phone-worklet.js"].headers["content-type"].startswith("text/javascript")
    assert assets["phone.css"].headers["content-type"].startswith("text/css")
    assert "acdgPhone" in assets["phone.js"].text
    assert 'src="phone/events.js"' in page.text  # the event-stream reader both pages share
    assert "acdgReadEvents" in assets["events.js"].text
    assert assets["nope.js"].status_code == 404


async def test_the_token_as_a_subprotocol_is_answered_with_the_scheme_only() -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async with bridge_at_audiocodes(phone=True, auth="s3cret") as host:
        url = f"ws://{host}/audiocodes"
        async with connect(url, subprotocols=["acdg.bearer", "s3cret"]) as ws:
            assert ws.subprotocol == "acdg.bearer"
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, subprotocols=["acdg.bearer", "wrong"])
    assert refused.value.response.status_code == 401


class _View:
    def __init__(self, cid: str) -> None:
        self.conversation_id = cid
        self.session_id = "s"


async def test_a_slow_reader_skips_ahead_and_never_holds_up_the_call() -> None:
    from acdg_asgi.events import ConversationTextEvent, SessionEndEvent

    feed = LiveEvents(max_events_per_call=3, max_finished_calls=1, clock=lambda: 1.5)
    call: Any = _View("c1")
    feed.call_started(call)
    for i in range(5):  # nobody reads: the buffer keeps the last three
        feed.call_event(call, ConversationTextEvent(session_id="s", conversation_id="c1", at=i,
                                                    role="user", content=str(i)))
    feed.call_event(call, SessionEndEvent(session_id="s", conversation_id="c1", at=9,
                                          reason="caller"))
    feed.call_finished(call)
    got = [e async for e in feed.subscribe("c1")]
    assert [e.seq for e in got] == [4, 5, 6]
    first = msgspec.json.decode(got[0].data)
    assert first.items() >= {
        "event": "conversation_text", "seq": 4, "time": 1.5, "session_id": "s",
        "conversation_id": "c1", "at": 3.0, "role": "user", "content": "3"}.items()
    assert list(first)[:3] == ["event", "seq", "time"]
    assert got[-1].sse().startswith(b"id: 6\nevent: session_end\ndata: {")
    feed.call_started(other := _View("c2"))
    feed.call_finished(other)
    assert "c1" not in feed._channels  # only the last finished call is kept
    assert SCHEMA_VERSION == 1


async def test_a_call_that_comes_back_after_a_move_goes_on_numbering_where_it_was() -> None:
    """A to B and back to A: A's buffer keeps only what it has had since it took the call
    back, numbered after B's part; with the place unknown (the store down), A no longer
    claims the call's start."""
    from acdg_asgi.events import ConversationTextEvent, SessionEndEvent

    def said(text: str) -> ConversationTextEvent:
        return ConversationTextEvent(session_id="s", conversation_id="c1", at=0, role="user",
                                     content=text)

    feed = LiveEvents()
    call: Any = _View("c1")
    feed.call_started(call)
    feed.call_event(call, said("on a"))
    feed.call_event(call, SessionEndEvent(session_id="s", conversation_id="c1", at=1,
                                          reason="migrated"))
    feed.call_finished(call)
    assert feed.moved("c1") and not feed.covers("c1", "")  # the rest is elsewhere
    feed.continue_after("c1", 7)  # B's part ended at seq 7
    feed.call_started(call)
    feed.call_event(call, said("back on a"))
    assert not feed.moved("c1") and feed.covers("c1", "7") and not feed.covers("c1", "0")
    assert [e.seq for e in feed._channels["c1"].after(0)] == [8]
    other = LiveEvents()
    other.call_started(call)
    other.call_event(call, said("first"))
    other.continue_after("c1", None)  # taken back with the store down: place unknown
    assert not other.covers("c1", "") and other.covers("c1", "1")


async def test_acdg_phone_serves_the_page_set_to_call_a_given_bot() -> None:
    from acdg_asgi.cli.phone import PhoneServer

    app = PhoneServer("wss://bot.example.com/audiocodes")
    async with serve(app) as host, httpx.AsyncClient() as client:
        root = await client.get(f"http://{host}/")
        page = await client.get(f"http://{host}/phone")
        script = await client.get(f"http://{host}/phone/phone.js")
    assert root.status_code == 307
    assert root.headers["location"] == "phone?url=wss%3A%2F%2Fbot.example.com%2Faudiocodes"
    assert page.status_code == 200 and '<meta name="acdg-events" content="">' in page.text
    assert script.headers["content-type"].startswith("text/javascript")
    with pytest.raises(ConfigError, match="ws:// or wss://"):
        PhoneServer("http://bot.example.com/")
