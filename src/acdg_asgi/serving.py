"""Serving the bridge under uvicorn with a graceful drain on SIGTERM.

On shutdown uvicorn closes every open WebSocket (code 1012) *before* it runs the ASGI
lifespan shutdown, so a drain started from the lifespan comes too late: the calls are
already cut. :class:`DrainingServer` drains first: on the first SIGTERM/SIGINT the
bridges stop taking calls (their readiness route turns 503), active calls run to their end
up to the drain deadline and are then hung up politely, and only then does uvicorn shut
down. A second signal skips the wait.

    server = DrainingServer(uvicorn.Config(app, host="0.0.0.0", port=8000), bridges=[bridge])
    server.run()

The direct WebSocket protocol (:mod:`acdg_asgi.transports.vaic_direct`) is named here
for uvicorn, as ``ws="acdg_asgi.serving:DirectWebSocketProtocol"``; it is imported only
when asked for, since it builds on a uvicorn module that not every release has.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from .app import BridgeApp

if TYPE_CHECKING:
    from .transports.vaic_direct import DirectWebSocketProtocol

__all__ = ["DirectWebSocketProtocol", "DrainingServer"]


def __getattr__(name: str) -> Any:
    if name == "DirectWebSocketProtocol":
        from .transports.vaic_direct import DirectWebSocketProtocol

        return DirectWebSocketProtocol
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

log = logging.getLogger("acdg_asgi.serve")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, bridges: Sequence[BridgeApp]) -> None:
        super().__init__(config)
        self.bridges = tuple(bridges)
        self._drain_requested = False
        self._drain_task: asyncio.Task[None] | None = None
        self._stop_requested = False
        self._stop_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_requested or not self.bridges:
            # Second signal: end every call now (no resume grace), then shut down.
            self._stop_requested = True
            if not self.bridges:
                super().handle_exit(sig, frame)
            return
        self._drain_requested = True
        log.info("%s received: draining before shutdown (send it again to stop at once)",
                 signal.Signals(sig).name)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_requested and self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
        if self._stop_requested and self._stop_task is None:
            self._stop_task = asyncio.get_running_loop().create_task(self._stop())
        return await super().on_tick(counter)

    async def _stop(self) -> None:
        log.info("stopping now: ending %d calls", sum(len(b.calls) for b in self.bridges))
        try:
            for bridge in self.bridges:
                await bridge.stop()
        finally:
            self.should_exit = True

    async def _drain(self) -> None:
        try:
            await asyncio.gather(*(bridge.drain() for bridge in self.bridges))
            log.info("drained: no calls left")
        finally:
            self.should_exit = True
