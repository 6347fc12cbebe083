"""Serving the bridge under uvicorn with a graceful drain on SIGTERM.

On shutdown uvicorn closes every open WebSocket (code 1012) *before* it runs the ASGI
lifespan shutdown, so a drain started from the lifespan comes too late: the calls are
already cut. :class:`DrainingServer` drains first: on the first SIGTERM/SIGINT the
bridges stop taking calls (their readiness route turns 503), active calls run to their end
up to the drain deadline and are then hung up politely (or, with ``drain_mode="migrate"``
and a shared store, move to another instance), and only then does uvicorn shut down. A
second signal skips the wait.

``acdg serve`` runs this server. Under plain uvicorn the bridge's lifespan does the same
(:mod:`acdg_asgi.shutdown`), so this class is for serving from your own code.

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
        if not self.bridges:
            super().handle_exit(sig, frame)
            return
        if self._drain_requested:  # second signal: end every call now, then shut down
            self._stop_requested = True
            return
        self._drain_requested = True
        calls = sum(len(b.calls) for b in self.bridges)
        migrate = all(b.drain_mode == "migrate" for b in self.bridges)
        how = "moving them to another instance" if migrate else (
            f"up to {max(b.drain_timeout_s for b in self.bridges):.0f} s, then a polite hang-up")
        log.info("%s received: draining, calls in progress: %d (%s), before shutdown; send it "
                 "again to end them now", signal.Signals(sig).name, calls, how)

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
