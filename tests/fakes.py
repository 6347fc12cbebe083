"""Sockets as the runtime sees them, without a network: they take writes at once and
keep them (``log``: ``("vaic" | "agent", bytes)`` in the order written), and fail once
``room`` writes have been taken (never, by default)."""

from __future__ import annotations

from collections.abc import Callable

from acdg_asgi.errors import AgentClosed

__all__ = ["AwaitedAgent", "DirectVaic", "PushAgent"]

Log = list[tuple[str, bytes]]


class _Room:
    def __init__(self, log: Log | None, room: int | None) -> None:
        self.log: Log = log if log is not None else []
        self.room = room

    def _take(self, peer: str, data: bytes) -> bool:
        if self.room is not None and len(self.log) >= self.room:
            return False
        self.log.append((peer, data))
        return True


class DirectVaic(_Room):
    """VAIC's socket on the direct path (``DirectProtocol``), always keeping up."""

    backed_up = False

    def __init__(self, log: Log | None = None, *, room: int | None = None) -> None:
        super().__init__(log, room)

    def limit(self, budget: object) -> None:
        pass

    def listen(self, on_text: Callable[[str], None]) -> None:
        pass

    def ping(self) -> None:
        pass

    def write_text(self, data: bytes) -> bool:
        return self._take("vaic", data)


class AwaitedAgent(_Room):
    """An agent connection whose writes are awaited (``AgentConnection``)."""

    def __init__(self, log: Log | None = None, *, room: int | None = None) -> None:
        super().__init__(log, room)

    async def recv(self) -> str | bytes:
        raise AgentClosed("closed")

    async def send_text(self, data: bytes) -> None:
        self._write(data)

    async def send_audio(self, data: bytes) -> None:
        self._write(data)

    async def close(self) -> None:
        pass

    def _write(self, data: bytes) -> None:
        if not self._take("agent", data):
            raise AgentClosed("closed")


class PushAgent(AwaitedAgent):
    """A pushing agent connection (``PushAgentConnection``): writes without waiting."""

    def listen(self, on_message: Callable[[str | bytes], None],
               on_closed: Callable[[str], None]) -> None:
        pass

    def write_text(self, data: bytes) -> None:
        self._write(data)

    def write_audio(self, data: bytes) -> bool:
        self._write(data)
        return True
