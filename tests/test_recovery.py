"""What the caller hears when the bridge itself stalls or the agent stays away, over real
sockets: no delay that lasts, and silence bounded by the dead-air budget."""

from __future__ import annotations

import json
import time

import anyio
import pytest
from _hostile import FRAME_BYTES, Attacker, Healthy, HoleProxy, initiate, measure
from vaic_raw import EventLog, wait_until

from acdg_asgi import BridgeApp, Budget, Limits, Reconnect
from acdg_asgi.testing.agent import AgentScript, StandInAgent
from acdg_asgi.testing.server import serve
from acdg_asgi.transports.agent_websockets import WebsocketsConnector
from acdg_asgi.transports.vaic_direct import DirectWebSocketProtocol

pytestmark = pytest.mark.anyio

ECHO = AgentScript(echo=True, idle_timeout=60)
LEAD_S = 0.1  # Playout's default lead


async def test_a_stall_of_the_bridge_leaves_no_lasting_delay() -> None:
    """The event loop blocks for a second (as a flood once made it): what the caller should
    have heard meanwhile comes late, and is skipped (counted) instead of delaying the rest
    of the call by that second."""
    async with StandInAgent(script=ECHO) as agent:
        bridge = BridgeApp(deepgram_url=agent.url, tracing=False)
        log = EventLog(bridge)
        async with serve(bridge, ws=DirectWebSocketProtocol) as host:
            call, stop = Healthy(0), anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(call.run, host, stop, lambda cid: cid in bridge.calls
                              and bridge.calls[cid].call.link.ready)
                await call.ready.wait()
                await anyio.sleep(1.5)
                baseline = measure([call], anyio.current_time() - 1.0, anyio.current_time())
                time.sleep(1.0)  # noqa: ASYNC251 - the point: everything stops for a second
                await anyio.sleep(1.5)
                end = anyio.current_time()
                after = measure([call], end - 0.5, end, latency_from=end - 0.5)
                late = bridge.calls[call.cid].call.stats.play_bytes_late
                stop.set()
    assert baseline.errors == [] and after.errors == []
    # What stays is at most the lead, as after any burst (without the skip: the second).
    assert after.latency_s <= baseline.latency_s + LEAD_S + 0.02, (baseline, after)
    assert late >= FRAME_BYTES * 30  # most of the second (less the lead) was skipped
    heard = {n for n, _ in call.heard}
    assert len(set(range(max(heard))) - heard) * FRAME_BYTES == late  # and only that
    (warning,) = log.of("warning", call.cid)
    assert warning.code == "BRIDGE_STALLED"


async def test_the_hold_prompt_plays_once_the_dead_air_budget_is_spent() -> None:
    url = "https://prompts.example.com/hold.wav"
    limits = Limits(dead_air_s=1.0, hold_prompt_url=url, agent_ping_s=0)
    reconnect = Reconnect(attempts=50, initial_backoff_s=0.1, max_backoff_s=0.2)
    async with StandInAgent(script=ECHO) as agent, HoleProxy(agent.url) as proxy:
        bridge = BridgeApp(deepgram_url=proxy.url, tracing=False, limits=limits,
                           reconnect=reconnect)
        log = EventLog(bridge)
        async with serve(bridge, ws=DirectWebSocketProtocol) as host, \
                Attacker.connect(host) as caller:
            caller.send(caller.text(initiate("held")))
            await caller.expect("session.accepted")
            await wait_until(lambda: agent.connections, what="the agent connection")
            proxy.reset_upgrades = True  # the agent is gone: every new attempt fails
            proxy.cut_all()
            lost = anyio.current_time()
            hold = await caller.expect("activities", within=5)
            silent = anyio.current_time() - lost
            assert hold["activities"][0] == {"type": "event", "name": "playUrl",
                                             "activityParams": {"playUrlUrl": url}}
            proxy.reset_upgrades = False  # back
            stop = await caller.expect("activities", within=5)
            assert stop["activities"][0] == {"type": "event", "name": "abortPrompts"}
            caller.send(caller.text({"type": "session.end", "conversationId": "held"}))
            await caller.until_closed()
    assert 1.0 <= silent <= 2.5
    assert [w.code for w in log.of("warning") if w.code == "AGENT_DEAD_AIR"] == ["AGENT_DEAD_AIR"]
    assert log.of("agent_reconnected") and log.of("error") == []
    assert log.of("session_end")[0].reason == "caller"


async def test_the_websockets_connector_is_watched_for_silence_too() -> None:
    async with StandInAgent(script=ECHO) as agent:
        conn = await WebsocketsConnector().connect(agent.url, {})
        answered = anyio.Event()
        conn.ping(answered.set)  # type: ignore[attr-defined]
        with anyio.fail_after(5):
            await answered.wait()
        assert json.loads(await conn.recv())["type"] == "Welcome"
        await conn.close()


async def test_a_flood_on_the_standard_asgi_path_is_read_at_the_budget_too() -> None:
    """Under uvicorn's own WebSocket implementation the bridge reads through ASGI: a socket
    over its budget waits before each next frame, so uvicorn reads no more of it."""
    budget = Budget(messages_per_s=100, warn_after_s=0.5, close_after_s=1.5)
    async with StandInAgent(script=ECHO) as agent:
        bridge = BridgeApp(deepgram_url=agent.url, tracing=False,
                           limits=Limits(vaic_budget=budget, resume_grace_s=0.5))
        log = EventLog(bridge)
        async with serve(bridge) as host, Attacker.connect(host) as caller:
            caller.send(caller.text(initiate("asgi-flood")))
            await caller.expect("session.accepted")
            started = anyio.current_time()
            dtmf = {"type": "activities", "conversationId": "asgi-flood",
                    "activities": [{"type": "event", "name": "DTMF", "value": "1"}]}
            caller.send(caller.text(dtmf) * 10_000)
            assert await caller.until_closed() == 1008
            took = anyio.current_time() - started
        await log.wait_for("session_end")
    read = len(log.of("dtmf"))
    assert read <= budget.messages_per_s * (took + budget.burst_s) + 10
    assert budget.close_after_s <= took <= budget.close_after_s + 2
