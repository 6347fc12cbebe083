"""The error tree. Whose fault it was decides what happens.

    BridgeError
    ├── ProtocolError                 carries the conversation id
    │   ├── RemoteProtocolError       a peer (VAIC or the agent) broke the protocol:
    │   │                             logged, answered per the protocol, other calls untouched
    │   └── LocalProtocolError        the application asked for something illegal right now
    │       └── SessionClosedError    a Session method was called after the call ended
    ├── AuthError                     an upgrade was refused (status code for the answer)
    ├── ConfigError                   the bridge or an agent config is unusable (a ValueError)
    ├── AgentError                    the agent connection (Deepgram)
    │   ├── AgentConnectError         could not be opened (HTTP status, if there was one;
    │   │                             ``retryable`` False when a retry cannot help)
    │   └── AgentClosed               is gone: closed by either side, or failed
    ├── VaicClosed                    VAIC's socket is gone
    ├── StoreUnavailable              the shared call-state store cannot be reached now
    └── ControlError                  a command for a call could not be carried out
        ├── CallNotFound              no live instance owns that call
        ├── CommandFailed             the owner ran it and it raised
        └── ControlTimeout            the owner did not answer in time

:class:`MigrationWarning` is no error: code written for the predecessor that still runs
gets it, with what to write instead (see MIGRATING.md).

Socket and store errors never reach the application from a call: the runtime turns them
into "socket lost" inputs of the call, or into a warning while the call goes on.
"""

from __future__ import annotations

import warnings

__all__ = [
    "AgentClosed",
    "AgentConnectError",
    "AgentError",
    "AuthError",
    "BridgeError",
    "CallNotFound",
    "CommandFailed",
    "ConfigError",
    "ControlError",
    "ControlTimeout",
    "LocalProtocolError",
    "MigrationWarning",
    "ProtocolError",
    "RemoteProtocolError",
    "SessionClosedError",
    "StoreUnavailable",
    "VaicClosed",
]


class BridgeError(Exception):
    """Base of every error this package raises."""


class ProtocolError(BridgeError):
    def __init__(self, message: str, *, conversation_id: str | None = None) -> None:
        super().__init__(message)
        self.conversation_id = conversation_id

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


class AgentError(BridgeError):
    """The connection to the agent failed."""


class AgentConnectError(AgentError):
    """The agent connection could not be opened; ``status`` is the HTTP answer if any.

    ``retryable`` is ``False`` for answers that the same request will get again: a 3xx,
    and a 4xx other than 408 and 429 (a wrong key, a wrong path), or a certificate that
    does not verify. The call then ends at once instead of retrying.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retryable: bool | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable if retryable is not None else not (
            status is not None and 300 <= status < 500 and status not in (408, 429))


class AgentClosed(AgentError):
    """The agent connection is gone (closed by either side, or failed)."""


class VaicClosed(BridgeError):
    """VAIC's socket is gone."""


class StoreUnavailable(BridgeError):
    """The shared store cannot be reached right now."""


class ControlError(BridgeError):
    """A command for a call could not be carried out."""


class CallNotFound(ControlError):
    """No live instance owns that call."""


class CommandFailed(ControlError):
    """The owner ran the command and it raised (e.g. the call had just ended)."""


class ControlTimeout(ControlError):
    """The owner did not answer in time."""


class MigrationWarning(DeprecationWarning):
    """Predecessor code that still works, with what to write instead.

    A :class:`DeprecationWarning`, so Python shows it for code run as ``__main__`` and
    pytest in its summary; ``python -W error::acdg_asgi.MigrationWarning`` finds every
    place at once.
    """


def moved(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is the predecessor's spelling of ``new``; the default
    ``stacklevel`` points at the caller of the function that calls this."""
    warnings.warn(f"{old} is the predecessor's API; use {new} (see MIGRATING.md)",
                  MigrationWarning, stacklevel=stacklevel)
