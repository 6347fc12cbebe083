"""Session: the application's handle on one call.

Every method turns into a command on the :class:`~acdg_asgi.call.Call` and is then
written out by the call's runtime. The names and arguments are those of the predecessor
bridge, so handlers written for it keep working. After the call has ended every command
raises :class:`~acdg_asgi.errors.SessionClosedError` (a ``RuntimeError``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal, Protocol

import msgspec

from .audio import MediaFormat
from .call import Call
from .errors import LocalProtocolError
from .events import ConversationTextEvent
from .protocols import audiocodes as ac
from .protocols import deepgram as dg

__all__ = ["Session"]


class CallRunner(Protocol):
    """What a Session needs of its call's runtime: the call, and a way to command it."""

    call: Call

    async def command(self, fn: Callable[[Call, float], None]) -> None: ...

_DTMF = re.compile(r"[0-9*#A-Da-d]{1,20}")


def _event(name: str, **fields: Any) -> ac.Activity:
    return ac.Activity(type="event", name=name, **fields)


class Session:
    """One call, as the application sees it. Obtained as the first argument of handlers."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: CallRunner) -> None:
        self._runtime = runtime

    def __repr__(self) -> str:
        return f"<Session {self.session_id} conversation={self.conversation_id}>"

    # --- read-only state ---------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self._runtime.call.session_id

    @property
    def conversation_id(self) -> str:
        return self._runtime.call.conversation_id

    @property
    def media_format(self) -> MediaFormat:
        return self._runtime.call.media_format

    @property
    def is_active(self) -> bool:
        return self._runtime.call.is_active

    @property
    def caller(self) -> str | None:
        return self._runtime.call.initiate.caller

    def get_transcript(self) -> list[ConversationTextEvent]:
        """Every ``conversation_text`` so far, in order."""
        call = self._runtime.call
        return [
            ConversationTextEvent(
                session_id=call.session_id, conversation_id=call.conversation_id, at=0.0,
                role=role, content=content,
            )
            for role, content in call.transcript.texts()
        ]

    # --- the agent (Deepgram) -----------------------------------------------------------

    async def send_agent_message(
        self, content: str, *, behavior: Literal["default", "queue", "interrupt"] | None = None
    ) -> None:
        """Make the agent say ``content`` (``InjectAgentMessage``)."""
        await self._to_agent(dg.InjectAgentMessage(message=content, behavior=behavior))

    async def send_user_message(self, content: str) -> None:
        """Inject text as if the caller had said it (``InjectUserMessage``)."""
        await self._to_agent(dg.InjectUserMessage(content=content))

    async def update_prompt(self, prompt: str) -> None:
        """Change the agent's system prompt mid-call (``UpdatePrompt``)."""
        await self._to_agent(dg.UpdatePrompt(prompt=prompt))

    async def update_speak(self, speak: dg.SpeakSettings | dict[str, Any] | list[Any]) -> None:
        """Swap the voice (``UpdateSpeak``); a list is a fallback chain."""
        value = msgspec.convert(speak, dg.SpeakSettings | tuple[dg.SpeakSettings, ...])
        await self._to_agent(dg.UpdateSpeak(speak=value))

    async def update_think(self, think: dg.ThinkSettings | dict[str, Any] | list[Any]) -> None:
        """Replace the LLM configuration (``UpdateThink``); a list is a fallback chain."""
        value = msgspec.convert(think, dg.ThinkSettings | tuple[dg.ThinkSettings, ...])
        await self._to_agent(dg.UpdateThink(think=value))

    async def respond_to_function_call(self, id: str, name: str, content: Any) -> None:
        """Answer a client-side ``FunctionCallRequest``. Non-strings are sent as JSON."""
        text = content if isinstance(content, str) else msgspec.json.encode(content).decode()
        await self._to_agent(dg.FunctionCallResponse(id=id, name=name, content=text))

    # --- the call (AudioCodes) ----------------------------------------------------------

    async def transfer(
        self,
        destination: str,
        *,
        handover_reason: str | None = None,
        transfer_sip_headers: list[dict[str, str]] | None = None,
    ) -> None:
        """Transfer the call (SIP REFER) to a ``tel:`` or ``sip:`` URI; ends the session."""
        params: dict[str, Any] = {"transferTarget": destination}
        if handover_reason is not None:
            params["handoverReason"] = handover_reason
        if transfer_sip_headers:
            params["transferSipHeaders"] = transfer_sip_headers
        await self._runtime.command(lambda call, now: call.transfer_call(
            now, _event("transfer", activity_params=params)))

    async def end_session(self, reason: str | None = None) -> None:
        """Hang up (``hangup`` activity with ``hangupReason``) and end the session."""
        await self._runtime.command(
            lambda call, now: call.end_session(now, reason or "call ended by the application"))

    async def play_url(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        """Have VAIC fetch and play an audio file (``playUrl``)."""
        params = {"playUrlUrl": url, **(options or {})}
        await self._activities(_event("playUrl", activity_params=params))

    async def send_dtmf(self, digits: str, *, options: dict[str, Any] | None = None) -> None:
        """Send DTMF digits to the far end (``sendDtmf`` with ``dtmfDigits``)."""
        if not _DTMF.fullmatch(digits):
            raise LocalProtocolError(
                f"DTMF digits must be 1-20 of 0-9 * # A-D, not {digits!r}",
                conversation_id=self.conversation_id,
            )
        params = {"dtmfDigits": digits, **(options or {})}
        await self._activities(_event("sendDtmf", activity_params=params))

    async def send_meta_data(self, data: dict[str, Any]) -> None:
        """Send metadata to VAIC (``sendMetaData``; forwarded as SIP INFO or HTTP POST)."""
        await self._activities(_event("sendMetaData", value=data))

    async def abort_prompts(self) -> None:
        """Stop prompts VAIC is playing (``abortPrompts``)."""
        await self._activities(_event("abortPrompts"))

    async def expect_another_bot_message(self) -> None:
        """Tell VAIC another bot message follows: it starts its bot-input timer."""
        await self._activities(_event("expectAnotherBotMessage"))

    async def apply_config(self, params: dict[str, Any]) -> None:
        """Change session parameters (``config`` event with ``sessionParams``)."""
        await self._activities(_event("config", session_params=params))

    async def send_activity(self, activity: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Send any activity (or a list of them) in one ``activities`` message."""
        items = activity if isinstance(activity, list) else [activity]
        try:
            parsed = tuple(msgspec.convert(a, ac.Activity) for a in items)
        except msgspec.ValidationError as exc:
            raise LocalProtocolError(f"invalid activity: {exc}") from None
        await self._activities(*parsed)

    async def start_call_recording(self, params: dict[str, Any] | None = None) -> None:
        await self._activities(_event("startCallRecording", activity_params=params))

    async def stop_call_recording(self) -> None:
        await self._activities(_event("stopCallRecording"))

    async def pause_call_recording(self) -> None:
        await self._activities(_event("pauseCallRecording"))

    async def resume_call_recording(self) -> None:
        await self._activities(_event("resumeCallRecording"))

    async def _to_agent(self, msg: dg.ClientMessage) -> None:
        await self._runtime.command(lambda call, now: call.send_to_agent(msg, now))

    async def _activities(self, *activities: ac.Activity) -> None:
        await self._runtime.command(lambda call, now: call.send_activities(activities, now))
