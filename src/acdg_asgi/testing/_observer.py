"""What the simulated VAIC sees during one call: the clock, the report and the checker.

The script driver in :mod:`.vaic` acts; :class:`CallObserver` records every frame both
ways into the :class:`~.report.CallReport`, passes them through the conformance checker,
and wakes the driver whenever something arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import anyio
import msgspec

from ..audio import FORMATS, MediaFormat, strip_wav_header
from ..protocols.audiocodes import (
    Activity,
    ConnectionValidated,
    DecodeError,
    InboundMessage,
    OutboundActivities,
    OutboundMessage,
    PlayStreamChunk,
    PlayStreamStart,
    PlayStreamStop,
    SessionAccepted,
    SessionError,
    UserStreamChunk,
    UserStreamSpeechHypothesis,
    UserStreamSpeechRecognition,
    UserStreamSpeechStarted,
    UserStreamStarted,
    UserStreamStopped,
    decode_outbound,
)
from .conformance import STREAM_IDLE_MS, ConformanceChecker, Note, Sender, Violation
from .report import (
    BargeIn,
    CallerSpeech,
    CallEvent,
    CallReport,
    Direction,
    PlayStream,
    ReceivedActivity,
    Transcript,
    TransferAttempt,
    message_type,
    summarize,
)
from .rules import clip_frame
from .script import CallScript, Mark
from .verdict import judge

__all__ = ["CallObserver", "EventHook"]

EventHook = Callable[[CallEvent], None]

PLAYBACK_JITTER_MS: Final = 40
"""The last this-many ms of a prompt are within playback jitter: talking then is no barge-in."""


class CallObserver:
    """Records and judges one call; times are ms since the observer was made."""

    def __init__(
        self,
        url: str,
        script: CallScript,
        conversation_id: str,
        *,
        on_event: EventHook | None,
        record_audio: bool,
    ) -> None:
        self.script = script
        self.on_event = on_event
        self.record_audio = record_audio
        self.checker = ConformanceChecker(
            silence_timeout_ms=script.silence_timeout_ms, reply_timeout_ms=script.reply_timeout_ms
        )
        self.report = CallReport(
            url=url, conversation_id=conversation_id, offered_formats=script.formats,
            started_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )
        self.ending: str | None = None  # why the call is ending, once it is
        self.answer: SessionAccepted | SessionError | None = None
        self.replies: set[str] = set()
        self.open_stream: PlayStream | None = None
        self.on_agent_turn: Callable[[float], None] | None = None  # first chunk of a stream
        self.status_due: float | None = None  # when to send transferStatus, if it is due
        self.recognitions = 0  # final recognitions received
        self.notes: list[Note] = []  # the driver's, beside the checker's
        self._t0 = anyio.current_time()
        self._changed = anyio.Event()
        self._streams: dict[str, PlayStream] = {}
        self._barge_ins: dict[str, BargeIn] = {}
        self._agent_audio: dict[str, bytearray] = {}
        self._caller_audio = bytearray()
        self._playing: PlayStream | None = None  # the stream whose audio plays last
        self._played_until = 0.0  # when all agent audio received so far has played out

    # --- clock and wake-ups --------------------------------------------------------------

    def now(self) -> float:
        return (anyio.current_time() - self._t0) * 1000

    async def until(self, done: Callable[[], bool], timeout_ms: float) -> bool:
        """Wait until ``done()`` (re-checked whenever a frame arrives) or the timeout."""
        deadline = anyio.current_time() + max(timeout_ms, 0) / 1000
        while not done():
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return False
            with anyio.move_on_after(remaining):
                await self._changed.wait()
        return True

    def poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def tick(self) -> None:
        t = self.now()
        self._violations(self.checker.tick(t))
        if self.ending is None and self.checker.silence_expired(t):
            self.ending = "silence-timeout"

    # --- sockets and what VAIC sends -----------------------------------------------------

    def socket_opened(self, url: str) -> None:
        self.checker.socket_opened(self.now())
        self.event("local", "socket.open", url)

    def socket_closed(self, by: Sender, code: int | None) -> None:
        t = self.now()
        self._violations(self.checker.socket_closed(t, by=by))
        self.event("local", "socket.closed", f"by {by}, code {code}", t)
        if by == "bot" and self.ending is None:
            self.ending = "socket-closed"
        self.poke()

    def sent(self, message: InboundMessage, payload: bytes) -> None:
        t = self.now()
        self._violations(self.checker.feed("vaic", t, payload, binary=False))
        if not isinstance(message, UserStreamChunk):
            self.event("sent", message_type(message), summarize(message), t)

    def caller_frame(self, chunk: bytes, fmt: MediaFormat) -> None:
        report, t = self.report, self.now()
        report.caller_frames += 1
        report.caller_audio_ms += fmt.duration_ms(len(chunk))
        if report.first_frame_ms is None:
            report.first_frame_ms = t
        report.last_frame_ms = t
        if self.record_audio:
            self._caller_audio += chunk

    def caller_marks(self, marks: list[Mark], audio_t0: float) -> None:
        """Caller speech boundaries; talking while the agent's audio plays is a barge-in."""
        for mark in marks:
            t = audio_t0 + mark.at_ms
            if mark.kind == "speech-start":
                self.report.caller_speech.append(CallerSpeech(utterance=mark.utterance, start_ms=t))
                talked_over = self.open_stream or self._playing_at(t)
                if talked_over is not None and talked_over.stream_id not in self._barge_ins:
                    barge_in = BargeIn(stream_id=talked_over.stream_id, talk_ms=t)
                    self._barge_ins[barge_in.stream_id] = barge_in
                    self.report.barge_ins.append(barge_in)
            elif self.report.caller_speech:
                self.report.caller_speech[-1].end_ms = t
            self.event("local", f"caller.{mark.kind}", f"utterance {mark.utterance}", t)

    def agent_talking(self) -> bool:
        """The agent's audio is playing (at playback speed, as VAIC plays it), or a play
        stream is open and still getting audio."""
        now = self.now()
        if now < self._played_until:
            return True
        stream = self.open_stream
        if stream is None:
            return False
        last = stream.chunk_times_ms[-1] if stream.chunk_times_ms else stream.started_ms
        return now - last < STREAM_IDLE_MS

    def waiting_for_answer(self, timeout_ms: float) -> bool:
        """The caller's last utterance has ended, unanswered, less than ``timeout_ms`` ago."""
        speech = self.report.caller_speech
        if not speech or speech[-1].end_ms is None:
            return False
        end = speech[-1].end_ms
        if any(s.started_ms > end for s in self.report.play_streams):
            return False
        return self.now() - end < timeout_ms

    # --- what the bot sends --------------------------------------------------------------

    def received(self, frame: str | bytes) -> None:
        t = self.now()
        self._violations(self.checker.feed("bot", t, frame))
        try:
            if isinstance(frame, bytes):
                raise DecodeError("binary frame")
            message = decode_outbound(frame)
        except DecodeError:
            self.event("received", _frame_type(frame), clip_frame(frame), t)
        else:
            if not isinstance(message, PlayStreamChunk):
                self.event("received", message_type(message), summarize(message), t)
            self._on_message(t, message)
        self.poke()

    def _on_message(self, t: float, message: OutboundMessage) -> None:
        match message:
            case ConnectionValidated():
                self.report.validated = True
            case SessionAccepted() | SessionError():
                self.answer = message
            case UserStreamStarted() | UserStreamStopped():
                self.replies.add(message_type(message))
            case UserStreamSpeechRecognition() | UserStreamSpeechHypothesis():
                final = isinstance(message, UserStreamSpeechRecognition)
                self.report.transcripts.append(Transcript(t, final, message.alternatives))
                self.recognitions += final
                if not final:
                    self._cut(t, "userStream.speech.hypothesis")
            case UserStreamSpeechStarted():
                self._cut(t, "userStream.speech.started")
            case PlayStreamStart(stream_id=sid, media_format=fmt, alt_text=alt):
                stream = PlayStream(stream_id=sid, media_format=fmt or "", alt_text=alt,
                                    started_ms=t)
                self.report.play_streams.append(stream)
                transfers = self.report.transfers
                if transfers and transfers[-1].status == "failed" \
                        and transfers[-1].spoke_again_ms is None:
                    transfers[-1].spoke_again_ms = t
                self._streams[sid] = self.open_stream = stream
            case PlayStreamChunk(stream_id=sid, audio_chunk=audio):
                self._on_chunk(t, sid, audio)
            case PlayStreamStop(stream_id=sid):
                if (stopped := self._streams.get(sid)) is not None:
                    stopped.stopped_ms = t
                if self.open_stream is stopped:
                    self.open_stream = None
                if stopped is not None:
                    self._cut(t, "playStream.stop", stopped)
            case OutboundActivities(activities=activities):
                for activity in activities:
                    self._on_activity(t, activity)

    def _on_chunk(self, t: float, stream_id: str, audio: bytes) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # the checker has flagged it
        fmt = FORMATS.get(stream.media_format)
        if fmt is not None and fmt.wav:
            audio = strip_wav_header(audio)
        ms = fmt.duration_ms(len(audio)) if fmt is not None else 0.0
        if stream.first_chunk_ms is None:
            stream.first_chunk_ms = t
            if self.on_agent_turn is not None:
                self.on_agent_turn(t)
        stream.chunks += 1
        stream.audio_ms += ms
        stream.chunk_times_ms.append(t)
        barge_in = self._barge_ins.get(stream_id)
        if barge_in is None or barge_in.stopped_ms is None:  # audio after a cut is not played
            self._played_until = max(self._played_until, t) + ms
            stream.played_until_ms = self._played_until
            self._playing = stream
        if (barge_in := self._barge_ins.get(stream_id)) and barge_in.stopped_ms is None:
            barge_in.agent_audio_after_ms += ms
        if self.record_audio:
            self._agent_audio.setdefault(stream_id, bytearray()).extend(audio)

    def _playing_at(self, t: float) -> PlayStream | None:
        """The stream whose audio is still playing at ``t``, beyond playback jitter."""
        return self._playing if self._played_until - t > PLAYBACK_JITTER_MS else None

    def _cut(self, t: float, by: str, stream: PlayStream | None = None) -> None:
        """The bot cut the agent off: a barge-in in progress ends, and playback with it."""
        stream = stream or self._playing_at(t) or self.open_stream
        barge_in = self._barge_ins.get(stream.stream_id) if stream is not None else None
        if barge_in is None or barge_in.stopped_ms is not None or barge_in.talk_ms > t:
            return
        barge_in.stopped_ms, barge_in.cut_by = t, by
        if stream is self._playing:
            self._played_until = min(self._played_until, t)
        if stream is not None and stream.played_until_ms is not None:
            stream.played_until_ms = min(stream.played_until_ms, t)

    def _on_activity(self, t: float, activity: Activity) -> None:
        self.report.activities.append(ReceivedActivity(t, activity))
        if activity.name == "hangup":
            params = activity.activity_params or {}
            if self.ending is None:  # the hangup that ends the call, not a later one
                self.report.hangup_reason = params.get("hangupReason")
            self.ending = self.ending or "bot-hangup"
        elif activity.name in {"transfer", "handover"}:
            target = (activity.activity_params or {}).get("transferTarget")
            self.report.transfers.append(TransferAttempt(
                t_ms=t, target=target if isinstance(target, str) else None))
            if self.script.transfer_status is None:
                self.ending = self.ending or "transfer"
            else:
                self.status_due = t + self.script.transfer_status_after_ms

    # --- the end -------------------------------------------------------------------------

    def finish(self, ended_by: str) -> CallReport:
        report, t = self.report, self.now()
        self.checker.finish(t)
        report.violations = list(self.checker.violations)
        report.notes = [*self.checker.notes, *self.notes]
        report.duration_ms = t
        report.ended_by = ended_by
        self.event("local", "call.ended", ended_by, t)
        report.timeline.sort(key=lambda e: e.t_ms)
        report.compute_latencies()
        if ended_by != "validate":
            report.failures = judge(report, reply_timeout_ms=self.script.reply_timeout_ms)
        if self.record_audio:
            report.caller_audio = bytes(self._caller_audio)
            for stream in report.play_streams:
                stream.audio = bytes(self._agent_audio.get(stream.stream_id, b""))
        return report

    def event(self, direction: Direction, kind: str, summary: str, t: float | None = None) -> None:
        event = CallEvent(self.now() if t is None else t, direction, kind, summary)
        self.report.timeline.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def _violations(self, violations: list[Violation]) -> None:
        for v in violations:
            self.event("local", "violation", f"{v.code}: {v.message}", v.t_ms)


def _frame_type(frame: str | bytes) -> str:
    if isinstance(frame, bytes):
        return "<binary>"
    try:
        raw = msgspec.json.decode(frame)
    except msgspec.DecodeError:
        return "<invalid json>"
    kind = raw.get("type") if isinstance(raw, dict) else None
    return kind if isinstance(kind, str) else "<no type>"
