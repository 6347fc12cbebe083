"""Work the runtime starts from socket and timer callbacks runs under uvicorn as users
run it: uvicorn's own event loop, no ``anyio.run`` around it. (The other socket tests
serve inside pytest's anyio loop, where a callback still finds anyio's context; under
uvicorn alone it finds none, and anyio starts no task from it.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from rig import standin
from vaic_raw import DEFAULT_START, vaic

from acdg_asgi import AgentSettings, BridgeApp, CallInfo, Limits
from acdg_asgi.transports.vaic_direct import DirectWebSocketProtocol

pytestmark = pytest.mark.anyio


@contextmanager
def served_alone(app: Any, ws: Any) -> Iterator[str]:
    """``app`` under uvicorn in a thread of its own, as ``uvicorn.run`` serves it."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, loop="asyncio",
                                           ws=ws, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize(("ws", "start"), [
    ("auto", None),  # the wait for start ends in a timer callback
    (DirectWebSocketProtocol, DEFAULT_START),  # start arrives in the socket's callback
], ids=["start overdue", "start on the direct path"])
async def test_an_agent_factory_runs_from_a_callback(ws: Any, start: Any) -> None:
    """Either callback asks for the factory's task."""
    chosen: list[CallInfo] = []

    async def per_call(info: CallInfo) -> AgentSettings:
        chosen.append(info)
        return AgentSettings(greeting="Hello from the factory")

    async with standin() as agent:
        bridge = BridgeApp(agent=per_call, deepgram_url=agent.url, tracing=False,
                           limits=Limits(start_wait_s=0.05))
        with served_alone(bridge, ws) as host:
            async with vaic(host) as caller:
                assert (await caller.initiate(start=start))["type"] == "session.accepted"
                await caller.wait_for("playStream.chunk")  # the greeting: the agent came up
                assert len(chosen) == 1
                assert (chosen[0].details is None) == (start is None)
                await caller.end()
                await caller.wait_closed()
