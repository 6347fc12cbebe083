"""The predecessor's typed config and payload names, for code moving over from it.

Code written for deepgram-audiocodes-bridge imports these from
``deepgram_audiocodes_bridge.types``; here they are ``acdg_asgi.compat.types``. The
config types are TypedDicts, so at run time they are plain dicts, and
``BridgeApp(agent=...)`` takes the same dict (``{"agent": {...}}`` or just the agent
object; lists of think and speak providers included; ``audio`` is ignored, as the bridge
sets it from the call). They stay useful for type checking dict configs;
:class:`~acdg_asgi.AgentSettings` and friends are the typed classes of this package. The
events are this package's own (some fields were renamed; the old names still work, with a
:class:`~acdg_asgi.MigrationWarning`).
"""
from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from ..events import (
    AgentAudioDoneEvent,
    AgentThinkingEvent,
    BridgeErrorEvent,
    ConversationTextEvent,
    FunctionCall,
    FunctionCallRequestEvent,
    InboundActivityEvent,
    PromptUpdatedEvent,
    SessionEndEvent,
    SessionStartEvent,
    SpeakUpdatedEvent,
    ThinkUpdatedEvent,
    UserStartedSpeakingEvent,
    WarningEvent,
)

__all__ = [
    "AgentAudioDoneEvent",
    "AgentThinkingEvent",
    "AudioCodesActivity",
    "AudioCodesBaseActivity",
    "AudioCodesEventActivity",
    "AudioCodesEventName",
    "AudioCodesMediaFormat",
    "AudioCodesMessageActivity",
    "AwsCredentials",
    "BridgeErrorEvent",
    "CallRecordingActivityParams",
    "CartesiaSpeakVoice",
    "ConversationTextEvent",
    "CustomEndpoint",
    "DeepgramAgent",
    "DeepgramAgentConfig",
    "DeepgramAudio",
    "DeepgramAudioInput",
    "DeepgramAudioOutput",
    "DeepgramConfig",
    "DeepgramFunction",
    "DeepgramFunctionParameterProperty",
    "DeepgramFunctionParameters",
    "DeepgramListen",
    "DeepgramSpeak",
    "DeepgramSpeakProvider",
    "DeepgramSpeakProviderAwsPolly",
    "DeepgramSpeakProviderCartesia",
    "DeepgramSpeakProviderDeepgram",
    "DeepgramSpeakProviderElevenLabs",
    "DeepgramSpeakProviderOpenAI",
    "DeepgramThink",
    "DeepgramThinkProvider",
    "DeepgramThinkProviderAnthropic",
    "DeepgramThinkProviderAwsBedrock",
    "DeepgramThinkProviderGoogle",
    "DeepgramThinkProviderGroq",
    "DeepgramThinkProviderOpenAI",
    "FunctionCall",
    "FunctionCallRequestEvent",
    "InboundActivityEvent",
    "PlayUrlActivityParams",
    "PromptUpdatedEvent",
    "SendDtmfActivityParams",
    "SessionEndEvent",
    "SessionEndReason",
    "SessionInitiateMessage",
    "SessionStartEvent",
    "SpeakUpdatedEvent",
    "ThinkUpdatedEvent",
    "TransferActivityParams",
    "UserStartedSpeakingEvent",
    "WarningEvent",
]

# --- Deepgram Voice Agent settings (the keys are Deepgram's, as sent) ------------------------


class DeepgramAudioInput(TypedDict, total=False):
    encoding: str
    sample_rate: int


class DeepgramAudioOutput(TypedDict, total=False):
    encoding: str
    sample_rate: int
    container: str
    bitrate: int


class DeepgramAudio(TypedDict, total=False):
    """Ignored by this bridge: it sets ``audio`` from the format VAIC negotiated."""

    input: DeepgramAudioInput
    output: DeepgramAudioOutput


class DeepgramListen(TypedDict, total=False):
    provider: dict[str, object]


class CustomEndpoint(TypedDict, total=False):
    url: str
    headers: dict[str, str]


class AwsCredentials(TypedDict):
    type: Literal["sts", "iam"]
    region: str
    access_key_id: str
    secret_access_key: str
    session_token: NotRequired[str]


class DeepgramFunctionParameterProperty(TypedDict, total=False):
    type: str
    description: str
    enum: list[str]


class DeepgramFunctionParameters(TypedDict, total=False):
    type: Literal["object"]
    properties: dict[str, DeepgramFunctionParameterProperty]
    required: list[str]


class DeepgramFunction(TypedDict):
    name: str
    description: str
    parameters: NotRequired[DeepgramFunctionParameters]
    endpoint: NotRequired[CustomEndpoint]


class DeepgramThinkProviderOpenAI(TypedDict):
    type: Literal["open_ai"]
    model: str
    version: NotRequired[str]
    temperature: NotRequired[float]


class DeepgramThinkProviderAnthropic(TypedDict):
    type: Literal["anthropic"]
    model: str
    version: NotRequired[str]
    temperature: NotRequired[float]


class DeepgramThinkProviderGoogle(TypedDict):
    type: Literal["google"]
    model: str
    version: NotRequired[str]
    temperature: NotRequired[float]


class DeepgramThinkProviderGroq(TypedDict):
    type: Literal["groq"]
    model: str
    version: NotRequired[str]
    temperature: NotRequired[float]


class DeepgramThinkProviderAwsBedrock(TypedDict):
    type: Literal["aws_bedrock"]
    model: str
    credentials: AwsCredentials
    temperature: NotRequired[float]


DeepgramThinkProvider = (
    DeepgramThinkProviderOpenAI | DeepgramThinkProviderAnthropic | DeepgramThinkProviderGoogle
    | DeepgramThinkProviderGroq | DeepgramThinkProviderAwsBedrock
)


class DeepgramThink(TypedDict, total=False):
    provider: DeepgramThinkProvider
    prompt: str
    context_length: int | Literal["max"]
    endpoint: CustomEndpoint
    functions: list[DeepgramFunction]


class CartesiaSpeakVoice(TypedDict):
    mode: str
    id: str


class DeepgramSpeakProviderDeepgram(TypedDict):
    type: Literal["deepgram"]
    model: str
    version: NotRequired[str]
    speed: NotRequired[float]


class DeepgramSpeakProviderElevenLabs(TypedDict):
    type: Literal["eleven_labs"]
    model_id: str
    version: NotRequired[str]
    language: NotRequired[str]
    language_code: NotRequired[str]


class DeepgramSpeakProviderCartesia(TypedDict):
    type: Literal["cartesia"]
    model_id: str
    voice: CartesiaSpeakVoice
    version: NotRequired[str]
    language: NotRequired[str]
    volume: NotRequired[float]


class DeepgramSpeakProviderOpenAI(TypedDict):
    type: Literal["open_ai"]
    model: str
    voice: str
    version: NotRequired[str]


class DeepgramSpeakProviderAwsPolly(TypedDict):
    type: Literal["aws_polly"]
    voice: str
    language: str
    engine: str
    credentials: AwsCredentials
    language_code: NotRequired[str]


DeepgramSpeakProvider = (
    DeepgramSpeakProviderDeepgram | DeepgramSpeakProviderElevenLabs
    | DeepgramSpeakProviderCartesia | DeepgramSpeakProviderOpenAI | DeepgramSpeakProviderAwsPolly
)


class DeepgramSpeak(TypedDict):
    provider: DeepgramSpeakProvider
    endpoint: NotRequired[CustomEndpoint]


class DeepgramAgent(TypedDict, total=False):
    language: str
    context: dict[str, object]
    listen: DeepgramListen
    think: DeepgramThink | list[DeepgramThink]
    speak: DeepgramSpeak | list[DeepgramSpeak]
    greeting: str


class DeepgramAgentConfig(TypedDict, total=False):
    """The ``Settings`` message without its ``type``: what ``BridgeApp(agent=...)`` takes."""

    tags: list[str]
    experimental: bool
    mip_opt_out: bool
    flags: dict[str, object]
    audio: DeepgramAudio
    agent: DeepgramAgent


DeepgramConfig = DeepgramAgentConfig


# --- AudioCodes Bot API (the keys are VAIC's, as sent) --------------------------------------

AudioCodesMediaFormat = Literal[
    "raw/mulaw", "wav/mulaw", "raw/lpcm16", "wav/lpcm16",
    "raw/lpcm16_8", "wav/lpcm16_8", "raw/lpcm16_24", "wav/lpcm16_24",
]
AudioCodesEventName = str  # "start", "hangup", "transfer", "DTMF", "playUrl", ...
SessionEndReason = str  # "caller" (the predecessor's "hangup"), "ended", "transfer", ...


class AudioCodesBaseActivity(TypedDict, total=False):
    activityParams: dict[str, object]
    sessionParams: dict[str, object]
    parameters: dict[str, object]
    value: object
    delay: int
    id: str
    timestamp: str
    participant: str


class AudioCodesMessageActivity(AudioCodesBaseActivity, total=False):
    type: Literal["message"]
    text: str


class AudioCodesEventActivity(AudioCodesBaseActivity, total=False):
    type: Literal["event"]
    name: str


AudioCodesActivity = AudioCodesMessageActivity | AudioCodesEventActivity


class SessionInitiateMessage(TypedDict, total=False):
    type: Literal["session.initiate"]
    conversationId: str
    expectAudioMessages: bool
    supportedMediaFormats: list[str]
    caller: str
    botName: str


class TransferActivityParams(TypedDict, total=False):
    transferTarget: str
    handoverReason: str
    transferSipHeaders: list[dict[str, str]]


class PlayUrlActivityParams(TypedDict, total=False):
    playUrlUrl: str
    playUrlMediaFormat: str
    playUrlCache: bool


class SendDtmfActivityParams(TypedDict, total=False):
    """VAIC reads the digits from ``dtmfDigits`` (the predecessor wrote ``dtmf``)."""

    dtmfDigits: str


class CallRecordingActivityParams(TypedDict, total=False):
    recordingName: str
    recordingFormat: str
