"""VAIC's side of a call as a raw ASGI WebSocket: receive frames, send text, close.

The frame path talks to the ASGI ``receive``/``send`` callables directly; a failed send
becomes :class:`VaicClosed`, which the runtime turns into a "socket lost" input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

from starlette.types import Receive, Send

from ..errors import VaicClosed

__all__ = ["DIRECT", "VaicSocket"]

DIRECT = "acdg.direct"
"""The ASGI extension of :mod:`acdg_asgi.transports.vaic_direct`, found in the scope."""



class DirectProtocol(Protocol):
    """What a server protocol offers through the ``acdg.direct`` extension, once the
    socket is accepted."""

    def listen(self, on_text: Callable[[str], None]) -> None:
        """Hand every text message to ``on_text`` inside ``data_received`` from now on."""
        ...

    def backed_up(self) -> bool:
        """The peer reads slower than we write: writes should wait for the socket."""
        ...

    def write_text(self, data: bytes) -> bool:
        """Write one text frame now; ``False`` if the socket is gone or closing."""
        ...


class VaicSocket:
    """``direct`` is the server protocol when it offers the ``acdg.direct`` extension
    (:mod:`acdg_asgi.transports.vaic_direct`): text frames then come by callback and go
    out unawaited."""

    __slots__ = ("_receive", "_send", "broken", "client", "closed", "direct", "max_frame_bytes")

    def __init__(
        self, receive: Receive, send: Send, *, client: str, max_frame_bytes: int,
        direct: DirectProtocol | None = None,
    ) -> None:
        self._receive = receive
        self._send = send
        self.client = client
        self.max_frame_bytes = max_frame_bytes
        self.closed = False  # disconnected, or closed by us: nothing more to read
        self.broken = False  # a write failed; what VAIC sent before may still be read
        self.direct = direct

    async def receive(self) -> str | bytes | None:
        """The next frame, or ``None`` once the socket is closed."""
        if self.closed:
            return None
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is not None:
                return str(text)
            return bytes(message.get("bytes") or b"")
        self.closed = True  # websocket.disconnect
        return None

    async def send_text(self, data: bytes) -> None:
        if self.closed or self.broken:
            raise VaicClosed("socket closed")
        try:
            await self._send({"type": "websocket.send", "text": data.decode()})
        except Exception as exc:  # servers differ: OSError, ClientDisconnected, RuntimeError
            self.broken = True  # the reader still drains what VAIC sent, then sees the end
            raise VaicClosed(repr(exc)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):  # already gone: nothing left to tell it
            await self._send({"type": "websocket.close", "code": code, "reason": reason[:120]})
