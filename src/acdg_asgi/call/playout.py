"""The playout clock: agent audio out to VAIC at playback rate, a small lead ahead.

The agent synthesises faster than real time. Forwarding at once would fill VAIC's play
buffer with seconds of speech the bridge can no longer take back when the caller barges
in. Instead :class:`PlayoutClock` keeps the audio and releases it chunk by chunk so that what
was sent is never more than ``lead`` ahead of what has played:

    play_head = when the audio sent so far will have finished playing
    send the next chunk when it ends no more than ``lead`` after now
    (or at once, when everything sent has already played)

Each agent utterance gets a play stream of its own (start, chunks, stop), even when the
next one is queued before the previous one has played out. On barge-in the unsent rest
is dropped, the stream is stopped and the clock resets in the same step, so the caller
hears at most ``lead`` of the interrupted turn.

When the bridge itself stalls (its event loop blocked for longer than the lead), the
caller hears silence and the audio meant for that time arrives late, all at once.
Playing it at real time from then on would carry the stall as a delay for the rest of
the stream; instead, as a phone line drops late packets, the open stream skips what is
late beyond the lead (:meth:`stalled`), counted in ``CallStats.play_bytes_late``. Gaps
the agent causes (audio that simply comes late) are not skipped: they are the agent's
pauses.

Pure: no clock is read here; every method takes ``now`` (seconds) and the owner asks
:meth:`next_deadline` when to call :meth:`pull` again.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import msgspec

from ..audio import MediaFormat, wav_header
from ..interned import SMALL_COUNT, interned
from ..protocols.audiocodes import OutboundMessage, PlayStreamChunk, PlayStreamStart, PlayStreamStop
from .stats import CallStats

__all__ = ["BY_DTMF", "BY_SPEECH", "Cut", "PlayoutClock", "split_heard"]

# What may cut an utterance short (a bit each): the caller's speech, a key.
BY_SPEECH = 1
BY_DTMF = 2

# Audio already sent that the buffer may still hold before it is compacted (a copy of
# what is left): while the buffer overflows, at most this beyond max_buffer.
_SLACK = 65536
_LATE_WINDOW_S = 0.5  # after a stall, audio arriving this soon was held up by it


class Cut(msgspec.Struct, frozen=True):
    """What a barge-in found: how much of the turn went out, played, and was dropped.

    ``tag`` is the interrupted utterance's (see :meth:`PlayoutClock.begin`), ``heard`` the
    share of its audio that had played (0..1), and ``unplayed`` the tags of utterances
    queued behind it, dropped before any of them played.
    """

    sent_ms: float
    heard_ms: float
    dropped_ms: float
    tag: int | None = None
    heard: float = 0.0
    unplayed: tuple[int, ...] = ()


class _Utterance:
    """One agent utterance in the queue: its text, where its audio ends once known, and
    what may cut it short."""

    __slots__ = ("alt_text", "cut_by", "end", "tag")

    def __init__(self, alt_text: str | None, tag: int | None = None,
                 cut_by: int = BY_SPEECH) -> None:
        self.alt_text = alt_text
        self.tag = tag  # the owner's handle on it (the transcript entry)
        self.end: int | None = None  # absolute byte position; None while audio still comes
        self.cut_by = cut_by


def split_heard(text: str, share: float) -> tuple[str, str]:
    """``text`` cut where ``share`` (0..1) of it was spoken, at a word boundary: a word
    counts as heard when its middle was."""
    if share >= 1.0:
        return text, ""
    spoken = share * len(text)
    end = 0
    for word_start, word in _words(text):
        if word_start + len(word) / 2 > spoken:
            break
        end = word_start + len(word)
    return text[:end], text[end:].strip()


def _words(text: str) -> list[tuple[int, str]]:
    out, pos = [], 0
    for word in text.split():
        pos = text.index(word, pos)
        out.append((pos, word))
        pos += len(word)
    return out


class _PlayoutFramePath:
    # What pass_through reads, first in the object (see machine._CallFramePath).
    __slots__ = ("_chunk_s", "_due_ahead", "_passed", "_steady", "chunk_bytes", "play_head",
                 "stream_id")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _moves(
    method: Callable[Concatenate[PlayoutClock, _P], _R],
) -> Callable[Concatenate[PlayoutClock, _P], _R]:
    """For what changes the state :meth:`PlayoutClock.pass_through` looks at: the chunks
    it passed are counted first (it leaves the positions to count as well), and whether
    it may go on is worked out after."""
    @functools.wraps(method)
    def moving(self: PlayoutClock, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        self.count_passed()
        try:
            return method(self, *args, **kwargs)
        finally:
            queue = self._queue
            self._steady = self.stream_id is not None and not self._buf and not self._late \
                and len(queue) == 1 and queue[0].end is None
    return moving


class PlayoutClock(_PlayoutFramePath):
    """One call's agent audio: a bounded buffer, a play stream at a time, and the clock.

    Positions in the buffer are absolute (bytes since the call began), so utterance
    boundaries survive compaction and overflow drops.
    """

    # Slots: a call's state in fewer places for the cache.
    __slots__ = ("_buf", "_late", "_late_until", "_next_stream_id", "_off", "_queue", "_read",
                 "_width", "bytes_per_s", "fmt", "lead", "max_buffer", "participant",
                 "sent_bytes", "stats", "target_player")

    def __init__(
        self,
        fmt: MediaFormat,
        *,
        lead_ms: int,
        chunk_ms: int,
        max_buffer_ms: int,
        next_stream_id: Callable[[], str],
        stats: CallStats | None = None,
        participant: str | None = None,
        target_player: str | None = None,
    ) -> None:
        self.fmt = fmt
        self.lead = lead_ms / 1000
        self.chunk_bytes = interned(fmt.frame_bytes(chunk_ms))
        self._width = fmt.sample_width
        self.bytes_per_s = fmt.sample_rate * fmt.sample_width
        self.max_buffer = fmt.frame_bytes(max_buffer_ms)
        self._next_stream_id = next_stream_id
        self.stats = stats or CallStats()
        self.participant = participant  # on every playStream.start, when set
        self.target_player = target_player
        self._buf = bytearray()
        self._off = 0  # read offset into _buf
        self._read = 0  # absolute position of _buf[_off]
        self._queue: deque[_Utterance] = deque()
        self.stream_id: str | None = None
        self.play_head = 0.0  # when everything sent so far will have played
        self.sent_bytes = 0  # in the open stream
        self._late = 0  # bytes of the open stream that a stall made late: to skip
        self._late_until = 0.0
        self._passed = 0  # chunks pass_through sent, not yet counted (count_passed)
        # Open, one utterance whose audio goes on, nothing waiting or late: the state
        # in which pass_through may send, kept by what changes it (_moves), so that the
        # frame reads one flag rather than the buffer, the queue and the utterance.
        self._steady = False
        # For pass_through: a chunk's duration, and how far the play head may be ahead
        # of now for a chunk to be due (as _due decides).
        self._chunk_s = interned(self.chunk_bytes / self.bytes_per_s)
        self._due_ahead = interned(max(0.0, self.lead + 1e-9 - self._chunk_s)
                                   if self.lead else math.inf)

    # --- inputs -----------------------------------------------------------------------

    @_moves
    def begin(self, alt_text: str | None, tag: int | None = None, cut_by: int = BY_SPEECH
              ) -> None:
        """A new agent utterance starts (its text arrives before its audio). ``alt_text``
        goes on its play stream; ``tag`` comes back in a :class:`Cut`; ``cut_by``: what may
        cut it short (:data:`BY_SPEECH`, :data:`BY_DTMF`, both or neither)."""
        last = self._queue[-1] if self._queue else None
        if last is not None and last.end is None:
            if self._written > self._utterance_start(last):
                last.end = self._written  # the agent moved on without AgentAudioDone
            else:  # no audio yet: it is this one
                last.alt_text, last.tag, last.cut_by = alt_text, tag, cut_by
                return
        self._queue.append(_Utterance(alt_text, tag, cut_by))

    @_moves
    def push(self, audio: bytes) -> int:
        """Queue agent audio. Returns how many bytes of older audio were dropped to fit."""
        if not self._queue or self._queue[-1].end is not None:
            self._queue.append(_Utterance(None))
        self._buf += audio
        over = len(self._buf) - self._off - self.max_buffer
        if over <= 0:
            return 0
        over += -over % self.fmt.sample_width
        self._skip(over)
        if self._off > _SLACK:  # full and dropping: a copy of what is left, which frees
            self._buf = self._buf[self._off :]  # the rest (del would keep the allocation)
            self._off = 0
        self.stats.play_bytes_dropped += over
        return over

    @_moves
    def end_turn(self) -> None:
        """The agent finished this utterance's audio: stop its stream once it is sent."""
        if self._queue and self._queue[-1].end is None:
            last = self._queue[-1]
            if self._utterance_start(last) == self._written and last is not self._streaming:
                self._queue.pop()  # it never had audio: nothing to play or stop
            else:
                last.end = self._written

    @_moves
    def cut(self, now: float) -> tuple[Cut, PlayStreamStop | None]:
        """Barge-in: drop what was not sent, stop the stream, reset the clock."""
        sent_ms = self.fmt.duration_ms(self.sent_bytes)
        ahead_s = max(0.0, self.play_head - now)
        heard_ms = max(0.0, sent_ms - ahead_s * 1000)
        tag, heard = None, 0.0
        unplayed: tuple[int, ...] = ()
        if self._queue and self.speaking:
            head = self._queue[0]
            # The utterance's length: where it ends, or all of it received so far.
            length = (head.end if head.end is not None else self._written) \
                - (self._read - self.sent_bytes)
            length_ms = self.fmt.duration_ms(max(0, length))
            tag, heard = head.tag, min(1.0, heard_ms / length_ms) if length_ms else 0.0
            unplayed = tuple(u.tag for u in list(self._queue)[1:] if u.tag is not None)
        cut = Cut(
            sent_ms=sent_ms,
            heard_ms=heard_ms,
            dropped_ms=self.fmt.duration_ms(self.pending),
            tag=tag, heard=heard, unplayed=unplayed,
        )
        stop = PlayStreamStop(stream_id=self.stream_id) if self.stream_id else None
        self.clear()
        self.play_head = now
        return cut, stop

    @_moves
    def clear(self) -> None:
        """Forget queued audio and any open stream, without sending anything."""
        self._skip(self.pending)
        self._queue.clear()
        self.stream_id = None
        self.sent_bytes = 0
        self._late = 0

    @_moves
    def stalled(self, now: float, seconds: float) -> bool:
        """The bridge did not run for ``seconds`` until ``now``: of the open stream, skip
        what the caller should have heard meanwhile beyond the lead, from the audio
        waiting here or arriving within half a second. ``True`` if anything is to go."""
        late = seconds - self.lead
        if late <= 0 or self.stream_id is None:
            return False
        size = self.fmt.frame_bytes(int(late * 1000))
        self._late = size - size % self.chunk_bytes  # whole chunks, as a line drops packets
        self._late_until = now + _LATE_WINDOW_S
        return self._late > 0

    @_moves
    def detach(self) -> None:
        """VAIC's socket is gone and its play stream with it; keep the audio queued."""
        self.stream_id = None
        self.sent_bytes = 0

    # --- outputs ----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._buf) - self._off

    @property
    def held(self) -> int:
        """The memory the buffer takes: :attr:`pending`, sent audio not yet let go, and
        the allocator's room to grow."""
        return self._buf.__alloc__()

    @property
    def speaking(self) -> bool:
        return self.stream_id is not None or self.pending > 0

    def cuttable(self, by: int) -> bool:
        """May ``by`` (:data:`BY_SPEECH` or :data:`BY_DTMF`) cut the utterance playing?"""
        return not self._queue or bool(self._queue[0].cut_by & by)

    @property
    def settled(self) -> bool:
        """No utterance open or queued: the agent's words are all out (they may still be
        playing until :attr:`play_head`)."""
        return not self._queue

    def idle(self, now: float) -> bool:
        """The agent's words have all been heard by ``now``."""
        return not self._queue and self.play_head <= now

    def next_deadline(self) -> float | None:
        """When :meth:`pull` will have something to send, or ``None`` if only input will."""
        self.count_passed()
        if not self._queue or (self._queue[0].end is None and len(self._buf) == self._off):
            return None  # the usual case between agent frames: all sent, more to come
        size = self._next_size()
        if size is None:
            # A short chunk waiting for the rest goes once the audio already sent has played.
            return self.play_head if self._next_size(partial_ok=True) else None
        if not self.lead or size == 0:
            return 0.0  # due now
        return self.play_head + size / self.bytes_per_s - self.lead

    def pass_through(self, audio: bytes, now: float) -> PlayStreamChunk | None:
        """The steady state, as :meth:`push` then :meth:`pull` but without the copies:
        a stream is open, nothing is waiting, and ``audio`` is one chunk that is due now.
        The chunk to send; ``None`` (nothing done) otherwise."""
        stream_id = self.stream_id
        if stream_id is None or not self._steady or len(audio) != self.chunk_bytes:
            return None
        head = self.play_head
        if head - now > self._due_ahead:
            return None  # not due yet (as _due, inline: this runs for every chunk)
        self.play_head = (head if head > now else now) + self._chunk_s
        passed = self._passed + 1  # a small integer: counted in bulk (count_passed)
        self._passed = passed
        if passed == SMALL_COUNT:
            self.count_passed()
        return PlayStreamChunk(stream_id=stream_id, audio_chunk=audio)

    def count_passed(self) -> None:
        """Count the chunks :meth:`pass_through` sent, each one agent frame and one play
        chunk of ``chunk_bytes``, in the positions and the stats. It leaves them to
        whoever reads those (the clock's other methods, :attr:`Call.stats
        <acdg_asgi.call.Call.stats>`): six counters fewer per frame, each an integer
        object of its own that the frame would have to fetch."""
        if passed := self._passed:
            self._passed = 0
            stats, n = self.stats, passed * self.chunk_bytes
            self._read += n
            self.sent_bytes += n
            stats.agent_frames += passed
            stats.agent_bytes += n
            stats.play_chunks += passed
            stats.play_bytes += n

    @_moves
    def pull(self, now: float, out: list[OutboundMessage]) -> None:
        """Append to ``out`` every message due at ``now``."""
        if self._late:
            self._skip_late(now)
        while (size := self._next_size(partial_ok=self.play_head <= now)) is not None:
            utterance = self._queue[0]
            if size == 0:  # this utterance is all sent
                if self.stream_id is not None:
                    out.append(PlayStreamStop(stream_id=self.stream_id))
                    self.stream_id = None
                self._queue.popleft()
                # an odd byte, or nothing: an overflow may have dropped past the end
                self._skip(max(0, utterance.end - self._read) if utterance.end else 0)
                continue
            duration = size / self.bytes_per_s
            if not self._due(duration, now):
                return
            chunk = bytes(self._buf[self._off : self._off + size])
            self._skip(size)
            if self.stream_id is None:
                self.stream_id = self._next_stream_id()
                self.sent_bytes = 0
                out.append(PlayStreamStart(
                    stream_id=self.stream_id, media_format=self.fmt.token,
                    alt_text=utterance.alt_text, participant=self.participant,
                    target_player=self.target_player))
                if self.fmt.wav:
                    chunk = wav_header(self.fmt) + chunk
            self._sent(size, duration, now)
            out.append(PlayStreamChunk(stream_id=self.stream_id, audio_chunk=chunk))
            if len(self._buf) == self._off and self._queue[0].end is None:
                return  # all sent and the turn goes on (the usual case): nothing else is due

    # --- internals --------------------------------------------------------------------

    def _skip_late(self, now: float) -> None:
        """Skip late audio of the open stream (see :meth:`stalled`): the whole chunks of it
        that are here."""
        if now > self._late_until or self.stream_id is None or not self._queue:
            self._late = 0
            return
        end = self._queue[0].end
        here = (end - self._read) if end is not None else self.pending
        n = min(self._late, here - here % self.chunk_bytes)
        if n > 0:
            self._skip(n)
            self._late -= n
            self.stats.play_bytes_late += n

    def _due(self, duration: float, now: float) -> bool:
        """May a chunk this long go at ``now``: does it end within the lead?"""
        head = self.play_head
        return not self.lead or head <= now or head + duration - now <= self.lead + 1e-9

    def _sent(self, size: int, duration: float, now: float) -> None:
        self.sent_bytes += size
        self.stats.play_chunks += 1
        self.stats.play_bytes += size
        self.play_head = max(self.play_head, now) + duration

    @property
    def _streaming(self) -> _Utterance | None:
        return self._queue[0] if self.stream_id is not None and self._queue else None

    @property
    def _written(self) -> int:
        return self._read + self.pending

    def _utterance_start(self, utterance: _Utterance) -> int:
        start = self._read
        for u in self._queue:
            if u is utterance:
                return start
            start = u.end if u.end is not None else start
        return start

    def _next_size(self, partial_ok: bool = False) -> int | None:
        """Bytes of the next chunk; 0 when the head utterance is done; None to wait.

        A chunk shorter than ``chunk_ms`` goes only at the end of an utterance, or with
        ``partial_ok`` (everything sent has played: better a short chunk than a gap)."""
        if not self._queue:
            return None
        end = self._queue[0].end
        if end is None:  # more audio is coming
            available = len(self._buf) - self._off
            if available >= self.chunk_bytes:
                return self.chunk_bytes
            if not partial_ok:
                return None  # wait for a whole chunk while the utterance goes on
            size = available - available % self._width
            return size or None
        size = max(0, min(self.chunk_bytes, end - self._read))
        return size - size % self._width

    def _skip(self, n: int) -> None:
        self._off += n
        self._read += n
        if self._off == len(self._buf):  # all sent: free it (the usual case, and no copy)
            self._buf = bytearray()
            self._off = 0
        elif self._off > _SLACK and self._off * 2 > len(self._buf):
            del self._buf[: self._off]
            self._off = 0
