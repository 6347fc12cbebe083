"""What VAIC's activities mean: the call's ``start``, ``DTMF`` and the notifications, typed.

Every activity also reaches the application raw (``InboundActivityEvent``); the ones
named here are read tolerantly (a missing or mistyped field becomes ``None``, never an
error) into their own events, and ``start`` and ``transferStatus`` drive the call.
Names are matched case-insensitively: some VAIC peers send ``dtmf``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from .. import events as ev
from .parts import CallParts

__all__ = ["NOTIFICATIONS", "details_from_start", "on_activity"]

# start parameters with a field of their own in CallDetails; any other is a SIP header
# mapped by sipHeadersToBot (or something newer)
_KNOWN: Final = {
    "caller": "caller", "callerHost": "caller_host", "callerDisplayName": "caller_display_name",
    "callee": "callee", "calleeHost": "callee_host", "vaigConversationId": "vaig_conversation_id",
    "outboundTarget": "outbound_target", "dialoutMetadata": "dialout_metadata",
    "agentConnected": "agent_connected", "participants": "participants",
}


def on_activity(call: CallParts, raw: dict[str, Any], now: float) -> None:
    """One activity from VAIC: raw to the application (masked in sensitive mode), then
    typed where it is known."""
    call.emit(ev.InboundActivityEvent, now, activity=call.masking.activity(raw))
    name = raw.get("name")
    if raw.get("type", "event") == "event" and isinstance(name, str):
        handler = NOTIFICATIONS.get(name.lower())
        if handler is not None:
            handler(call, raw, now)


def details_from_start(raw: dict[str, Any]) -> ev.CallDetails:
    """The call's details from VAIC's ``start`` activity."""
    params = _obj(raw.get("parameters"))
    known: dict[str, Any] = {}
    for wire, field in _KNOWN.items():
        if wire not in params:
            continue
        value = params[wire]
        if field == "participants":
            known[field] = _participants(value)
        elif field == "dialout_metadata":
            known[field] = value
        elif field == "agent_connected":
            known[field] = value if isinstance(value, bool) else None
        else:
            known[field] = _str(value)
    return ev.CallDetails(
        **known, language=_str(raw.get("language")), parameters=params,
        sip_headers={k: v for k, v in params.items() if k not in _KNOWN},
    )


def _participants(value: Any) -> tuple[ev.Participant, ...]:
    out = []
    for item in value if isinstance(value, list) else ():
        item = _obj(item)
        name = _str(item.get("participant"))
        if name is not None:
            out.append(ev.Participant(
                participant=name, uri_user=_str(item.get("uriUser")),
                uri_host=_str(item.get("uriHost")), display_name=_str(item.get("displayName")),
            ))
    return tuple(out)


# --- one handler per notification ------------------------------------------------------------


def _start(call: CallParts, raw: dict[str, Any], now: float) -> None:
    call.call_started(details_from_start(raw), now)


def _dtmf(call: CallParts, raw: dict[str, Any], now: float) -> None:
    digits = str(raw.get("value") or "")
    call.emit(ev.DtmfEvent, now, digits=call.masking.keys(digits))
    call.digits.pressed(call, digits, now)


def _transfer_status(call: CallParts, raw: dict[str, Any], now: float) -> None:
    value = _value_or_parameters(raw)
    status = _str(value.get("status"))
    code = _str(value.get("reasonCode", value.get("reason_code")))
    call.transfer_status(status.lower() if status else None, code, _str(value.get("reason")), now)


def _no_user_input(call: CallParts, raw: dict[str, Any], now: float) -> None:
    value = raw.get("value")
    count = value if isinstance(value, int) and not isinstance(value, bool) else (
        int(value) if isinstance(value, str) and value.isdigit() else None)
    call.emit(ev.NoUserInputEvent, now, count=count)
    call.no_input.vaic(call, count, now)


def _play_url_failed(call: CallParts, raw: dict[str, Any], now: float) -> None:
    value = _value_or_parameters(raw)
    generated = value.get("selfGenerated")
    reason = _str(value.get("reason"))
    call.emit(ev.PlayUrlFailedEvent, now, url=_str(value.get("playUrlUrl")), reason=reason,
              self_generated=generated if isinstance(generated, bool) else None)
    call.tools.play_finished(call, reason or "VAIC could not play it", now)


def _play_finished(call: CallParts, raw: dict[str, Any], now: float) -> None:
    call.emit(ev.PlayFinishedEvent, now, value=raw.get("value"))
    call.tools.play_finished(call, None, now)


def _speech_hypothesis(call: CallParts, raw: dict[str, Any], now: float) -> None:
    value = raw.get("value")
    params = _obj(raw.get("parameters"))
    text = _str(value) if isinstance(value, str) else _str(
        _obj(value).get("text", raw.get("text")))
    participant = _str(params.get("participant", _obj(value).get("participant")))
    call.emit(ev.SpeechHypothesisEvent, now, text=call.masking.said(text),
              participant=participant)


def _voice(call: CallParts, raw: dict[str, Any], now: float) -> None:
    call.emit(ev.VoiceDetectedEvent, now)


def _silence(call: CallParts, raw: dict[str, Any], now: float) -> None:
    call.emit(ev.SilenceDetectedEvent, now)


def _agent_connected(call: CallParts, raw: dict[str, Any], now: float) -> None:
    call.emit(ev.AgentConnectedEvent, now, value=raw.get("value"))


def _dialout_initiated(call: CallParts, raw: dict[str, Any], now: float) -> None:
    value = _value_or_parameters(raw)
    call.emit(ev.DialoutInitiatedEvent, now, outbound_target=_str(value.get("outboundTarget")),
              dialout_metadata=value.get("dialoutMetadata"))


NOTIFICATIONS: Final[dict[str, Callable[[CallParts, dict[str, Any], float], None]]] = {
    "start": _start,
    "dtmf": _dtmf,
    "transferstatus": _transfer_status,
    "nouserinput": _no_user_input,
    "playurlfailed": _play_url_failed,
    "playurlfailure": _play_url_failed,  # the name in the prose of AudioCodes' page
    "playfinished": _play_finished,
    "speechhypothesis": _speech_hypothesis,
    "voicedetected": _voice,
    "silencedetected": _silence,
    "agentconnected": _agent_connected,
    "dialoutinitiated": _dialout_initiated,
}
"""Handlers by lower-case activity name."""


# --- tolerant reading --------------------------------------------------------------------------


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _value_or_parameters(raw: dict[str, Any]) -> dict[str, Any]:
    """The notification's object: in ``value`` as documented, else in ``parameters``."""
    value = raw.get("value")
    return value if isinstance(value, dict) else _obj(raw.get("parameters"))
