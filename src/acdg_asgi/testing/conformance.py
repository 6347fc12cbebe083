"""Strict checks of a bot's side of the AudioCodes Bot API, streaming mode.

:class:`ConformanceChecker` is pure: it is fed every frame of a call in both directions
with the time it was seen, plus socket open/close, and never reads a clock. Whoever runs
the sockets calls :meth:`~ConformanceChecker.tick` (its next deadline is
:meth:`~ConformanceChecker.deadline`) so that "no answer" and "dead air" are judged on
time, and :meth:`~ConformanceChecker.finish` at the end.

The bridge itself is tolerant of what VAIC sends; this module is where the protocol
reference (``audiocodes-protocol.md``, Part 2 in particular) is enforced against bots.
Each finding names the offending frame with its audio fields shortened; the same finding
again (same code and message) is counted on the first one rather than repeated.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

from ..audio import FORMATS, MediaFormat, strip_wav_header
from ..protocols.audiocodes import (
    Activities,
    DecodeError,
    SessionEnd,
    SessionInitiate,
    SessionResume,
    UserStreamChunk,
    decode,
    decode_outbound,
)
from .rules import CODES, Finding, Note, Violation, clip_frame, message_findings, parse_bot_frame
from .signals import is_voiced

__all__ = [
    "CODES",
    "DEFAULT_REPLY_TIMEOUT_MS",
    "DEFAULT_SILENCE_TIMEOUT_MS",
    "END_CROSSING_MS",
    "STREAM_IDLE_MS",
    "VALIDATE_TIMEOUT_MS",
    "ConformanceChecker",
    "Note",
    "Sender",
    "Violation",
    "clip_frame",
]

Sender = Literal["vaic", "bot"]
Frame = str | bytes  # a text frame, or bytes of a text or binary frame

VALIDATE_TIMEOUT_MS: Final = 2_000
DEFAULT_REPLY_TIMEOUT_MS: Final = 5_000
DEFAULT_SILENCE_TIMEOUT_MS: Final = 10_000
STREAM_IDLE_MS: Final = 1_000
"""A play stream with no chunk for this long is finished in all but name."""
END_CROSSING_MS: Final = 1_000
"""How long after VAIC's ``session.end`` the chunks and stop of the stream that was open
are taken as crossing it on the wire (sent before the bot could read it), not as sent
outside any stream."""

# Requests VAIC expects an answer to: the code if there is none, and the answers.
_ANSWERS: Final = {
    "connection.validate": ("validate-unanswered", ("connection.validated",)),
    "session.initiate": ("session-unanswered", ("session.accepted", "session.error")),
    "session.resume": ("session-unanswered", ("session.accepted", "session.error")),
    "userStream.start": ("user-stream-unanswered", ("userStream.started",)),
    "userStream.stop": ("user-stream-unanswered", ("userStream.stopped",)),
}
_ANSWERED_BY: Final = {
    answer: tuple(request for request, (_, answers) in _ANSWERS.items() if answer in answers)
    for _, answers in _ANSWERS.values()
    for answer in answers
}
_ENDS_CALL: Final = frozenset({"hangup", "transfer", "handover"})
_BEFORE_ACCEPT: Final = frozenset({"connection.validated", "session.accepted", "session.error"})


def _transfer_failed(activity: dict[str, Any]) -> bool:
    value = activity.get("value")
    return str(activity.get("name", "")).lower() == "transferstatus" \
        and isinstance(value, dict) and value.get("status") == "failed"


def _key(request: str, participant: str | None) -> str:
    return f"{request}/{participant}" if participant else request


class _Pending(msgspec.Struct):
    """A request from VAIC that the bot has to answer by ``due``."""

    due: float
    code: str
    message: str


class ConformanceChecker:
    """Judge one call (every socket of one conversation) frame by frame.

    Usage::

        checker = ConformanceChecker(silence_timeout_ms=10_000)
        checker.socket_opened(t)
        checker.feed("vaic", t, sent_frame)
        checker.feed("bot", t, received_frame)
        checker.tick(now)  # whenever deadline() has passed
        violations = checker.finish(t_end)
    """

    def __init__(
        self,
        *,
        silence_timeout_ms: float = DEFAULT_SILENCE_TIMEOUT_MS,
        reply_timeout_ms: float = DEFAULT_REPLY_TIMEOUT_MS,
        validate_timeout_ms: float = VALIDATE_TIMEOUT_MS,
    ) -> None:
        self.silence_timeout_ms = silence_timeout_ms
        self.reply_timeout_ms = reply_timeout_ms
        self.validate_timeout_ms = validate_timeout_ms
        self.violations: list[Violation] = []
        self.notes: list[Note] = []
        self.offered: tuple[str, ...] = ()
        self.accepted_format: str | None = None
        self._new: list[Violation] = []
        self._seen: dict[tuple[str, str], int] = {}  # (code, message) -> index in violations
        self._pending: dict[str, _Pending] = {}
        self._accepted_here = False  # on the current socket
        self._session_request: str | None = None  # initiate or resume, until answered
        self._up = False  # the call is up: accepted, not ended, no hangup
        self._dead_air_since = 0.0
        self._silence_reported = False
        self._stream_ids: set[str] = set()
        self._open_stream: str | None = None
        self._cut_stream: str | None = None
        self._ended_stream: str | None = None  # open when VAIC sent session.end
        self._ended_at = 0.0
        self._open_stream_frame = ""
        self._last_stream_activity = 0.0

    # --- inputs --------------------------------------------------------------------------

    def socket_opened(self, t_ms: float) -> None:
        self._accepted_here = False

    def socket_closed(self, t_ms: float, *, by: Sender) -> list[Violation]:
        """The socket is gone; ``by`` says who closed it (an abort by VAIC counts as VAIC)."""
        if by == "bot":
            if self._up:  # what was still unanswered follows from this
                self._flag("closed-without-hangup", "bot closed the socket during the call "
                           "without a hangup activity; VAIC would try to resume", None, t_ms)
            else:
                for pending in self._pending.values():
                    self._flag(pending.code, pending.message + " (socket closed)", None, t_ms)
            self._end_stream_at_close(t_ms)
        self._pending.clear()
        # A stream cut by a socket VAIC lost is not the bot's doing: it may go on after a
        # resume, or be dropped in favour of a new one.
        self._cut_stream, self._open_stream = self._open_stream, None
        self._accepted_here = False
        return self._drain()

    def feed(
        self, sender: Sender, t_ms: float, frame: Frame, *, binary: bool | None = None
    ) -> list[Violation]:
        """Take one frame; return the violations it caused.

        ``binary`` defaults to "``frame`` is bytes"; pass ``False`` for text sent as bytes.
        """
        is_binary = isinstance(frame, bytes) if binary is None else binary
        if sender == "vaic":
            self._vaic_frame(t_ms, frame)
        else:
            self._bot_frame(t_ms, frame, is_binary)
        return self._drain()

    def deadline(self) -> float | None:
        """The next time (ms) at which :meth:`tick` may find something."""
        times = [p.due for p in self._pending.values()]
        if self._up and not self._silence_reported:
            times.append(self._dead_air_since + self.silence_timeout_ms)
        return min(times, default=None)

    def tick(self, t_ms: float) -> list[Violation]:
        """Judge deadlines that have passed by ``t_ms``."""
        for key, pending in list(self._pending.items()):
            if t_ms >= pending.due:
                del self._pending[key]
                self._flag(pending.code, pending.message, None, t_ms)
        if self.silence_expired(t_ms) and not self._silence_reported:
            self._silence_reported = True
            self._flag("silence-no-hangup", "nothing from the bot and no caller speech for "
                       f"{self.silence_timeout_ms:.0f} ms, and no hangup", None, t_ms)
        return self._drain()

    def silence_expired(self, t_ms: float) -> bool:
        return self._up and t_ms - self._dead_air_since >= self.silence_timeout_ms

    def finish(self, t_ms: float) -> list[Violation]:
        """End of the call: judge what is still open and return every violation."""
        self.tick(t_ms)
        self._end_stream_at_close(t_ms)
        self._up = False
        self._drain()
        return list(self.violations)

    # --- VAIC side -----------------------------------------------------------------------

    def _vaic_frame(self, t_ms: float, frame: Frame) -> None:
        try:
            message = decode(frame)
        except DecodeError:
            return  # our own frames are not under test
        match message:
            case UserStreamChunk(audio_chunk=audio):
                if self._up and self._voiced(audio):
                    self._dead_air_since = t_ms
                return
            case SessionInitiate(supported_media_formats=formats):
                self.offered = formats
                self._session_request = "session.initiate"
            case SessionResume():
                self._session_request = "session.resume"
            case SessionEnd():
                self._up = False
                self._pending.clear()
                self._ended_stream, self._ended_at = self._open_stream, t_ms
                self._end_stream_at_close(t_ms)
                return
            case Activities(activities=activities) if any(map(_transfer_failed, activities)):
                self._up = True  # VAIC gave the call back to the bot
                self._dead_air_since = t_ms
                return
        request = getattr(type(message).__struct_config__, "tag", None)
        if request in _ANSWERS:
            code, answers = _ANSWERS[request]
            validate = request == "connection.validate"
            within = self.validate_timeout_ms if validate else self.reply_timeout_ms
            # Agent assist: each participant's stream is answered on its own, by name.
            participant = getattr(message, "participant", None)
            whose = f" for participant {participant!r}" if participant else ""
            message_text = f"{request}{whose} not answered with {' or '.join(answers)}" + (
                f" naming {participant!r}" if participant else "")
            self._pending[_key(request, participant)] = _Pending(t_ms + within, code,
                                                                 message_text)

    def _voiced(self, audio: bytes) -> bool:
        fmt = self._caller_format()
        return fmt is not None and is_voiced(strip_wav_header(audio), fmt)

    def _caller_format(self) -> MediaFormat | None:
        for token in (self.accepted_format, *self.offered[:1]):
            if token in FORMATS:
                return FORMATS[token]
        return None

    # --- bot side ------------------------------------------------------------------------

    def _bot_frame(self, t_ms: float, frame: Frame, binary: bool) -> None:
        if self._up:
            self._dead_air_since = t_ms
        parsed = parse_bot_frame(frame, binary=binary)
        if isinstance(parsed, Finding):
            self._flag(parsed.code, parsed.message, frame, t_ms)
            return
        kind, raw = parsed
        if not self._accepted_here and kind not in _BEFORE_ACCEPT:
            self._flag("before-accept", f"{kind} before session.accepted", frame, t_ms)
        before = len(self._new)
        self._check_fields(t_ms, kind, raw, frame)
        if len(self._new) == before:
            try:
                decode_outbound(frame)
            except DecodeError as exc:
                self._flag("malformed-message", f"{kind}: {exc}", frame, t_ms)

    def _check_fields(self, t_ms: float, kind: str, raw: dict[str, Any], frame: Frame) -> None:
        """Judge the message on the raw object, so that broken messages can still be judged."""
        for finding in message_findings(kind, raw):
            if finding.note:
                self._note(finding.code, finding.message, frame, t_ms)
            else:
                self._flag(finding.code, finding.message, frame, t_ms)
        participant = raw.get("participant")
        for request in _ANSWERED_BY.get(kind, ()):
            self._pending.pop(_key(request, participant if isinstance(participant, str)
                                   else None), None)
        match kind:
            case "session.accepted":
                self._session_accepted(t_ms, raw.get("mediaFormat"), frame)
            case "session.error":
                if self._session_request == "session.resume":
                    self._flag("resume-refused", "session.resume answered with session.error",
                               frame, t_ms)
                self._session_request = None
                self._up = False
            case "playStream.start":
                self._stream_start(t_ms, raw, frame)
            case "playStream.chunk" | "playStream.stop":
                self._stream_use(t_ms, kind, raw.get("streamId"), frame)
            case "activities":
                activities = raw.get("activities")
                for activity in activities if isinstance(activities, list) else ():
                    if isinstance(activity, dict) and activity.get("name") in _ENDS_CALL:
                        self._bot_ends_call(t_ms, activity["name"])

    def _session_accepted(self, t_ms: float, media_format: Any, frame: Frame) -> None:
        was_initiate = self._session_request == "session.initiate"
        self._session_request = None
        self._accepted_here = True
        self._up = True
        self._dead_air_since = t_ms
        if media_format is None:
            if was_initiate:
                self._flag("missing-media-format", "session.accepted after session.initiate "
                           "must name the chosen mediaFormat", frame, t_ms)
            return
        if self.offered and media_format not in self.offered:
            self._flag("format-not-offered", f"session.accepted chose {media_format!r}, "
                       f"offered {list(self.offered)}", frame, t_ms)
        if was_initiate:
            self.accepted_format = str(media_format)
        elif self.accepted_format and media_format != self.accepted_format:
            self._note("format-changed-on-resume", f"resume accepted with {media_format!r}, "
                       f"the call began with {self.accepted_format!r}", frame, t_ms)

    def _stream_start(self, t_ms: float, raw: dict[str, Any], frame: Frame) -> None:
        stream_id = raw.get("streamId")
        media_format = raw.get("mediaFormat")
        if media_format is not None and self.offered and media_format not in self.offered:
            self._flag("format-not-offered", f"playStream.start uses {media_format!r}, "
                       f"offered {list(self.offered)}", frame, t_ms)
        if not isinstance(stream_id, str):
            return  # reported as malformed
        if self._open_stream is not None:
            self._flag("overlapping-streams", f"playStream.start {stream_id!r} while "
                       f"{self._open_stream!r} is still open", frame, t_ms)
        if stream_id in self._stream_ids:
            self._flag("duplicate-stream-id", f"streamId {stream_id!r} reused in this conversation",
                       frame, t_ms)
        self._stream_ids.add(stream_id)
        self._open_stream, self._cut_stream = stream_id, None
        self._open_stream_frame = clip_frame(frame)
        self._last_stream_activity = t_ms

    def _stream_use(self, t_ms: float, kind: str, stream_id: Any, frame: Frame) -> None:
        """A chunk or a stop: it must name the open stream."""
        if self._open_stream is None and stream_id is not None and stream_id == self._cut_stream:
            if kind == "playStream.stop":
                self._cut_stream = None
        elif self._open_stream is None and self._crossed_end(t_ms, stream_id):
            if kind == "playStream.stop":
                self._ended_stream = None
        elif self._open_stream is None:
            code = "chunk-outside-stream" if kind == "playStream.chunk" else "stop-outside-stream"
            self._flag(code, f"{kind} with no play stream open", frame, t_ms)
        elif stream_id != self._open_stream:
            self._flag("stream-id-mismatch", f"{kind} for {stream_id!r}, the open stream is "
                       f"{self._open_stream!r}", frame, t_ms)
        elif kind == "playStream.stop":
            self._open_stream = None
        else:
            self._last_stream_activity = t_ms

    def _crossed_end(self, t_ms: float, stream_id: Any) -> bool:
        """Sent for the stream that was open when VAIC ended the call, before the bot
        could have read the ``session.end``: the protocol cannot prevent that."""
        return (stream_id is not None and stream_id == self._ended_stream
                and t_ms - self._ended_at <= END_CROSSING_MS)

    def _bot_ends_call(self, t_ms: float, name: str) -> None:
        if self._open_stream is not None:
            self._flag("unclosed-stream", f"{name} while playStream {self._open_stream!r} "
                       "is still open", self._open_stream_frame, t_ms)
            self._open_stream = None
        self._up = False
        for key in [k for k in self._pending if k.startswith("userStream.")]:
            del self._pending[key]

    # --- bookkeeping -----------------------------------------------------------------------

    def _end_stream_at_close(self, t_ms: float) -> None:
        """The call ended with a stream open: it was unclosed if it had gone quiet."""
        if self._open_stream is not None and t_ms - self._last_stream_activity >= STREAM_IDLE_MS:
            self._flag("unclosed-stream", f"playStream {self._open_stream!r} was never stopped",
                       self._open_stream_frame, t_ms)
        self._open_stream = None

    def _flag(self, code: str, message: str, frame: Frame | None, t_ms: float) -> None:
        index = self._seen.get((code, message))
        if index is not None:  # one cause, many frames: counted on the first finding
            first = self.violations[index]
            self.violations[index] = msgspec.structs.replace(first, count=first.count + 1)
            return
        clipped = None if frame is None else clip_frame(frame)
        violation = Violation(code, message, clipped, t_ms)
        self._seen[(code, message)] = len(self.violations)
        self.violations.append(violation)
        self._new.append(violation)

    def _note(self, code: str, message: str, frame: Frame | None, t_ms: float) -> None:
        clipped = None if frame is None else clip_frame(frame)
        self.notes.append(Note(code, message, clipped, t_ms))

    def _drain(self) -> list[Violation]:
        new, self._new = self._new, []
        return new
