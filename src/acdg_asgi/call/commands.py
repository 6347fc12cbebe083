"""What the application can ask of a call, defined once.

Each command is a Struct tagged with its method name. The same command comes from a
:class:`~acdg_asgi.Session` method, from ``bridge.control(cid)`` on any instance (it
travels to the owner as JSON), and from the HTTP control route (the request body is
decoded straight into it, so a wrong argument is a 400 that names it). :meth:`apply`
turns it into inputs of the :class:`~acdg_asgi.call.machine.Call`.

The typed methods that build these live in :class:`acdg_asgi.session.CallCommands`; a
test checks that every command has its method, with the same arguments.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal, TypeVar

import msgspec

from ..errors import LocalProtocolError
from ..protocols import audiocodes as ac
from ..protocols import deepgram as dg
from .machine import Call

__all__ = [
    "COMMANDS", "Command", "CommandUnion", "InvalidCommand", "build", "make_command",
]

# AudioCodes: "only digits, *, and/or #", up to 20 (A-D are ignored by VAIC)
_DTMF: Final = re.compile(r"[0-9*#]{1,20}")
# An activity's fields, by either spelling: the wire's (camelCase) and Python's.
_ACTIVITY_FIELDS: Final = {
    name: f.encode_name
    for f in msgspec.structs.fields(ac.Activity) for name in (f.name, f.encode_name)
}


class InvalidCommand(LocalProtocolError, ValueError):
    """A command with arguments that cannot be sent (say which, and why)."""


C = TypeVar("C", bound="Command")


class Command(msgspec.Struct, tag_field="method", kw_only=True, frozen=True,
              forbid_unknown_fields=True, omit_defaults=True):
    def apply(self, call: Call, now: float) -> None:
        raise NotImplementedError


def _event(name: str, **fields: Any) -> ac.Activity:
    return ac.Activity(type="event", name=name, **fields)


def _activities(call: Call, now: float, *activities: ac.Activity) -> None:
    call.send_activities(activities, now)


# --- the agent (Deepgram) --------------------------------------------------------------


class SendAgentMessage(Command, tag="send_agent_message", frozen=True):
    content: str
    behavior: Literal["default", "queue", "interrupt"] | None = None
    interruptible: bool = True

    def apply(self, call: Call, now: float) -> None:
        if not self.interruptible:
            call.say_uninterruptible(self.content)
        call.send_to_agent(dg.InjectAgentMessage(message=self.content, behavior=self.behavior),
                           now)


class SendUserMessage(Command, tag="send_user_message", frozen=True):
    content: str

    def apply(self, call: Call, now: float) -> None:
        call.send_to_agent(dg.InjectUserMessage(content=self.content), now)


class UpdatePrompt(Command, tag="update_prompt", frozen=True):
    prompt: str

    def apply(self, call: Call, now: float) -> None:
        call.send_to_agent(dg.UpdatePrompt(prompt=self.prompt), now)


class UpdateSpeak(Command, tag="update_speak", frozen=True):
    speak: dg.SpeakSettings | tuple[dg.SpeakSettings, ...]

    def apply(self, call: Call, now: float) -> None:
        call.send_to_agent(dg.UpdateSpeak(speak=self.speak), now)


class UpdateThink(Command, tag="update_think", frozen=True):
    think: dg.ThinkSettings | tuple[dg.ThinkSettings, ...]

    def apply(self, call: Call, now: float) -> None:
        call.send_to_agent(dg.UpdateThink(think=self.think), now)


class UpdateListen(Command, tag="update_listen", frozen=True):
    listen: dg.ListenSettings

    def apply(self, call: Call, now: float) -> None:
        call.send_to_agent(dg.UpdateListen(listen=self.listen), now)


class UpdateThinkLive(Command, tag="update_think_live", frozen=True):
    think_live: dg.ThinkLiveSettings

    def apply(self, call: Call, now: float) -> None:
        call.send_to_agent(dg.UpdateThinkLive(think_live=self.think_live), now)


class ForceEndTurn(Command, tag="force_end_turn", frozen=True):
    def apply(self, call: Call, now: float) -> None:
        call.send_to_agent(dg.ForceEndTurn(), now)


class SendThinkProviderMessage(Command, tag="send_think_provider_message", frozen=True):
    content: Any

    def apply(self, call: Call, now: float) -> None:
        call.send_to_agent(dg.CustomToThinkProvider(content=self.content), now)


class RespondToFunctionCall(Command, tag="respond_to_function_call", frozen=True):
    id: str
    name: str
    content: Any

    def apply(self, call: Call, now: float) -> None:
        content = self.content
        text = content if isinstance(content, str) else msgspec.json.encode(content).decode()
        call.send_to_agent(dg.FunctionCallResponse(id=self.id, name=self.name, content=text),
                           now)


# --- the call (AudioCodes) -------------------------------------------------------------


def _sip_headers(headers: list[dict[str, str]] | None, what: str) -> None:
    for header in headers or ():
        if set(header) != {"name", "value"}:
            raise InvalidCommand(f"{what}: each SIP header is {{'name': ..., 'value': ...}}, "
                                 f"not {header!r}")


class Transfer(Command, tag="transfer", frozen=True):
    destination: str
    handover_reason: str | None = None
    transfer_sip_headers: list[dict[str, str]] | None = None
    referred_by_url: str | None = None

    def __post_init__(self) -> None:
        _sip_headers(self.transfer_sip_headers, "transfer_sip_headers")

    def apply(self, call: Call, now: float) -> None:
        params: dict[str, Any] = {"transferTarget": self.destination}
        if self.handover_reason is not None:
            params["handoverReason"] = self.handover_reason
        if self.transfer_sip_headers:
            params["transferSipHeaders"] = self.transfer_sip_headers
        if self.referred_by_url is not None:
            params["transferReferredByURL"] = self.referred_by_url
        call.transfer_call(now, _event("transfer", activity_params=params))


class EndSession(Command, tag="end_session", frozen=True):
    reason: str | None = None
    sip_headers: list[dict[str, str]] | None = None
    params: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _sip_headers(self.sip_headers, "sip_headers")

    def apply(self, call: Call, now: float) -> None:
        params = dict(self.params or {})
        if self.sip_headers:
            # AudioCodes' hangup page says BYE headers can be sent but its readable part
            # does not name the field: named as transfer's transferSipHeaders is.
            params["hangupSipHeaders"] = self.sip_headers
        call.end_session(now, self.reason or "call ended by the application", params or None)


class PlayUrl(Command, tag="play_url", frozen=True):
    url: str
    options: dict[str, Any] | None = None

    def apply(self, call: Call, now: float) -> None:
        params = {"playUrlUrl": self.url, **(self.options or {})}
        _activities(call, now, _event("playUrl", activity_params=params))


class SendDtmf(Command, tag="send_dtmf", frozen=True):
    digits: str
    options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not _DTMF.fullmatch(self.digits):
            raise InvalidCommand(f"DTMF digits must be 1-20 of 0-9 * #, not {self.digits!r}")

    def apply(self, call: Call, now: float) -> None:
        params = {"dtmfDigits": self.digits, **(self.options or {})}
        _activities(call, now, _event("sendDtmf", activity_params=params))


class SendMetaData(Command, tag="send_meta_data", frozen=True):
    data: dict[str, Any]

    def apply(self, call: Call, now: float) -> None:
        _activities(call, now, _event("sendMetaData", value=self.data))


class AbortPrompts(Command, tag="abort_prompts", frozen=True):
    def apply(self, call: Call, now: float) -> None:
        _activities(call, now, _event("abortPrompts"))


class ExpectAnotherBotMessage(Command, tag="expect_another_bot_message", frozen=True):
    def apply(self, call: Call, now: float) -> None:
        _activities(call, now, _event("expectAnotherBotMessage"))


class ApplyConfig(Command, tag="apply_config", frozen=True):
    params: dict[str, Any]

    def apply(self, call: Call, now: float) -> None:
        _activities(call, now, _event("config", session_params=self.params))


class SendActivity(Command, tag="send_activity", frozen=True):
    activity: dict[str, Any] | list[dict[str, Any]]

    def __post_init__(self) -> None:
        self.parsed()  # refuse a malformed activity here, not when it is sent

    def parsed(self) -> tuple[ac.Activity, ...]:
        """The activities, every field kept (in either spelling: ``activityParams`` or
        ``activity_params``); a field the Bot API has no place for is refused by name."""
        items = self.activity if isinstance(self.activity, list) else [self.activity]
        out = []
        for item in items:
            wire: dict[str, Any] = {}
            for key, value in item.items():
                name = _ACTIVITY_FIELDS.get(key)
                if name is None:
                    known = ", ".join(sorted(set(_ACTIVITY_FIELDS.values())))
                    raise InvalidCommand(f"invalid activity: no field {key!r} in a Bot API "
                                         f"activity (known: {known})")
                if name in wire:
                    raise InvalidCommand(f"invalid activity: {key!r} given twice")
                wire[name] = value
            try:
                out.append(msgspec.convert(wire, ac.Activity))
            except msgspec.ValidationError as exc:
                raise InvalidCommand(f"invalid activity: {exc}") from None
        return tuple(out)

    def apply(self, call: Call, now: float) -> None:
        _activities(call, now, *self.parsed())


class StartCallRecording(Command, tag="start_call_recording", frozen=True):
    params: dict[str, Any] | None = None

    def apply(self, call: Call, now: float) -> None:
        _activities(call, now, _event("startCallRecording", activity_params=self.params))


class StopCallRecording(Command, tag="stop_call_recording", frozen=True):
    def apply(self, call: Call, now: float) -> None:
        _activities(call, now, _event("stopCallRecording"))


class PauseCallRecording(Command, tag="pause_call_recording", frozen=True):
    def apply(self, call: Call, now: float) -> None:
        _activities(call, now, _event("pauseCallRecording"))


class ResumeCallRecording(Command, tag="resume_call_recording", frozen=True):
    def apply(self, call: Call, now: float) -> None:
        _activities(call, now, _event("resumeCallRecording"))


# --- sensitive mode ----------------------------------------------------------------------


class EnterSensitiveMode(Command, tag="enter_sensitive_mode", frozen=True):
    pause_recording: bool | None = None
    keep_audio_from_agent: bool | None = None
    keep_digits_from_agent: bool | None = None

    def apply(self, call: Call, now: float) -> None:
        given = {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}
        call.enter_sensitive(now, msgspec.structs.replace(call.options.sensitive, **given))


class LeaveSensitiveMode(Command, tag="leave_sensitive_mode", frozen=True):
    def apply(self, call: Call, now: float) -> None:
        call.leave_sensitive(now)


CommandUnion = (
    SendAgentMessage | SendUserMessage | UpdatePrompt | UpdateSpeak | UpdateThink
    | UpdateListen | UpdateThinkLive | ForceEndTurn | SendThinkProviderMessage
    | RespondToFunctionCall | Transfer | EndSession | PlayUrl | SendDtmf | SendMetaData
    | AbortPrompts | ExpectAnotherBotMessage | ApplyConfig | SendActivity
    | StartCallRecording | StopCallRecording | PauseCallRecording | ResumeCallRecording
    | EnterSensitiveMode | LeaveSensitiveMode
)

COMMANDS: Final[dict[str, type[Command]]] = {
    cls.__struct_config__.tag: cls for cls in CommandUnion.__args__
}
"""Every command by its method name."""


def build(command: type[C], arguments: dict[str, Any]) -> C:
    """``command`` with ``arguments`` (the keyword arguments of the Session method, or a
    JSON body), validated; :class:`InvalidCommand` names what is wrong."""
    try:
        return msgspec.convert(arguments, command)
    except msgspec.ValidationError as exc:
        raise InvalidCommand(f"{command.__struct_config__.tag}: {exc}") from None


def make_command(method: str, arguments: dict[str, Any]) -> Command:
    """The command named ``method`` (as in a URL) with ``arguments``, validated."""
    command = COMMANDS.get(method)
    if command is None:
        known = ", ".join(sorted(COMMANDS))
        raise InvalidCommand(f"no call command {method!r}; known: {known}")
    return build(command, arguments)
