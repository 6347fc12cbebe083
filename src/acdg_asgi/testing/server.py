"""Run an ASGI app under a real uvicorn server on loopback, for tests."""

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
    """Serve ``app`` until the block exits; yields ``"host:port"`` for URLs.

    ``port=0`` (the default) takes a free port. Other keywords go to ``uvicorn.Config``
    (``lifespan="on"``, ``ssl_certfile=...``, ``ws=...``). Raises :class:`OSError` when
    the server cannot start (the port is taken).
    """
    config.setdefault("log_level", "warning")
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **config))
    stopped = anyio.Event()

    async def run() -> None:
        try:
            await server.serve()
        except SystemExit:  # how uvicorn gives up when it cannot bind
            pass
        finally:
            stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        # uvicorn only exposes a flag for this, so poll it.
        while not (server.started or stopped.is_set()):  # noqa: ASYNC110
            await anyio.sleep(0.005)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1]
            shown = f"[{host}]" if ":" in host else host
            try:
                yield f"{shown}:{bound}"
            finally:
                server.should_exit = True
    if not server.started:
        raise OSError(f"could not serve on {host}:{port} (see uvicorn's log)")
