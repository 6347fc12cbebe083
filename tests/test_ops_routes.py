"""``/ready`` and ``/metrics`` kept off the public bot URL: behind the control route's
credentials, or on a port of their own. Real uvicorn servers on loopback."""

from __future__ import annotations

import httpx
import pytest

from acdg_asgi import BridgeApp, ConfigError
from acdg_asgi.testing.server import serve

pytestmark = pytest.mark.anyio

URL = "ws://127.0.0.1:9/v1/agent/converse"
TOKEN = "ops-secret"


async def test_ops_routes_behind_control_auth() -> None:
    bridge = BridgeApp(deepgram_url=URL, metrics=True, control_auth=TOKEN,
                       ops_access="control_auth")
    async with serve(bridge) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        assert (await http.get("/")).status_code == 200  # Live Hub's probe stays public
        for path in ("/ready", "/metrics"):
            assert (await http.get(path)).status_code == 401
            wrong = await http.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            right = await http.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert right.status_code == 200
        ready = await http.get("/ready", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ready.json()["store"] == {"name": "none", "state": "none"}


async def test_ops_routes_on_a_port_of_their_own() -> None:
    bridge = BridgeApp(deepgram_url=URL, metrics=True, ops_access="separate")
    async with serve(bridge) as host, serve(bridge.ops_app) as ops, httpx.AsyncClient() as http:
        assert (await http.get(f"http://{host}/")).status_code == 200
        assert (await http.get(f"http://{host}/ready")).status_code == 404
        assert (await http.get(f"http://{host}/metrics")).status_code == 404
        assert (await http.get(f"http://{ops}/ready")).json()["ready"] is True
        metrics = await http.get(f"http://{ops}/metrics")
        assert metrics.status_code == 200 and "acdg_active_calls" in metrics.text


def test_control_auth_is_needed_to_guard_them() -> None:
    with pytest.raises(ConfigError, match="needs control_auth="):
        BridgeApp(deepgram_url=URL, ops_access="control_auth")
    with pytest.raises(ConfigError, match="ops_access must be"):
        BridgeApp(deepgram_url=URL, ops_access="private")  # type: ignore[arg-type]
