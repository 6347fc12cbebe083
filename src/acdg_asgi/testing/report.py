"""What one simulated call observed, as plain Structs that round-trip through JSON.

Times are milliseconds since the call began (before the first socket was opened).
The timeline leaves out audio chunks: caller audio is summarised in ``caller_*`` fields
and agent audio per play stream in :class:`PlayStream`.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ..protocols.audiocodes import (
    Activities,
    Activity,
    Alternative,
    ConnectionValidate,
    InboundMessage,
    OutboundActivities,
    OutboundMessage,
    PlayStreamStart,
    PlayStreamStop,
    SessionAccepted,
    SessionEnd,
    SessionError,
    SessionInitiate,
    UserStreamSpeechHypothesis,
    UserStreamSpeechRecognition,
)
from .rules import Failure, Note, Violation

__all__ = [
    "BargeIn",
    "CallEvent",
    "CallReport",
    "CallerSpeech",
    "Direction",
    "Latency",
    "PlayStream",
    "ReceivedActivity",
    "Transcript",
    "TransferAttempt",
    "message_type",
    "summarize",
]

Direction = Literal["sent", "received", "local"]


class CallEvent(msgspec.Struct, frozen=True):
    """One line of the timeline: a message sent or received, or something local."""

    t_ms: float
    direction: Direction
    type: str
    summary: str = ""


class Transcript(msgspec.Struct, frozen=True):
    t_ms: float
    final: bool  # recognition (True) or hypothesis (False)
    alternatives: tuple[Alternative, ...]

    @property
    def text(self) -> str:
        return self.alternatives[0].text if self.alternatives else ""


class PlayStream(msgspec.Struct, kw_only=True):
    """One agent utterance as VAIC received it."""

    stream_id: str
    media_format: str
    alt_text: str | None = None
    started_ms: float
    first_chunk_ms: float | None = None
    stopped_ms: float | None = None
    chunks: int = 0
    audio_ms: float = 0.0
    chunk_times_ms: list[float] = msgspec.field(default_factory=list)
    # When its audio had played out at real time (or was cut by a barge-in), as VAIC plays.
    played_until_ms: float | None = None
    audio: bytes | None = None  # with record_audio; WAV header stripped


class CallerSpeech(msgspec.Struct, kw_only=True):
    """When one caller utterance was on the line (the tone, not the pause after it)."""

    utterance: int
    start_ms: float
    end_ms: float | None = None


class BargeIn(msgspec.Struct, kw_only=True):
    """The caller started talking while the agent's audio was playing.

    "Playing" is judged at playback speed, as VAIC plays it, not by the wire: a prompt
    sent in one chunk plays on after its ``playStream.stop``. The bot cuts it with a
    ``playStream.stop`` of that stream or its ``userStream.speech.started`` (or
    ``hypothesis``), whichever comes first after ``talk_ms``: that is ``stopped_ms``,
    and ``cut_by`` names the message.
    """

    stream_id: str
    talk_ms: float  # when the caller started talking over the agent
    stopped_ms: float | None = None  # when the bot cut the agent off
    cut_by: str | None = None
    agent_audio_after_ms: float = 0.0  # agent audio received after talk_ms

    @property
    def reaction_ms(self) -> float | None:
        return None if self.stopped_ms is None else self.stopped_ms - self.talk_ms


class Latency(msgspec.Struct, frozen=True):
    """End of a caller utterance to the first audio of the agent's next play stream.

    Utterances are numbered from 1, counting only those with speech.
    """

    utterance: int
    speech_end_ms: float
    first_chunk_ms: float
    latency_ms: float
    stream_id: str


class TransferAttempt(msgspec.Struct, kw_only=True):
    """The bot transferred the call; what VAIC answered, and what the bot did next."""

    t_ms: float
    target: str | None
    status: str | None = None  # what VAIC reported (transferStatus), if anything
    reason_code: str | None = None
    status_ms: float | None = None
    spoke_again_ms: float | None = None  # first play stream after a failed transfer

    @property
    def back_to_caller_ms(self) -> float | None:
        """A failed transfer to the bot's voice again."""
        if self.status_ms is None or self.spoke_again_ms is None:
            return None
        return self.spoke_again_ms - self.status_ms


class ReceivedActivity(msgspec.Struct, frozen=True):
    t_ms: float
    activity: Activity


class CallReport(msgspec.Struct, kw_only=True):
    """Everything one call observed; ``violations`` is the conformance verdict."""

    url: str
    conversation_id: str
    started_at: str = ""  # wall clock, ISO 8601 UTC
    offered_formats: tuple[str, ...] = ()
    media_format: str | None = None  # from session.accepted
    refused_reason: str | None = None  # session.error answering session.initiate
    connect_error: str | None = None
    validated: bool | None = None  # None: connection.validate not sent
    resumed: bool | None = None  # None: no resume attempted
    resume_gaps_ms: list[float] = msgspec.field(default_factory=list)  # socket lost -> accepted
    ended_by: str = ""
    hangup_reason: str | None = None  # of the hangup that ended the call
    duration_ms: float = 0.0
    caller_frames: int = 0
    caller_audio_ms: float = 0.0
    first_frame_ms: float | None = None
    last_frame_ms: float | None = None
    caller_speech: list[CallerSpeech] = msgspec.field(default_factory=list)
    timeline: list[CallEvent] = msgspec.field(default_factory=list)
    transcripts: list[Transcript] = msgspec.field(default_factory=list)
    play_streams: list[PlayStream] = msgspec.field(default_factory=list)
    barge_ins: list[BargeIn] = msgspec.field(default_factory=list)
    latencies: list[Latency] = msgspec.field(default_factory=list)
    activities: list[ReceivedActivity] = msgspec.field(default_factory=list)
    transfers: list[TransferAttempt] = msgspec.field(default_factory=list)
    violations: list[Violation] = msgspec.field(default_factory=list)  # the protocol verdict
    failures: list[Failure] = msgspec.field(default_factory=list)  # did the call work?
    notes: list[Note] = msgspec.field(default_factory=list)
    caller_audio: bytes | None = None  # with record_audio, without WAV header

    @property
    def ok(self) -> bool:
        """Connected, accepted, the call worked (no failures) and no violations."""
        return self.conformant and not self.failures

    @property
    def conformant(self) -> bool:
        """Connected, accepted and no protocol violations: the protocol verdict alone."""
        return self.connect_error is None and self.refused_reason is None and not self.violations

    def to_json(self, *, indent: int = 0) -> str:
        data = msgspec.json.encode(self)
        return (msgspec.json.format(data, indent=indent) if indent else data).decode()

    @classmethod
    def from_json(cls, data: str | bytes) -> CallReport:
        return msgspec.json.decode(data, type=cls)

    def compute_latencies(self) -> None:
        """Fill ``latencies``: each utterance answered by a stream before the next one."""
        streams = sorted(
            (s for s in self.play_streams if s.first_chunk_ms is not None),
            key=lambda s: s.first_chunk_ms or 0.0,
        )
        self.latencies = []
        for i, speech in enumerate(self.caller_speech):
            if speech.end_ms is None:
                continue
            limit = next((s.start_ms for s in self.caller_speech[i + 1 :]), float("inf"))
            for stream in streams:
                first = stream.first_chunk_ms or 0.0
                if speech.end_ms < first < limit:
                    latency = first - speech.end_ms
                    self.latencies.append(
                        Latency(speech.utterance, speech.end_ms, first, latency, stream.stream_id)
                    )
                    break


def message_type(message: InboundMessage | OutboundMessage) -> str:
    return str(type(message).__struct_config__.tag)


def summarize(message: InboundMessage | OutboundMessage) -> str:
    """A short, audio-free description of a message for the timeline."""
    match message:
        case SessionInitiate(supported_media_formats=formats):
            return "formats " + ",".join(formats)
        case SessionAccepted(media_format=fmt):
            return f"mediaFormat {fmt}"
        case SessionError(reason=reason):
            return reason
        case SessionEnd(reason_code=code, reason=reason):
            return f"{code} ({reason})"
        case PlayStreamStart(stream_id=sid, media_format=fmt, alt_text=alt):
            return f"{sid} {fmt}" + (f" {alt!r}" if alt else "")
        case PlayStreamStop(stream_id=sid):
            return sid
        case UserStreamSpeechRecognition() | UserStreamSpeechHypothesis():
            return " | ".join(_alternative(a) for a in message.alternatives)
        case Activities(activities=activities):
            return ", ".join(_activity(a) for a in activities)
        case OutboundActivities(activities=activities):
            return ", ".join(_activity(msgspec.to_builtins(a)) for a in activities)
        case ConnectionValidate():
            return ""
    return ""


def _alternative(alternative: Alternative) -> str:
    confidence = alternative.confidence
    if confidence is None:
        return repr(alternative.text)
    if isinstance(confidence, str):
        return f"{alternative.text!r} ({confidence})"
    return f"{alternative.text!r} ({confidence:.2f})"


def _activity(activity: dict[str, Any]) -> str:
    name = activity.get("name") or activity.get("type", "?")
    detail = activity.get("value", activity.get("activityParams"))
    return f"{name} {msgspec.json.encode(detail).decode()}" if detail is not None else str(name)
