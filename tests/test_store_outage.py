"""Redis stopped and started under a live bridge: one line when it goes, one when it is
back, its state in ``/ready`` throughout, and calls carry on here meanwhile."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpx
import pytest

from acdg_asgi import AgentSettings, BridgeApp
from acdg_asgi.testing.agent import StandInAgent
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("Redis is needed: install redis-server")
        pytest.skip("redis-server is not installed")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "no redis-server"
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def ready(http: httpx.AsyncClient, host: str) -> dict[str, Any]:
    answer = await http.get(f"http://{host}/ready")
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


async def until_store(http: httpx.AsyncClient, host: str, state: str) -> dict[str, Any]:
    with anyio.fail_after(20):
        while (body := await ready(http, host))["store"]["state"] != state:  # noqa: ASYNC110
            await anyio.sleep(0.1)
    return body


def store_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """The store's changes of state, as logged (the startup line aside)."""
    return [(r.levelno, r.getMessage()) for r in caplog.records
            if r.name == "acdg_asgi.cluster" and "call state store" in r.getMessage()
            and not r.getMessage().startswith("call state store: ")]


async def test_redis_stopped_and_started_under_a_live_bridge(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    async with StandInAgent() as agent:
        bridge = BridgeApp(agent=AgentSettings(greeting="Hello"), deepgram_url=agent.url,
                           store=url, instance_id="i0", tracing=False)
        with redis_server(port) as first:
            async with serve(bridge, lifespan="on") as host, httpx.AsyncClient() as http:
                body = await until_store(http, host, "up")
                assert body["store"] == {"name": f"RedisStore('{url}')", "state": "up"}
                assert any(f"call state store: RedisStore('{url}'), reachable" in r.getMessage()
                           for r in caplog.records)

                first.terminate()
                first.wait(timeout=10)
                body = await until_store(http, host, "down")
                assert "redis" in body["store"]["error"]
                report = await run_call(f"ws://{host}/")  # the call goes on here
                assert report.ok, report.render()
                await anyio.sleep(4)  # several retries of the control channel
                assert [level for level, _ in store_lines(caplog)] == [logging.WARNING]
                (_, down), = store_lines(caplog)
                assert "unreachable" in down and "calls go on here" in down

                with redis_server(port):
                    await until_store(http, host, "up")
                    lines = store_lines(caplog)
                    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO]
                    assert lines[1][1] == f"call state store RedisStore('{url}') is back"
                    report = await run_call(f"ws://{host}/")
                    assert report.ok, report.render()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
