"""Deepgram Voice Agent API v1: every JSON message as a msgspec Struct.

Text frames carry one JSON object tagged on ``type`` (class-name tags: ``Welcome``,
``ConversationText``); binary frames are raw audio and never pass through here.

Reading is tolerant (unknown fields ignored, unknown types returned as
:class:`UnknownMessage`); writing sends only what was set. Integer fields stay ``int`` so
sample rates never go out as ``16000.0``, which the API rejects.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

from . import _codec
from ._codec import CheckedKeywords, not_known, tags

DecodeError = _codec.DecodeError  # raised by decode_server/decode_client
AGENT_PATH: Final = "/v1/agent/converse"
DEFAULT_URL: Final = "wss://agent.deepgram.com" + AGENT_PATH


class _Config(msgspec.Struct, omit_defaults=True, frozen=True, metaclass=CheckedKeywords):
    """Base of nested settings objects. A misspelt keyword names the nearest field."""


# --- Settings ------------------------------------------------------------------------------


class AudioInput(_Config, frozen=True):
    encoding: str | None = None
    sample_rate: int | None = None


class AudioOutput(_Config, frozen=True):
    encoding: str | None = None
    sample_rate: int | None = None
    container: str | None = None
    bitrate: int | None = None


class AudioSettings(_Config, frozen=True):
    """Optional on the wire; the bridge always sends every field, derived from the format
    negotiated with VAIC, because the server's defaults differ between its docs and spec."""

    input: AudioInput | None = None
    output: AudioOutput | None = None


class Endpoint(_Config, frozen=True):
    url: str
    headers: dict[str, str] | None = None
    method: str | None = None


class Function(_Config, frozen=True):
    """A function the LLM may call. Without ``endpoint`` it runs on the client (your app)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    endpoint: Endpoint | None = None
    defer_until_eot: bool | None = None


class ListenSettings(_Config, frozen=True):
    provider: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "deepgram", "model": "nova-3"}
    )


class ThinkLiveSettings(_Config, frozen=True):
    """Deepgram's Think Live model beside the reasoning LLM (backchannels, presence
    checks, frustration detection; early access). ``provider`` is passed through, e.g.
    ``{"type": "deepgram", "version": "v1", "frustration_max_count": 3}``."""

    provider: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "deepgram", "version": "v1"}
    )


class ThinkSettings(_Config, frozen=True):
    provider: dict[str, Any]
    prompt: str | None = None
    functions: tuple[Function, ...] | None = None
    endpoint: Endpoint | None = None
    context_length: int | Literal["max"] | None = None


class SpeakSettings(_Config, frozen=True):
    provider: dict[str, Any]
    endpoint: Endpoint | None = None


class FunctionCallRecord(_Config, frozen=True):
    id: str
    name: str
    client_side: bool
    arguments: str
    response: str
    thought_signature: str | None = None


class Context(_Config, frozen=True):
    messages: tuple[History, ...] = ()


class AgentSettings(_Config, frozen=True):
    listen: ListenSettings | None = None
    think: ThinkSettings | tuple[ThinkSettings, ...] | None = None
    think_live: ThinkLiveSettings | None = None
    speak: SpeakSettings | tuple[SpeakSettings, ...] | None = None
    greeting: str | None = None
    language: str | None = None
    context: Context | None = None


class Flags(_Config, frozen=True):
    history: bool = True


# --- client -> server ----------------------------------------------------------------------


class _Client(msgspec.Struct, tag_field="type", tag=True, omit_defaults=True, frozen=True):
    """Base of client messages: the tag is the class name."""


class Settings(_Client, frozen=True):
    """``extra`` is not a wire field: it is merged into the message as it is encoded
    (:func:`encode`), for fields newer than this module."""

    audio: AudioSettings
    agent: AgentSettings | str  # a string is the id of an agent configuration stored at Deepgram
    tags: tuple[str, ...] | None = None
    experimental: bool | None = None
    mip_opt_out: bool | None = None
    flags: Flags | None = None
    extra: dict[str, Any] | None = None


class UpdatePrompt(_Client, frozen=True):
    prompt: str


class UpdateThink(_Client, frozen=True):
    think: ThinkSettings | tuple[ThinkSettings, ...]


class UpdateSpeak(_Client, frozen=True):
    speak: SpeakSettings | tuple[SpeakSettings, ...]


class UpdateListen(_Client, frozen=True):
    listen: ListenSettings


class UpdateThinkLive(_Client, tag="UpdateThink_Live", frozen=True):
    think_live: ThinkLiveSettings


class CustomToThinkProvider(_Client, tag="__customToThinkProvider", frozen=True):
    """A payload for a custom think provider, passed through by Deepgram."""

    content: Any = None


class InjectUserMessage(_Client, frozen=True):
    content: str


class InjectAgentMessage(_Client, frozen=True):
    message: str
    behavior: Literal["default", "queue", "interrupt"] | None = None


class FunctionCallResponse(_Client, frozen=True):
    name: str
    content: str
    id: str | None = None


class KeepAlive(_Client, frozen=True):
    pass


class ForceEndTurn(_Client, frozen=True):
    pass


ClientMessage = (
    Settings
    | UpdatePrompt
    | UpdateThink
    | UpdateSpeak
    | UpdateListen
    | UpdateThinkLive
    | CustomToThinkProvider
    | InjectUserMessage
    | InjectAgentMessage
    | FunctionCallResponse
    | KeepAlive
    | ForceEndTurn
)

# --- server -> client ----------------------------------------------------------------------


class _Server(msgspec.Struct, tag_field="type", tag=True, frozen=True):
    """Base of server messages: the tag is the class name.

    Defaults exist so that reading tolerates missing fields; they are written out in full
    (the stand-in agent writes these), because Deepgram's own models require them.
    """


class Welcome(_Server, frozen=True):
    request_id: str = ""


class SettingsApplied(_Server, frozen=True):
    pass


class ConversationText(_Server, frozen=True):
    """``conversational_behavior``: ``default`` (a turn), ``backchannel`` (a short
    acknowledgement while the caller holds the floor), ``presence_check`` or ``filler``
    (covering a wait); ``languages`` (caller turns, multilingual listen models)."""

    role: str
    content: str
    languages: tuple[str, ...] | None = None
    languages_hinted: tuple[str, ...] | None = None
    conversational_behavior: str = "default"


class UserStartedSpeaking(_Server, frozen=True):
    pass


class AgentThinking(_Server, frozen=True):
    content: str = ""


class FunctionCall(msgspec.Struct, frozen=True):
    """One function the agent asks for. ``arguments`` is JSON text, as Deepgram sends it;
    ``args`` is the same decoded."""

    id: str
    name: str
    arguments: str = "{}"
    client_side: bool = True
    thought_signature: str | None = None  # some Gemini models; pass back in history

    @property
    def args(self) -> dict[str, Any]:
        """``arguments`` decoded (``{}`` when empty); a :class:`ValueError` names what is
        wrong when they are not a JSON object."""
        if not self.arguments.strip():
            return {}
        try:
            value = msgspec.json.decode(self.arguments)
        except msgspec.DecodeError as exc:
            raise ValueError(f"arguments of {self.name} are not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError(f"arguments of {self.name} are not a JSON object: "
                             f"{self.arguments[:80]!r}")
        return value


class FunctionCallRequest(_Server, frozen=True):
    functions: tuple[FunctionCall, ...]


class ServerFunctionCallResponse(_Server, tag="FunctionCallResponse", frozen=True):
    name: str = ""
    content: str = ""
    id: str | None = None


class CancelledFunction(msgspec.Struct, frozen=True):
    id: str
    name: str = ""


class FunctionCallCancelled(_Server, frozen=True):
    functions: tuple[CancelledFunction, ...] = ()


class AgentStartedSpeaking(_Server, frozen=True):
    total_latency: float | None = None
    tts_latency: float | None = None
    ttt_latency: float | None = None


class AgentAudioDone(_Server, frozen=True):
    pass


class LatencyReport(_Server, frozen=True):
    """Deepgram's per-turn latency breakdown, in seconds (every field may be absent)."""

    stt_latency: float | None = None
    ttt_token_latency: float | None = None  # first token of any kind
    ttt_text_latency: float | None = None
    ttt_tool_latency: float | None = None
    ttt_thinking_latency: float | None = None
    tts_latency: float | None = None
    total_latency: float | None = None  # end of the caller's turn to the first audio byte


class FrustrationDetected(_Server, frozen=True):
    """Think Live judged the caller frustrated; ``escalated`` once ``count`` reaches the
    configured ``frustration_max_count``."""

    count: int = 0
    escalated: bool = False


class CustomFromThinkProvider(_Server, tag="__customFromThinkProvider", frozen=True):
    content: Any = None


class PromptUpdated(_Server, frozen=True):
    pass


class ThinkUpdated(_Server, frozen=True):
    pass


class SpeakUpdated(_Server, frozen=True):
    pass


class ListenUpdated(_Server, frozen=True):
    pass


class ThinkLiveUpdated(_Server, frozen=True):
    pass


class InjectionRefused(_Server, frozen=True):
    message: str = ""


class History(_Server, omit_defaults=True, frozen=True):
    """One entry of the conversation record: a turn (``role``, ``content``) or function calls.

    The server streams these while ``flags.history`` is on; the same shape goes back in
    ``agent.context.messages`` when a call reconnects.
    """

    role: str | None = None
    content: str | None = None
    function_calls: tuple[FunctionCallRecord, ...] | None = None


class Warning(_Server, frozen=True):
    description: str = ""
    code: str = ""


class Error(_Server, frozen=True):
    description: str = ""
    code: str = ""


ServerMessage = (
    Welcome
    | SettingsApplied
    | ConversationText
    | UserStartedSpeaking
    | AgentThinking
    | FunctionCallRequest
    | ServerFunctionCallResponse
    | FunctionCallCancelled
    | AgentStartedSpeaking
    | AgentAudioDone
    | LatencyReport
    | FrustrationDetected
    | CustomFromThinkProvider
    | PromptUpdated
    | ThinkUpdated
    | SpeakUpdated
    | ListenUpdated
    | ThinkLiveUpdated
    | InjectionRefused
    | History
    | Warning
    | Error
)


class UnknownMessage(msgspec.Struct, frozen=True):
    """A well-formed message of a type this module does not know."""

    type: str


# --- codec ---------------------------------------------------------------------------------

_server_decoder: Final = msgspec.json.Decoder(ServerMessage)
_client_decoder: Final = msgspec.json.Decoder(ClientMessage)
_unknown_decoder: Final = msgspec.json.Decoder(UnknownMessage)
_encoder: Final = msgspec.json.Encoder()


SERVER_TAGS: Final = tags(ServerMessage)
CLIENT_TAGS: Final = tags(ClientMessage)


def decode_server(frame: str | bytes) -> ServerMessage | UnknownMessage:
    """Decode one server -> client text frame (what the bridge reads)."""
    try:
        message: ServerMessage = _server_decoder.decode(frame)
    except Exception as exc:  # whatever decoding raises, the frame is not a known message
        return not_known(_unknown_decoder, SERVER_TAGS, frame, exc)
    return message


def decode_client(frame: str | bytes) -> ClientMessage | UnknownMessage:
    """Decode one client -> server text frame (what the stand-in agent reads)."""
    try:
        message: ClientMessage = _client_decoder.decode(frame)
    except Exception as exc:  # whatever decoding raises, the frame is not a known message
        return not_known(_unknown_decoder, CLIENT_TAGS, frame, exc)
    return message


def encode(message: ClientMessage | ServerMessage) -> bytes:
    """Encode a message of either direction to JSON bytes; ``Settings.extra`` is merged in."""
    if isinstance(message, Settings) and message.extra:
        return _encode_with_extra(message)
    return _encoder.encode(message)


def _encode_with_extra(settings: Settings) -> bytes:
    wire = msgspec.to_builtins(msgspec.structs.replace(settings, extra=None))
    return _encoder.encode(merged(wire, settings.extra or {}))


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in: objects merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        out[key] = merged(old, value) if isinstance(old, dict) and isinstance(value, dict) \
            else value
    return out
