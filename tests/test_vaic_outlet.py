"""VAIC's outlet on the standard ASGI path: a server ``send`` that finishes without
waiting is run inside ``offer`` (no writer task in between); one that has to wait is
finished by the writer, with everything after it queued behind it, in order.

The ASGI ``send`` here is a coroutine function like uvicorn's: it waits only while the
socket is "backed up". The same paths run over real sockets in test_fastws (a VAIC that
stops reading) and test_servers (servers whose every send waits).

Behind a send that waits the queue is bounded in bytes (``limit``), as on every path: the
oldest audio is dropped and counted; a VAIC that reads not even control messages has its
socket closed (1008), the send it never finished given up."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import anyio
import pytest

from acdg_asgi.call import CallStats
from acdg_asgi.protocols import audiocodes as ac
from acdg_asgi.runtime.outlets import VaicOutlet
from acdg_asgi.runtime.scheduler import Kick
from acdg_asgi.transports.vaic_asgi import VaicSocket

pytestmark = pytest.mark.anyio


class Server:
    """An ASGI send that records what it wrote, waits while ``writable`` is clear, and
    fails once ``gone``."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.written: list[str] = []
        self.started = 0
        self.gone = False
        self.closed_with: int | None = None

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.close":
            self.closed_with = message["code"]
            return
        self.started += 1
        await self.writable.wait()
        if self.gone:
            raise OSError("connection reset")
        sent = json.loads(message["text"])
        self.written.append(base64.b64decode(sent["audioChunk"]).decode()
                            if "audioChunk" in sent else sent["type"])

    async def receive(self) -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError


async def written(server: Server, count: int) -> None:
    with anyio.fail_after(5):
        while len(server.written) < count:  # noqa: ASYNC110 - the writer has no event to offer
            await anyio.sleep(0.001)


def chunk(n: int) -> ac.PlayStreamChunk:
    return ac.PlayStreamChunk(stream_id="1", audio_chunk=str(n).encode())


async def outlet_on(server: Server, *, limit: int = 100, stats: CallStats | None = None,
                    stuck: list[int] | None = None) -> tuple[VaicOutlet, VaicSocket, list[str]]:
    shed: list[str] = []
    outlet = VaicOutlet(Kick(asyncio.get_running_loop()), stats or CallStats(), limit=limit,
                        on_shed=lambda peer, n: shed.append(peer), on_stop_written=lambda: None,
                        on_stuck=None if stuck is None else stuck.append)
    socket = VaicSocket(server.receive, server.send, client="test", max_frame_bytes=1 << 20)
    outlet.attach(socket)
    return outlet, socket, shed


async def test_a_send_that_needs_no_wait_is_written_inside_offer() -> None:
    server = Server()
    outlet, _, _ = await outlet_on(server)
    for n in range(3):
        outlet.offer([chunk(n)])
        assert server.written == [str(i) for i in range(n + 1)]  # no await in between


async def test_a_send_that_waits_is_finished_by_the_writer_and_the_rest_follows_in_order() -> None:
    server = Server()
    outlet, _, _ = await outlet_on(server)
    async with anyio.create_task_group() as tg:
        tg.start_soon(outlet.run)
        outlet.offer([chunk(0)])
        server.writable.clear()  # VAIC stops reading
        outlet.offer([chunk(1), chunk(2)])
        outlet.offer([chunk(3)])
        await anyio.sleep(0.05)
        assert server.written == ["0"]
        assert server.started == 2  # 1 began and waits; 2 and 3 are queued behind it
        server.writable.set()
        await written(server, 4)
        assert server.written == ["0", "1", "2", "3"]
        outlet.offer([chunk(4)])  # caught up: straight out again
        assert server.written[-1] == "4"
        outlet.close(1000)
    assert outlet.closed


async def test_a_send_that_fails_breaks_the_socket_and_nothing_follows() -> None:
    server = Server()
    outlet, socket, _ = await outlet_on(server)
    server.gone = True
    outlet.offer([chunk(0), chunk(1)])
    assert socket.broken and server.written == [] and server.started == 1


async def test_a_server_whose_every_send_waits_is_left_to_the_writer() -> None:
    server = Server()
    outlet, _, _ = await outlet_on(server)
    began_in_offer = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(outlet.run)
        for n in range(12):
            server.writable.clear()
            before = server.started
            outlet.offer([chunk(n)])
            began_in_offer.append(server.started > before)
            server.writable.set()  # the writer finishes it (or sends it) now
            await written(server, n + 1)
        outlet.close(1000)
    assert server.written == [str(n) for n in range(12)]
    assert began_in_offer == [True] * 8 + [False] * 4  # tried 8 times, then left to the writer


def audio(size: int) -> ac.PlayStreamChunk:
    return ac.PlayStreamChunk(stream_id="1", audio_chunk=b"a" * size)


async def test_behind_a_send_that_waits_the_queue_is_bounded_in_bytes() -> None:
    server, stats = Server(), CallStats()
    outlet, _, shed = await outlet_on(server, limit=1000, stats=stats)
    async with anyio.create_task_group() as tg:
        tg.start_soon(outlet.run)
        server.writable.clear()  # VAIC stops reading
        outlet.offer([audio(300)])  # begun at once; it waits
        for _ in range(10):
            outlet.offer([audio(300)])
            assert outlet.queued_bytes <= 1000
        assert shed and stats.play_bytes_dropped == 7 * 300  # 3 of the 10 wait behind it
        server.writable.set()
        await written(server, 4)
        assert outlet.queued_bytes == 0
        outlet.close(1000)


async def test_a_vaic_that_reads_nothing_is_closed_though_a_send_to_it_waits() -> None:
    server, stats, stuck = Server(), CallStats(), []
    outlet, socket, _ = await outlet_on(server, limit=600, stats=stats, stuck=stuck)
    async with anyio.create_task_group() as tg:
        tg.start_soon(outlet.run)
        server.writable.clear()  # VAIC reads nothing, for good
        outlet.offer([audio(100)])  # begun at once; it waits
        await anyio.sleep(0.01)  # the writer awaits it
        for n in range(3):  # control messages alone fill the queue
            outlet.offer([ac.PlayStreamStop(stream_id=str(n))])
        with anyio.fail_after(5):
            while server.closed_with is None:  # noqa: ASYNC110 - nothing to wait on
                await anyio.sleep(0.001)
        assert server.closed_with == 1008 and socket.closed and stuck == [3]
        assert stats.play_bytes_dropped == 100  # the audio it never took
        outlet.offer([audio(50)])  # for the closed socket: counted, not queued
        assert stats.play_bytes_dropped == 150 and outlet.queued_bytes == 0
        tg.cancel_scope.cancel()
    assert server.written == []
