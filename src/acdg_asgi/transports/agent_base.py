"""The far end: how the bridge opens a connection to a Deepgram Voice Agent.

A connector is anything with ``async connect(url, headers) -> AgentConnection``. Two
ship with the package: :class:`~acdg_asgi.transports.agent_lean.LeanConnector` (the
default: frames by hand, messages pushed from ``data_received``) and
:class:`~acdg_asgi.transports.agent_websockets.WebsocketsConnector` (the ``websockets``
client). Tests and ``acdg demo`` point either at the stand-in agent
(:mod:`acdg_asgi.testing.agent`); any other client can be dropped in the same way.

A connection is either awaited (:class:`AgentConnection`: the runtime reads and writes
it from tasks) or pushing (:class:`PushAgentConnection`: it hands each message over as
it arrives and takes writes without waiting). The runtime asks which once, at connect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

__all__ = ["AgentConnection", "AgentConnector", "PushAgentConnection"]


class AgentConnection(Protocol):
    async def recv(self) -> str | bytes:
        """The next frame: ``str`` for JSON text, ``bytes`` for audio. Raises AgentClosed."""
        ...

    async def send_text(self, data: bytes) -> None:
        """Send encoded JSON as a text frame. Raises AgentClosed."""
        ...

    async def send_audio(self, data: bytes) -> None:
        """Send audio as a binary frame. Raises AgentClosed."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class PushAgentConnection(AgentConnection, Protocol):
    """A connection that hands messages over as they arrive and writes without waiting:
    the fast path (see :mod:`acdg_asgi.transports.agent_lean`)."""

    def listen(
        self, on_message: Callable[[str | bytes], None], on_closed: Callable[[str], None]
    ) -> None: ...

    def write_text(self, data: bytes) -> None:
        """Write a text frame now. Raises AgentClosed."""
        ...

    def write_audio(self, data: bytes) -> bool:
        """Write a binary frame now; ``False`` if it was dropped because the agent does
        not read (memory stays bounded). Raises AgentClosed."""
        ...


class AgentConnector(Protocol):
    async def connect(self, url: str, headers: Mapping[str, str]) -> AgentConnection: ...
