"""The supervisor page in a real headless Chromium, against two instances sharing Redis.

A call is placed on instance A by the VAIC simulator; the page is served by instance B.
It lists the call, follows its transcript, and its Say and Hang up buttons reach the call
on A through B's control route. What VAIC received is the judge. Every wait is on a
condition with a generous timeout; no timing is asserted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
import redis

from acdg_asgi import AgentSettings, BridgeApp
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import CallReport, run_call

from .phone_harness import ARTIFACTS, caller_wav, chromium, phone_app, require_browser

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

TOKEN = "supervisor-secret"
SCRIPT = AgentScript(turns=(Turn("Your order ships on Friday.", heard="where is my order"),),
                     ms_per_word=60, end_of_turn_ms=200)
CALL = CallScript(conversation_id="call-on-a", caller="+15550177", callee="+15550999",
                  utterances=(Utterance(speech_ms=0, pause_ms=300), Utterance(speech_ms=300)),
                  wait_for_hangup=True, silence_timeout_ms=60_000, max_duration_ms=60_000)
SAID = "A supervisor is listening in."


@pytest.fixture
async def browser(tmp_path: Any) -> AsyncIterator[Any]:
    require_browser()
    async with chromium(caller_wav(tmp_path / "silence.wav", (), 1.0)) as b:
        yield b


async def two_instances(stack: AsyncExitStack, agent: StandInAgent, redis_url: str) -> list[str]:
    """Instances "a" and "b" sharing Redis, each the phone app with the bridge at
    /audiocodes and the live view on: their hosts."""
    hosts = []
    for name in ("a", "b"):
        bridge = BridgeApp(deepgram_url=agent.url, agent=AgentSettings(greeting="Hello"),
                           live=True, control_auth=TOKEN, store=redis_url,
                           instance_id=name, tracing=False)
        hosts.append(await stack.enter_async_context(serve(phone_app(bridge), lifespan="on")))
        await stack.enter_async_context(bridge)  # Starlette runs no mounted lifespan
    return hosts


async def wait_for(page: Any, condition: str, timeout_s: float, what: str) -> None:
    try:
        await page.wait_for_function(condition, timeout=timeout_s * 1000, polling=100)
    except Exception as exc:
        state = await page.evaluate("JSON.stringify(acdgLive)")
        raise AssertionError(f"timed out waiting for {what}; page: {state}") from exc


async def test_a_page_on_b_follows_and_controls_a_call_on_a(
    browser: Any, redis_url: str
) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    console: list[str] = []
    reports: list[CallReport] = []
    async with StandInAgent(script=SCRIPT) as agent, AsyncExitStack() as stack:
        host_a, host_b = await two_instances(stack, agent, redis_url)
        context = await browser.new_context(viewport={"width": 900, "height": 900})
        page = await context.new_page()
        page.on("console", lambda m: m.type == "error" and console.append(m.text))
        page.on("pageerror", lambda e: console.append(f"uncaught: {e}"))
        async with anyio.create_task_group() as tg:
            async def call() -> None:
                reports.append(await run_call(f"ws://{host_a}/audiocodes", CALL))

            tg.start_soon(call)
            await page.goto(f"http://{host_b}/audiocodes/live")
            await wait_for(page, "acdgLive.state === 'error'", 10, "the 401 without a token")
            await page.fill("#cfg-token", TOKEN)
            await page.click("#connect")
            await wait_for(page, "acdgLive.calls.some(c => c.conversation_id === 'call-on-a'"
                                 " && c.owner === 'a')", 15, "the call on A in B's list")
            listed = await page.evaluate("JSON.parse(JSON.stringify(acdgLive.calls))")
            row = await page.inner_text("tr[data-call='call-on-a']")
            await page.click("tr[data-call='call-on-a']")
            await wait_for(page, "acdgLive.transcript.some(l => l.kind === 'agent' &&"
                                 f" l.text === {SCRIPT.turns[0].reply!r})", 20,
                           "the agent's answer in the transcript")
            await page.fill("#say-text", SAID)
            await page.click("#say button")
            await wait_for(page, f"acdgLive.transcript.some(l => l.text === {SAID!r})", 20,
                           "what the supervisor had said, spoken on the call")
            await page.click("#hangup")
            await wait_for(page, "acdgLive.callState === 'ended'", 20, "the call to end")
            await wait_for(page, "!acdgLive.calls.some(c => c.conversation_id === "
                                 "'call-on-a')", 15, "the call to leave the list")
            live = await page.evaluate("JSON.parse(JSON.stringify(acdgLive))")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "supervisor.png"), full_page=True)
        await context.close()

    (report,) = reports
    assert report.ok, report.violations
    assert report.hangup_reason == "supervisor"  # the page's Hang up, on A's VAIC socket
    assert SAID in [p.alt_text for p in report.play_streams]  # the page's Say, played on A
    (entry,) = listed
    assert entry.items() >= {"caller": "+15550177", "callee": "+15550999", "owner": "a",
                             "state": "active"}.items()
    assert "+15550177" in row and "a" in row.split()
    said = [(line["kind"], line["text"]) for line in live["transcript"]
            if line["kind"] != "note"]
    assert said[:3] == [("agent", "Hello"), ("caller", "where is my order"),
                        ("agent", SCRIPT.turns[0].reply)]
    assert ("agent", SAID) in said
    assert [(a["method"], a["ok"]) for a in live["actions"]] == [
        ("send_agent_message", True), ("end_session", True)]
    assert live["transcript"][-1]["text"].startswith("call ended")
    assert live["shared"] is True
    assert any(e["call"] == "call-on-a" and e["event"] == "session_end" for e in live["events"])
    # Only the 401s of the first attempt, before the token was typed.
    assert all("401" in line for line in console), console


async def test_a_page_follows_a_call_that_moves_to_another_instance(
    browser: Any, redis_url: str
) -> None:
    """VAIC loses A mid-call and resumes the call on B (a rolling restart, a lost node):
    the page on A says the call moved and follows it on B to its real end."""
    redis.Redis.from_url(redis_url).flushdb()
    cid = "moves-to-b"
    reports: list[CallReport] = []
    async with StandInAgent(script=SCRIPT) as agent, AsyncExitStack() as stack:
        host_a, host_b = await two_instances(stack, agent, redis_url)
        script = CallScript(
            conversation_id=cid, max_duration_ms=30_000, drop_and_resume_at_ms=2500,
            resume_urls=(f"ws://{host_b}/audiocodes",),
            utterances=(Utterance(speech_ms=0, pause_ms=300),
                        *(Utterance(speech_ms=300, pause_ms=800) for _ in range(3))))
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"http://{host_a}/audiocodes/live")
        await page.fill("#cfg-token", TOKEN)
        await page.click("#connect")
        async with anyio.create_task_group() as tg:
            async def call() -> None:
                reports.append(await run_call(f"ws://{host_a}/audiocodes", script))

            tg.start_soon(call)
            await wait_for(page, f"acdgLive.calls.some(c => c.conversation_id === {cid!r})",
                           15, "the call in A's list")
            await page.click(f"tr[data-call={cid!r}]")
            await wait_for(page, "acdgLive.callState === 'ended'", 30, "the call's end")
            live = await page.evaluate("JSON.parse(JSON.stringify(acdgLive))")
        await context.close()

    (report,) = reports
    assert report.resumed and report.ok, report.timeline
    notes = [line["text"] for line in live["transcript"] if line["kind"] == "note"]
    assert "call handed over to another bridge instance" in notes
    (end,) = [n for n in notes if n.startswith("call ended")]  # not A's "migrated"
    assert end.startswith("call ended: caller") and live["transcript"][-1]["text"] == end
    texts = [line["text"] for line in live["transcript"]]
    kinds = [line["kind"] for line in live["transcript"]]
    moved = texts.index("call resumed on the bridge instance that took it over")
    assert texts[moved - 1] == "call handed over to another bridge instance"
    assert "agent" in kinds[:moved] and "agent" in kinds[moved:]  # what each agent said
