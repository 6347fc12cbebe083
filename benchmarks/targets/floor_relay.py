"""Yardstick: the floor relay, about the least CPU a Python relay can spend per frame.

Raw asyncio Protocols on both sides with a minimal RFC 6455 framing, uvloop, and every
forward done inside ``data_received``: no task, no queue and no await per frame. Frames
that arrive whole are read from the received bytes as they are (only a partial frame is
buffered), and masking is websockets' C ``apply_mask``. JSON is read with msgspec (which
also decodes the base64 audio in C); ``playStream.chunk`` is written by concatenating a
per-stream prefix with the base64 text. It speaks just enough of both protocols for the
load generator, like the straightforward relay.

:class:`Call` is the AudioCodes side of the relay, whatever carries VAIC's socket;
``uvicorn_floor.py`` carries it through a raw ASGI app instead of :class:`VaicSide`, with
the same :class:`AgentSide` toward the agent.

Usage::

    python benchmarks/targets/floor_relay.py --port 8000 --agent-url ws://...
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import os
import random
import struct
from collections.abc import Callable
from typing import Final, cast
from urllib.parse import urlsplit

import msgspec

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension

    def apply_mask(data: bytes, mask: bytes) -> bytes:
        n = len(data)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
        return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SETTINGS: Final = (
    b'{"type":"Settings","audio":{"input":{"encoding":"linear16","sample_rate":16000},'
    b'"output":{"encoding":"linear16","sample_rate":16000,"container":"none"}},"agent":{}}'
)
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
NORMAL: Final = b"\x03\xe8"  # close codes as sent: 1000
AGENT_FAILED: Final = b"\x03\xf3"  # 1011


class Message(msgspec.Struct, rename="camel"):
    type: str
    audio_chunk: bytes = b""


decode: Final = msgspec.json.Decoder(Message).decode


def header(opcode: int, n: int, masked: bool) -> bytes:
    bit = 0x80 if masked else 0
    if n < 126:
        return bytes((0x80 | opcode, bit | n))
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, bit | 126, n)
    return struct.pack("!BBQ", 0x80 | opcode, bit | 127, n)


class Peer(asyncio.Protocol):
    """One WebSocket: its handshake (a subclass's), then parse frames, write frames."""

    masked_writes = False  # True on the client side (toward the agent)

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()  # the handshake, or a frame not received whole
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False

    def data_received(self, data: bytes) -> None:
        if self.buf or not self.open:
            self.buf += data
            if not self.open and not self.handshake():
                return
            data = bytes(self.buf)
            self.buf.clear()
        end = self.parse(data)
        if end < len(data):
            self.buf += data[end:]

    def write(self, payload: bytes, opcode: int = OP_TEXT) -> None:
        assert self.transport is not None
        if self.masked_writes:
            # Keys from `random`: the RFC's entropy rule guards browsers against hostile
            # scripts, which a server-side client is not; cheaper per frame than slicing
            # keys from a batch of os.urandom.
            key = random.getrandbits(32).to_bytes(4, "little")
            frame = (header(opcode, len(payload), True), key, apply_mask(payload, key))
            self.transport.write(b"".join(frame))
        else:
            self.transport.write(header(opcode, len(payload), False) + payload)

    def parse(self, data: bytes) -> int:
        """Handle the whole frames at the start of ``data``; where they end."""
        pos, size = 0, len(data)
        while size - pos >= 2:
            b0, b1 = data[pos], data[pos + 1]
            n, hdr = b1 & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, hdr = (data[pos + 2] << 8) | data[pos + 3], 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, hdr = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            start = pos + hdr + (4 if b1 & 0x80 else 0)
            end = start + n
            if end > size:
                break
            payload = data[start:end]
            if b1 & 0x80:
                payload = apply_mask(payload, data[start - 4 : start])
            pos = end
            opcode = b0 & 0x0F
            if opcode == OP_TEXT:
                self.on_text(payload)
            elif opcode == OP_BINARY:
                self.on_binary(payload)
            elif opcode == OP_PING:
                self.write(payload, OP_PONG)
            elif opcode == OP_CLOSE:
                self.close(payload[:2])
                break
            # Fragmented messages are not needed here: neither peer sends them.
        return pos

    def close(self, code: bytes = NORMAL) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if self.open:
                self.write(code, OP_CLOSE)
            self.open = False
            self.transport.close()

    def handshake(self) -> bool:
        """Read the upgrade from ``buf``: ``True`` once the socket is open."""
        raise NotImplementedError

    def on_text(self, payload: bytes) -> None: ...
    def on_binary(self, payload: bytes) -> None: ...


class Call:
    """The AudioCodes side of one call, whatever carries VAIC's socket: the carrier hands
    VAIC's text messages to :meth:`on_text` and provides ``send_text`` and ``close``."""

    send_text: Callable[[bytes], None]  # one text message to VAIC
    close: Callable[[bytes], None]  # close VAIC's socket with this code

    def __init__(self, agent_url: str, agent_key: str | None) -> None:
        self.agent_url = agent_url
        self.agent_key = agent_key
        self.agent: AgentSide | None = None
        self.stream = 0
        self.chunk_prefix: bytes | None = None  # set while a play stream is open

    def on_text(self, payload: bytes | str) -> None:
        try:
            msg = decode(payload)
        except msgspec.DecodeError:
            return  # not for a yardstick to handle
        kind = msg.type
        if kind == "userStream.chunk":
            agent = self.agent
            if agent is not None and agent.ready:
                agent.write(msg.audio_chunk, OP_BINARY)
        elif kind == "session.initiate" and self.agent is None:
            asyncio.get_running_loop().create_task(self.connect_agent())
        elif kind == "userStream.start":
            self.send_text(b'{"type":"userStream.started"}')
        elif kind == "userStream.stop":
            self.send_text(b'{"type":"userStream.stopped"}')
        elif kind == "session.end":
            self.close(NORMAL)

    async def connect_agent(self) -> None:
        url = urlsplit(self.agent_url)
        loop = asyncio.get_running_loop()
        try:
            _, self.agent = await loop.create_connection(
                lambda: AgentSide(self, url.netloc, url.path or "/", self.agent_key),
                url.hostname or "127.0.0.1",
                url.port or 80,
            )
        except OSError:
            self.close(AGENT_FAILED)

    # --- from the agent ---

    def play(self, audio: bytes) -> None:
        prefix = self.chunk_prefix
        if prefix is None:
            self.stream += 1
            sid = str(self.stream).encode()
            self.send_text(
                b'{"type":"playStream.start","streamId":"' + sid + b'","mediaFormat":"raw/lpcm16"}'
            )
            prefix = self.chunk_prefix = (
                b'{"type":"playStream.chunk","streamId":"' + sid + b'","audioChunk":"'
            )
        self.send_text(prefix + binascii.b2a_base64(audio, newline=False) + b'"}')

    def stop_stream(self) -> None:
        if self.chunk_prefix is not None:
            self.chunk_prefix = None
            sid = str(self.stream).encode()
            self.send_text(b'{"type":"playStream.stop","streamId":"' + sid + b'"}')


class VaicSide(Call, Peer):
    """The server side: VAIC's connection, on a raw asyncio Protocol."""

    send_text = Peer.write
    close = Peer.close

    def __init__(self, agent_url: str, token: str | None, agent_key: str | None) -> None:
        Peer.__init__(self)
        Call.__init__(self, agent_url, agent_key)
        self.bearer = b"Bearer " + token.encode() if token else None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.agent is not None:
            self.agent.close()

    def handshake(self) -> bool:
        assert self.transport is not None
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self.buf[:end]).split(b"\r\n")
        del self.buf[: end + 4]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get(b"sec-websocket-key")
        if key is None or (self.bearer and headers.get(b"authorization") != self.bearer):
            status = b"400 Bad Request" if key is None else b"401 Unauthorized"
            self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()
            return False
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.open = True
        return True


class AgentSide(Peer):
    """The client side: our connection to the agent."""

    masked_writes = True

    def __init__(self, vaic: Call, host: str, path: str, key: str | None) -> None:
        super().__init__()
        self.vaic = vaic
        self.ready = False
        auth = b"Authorization: Token " + key.encode() + b"\r\n" if key else b""
        self.request = (
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode()
            + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
            + base64.b64encode(os.urandom(16)) + b"\r\nSec-WebSocket-Version: 13\r\n" + auth
            + b"\r\n"
        )  # fmt: skip

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.vaic.close(AGENT_FAILED)  # a no-op once VAIC's socket is closing

    def handshake(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        status = bytes(self.buf[: self.buf.find(b"\r\n")])
        del self.buf[: end + 4]
        if b" 101 " not in status:
            self.vaic.close(AGENT_FAILED)
            assert self.transport is not None
            self.transport.close()
            return False
        self.open = True
        return True

    def on_binary(self, payload: bytes) -> None:
        self.vaic.play(payload)

    def on_text(self, payload: bytes) -> None:
        kind = decode(payload).type
        if kind == "UserStartedSpeaking":
            self.vaic.stop_stream()
            self.vaic.send_text(b'{"type":"userStream.speech.started"}')
        elif kind == "AgentAudioDone":
            self.vaic.stop_stream()
        elif kind == "Welcome":
            self.write(SETTINGS)
        elif kind == "SettingsApplied":
            self.ready = True
            self.vaic.send_text(b'{"type":"session.accepted","mediaFormat":"raw/lpcm16"}')


async def serve(host: str, port: int, agent_url: str, token: str | None, key: str | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: VaicSide(agent_url, token, key), host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--agent-url", required=True)
    ap.add_argument("--token", default="token", help="bearer token VAIC must send ('' for none)")
    ap.add_argument("--agent-key", default="", help="Deepgram API key, if the agent needs one")
    args = ap.parse_args()
    try:
        import uvloop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.host, args.port, args.agent_url, args.token or None,
                         args.agent_key or None))


if __name__ == "__main__":
    main()
