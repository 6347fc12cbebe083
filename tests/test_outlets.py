"""The outlets count every frame of audio they do not write, whatever the reason: a slow
peer (their queue sheds), a socket that failed under a write, a connection dropped with
audio still queued for it. Fake sockets, no network."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import pytest

from acdg_asgi.call import CallStats
from acdg_asgi.errors import AgentClosed
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.runtime.outlets import AgentOutlet, VaicOutlet
from acdg_asgi.runtime.scheduler import Kick
from acdg_asgi.transports.vaic_asgi import VaicSocket

pytestmark = pytest.mark.anyio

CHUNK = ac.PlayStreamChunk(stream_id="1", audio_chunk=bytes(640))
STOP = ac.PlayStreamStop(stream_id="1")
FRAME = bytes(640)


class Direct:
    """A direct VAIC socket that takes ``room`` writes, then fails."""

    def __init__(self, room: int, backed_up: bool = False) -> None:
        self.room = room
        self.written: list[bytes] = []
        self._backed_up = backed_up

    def listen(self, on_text: Callable[[str], None]) -> None:
        pass

    def backed_up(self) -> bool:
        return self._backed_up

    def write_text(self, data: bytes) -> bool:
        if len(self.written) >= self.room:
            return False
        self.written.append(data)
        return True


async def closed_send(message: object) -> None:
    raise OSError("connection reset")


async def never() -> object:
    raise NotImplementedError


def vaic_outlet(stats: CallStats, shed: list[int] | None = None) -> VaicOutlet:
    return VaicOutlet(Kick(asyncio.get_running_loop()), stats, limit=3,
                      on_shed=lambda peer, n: (shed if shed is not None else []).append(n),
                      on_stop_written=lambda: None)


class Push:
    """A pushing agent connection that takes ``room`` writes, then is closed."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.written = 0

    async def recv(self) -> str | bytes:
        raise AgentClosed("closed")

    async def send_text(self, data: bytes) -> None:
        self.write_text(data)

    async def send_audio(self, data: bytes) -> None:
        self.write_audio(data)

    async def close(self) -> None:
        pass

    def listen(self, on_message: Callable[[str | bytes], None],
               on_closed: Callable[[str], None]) -> None:
        pass

    def write_text(self, data: bytes) -> None:
        self._write()

    def write_audio(self, data: bytes) -> bool:
        self._write()
        return True

    def _write(self) -> None:
        if self.written >= self.room:
            raise AgentClosed("closed")
        self.written += 1


class Awaited:
    """An agent connection whose writes are awaited (not pushing): ``room`` of them, then
    it is closed."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.written = 0

    async def recv(self) -> str | bytes:
        raise AgentClosed("closed")

    async def send_text(self, data: bytes) -> None:
        self._write()

    async def send_audio(self, data: bytes) -> None:
        self._write()

    async def close(self) -> None:
        pass

    def _write(self) -> None:
        if self.written >= self.room:
            raise AgentClosed("closed")
        self.written += 1


def agent_outlet(stats: CallStats) -> AgentOutlet:
    return AgentOutlet(Kick(asyncio.get_running_loop()), stats, limit=3,
                       on_shed=lambda peer, n: None)


async def test_a_direct_write_that_fails_counts_what_it_did_not_write() -> None:
    stats = CallStats()
    outlet = vaic_outlet(stats)
    socket = VaicSocket(never, closed_send, client="test", max_frame_bytes=1 << 20,  # type: ignore[arg-type]
                        direct=Direct(room=1))
    outlet.attach(socket)
    outlet.offer([CHUNK, CHUNK, STOP, CHUNK])  # the second write fails
    assert stats.play_bytes_dropped == 3 * 640 - 640  # the 2nd and the 4th chunk
    assert socket.broken


async def test_the_vaic_writer_counts_what_a_closed_socket_never_took() -> None:
    stats = CallStats()
    shed: list[int] = []
    outlet = vaic_outlet(stats, shed)
    socket = VaicSocket(never, closed_send, client="test", max_frame_bytes=1 << 20)  # type: ignore[arg-type]
    outlet.attach(socket)
    outlet.offer([CHUNK, STOP])
    outlet.offer([CHUNK, CHUNK, CHUNK])  # two over the limit: the two oldest chunks go
    assert shed == [2] and stats.play_bytes_dropped == 2 * 640
    async with anyio.create_task_group() as tg:
        tg.start_soon(outlet.run)
        await anyio.sleep(0.01)  # every send fails
        outlet.close(1000)
    assert stats.play_bytes_dropped == 4 * 640  # shed, and what the closed socket did not take
    assert outlet.detach(socket) and stats.play_bytes_dropped == 4 * 640  # not twice


async def test_audio_for_a_vaic_that_is_gone_is_counted() -> None:
    stats = CallStats()
    outlet = vaic_outlet(stats)
    outlet.offer([CHUNK, STOP])  # no socket
    assert stats.play_bytes_dropped == 640


async def test_a_pushing_agent_that_closes_under_a_write_counts_the_rest() -> None:
    stats = CallStats()
    outlet = agent_outlet(stats)
    outlet.attach(Push(room=2))
    outlet.offer([FRAME, dg.KeepAlive(), FRAME, FRAME])  # the third write fails
    assert stats.caller_frames_dropped == 2


async def test_caller_audio_queued_for_a_dropped_connection_is_counted() -> None:
    stats = CallStats()
    outlet = agent_outlet(stats)
    conn = Awaited(room=0)
    assert outlet.attach(conn) is None  # awaited: what is offered waits for the writer
    outlet.offer([FRAME, dg.KeepAlive(), FRAME])
    assert outlet.drop(conn)
    assert stats.caller_frames_dropped == 2
    outlet.offer([FRAME])  # no connection (reconnecting)
    assert stats.caller_frames_dropped == 3


async def test_the_agent_writer_counts_what_a_closed_connection_never_took() -> None:
    stats = CallStats()
    outlet = agent_outlet(stats)
    outlet.attach(Awaited(room=1))
    outlet.offer([dg.KeepAlive(), FRAME, FRAME])
    async with anyio.create_task_group() as tg:
        tg.start_soon(outlet.run)
        await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert stats.caller_frames_dropped == 2
