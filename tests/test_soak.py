"""Soak and load over real loopback sockets: nothing leaks, no caller frame is lost.

* Soak: 150 short calls, ten at a time, through one bridge (the VAIC simulator, the
  stand-in agent, real uvicorn). After a warm-up and at the end the process is sampled:
  asyncio tasks, open file descriptors, ``bridge.calls`` and RSS. Tasks and descriptors
  must come back to the warm-up level, RSS may grow only a little. No timing assertions.
* Load: 300 calls at once (arriving over 1.5 s, each 2 s of audio), the stand-in in echo
  mode. Every caller frame carries its
  number; the stand-in must receive every frame of every call (counted per connection)
  and VAIC must hear every frame echoed back, in order, once, but for the audio the
  bridge skipped (and counted) as already late after its own loop stalled under the
  load: a phone line would not play it either.

Everything (bridge, agent, callers) shares this process's one event loop, so the load
test is a worst case for the bridge: it gets well under one core.
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any

import anyio
import pytest
from _faults import load_call
from rig import SETTLE_S, rig
from vaic_raw import wait_until

from acdg_asgi import AgentConfig, CallInfo, Limits
from acdg_asgi.observability.observer import CallView
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.vaic import run_calls

pytestmark = pytest.mark.anyio

SOAK_CALLS = 150
SOAK_WARMUP = 20
SOAK_CONCURRENCY = 10
LOAD_CALLS = 300
LOAD_FRAMES = 100  # 2 s of caller audio per call


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def tasks() -> int:
    return len(asyncio.all_tasks())


async def sample() -> dict[str, int]:
    await anyio.sleep(0.3)  # let closing sockets finish their handshakes
    gc.collect()
    return {"tasks": tasks(), "fds": fds(), "rss": rss_bytes()}


def soak_script() -> CallScript:
    # ~1 s: say something short, hear the answer, hang up.
    return CallScript(utterances=(Utterance(speech_ms=200, pause_ms=900),), hangup_after_ms=1000,
                      max_duration_ms=15_000)


async def test_soak_many_short_calls_leak_nothing() -> None:
    script = AgentScript(turns=(Turn("ok", heard="hi"),), ms_per_word=40, end_of_turn_ms=200)
    async with rig(script) as r:
        ended: list[str] = []

        async def batch(n: int) -> list[Any]:
            reports = await run_calls(f"ws://{r.host}/", [soak_script() for _ in range(n)],
                                      concurrency=SOAK_CONCURRENCY)
            ended.extend(report.ended_by for report in reports)
            return reports

        warm = await batch(SOAK_WARMUP)
        await wait_until(lambda: not r.bridge.calls, within=SETTLE_S, what="warm-up calls gone")
        before = await sample()

        rest = await batch(SOAK_CALLS - SOAK_WARMUP)
        await wait_until(lambda: not r.bridge.calls, within=SETTLE_S, what="all calls gone")
        await wait_until(lambda: tasks() <= before["tasks"], within=SETTLE_S,
                         what="tasks back to the warm-up level")
        for record in r.agent.connections:
            await wait_until(record.closed.is_set, within=SETTLE_S, what="agent closed")
        after = await sample()

        reports = warm + rest
        assert len(reports) == SOAK_CALLS
        assert [x.connect_error for x in reports if x.connect_error] == []
        assert [x.refused_reason for x in reports if x.refused_reason] == []
        assert ended.count("caller-hangup") == SOAK_CALLS, ended
        assert all(x.play_streams for x in reports)  # every caller heard an answer
        assert [v for x in reports for v in x.violations] == []  # conformant throughout
        ends = r.log.of("session_end")
        assert len(ends) == SOAK_CALLS
        assert len({e.conversation_id for e in ends}) == SOAK_CALLS  # once per call
        assert {e.reason for e in ends} == {"caller"}
        assert len(r.agent.connections) == SOAK_CALLS
        assert r.bridge.calls == {}
        assert r.logs.problems() == []

    assert after["tasks"] <= before["tasks"], (before, after)
    assert after["fds"] <= before["fds"] + 5, (before, after)
    growth = after["rss"] - before["rss"]
    assert growth < 20 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB: {before} {after}"


class LateAudio:
    """An observer: agent audio each call skipped as late, by conversation id."""

    def __init__(self) -> None:
        self.late: dict[str, int] = {}

    def call_finished(self, call: CallView) -> None:
        self.late[call.conversation_id] = call.stats.play_bytes_late

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None  # the other observer methods: nothing to do


async def test_load_concurrent_calls_lose_no_caller_frame() -> None:
    async def tag_with_conversation(info: CallInfo) -> AgentConfig:
        return AgentConfig(tags=(info.initiate.conversation_id or "",))

    script = AgentScript(echo=True, idle_timeout=60)
    limits = Limits(max_calls=LOAD_CALLS, handshake_timeout_s=30, pre_ready_audio_ms=30_000,
                    dead_air_s=30)
    late = LateAudio()
    async with rig(script, agent=tag_with_conversation, limits=limits,
                   observers=[late]) as r:
        agent: StandInAgent = r.agent
        by_call: dict[str, Any] = {}

        def agent_bytes(cid: str) -> int:
            record = by_call.get(cid)
            if record is None:
                for rec in agent.connections:
                    if rec.settings is not None and rec.settings.tags == (cid,):
                        by_call[cid] = record = rec
                        break
                else:
                    return 0
            return int(record.audio_bytes)

        calls: list[Any] = [None] * LOAD_CALLS
        peak = 0

        async def one(i: int) -> None:
            await anyio.sleep(i * 0.005)  # a ramp, as calls arrive in life
            calls[i] = await load_call(r.host, LOAD_FRAMES, agent_bytes=agent_bytes)

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, len(r.bridge.calls))
                await anyio.sleep(0.05)

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                async with anyio.create_task_group() as callers:
                    for i in range(LOAD_CALLS):
                        callers.start_soon(one, i)
                tg.cancel_scope.cancel()
        print(f"load: {LOAD_CALLS} calls, at most {peak} at once")
        assert peak >= LOAD_CALLS // 2  # they really overlapped

        errors = [c.error for c in calls if c.error]
        assert errors == [], errors[:3]
        assert all(c.accepted and c.sent == LOAD_FRAMES for c in calls)
        # Caller -> agent: every frame of every call reached that call's agent connection.
        assert len(agent.connections) == LOAD_CALLS
        # (One agent frame per caller frame unless the bridge is told to coalesce them.)
        coalesced = getattr(r.bridge.limits, "caller_frame_ms", 0) > 0
        for c in calls:
            record = by_call[c.conversation_id]
            assert record.audio_bytes == LOAD_FRAMES * 640, c.conversation_id
            assert coalesced or record.audio_frames == LOAD_FRAMES, c.conversation_id
        await wait_until(lambda: not r.bridge.calls, within=SETTLE_S, what="all calls gone")
        # Agent -> caller: every frame came back, in order, once; what did not was skipped
        # by the bridge as late (after a stall of its own loop), and counted.
        for c in calls:
            assert c.echoed == sorted(set(c.echoed)), c.conversation_id
            missing = LOAD_FRAMES - len(c.echoed)
            assert missing * 640 == late.late[c.conversation_id], c.conversation_id
        skipped = sum(late.late.values()) // 640
        print(f"load: {skipped} of {LOAD_CALLS * LOAD_FRAMES} echoed frames skipped as late")
        assert all(c.closed_by_bridge and c.close_code == 1000 for c in calls)

        ends = r.log.of("session_end")
        assert len(ends) == LOAD_CALLS and {e.reason for e in ends} == {"caller"}
        assert {w.code for w in r.log.of("warning")} <= {"BRIDGE_STALLED"}
        assert r.log.of("error") == []
        assert r.logs.problems() == []
