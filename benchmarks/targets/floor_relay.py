"""Yardstick: the floor relay, about the least CPU a Python relay can spend per frame.

Raw asyncio Protocols on both sides with a minimal RFC 6455 framing, uvloop, and every
forward done inside ``data_received``: no task, no queue and no await per frame. JSON is
read with msgspec (which also decodes the base64 audio in C); ``playStream.chunk`` is
written by concatenating a per-stream prefix with the base64 text. It speaks just enough
of both protocols for the load generator, like the straightforward relay.

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
from typing import Final, cast
from urllib.parse import urlsplit

import msgspec

WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SETTINGS: Final = (
    b'{"type":"Settings","audio":{"input":{"encoding":"linear16","sample_rate":16000},'
    b'"output":{"encoding":"linear16","sample_rate":16000,"container":"none"}},"agent":{}}'
)
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class Message(msgspec.Struct, rename="camel"):
    type: str
    audio_chunk: bytes = b""


decode: Final = msgspec.json.Decoder(Message).decode


def mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    k = (key * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def header(opcode: int, n: int, masked: bool) -> bytes:
    bit = 0x80 if masked else 0
    if n < 126:
        return bytes((0x80 | opcode, bit | n))
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, bit | 126, n)
    return struct.pack("!BBQ", 0x80 | opcode, bit | 127, n)


class Peer(asyncio.Protocol):
    """One WebSocket after its handshake: parse frames, write frames."""

    masked_writes = False  # True on the client side (toward the agent)

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.open = False
        self.other: Peer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.other is not None and self.other.transport is not None:
            self.other.transport.close()

    def write(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if self.masked_writes:
            # Keys from `random`: the RFC's entropy rule guards browsers against hostile
            # scripts, which a server-side client is not.
            key = random.getrandbits(32).to_bytes(4, "little")
            self.transport.write(header(opcode, len(payload), True) + key + mask(payload, key))
        else:
            self.transport.write(header(opcode, len(payload), False) + payload)

    def parse(self) -> None:
        buf = self.buf
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, hdr = b1 & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, hdr = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, hdr = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            key_at = pos + hdr
            if b1 & 0x80:
                hdr += 4
            end = pos + hdr + n
            if end > size:
                break
            payload = bytes(buf[pos + hdr : end])
            if b1 & 0x80:
                payload = mask(payload, bytes(buf[key_at : key_at + 4]))
            pos = end
            opcode = b0 & 0x0F
            if opcode == OP_TEXT:
                self.on_text(payload)
            elif opcode == OP_BINARY:
                self.on_binary(payload)
            elif opcode == OP_PING:
                self.write(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self.close(payload[:2])
                break
            # Fragmented messages are not needed here: neither peer sends them.
        del buf[:pos]

    def close(self, code: bytes = b"\x03\xe8") -> None:
        if self.transport is not None and not self.transport.is_closing():
            if self.open:
                self.write(OP_CLOSE, code)
            self.open = False
            self.transport.close()

    def on_text(self, payload: bytes) -> None: ...
    def on_binary(self, payload: bytes) -> None: ...


class VaicSide(Peer):
    """The server side: VAIC's connection."""

    def __init__(self, agent_url: str, token: str | None, agent_key: str | None) -> None:
        super().__init__()
        self.agent_url = agent_url
        self.token = token
        self.agent_key = agent_key
        self.agent: AgentSide | None = None
        self.stream = 0
        self.chunk_prefix: bytes | None = None  # set while a play stream is open

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.open and not self.handshake():
            return
        self.parse()

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
        bearer = b"Bearer " + self.token.encode() if self.token else None
        if key is None or (bearer and headers.get(b"authorization") != bearer):
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

    def on_text(self, payload: bytes) -> None:
        try:
            msg = decode(payload)
        except msgspec.DecodeError:
            return  # not for a yardstick to handle
        kind = msg.type
        if kind == "userStream.chunk":
            agent = self.agent
            if agent is not None and agent.ready:
                agent.write(OP_BINARY, msg.audio_chunk)
        elif kind == "session.initiate" and self.agent is None:
            asyncio.get_running_loop().create_task(self.connect_agent())
        elif kind == "userStream.start":
            self.write(OP_TEXT, b'{"type":"userStream.started"}')
        elif kind == "userStream.stop":
            self.write(OP_TEXT, b'{"type":"userStream.stopped"}')
        elif kind == "session.end":
            self.close()

    async def connect_agent(self) -> None:
        url = urlsplit(self.agent_url)
        loop = asyncio.get_running_loop()
        try:
            _, agent = await loop.create_connection(
                lambda: AgentSide(self, url.netloc, url.path or "/", self.agent_key),
                url.hostname or "127.0.0.1",
                url.port or 80,
            )
        except OSError:
            self.close(b"\x03\xf3")  # 1011
            return
        self.agent, agent.other, self.other = agent, self, agent

    # --- from the agent ---

    def play(self, audio: bytes) -> None:
        prefix = self.chunk_prefix
        if prefix is None:
            self.stream += 1
            sid = str(self.stream).encode()
            self.write(
                OP_TEXT,
                b'{"type":"playStream.start","streamId":"' + sid
                + b'","mediaFormat":"raw/lpcm16"}',
            )  # fmt: skip
            prefix = self.chunk_prefix = (
                b'{"type":"playStream.chunk","streamId":"' + sid + b'","audioChunk":"'
            )
        self.write(OP_TEXT, prefix + binascii.b2a_base64(audio, newline=False) + b'"}')

    def stop_stream(self) -> None:
        if self.chunk_prefix is not None:
            self.chunk_prefix = None
            sid = str(self.stream).encode()
            self.write(OP_TEXT, b'{"type":"playStream.stop","streamId":"' + sid + b'"}')


class AgentSide(Peer):
    """The client side: our connection to the agent."""

    masked_writes = True

    def __init__(self, vaic: VaicSide, host: str, path: str, key: str | None) -> None:
        super().__init__()
        self.vaic = vaic
        self.ready = False
        self.key = base64.b64encode(os.urandom(16))
        auth = b"Authorization: Token " + key.encode() + b"\r\n" if key else b""
        self.request = (
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode()
            + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + self.key
            + b"\r\nSec-WebSocket-Version: 13\r\n" + auth + b"\r\n"
        )  # fmt: skip

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buf[: self.buf.find(b"\r\n")])
            del self.buf[: end + 4]
            if b" 101 " not in status:
                self.vaic.close(b"\x03\xf3")
                assert self.transport is not None
                self.transport.close()
                return
            self.open = True
        self.parse()

    def on_binary(self, payload: bytes) -> None:
        self.vaic.play(payload)

    def on_text(self, payload: bytes) -> None:
        kind = decode(payload).type
        if kind == "UserStartedSpeaking":
            self.vaic.stop_stream()
            self.vaic.write(OP_TEXT, b'{"type":"userStream.speech.started"}')
        elif kind == "AgentAudioDone":
            self.vaic.stop_stream()
        elif kind == "Welcome":
            self.write(OP_TEXT, SETTINGS)
        elif kind == "SettingsApplied":
            self.ready = True
            self.vaic.write(OP_TEXT, b'{"type":"session.accepted","mediaFormat":"raw/lpcm16"}')


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
