"""The benchmark's echo agent: just enough Deepgram Voice Agent v1 to echo caller audio.

A raw asyncio Protocol on uvloop, frames read and written by hand inside
``data_received``, in the spirit of ``targets/floor_relay.py``: the upgrade, ``Welcome``,
``SettingsApplied`` for ``Settings``, every binary frame sent straight back, ping, pong
and close. No task, no queue and no await per frame, so one core of load drives
hundreds of calls. ``agent_server.py`` (the full stand-in agent) stays for the scripted
barge-in runs.

For call setup measurements:

- ``--delay-ms D`` holds each handshake reply, the upgrade's 101 with ``Welcome`` and
  ``SettingsApplied``, for D ms, as one network round trip to a remote agent would.
- ``--greeting-ms G`` sends G ms of "greeting" audio right after ``SettingsApplied``.
  Its first bytes carry the agent's own timestamps of the handshake (``time.monotonic``,
  which every process on the machine shares; see :data:`STAMPS`), so whoever receives
  the greeting through the bridge can tell the agent's share of the setup from the
  bridge's.

Prints its URL, then serves until killed::

    python benchmarks/echo_agent.py --port 0 [--delay-ms 20] [--greeting-ms 200]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import struct
import sys
import time
import uuid
from collections.abc import Callable
from typing import Final, cast

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets ships it on CPython/Linux

    def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
        n = len(data)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
        return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
FIN: Final = 0x80
STAMPS: Final = struct.Struct("<4sdddd")
"""The greeting's first bytes: b"ACDG", then when the upgrade request had arrived, when
the 101 and ``Welcome`` went out, when ``Settings`` had arrived and when
``SettingsApplied`` went out."""
STAMP_MAGIC: Final = b"ACDG"
GREETING_FRAME: Final = 640  # 20 ms of linear16 at 16 kHz
SETTINGS_APPLIED: Final = b'{"type":"SettingsApplied"}'
clock: Final = time.monotonic


def header(opcode: int, n: int) -> bytes:
    if n < 126:
        return bytes((FIN | opcode, n))
    if n < 65536:
        return struct.pack("!BBH", FIN | opcode, 126, n)
    return struct.pack("!BBQ", FIN | opcode, 127, n)


class EchoAgent(asyncio.Protocol):
    """One agent connection."""

    def __init__(self, delay_s: float, greeting_ms: int) -> None:
        self.delay_s = delay_s
        self.greeting_ms = greeting_ms
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.open = False
        self.configured = False
        self.stamps = [0.0, 0.0, 0.0, 0.0]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.open and not self.buf:
            # The usual case: exactly one masked binary frame under 126 or 65536 bytes.
            second = data[1] if len(data) > 1 else 0
            n, start = second & 0x7F, 6
            if n == 126 and len(data) > 3:
                n, start = data[2] << 8 | data[3], 8
            if data[0] == FIN | OP_BINARY and second & 0x80 and n < 65536 \
                    and start + n == len(data):
                assert self.transport is not None
                self.transport.write(header(OP_BINARY, n)
                                     + apply_mask(data[start:], data[start - 4 : start]))
                return
        self.buf += data
        if not self.open and not self.upgrade():
            return
        self.frames()

    def upgrade(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        self.stamps[0] = clock()
        lines = bytes(self.buf[:end]).split(b"\r\n")
        del self.buf[: end + 4]
        key = b""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        assert self.transport is not None
        if not key:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()
            return False
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        welcome = b'{"type":"Welcome","request_id":"' + uuid.uuid4().hex.encode() + b'"}'
        reply = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                 + header(OP_TEXT, len(welcome)) + welcome)
        self.open = True  # frames that arrive meanwhile wait in order behind the reply
        self.later(self.welcomed, reply)
        return True

    def welcomed(self, reply: bytes) -> None:
        self.write_raw(reply)
        self.stamps[1] = clock()

    def frames(self) -> None:
        buf = self.buf
        pos, size = 0, len(buf)
        while size - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            n, head = second & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = buf[pos + 2] << 8 | buf[pos + 3], 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            masked = 4 if second & 0x80 else 0
            start = pos + head + masked
            if start + n > size:
                break
            payload = bytes(buf[start : start + n])
            if masked:
                payload = apply_mask(payload, bytes(buf[start - 4 : start]))
            pos = start + n
            opcode = first & 0x0F
            if opcode == OP_BINARY:
                self.write(OP_BINARY, payload)
            elif opcode == OP_TEXT:
                self.on_text(payload)
            elif opcode == OP_PING:
                self.write(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self.write(OP_CLOSE, payload[:2])
                assert self.transport is not None
                self.transport.close()
                break
            # Fragments and pongs: the bridge sends neither in a call we measure.
        del buf[:pos]

    def on_text(self, payload: bytes) -> None:
        if self.configured or b'"Settings"' not in payload:
            return  # KeepAlive, or anything else a bridge may send: nothing to answer
        self.configured = True
        self.stamps[2] = clock()
        self.later(self.applied)

    def applied(self) -> None:
        self.write(OP_TEXT, SETTINGS_APPLIED)
        self.stamps[3] = clock()
        if self.greeting_ms:
            frames = max(1, self.greeting_ms // 20)
            stamped = STAMPS.pack(STAMP_MAGIC, *self.stamps)
            self.write(OP_BINARY, stamped + bytes(GREETING_FRAME - len(stamped)))
            for _ in range(frames - 1):
                self.write(OP_BINARY, bytes(GREETING_FRAME))

    def later(self, fn: Callable[..., None], *args: object) -> None:
        """``fn(*args)`` after the handshake delay, or now."""
        if self.delay_s > 0:
            asyncio.get_running_loop().call_later(self.delay_s, fn, *args)
        else:
            fn(*args)

    def write(self, opcode: int, payload: bytes) -> None:
        self.write_raw(header(opcode, len(payload)) + payload)

    def write_raw(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def serve(host: str, port: int, delay_s: float, greeting_ms: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: EchoAgent(delay_s, greeting_ms), host, port,
                                      backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"ws://{host}:{bound}/v1/agent/converse", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=0.0,
                    help="hold each handshake reply this long (a network round trip)")
    ap.add_argument("--greeting-ms", type=int, default=0,
                    help="audio sent after SettingsApplied, stamped with the handshake times")
    args = ap.parse_args()
    try:
        import uvloop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    else:
        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(args.host, args.port, args.delay_ms / 1000, args.greeting_ms))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
