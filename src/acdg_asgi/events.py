"""Application events: what a call tells the application, as frozen Structs.

Handlers are registered by event name (the predecessor's names, kept for migration) or
by class; :data:`EVENT_NAMES` maps one to the other, and an unknown name is an error at
registration, not a silent no-op.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .protocols.deepgram import FunctionCall

__all__ = [
    "EVENT_NAMES",
    "AgentAudioDoneEvent",
    "AgentReconnectedEvent",
    "AgentThinkingEvent",
    "BridgeErrorEvent",
    "CallRecord",
    "ConversationTextEvent",
    "DtmfEvent",
    "Event",
    "FunctionCall",
    "FunctionCallCancelledEvent",
    "FunctionCallRequestEvent",
    "InboundActivityEvent",
    "PromptUpdatedEvent",
    "SessionEndEvent",
    "SessionResumedEvent",
    "SessionStartEvent",
    "SpeakUpdatedEvent",
    "ThinkUpdatedEvent",
    "TranscriptLine",
    "UserStartedSpeakingEvent",
    "WarningEvent",
]


# --- payloads ------------------------------------------------------------------------------


class TranscriptLine(msgspec.Struct, frozen=True):
    """One spoken turn of the transcript: who (``user`` or ``assistant``) and what."""

    role: str
    content: str


class CallRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The whole call in one summary, handed over with ``session_end``.

    ``acdg serve --records calls.jsonl`` writes them as JSON lines; applications get the
    same object as ``SessionEndEvent.record`` (a CRM note, a billing line, a QA sample).
    """

    conversation_id: str
    session_id: str
    caller: str | None
    bot_name: str | None
    media_format: str
    started_at: str  # ISO 8601, UTC
    ended_at: str
    duration_s: float
    end_reason: str
    reason_code: str | None = None
    detail: str | None = None
    turns: int
    transcript: tuple[TranscriptLine, ...]
    function_calls: int
    agent_latency_p50_ms: float | None
    agent_latency_max_ms: float | None
    barge_ins: int
    resumes: int
    agent_reconnects: int
    warnings: int
    errors: int
    caller_audio_s: float
    agent_audio_s: float

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)


# --- events --------------------------------------------------------------------------------


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every event. ``at`` is the bridge's monotonic clock, in seconds."""

    session_id: str
    conversation_id: str
    at: float


class SessionStartEvent(Event, frozen=True, kw_only=True):
    """The call was accepted (``session.accepted`` sent)."""

    caller: str | None
    bot_name: str | None
    media_format: str
    offered_formats: tuple[str, ...]


class SessionEndEvent(Event, frozen=True, kw_only=True):
    """The call is over; emitted exactly once per call.

    ``reason`` is one of ``"caller"`` (VAIC sent ``session.end``), ``"ended"``
    (``Session.end_session``), ``"transfer"``, ``"timeout"`` (the VAIC socket was lost and
    not resumed in time), ``"error"`` (the agent could not go on), ``"shutdown"`` (drain
    deadline), ``"migrated"`` (handed to another instance).
    """

    reason: str
    reason_code: str | None = None
    detail: str | None = None
    duration_s: float = 0.0
    record: CallRecord | None = None  # the whole call in one summary


class SessionResumedEvent(Event, frozen=True, kw_only=True):
    """VAIC reconnected with ``session.resume`` and the call carries on.

    ``taken_over``: the call came from another instance (its Session on that instance has
    ended with reason ``"migrated"``); ``gap_ms`` is then unknown here and 0.
    """

    gap_ms: float
    taken_over: bool = False


class ConversationTextEvent(Event, frozen=True, kw_only=True):
    role: str  # "user" or "assistant"
    content: str


class UserStartedSpeakingEvent(Event, frozen=True, kw_only=True):
    """The caller started talking. If the agent was talking, this was a barge-in.

    ``agent_audio_sent_ms`` is how much of the agent's current turn went to VAIC, and
    ``agent_audio_heard_ms`` how much of that had played by now at real time: the part the
    caller actually heard. Both are 0 when the agent was silent.
    """

    interrupted: bool = False
    agent_audio_sent_ms: float = 0.0
    agent_audio_heard_ms: float = 0.0
    agent_audio_dropped_ms: float = 0.0


class AgentThinkingEvent(Event, frozen=True, kw_only=True):
    content: str


class AgentAudioDoneEvent(Event, frozen=True, kw_only=True):
    """The agent finished producing audio for its turn."""


class FunctionCallRequestEvent(Event, frozen=True, kw_only=True):
    """Answer client-side calls with ``Session.respond_to_function_call``."""

    functions: tuple[FunctionCall, ...]


class FunctionCallCancelledEvent(Event, frozen=True, kw_only=True):
    """The agent withdrew these calls (the caller kept talking); do not answer them."""

    ids: tuple[str, ...]


class PromptUpdatedEvent(Event, frozen=True, kw_only=True):
    pass


class SpeakUpdatedEvent(Event, frozen=True, kw_only=True):
    pass


class ThinkUpdatedEvent(Event, frozen=True, kw_only=True):
    pass


class AgentReconnectedEvent(Event, frozen=True, kw_only=True):
    """The agent connection dropped and a new one, seeded with the history, is ready."""

    attempts: int
    gap_ms: float


class WarningEvent(Event, frozen=True, kw_only=True):
    """Something went wrong but the call goes on. ``source``: deepgram, audiocodes, bridge."""

    code: str
    description: str
    source: str


class BridgeErrorEvent(Event, frozen=True, kw_only=True):
    """An error. ``source``: deepgram, audiocodes, bridge or handler. ``status``: the HTTP
    status when the agent refused the connection (``AGENT_REJECTED``)."""

    code: str
    message: str
    source: str
    fatal: bool = False
    status: int | None = None


class InboundActivityEvent(Event, frozen=True, kw_only=True):
    """An activity VAIC sent (``start``, ``DTMF``, ``noUserInput``...), as the raw dict."""

    activity: dict[str, Any]

    @property
    def name(self) -> str | None:
        name = self.activity.get("name")
        return name if isinstance(name, str) else None


class DtmfEvent(Event, frozen=True, kw_only=True):
    """The caller pressed keys (the ``DTMF`` activity, also sent as ``activity``)."""

    digits: str


EVENT_NAMES: Final[dict[str, type[Event]]] = {
    "session_start": SessionStartEvent,
    "session_end": SessionEndEvent,
    "session_resumed": SessionResumedEvent,
    "conversation_text": ConversationTextEvent,
    "user_started_speaking": UserStartedSpeakingEvent,
    "agent_thinking": AgentThinkingEvent,
    "agent_audio_done": AgentAudioDoneEvent,
    "function_call_request": FunctionCallRequestEvent,
    "function_call_cancelled": FunctionCallCancelledEvent,
    "prompt_updated": PromptUpdatedEvent,
    "speak_updated": SpeakUpdatedEvent,
    "think_updated": ThinkUpdatedEvent,
    "agent_reconnected": AgentReconnectedEvent,
    "warning": WarningEvent,
    "activity": InboundActivityEvent,
    "dtmf": DtmfEvent,
    "error": BridgeErrorEvent,
}
