"""acdg-asgi: AudioCodes Bot API (streaming mode) to Deepgram Voice Agent, as an ASGI app.

    from acdg_asgi import BridgeApp, AgentSettings, ThinkSettings

    bridge = BridgeApp(agent=AgentSettings(...), auth="token")
    app.mount("/audiocodes", bridge)
"""

from .agent import AgentClosed, AgentConnectError, AgentConnection, AgentConnector
from .app import AgentFactory, BridgeApp, CallInfo
from .audio import FORMATS, MediaFormat
from .auth import BearerToken, Connection
from .cluster import CallNotFound, ControlError
from .config import AgentConfig, Limits, Playout, Reconnect, Secret
from .errors import (
    AuthError,
    BridgeError,
    ConfigError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    SessionClosedError,
)
from .events import (
    EVENT_NAMES,
    AgentAudioDoneEvent,
    AgentReconnectedEvent,
    AgentThinkingEvent,
    BridgeErrorEvent,
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
from .store import CallStore, InMemoryStore

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
    "CallStore",
    "ConfigError",
    "Connection",
    "ControlError",
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
    "InMemoryStore",
    "InboundActivityEvent",
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
    "Session",
    "SessionClosedError",
    "SessionEndEvent",
    "SessionResumedEvent",
    "SessionStartEvent",
    "SpeakSettings",
    "SpeakUpdatedEvent",
    "ThinkSettings",
    "ThinkUpdatedEvent",
    "UserStartedSpeakingEvent",
    "WarningEvent",
    "__version__",
]
