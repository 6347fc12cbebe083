"""The direct WebSocket protocol under a host app: a ``BridgeApp`` routed inside a
Starlette, FastAPI or Litestar app still takes VAIC's frames on the direct path (the
``acdg.direct`` extension survives the host's routing and its copies of the scope), while
the host's own WebSocket and HTTP routes stay ordinary ASGI on the same server."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from rig import standin
from vaic_raw import vaic, wait_until
from websockets.asyncio.client import connect

from acdg_asgi import AgentSettings, BridgeApp
from acdg_asgi.asgi.admission import DIRECT_HINT, TAKEN_OVER
from acdg_asgi.testing.agent import AgentScript
from acdg_asgi.testing.server import serve
from acdg_asgi.transports import vaic_direct
from acdg_asgi.transports.vaic_direct import DirectWebSocketBase, DirectWebSocketProtocol

pytestmark = pytest.mark.anyio

FRAMEWORKS = ("starlette", "fastapi", "litestar")


def host_app(framework: str, bridge: BridgeApp) -> Any:
    """The bridge under ``/audiocodes``, next to a WebSocket echo and an HTTP route of
    the host's own, as a user's app would have them."""
    if framework == "litestar":
        from litestar import Litestar, WebSocket, get, websocket

        @get("/health", sync_to_thread=False)
        def health() -> dict[str, int]:
            return {"calls": len(bridge.calls)}

        @websocket("/echo")
        async def echo(socket: WebSocket[Any, Any, Any]) -> None:
            await socket.accept()
            await socket.send_text(await socket.receive_text())
            await socket.close()

        from litestar.handlers import asgi

        return Litestar(route_handlers=[health, echo, asgi("/audiocodes", is_mount=True,
                                                             copy_scope=True)(bridge)],
                        lifespan=[bridge.lifespan],
                        logging_config=None)  # its own would take the log from caplog
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route, WebSocketRoute
    from starlette.websockets import WebSocket as StarletteSocket

    async def health_route(request: Any) -> JSONResponse:
        return JSONResponse({"calls": len(bridge.calls)})

    async def echo_route(socket: StarletteSocket) -> None:
        await socket.accept()
        await socket.send_text(await socket.receive_text())
        await socket.close()

    routes = [Route("/health", health_route), WebSocketRoute("/echo", echo_route),
              Mount("/audiocodes", bridge)]
    if framework == "fastapi":
        from fastapi import FastAPI

        return FastAPI(routes=routes, lifespan=bridge.lifespan)
    from starlette.applications import Starlette

    return Starlette(routes=routes, lifespan=bridge.lifespan)


@pytest.mark.parametrize("protocol", ["auto", DirectWebSocketProtocol],
                         ids=["stock", "configured"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_the_bridge_takes_the_direct_path_inside_a_host_app(
    framework: str, protocol: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Configured (``--ws acdg_asgi.serving:DirectWebSocketProtocol``) or not: uvicorn's
    default protocol is taken over for the bridge's sockets once they are accepted."""
    caplog.set_level(logging.INFO, logger="acdg_asgi")
    async with standin(AgentScript(echo=True)) as agent:
        bridge = BridgeApp(agent=AgentSettings(), deepgram_url=agent.url, tracing=False)
        app = host_app(framework, bridge)
        async with serve(app, ws=protocol) as host, vaic(host, "/audiocodes/") as caller:
            assert (await caller.initiate())["type"] == "session.accepted"
            await wait_until(lambda: len(bridge.calls) == 1)
            (runtime,) = bridge.calls.runtimes()
            socket = runtime.vaic.socket
            assert socket is not None and socket.direct is not None, "standard ASGI path taken"
            # Served by the direct protocol, its own class (slots); by uvicorn's, taken over.
            assert type(socket.direct) is (DirectWebSocketProtocol
                                           if protocol is DirectWebSocketProtocol
                                           else DirectWebSocketBase)
            assert socket.direct._by_hand  # frames read by hand, not by the websockets parser
            await caller.start_stream()
            await caller.speak(voiced_ms=0, silent_ms=200)
            # the stand-in echoes caller audio: it comes back as the bot's play stream
            await caller.wait_for(lambda r: r.type == "playStream.chunk", count=10)
            echoed = sum(len(r.audio) for r in caller.of_type("playStream.chunk"))
            assert echoed == 10 * 640

            # the host's own routes on the same server: ordinary ASGI
            async with connect(f"ws://{host}/echo") as ws:
                await ws.send("plain websocket")
                assert await ws.recv() == "plain websocket"
            async with httpx.AsyncClient() as http:
                health = await http.get(f"http://{host}/health")
            assert health.json() == {"calls": 1}
            await caller.end()
            await caller.wait_closed()
        assert not bridge.calls
    assert DIRECT_HINT not in caplog.messages
    assert caplog.messages.count(TAKEN_OVER) == (protocol == "auto")


async def two_calls(host: str, bridge: BridgeApp) -> list[object | None]:
    """Two calls one after the other; each one's direct protocol, or ``None``."""
    paths = []
    for _ in range(2):
        async with vaic(host, "/audiocodes/") as caller:
            assert (await caller.initiate())["type"] == "session.accepted"
            await wait_until(lambda: len(bridge.calls) == 1)
            (runtime,) = bridge.calls.runtimes()
            assert runtime.vaic.socket is not None
            paths.append(runtime.vaic.socket.direct)
            await caller.end()
            await caller.wait_closed()
        await wait_until(lambda: not bridge.calls)
    return paths


@pytest.mark.parametrize("ws", ["websockets", "wsproto"])
async def test_without_the_direct_protocol_a_mounted_bridge_reads_through_asgi(
    ws: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """The control case: under uvicorn's other WebSocket protocols the same app has no
    direct path, and the first call says once how to get it."""
    caplog.set_level(logging.INFO, logger="acdg_asgi")
    async with standin(AgentScript(echo=True)) as agent:
        bridge = BridgeApp(agent=AgentSettings(), deepgram_url=agent.url, tracing=False)
        async with serve(host_app("starlette", bridge), ws=ws) as host:
            assert await two_calls(host, bridge) == [None, None]
    assert caplog.messages.count(DIRECT_HINT) == 1


@pytest.mark.parametrize("ws", ["auto", DirectWebSocketProtocol], ids=["stock", "configured"])
async def test_direct_path_false_keeps_every_call_on_asgi(
    ws: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="acdg_asgi")
    async with standin(AgentScript(echo=True)) as agent:
        bridge = BridgeApp(agent=AgentSettings(), deepgram_url=agent.url, tracing=False,
                           direct_path=False)
        async with serve(host_app("starlette", bridge), ws=ws) as host, \
                vaic(host, "/audiocodes/") as caller:
            assert (await caller.initiate())["type"] == "session.accepted"
            await wait_until(lambda: len(bridge.calls) == 1)
            (runtime,) = bridge.calls.runtimes()
            assert runtime.vaic.socket is not None and runtime.vaic.socket.direct is None
            await caller.start_stream()
            await caller.speak(voiced_ms=0, silent_ms=200)
            await caller.wait_for(lambda r: r.type == "playStream.chunk", count=10)
            await caller.end()
            await caller.wait_closed()
    assert DIRECT_HINT not in caplog.messages and TAKEN_OVER not in caplog.messages


@pytest.mark.parametrize("protocol", ["auto", DirectWebSocketProtocol],
                         ids=["stock", "configured"])
async def test_a_uvicorn_newer_than_tested(
    protocol: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Stock: its sockets are left as they are, and the hint says how to get the direct
    path. Configured: the direct path, and one warning that names the release."""
    monkeypatch.setattr(vaic_direct, "_TESTED", False)
    monkeypatch.setattr(vaic_direct, "_untested_warned", False)
    caplog.set_level(logging.INFO, logger="acdg_asgi")
    async with standin(AgentScript(echo=True)) as agent:
        bridge = BridgeApp(agent=AgentSettings(), deepgram_url=agent.url, tracing=False)
        async with serve(host_app("starlette", bridge), ws=protocol) as host:
            paths = await two_calls(host, bridge)
    assert [p is None for p in paths] == [protocol == "auto"] * 2
    untested = [m for m in caplog.messages if "newer than the releases" in m]
    if protocol == "auto":
        assert caplog.messages.count(DIRECT_HINT) == 1 and not untested
    else:
        assert len(untested) == 1 and DIRECT_HINT not in caplog.messages
