"""The error tree. Whose fault it was decides what happens.

    BridgeError
    ├── ProtocolError                 carries the conversation id and a hangup reason
    │   ├── RemoteProtocolError       a peer (VAIC or the agent) broke the protocol:
    │   │                             logged, answered per the protocol, other calls untouched
    │   └── LocalProtocolError        the application asked for something illegal right now
    │       └── SessionClosedError    a Session method was called after the call ended
    ├── AuthError                     an upgrade was refused (status code for the answer)
    └── ConfigError                   the bridge or an agent config is unusable
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BridgeError",
    "ConfigError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "SessionClosedError",
]


class BridgeError(Exception):
    """Base of every error this package raises."""


class ProtocolError(BridgeError):
    def __init__(
        self,
        message: str,
        *,
        conversation_id: str | None = None,
        hangup_reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.conversation_id = conversation_id
        self.hangup_reason = hangup_reason

    def __str__(self) -> str:
        text = super().__str__()
        return f"[{self.conversation_id}] {text}" if self.conversation_id else text


class RemoteProtocolError(ProtocolError):
    """A peer sent something the protocol does not allow here."""


class LocalProtocolError(ProtocolError):
    """The application asked for something the call cannot do in its current state."""


class SessionClosedError(LocalProtocolError, RuntimeError):
    """The call has ended; its Session accepts no more commands.

    Also a ``RuntimeError``, as the predecessor bridge raised, so existing
    ``except RuntimeError`` blocks keep working.
    """


class AuthError(BridgeError):
    def __init__(self, message: str = "unauthorized", *, status_code: int = 401) -> None:
        super().__init__(message)
        self.status_code = status_code


class ConfigError(BridgeError, ValueError):
    """A configuration value is invalid."""
