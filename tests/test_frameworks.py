"""The bridge mounted in Starlette, FastAPI and Litestar (the examples/ apps), and under
hypercorn: a short call through the mount, the Live Hub probe at the mount path, the
host app's own routes, and the lifespan drain."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from rig import load_example, standin, upgrade_status
from vaic_raw import RawVaic, vaic

from acdg_asgi import BridgeApp
from acdg_asgi.testing.agent import AgentScript, Turn
from acdg_asgi.testing.server import serve

pytestmark = pytest.mark.anyio

TOKEN = "framework-token-31f0"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GREETING = "Thanks for calling Acme. How can I help?"
PROBE = {"type": "ac-bot-api", "success": True}
SCRIPT = AgentScript(
    turns=(Turn("Your order", heard="where is my order", function="lookup_order",
                arguments='{"order": "A1"}'),),
    ms_per_word=20,
    end_of_turn_ms=200,
)


def bridge_of(app: Any) -> BridgeApp:
    bridge = app.state.bridge
    assert isinstance(bridge, BridgeApp)
    return bridge


async def short_call(host: str, path: str) -> RawVaic:
    """Greeting, one caller turn answered through the example's function handler, hang up."""
    async with vaic(host, path, headers=AUTH) as caller:
        assert await caller.initiate() == {"type": "session.accepted",
                                           "mediaFormat": "raw/lpcm16"}
        await caller.start_stream()
        await caller.wait_for("playStream.stop")
        await caller.speak(voiced_ms=200, silent_ms=300, pace=0.25)
        await caller.wait_for("playStream.stop", count=2)
        await caller.end()
        await caller.wait_closed()
    greeting, answer = caller.play_streams()
    assert greeting.start.msg["altText"] == GREETING
    assert answer.start.msg["altText"] == 'Your order ({"status":"shipped"})'
    assert caller.invalid == []
    return caller


@pytest.mark.parametrize("framework", [
    "starlette",
    "fastapi",
    "litestar",
])
async def test_ready_endpoint_under_the_mount(framework: str) -> None:
    async with standin(SCRIPT) as agent:
        app = load_example(f"{framework}_app").build_app(agent.url, auth=TOKEN)
        async with serve(app) as host, httpx.AsyncClient() as http:
            ready = await http.get(f"http://{host}/audiocodes/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True and ready.json()["calls"] == 0


@pytest.mark.parametrize(("framework", "own_route"), [
    ("starlette", "/"),
    ("fastapi", "/health"),
    ("litestar", "/health"),
])
async def test_mounted_in_a_framework(framework: str, own_route: str) -> None:
    async with standin(SCRIPT) as agent:
        app = load_example(f"{framework}_app").build_app(agent.url, auth=TOKEN)
        bridge = bridge_of(app)
        async with serve(app) as host:
            for path in ("/audiocodes", "/audiocodes/"):
                await short_call(host, path)
            assert await upgrade_status(host, "/audiocodes") == 401
            assert await upgrade_status(host, "/audiocodes/") == 401
            async with httpx.AsyncClient(follow_redirects=True) as http:
                for path in ("/audiocodes", "/audiocodes/"):
                    probe = await http.get(f"http://{host}{path}")
                    assert probe.status_code == 200, path
                    assert probe.json() == PROBE
                own = await http.get(f"http://{host}{own_route}")
                assert own.status_code == 200
            assert not bridge.draining
        # Each call reached the stand-in with the example's agent settings.
        assert len(agent.connections) == 2
        settings = agent.connections[0].settings
        assert settings is not None and settings.agent.greeting == GREETING
    assert not bridge.calls
    assert bridge.draining  # the framework's lifespan shutdown drained the bridge


# --- hypercorn ----------------------------------------------------------------------------


@asynccontextmanager
async def hypercorn_serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with hypercorn (asyncio) on a socket bound by the kernel."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    host = f"127.0.0.1:{sock.getsockname()[1]}"
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (and closes) the socket now
    config.graceful_timeout = 2
    config.loglevel = "WARNING"
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: hypercorn_serve(app, config, shutdown_trigger=stop.wait))
        async with httpx.AsyncClient() as http:
            with anyio.fail_after(10):
                while True:
                    try:
                        await http.get(f"http://{host}/audiocodes/")
                        break
                    except httpx.TransportError:
                        await anyio.sleep(0.02)
        try:
            yield host
        finally:
            stop.set()


async def test_under_hypercorn() -> None:
    async with standin(SCRIPT) as agent:
        app = load_example("starlette_app").build_app(agent.url, auth=TOKEN)
        bridge = bridge_of(app)
        async with hypercorn_serving(app) as host:
            await short_call(host, "/audiocodes")
            assert await upgrade_status(host, "/audiocodes") == 401
            async with httpx.AsyncClient() as http:
                probe = await http.get(f"http://{host}/audiocodes/")
            assert probe.status_code == 200 and probe.json() == PROBE
    assert not bridge.calls


# --- examples/multi_tenant.py -------------------------------------------------------------


async def test_multi_tenant_picks_the_persona_per_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    example = load_example("multi_tenant")
    async with standin(SCRIPT) as agent:
        app = example.build_app(agent.url)
        async with serve(app) as host:
            greetings: dict[str, str] = {}
            for path, headers, params in (
                ("/audiocodes/acme", None, None),
                ("/audiocodes/globex/", None, None),
                ("/audiocodes/", {"X-Tenant": "Globex"}, None),
                ("/audiocodes/unknown/", None, {"tenant": "Acme"}),  # via sipHeadersToBot
            ):
                async with vaic(host, path, headers=headers) as caller:
                    await caller.initiate(**({"start": params} if params else {}))
                    start = await caller.wait_for("playStream.start")
                    greetings[path] = start.msg["altText"]
                    await caller.end()
                    await caller.wait_closed()
            async with vaic(host, "/audiocodes/initech") as caller:
                await caller.initiate()  # the factory runs once start has come
                hangup = await caller.wait_for("activities")
                await caller.end(reason_code="bot-disconnected")
                await caller.wait_closed()
    assert greetings == {
        "/audiocodes/acme": "Thanks for calling Acme. How can I help?",
        "/audiocodes/globex/": "Thanks for calling Globex. How can I help?",
        "/audiocodes/": "Thanks for calling Globex. How can I help?",
        "/audiocodes/unknown/": "Thanks for calling Acme. How can I help?",
    }
    voices = [c.settings.agent.speak.provider["model"] for c in agent.connections
              if c.settings is not None]
    assert voices == ["aura-2-thalia-en", "aura-2-orion-en", "aura-2-orion-en",
                      "aura-2-thalia-en"]
    # An unknown tenant: hung up with a reason, one INFO line, no Settings at the agent.
    assert hangup.msg["activities"] == [{"type": "event", "name": "hangup", "activityParams": {
        "hangupReason": "no agent for this call"}}]
    assert len(voices) == 4
    (line,) = [r for r in caplog.records if "no agent for this call: hanging up" in r.getMessage()]
    assert line.levelno == logging.INFO and line.exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and r.name.startswith("acdg_asgi")]
