"""Session: the application's handle on one call, and the call commands it shares with
``bridge.control(conversation_id)``.

Every command method builds a command (:mod:`acdg_asgi.call.commands`) and runs it: a
:class:`Session` on its own call, a :class:`~acdg_asgi.cluster.control.CallControl` on
whichever instance owns the call. The names and arguments are those of the predecessor
bridge, so handlers written for it keep working. After the call has ended every command
raises :class:`~acdg_asgi.errors.SessionClosedError` (a ``RuntimeError``); arguments that
cannot be sent raise :class:`~acdg_asgi.call.commands.InvalidCommand` (a ``ValueError``)
naming the argument.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from .audio import MediaFormat
from .call import Call
from .call import commands as cmd
from .events import CallDetails, ConversationTextEvent
from .protocols import deepgram as dg

__all__ = ["CallCommands", "SensitiveInput", "Session"]


class CallCommands:
    """The call-control methods, one per command; subclasses say where a command runs."""

    __slots__ = ()

    async def run(self, command: cmd.Command) -> None:
        raise NotImplementedError

    async def _run(self, command: type[cmd.Command], **arguments: Any) -> None:
        await self.run(cmd.build(command, arguments))

    # --- the agent (Deepgram) -----------------------------------------------------------

    async def send_agent_message(
        self, content: str, *, behavior: Literal["default", "queue", "interrupt"] | None = None,
        interruptible: bool = True,
    ) -> None:
        """Make the agent say ``content`` (``InjectAgentMessage``). While the agent is
        speaking, Deepgram's default behaviour refuses it (a ``warning`` event): pass
        ``behavior="queue"`` or ``"interrupt"``. ``interruptible=False``: the caller cannot
        cut it short (a legal disclosure); it plays in full."""
        await self._run(cmd.SendAgentMessage, content=content, behavior=behavior,
                        interruptible=interruptible)

    async def send_user_message(self, content: str) -> None:
        """Inject text as if the caller had said it (``InjectUserMessage``)."""
        await self._run(cmd.SendUserMessage, content=content)

    # Every update is kept with the call: a reconnect or a take-over by another instance
    # starts the new agent connection with it. Sent while the agent is reconnecting, it
    # is carried by the new connection's Settings.

    async def update_prompt(self, prompt: str) -> None:
        """Add to the agent's system prompt mid-call (``UpdatePrompt``: Deepgram adds it to
        the current prompt rather than replacing it)."""
        await self._run(cmd.UpdatePrompt, prompt=prompt)

    async def update_speak(self, speak: dg.SpeakSettings | dict[str, Any] | list[Any]) -> None:
        """Swap the voice (``UpdateSpeak``); a list is a fallback chain."""
        await self._run(cmd.UpdateSpeak, speak=speak)

    async def update_think(self, think: dg.ThinkSettings | dict[str, Any] | list[Any]) -> None:
        """Replace the LLM configuration (``UpdateThink``); a list is a fallback chain."""
        await self._run(cmd.UpdateThink, think=think)

    async def update_listen(self, listen: dg.ListenSettings | dict[str, Any]) -> None:
        """Change speech recognition mid-call (``UpdateListen``: the provider fields given
        change, e.g. ``{"provider": {"type": "deepgram", "version": "v2", "model":
        "flux-general-multi", "language_hints": ["es"]}}``)."""
        await self._run(cmd.UpdateListen, listen=listen)

    async def update_think_live(self, think_live: dg.ThinkLiveSettings | dict[str, Any]) -> None:
        """Change the Think Live settings (``UpdateThink_Live``; Deepgram early access)."""
        await self._run(cmd.UpdateThinkLive, think_live=think_live)

    async def force_end_turn(self) -> None:
        """End the caller's turn now (``ForceEndTurn``; Flux listen models), e.g. after a
        DTMF key: the agent answers what it heard so far."""
        await self._run(cmd.ForceEndTurn)

    async def send_think_provider_message(self, content: Any) -> None:
        """A custom payload for a custom think provider (``__customToThinkProvider``)."""
        await self._run(cmd.SendThinkProviderMessage, content=content)

    async def respond_to_function_call(self, id: str, name: str, content: Any) -> None:
        """Answer a client-side ``FunctionCallRequest``. Non-strings are sent as JSON."""
        await self._run(cmd.RespondToFunctionCall, id=id, name=name, content=content)

    # --- the call (AudioCodes) ----------------------------------------------------------

    async def transfer(
        self,
        destination: str,
        *,
        handover_reason: str | None = None,
        transfer_sip_headers: list[dict[str, str]] | None = None,
        referred_by_url: str | None = None,
    ) -> None:
        """Transfer the call (SIP REFER) to a ``tel:`` or ``sip:`` URI, once the agent's
        last words have played. The call stays up until VAIC says how it went: answered
        (or ``session.end``) ends it with reason ``transfer``; failed gives it back to the
        agent (``transfer_failed``); no word within ``Limits.transfer_timeout_s`` ends it.
        ``transfer_sip_headers``: ``[{"name": "X-Case", "value": "42"}]``;
        ``referred_by_url``: the ``Referred-By`` (``transferReferredByURL``)."""
        await self._run(cmd.Transfer, destination=destination, handover_reason=handover_reason,
                        transfer_sip_headers=transfer_sip_headers,
                        referred_by_url=referred_by_url)

    async def end_session(
        self,
        reason: str | None = None,
        *,
        sip_headers: list[dict[str, str]] | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Hang up (``hangup`` activity with ``hangupReason``) once the agent's last words
        have played, and end the session. ``sip_headers`` go on the SIP BYE (sent as
        ``hangupSipHeaders``); ``params`` are further ``activityParams`` as they are."""
        await self._run(cmd.EndSession, reason=reason, sip_headers=sip_headers, params=params)

    async def play_url(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        """Have VAIC fetch and play an audio file (``playUrl``)."""
        await self._run(cmd.PlayUrl, url=url, options=options)

    async def send_dtmf(self, digits: str, *, options: dict[str, Any] | None = None) -> None:
        """Send DTMF digits to the far end (``sendDtmf`` with ``dtmfDigits``: 1-20 of
        ``0-9 * #``)."""
        await self._run(cmd.SendDtmf, digits=digits, options=options)

    async def send_meta_data(self, data: dict[str, Any]) -> None:
        """Send metadata to VAIC (``sendMetaData``; forwarded as SIP INFO or HTTP POST)."""
        await self._run(cmd.SendMetaData, data=data)

    async def abort_prompts(self) -> None:
        """Stop prompts VAIC is playing (``abortPrompts``)."""
        await self._run(cmd.AbortPrompts)

    async def expect_another_bot_message(self) -> None:
        """Tell VAIC another bot message follows: it starts its bot-input timer."""
        await self._run(cmd.ExpectAnotherBotMessage)

    async def apply_config(self, params: dict[str, Any]) -> None:
        """Change session parameters (``config`` event with ``sessionParams``)."""
        await self._run(cmd.ApplyConfig, params=params)

    async def send_activity(self, activity: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Send any activity (or a list of them) in one ``activities`` message."""
        await self._run(cmd.SendActivity, activity=activity)

    async def start_call_recording(self, params: dict[str, Any] | None = None) -> None:
        await self._run(cmd.StartCallRecording, params=params)

    async def stop_call_recording(self) -> None:
        await self._run(cmd.StopCallRecording)

    async def pause_call_recording(self) -> None:
        await self._run(cmd.PauseCallRecording)

    async def resume_call_recording(self) -> None:
        await self._run(cmd.ResumeCallRecording)

    # --- sensitive mode -------------------------------------------------------------------

    async def enter_sensitive_mode(
        self, *, pause_recording: bool | None = None, keep_audio_from_agent: bool | None = None,
        keep_digits_from_agent: bool | None = None,
    ) -> None:
        """Sensitive mode on (see :meth:`sensitive`); ``None`` keeps the bridge's
        ``SensitiveMode`` setting."""
        await self._run(cmd.EnterSensitiveMode, pause_recording=pause_recording,
                        keep_audio_from_agent=keep_audio_from_agent,
                        keep_digits_from_agent=keep_digits_from_agent)

    async def leave_sensitive_mode(self) -> None:
        """Sensitive mode off: recording resumes, masking stops."""
        await self._run(cmd.LeaveSensitiveMode)

    def sensitive(self, **mode: bool | None) -> AbstractAsyncContextManager[Any]:
        """``async with ....sensitive():`` sensitive mode for the block (payment details,
        identity checks): VAIC's recording pauses, the caller's audio and keys are kept
        from the agent, and what the caller says or keys is masked in the transcript, the
        record, the logs and every event; on leaving, all of it is undone. ``mode``: the
        arguments of :meth:`enter_sensitive_mode`."""
        return _sensitive_block(self, mode, None)


async def _leave(commands: CallCommands) -> None:
    # the call may have ended inside the block: nothing to undo then
    with anyio.CancelScope(shield=True), contextlib.suppress(RuntimeError):
        await commands.leave_sensitive_mode()


@asynccontextmanager
async def _sensitive_block(
    commands: CallCommands, mode: dict[str, bool | None], keys: SensitiveInput | None
) -> AsyncIterator[SensitiveInput | None]:
    await commands.enter_sensitive_mode(**mode)
    try:
        yield keys
    finally:
        await _leave(commands)


class SensitiveInput:
    """What the caller keys in sensitive mode, for the code inside ``session.sensitive()``
    only: no event, log line or record carries it."""

    __slots__ = ("_keys",)

    def __init__(self, keys: MemoryObjectReceiveStream[str]) -> None:
        self._keys = keys

    async def digits(self, *, timeout_s: float | None = None) -> str | None:
        """The next input keyed (one ``DTMF`` activity, or what ``DtmfInput`` collected);
        ``None`` after ``timeout_s`` or when the call ends."""
        with anyio.move_on_after(timeout_s):
            try:
                return await self._keys.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return None
        return None


class CallRunner(Protocol):
    """What a Session needs of its call's runtime: the call, and a way to command it."""

    call: Call

    async def command(self, fn: Callable[[Call, float], None]) -> None: ...

    def sensitive_keys(self) -> MemoryObjectReceiveStream[str]:
        """A stream of what the caller keys in sensitive mode, until it is closed."""
        ...


class Session(CallCommands):
    """One call, as the application sees it. Obtained as the first argument of handlers."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: CallRunner) -> None:
        self._runtime = runtime

    def __repr__(self) -> str:
        return f"<Session {self.session_id} conversation={self.conversation_id}>"

    async def run(self, command: cmd.Command) -> None:
        """Run a command on this call (what every command method does)."""
        await self._runtime.command(command.apply)

    def sensitive(self, **mode: bool | None) -> AbstractAsyncContextManager[SensitiveInput]:
        """``async with session.sensitive() as sensitive:`` as
        :meth:`CallCommands.sensitive`, and ``await sensitive.digits()`` gives the block
        what the caller keys::

            async with session.sensitive() as sensitive:
                await session.send_agent_message("Please key in your card number, then #.")
                card = await sensitive.digits(timeout_s=60)
        """
        return _keys_block(self, mode)

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

    @property
    def details(self) -> CallDetails | None:
        """What VAIC's ``start`` said about the call (``None`` until it came)."""
        return self._runtime.call.details

    def get_transcript(self) -> list[ConversationTextEvent]:
        """Every ``conversation_text`` turn so far, in order (backchannels and fillers left
        out); an agent utterance the caller cut short has what was heard as ``content``
        and the rest as ``unheard``."""
        call = self._runtime.call
        return [
            ConversationTextEvent(
                session_id=call.session_id, conversation_id=call.conversation_id, at=0.0,
                role=role, content=content, unheard=unheard,
            )
            for role, content, unheard, _ in call.transcript.texts()
        ]


@asynccontextmanager
async def _keys_block(session: Session, mode: dict[str, bool | None]
                      ) -> AsyncIterator[SensitiveInput]:
    keys = session._runtime.sensitive_keys()
    with keys:
        async with _sensitive_block(session, mode, SensitiveInput(keys)) as block:
            assert block is not None
            yield block
