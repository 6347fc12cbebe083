"""An agent connector on the ``websockets`` client: awaited reads and writes."""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Callable, Mapping
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidProxy,
    InvalidProxyStatus,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)
from websockets.uri import parse_uri

from ..errors import AgentClosed, AgentConnectError, ConfigError
from .agent_base import AgentConnection, Egress, proxy_refused, refused, shown_url, unreachable
from .redact import redacted_logger

__all__ = ["WebsocketsConnector"]

_ws_logger = redacted_logger("acdg_asgi.agent.websocket")


class _WebsocketsConnection:
    __slots__ = ("_pinging", "_ws")

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._pinging: asyncio.Task[None] | None = None

    def ping(self, on_pong: Callable[[], None]) -> None:
        """Ping now; ``on_pong()`` once the pong comes (a newer ping replaces it)."""
        if self._pinging is not None:
            self._pinging.cancel()
        self._pinging = asyncio.get_running_loop().create_task(self._ping(on_pong))

    async def _ping(self, on_pong: Callable[[], None]) -> None:
        try:
            pong = await self._ws.ping()
            await pong
        except (ConnectionClosed, RuntimeError):  # closed before, or while, it waited
            return
        on_pong()

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
        if self._pinging is not None:
            self._pinging.cancel()
        await self._ws.close()


class WebsocketsConnector:
    """A connector built on the ``websockets`` client.

    ``proxy``: ``True`` (the default) takes one from the environment (``HTTPS_PROXY``,
    ``HTTP_PROXY``, ``NO_PROXY``, SOCKS with ``python-socks``; read at the first call), a
    URL names one, ``None`` connects directly. ``ssl``: the TLS context for ``wss://``
    (default: the system's CAs, or ``SSL_CERT_FILE``, loaded at the first call).
    """

    def __init__(
        self, *, open_timeout: float = 10.0, max_frame_bytes: int = 4 * 1024 * 1024,
        proxy: str | Literal[True] | None = True, ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.open_timeout = open_timeout
        self.max_frame_bytes = max_frame_bytes
        self.proxy = proxy
        self.ssl = ssl
        self._egress = Egress()

    def __repr__(self) -> str:
        proxy = shown_url(self.proxy) if isinstance(self.proxy, str) else self.proxy
        return f"WebsocketsConnector(proxy={proxy!r})"

    async def connect(self, url: str, headers: Mapping[str, str]) -> AgentConnection:
        options: dict[str, Any] = {"ssl": self.ssl} if self.ssl is not None else {}
        proxy = self.proxy if isinstance(self.proxy, str) else None
        try:
            if self.proxy is True:
                proxy = self._egress.proxy(url)
            if self.ssl is None and parse_uri(url).secure:
                options["ssl"] = await self._egress.tls()
            ws = await connect(
                url,
                additional_headers=dict(headers),
                open_timeout=self.open_timeout,
                max_size=self.max_frame_bytes,
                compression=None,  # audio does not compress; deflate only costs CPU
                proxy=proxy,
                logger=_ws_logger,
                **options,
            )
        except InvalidStatus as exc:
            key_sent = any(name.lower() == "authorization" for name in headers)
            location = exc.response.headers.get("Location")
            raise refused(url, exc.response.status_code, key_sent=key_sent,
                          location=location) from None
        except InvalidProxyStatus as exc:
            uri = parse_uri(url)
            raise proxy_refused(proxy or "", f"{uri.host}:{uri.port}",
                                exc.response.status_code) from None
        except InvalidProxy as exc:
            raise ConfigError(f"proxy {shown_url(proxy or '')!r}: {exc}") from None
        except InvalidURI:
            raise AgentConnectError(f"not a WebSocket URL: {shown_url(url)!r}",
                                    retryable=False) from None
        except (OSError, TimeoutError) as exc:
            at_proxy = proxy is not None and not isinstance(exc, ssl_module.SSLError)
            raise unreachable(url, exc, proxy=proxy if at_proxy else None) from None
        except WebSocketException as exc:
            raise AgentConnectError(f"the agent at {shown_url(url)} broke the upgrade: "
                                    f"{exc}") from None
        return _WebsocketsConnection(ws)


def _describe(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    if frame is None:
        return "connection lost without a close frame"
    return f"closed with code {frame.code}" + (f" ({frame.reason})" if frame.reason else "")
