"""VAIC's side of a call as a raw ASGI WebSocket: receive frames, send text, close.

The frame path talks to the ASGI ``receive``/``send`` callables directly; a failed send
becomes :class:`VaicClosed`, which the runtime turns into a "socket lost" input.
"""

from __future__ import annotations

import contextlib

from starlette.types import Receive, Send

__all__ = ["VaicClosed", "VaicSocket"]


class VaicClosed(Exception):
    """VAIC's socket is gone."""


class VaicSocket:
    __slots__ = ("_receive", "_send", "client", "closed", "max_frame_bytes")

    def __init__(
        self, receive: Receive, send: Send, *, client: str, max_frame_bytes: int
    ) -> None:
        self._receive = receive
        self._send = send
        self.client = client
        self.max_frame_bytes = max_frame_bytes
        self.closed = False

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
        if self.closed:
            raise VaicClosed("socket closed")
        try:
            await self._send({"type": "websocket.send", "text": data.decode()})
        except Exception as exc:  # servers differ: OSError, ClientDisconnected, RuntimeError
            self.closed = True
            raise VaicClosed(repr(exc)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):  # already gone: nothing left to tell it
            await self._send({"type": "websocket.close", "code": code, "reason": reason[:120]})
