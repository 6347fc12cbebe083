"""Control a call from anywhere: ``bridge.control(conversation_id)``.

It offers the Session's call-control methods (:class:`~acdg_asgi.session.CallCommands`).
On the instance that owns the call they run directly; elsewhere they travel through the
shared store to the owner, which answers, or a :class:`~acdg_asgi.errors.ControlError`
says why not (``CallNotFound`` when no live instance owns the call)::

    await bridge.control(cid).transfer("sip:agent@pbx.example.com")
"""

from __future__ import annotations

from typing import Any

from ..call.commands import Command, make_command
from ..errors import CallNotFound
from ..session import CallCommands
from .cluster import Cluster, LocalCalls

__all__ = ["CallControl"]


class CallControl(CallCommands):
    __slots__ = ("_cluster", "_local", "conversation_id", "timeout_s")

    def __init__(
        self, local: LocalCalls, cluster: Cluster, conversation_id: str, *,
        timeout_s: float = 5.0,
    ) -> None:
        self._local = local
        self._cluster = cluster
        self.conversation_id = conversation_id
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"<CallControl {self.conversation_id}>"

    async def run(self, command: Command) -> None:
        """Run ``command`` on the call, wherever it is."""
        try:
            await self._local.run_command(self.conversation_id, command)
            return
        except CallNotFound:
            if not self._cluster.shared:
                raise CallNotFound(f"no call {self.conversation_id!r}") from None
        await self._cluster.remote(self.conversation_id, command, self.timeout_s)

    async def call(self, method: str, **arguments: Any) -> None:
        """Run the command named ``method`` (a Session method name) with ``arguments``."""
        await self.run(make_command(method, arguments))
