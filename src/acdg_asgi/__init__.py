"""acdg-asgi: AudioCodes Bot API (streaming mode) to Deepgram Voice Agent, as an ASGI app.

    from acdg_asgi import BridgeApp, AgentSettings, ThinkSettings

    bridge = BridgeApp(agent=AgentSettings(...), auth="token")
    app.mount("/audiocodes", bridge)
"""

from .app import AgentFactory, BridgeApp, CallInfo
from .audio import FORMATS, MediaFormat
from .auth import BearerToken, Connection
from .cluster.store import CallStore
from .config import AgentConfig, Limits, Playout, Reconnect, Secret
from .errors import (
    AgentClosed,
    AgentConnectError,
    AgentError,
    AuthError,
    BridgeError,
    CallNotFound,
    CommandFailed,
    ConfigError,
    ControlError,
    ControlTimeout,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    SessionClosedError,
    StoreUnavailable,
)
from .events import (
    EVENT_NAMES,
    AgentAudioDoneEvent,
    AgentReconnectedEvent,
    AgentThinkingEvent,
    BridgeErrorEvent,
    CallRecord,
    ConversationTextEvent,
    DtmfEvent,
    Event,
    FunctionCall,
    FunctionCallCancelledEvent,
    FunctionCallRequestEvent,
    InboundActivityEvent,
    PromptUpdatedEvent,
    SessionEndEvent,
    SessionResumedEvent,
    SessionStartEvent,
    SpeakUpdatedEvent,
    ThinkUpdatedEvent,
    TranscriptLine,
    UserStartedSpeakingEvent,
    WarningEvent,
)
from .protocols.deepgram import (
    AgentSettings,
    Endpoint,
    Flags,
    Function,
    ListenSettings,
    SpeakSettings,
    ThinkSettings,
)
from .serving import DrainingServer
from .session import Session
from .transports.agent_base import AgentConnection, AgentConnector
from .transports.agent_lean import LeanConnector
from .transports.agent_websockets import WebsocketsConnector
from .transports.redact import ServerLogFilter

__version__ = "0.1.0"

__all__ = [
    "EVENT_NAMES",
    "FORMATS",
    "AgentAudioDoneEvent",
    "AgentClosed",
    "AgentConfig",
    "AgentConnectError",
    "AgentConnection",
    "AgentConnector",
    "AgentError",
    "AgentFactory",
    "AgentReconnectedEvent",
    "AgentSettings",
    "AgentThinkingEvent",
    "AuthError",
    "BearerToken",
    "BridgeApp",
    "BridgeError",
    "BridgeErrorEvent",
    "CallInfo",
    "CallNotFound",
    "CallRecord",
    "CallStore",
    "CommandFailed",
    "ConfigError",
    "Connection",
    "ControlError",
    "ControlTimeout",
    "ConversationTextEvent",
    "DrainingServer",
    "DtmfEvent",
    "Endpoint",
    "Event",
    "Flags",
    "Function",
    "FunctionCall",
    "FunctionCallCancelledEvent",
    "FunctionCallRequestEvent",
    "InboundActivityEvent",
    "LeanConnector",
    "Limits",
    "ListenSettings",
    "LocalProtocolError",
    "MediaFormat",
    "Playout",
    "PromptUpdatedEvent",
    "ProtocolError",
    "Reconnect",
    "RemoteProtocolError",
    "Secret",
    "ServerLogFilter",
    "Session",
    "SessionClosedError",
    "SessionEndEvent",
    "SessionResumedEvent",
    "SessionStartEvent",
    "SpeakSettings",
    "SpeakUpdatedEvent",
    "StoreUnavailable",
    "ThinkSettings",
    "ThinkUpdatedEvent",
    "TranscriptLine",
    "UserStartedSpeakingEvent",
    "WarningEvent",
    "WebsocketsConnector",
    "__version__",
]
