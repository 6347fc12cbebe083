"""Application events: what a call tells the application, as frozen Structs.

Handlers are registered by event name (the predecessor's names, kept for migration) or
by class; :data:`EVENT_NAMES` maps one to the other, and an unknown name is an error at
registration, not a silent no-op.
"""

from __future__ import annotations

import enum
import time
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from .errors import moved
from .protocols.deepgram import FunctionCall

__all__ = [
    "END_REASON_CODES",
    "EVENT_NAMES",
    "AgentAudioDoneEvent",
    "AgentConnectedEvent",
    "AgentInterruptedEvent",
    "AgentReconnectedEvent",
    "AgentThinkingEvent",
    "BridgeErrorEvent",
    "CallDetails",
    "CallRecord",
    "ConversationTextEvent",
    "DialoutInitiatedEvent",
    "DtmfCollectedEvent",
    "DtmfEvent",
    "Event",
    "FrustrationDetectedEvent",
    "FunctionCall",
    "FunctionCallCancelledEvent",
    "FunctionCallRequestEvent",
    "FunctionCallResponseEvent",
    "InboundActivityEvent",
    "LatencyReportEvent",
    "ListenUpdatedEvent",
    "NoInputActionEvent",
    "NoUserInputEvent",
    "Participant",
    "ParticipantIgnoredEvent",
    "PlayFinishedEvent",
    "PlayUrlFailedEvent",
    "PromptUpdatedEvent",
    "SensitiveModeEvent",
    "SessionEndEvent",
    "SessionResumedEvent",
    "SessionStartEvent",
    "SilenceDetectedEvent",
    "SpeakUpdatedEvent",
    "SpeechHypothesisEvent",
    "ThinkLiveUpdatedEvent",
    "ThinkProviderMessageEvent",
    "ThinkUpdatedEvent",
    "ToolCalledEvent",
    "ToolRequest",
    "ToolResultEvent",
    "TranscriptLine",
    "TransferAnsweredEvent",
    "TransferFailedEvent",
    "TransferRecord",
    "TransferStartedEvent",
    "TurnLatency",
    "UserStartedSpeakingEvent",
    "VoiceDetectedEvent",
    "WarningEvent",
]

END_REASON_CODES: Final[dict[str, str]] = {
    "client-disconnected": "the caller hung up",
    "bot-disconnected": "the bot hung up",
    "transferred": "the call was transferred",
    "machine-detected": "an answering machine or voicemail answered",
    "no-answer": "the outbound call was not answered",
    "busy": "the outbound call was busy",
    "declined": "the outbound call was declined",
    "error": "VAIC reported an error",
}
"""What VAIC's ``session.end`` reason codes mean (AudioCodes' call-disconnect reasons)."""


# --- payloads ------------------------------------------------------------------------------


class TranscriptLine(msgspec.Struct, frozen=True, omit_defaults=True):
    """One spoken turn of the transcript: who (``user`` or ``assistant``) and what.

    When the caller barged in, ``content`` is what was played before the cut (estimated
    from the audio played against the utterance's length) and ``unheard`` the rest.
    ``at_s``: when it was said, in seconds since the call began (unknown for turns an
    instance took over with the call).
    """

    role: str
    content: str
    unheard: str | None = None
    at_s: float | None = None


class TransferRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One transfer of the call: where to, how it went (``answered``, ``failed``, or
    ``unknown`` when VAIC ended the call without saying), and when (seconds since the
    call began)."""

    destination: str | None
    outcome: str
    reason_code: str | None = None
    at_s: float = 0.0


class ToolRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The agent asked for a telephony tool: ``name`` (``end_call``, ``transfer_call``,
    ``send_dtmf``, ``play_url``), its ``arguments`` as the agent gave them, and
    ``target``, what they resolve to (the transfer URI, the prompt URL, the digits)."""

    id: str
    name: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    target: str | None = None


class Participant(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One participant of an agent-assist call, as VAIC's ``start`` lists it."""

    participant: str
    uri_user: str | None = None
    uri_host: str | None = None
    display_name: str | None = None


class CallDetails(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What VAIC's ``start`` activity says about the call.

    ``sip_headers`` holds the parameters this bridge does not know by name: those an
    administrator maps from SIP headers with ``sipHeadersToBot`` (under the names chosen
    there), and any VAIC adds later. ``parameters`` is the whole object as received.
    """

    caller: str | None = None
    caller_host: str | None = None
    caller_display_name: str | None = None
    callee: str | None = None
    callee_host: str | None = None
    vaig_conversation_id: str | None = None
    participants: tuple[Participant, ...] = ()
    outbound_target: str | None = None
    dialout_metadata: Any = None  # an object, or a string on older VAIC versions
    agent_connected: bool | None = None
    language: str | None = None
    sip_headers: dict[str, Any] = msgspec.field(default_factory=dict)
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class TurnLatency(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Deepgram's ``LatencyReport`` for one agent turn, in milliseconds."""

    stt_ms: float | None = None
    ttt_token_ms: float | None = None
    ttt_text_ms: float | None = None
    ttt_tool_ms: float | None = None
    ttt_thinking_ms: float | None = None
    tts_ms: float | None = None
    total_ms: float | None = None


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
    latency: tuple[TurnLatency, ...] = ()  # per turn, from Deepgram's LatencyReport
    barge_ins: int
    resumes: int
    agent_reconnects: int
    warnings: int
    errors: int
    caller_audio_s: float
    agent_audio_s: float
    meaning: str | None = None  # of reason_code (END_REASON_CODES)
    details: CallDetails | None = None  # VAIC's start activity
    agent_request_ids: tuple[str, ...] = ()  # Deepgram's, one per agent connection
    frustration: int = 0  # FrustrationDetected count
    participants_ignored: tuple[str, ...] = ()  # whose audio never reached the agent
    transfers: tuple[TransferRecord, ...] = ()

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)


# --- events --------------------------------------------------------------------------------


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every event. ``at`` is the bridge's monotonic clock, in seconds."""

    session_id: str
    conversation_id: str
    at: float


class SessionStartEvent(Event, frozen=True, kw_only=True):
    """The call was accepted and VAIC's ``start`` activity arrived with the call's
    ``details``, or did not within ``Limits.start_wait_s`` (``details`` is then None)."""

    caller: str | None
    bot_name: str | None
    media_format: str
    offered_formats: tuple[str, ...]
    details: CallDetails | None = None

    @property
    def started_at(self) -> str:
        """The predecessor's field: when the call started (ISO 8601, UTC), from ``at``."""
        moved("SessionStartEvent.started_at", "event.record.started_at at session_end, "
              "or your own clock")
        return _iso(time.time() - (time.monotonic() - self.at))


class SessionEndEvent(Event, frozen=True, kw_only=True):
    """The call is over; emitted exactly once per call.

    ``reason`` is one of ``"caller"`` (VAIC sent ``session.end``; it also equals the
    predecessor's ``"hangup"``, with a :class:`~acdg_asgi.MigrationWarning`), ``"ended"``
    (``Session.end_session``, or the agent's ``end_call``), ``"no_input"`` (the
    ``NoInput`` policy hung up), ``"transfer"``, ``"timeout"`` (the VAIC socket was lost and
    not resumed in time), ``"error"`` (the agent could not go on), ``"shutdown"`` (drain
    deadline), ``"migrated"`` (handed to another instance).
    """

    reason: str
    reason_code: str | None = None
    detail: str | None = None
    duration_s: float = 0.0
    record: CallRecord | None = None  # the whole call in one summary
    meaning: str | None = None  # of VAIC's reason_code, e.g. "an answering machine ..."

    @property
    def machine_detected(self) -> bool:
        """VAIC's answering-machine detection ended the call (``machine-detected``)."""
        return self.reason_code == "machine-detected"

    def __post_init__(self) -> None:
        if type(self.reason) is str and self.reason == "caller":
            msgspec.structs.force_setattr(self, "reason", _CallerReason.CALLER)

    @property
    def duration_ms(self) -> int:
        """The predecessor's field: the call's length in whole milliseconds."""
        moved("SessionEndEvent.duration_ms", "duration_s")
        return round(self.duration_s * 1000)

    @property
    def ended_at(self) -> str:
        """The predecessor's field: when the call ended (ISO 8601, UTC)."""
        moved("SessionEndEvent.ended_at", "event.record.ended_at")
        return self.record.ended_at if self.record is not None else _iso(time.time())


class SessionResumedEvent(Event, frozen=True, kw_only=True):
    """VAIC reconnected with ``session.resume`` and the call carries on.

    ``taken_over``: the call came from another instance (its Session on that instance has
    ended with reason ``"migrated"``); ``gap_ms`` is then unknown here and 0.
    """

    gap_ms: float
    taken_over: bool = False


class ConversationTextEvent(Event, frozen=True, kw_only=True):
    """An utterance. ``behavior`` is Deepgram's ``conversational_behavior``: ``default``,
    or ``backchannel`` / ``filler`` / ``presence_check`` (Think Live), which are kept out
    of the transcript, the history and play-stream captions. ``languages``: detected in
    the caller's speech (multilingual listen models). ``unheard`` is only set by
    ``Session.get_transcript()``: the part of an utterance a barge-in cut off."""

    role: str  # "user" or "assistant"
    content: str
    behavior: str = "default"
    languages: tuple[str, ...] | None = None
    unheard: str | None = None


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
    agent_heard_text: str | None = None  # of the interrupted utterance, estimated
    agent_unheard_text: str | None = None
    # the agent was speaking but the Interruption policy kept it playing (an utterance
    # the caller cannot cut, DTMF-only, or speech shorter than min_speech_ms so far)
    kept_playing: bool = False


class AgentInterruptedEvent(Event, frozen=True, kw_only=True):
    """The agent was cut short other than at the caller's first word: by a key
    (``by="dtmf"``), or by speech once it lasted ``Interruption.min_speech_ms``."""

    by: str
    agent_audio_sent_ms: float = 0.0
    agent_audio_heard_ms: float = 0.0
    agent_heard_text: str | None = None
    agent_unheard_text: str | None = None


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


class FunctionCallResponseEvent(Event, frozen=True, kw_only=True):
    """A server-side function (one with an ``endpoint``) ran at Deepgram; its result."""

    id: str | None
    name: str
    content: str


class LatencyReportEvent(Event, frozen=True, kw_only=True):
    """Deepgram's latency breakdown of one agent turn (``LatencyReport``)."""

    latency: TurnLatency


class FrustrationDetectedEvent(Event, frozen=True, kw_only=True):
    """Think Live judged the caller frustrated; ``escalated`` once the configured
    ``frustration_max_count`` is reached (a cue to offer a human)."""

    count: int
    escalated: bool


class ThinkProviderMessageEvent(Event, frozen=True, kw_only=True):
    """A custom payload from the think provider (``__customFromThinkProvider``)."""

    content: Any


class ParticipantIgnoredEvent(Event, frozen=True, kw_only=True):
    """Audio of a participant the agent does not listen to arrived (agent assist): it is
    kept from the agent. Once per participant."""

    participant: str
    hearing: str | None  # the participant the agent listens to


class PromptUpdatedEvent(Event, frozen=True, kw_only=True):
    pass


class ListenUpdatedEvent(Event, frozen=True, kw_only=True):
    pass


class ThinkLiveUpdatedEvent(Event, frozen=True, kw_only=True):
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
    """Something went wrong but the call goes on. ``source``: deepgram, audiocodes, bridge.

    Repeats of one kind are folded (``Limits.warning_interval_s``): the first few in an
    interval come one by one, the rest as one event at the interval's end, whose
    ``count`` says how many it stands for and whose description quotes the last.
    """

    code: str
    description: str
    source: str
    count: int = 1


class BridgeErrorEvent(Event, frozen=True, kw_only=True):
    """An error. ``source``: deepgram, audiocodes, bridge or handler. ``status``: the HTTP
    status when the agent refused the connection (``AGENT_REJECTED``)."""

    code: str
    message: str
    source: str
    fatal: bool = False
    status: int | None = None

    @property
    def description(self) -> str:
        """The predecessor's name for ``message``."""
        moved("BridgeErrorEvent.description", "message")
        return self.message

    @property
    def recoverable(self) -> bool:
        """The predecessor's field: ``not fatal``."""
        moved("BridgeErrorEvent.recoverable", "not fatal")
        return not self.fatal

    @property
    def cause(self) -> None:
        """The predecessor's exception field: events carry none (see ``source``, ``message``)."""
        moved("BridgeErrorEvent.cause", "source and message (events carry no exception)")
        return None


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


class DtmfCollectedEvent(Event, frozen=True, kw_only=True):
    """Keys collected as one input (``DtmfInput``): ``ended_by`` is ``key`` (no collection:
    each DTMF activity), ``max_digits``, ``terminator`` or ``timeout``. In sensitive mode
    ``digits`` is the mask and ``masked`` is set."""

    digits: str
    ended_by: str
    masked: bool = False


class ToolCalledEvent(Event, frozen=True, kw_only=True):
    """The agent asked for a telephony tool (``TelephonyTools``); it runs once the agent's
    words have played, after the application's ``check`` hook if there is one."""

    request: ToolRequest


class ToolResultEvent(Event, frozen=True, kw_only=True):
    """A telephony tool's outcome: ``status`` is ``done``, ``refused``, ``failed``,
    ``handled`` (by the application's hook) or ``cancelled`` (the caller kept talking);
    ``result`` is what the agent was told (its ``FunctionCallResponse``), if anything."""

    id: str
    name: str
    status: str
    result: str | None = None


class NoInputActionEvent(Event, frozen=True, kw_only=True):
    """The ``NoInput`` policy acted: ``action`` is ``reprompt`` or ``hangup``; ``count``
    the silences in a row; ``source`` ``bridge`` (its own timer) or ``vaic``
    (``noUserInput``)."""

    action: str
    count: int
    source: str


class SensitiveModeEvent(Event, frozen=True, kw_only=True):
    """Sensitive mode began (``on``) or ended; VAIC's recording was paused or resumed
    with it when ``recording_paused``."""

    on: bool
    recording_paused: bool = False


# VAIC's notifications (each also arrives as an ``activity`` event with the raw object).
# Most come only when named in the bot's ``sendEventsToBot``.


class NoUserInputEvent(Event, frozen=True, kw_only=True):
    """VAIC heard nothing from the caller for ``userNoInputTimeoutMS`` (``noUserInput``);
    ``count`` is how many times in a row, when VAIC says."""

    count: int | None = None


class TransferStartedEvent(Event, frozen=True, kw_only=True):
    """The transfer went to VAIC (once the agent's last words had played); the call now
    waits for ``transfer_failed``, ``transfer_answered`` or its end."""

    destination: str | None


class TransferFailedEvent(Event, frozen=True, kw_only=True):
    """The transfer did not connect and VAIC gave the call back (``transferStatus``
    failed); the agent carries on. ``reason_code``: ``busy``, ``no-answer``,
    ``declined`` or ``error``. Retry with ``Session.transfer`` or end the call."""

    destination: str | None
    reason_code: str | None = None
    reason: str | None = None


class TransferAnsweredEvent(Event, frozen=True, kw_only=True):
    """The transfer target answered (``transferStatus`` answered); the call ends here
    with reason ``transfer``."""

    destination: str | None


class PlayUrlFailedEvent(Event, frozen=True, kw_only=True):
    """VAIC could not play a ``play_url`` (``playUrlFailed``)."""

    url: str | None = None
    reason: str | None = None
    self_generated: bool | None = None


class PlayFinishedEvent(Event, frozen=True, kw_only=True):
    """VAIC finished playing a prompt (``playFinished``)."""

    value: Any = None


class SpeechHypothesisEvent(Event, frozen=True, kw_only=True):
    """VAIC's own interim recognition (``speechHypothesis``; only with VAIC doing STT)."""

    text: str | None = None
    participant: str | None = None


class VoiceDetectedEvent(Event, frozen=True, kw_only=True):
    """VAIC detected the caller's voice (``voiceDetected``)."""


class SilenceDetectedEvent(Event, frozen=True, kw_only=True):
    """VAIC detected silence on the line (``silenceDetected``)."""


class AgentConnectedEvent(Event, frozen=True, kw_only=True):
    """Agent assist: the agent-assist client connected (``agentConnected``)."""

    value: Any = None


class DialoutInitiatedEvent(Event, frozen=True, kw_only=True):
    """An outbound call was placed (``dialoutInitiated``)."""

    outbound_target: str | None = None
    dialout_metadata: Any = None


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


class _CallerReason(enum.StrEnum):
    """``SessionEndEvent.reason`` for a caller hangup: ``"caller"``, which also equals the
    predecessor's ``"hangup"`` (with a warning), so ``reason == "hangup"`` stays true.
    It is a ``str`` everywhere else: JSON, logs, labels, ``match``."""

    CALLER = "caller"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str) and str.__eq__(other, "hangup"):
            moved('SessionEndEvent.reason == "hangup"', 'reason == "caller"')
            return True
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = str.__hash__

    def __repr__(self) -> str:
        return repr(self.value)


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
    "function_call_response": FunctionCallResponseEvent,
    "latency_report": LatencyReportEvent,
    "frustration_detected": FrustrationDetectedEvent,
    "listen_updated": ListenUpdatedEvent,
    "think_live_updated": ThinkLiveUpdatedEvent,
    "think_provider_message": ThinkProviderMessageEvent,
    "participant_ignored": ParticipantIgnoredEvent,
    "no_user_input": NoUserInputEvent,
    "transfer_started": TransferStartedEvent,
    "transfer_failed": TransferFailedEvent,
    "transfer_answered": TransferAnsweredEvent,
    "play_url_failed": PlayUrlFailedEvent,
    "play_finished": PlayFinishedEvent,
    "speech_hypothesis": SpeechHypothesisEvent,
    "voice_detected": VoiceDetectedEvent,
    "silence_detected": SilenceDetectedEvent,
    "agent_connected": AgentConnectedEvent,
    "dialout_initiated": DialoutInitiatedEvent,
    "agent_interrupted": AgentInterruptedEvent,
    "dtmf_collected": DtmfCollectedEvent,
    "tool_called": ToolCalledEvent,
    "tool_result": ToolResultEvent,
    "no_input_action": NoInputActionEvent,
    "sensitive_mode": SensitiveModeEvent,
}
