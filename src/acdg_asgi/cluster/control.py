"""Control a call from anywhere: ``bridge.control(conversation_id)``.

It offers the Session's call-control methods. On the instance that owns the call they run
directly; elsewhere they travel through the shared store to the owner, which answers, or
a :class:`~acdg_asgi.errors.ControlError` says why not (``CallNotFound`` when no live
instance owns the call)::

    await bridge.control(cid).transfer("sip:agent@pbx.example.com")
"""

from __future__ import annotations

from typing import Any

from ..errors import CallNotFound
from .cluster import CONTROL_METHODS, Cluster, LocalCalls

__all__ = ["CallControl"]


class CallControl:
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

    async def call(self, method: str, **kwargs: Any) -> None:
        """Run ``Session.<method>(**kwargs)`` on the call, wherever it is."""
        if method not in CONTROL_METHODS:
            raise ValueError(f"not a call-control method: {method!r}")
        try:
            await self._local.run_command(self.conversation_id, method, kwargs)
            return
        except CallNotFound:
            if not self._cluster.shared:
                raise CallNotFound(f"no call {self.conversation_id!r}") from None
        await self._cluster.remote(self.conversation_id, method, kwargs, self.timeout_s)

    async def send_agent_message(self, content: str, **kwargs: Any) -> None:
        await self.call("send_agent_message", content=content, **kwargs)

    async def send_user_message(self, content: str) -> None:
        await self.call("send_user_message", content=content)

    async def update_prompt(self, prompt: str) -> None:
        await self.call("update_prompt", prompt=prompt)

    async def update_speak(self, speak: Any) -> None:
        await self.call("update_speak", speak=speak)

    async def update_think(self, think: Any) -> None:
        await self.call("update_think", think=think)

    async def respond_to_function_call(self, id: str, name: str, content: Any) -> None:
        await self.call("respond_to_function_call", id=id, name=name, content=content)

    async def transfer(self, destination: str, **kwargs: Any) -> None:
        await self.call("transfer", destination=destination, **kwargs)

    async def end_session(self, reason: str | None = None) -> None:
        await self.call("end_session", reason=reason)

    async def play_url(self, url: str, **kwargs: Any) -> None:
        await self.call("play_url", url=url, **kwargs)

    async def send_dtmf(self, digits: str, **kwargs: Any) -> None:
        await self.call("send_dtmf", digits=digits, **kwargs)

    async def send_meta_data(self, data: dict[str, Any]) -> None:
        await self.call("send_meta_data", data=data)

    async def abort_prompts(self) -> None:
        await self.call("abort_prompts")

    async def expect_another_bot_message(self) -> None:
        await self.call("expect_another_bot_message")

    async def apply_config(self, params: dict[str, Any]) -> None:
        await self.call("apply_config", params=params)

    async def send_activity(self, activity: Any) -> None:
        await self.call("send_activity", activity=activity)

    async def start_call_recording(self, params: dict[str, Any] | None = None) -> None:
        await self.call("start_call_recording", params=params)

    async def stop_call_recording(self) -> None:
        await self.call("stop_call_recording")

    async def pause_call_recording(self) -> None:
        await self.call("pause_call_recording")

    async def resume_call_recording(self) -> None:
        await self.call("resume_call_recording")
