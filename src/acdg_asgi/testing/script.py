"""What the simulated caller does: the call script and the caller's audio over time.

"Speech" is a 440 Hz tone and a pause is digital silence (see :mod:`.signals`), so any
bot with a voice activity detector can tell them apart. The line never goes quiet:
silence frames flow between utterances and after the last one, as on a phone line.
"""

from __future__ import annotations

import struct
from typing import Any, Final, Literal, NamedTuple

import msgspec

from ..audio import FORMATS, MediaFormat
from ..protocols.audiocodes import Activity
from .conformance import DEFAULT_REPLY_TIMEOUT_MS, DEFAULT_SILENCE_TIMEOUT_MS
from .signals import silence, tone

__all__ = [
    "DEFAULT_CALLEE",
    "DEFAULT_CALLER",
    "DEFAULT_FORMATS",
    "CallScript",
    "CallerTape",
    "Mark",
    "Utterance",
    "read_wav",
]

DEFAULT_CALLER: Final = "+15551230000"
DEFAULT_CALLEE: Final = "+15559870000"
DEFAULT_FORMATS: Final = ("raw/lpcm16", "raw/mulaw")


class Utterance(msgspec.Struct, frozen=True, kw_only=True):
    """One caller turn: ``speech_ms`` of tone, then ``pause_ms`` of silence.

    ``speech_ms=0`` is a pure pause, e.g. to let a greeting play before talking.
    """

    speech_ms: int = 800
    pause_ms: int = 1200


class CallScript(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the simulated VAIC does in one call.

    Times in ``dtmf``, ``activities``, ``barge_in_after_ms``, ``drop_and_resume_at_ms``
    and ``hangup_after_ms`` count from the start of caller audio (``userStream.started``),
    or with ``wait_for_greeting`` from the end of the greeting; ``max_duration_ms`` counts
    from the start of the call::

        CallScript(wait_for_greeting=True, utterances=(Utterance(), Utterance()),
                   dtmf=((500, "12#"),), hangup_after_ms=8000)

    ``start_parameters`` join the ``start`` activity's parameters (SIP headers mapped by
    ``sipHeadersToBot`` arrive there). ``participants`` makes it an agent-assist call: the
    participants are listed in ``start`` (the first one with the caller's number) and each
    has a user stream of its own carrying the same caller audio. ``transfer_status`` is
    what VAIC reports ``transfer_status_after_ms`` after the bot's transfer: ``answered``,
    ``failed`` or ``failed:<reasonCode>`` (e.g. ``failed:busy``); without it VAIC ends the
    call (``session.end`` transferred), as it does by default.
    ``wait_for_greeting``: silence flows until the bot's first play stream has played out
    (judged at playback speed), or ``reply_timeout_ms`` passed without one.
    ``wait_for_answers``: an utterance does not start while the agent's audio plays, nor
    before the answer to the previous one has come (or ``reply_timeout_ms`` passed); the
    script waits, so that it talks over the agent only where ``barge_in_after_ms`` says.
    ``barge_in=False`` is VAIC with barge-in disabled: no caller audio while the bot's
    audio plays (the script pauses meanwhile), and the user stream is stopped after each
    recognition and started again once the answer has played (or ``reply_timeout_ms``
    passed without one). ``reply_timeout_ms`` also bounds how long the bot may take to
    start answering an utterance (else the report's ``failures`` say so).
    """

    conversation_id: str | None = None  # default: a new uuid4
    caller: str = DEFAULT_CALLER
    callee: str = DEFAULT_CALLEE
    bot_name: str = "acdg"
    language: str = "en-US"
    formats: tuple[str, ...] = DEFAULT_FORMATS  # supportedMediaFormats, VAIC's preference order
    utterances: tuple[Utterance, ...] = (Utterance(), Utterance())
    caller_audio: bytes | None = None  # replaces utterances; offer only its format
    tail_ms: int = 2_000  # silence after caller_audio before the script ends
    frame_ms: int = 20
    barge_in_after_ms: int | None = None  # next utterance this long after an agent turn starts
    dtmf: tuple[tuple[int, str], ...] = ()
    activities: tuple[tuple[int, Activity], ...] = ()
    validate_first: bool = False  # connection.validate on a separate socket first
    drop_and_resume_at_ms: int | None = None
    # As VAIC does: when the bot closes the socket without a hangup, reconnect and resume.
    resume_on_close: bool = False
    resume_urls: tuple[str, ...] = ()  # where resumes go, in turn (a load balancer's pick)
    hangup_after_ms: int | None = None  # caller hangs up (session.end client-disconnected)
    start: bool = True  # VAIC's start activity after session.accepted
    start_parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    participants: tuple[str, ...] = ()
    transfer_status: str | None = None
    transfer_status_after_ms: int = 300
    wait_for_hangup: bool = False  # after the script, stay on the line until the bot hangs up
    wait_for_greeting: bool = False
    wait_for_answers: bool = False
    barge_in: bool = True  # VAIC's bargeIn setting
    max_duration_ms: int = 30_000
    silence_timeout_ms: int = DEFAULT_SILENCE_TIMEOUT_MS
    reply_timeout_ms: int = DEFAULT_REPLY_TIMEOUT_MS  # session.accepted, userStream.*ed, answers


    def __post_init__(self) -> None:
        status = (self.transfer_status or "answered").partition(":")[0]
        if status not in ("answered", "failed"):
            raise ValueError(f"transfer_status {self.transfer_status!r}: answered, failed "
                             "or failed:<reasonCode>")

    def start_activity_parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {"caller": self.caller, "callee": self.callee}
        if self.participants:
            params["participants"] = [
                {"participant": name, "uriUser": self.caller if i == 0 else f"{4000 + i}",
                 "uriHost": "sbc.example.com", "displayName": name}
                for i, name in enumerate(self.participants)
            ]
        return {**params, **self.start_parameters}


class Mark(NamedTuple):
    """A caller speech boundary, in audio time (ms since caller audio started).

    ``utterance`` counts spoken utterances from 1 (pure pauses are not counted).
    """

    kind: Literal["speech-start", "speech-end"]
    utterance: int
    at_ms: float


class CallerTape:
    """The caller's side of the line, one frame at a time, as a function of audio time.

    Frames are asked for at ``t_ms = i * frame_ms``; a jump (after a lost socket) skips
    the audio that would have been sent meanwhile, as a real line would lose it.
    """

    def __init__(self, script: CallScript, fmt: MediaFormat) -> None:
        self._fmt = fmt
        self._frame_ms = script.frame_ms
        self._frame_bytes = fmt.frame_bytes(script.frame_ms)
        self.silence = silence(fmt, script.frame_ms)
        if script.caller_audio is not None:
            self._parts = [(script.caller_audio, script.tail_ms)]
        else:
            self._parts = [(tone(fmt, u.speech_ms), u.pause_ms) for u in script.utterances]
        self._index = -1
        self._spoken = 0  # utterances with speech so far
        self._start = 0
        self._next_start = 0.0
        self._speech_ended = True

    def interrupt(self, at_ms: float) -> None:
        """Start the next utterance by ``at_ms`` (not before this one's speech is over)."""
        if self._index + 1 < len(self._parts):
            speech_end = self._start + self._speech_ms(self._index) if self._index >= 0 else 0
            self._next_start = max(speech_end, min(self._next_start, at_ms))

    def speech_due(self, t_ms: int) -> bool:
        """Whether the frame at ``t_ms`` would start the next utterance's speech."""
        following = self._index + 1
        return (following < len(self._parts) and t_ms >= self._next_start
                and bool(self._parts[following][0]))

    def frame(self, t_ms: int) -> tuple[bytes, list[Mark]] | None:
        """The frame starting at ``t_ms`` and the speech boundaries in it; None when done."""
        marks: list[Mark] = []
        if self._index + 1 < len(self._parts) and t_ms >= self._next_start:
            self._end_speech(marks)
            self._index += 1
            self._start = t_ms
            speech, pause = self._parts[self._index]
            self._next_start = t_ms + self._speech_ms(self._index) + pause
            self._speech_ended = not speech
            if speech:
                self._spoken += 1
                marks.append(Mark("speech-start", self._spoken, t_ms))
        elif t_ms >= self._next_start:
            return None
        speech = self._parts[self._index][0]
        offset = self._fmt.frame_bytes(t_ms - self._start)
        chunk = speech[offset : offset + self._frame_bytes]
        if offset + self._frame_bytes >= len(speech):
            self._end_speech(marks)
        return chunk + self.silence[len(chunk) :], marks

    def _speech_ms(self, index: int) -> float:
        return self._fmt.duration_ms(len(self._parts[index][0]))

    def _end_speech(self, marks: list[Mark]) -> None:
        if not self._speech_ended:
            self._speech_ended = True
            end = self._start + self._speech_ms(self._index)
            marks.append(Mark("speech-end", self._spoken, end))


def read_wav(data: bytes) -> tuple[MediaFormat, bytes]:
    """The media format and samples of a mono WAV file (PCM 16-bit or µ-law).

    For ``caller_audio``: offer only the format returned here, since the audio is sent
    as it is. Raises :class:`ValueError` for anything AudioCodes has no token for.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        ident, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if ident == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", data, pos + 8)
        elif ident == b"data":
            if fmt is None:
                raise ValueError("WAV data before its fmt chunk")
            tag, channels, rate, _byte_rate, _align, bits = fmt
            return _wav_format(tag, channels, rate, bits), data[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)
    raise ValueError("WAV file without a data chunk")


def _wav_format(tag: int, channels: int, rate: int, bits: int) -> MediaFormat:
    encoding = {(1, 16): "linear16", (7, 8): "mulaw"}.get((tag, bits))
    for token, fmt in FORMATS.items():
        raw = token.startswith("raw/")
        if raw and channels == 1 and (fmt.encoding, fmt.sample_rate) == (encoding, rate):
            return fmt
    raise ValueError(f"no AudioCodes format for {channels} channel(s), "
                     f"format tag {tag}, {bits} bit, {rate} Hz")
