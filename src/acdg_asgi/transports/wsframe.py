"""RFC 6455 frame headers, built and read by hand for the two hot paths (``agentws``
toward the agent, ``fastws`` from VAIC). Both see one small frame per message, 50
times a second per call, so a generic framing layer costs more than the work itself.
"""

from __future__ import annotations

import struct
from typing import Final

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets always ships it on CPython/Linux

    def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
        n = len(data)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
        return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


__all__ = ["BINARY", "CLOSE", "FIN", "MASKED", "PING", "PONG", "TEXT", "apply_mask",
           "header", "header16", "read_header"]

TEXT: Final = 1
BINARY: Final = 2
CLOSE: Final = 8
PING: Final = 9
PONG: Final = 10
FIN: Final = 0x80
MASKED: Final = 0x80

_SHORT: Final = struct.Struct("!BBH")
_LONG: Final = struct.Struct("!BBQ")

# ``header16(first, masked | 126, length)``: the header of a payload of 126 to 65535
# bytes (an audio chunk's size), for the hot paths to build without calling header().
header16: Final = _SHORT.pack


def header(first: int, length: int, masked: int = 0) -> bytes:
    """The header of a frame: ``first`` is FIN, RSV and opcode; ``masked`` is 0 or MASKED."""
    if length < 126:
        return bytes((first, masked | length))
    if length < 65536:
        return _SHORT.pack(first, masked | 126, length)
    return _LONG.pack(first, masked | 127, length)


def read_header(buf: bytes | bytearray, pos: int) -> tuple[int, int, int, int] | None:
    """``(first byte, second byte, payload length, header length)`` of the frame at
    ``pos``, without the mask key; ``None`` until enough bytes are there."""
    end = len(buf)
    if end - pos < 2:
        return None
    first, second = buf[pos], buf[pos + 1]
    length = second & 0x7F
    if length < 126:
        return first, second, length, 2
    if length == 126:
        if end - pos < 4:
            return None
        return first, second, buf[pos + 2] << 8 | buf[pos + 3], 4
    if end - pos < 10:
        return None
    return first, second, int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
