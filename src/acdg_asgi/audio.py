"""Media formats: what AudioCodes offers, what Deepgram accepts, and the WAV framing between.

Every AudioCodes format maps onto a Deepgram encoding and sample rate without
transcoding, so audio passes through untouched. ``wav/*`` formats carry the same samples
inside a RIFF container: the header is stripped from caller audio and one is written at
the start of each play stream (each play stream is one utterance, i.e. one WAV file).

Everything here is pure and decided once, at negotiation.
"""

from __future__ import annotations

import array
import struct
import sys
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from .errors import moved
from .protocols import deepgram as dg

__all__ = [
    "DEFAULT_PREFERENCE",
    "FORMATS",
    "MediaFormat",
    "is_loud",
    "negotiate",
    "strip_wav_header",
    "wav_header",
]


class MediaFormat(msgspec.Struct, frozen=True):
    """One AudioCodes ``mediaFormat`` token and what it means on the wire.

    ``str(fmt)`` is the token. Comparing with a string compares the token, as the
    predecessor's plain-string formats did (``session.media_format == "raw/mulaw"``),
    with a :class:`~acdg_asgi.MigrationWarning`: compare ``fmt.token`` instead.
    """

    token: str
    encoding: str  # Deepgram's name: "linear16" or "mulaw"
    sample_rate: int
    sample_width: int  # bytes per sample
    wav: bool

    def __str__(self) -> str:
        return self.token

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            moved("comparing a MediaFormat with a string", "media_format.token")
            return self.token == other
        if isinstance(other, MediaFormat):
            return msgspec.structs.astuple(self) == msgspec.structs.astuple(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, str):
            moved("comparing a MediaFormat with a string", "media_format.token")
            return self.token != other
        if isinstance(other, MediaFormat):
            return msgspec.structs.astuple(self) != msgspec.structs.astuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.token)

    @property
    def bytes_per_ms(self) -> float:
        return self.sample_rate * self.sample_width / 1000

    def frame_bytes(self, ms: int) -> int:
        """Bytes in ``ms`` milliseconds of audio, whole samples only."""
        return self.sample_rate * ms // 1000 * self.sample_width

    def duration_ms(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_ms

    @property
    def silence_byte(self) -> int:
        return 0xFF if self.encoding == "mulaw" else 0x00

    def deepgram_audio(self) -> dg.AudioSettings:
        """Deepgram ``audio`` settings that carry this format both ways untouched."""
        return dg.AudioSettings(
            input=dg.AudioInput(encoding=self.encoding, sample_rate=self.sample_rate),
            output=dg.AudioOutput(
                encoding=self.encoding, sample_rate=self.sample_rate, container="none"
            ),
        )


def _formats() -> dict[str, MediaFormat]:
    table = [
        ("mulaw", "mulaw", 8000, 1),
        ("lpcm16", "linear16", 16000, 2),
        ("lpcm16_8", "linear16", 8000, 2),
        ("lpcm16_24", "linear16", 24000, 2),
    ]
    out: dict[str, MediaFormat] = {}
    for suffix, encoding, rate, width in table:
        for container in ("raw", "wav"):
            token = f"{container}/{suffix}"
            out[token] = MediaFormat(token, encoding, rate, width, container == "wav")
    return out


FORMATS: Final[dict[str, MediaFormat]] = _formats()

# Wideband first (better recognition), then what telephony usually carries.
DEFAULT_PREFERENCE: Final[tuple[str, ...]] = (
    "raw/lpcm16",
    "raw/lpcm16_24",
    "raw/lpcm16_8",
    "raw/mulaw",
    "wav/lpcm16",
    "wav/lpcm16_24",
    "wav/lpcm16_8",
    "wav/mulaw",
)


def negotiate(offered: Iterable[str], preference: Sequence[str]) -> MediaFormat | None:
    """Pick the first format in ``preference`` that VAIC offered, or ``None``."""
    offered_set = set(offered)
    for token in preference:
        if token in offered_set and token in FORMATS:
            return FORMATS[token]
    return None


_RIFF: Final = b"RIFF"


def strip_wav_header(chunk: bytes) -> bytes:
    """Return the samples of ``chunk``, without a RIFF/WAVE header if one leads it.

    Chunks that do not start with ``RIFF`` are returned as they are, so this works whether
    VAIC sends one header per stream or one per chunk.
    """
    if not chunk.startswith(_RIFF) or chunk[8:12] != b"WAVE":
        return chunk
    pos = 12
    while pos + 8 <= len(chunk):
        ident = chunk[pos : pos + 4]
        (size,) = struct.unpack_from("<I", chunk, pos + 4)
        if ident == b"data":
            return chunk[pos + 8 :]
        pos += 8 + size + (size & 1)
    return b""


def wav_header(fmt: MediaFormat, data_bytes: int = 0xFFFFFFFF - 36) -> bytes:
    """A RIFF/WAVE header for ``fmt``. The default size marks a stream of unknown length."""
    audio_format = 7 if fmt.encoding == "mulaw" else 1  # WAVE_FORMAT_MULAW / PCM
    block_align = fmt.sample_width
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        audio_format,
        1,
        fmt.sample_rate,
        fmt.sample_rate * block_align,
        block_align,
        fmt.sample_width * 8,
        b"data",
        data_bytes,
    )


LOUD: Final = 1000  # linear amplitude (of 32767) that counts as voice, about -30 dBFS


def _mulaw_magnitude(byte: int) -> int:
    byte = ~byte & 0xFF
    exponent, mantissa = (byte >> 4) & 0x07, byte & 0x0F
    return (((mantissa << 3) + 0x84) << exponent) - 0x84


# µ-law bytes louder than LOUD map to 1, the rest are deleted: one C-speed pass per frame.
_MULAW_QUIET: Final = bytes(b for b in range(256) if _mulaw_magnitude(b) <= LOUD)


def is_loud(chunk: bytes, fmt: MediaFormat) -> bool:
    """Whether ``chunk`` has a sample above :data:`LOUD`: the caller's voice, not line
    noise or silence."""
    if fmt.encoding == "mulaw":
        return bool(chunk.translate(None, _MULAW_QUIET))
    samples = array.array("h")
    samples.frombytes(chunk[: len(chunk) - len(chunk) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return bool(samples) and (max(samples) > LOUD or min(samples) < -LOUD)
