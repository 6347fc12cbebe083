"""One WebSocket from the simulated VAIC to the bot, and the task that reads it."""

from __future__ import annotations

from collections.abc import Mapping
from ssl import SSLCertVerificationError, SSLContext
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ..protocols.audiocodes import InboundMessage, encode
from ..transports.redact import redacted_logger
from ._observer import CallObserver
from .conformance import Sender

__all__ = ["MAX_FRAME_BYTES", "VaicSocket"]

MAX_FRAME_BYTES: Final = 16 * 1024 * 1024  # a bot may send a whole prompt in one chunk


class VaicSocket:
    """A socket whose every frame, both ways, goes through the call's observer."""

    def __init__(self, ws: ClientConnection, seen: CallObserver) -> None:
        self._ws = ws
        self._seen = seen
        self._closing = False  # our doing, so its loss is not the bot's
        self.gone = anyio.Event()

    @classmethod
    async def open(
        cls, url: str, headers: Mapping[str, str], seen: CallObserver, tg: TaskGroup,
        *, ssl: SSLContext | None = None,
    ) -> VaicSocket | None:
        """Connect and start reading; on failure record why in the report and return None."""
        tls: dict[str, Any] = {"ssl": ssl} if ssl is not None and url.startswith("wss:") else {}
        try:
            # VAIC's use of permessage-deflate is undocumented; base64 audio gains little.
            ws = await connect(
                url, additional_headers=dict(headers), open_timeout=10, close_timeout=2,
                max_size=MAX_FRAME_BYTES, compression=None, user_agent_header="acdg-vaic",
                logger=redacted_logger("acdg_asgi.testing.vaic.websocket"), **tls,
            )
        except InvalidStatus as exc:
            error = f"HTTP {exc.response.status_code}"
        except SSLCertVerificationError as exc:
            error = (f"the bot's TLS certificate is not trusted ({exc.verify_message}): pass "
                     "its CA (acdg call --cafile FILE) or skip the check (--insecure)")
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            sock = cls(ws, seen)
            seen.socket_opened(url)
            tg.start_soon(sock._receive)
            return sock
        seen.report.connect_error = error
        seen.event("local", "socket.error", error)
        return None

    async def send(self, message: InboundMessage) -> None:
        if self.gone.is_set():
            return
        payload = encode(message)
        self._seen.sent(message, payload)
        try:
            await self._ws.send(payload, text=True)
        except ConnectionClosed:
            return  # the receiver reports the loss

    async def close(self) -> None:
        """Close cleanly and wait (briefly) for the reader to finish."""
        self._closing = True
        await self._ws.close()
        with anyio.move_on_after(3):
            await self.gone.wait()

    def abort(self) -> None:
        """Drop the connection with no closing handshake, like a lost network."""
        self._closing = True
        self._ws.transport.abort()

    async def _receive(self) -> None:
        try:
            async for frame in self._ws:
                self._seen.received(frame)
        except ConnectionClosed:
            pass
        finally:
            self.gone.set()
            by: Sender = "vaic" if self._closing else "bot"
            self._seen.socket_closed(by, self._ws.close_code)
