"""Run an ASGI app under a real uvicorn server on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn

__all__ = ["serve"]


@asynccontextmanager
async def serve(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, **config: Any
) -> AsyncIterator[str]:
    """Serve ``app`` until the block exits (on a free port unless ``port`` is given);
    yields ``"host:port"``."""
    config.setdefault("log_level", "warning")
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **config))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        # uvicorn only exposes a flag for this, so poll it.
        while not server.started:  # noqa: ASYNC110
            await anyio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"{host}:{port}"
        finally:
            server.should_exit = True
