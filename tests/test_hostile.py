"""Hostile and broken peers, each beside 20 healthy calls that must not notice.

One bridge (the direct protocol and the guarded HTTP protocol, as ``acdg serve`` runs it)
and 20 healthy calls stream numbered audio through the stand-in agent's echo for the whole
module; each test runs one attack while they do. Around every attack the healthy calls
are measured (``Hostile.attack``): a baseline window first, then the attack and a settling
second. What the healthy calls hear during the attack is held to

* no lost frame, no frame twice or out of order, no echo of another call's audio;
* a worst gap between echoes of one spurt at most 100 ms more than in their own baseline
  (their normal cadence on this machine, which is 20 ms plus whatever the machine adds);
* no lasting added latency: at the end, once the echo has paused (:class:`_hostile.Healthy`
  says why it pauses), within 30 ms of the baseline's.

These are the only timed bounds in the suite, and they are relative to what the same
calls measured seconds before. ``pytest -m hostile`` runs this module alone.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest
from _hostile import (
    FRAME_BYTES,
    HEAD_TIMEOUT_S,
    LIMITS,
    PLAYOUT,
    Attacker,
    Healthy,
    HoleProxy,
    HostileRig,
    hostile_rig,
    initiate,
    measure,
)
from vaic_raw import wait_until

from acdg_asgi.call import CallState
from acdg_asgi.testing.agent import AgentScript

pytestmark = [pytest.mark.anyio, pytest.mark.hostile]

HEALTHY = 20
BASELINE_S = 1.5
AFTER_S = 1.0
EXCESS_GAP_S = 0.1  # beyond the baseline's own worst gap
LASTING_S = 0.03  # latency at the end, beyond the baseline's


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Hostile:
    rig: HostileRig
    calls: list[Healthy]

    @property
    def host(self) -> str:
        return self.rig.host

    @asynccontextmanager
    async def attack(self) -> AsyncIterator[None]:
        """Measure the healthy calls before, during and after the block."""
        begin = anyio.current_time()
        await anyio.sleep(BASELINE_S)
        start = anyio.current_time()
        baseline = measure(self.calls, begin, start)
        problems = len(self.rig.logs.problems())
        late = {call.cid: self.late(call.cid) for call in self.calls}
        yield
        await anyio.sleep(AFTER_S)
        end = anyio.current_time()
        during = measure(self.calls, start, end, latency_from=end - AFTER_S / 2)
        assert during.errors == [] and baseline.errors == []
        assert during.lost == [], during.lost
        assert during.foreign == 0  # no cross-talk
        assert during.excess_gap_s() <= EXCESS_GAP_S + baseline.excess_gap_s(), (
            f"worst gap {during.worst_gap_s * 1000:.0f} ms, baseline "
            f"{baseline.worst_gap_s * 1000:.0f} ms")
        assert during.latency_s <= baseline.latency_s + LASTING_S, (during, baseline)
        for call in self.calls:  # nothing of theirs was skipped as late meanwhile
            runtime = self.rig.bridge.calls.get(call.cid)
            assert runtime is not None and runtime.call.state is CallState.ACTIVE, call.cid
            assert self.late(call.cid) == late[call.cid], call.cid
        assert self.rig.logs.problems()[problems:] == []

    def late(self, cid: str) -> int:
        """Agent audio of call ``cid`` skipped as late so far (after a stall)."""
        runtime = self.rig.bridge.calls.get(cid)
        return runtime.call.stats.play_bytes_late if runtime is not None else 0

    def warnings(self, cid: str) -> list[logging.LogRecord]:
        """WARNING-or-worse log records about call ``cid``."""
        return [r for r in self.rig.logs.records if getattr(r, "conversation_id", None) == cid]


@pytest.fixture(scope="module")
async def hostile() -> AsyncIterator[Hostile]:
    async with hostile_rig() as rig:
        stop = anyio.Event()
        calls = [Healthy(i) for i in range(HEALTHY)]
        async with anyio.create_task_group() as tg:
            for call in calls:
                tg.start_soon(call.run, rig.host, stop, rig.agent_ready)
            with anyio.fail_after(30):
                for call in calls:
                    await call.ready.wait()
            assert [c.error for c in calls if c.error] == []
            await anyio.sleep(1.0)  # every call streaming and echoed
            # The suite's heap, not the bridge's, would make the collector's full passes
            # long enough to show as gaps: what exists now is kept out of them.
            gc.collect()
            gc.freeze()
            try:
                yield Hostile(rig, calls)
            finally:
                gc.unfreeze()
            stop.set()
        ends = {e.conversation_id: e.reason for e in rig.log.of("session_end")}
        assert all(ends.get(c.cid) == "caller" for c in calls)


# --- malformed JSON, before and during a call ---------------------------------------------

DEEP = "[" * 5000 + "]" * 5000  # 10 KB: msgspec gives up on it with RecursionError


async def test_deeply_nested_json_before_a_call_is_ignored_and_the_socket_kept(
        hostile: Hostile) -> None:
    frames = b"".join(Attacker.text(f) for f in [
        DEEP,
        '{"type":"connection.validate","x":' + DEEP + "}",
        '{"type":"session.initiate","conversationId":"n1","junk":' + DEEP + "}",
    ] * 10)
    async with hostile.attack(), Attacker.connect(hostile.host) as attacker:
        attacker.send(frames)
        attacker.send(attacker.text({"type": "connection.validate"}))
        assert await attacker.expect("connection.validated")  # the socket is still read
        attacker.send(attacker.text(initiate("nested-before")))
        assert await attacker.expect("session.accepted")
        attacker.send(attacker.text({"type": "session.end", "conversationId": "nested-before"}))
        assert await attacker.until_closed() == 1000
    lines = [r.getMessage() for r in hostile.rig.logs.records
             if "before session.initiate" in r.getMessage()]
    assert 1 <= len(lines) <= 3  # the first, then one line for the other 29
    assert any("29 more" in line for line in lines)


async def test_deeply_nested_json_during_a_call_is_a_warning_and_the_call_goes_on(
        hostile: Hostile) -> None:
    cid = "nested-during"
    frames = b"".join(Attacker.text(f) for f in [
        f'{{"type":"activities","conversationId":"{cid}","activities":[{{"type":"event",'
        f'"name":"x","value":{DEEP}}}]}}',
        f'{{"type":"userStream.chunk","conversationId":"{cid}","audioChunk":"AAAA","x":{DEEP}}}',
    ] * 15)
    async with hostile.attack(), Attacker.connect(hostile.host) as attacker:
        attacker.send(attacker.text(initiate(cid)))
        await attacker.expect("session.accepted")
        attacker.send(frames)
        attacker.send(attacker.text({"type": "userStream.start", "conversationId": cid}))
        assert await attacker.expect("userStream.started")
        attacker.send(attacker.text({"type": "session.end", "conversationId": cid}))
        assert await attacker.until_closed() == 1000
    warnings = hostile.rig.log.of("warning", cid)
    assert sum(w.count for w in warnings) == 30  # every frame counted...
    assert len(warnings) <= 4  # ...in a few events: three, then one with the rest
    assert all("nested too deeply" in w.description for w in warnings)


# --- floods ------------------------------------------------------------------------------

BURSTS = {
    "invalid-json": lambda cid: "{not json",
    "dtmf": lambda cid: json.dumps({"type": "activities", "conversationId": cid, "activities": [
        {"type": "event", "name": "DTMF", "value": "5"}]}),
    "user-stream-start": lambda cid: json.dumps({"type": "userStream.start",
                                                 "conversationId": cid}),
    "unknown-type": lambda cid: json.dumps({"type": "playStream.mark", "conversationId": cid}),
}


@pytest.mark.parametrize("kind", sorted(BURSTS))
async def test_a_burst_of_10k_messages_is_read_at_the_budget_then_closed(
        hostile: Hostile, kind: str) -> None:
    cid = f"burst-{kind}"
    burst = Attacker.text(BURSTS[kind](cid)) * 10_000
    async with hostile.attack(), Attacker.connect(hostile.host) as attacker:
        attacker.send(attacker.text(initiate(cid)))
        await attacker.expect("session.accepted")
        records = len(hostile.rig.logs.records)
        attacker.send(burst)  # all at once
        assert await attacker.until_closed() == 1008  # over its budget for close_after_s
    runtime = hostile.rig.bridge.calls[cid]
    assert runtime.call.state is CallState.DETACHED  # VAIC may resume on a new socket
    budget = LIMITS.vaic_budget
    read = runtime.call.stats.warnings  # every frame it read is a warning, or none is
    codes = {w.code for w in hostile.rig.log.of("warning", cid)}
    assert "PROTOCOL_ERROR" in codes
    over = [w for w in hostile.rig.log.of("warning", cid) if "budget" in w.description]
    assert len(over) == 2  # warned once, then closed
    # The log stayed readable: a few lines for the whole burst.
    assert len(hostile.rig.logs.records) - records <= 12
    closed = [r for r in hostile.rig.logs.records if r.name == "acdg_asgi.security"]
    assert any(cid in r.getMessage() and "closed" in r.getMessage() for r in closed)
    assert read < budget.messages_per_s * (budget.close_after_s + 2)


async def test_a_flood_before_session_initiate_is_read_at_the_budget_then_closed(
        hostile: Hostile) -> None:
    refusals = len(hostile.rig.seen.refusals)
    async with hostile.attack(), Attacker.connect(hostile.host) as attacker:
        records = len(hostile.rig.logs.records)
        attacker.send(attacker.text("{not json") * 10_000)
        assert await attacker.until_closed() == 1008
    assert hostile.rig.seen.refusals[refusals:] == ["flood"]
    assert len(hostile.rig.logs.records) - records <= 6  # the first, a summary, the close


# --- huge fields ----------------------------------------------------------------------------


async def test_huge_fields_are_refused_or_bounded_and_never_echoed_whole(
        hostile: Hostile) -> None:
    async with hostile.attack():
        for cid, why in (("c" * 100_000, "100000 characters"),
                         ("c1\n2026-01-01 00:00:00 INFO forged line", "characters other")):
            async with Attacker.connect(hostile.host) as attacker:
                attacker.send(attacker.text(initiate(cid)))
                refused = await attacker.expect("session.error")
                assert why in refused["reason"] and "conversationId" not in refused
                assert len(json.dumps(refused)) < 300
        async with Attacker.connect(hostile.host) as attacker:
            formats = [f"f{i}" for i in range(25_000)]  # 200 KB: within one frame
            attacker.send(attacker.text(initiate("many-formats", supportedMediaFormats=formats)))
            refused = await attacker.expect("session.error")
            assert "25000 in all" in refused["reason"] and len(refused["reason"]) < 1000
        async with Attacker.connect(hostile.host) as attacker:
            attacker.send(attacker.text(initiate("big-frame") | {"x": "y" * (1 << 20)}))
            attacker.send(attacker.text(initiate("big-frame")))
            accepted = await attacker.expect("session.accepted")  # the second one
            cid = "big-frame"
            events = [{"type": "event", "name": "DTMF", "value": "1"}] * 5000
            attacker.send(attacker.text({"type": "activities", "conversationId": cid,
                                         "activities": events}))
            attacker.send(attacker.text({"type": "userStream.start", "conversationId": cid}))
            await attacker.expect("userStream.started")
            attacker.send(attacker.text({"type": "session.end", "conversationId": cid}))
            await attacker.until_closed()
        assert accepted == {"type": "session.accepted", "mediaFormat": "raw/lpcm16"}
    (warning,) = hostile.rig.log.of("warning", "big-frame")
    assert "5000 activities" in warning.description
    assert hostile.rig.log.of("dtmf", "big-frame") == []
    for record in hostile.rig.logs.records:
        message = record.getMessage()
        assert "\n" not in message and len(message) < 2000, message[:200]
    assert any("oversized" in r.getMessage() or "bytes (at most" in r.getMessage()
               for r in hostile.rig.logs.records)


# --- who may resume a call --------------------------------------------------------------


async def test_a_resume_of_a_call_whose_socket_is_alive_is_refused(hostile: Hostile) -> None:
    victim = hostile.calls[3].cid
    async with hostile.attack(), Attacker.connect(hostile.host) as attacker:
        attacker.send(attacker.text({"type": "session.resume", "conversationId": victim}))
        refused = await attacker.expect("session.error", within=LIMITS.resume_probe_s + 2)
        assert refused["reason"] == "conversation is live on another socket"
        await attacker.until_closed()
    assert "resume_live" in hostile.rig.seen.refusals
    security = [r for r in hostile.rig.logs.records if r.name == "acdg_asgi.security"]
    assert any(victim in r.getMessage() and "refused" in r.getMessage() for r in security)
    assert hostile.rig.log.of("session_resumed", victim) == []


async def test_a_resume_after_the_owner_socket_died_silently_is_accepted(
        hostile: Hostile) -> None:
    async with hostile.attack(), HoleProxy(f"ws://{hostile.host}/") as path:
        owner = Healthy(HEALTHY + 1)  # its socket goes through a path that will die
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(owner.run, path.url.removeprefix("ws://").rstrip("/"), stop,
                          hostile.rig.agent_ready)
            await owner.ready.wait()
            await wait_until(lambda: len(owner.heard) > 10, what="the owner's echo")
            path.black_hole(path.links[0])  # no data either way, no FIN, no RST
            asked = anyio.current_time()
            async with Attacker.connect(hostile.host) as resumer:  # VAIC, on a new socket
                resumer.send(resumer.text({"type": "session.resume",
                                           "conversationId": owner.cid}))
                await resumer.expect("session.accepted", within=LIMITS.resume_probe_s + 2)
                waited = anyio.current_time() - asked
                resumer.send(resumer.text({"type": "session.end", "conversationId": owner.cid}))
                await resumer.until_closed()
            stop.set()
            tg.cancel_scope.cancel()
    # Answered once the old socket had stayed silent through the probe, not before.
    assert LIMITS.resume_probe_s - 0.1 <= waited <= LIMITS.resume_probe_s + 1.5
    assert len(hostile.rig.log.of("session_resumed", owner.cid)) == 1


# --- the agent side -------------------------------------------------------------------------


async def victim_link(hostile: Hostile, before: int) -> int:
    """The index of the agent connection opened since ``before`` links (the victim's)."""
    proxy = hostile.rig.proxy
    await wait_until(lambda: len(proxy.links) > before, what="the victim's agent connection")
    return len(proxy.links) - 1


async def test_a_black_holed_agent_is_noticed_and_reconnected(hostile: Hostile) -> None:
    proxy = hostile.rig.proxy
    victim = Healthy(HEALTHY + 2)
    stop = anyio.Event()
    async with hostile.attack(), anyio.create_task_group() as tg:
        before = len(proxy.links)
        tg.start_soon(victim.run, hostile.host, stop, hostile.rig.agent_ready)
        index = await victim_link(hostile, before)
        await wait_until(lambda: len(victim.heard) > 10, what="the victim's echo")
        proxy.black_hole(proxy.links[index])
        holed = anyio.current_time()
        reconnected = await hostile.rig.log.wait_for(
            "agent_reconnected", lambda e: e.conversation_id == victim.cid, within=10)
        noticed = reconnected.at - holed
        heard = len(victim.heard)
        await wait_until(lambda: len(victim.heard) > heard + 10, what="the echo again")
        stop.set()
    limit = LIMITS.agent_ping_s + LIMITS.agent_pong_timeout_s
    assert noticed <= limit + 1.0
    (lost,) = [w for w in hostile.rig.log.of("warning", victim.cid)
               if w.code == "AGENT_CONNECTION_LOST"]
    assert "did not answer a ping" in lost.description


@pytest.mark.parametrize("fault", ["reset", "stall"])
async def test_an_agent_that_fails_the_handshake_ends_the_call_within_the_dead_air_budget(
        hostile: Hostile, fault: str) -> None:
    proxy = hostile.rig.proxy
    cid = f"handshake-{fault}"
    async with hostile.attack(), Attacker.connect(hostile.host) as attacker:
        if fault == "reset":
            proxy.reset_upgrades = True  # the agent accepts TCP, resets before the 101
        else:
            proxy.stall_upgrades = True  # the agent never answers the upgrade
        try:
            attacker.send(attacker.text(initiate(cid)))
            await attacker.expect("session.accepted")
            started = anyio.current_time()
            hangup = await attacker.expect("activities", within=LIMITS.dead_air_s + 3)
            silent = anyio.current_time() - started
        finally:
            proxy.reset_upgrades = proxy.stall_upgrades = False
        (activity,) = hangup["activities"]
        assert activity["name"] == "hangup"
        assert activity["activityParams"]["hangupReason"] == "agent unavailable"
        attacker.send(attacker.text({"type": "session.end", "conversationId": cid}))
        await attacker.until_closed()
    assert silent <= LIMITS.dead_air_s + 1.0
    (error,) = hostile.rig.log.of("error", cid)
    assert error.code == "AGENT_UNAVAILABLE" and error.fatal
    if fault == "reset":
        assert proxy.resets >= 2  # attempts failed at once, not at the handshake timeout


# --- a VAIC that stops reading ---------------------------------------------------------------


PLAYOUT_SLACK = 64 * 1024  # audio already sent that the playout may hold until it compacts


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_vaic_that_stops_reading_costs_bounded_memory(hostile: Hostile) -> None:
    """RSS is this process's, the stand-in agent's and the proxy's memory included: a
    first round of slow calls, kept open, warms the heap with what producing and relaying
    their audio costs; the second round's growth is then what each slow call keeps."""
    slow = 4
    agent = hostile.rig.agent
    echo = agent.script

    async def stop_reading(stack: contextlib.AsyncExitStack, names: list[str]) -> None:
        agent.script = AgentScript(ms_per_word=500, idle_timeout=600)  # 30 s of audio in 3 s
        try:
            connections = len(agent.connections)
            for name in names:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                attacker = await stack.enter_async_context(
                    Attacker.connect(hostile.host, sock=sock))
                attacker.send(attacker.text(initiate(name)))
                await attacker.expect("session.accepted")  # and not another read from now on
            await wait_until(lambda: len(agent.connections) >= connections + len(names),
                             what="the slow calls' agent connections")
        finally:
            agent.script = echo
        await wait_until(lambda: all("AgentAudioDone" in c.sent_types
                                     for c in agent.connections[connections:]),
                         within=15, what="the greeting produced")

    names = [f"slow-{i}" for i in range(slow)]
    async with hostile.attack(), contextlib.AsyncExitStack() as stack:
        await stop_reading(stack, [f"slow-warm-{i}" for i in range(slow)])
        before = rss()  # (no gc.collect(): it would stall the healthy calls in this process)
        await stop_reading(stack, names)
        grown = (rss() - before) / slow
        for name in names:
            call = hostile.rig.bridge.calls[name]
            assert call.vaic.queued_bytes <= LIMITS.outbound_queue_bytes
            playout = call.call.playout
            assert playout.pending <= playout.max_buffer
            assert playout.held <= (playout.max_buffer + PLAYOUT_SLACK) * 1.2  # growth room
            assert call.call.stats.play_bytes_dropped > 0  # it had to drop
            warnings = hostile.rig.log.of("warning", name)
            assert len(warnings) <= 8, [w.description for w in warnings]
    bound = (PLAYOUT.max_buffer_ms * FRAME_BYTES // 20 + PLAYOUT_SLACK  # the playout, 16 kHz
             + LIMITS.outbound_queue_bytes + 64 * 1024)  # the queue and the transport's
    # the rest of a call: the bridge's own, and in this process the stand-in agent's
    # session and the proxy's link too
    assert grown <= bound + 768 * 1024, f"{grown / 1024:.0f} KiB per slow call"


# --- the upgrade itself -----------------------------------------------------------------------


async def test_dripping_oversized_and_broken_upgrades_are_answered_and_closed(
        hostile: Hostile) -> None:
    request = b"GET / HTTP/1.1\r\nHost: bridge\r\nUpgrade: websocket\r\n"
    async with hostile.attack(), contextlib.AsyncExitStack() as stack:
        drips = [await stack.enter_async_context(Attacker.connect(hostile.host, upgrade=False))
                 for _ in range(50)]
        opened = anyio.current_time()

        held = 0.0

        async def drip(attacker: Attacker) -> None:
            nonlocal held
            for byte in request:  # a byte every 200 ms, until the bridge hangs up
                if attacker.reader.at_eof():
                    break
                attacker.send(bytes((byte,)))
                await anyio.sleep(0.2)
            assert await attacker.until_closed(within=5) is None  # closed, not answered
            held = max(held, anyio.current_time() - opened)

        async with anyio.create_task_group() as tg:
            for attacker in drips:
                tg.start_soon(drip, attacker)
        big = await stack.enter_async_context(Attacker.connect(hostile.host, upgrade=False))
        big.send(request + b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        with anyio.fail_after(5):
            answer = await big.reader.read(100)
        bad = await stack.enter_async_context(Attacker.connect(hostile.host))
        bad.send(bad.text(initiate("not-utf8")))
        await bad.expect("session.accepted")
        records = len(hostile.rig.logs.records)
        bad.send(bad.text(b"\xff\xfe not UTF-8"))
        assert await bad.until_closed() == 1007
    assert held < HEAD_TIMEOUT_S + 4  # not for as long as they like
    assert answer.startswith(b"HTTP/1.1 431")
    lines = [r for r in hostile.rig.logs.records[records:] if "UTF-8" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.WARNING] and not lines[0].exc_info
