"""A minimal RFC 6455 client on an asyncio Protocol, for the load generator.

Handshake, masked text frames out, frames in (fragmented or not), ping and close. No task
and no await per frame: subclasses get ``on_open``, ``on_text`` and ``on_closed`` calls.

Each connection masks with one random key, chosen when it opens, rather than a fresh key
per frame: the server's work is the same (it unmasks every frame with the key the frame
carries), and the load generator can mask a message's unchanging parts once
(:class:`MaskedTemplate`) instead of for every frame.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from typing import Final, cast

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets ships it on CPython/Linux

    def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
        n = len(data)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
        return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


WS_GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT_FRAME: Final = 0x81  # FIN and the text opcode


def _header(opcode: int, n: int) -> bytes:
    """The header of a masked client frame (FIN set), without the key."""
    if n < 126:
        return bytes((0x80 | opcode, 0x80 | n))
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    return struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)


def _rotated(key: bytes, offset: int) -> bytes:
    """The key that masks bytes starting ``offset`` bytes into a payload."""
    k = offset % 4
    return key[k:] + key[:k]


class MaskedTemplate:
    """A text frame whose payload is ``head + <variable> + tail``, the variable part of a
    fixed length: the header, ``head`` and ``tail`` are masked once."""

    __slots__ = ("_head", "_key", "_tail")

    def __init__(self, key: bytes, head: bytes, variable_len: int, tail: bytes) -> None:
        n = len(head) + variable_len + len(tail)
        self._head = _header(0x1, n) + key + apply_mask(head, key)
        self._key = _rotated(key, len(head))
        self._tail = apply_mask(tail, _rotated(key, len(head) + variable_len))

    def frame(self, variable: bytes) -> bytes:
        return self._head + apply_mask(variable, self._key) + self._tail


class WsClient(asyncio.Protocol):
    """RFC 6455 client framing: handshake, masked sends, unfragmented or fragmented reads."""

    def __init__(self, host: str, path: str, token: str | None) -> None:
        self._request_head = (host, path, token)
        self._key = base64.b64encode(os.urandom(16)).decode()
        self.mask_key = os.urandom(4)
        self._buf = bytearray()
        self._frag = bytearray()
        self._frag_op = 0
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.closed = False

    # Subclasses implement these.
    def on_open(self) -> None: ...
    def on_text(self, payload: bytes) -> None: ...
    def on_closed(self, reason: str) -> None: ...

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        host, path, token = self._request_head
        lines = [
            f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
            "Connection: Upgrade", f"Sec-WebSocket-Key: {self._key}",
            "Sec-WebSocket-Version: 13",
        ]  # fmt: skip
        if token:
            lines.append(f"Authorization: Bearer {token}")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.on_closed(f"connection lost: {exc!r}" if exc else "connection closed")

    def frame(self, opcode: int, payload: bytes) -> bytes:
        return _header(opcode, len(payload)) + self.mask_key + apply_mask(payload, self.mask_key)

    def send_text(self, payload: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(self.frame(0x1, payload))

    def send_frame(self, frame: bytes) -> None:
        """A frame built already (:class:`MaskedTemplate`)."""
        if self.transport is not None and not self.closed:
            self.transport.write(frame)

    def close(self, code: int = 1000) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(self.frame(0x8, code.to_bytes(2, "big")))
            self.closed = True
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.upgraded and not self._buf and data[0] == TEXT_FRAME:
            # The usual case: exactly one whole text message, unmasked as servers send.
            second = data[1] if len(data) > 1 else 0xFF
            if second < 126:
                n, start = second, 2
            elif second == 126 and len(data) > 3:
                n, start = data[2] << 8 | data[3], 4
            else:
                n, start = -1, 0  # a 64-bit length, or masked: the general path
            if start + n == len(data):
                self.on_text(data[start:])
                return
        buf = self._buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            accept = base64.b64encode(
                hashlib.sha1((self._key + WS_GUID).encode()).digest()
            ).decode()
            if " 101 " not in head.split("\r\n", 1)[0] or accept not in head:
                self.closed = True
                self.on_closed("upgrade refused: " + head.split("\r\n", 1)[0])
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded = True
            self.on_open()
        self._parse()

    def _parse(self) -> None:
        buf = self._buf
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, hdr = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, hdr = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, hdr = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if b1 & 0x80:
                hdr += 4
            end = pos + hdr + length
            if end > size:
                break
            payload = bytes(buf[pos + hdr : end])
            if b1 & 0x80:
                payload = apply_mask(payload, bytes(buf[pos + hdr - 4 : pos + hdr]))
            pos = end
            self._on_frame(b0, payload)
            if self.closed:
                break
        del buf[:pos]

    def _on_frame(self, b0: int, payload: bytes) -> None:
        opcode, fin = b0 & 0x0F, b0 & 0x80
        if opcode == 0x1 and fin:
            self.on_text(payload)
        elif opcode in (0x1, 0x2) or opcode == 0x0:
            if opcode:
                self._frag_op = opcode
                self._frag.clear()
            self._frag += payload
            if fin and self._frag_op == 0x1:
                self.on_text(bytes(self._frag))
        elif opcode == 0x8:
            if self.transport is not None and not self.closed:
                self.transport.write(self.frame(0x8, payload[:2]))
                self.closed = True
                self.transport.close()
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.on_closed(f"closed by the bot ({code})")
        elif opcode == 0x9 and self.transport is not None:
            self.transport.write(self.frame(0xA, payload))
