"""The outlets count every frame of audio they do not write, whatever the reason: a slow
peer (their queue sheds), a socket that failed under a write, a connection dropped with
audio still queued for it. Fake sockets, no network."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from fakes import AwaitedAgent, DirectVaic, PushAgent

from acdg_asgi.call import CallStats
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.runtime.outlets import AgentOutlet, VaicOutlet
from acdg_asgi.runtime.scheduler import Kick
from acdg_asgi.transports.vaic_asgi import VaicSocket

pytestmark = pytest.mark.anyio

CHUNK = ac.PlayStreamChunk(stream_id="1", audio_chunk=bytes(640))
STOP = ac.PlayStreamStop(stream_id="1")
FRAME = bytes(640)
LIMIT = 3 * 640  # queued bytes: three chunks of audio, or two and a few control messages


async def closed_send(message: object) -> None:
    raise OSError("connection reset")


async def never() -> object:
    raise NotImplementedError


def vaic_outlet(stats: CallStats, shed: list[int] | None = None) -> VaicOutlet:
    return VaicOutlet(Kick(asyncio.get_running_loop()), stats, limit=LIMIT,
                      on_shed=lambda peer, n: (shed if shed is not None else []).append(n),
                      on_stop_written=lambda: None)


def agent_outlet(stats: CallStats) -> AgentOutlet:
    return AgentOutlet(Kick(asyncio.get_running_loop()), stats, limit=LIMIT,
                       on_shed=lambda peer, n: None)


async def test_a_direct_write_that_fails_counts_what_it_did_not_write() -> None:
    stats = CallStats()
    outlet = vaic_outlet(stats)
    socket = VaicSocket(never, closed_send, client="test", max_frame_bytes=1 << 20,  # type: ignore[arg-type]
                        direct=DirectVaic(room=1))
    outlet.attach(socket)
    outlet.offer([CHUNK, CHUNK, STOP, CHUNK])  # the second write fails
    assert stats.play_bytes_dropped == 3 * 640 - 640  # the 2nd and the 4th chunk
    assert socket.broken


async def test_the_vaic_writer_counts_what_a_closed_socket_never_took() -> None:
    stats = CallStats()
    shed: list[int] = []
    outlet = vaic_outlet(stats, shed)
    closing = anyio.Event()

    async def backed_up_then_closed(message: object) -> None:
        await closing.wait()
        raise OSError("connection reset")

    socket = VaicSocket(never, backed_up_then_closed, client="test", max_frame_bytes=1 << 20)  # type: ignore[arg-type]
    outlet.attach(socket)
    outlet.offer([CHUNK, STOP])  # the chunk's send begins and waits; the stop queues behind it
    outlet.offer([CHUNK, CHUNK, CHUNK])  # one over the limit: the oldest queued chunk goes
    assert shed == [1] and stats.play_bytes_dropped == 640
    async with anyio.create_task_group() as tg:
        tg.start_soon(outlet.run)
        closing.set()  # the waiting send fails: the socket is gone
        await anyio.sleep(0.01)
        outlet.close(1000)
    assert stats.play_bytes_dropped == 4 * 640  # shed, and what the closed socket did not take
    assert outlet.detach(socket) and stats.play_bytes_dropped == 4 * 640  # not twice


async def test_a_send_that_fails_at_once_counts_what_it_did_not_write() -> None:
    stats = CallStats()
    outlet = vaic_outlet(stats)
    socket = VaicSocket(never, closed_send, client="test", max_frame_bytes=1 << 20)  # type: ignore[arg-type]
    outlet.attach(socket)
    outlet.offer([CHUNK, STOP])
    outlet.offer([CHUNK, CHUNK])
    assert socket.broken and stats.play_bytes_dropped == 3 * 640


async def test_audio_for_a_vaic_that_is_gone_is_counted() -> None:
    stats = CallStats()
    outlet = vaic_outlet(stats)
    outlet.offer([CHUNK, STOP])  # no socket
    assert stats.play_bytes_dropped == 640


async def test_a_pushing_agent_that_closes_under_a_write_counts_the_rest() -> None:
    stats = CallStats()
    outlet = agent_outlet(stats)
    outlet.attach(PushAgent(room=2))
    outlet.offer([FRAME, dg.KeepAlive(), FRAME, FRAME])  # the third write fails
    assert stats.caller_frames_dropped == 2


async def test_caller_audio_queued_for_a_dropped_connection_is_counted() -> None:
    stats = CallStats()
    outlet = agent_outlet(stats)
    conn = AwaitedAgent(room=0)
    assert outlet.attach(conn) is None  # awaited: what is offered waits for the writer
    outlet.offer([FRAME, dg.KeepAlive(), FRAME])
    assert outlet.drop(conn)
    assert stats.caller_frames_dropped == 2
    outlet.offer([FRAME])  # no connection (reconnecting)
    assert stats.caller_frames_dropped == 3


async def test_the_agent_writer_counts_what_a_closed_connection_never_took() -> None:
    stats = CallStats()
    outlet = agent_outlet(stats)
    outlet.attach(AwaitedAgent(room=1))
    outlet.offer([dg.KeepAlive(), FRAME, FRAME])
    async with anyio.create_task_group() as tg:
        tg.start_soon(outlet.run)
        await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert stats.caller_frames_dropped == 2
