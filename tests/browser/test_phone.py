"""The browser phone in a real headless Chromium, through the real bridge.

The page (src/acdg_asgi/web/phone.html) is VAIC in a browser: a fake microphone fed from
a WAV file talks to the stand-in Deepgram agent through ``BridgeApp``. The tests read
the page's own account of the call from ``window.acdgPhone`` and compare it with what
the bridge saw. Every wait is on a condition with a generous timeout; no timing is
asserted exactly.

Run them alone with ``pytest -m browser tests/browser``; ``ACDG_UPDATE_DOCS=1`` also
refreshes docs/phone.png from the main test's final screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import pytest
from starlette.routing import Mount

from acdg_asgi import AgentSettings, BridgeApp, Session
from acdg_asgi.events import ConversationTextEvent, FunctionCallRequestEvent
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn

from .phone_harness import (
    ARTIFACTS,
    caller_wav,
    chromium,
    require_browser,
    serve_phone,
    wait_for,
)

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "phone.png"

GREETING = "Hello, you have reached the stand-in agent."
LONG_ANSWER = (
    "Let me read your whole order history to you, line by line, from the very first "
    "order you placed back in the spring all the way to the latest one, which shipped "
    "this week and should arrive on Friday, so please bear with me for a moment"
)
TURNS = (
    Turn(LONG_ANSWER, heard="Where is my order?", function="lookup_order",
         arguments='{"order": "A123"}'),
    Turn("Sorry, go ahead. Goodbye!", heard="Never mind, thanks."),
)
# The caller: silence while the greeting plays, a question at 3.5 s, then talking over
# the agent's long answer (about 4.5 s to 10.5 s) at 7 s. Wide margins either side.
BURSTS = ((3.5, 0.6), (7.0, 0.6))
WAV_SECONDS = 12.0


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module scope: one browser for the whole file


@pytest.fixture(scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    require_browser()
    wav = caller_wav(tmp_path_factory.mktemp("mic") / "caller.wav", BURSTS, WAV_SECONDS)
    async with chromium(wav) as b:
        yield b


@pytest.fixture
def console() -> list[str]:
    """The page's console errors; a test removes those it provoked on purpose."""
    return []


@pytest.fixture
async def page(browser: Any, console: list[str]) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 480, "height": 900})
    page = await context.new_page()
    page.on("console", lambda m: m.type == "error" and console.append(m.text))
    page.on("pageerror", lambda e: console.append(f"uncaught: {e}"))
    try:
        yield page
    finally:
        await context.close()
    assert not console, console


async def state(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate("JSON.parse(JSON.stringify(acdgPhone))")
    return result


def agent_bridge(agent: StandInAgent) -> BridgeApp:
    """The bridge as an application would set it up: greeting, a function, a goodbye."""
    bridge = BridgeApp(deepgram_url=agent.url, agent=AgentSettings(greeting=GREETING),
                       phone=True)

    @bridge.on("function_call_request")
    async def answer(session: Session, event: FunctionCallRequestEvent) -> None:
        for fn in event.functions:
            if fn.client_side:
                await session.respond_to_function_call(fn.id, fn.name, {"status": "shipped"})

    @bridge.on("conversation_text")
    async def goodbye(session: Session, event: ConversationTextEvent) -> None:
        if event.role == "assistant" and "Goodbye" in event.content:
            await session.end_session("caller is done")

    return bridge


async def test_a_whole_call_through_the_bridge(page: Any) -> None:
    script = AgentScript(turns=TURNS, ms_per_word=150, end_of_turn_ms=300)
    async with StandInAgent(script=script) as agent, serve_phone(agent_bridge(agent)) as srv:
        await page.goto(f"{srv.page_url}?caller=%2B15550123")
        await page.click("#call")
        await wait_for(page, "acdgPhone.state === 'in-call'", 10, "session.accepted")

        # The greeting plays: the page's own count of audio played grows.
        await wait_for(page, f"acdgPhone.transcript.some(l => l.text === {GREETING!r})", 10,
                       "the greeting's altText")
        await wait_for(page, "acdgPhone.playedMs > 1000", 10, "the greeting to play")
        await page.click("#keypad button:text-is('5')")

        # The caller's question, the function call on the event stream, the long answer.
        await wait_for(page, "acdgPhone.transcript.some(l => l.role === 'caller')", 15,
                       "the caller's first transcript")
        await wait_for(page, "acdgPhone.functionCalls.length > 0", 10, "function_call_request")
        # The caller talks over it: a barge-in, and the stream stops.
        await wait_for(page, "acdgPhone.bargeIns.some(b => b.stopAfterMs !== null && b.final)",
                       20, "a barge-in that stopped the stream")
        # The goodbye, and the bridge hangs up once it has played.
        await wait_for(page, "acdgPhone.state === 'ended'", 25, "the agent to hang up")
        phone = await state(page)
        await page.wait_for_timeout(300)  # the last paint
        await screenshot(page, "whole-call", docs=True)

    assert phone["verdict"] == "OK", phone["violations"]
    assert phone["mediaFormat"] == "raw/lpcm16"
    assert phone["hangupReason"] == "caller is done"
    assert [(line["role"], line["text"]) for line in phone["transcript"]] == [
        ("agent", GREETING),
        ("caller", TURNS[0].heard),
        ("agent", f"{LONG_ANSWER} ({{\"status\":\"shipped\"}})"),
        ("caller", TURNS[1].heard),
        ("agent", TURNS[1].reply),
    ]
    # The barge-in cut the long answer well short of its 6 s.
    [barge_in] = phone["bargeIns"]
    assert 0 < barge_in["playedMs"] < 5000
    assert barge_in["playedMs"] <= barge_in["receivedMs"]
    assert len(phone["latencies"]["response"]) == 2
    assert all(ms >= 0 for ms in phone["latencies"]["response"])
    assert phone["dtmfSent"] == ["5"]
    assert srv.dtmf == ["5"]
    assert [f["name"] for f in phone["functionCalls"]] == ["lookup_order"]
    assert any(e["dir"] == "sse" and e["type"] == "agent_thinking" for e in phone["events"])
    assert phone["chunksSent"] > 200  # 20 ms frames for several seconds
    assert phone["playedMs"] > 2000
    assert agent.connections[0].barge_ins == 1
    assert [e.reason for e in srv.ended] == ["ended"]


async def test_caller_hangs_up_in_mulaw_with_validate_and_no_event_stream(
    page: Any, console: list[str]
) -> None:
    script = AgentScript(turns=TURNS, ms_per_word=150, end_of_turn_ms=300)
    async with StandInAgent(script=script) as agent, serve_phone(agent_bridge(agent)) as srv:
        # An event stream that is not there must not disturb the call.
        query = "format=raw/mulaw&only=1&validate=1&events=/no-such-stream"
        await page.goto(f"{srv.page_url}?{query}")
        await page.click("#call")
        await wait_for(page, "acdgPhone.state === 'in-call'", 10, "session.accepted")
        await wait_for(page, "acdgPhone.playedMs > 500", 10, "the greeting to play")
        await page.click("#hangup")
        await wait_for(page, "acdgPhone.state === 'ended'", 10, "the call to end")
        phone = await state(page)
        await screenshot(page, "caller-hangup")
        with anyio.fail_after(10):  # the bridge sees session.end a moment later
            await srv.any_ended.wait()
        with_reason = [e.reason for e in srv.ended]

    assert phone["verdict"] == "OK", phone["violations"]
    assert phone["mediaFormat"] == "raw/mulaw"
    assert phone["endReason"] == "you hung up"
    assert any(e["type"] == "connection.validated" for e in phone["events"])
    assert any(e["text"] == "event stream unavailable" for e in phone["events"])
    assert with_reason == ["caller"]
    console[:] = [line for line in console if "404" not in line]  # the missing event stream


async def test_token_rides_as_a_subprotocol(page: Any, console: list[str]) -> None:
    """The token goes as the subprotocols ``acdg.bearer, <token>``, and to the event stream
    as a header; a wrong one gets neither the call nor the events."""
    async with StandInAgent(script=AgentScript(turns=TURNS, ms_per_word=150)) as agent:
        bridge = BridgeApp(deepgram_url=agent.url, auth="s3cret",
                           agent=AgentSettings(greeting=GREETING), phone=True)
        async with serve_phone(bridge) as srv:
            await page.goto(f"{srv.page_url}?token=wrong")
            await page.click("#call")
            await wait_for(page, "acdgPhone.state === 'ended'", 10, "the refused upgrade")
            refused = await state(page)

            await page.goto(f"{srv.page_url}?token=s3cret")
            await page.click("#call")
            await wait_for(page, "acdgPhone.playedMs > 300", 10, "the greeting to play")
            await wait_for(page, "acdgPhone.events.some(e => e.type === 'session_start')", 10,
                           "session_start on the event stream")
            await page.click("#hangup")
            await wait_for(page, "acdgPhone.state === 'ended'", 10, "the call to end")
            phone = await state(page)

    assert refused["endReason"].startswith("could not connect (is the token right")
    assert not any(e["dir"] == "sse" for e in refused["events"])  # 401 for the events too
    assert phone["verdict"] == "OK", phone["violations"]
    # the refused socket, and the events stream that answered 401
    console[:] = [line for line in console if "WebSocket" not in line and "401" not in line]


async def test_barge_in_when_the_marker_comes_before_the_stop(page: Any) -> None:
    """The bridge stops its stream before userStream.speech.started; this bot after it."""
    from brokenbot import app as broken_bot  # tests/brokenbot.py: one flaw per path

    unused = BridgeApp(deepgram_url="ws://127.0.0.1:9/v1/agent/converse", phone=True)
    async with serve_phone(unused, extra=[Mount("/broken", broken_bot)]) as srv:
        bot = quote(f"ws://{srv.host}/broken/good?answer_ms=4000&hangup_after=2", safe="")
        await page.goto(f"{srv.page_url}?url={bot}")
        await page.click("#call")
        await wait_for(page, "acdgPhone.state === 'ended'", 30, "the bot to hang up")
        phone = await state(page)

    assert phone["verdict"] == "OK", phone["violations"]
    [barge_in] = phone["bargeIns"]
    assert barge_in["stopAfterMs"] >= 0
    assert 0 < barge_in["playedMs"] < 3500  # of a 4 s answer
    assert phone["latencies"]["bargeInStop"] == [barge_in["stopAfterMs"]]
    assert [line["role"] for line in phone["transcript"]] == [
        "agent", "caller", "agent", "caller", "agent"
    ]


# --- the verdict against a bot that breaks one rule ----------------------------------------

BROKEN = [
    ("good", None),
    ("chunk-outside-stream", "chunk-outside-stream"),
    ("overlapping-streams", "overlapping-streams"),
    ("stop-outside-stream", "stop-outside-stream"),
    ("stream-id-mismatch", "stream-id-mismatch"),
    ("unclosed-stream", "unclosed-stream"),
    ("duplicate-stream-id", "duplicate-stream-id"),
    ("before-accept", "before-accept"),
    ("accept-unoffered", "format-not-offered"),
    ("flat-recognition", "flat-recognition"),
    ("session-end", "unknown-message-type"),
    ("binary", "binary-frame"),
    ("close-socket", "closed-without-hangup"),
    ("initiate-unanswered", "session-unanswered"),
]


@pytest.mark.parametrize(("mode", "code"), BROKEN, ids=[m for m, _ in BROKEN])
async def test_verdict_names_the_rule_a_bot_broke(page: Any, mode: str, code: str | None) -> None:
    from brokenbot import app as broken_bot  # tests/brokenbot.py: one flaw per path

    unused = BridgeApp(deepgram_url="ws://127.0.0.1:9/v1/agent/converse", phone=True)
    async with serve_phone(unused, extra=[Mount("/broken", broken_bot)]) as srv:
        await page.goto(f"{srv.page_url}?url=ws://{srv.host}/broken/{mode}")
        await page.evaluate("acdgPhone.call()")
        await wait_for(page, "acdgPhone.state === 'ended'", 15, f"the {mode} call to end")
        phone = await state(page)

    codes = {v["code"] for v in phone["violations"]}
    if code is None:
        assert phone["verdict"] == "OK", phone["violations"]
        assert phone["hangupReason"] == "done"
        assert phone["transcript"][-1] == {"role": "agent", "text": "answer 1"}
    else:
        assert code in codes, phone["violations"]
        assert phone["verdict"].startswith(("1 rule broken:", f"{len(codes)} rules broken:"))
        assert code in phone["verdict"]


async def screenshot(page: Any, name: str, *, docs: bool = False) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    if docs and os.environ.get("ACDG_UPDATE_DOCS"):
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOT)
    return path



async def test_acdg_demo_browser_lets_a_person_place_a_call(page: Any) -> None:
    """``acdg demo --browser`` as a person runs it: open the printed URL, press Call."""
    env = {k: v for k, v in os.environ.items() if k != "DEEPGRAM_API_KEY"}
    command = [sys.executable, "-m", "acdg_asgi.cli", "demo", "--browser", "--port", "0"]
    async with await anyio.open_process(command, env=env) as demo:
        try:
            assert demo.stdout is not None
            printed = b""
            with anyio.fail_after(20):
                while b"/phone" not in printed:
                    printed += await demo.stdout.receive()
            url = re.search(rb"http://\S+/phone", printed)
            assert url is not None, printed
            await page.goto(url.group().decode())
            await page.click("#call")
            await wait_for(page, "acdgPhone.state === 'in-call'", 10, "session.accepted")
            await wait_for(page, "acdgPhone.transcript.some(l => l.role === 'caller')", 15,
                           "the caller's question")
            await wait_for(page, "acdgPhone.functionCalls.length > 0", 10, "lookup_order")
            await page.click("#hangup")
            await wait_for(page, "acdgPhone.state === 'ended'", 10, "the call to end")
            phone = await state(page)
            await screenshot(page, "acdg-demo-browser")
        finally:
            demo.terminate()
        with anyio.fail_after(15):
            await demo.wait()
        assert demo.stdout is not None
        with anyio.move_on_after(2):
            async for chunk in demo.stdout:
                printed += chunk

    assert phone["verdict"] == "OK", phone["violations"]
    assert phone["transcript"][0]["text"] == "Hello! You've reached Acme. How can I help?"
    assert [f["name"] for f in phone["functionCalls"]] == ["lookup_order"]
    assert b"function lookup_order" in printed  # the demo's own trace of the call
    assert demo.returncode == 0
