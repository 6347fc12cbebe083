"""The checks on a single bot message that need no memory of the call.

:mod:`.conformance` runs these on every bot frame and adds the checks that do need
memory (streams, answers, timing). Each rule cites the mistake it catches from the
protocol reference, Part 2, where there is one.
"""

from __future__ import annotations

import binascii
import re
from typing import Any, Final, NamedTuple

import msgspec

from ..protocols.audiocodes import OUTBOUND_TAGS

__all__ = [
    "CODES",
    "Failure",
    "Finding",
    "Note",
    "Violation",
    "clip_frame",
    "message_findings",
    "parse_bot_frame",
]

_DTMF_DIGITS: Final = re.compile(r"[0-9*#]{1,20}")  # VAIC ignores anything else
_AUDIO_FIELD: Final = re.compile(r'("audioChunk"\s*:\s*")([^"]{0,16})[^"]*(")')
_MAX_FRAME_CHARS: Final = 600
_NOT_IN_PROTOCOL: Final = {  # Part 2 #10
    "session.end": "bots end a call with a hangup activity, not session.end",
    "session.resumed": "a resume is acknowledged with session.accepted",
}


CODES: Final[dict[str, str]] = {
    # frames
    "binary-frame": "a binary WebSocket frame; the protocol is JSON text only",
    "invalid-json": "a frame that is not a JSON object with a string type",
    "unknown-message-type": "a type that bots do not send (e.g. session.end, session.resumed)",
    "malformed-message": "a known message with missing or mistyped fields",
    "before-accept": "a message other than an answer before session.accepted on the socket",
    # session
    "missing-media-format": "session.accepted (after initiate) or playStream.start without it",
    "format-not-offered": "a mediaFormat that session.initiate did not offer",
    "session-unanswered": "session.initiate or session.resume left without an answer",
    "resume-refused": "session.error in answer to session.resume",
    "validate-unanswered": "connection.validate not answered within 2 s",
    "validated-without-success": "connection.validated without success: true",
    "user-stream-unanswered": "userStream.start or userStream.stop left without an answer",
    "closed-without-hangup": "the bot closed the socket mid-call instead of a hangup activity",
    "silence-no-hangup": "the call stayed up in dead air with no hangup",
    # play streams
    "chunk-outside-stream": "playStream.chunk with no stream open (the stream open at "
                            "VAIC's session.end may cross it on the wire)",
    "stop-outside-stream": "playStream.stop with no stream open (the stream open at "
                           "VAIC's session.end may cross it on the wire)",
    "stream-id-mismatch": "a chunk or stop naming another stream than the open one",
    "overlapping-streams": "playStream.start while another stream is open",
    "unclosed-stream": "a stream never stopped (or still open at hangup)",
    "duplicate-stream-id": "a streamId used twice in one conversation",
    "bad-base64": "an audioChunk that is not valid base64",
    # speech and activities
    "flat-recognition": "recognition or hypothesis without an alternatives array",
    "bad-send-dtmf": "sendDtmf without activityParams.dtmfDigits, or with bad digits",
    "dtmf-event-name": "an event named like DTMF in the wrong case",
    "bad-transfer": "transfer without activityParams.transferTarget",
    "bad-play-url": "playUrl without activityParams.playUrlUrl",
}
"""Every violation code, with what it means."""


class Violation(msgspec.Struct, frozen=True):
    """A breach of the protocol by the bot (``count``: how many frames repeated it)."""

    code: str
    message: str
    frame: str | None = None  # the first offending message, audio shortened
    t_ms: float | None = None  # when it was first seen
    count: int = 1


class Failure(msgspec.Struct, frozen=True):
    """The call did not work for its caller, whatever the protocol says (see .verdict)."""

    code: str
    message: str
    t_ms: float | None = None


class Note(msgspec.Struct, frozen=True):
    """Something worth knowing that the protocol allows."""

    code: str
    message: str
    frame: str | None = None
    t_ms: float | None = None


class Finding(NamedTuple):
    code: str
    message: str
    note: bool = False


def clip_frame(frame: str | bytes, *, binary: bool | None = None) -> str:
    """A frame fit for a report: audio fields cut to a few characters, length bounded."""
    if binary if binary is not None else isinstance(frame, bytes):
        return f"<binary frame, {len(frame)} bytes>"
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
    text = _AUDIO_FIELD.sub(r"\1\2…\3", text)
    if len(text) > _MAX_FRAME_CHARS:
        text = text[:_MAX_FRAME_CHARS] + "…"
    return text


def parse_bot_frame(frame: str | bytes, *, binary: bool) -> tuple[str, dict[str, Any]] | Finding:
    """The type and raw object of a bot frame, or why it is not a bot message at all."""
    if binary:
        return Finding("binary-frame", "the protocol uses JSON text frames only")
    try:
        raw = msgspec.json.decode(frame)
    except msgspec.DecodeError as exc:
        return Finding("invalid-json", f"frame is not JSON: {exc}")
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        return Finding("invalid-json", "frame is not a JSON object with a string type")
    kind: str = raw["type"]
    if kind not in OUTBOUND_TAGS:
        why = _NOT_IN_PROTOCOL.get(kind, "not a bot-to-VAIC message type")
        return Finding("unknown-message-type", f"{kind!r}: {why}")
    return kind, raw


def message_findings(kind: str, raw: dict[str, Any]) -> list[Finding]:
    """What is wrong with one bot message of type ``kind``, judged on its own."""
    match kind:
        case "connection.validated":
            if raw.get("success") is not True:  # every known VAIC peer sends it
                return [Finding("validated-without-success", f"{kind} without success: true")]
        case "userStream.speech.recognition" | "userStream.speech.hypothesis":
            if not isinstance(raw.get("alternatives"), list):  # Part 2 #1
                return [
                    Finding(
                        "flat-recognition",
                        f"{kind} needs alternatives: [{{text, confidence}}], not flat fields",
                    )
                ]
        case "playStream.chunk":
            audio = raw.get("audioChunk")
            if isinstance(audio, str) and not _is_base64(audio):
                return [Finding("bad-base64", "audioChunk is not valid base64")]
        case "playStream.start":
            if raw.get("mediaFormat") is None:  # Part 2 #4
                return [Finding("missing-media-format", "playStream.start without mediaFormat")]
        case "activities":
            activities = raw.get("activities")
            return [
                finding
                for activity in (activities if isinstance(activities, list) else ())
                if isinstance(activity, dict)
                for finding in _activity_findings(activity)
            ]
    return []


def _activity_findings(activity: dict[str, Any]) -> list[Finding]:
    name = activity.get("name")
    params = activity.get("activityParams")
    params = params if isinstance(params, dict) else {}
    if not isinstance(name, str):
        return []
    if name == "DTMF":
        return [Finding("dtmf-from-bot", "DTMF is a VAIC-to-bot event; bots send sendDtmf", True)]
    if name.lower() == "dtmf":  # Part 2 #6
        return [
            Finding(
                "dtmf-event-name",
                f"event named {name!r}: the event is spelled 'DTMF', "
                "and a bot plays digits with sendDtmf",
            )
        ]
    if name.lower() == "senddtmf":
        return _send_dtmf_findings(name, params)
    if name == "hangup" and "hangupReason" not in params:
        return [
            Finding("hangup-without-reason", "hangup without activityParams.hangupReason", True)
        ]
    if name in {"transfer", "handover"} and "transferTarget" not in params:
        return [Finding("bad-transfer", f"{name} without activityParams.transferTarget")]
    if name == "playUrl" and "playUrlUrl" not in params:
        return [Finding("bad-play-url", "playUrl without activityParams.playUrlUrl")]
    return []


def _send_dtmf_findings(name: str, params: dict[str, Any]) -> list[Finding]:
    digits = params.get("dtmfDigits")
    if name != "sendDtmf":
        return [Finding("bad-send-dtmf", f"activity named {name!r}, expected 'sendDtmf'")]
    if not isinstance(digits, str):  # Part 2 #7
        others = sorted(set(params) - {"dtmfDigits"})
        found = f" (found {others})" if others else ""
        return [Finding("bad-send-dtmf", f"sendDtmf without activityParams.dtmfDigits{found}")]
    if not _DTMF_DIGITS.fullmatch(digits):
        return [Finding("bad-send-dtmf", f"dtmfDigits {digits!r}: 1-20 of 0-9 * # "
                        "(VAIC ignores anything else)")]
    return []


def _is_base64(text: str) -> bool:
    try:
        binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return False
    return True
