"""A lean WebSocket client for the agent connection: an asyncio Protocol, frames by hand.

The agent side of a call is one long-lived socket carrying 50 small frames a second each
way. A general WebSocket library parses every frame through a generic framing layer and
hands it to the reader through a queue and a task switch. This client parses frames in
``data_received`` and hands each message straight to the call (``listen``), and writes
with plain ``transport.write`` (``write_text``, ``write_audio``): no task per frame, no
await per write. It speaks only what the Voice Agent API needs of RFC 6455: a client
handshake, unfragmented or fragmented text and binary messages, ping, pong and close.

:class:`LeanConnector` is ``BridgeApp``'s default connector
(:class:`~acdg_asgi.transports.agent_websockets.WebsocketsConnector` is the other one).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import ssl as ssl_module
from collections import deque
from collections.abc import Callable, Mapping
from typing import Final, Literal, cast
from urllib.parse import urlsplit

from websockets.exceptions import InvalidProxy
from websockets.proxy import Proxy, parse_proxy, prepare_connect_request
from websockets.uri import WebSocketURI

from ..errors import AgentClosed, AgentConnectError, ConfigError
from .agent_base import Egress, proxy_refused, refused, shown_url, unreachable
from .wsframe import (
    BINARY,
    CLOSE,
    FIN,
    MASKED,
    PING,
    PONG,
    TEXT,
    apply_mask,
    header,
    header16,
    read_header,
)

__all__ = ["LeanConnection", "LeanConnector"]

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_WRITE_BUFFER: Final = 1 << 20  # beyond this the agent is not reading: drop audio
_AUDIO_16: Final = bytes((FIN | BINARY, 126))  # an unmasked binary frame with a 16-bit length
_AUDIO_FIRST: Final = FIN | BINARY  # a frame of caller audio: its first byte,
_MASKED_16: Final = MASKED | 126  # and its second when 126 to 65535 bytes long


class LeanConnector:
    """Opens :class:`LeanConnection`\\ s (``ws://`` or ``wss://``).

    ``proxy``: ``True`` (the default) takes an HTTP proxy from the environment as the
    ``websockets`` client does (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``, read at
    the first call); a URL (``http://user:password@proxy:3128``) names one; ``None``
    connects directly. The connection goes through the proxy as an HTTP ``CONNECT``
    tunnel, TLS inside it. ``ssl``: the TLS context for ``wss://`` (default: the system's
    CAs, or ``SSL_CERT_FILE``, loaded at the first call).
    """

    def __init__(
        self, *, max_frame_bytes: int = 4 * 1024 * 1024, proxy: str | Literal[True] | None = True,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.proxy = proxy
        self.ssl = ssl
        self._egress = Egress()
        if isinstance(proxy, str):
            _http_proxy(proxy)  # a bad one is refused here, not at the first call

    def __repr__(self) -> str:
        proxy = shown_url(self.proxy) if isinstance(self.proxy, str) else self.proxy
        return f"LeanConnector(proxy={proxy!r})"

    async def connect(self, url: str, headers: Mapping[str, str]) -> LeanConnection:
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise AgentConnectError(f"not a WebSocket URL: {shown_url(url)!r}", retryable=False)
        host, port = parts.hostname, parts.port or (443 if secure else 80)
        context = (self.ssl or await self._egress.tls()) if secure else None
        proxy = self.proxy_for(url)
        conn = LeanConnection(self.max_frame_bytes)
        try:
            if proxy is None:
                await asyncio.get_running_loop().create_connection(
                    lambda: conn, host, port, ssl=context)
            else:
                await _tunnel(conn, proxy, host, port, context)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            default_port = port == (443 if secure else 80)
            authority = host if default_port else f"{host}:{port}"
            if ":" in host:
                authority = f"[{host}]" if default_port else f"[{host}]:{port}"
            await conn.handshake(authority, target, headers, url=url)
        except OSError as exc:
            conn.abort()
            at_proxy = proxy is not None and not conn.tunnelled
            raise unreachable(url, exc, proxy=proxy if at_proxy else None) from None
        except AgentConnectError:
            conn.abort()
            raise
        return conn

    def proxy_for(self, url: str) -> str | None:
        """The proxy a connection to ``url`` goes through, if any; :class:`ConfigError`
        for one this connector cannot use (``acdg serve`` asks at startup)."""
        if self.proxy is None:
            return None
        proxy = self.proxy if isinstance(self.proxy, str) else self._egress.proxy(url)
        if proxy is not None:
            _http_proxy(proxy)
        return proxy


def _http_proxy(proxy: str) -> Proxy:
    try:
        parsed = parse_proxy(proxy)
    except InvalidProxy as exc:
        raise ConfigError(f"proxy {shown_url(proxy)!r}: {exc}") from None
    if parsed.scheme != "http":
        raise ConfigError(
            f"proxy {shown_url(proxy)!r}: LeanConnector tunnels through http:// proxies; "
            "use WebsocketsConnector for https:// and SOCKS proxies")
    return parsed


async def _tunnel(
    conn: LeanConnection, proxy: str, host: str, port: int, context: ssl_module.SSLContext | None
) -> None:
    """Open ``host:port`` through an HTTP proxy's ``CONNECT``, TLS inside the tunnel."""
    loop = asyncio.get_running_loop()
    parsed = _http_proxy(proxy)
    transport, tunnel = await loop.create_connection(_Tunnel, parsed.host, parsed.port)
    target = WebSocketURI(secure=context is not None, host=host, port=port, path="/", query="")
    transport.write(prepare_connect_request(parsed, target, "acdg-asgi"))
    try:
        status = await tunnel.answer
    except BaseException:
        transport.abort()
        raise
    if status != 200:
        transport.abort()
        raise proxy_refused(proxy, f"{host}:{port}", status)
    conn.tunnelled = True
    if context is not None:
        tls = await loop.start_tls(transport, conn, context, server_hostname=host)
        assert tls is not None
        conn.connection_made(tls)
    else:
        transport.set_protocol(conn)
        conn.connection_made(transport)


class _Tunnel(asyncio.Protocol):
    """Reads the proxy's answer to ``CONNECT``; the tunnel is then handed to the connection."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._buf = b""

    def data_received(self, data: bytes) -> None:
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end >= 0 and not self.answer.done():
            status = self._buf.split(b" ", 2)[1:2]
            self.answer.set_result(int(status[0]) if status and status[0].isdigit() else 0)
        elif len(self._buf) > 65536 and not self.answer.done():
            self.answer.set_exception(ConnectionError("the proxy's answer is too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc or ConnectionError("the proxy closed the connection"))


class _LeanFramePath(asyncio.Protocol):
    # What a frame reads, first in the object (see call.machine._CallFramePath).
    __slots__ = ("_backed_up", "_buf", "_closed", "_fragments", "_mask_at", "_masks",
                 "_on_message", "_transport", "max_frame_bytes")


class LeanConnection(_LeanFramePath):
    __slots__ = ("_close_sent", "_closed_event", "_fragment_opcode", "_handshake", "_inbox",
                 "_key", "_key_sent", "_on_closed", "_on_pong", "_pings", "_url", "_waiter",
                 "tunnelled")

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._transport: asyncio.Transport | None = None
        # What arrived of a frame not yet whole, and the frames of a message not yet
        # whole: None when there are none, which the frame path tells without reading them.
        self._buf: bytearray | None = None
        self._handshake: asyncio.Future[None] | None = None
        self._key = b""
        self._fragments: list[bytes] | None = None
        self._fragment_opcode = 0
        self._closed: str | None = None  # why, once closed
        self._close_sent = False
        self._closed_event = asyncio.Event()
        self._inbox: deque[str | bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._on_message: Callable[[str | bytes], None] | None = None
        self._on_closed: Callable[[str], None] | None = None
        self._masks = b""
        self._mask_at = 0
        self._url = ""
        self._key_sent = False
        self.tunnelled = False  # through a proxy, which answered CONNECT
        self._on_pong: Callable[[], None] | None = None
        self._pings = 0
        self._backed_up = False  # over _MAX_WRITE_BUFFER unsent, until it drains

    # --- handshake -----------------------------------------------------------------------

    async def handshake(
        self, host: str, target: str, headers: Mapping[str, str], *, url: str = ""
    ) -> None:
        assert self._transport is not None
        self._url = url or f"ws://{host}{target}"
        self._key_sent = any(name.lower() == "authorization" for name in headers)
        self._key = base64.b64encode(os.urandom(16))
        lines = [
            f"GET {target} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
            "Connection: Upgrade", f"Sec-WebSocket-Key: {self._key.decode()}",
            "Sec-WebSocket-Version: 13", "User-Agent: acdg-asgi",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        if self._closed_event.is_set():
            raise AgentConnectError(f"the agent closed the connection at once ({self._closed})")
        self._handshake = asyncio.get_running_loop().create_future()
        self._transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await self._handshake

    def _finish_handshake(self) -> None:
        assert self._handshake is not None and self._buf is not None
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > 65536:
                self._handshake.set_exception(AgentConnectError(
                    f"the agent at {shown_url(self._url)} sent a handshake answer too long"))
            return
        head = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        status_line, header_lines = head[0], head[1:]
        parts = status_line.split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        fields = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(self._key + _GUID).digest()).decode()
        if status != 101:
            error = refused(self._url, status, key_sent=self._key_sent,
                            location=fields.get("location"))
        elif fields.get("sec-websocket-accept") != expected:
            error = AgentConnectError(
                f"the agent at {shown_url(self._url)} answered the upgrade with a wrong "
                "accept key")
        else:
            self._handshake.set_result(None)
            return
        self._handshake.set_exception(error)
        self.abort()

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        # The transport says when its buffer passes the mark (write_audio then drops
        # audio), so no frame has to ask it.
        self._transport.set_write_buffer_limits(high=_MAX_WRITE_BUFFER)

    def pause_writing(self) -> None:
        self._backed_up = True

    def resume_writing(self) -> None:
        self._backed_up = False

    def data_received(self, data: bytes) -> None:
        if data[:2] == _AUDIO_16 and (n := len(data)) > 4 \
                and n - 4 == data[2] << 8 | data[3] <= self.max_frame_bytes \
                and self._buf is None and self._fragments is None and self._closed is None \
                and (on_message := self._on_message) is not None:
            # Nearly every frame: one whole chunk of audio with a 16-bit length.
            on_message(data[4:])
            return
        if self._buf is None and self._closed is None and self._on_message is not None:
            # The usual case, one whole frame from the agent: no buffer, no copy.
            frame = read_header(data, 0)
            if frame is not None and len(data) == frame[3] + frame[2] \
                    and not frame[1] & MASKED and frame[2] <= self.max_frame_bytes:
                self._frame(frame[0] & FIN, frame[0] & 0x0F, data[frame[3] :])
                return
        if self._buf is None:
            self._buf = bytearray(data)
        else:
            self._buf += data
        if self._handshake is not None and not self._handshake.done():
            self._finish_handshake()
            if not self._handshake.done():
                return
        self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(self._closed or ("connection lost" if exc is None else repr(exc)))

    # --- frames --------------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buf
        assert buf is not None
        pos = 0
        while self._closed is None:
            if (frame := read_header(buf, pos)) is None:
                break
            b0, b1, length, head = frame
            if b1 & MASKED or length > self.max_frame_bytes:
                self._fail(1002 if b1 & MASKED else 1009, "bad frame from the agent")
                break
            if len(buf) - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            self._frame(b0 & FIN, b0 & 0x0F, payload)
        if pos:
            del buf[:pos]
        if not buf:
            self._buf = None

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == BINARY and fin and self._fragments is None and self._on_message is not None:
            self._on_message(payload)  # audio, nearly every frame: the shortest way
            return
        if opcode >= CLOSE:
            if opcode == PING:
                self._write(PONG, payload)
            elif opcode == PONG:
                if payload == self._pings.to_bytes(4, "big") and self._on_pong is not None:
                    on_pong, self._on_pong = self._on_pong, None
                    on_pong()
            elif opcode == CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                reason = payload[2:].decode("utf-8", "replace")
                if not self._close_sent:
                    self._write(CLOSE, payload[:2])
                    self._close_sent = True
                self._closed = f"closed with code {code}" + (f" ({reason})" if reason else "")
                if self._transport is not None:
                    self._transport.close()
            return
        if opcode:  # first frame of a message
            self._fragment_opcode = opcode
        if not fin or self._fragments is not None:
            if self._fragments is None:
                self._fragments = [payload]
            else:
                self._fragments.append(payload)
            if not fin:
                return
            payload = b"".join(self._fragments)
            self._fragments = None
        message: str | bytes
        if self._fragment_opcode == TEXT:
            try:
                message = payload.decode()
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8 from the agent")
                return
        else:
            message = payload
        if self._on_message is not None:
            self._on_message(message)
        else:
            self._inbox.append(message)
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    def _write(self, opcode: int, payload: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise AgentClosed(self._closed or "connection closed")
        at = self._mask_at
        if at == 0:
            self._masks = os.urandom(512)  # one system call per 128 frames, 512 B a call
        mask = self._masks[at : at + 4]
        self._mask_at = (at + 4) & 511
        transport.write(b"".join((header(FIN | opcode, len(payload), MASKED), mask,
                                  apply_mask(payload, mask))))

    def _fail(self, code: int, reason: str) -> None:
        if not self._close_sent:
            self._close_sent = True
            with contextlib.suppress(AgentClosed):
                self._write(CLOSE, code.to_bytes(2, "big"))
        self._closed = reason
        self.abort()

    def _lost(self, reason: str) -> None:
        if self._closed_event.is_set():
            return
        self._closed = self._closed or reason
        self._closed_event.set()
        self._on_pong = None
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(AgentConnectError(
                f"the agent at {shown_url(self._url)} closed the connection during the "
                f"upgrade ({self._closed})"))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self._on_closed is not None:
            self._on_closed(self._closed)

    # --- the AgentConnection interface ---------------------------------------------------

    def listen(
        self, on_message: Callable[[str | bytes], None], on_closed: Callable[[str], None]
    ) -> None:
        """Hand every message to ``on_message`` as it arrives, and the end to ``on_closed``."""
        self._on_message, self._on_closed = on_message, on_closed
        while self._inbox:
            on_message(self._inbox.popleft())
        if self._closed_event.is_set():
            on_closed(self._closed or "closed")

    async def recv(self) -> str | bytes:
        while not self._inbox:
            if self._closed_event.is_set():
                raise AgentClosed(self._closed or "closed")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._inbox.popleft()

    def write_text(self, data: bytes) -> None:
        self._write(TEXT, data)

    def ping(self, on_pong: Callable[[], None]) -> None:
        """Send a ping now; ``on_pong()`` when its pong comes (a newer ping replaces it)."""
        self._pings = (self._pings + 1) & 0xFFFFFFFF
        self._on_pong = on_pong
        self._write(PING, self._pings.to_bytes(4, "big"))

    def write_audio(self, data: bytes) -> bool:
        # As _write does for any frame, inline: this runs for every caller frame.
        transport = self._transport
        if transport is None or transport.is_closing():
            raise AgentClosed(self._closed or "connection closed")
        if self._backed_up:
            return False  # the agent stopped reading: keep memory bounded
        at = self._mask_at
        if at == 0:
            self._masks = os.urandom(512)
        mask = self._masks[at : at + 4]
        self._mask_at = (at + 4) & 511
        n = len(data)
        transport.write(b"".join((
            header16(_AUDIO_FIRST, _MASKED_16, n) if 125 < n < 65536
            else header(_AUDIO_FIRST, n, MASKED), mask, apply_mask(data, mask))))
        return True

    async def send_text(self, data: bytes) -> None:
        self.write_text(data)

    async def send_audio(self, data: bytes) -> None:
        self.write_audio(data)

    async def close(self) -> None:
        if self._transport is None or self._closed_event.is_set():
            return
        if not self._close_sent:
            self._close_sent = True
            with contextlib.suppress(AgentClosed):
                self._write(CLOSE, (1000).to_bytes(2, "big"))
        try:
            await asyncio.wait_for(self._closed_event.wait(), 2)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
