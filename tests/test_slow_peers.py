"""Peers that stop reading, over real sockets: what waits for them stays bounded, and every
frame of audio the bridge drops is counted in ``acdg_dropped_total``.

One call goes through each place where the bridge drops audio, one at a time, and the
metric is read after each:

1. the agent link's hold: caller audio while the agent's handshake hangs (the newest
   ``pre_ready_audio_ms`` is kept);
2. the playout's buffer: the agent sends its answer much faster than real time and the
   buffer is smaller than the answer (``Playout.max_buffer_ms``);
3. the VAIC outlet's queue: VAIC stops reading while the agent talks (a small kernel
   buffer each side, so writes back up);
4. the agent side while the agent stops reading: the lean client's write buffer
   (``write_audio`` refuses past 1 MiB) or, for a connector whose writes are awaited, the
   agent outlet's queue.

At the end every caller frame VAIC sent either reached the agent or was counted as
dropped, and every byte of agent audio either reached VAIC or was counted as dropped.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import anyio
import pytest
from rig import Rig, rig, sample, scrape
from vaic_raw import RawVaic, vaic, wait_until

from acdg_asgi import Budget, Limits, Playout
from acdg_asgi.testing import signals
from acdg_asgi.testing.agent import AgentScript, Turn
from acdg_asgi.transports.agent_websockets import WebsocketsConnector

pytestmark = pytest.mark.anyio

FRAME = 640  # 20 ms at 16 kHz
PRE_READY_MS = 200
LONG = " ".join(["word"] * 80)  # 8 s of agent audio, sent in 0.8 s
SHORT = " ".join(["word"] * 30)  # 3 s: fits the playout buffer, not what waits for VAIC
SCRIPT = AgentScript(turns=(Turn(LONG, heard="first"), Turn(SHORT, heard="second")),
                     ms_per_word=100, end_of_turn_ms=200)
FLOOD_OK = Budget(messages_per_s=10_000, bytes_per_s=64 * 1024 * 1024)


async def dropped(r: Rig) -> tuple[float, float]:
    """``acdg_dropped_total``: caller frames, agent audio bytes."""
    text = await scrape(r.host)
    return (sample(text, "acdg_dropped_total", what="caller_frames"),
            sample(text, "acdg_dropped_total", what="agent_audio_bytes"))


def warned(r: Rig, pattern: str, since: int) -> list[int]:
    """The numbers in the bridge's warnings matching ``pattern`` (one group), since the
    ``since``-th warning."""
    found = (re.search(pattern, w.description) for w in r.log.of("warning")[since:])
    return [int(m.group(1)) for m in found if m]


def overflowed(r: Rig, since: int) -> list[int]:
    return warned(r, r"dropped (\d+) bytes of agent audio", since)


def shed(r: Rig, peer: str, since: int) -> list[int]:
    return warned(r, rf"{peer} is slow: dropped (\d+) audio frames", since)


async def until(condition: Callable[[], Awaitable[bool]], what: str, within: float = 15) -> None:
    """Poll an async ``condition`` (a scrape, say) until it holds."""
    with anyio.move_on_after(within):
        while not await condition():  # noqa: ASYNC110 (polling over HTTP)
            await anyio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {within} s waiting for {what}")


async def answered(caller: RawVaic, count: int) -> None:
    """VAIC has heard the ``count``-th play stream to its stop."""
    await caller.wait_for("playStream.stop", count=count, within=30)


@pytest.mark.parametrize("connector", ["lean", "websockets"])
async def test_every_drop_is_counted_where_it_happens(connector: str) -> None:
    kwargs = {} if connector == "lean" else {"connector": WebsocketsConnector()}
    async with rig(SCRIPT, proxy=True, metrics=True, tracing=False, send_buffer=4096,
                   playout=Playout(lead_ms=100, max_buffer_ms=3000),
                   # Every drop in a warning of its own (none folded). Stage 4's VAIC
                   # sends far faster than real time and its agent stops reading for
                   # long, on purpose: not what the read budget and pings are about here.
                   limits=Limits(pre_ready_audio_ms=PRE_READY_MS,
                                 outbound_queue_bytes=10 * FRAME, warning_interval_s=0,
                                 vaic_budget=FLOOD_OK, agent_ping_s=0),
                   **kwargs) as r:
        proxy = r.proxy
        assert proxy is not None
        sent = 0  # caller frames VAIC sent in the call

        async with vaic(r.host, receive_buffer=4096) as caller:
            silence = signals.silence(caller.fmt, 20)

            async def send(frames: int, frame: bytes = silence) -> None:
                nonlocal sent
                for _ in range(frames):
                    await caller.chunk(frame)
                    sent += 1

            # 1. The agent's handshake hangs: caller audio is held, the newest kept.
            proxy.hold = anyio.Event()
            await caller.initiate()
            await caller.start_stream()
            await send(30)
            held = PRE_READY_MS // 20

            async def oldest_dropped() -> bool:
                return await caller_frames_counted(r, sent) and await dropped(r) == (30 - held, 0)

            await until(oldest_dropped, "the oldest caller audio dropped and counted")
            proxy.hold.set()
            record = await r.agent_ready()
            await wait_until(lambda: record.audio_frames == held, what="the held audio")

            # 2. An answer far longer than the playout buffer, sent at ten times real time.
            warnings = len(r.log.of("warning"))
            await caller.speak(voiced_ms=200, silent_ms=300, pace=0.25)
            sent += 25
            await answered(caller, 1)
            before = await dropped(r)
            assert overflowed(r, warnings) and before[1] == sum(overflowed(r, warnings))

            # 3. VAIC stops reading while the next answer plays.
            warnings = len(r.log.of("warning"))
            caller.stop_reading()
            await caller.speak(voiced_ms=200, silent_ms=300, pace=0.25)
            sent += 25
            call = r.bridge.calls[caller.conversation_id].call
            await wait_until(lambda: record.sent_types.count("AgentAudioDone") == 2,
                             what="the second answer sent")
            await wait_until(lambda: not call.playout.speaking, within=15,
                             what="the second answer paced out")
            caller.read_again()
            await answered(caller, 2)
            after = await dropped(r)
            frames_shed = shed(r, "VAIC", warnings)
            assert frames_shed and overflowed(r, warnings) == []
            assert after[1] - before[1] == FRAME * sum(frames_shed)
            assert after[0] == before[0]  # caller audio was not touched

            # 4. The agent stops reading while the caller talks on: VAIC sends caller audio
            # (in 200 ms chunks, to get there sooner) until the bridge drops some.
            warnings = len(r.log.of("warning"))
            proxy.hold_up = anyio.Event()
            big = silence * 10
            with anyio.fail_after(30):
                while (await dropped(r))[0] == before[0]:
                    await send(50, big)
            proxy.hold_up.set()
            if connector == "lean":  # the client's write buffer: no queue, nothing shed
                assert shed(r, "agent", warnings) == []
            else:  # awaited writes: the agent outlet's queue
                await wait_until(lambda: shed(r, "agent", warnings), what="agent shed")

            # What was in flight reaches the agent: every caller frame VAIC sent is counted,
            # and reached the agent or was counted as dropped.
            await until(lambda: caller_audio_balances(r, sent), "the caller audio to balance")
            await caller.end()
            await caller.wait_closed()

        # Agent audio: what the agent sent either reached VAIC or was counted as dropped.
        text = await scrape(r.host)
        from_agent = sample(text, "acdg_audio_bytes_total", direction="agent_to_bridge")
        heard = sum(len(reply.audio) for reply in caller.of_type("playStream.chunk"))
        assert from_agent == record.sent_audio_bytes
        assert from_agent == heard + sample(text, "acdg_dropped_total", what="agent_audio_bytes")
        await r.settled([caller.conversation_id], end_reasons="caller")


async def caller_frames_counted(r: Rig, sent: int) -> bool:
    text = await scrape(r.host)
    return sample(text, "acdg_frames_total", direction="caller_to_agent") == sent


async def caller_audio_balances(r: Rig, sent: int) -> bool:
    text = await scrape(r.host)
    counted = sample(text, "acdg_frames_total", direction="caller_to_agent")
    received = sum(rec.audio_frames for rec in r.agent.connections)
    return counted == sent == received + sample(text, "acdg_dropped_total", what="caller_frames")
