"""Synthetic audio for the stand-in agent, the VAIC simulator and the benchmarks.

"Speech" here is a tone loud enough for :func:`is_voiced` and "silence" is digital
silence, so both ends of a simulated call can tell talk from pause deterministically,
in any of the formats AudioCodes offers.
"""

from __future__ import annotations

import math
import struct
from functools import lru_cache
from typing import Final

from ..audio import MediaFormat

VOICE_THRESHOLD: Final = 1000  # linear amplitude that counts as speech


def _mulaw_encode(sample: int) -> int:
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    sample = min(abs(sample), clip) + bias
    exponent = max(0, sample.bit_length() - 8)
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _mulaw_decode(byte: int) -> int:
    byte = ~byte & 0xFF
    sign, exponent, mantissa = byte & 0x80, (byte >> 4) & 0x07, byte & 0x0F
    sample = ((mantissa << 3) + 0x84) << exponent
    sample -= 0x84
    return -sample if sign else sample


_MULAW_TO_LINEAR: Final = tuple(_mulaw_decode(b) for b in range(256))


def encode_samples(samples: list[int], fmt: MediaFormat) -> bytes:
    """Linear 16-bit samples to ``fmt``'s encoding (no WAV header)."""
    if fmt.encoding == "mulaw":
        return bytes(_mulaw_encode(s) for s in samples)
    return struct.pack(f"<{len(samples)}h", *samples)


def decode_samples(data: bytes, fmt: MediaFormat) -> list[int]:
    """``fmt``-encoded bytes to linear 16-bit samples."""
    if fmt.encoding == "mulaw":
        return [_MULAW_TO_LINEAR[b] for b in data]
    usable = len(data) - len(data) % 2
    return list(struct.unpack(f"<{usable // 2}h", data[:usable]))


@lru_cache(maxsize=64)
def tone(fmt: MediaFormat, ms: int, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    """``ms`` milliseconds of a sine tone in ``fmt``."""
    n = fmt.sample_rate * ms // 1000
    samples = [
        int(amplitude * math.sin(2 * math.pi * hz * i / fmt.sample_rate)) for i in range(n)
    ]
    return encode_samples(samples, fmt)


def silence(fmt: MediaFormat, ms: int) -> bytes:
    """``ms`` milliseconds of digital silence in ``fmt``."""
    return bytes([fmt.silence_byte]) * fmt.frame_bytes(ms)


def peak(data: bytes, fmt: MediaFormat) -> int:
    """Largest absolute sample value in ``data``."""
    samples = decode_samples(data, fmt)
    return max((abs(s) for s in samples), default=0)


def is_voiced(data: bytes, fmt: MediaFormat) -> bool:
    """Whether ``data`` holds "speech" (a sample above :data:`VOICE_THRESHOLD`)."""
    if fmt.encoding == "mulaw":
        # Fast path for the stand-in agent's per-frame check: silence is 0xFF / 0x7F.
        return any(abs(_MULAW_TO_LINEAR[b]) > VOICE_THRESHOLD for b in set(data))
    return peak(data, fmt) > VOICE_THRESHOLD
