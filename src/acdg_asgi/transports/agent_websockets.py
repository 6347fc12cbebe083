"""An agent connector on the ``websockets`` client: awaited reads and writes."""

from __future__ import annotations

from collections.abc import Mapping

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ..errors import AgentClosed, AgentConnectError
from .agent_base import AgentConnection
from .redact import redacted_logger

__all__ = ["WebsocketsConnector"]

_ws_logger = redacted_logger("acdg_asgi.agent.websocket")


class _WebsocketsConnection:
    __slots__ = ("_ws",)

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def recv(self) -> str | bytes:
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise AgentClosed(_describe(exc)) from None

    async def send_text(self, data: bytes) -> None:
        try:
            await self._ws.send(data, text=True)
        except ConnectionClosed as exc:
            raise AgentClosed(_describe(exc)) from None

    async def send_audio(self, data: bytes) -> None:
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise AgentClosed(_describe(exc)) from None

    async def close(self) -> None:
        await self._ws.close()


class WebsocketsConnector:
    """A connector built on the ``websockets`` client."""

    def __init__(
        self, *, open_timeout: float = 10.0, max_frame_bytes: int = 4 * 1024 * 1024
    ) -> None:
        self.open_timeout = open_timeout
        self.max_frame_bytes = max_frame_bytes

    async def connect(self, url: str, headers: Mapping[str, str]) -> AgentConnection:
        try:
            ws = await connect(
                url,
                additional_headers=dict(headers),
                open_timeout=self.open_timeout,
                max_size=self.max_frame_bytes,
                compression=None,  # audio does not compress; deflate only costs CPU
                proxy=None,
                logger=_ws_logger,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            message = f"agent refused the upgrade: HTTP {status}"
            raise AgentConnectError(message, status=status) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise AgentConnectError(f"cannot connect to the agent: {exc!r}") from None
        return _WebsocketsConnection(ws)


def _describe(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    if frame is None:
        return "connection lost without a close frame"
    return f"closed with code {frame.code}" + (f" ({frame.reason})" if frame.reason else "")
