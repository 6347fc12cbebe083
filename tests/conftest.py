"""Shared fixtures: real servers on loopback ports chosen by the kernel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import uvicorn

from acdg_asgi.testing.agent import AgentScript, StandInAgent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serve(app: Any, **config: Any) -> AsyncIterator[str]:
    """Run ``app`` under a real uvicorn server; yields ``host:port``."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **config)
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        while not server.started:
            await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"127.0.0.1:{port}"
        finally:
            server.should_exit = True


@asynccontextmanager
async def standin(script: AgentScript | None = None, **kwargs: Any) -> AsyncIterator[StandInAgent]:
    async with StandInAgent(script=script, **kwargs) as agent:
        yield agent
