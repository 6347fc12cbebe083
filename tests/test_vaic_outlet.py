"""VAIC's outlet on the standard ASGI path: a server ``send`` that finishes without
waiting is run inside ``offer`` (no writer task in between); one that has to wait is
finished by the writer, with everything after it queued behind it, in order.

The ASGI ``send`` here is a coroutine function like uvicorn's: it waits only while the
socket is "backed up". The same paths run over real sockets in test_fastws (a VAIC that
stops reading) and test_servers (servers whose every send waits)."""

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

    async def send(self, message: dict[str, Any]) -> None:
        self.started += 1
        await self.writable.wait()
        if self.gone:
            raise OSError("connection reset")
        self.written.append(base64.b64decode(json.loads(message["text"])["audioChunk"]).decode())

    async def receive(self) -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError


async def written(server: Server, count: int) -> None:
    with anyio.fail_after(5):
        while len(server.written) < count:  # noqa: ASYNC110 - the writer has no event to offer
            await anyio.sleep(0.001)


def chunk(n: int) -> ac.PlayStreamChunk:
    return ac.PlayStreamChunk(stream_id="1", audio_chunk=str(n).encode())


async def outlet_on(server: Server) -> tuple[VaicOutlet, VaicSocket, list[str]]:
    shed: list[str] = []
    outlet = VaicOutlet(Kick(asyncio.get_running_loop()), CallStats(), limit=100,
                        on_shed=lambda peer, n: shed.append(peer), on_stop_written=lambda: None)
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
