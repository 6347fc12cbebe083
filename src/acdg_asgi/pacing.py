"""The playout clock: agent audio out to VAIC at playback rate, a small lead ahead.

The agent synthesises faster than real time. Forwarding at once would fill VAIC's play
buffer with seconds of speech the bridge can no longer take back when the caller barges
in. Instead :class:`Playout` keeps the audio and releases it chunk by chunk so that what
was sent is never more than ``lead`` ahead of what has played:

    play_head = when the audio sent so far will have finished playing
    send the next chunk when it ends no more than ``lead`` after now
    (or at once, when everything sent has already played)

On barge-in the unsent rest is dropped, the stream is stopped and the clock resets in
the same step, so the caller hears at most ``lead`` of the interrupted turn.

Pure: no clock is read here; every method takes ``now`` (seconds) and the owner asks
:meth:`next_deadline` when to call :meth:`pull` again.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from .audio import MediaFormat, wav_header
from .protocols.audiocodes import OutboundMessage, PlayStreamChunk, PlayStreamStart, PlayStreamStop

__all__ = ["Cut", "Playout"]


class Cut(msgspec.Struct, frozen=True):
    """What a barge-in found: how much of the turn went out, played, and was dropped."""

    stream_open: bool
    sent_ms: float
    heard_ms: float
    dropped_ms: float


class Playout:
    """One call's agent audio: a bounded buffer, a play stream at a time, and the clock."""

    def __init__(
        self,
        fmt: MediaFormat,
        *,
        lead_ms: int,
        chunk_ms: int,
        max_buffer_ms: int,
        next_stream_id: Callable[[], str],
    ) -> None:
        self.fmt = fmt
        self.lead = lead_ms / 1000
        self.chunk_s = chunk_ms / 1000
        self.chunk_bytes = fmt.frame_bytes(chunk_ms)
        self.bytes_per_s = fmt.sample_rate * fmt.sample_width
        self.max_buffer = fmt.frame_bytes(max_buffer_ms)
        self._next_stream_id = next_stream_id
        self._buf = bytearray()
        self._pos = 0  # read offset into _buf; compacted lazily to keep pulls O(chunk)
        self._turn_done = False
        self.stream_id: str | None = None
        self.alt_text: str | None = None
        self.play_head = 0.0
        self.sent_bytes = 0  # in the open stream
        self.dropped_bytes = 0  # overflow, whole call

    # --- inputs -----------------------------------------------------------------------

    def push(self, audio: bytes) -> int:
        """Queue agent audio. Returns how many bytes of older audio were dropped to fit."""
        self._buf += audio
        self._turn_done = False
        over = len(self._buf) - self._pos - self.max_buffer
        if over <= 0:
            return 0
        over += -over % self.fmt.sample_width
        self._pos += over
        self.dropped_bytes += over
        return over

    def end_turn(self) -> None:
        """The agent finished this turn's audio: stop the stream once it is all sent."""
        self._turn_done = True

    def cut(self, now: float) -> tuple[Cut, PlayStreamStop | None]:
        """Barge-in: drop what was not sent, stop the stream, reset the clock."""
        sent_ms = self.fmt.duration_ms(self.sent_bytes)
        ahead_s = max(0.0, self.play_head - now)
        cut = Cut(
            stream_open=self.stream_id is not None,
            sent_ms=sent_ms,
            heard_ms=max(0.0, sent_ms - ahead_s * 1000),
            dropped_ms=self.fmt.duration_ms(self.pending),
        )
        stop = PlayStreamStop(stream_id=self.stream_id) if self.stream_id else None
        self.clear()
        self.play_head = now
        return cut, stop

    def clear(self) -> None:
        """Forget queued audio and any open stream, without sending anything."""
        self._buf.clear()
        self._pos = 0
        self._turn_done = False
        self.stream_id = None
        self.alt_text = None
        self.sent_bytes = 0

    def detach(self) -> None:
        """VAIC's socket is gone: its play stream went with it; keep the audio queued."""
        self.stream_id = None
        self.sent_bytes = 0

    # --- outputs ----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._buf) - self._pos

    @property
    def speaking(self) -> bool:
        return self.stream_id is not None or self.pending > 0

    def next_deadline(self) -> float | None:
        """When :meth:`pull` will have something to send, or ``None`` if only input will."""
        if not self._sendable():
            return None
        if not self.lead or self._next_size() == 0:
            return 0.0  # due now
        return self.play_head + self._next_size() / self.bytes_per_s - self.lead

    def pull(self, now: float, out: list[OutboundMessage]) -> None:
        """Append to ``out`` every message due at ``now``."""
        while self._sendable():
            size = self._next_size()
            if size == 0:  # the turn ended on half a sample: drop it
                self._pos = len(self._buf)
                break
            end = self.play_head + size / self.bytes_per_s
            if self.lead and self.play_head > now and end - now > self.lead + 1e-9:
                return
            chunk = bytes(self._buf[self._pos : self._pos + size])
            self._pos += size
            if self._pos > 65536 and self._pos * 2 > len(self._buf):
                del self._buf[: self._pos]
                self._pos = 0
            if self.stream_id is None:
                self.stream_id = self._next_stream_id()
                self.sent_bytes = 0
                start = PlayStreamStart(
                    stream_id=self.stream_id, media_format=self.fmt.token, alt_text=self.alt_text
                )
                out.append(start)
                if self.fmt.wav:
                    chunk = wav_header(self.fmt) + chunk
            self.sent_bytes += size
            self.play_head = max(self.play_head, now) + size / self.bytes_per_s
            out.append(PlayStreamChunk(stream_id=self.stream_id, audio_chunk=chunk))
        if self._turn_done and self.stream_id is not None and self.pending == 0:
            out.append(PlayStreamStop(stream_id=self.stream_id))
            self.stream_id = None
            self.alt_text = None
            self._turn_done = False

    def _next_size(self) -> int:
        size = min(self.chunk_bytes, self.pending)
        return size - size % self.fmt.sample_width

    def _sendable(self) -> bool:
        if self.pending >= self.chunk_bytes:
            return True
        return self._turn_done and (self.pending > 0 or self.stream_id is not None)
