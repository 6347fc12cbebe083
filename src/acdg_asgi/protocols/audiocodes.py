"""AudioCodes Bot API, streaming mode: every message as a msgspec Struct.

VAIC is the WebSocket client and speaks JSON text frames; audio rides base64-encoded
inside them. Audio fields are ``bytes`` so msgspec does the base64 work in C.

Reading is tolerant: unknown fields are ignored, and a message whose ``type`` is not
known decodes into :class:`UnknownMessage` so the caller can log it by name. Writing is exact:
only fields that were set go on the wire (``omit_defaults``).

Reading is also bounded, so a peer cannot make one frame cost much: at most
:data:`MAX_ACTIVITIES` activities per message, nested at most :data:`MAX_DEPTH` levels;
a frame over either bound, or nested deeper than the JSON decoder's own guard anywhere,
is malformed. :func:`conversation_id_problem` says what is wrong with a ``conversationId``
a call should not be keyed by.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import msgspec

from ._codec import DecodeError, not_known, tags

__all__ = [
    "Activities",
    "Activity",
    "Alternative",
    "ConnectionValidate",
    "ConnectionValidated",
    "DecodeError",
    "InboundMessage",
    "OutboundActivities",
    "OutboundMessage",
    "PlayStreamChunk",
    "PlayStreamStart",
    "PlayStreamStop",
    "SessionAccepted",
    "SessionEnd",
    "SessionError",
    "SessionInitiate",
    "SessionResume",
    "UnknownMessage",
    "UserStreamChunk",
    "UserStreamSpeechCommitted",
    "UserStreamSpeechHypothesis",
    "UserStreamSpeechRecognition",
    "UserStreamSpeechStarted",
    "UserStreamSpeechStopped",
    "UserStreamStart",
    "UserStreamStarted",
    "UserStreamStop",
    "UserStreamStopped",
    "conversation_id_problem",
    "decode",
    "decode_known",
    "encode",
    "text_field",
]

MAX_ACTIVITIES: Final = 64  # VAIC sends one or a few; thousands only cost
MAX_DEPTH: Final = 32  # nesting inside an activity; VAIC's are two or three deep
MAX_CONVERSATION_ID: Final = 128  # a UUID is 36
_CONVERSATION_ID: Final = re.compile(r"[A-Za-z0-9._:@+=~-]+")


class _Message(msgspec.Struct, tag_field="type", rename="camel", omit_defaults=True, frozen=True):
    """Base of every message: tagged on ``type``, camelCase on the wire."""


class _Inbound(_Message, frozen=True):
    conversation_id: str | None = None


# --- activities (carried inside ``activities`` in both directions) -------------------------


class Activity(msgspec.Struct, rename="camel", omit_defaults=True, frozen=True):
    """One activity: ``{"type": "event", "name": "DTMF", "value": "5"}`` and the like.

    ``type`` is ``"event"`` or ``"message"``. The bridge sends these; what VAIC sends
    arrives as plain objects (see :class:`Activities`).
    """

    type: str
    name: str | None = None
    text: str | None = None
    value: Any = None
    parameters: dict[str, Any] | None = None
    activity_params: dict[str, Any] | None = None
    session_params: dict[str, Any] | None = None
    id: str | None = None
    timestamp: str | None = None
    language: str | None = None
    delay: int | float | None = None  # ms before VAIC acts on it (the SDK's BaseActivity)


class Alternative(msgspec.Struct, omit_defaults=True, frozen=True):
    text: str
    confidence: float | str | None = None  # a number; one doc example shows a string


# --- VAIC -> bot ---------------------------------------------------------------------------


class ConnectionValidate(_Inbound, tag="connection.validate", frozen=True):
    """Bot-connection check from Live Hub / VAIC, outside any call."""


class SessionInitiate(_Inbound, tag="session.initiate", frozen=True):
    bot_name: str | None = None
    caller: str | None = None
    expect_audio_messages: bool | None = None  # None: not sent, which VAIC treats as true
    supported_media_formats: tuple[str, ...] = ()


class SessionResume(_Inbound, tag="session.resume", frozen=True):
    """Sent on a new socket after the previous one was lost."""


class SessionEnd(_Inbound, tag="session.end", frozen=True):
    """The call is over. ``reason_code`` and ``reason`` are taken as they come (read
    them with :func:`text_field`): a wrong type there must not lose the end of a call."""

    reason_code: Any = None
    reason: Any = None


class UserStreamStart(_Inbound, tag="userStream.start", frozen=True):
    participant: str | None = None


# The two messages of every frame are not tracked by the garbage collector (gc=False):
# strings and bytes only, they can hold no cycle, and tracking costs each frame.
class UserStreamChunk(_Inbound, tag="userStream.chunk", frozen=True, gc=False):
    audio_chunk: bytes = b""
    participant: str | None = None


class UserStreamStop(_Inbound, tag="userStream.stop", frozen=True):
    participant: str | None = None


class Activities(_Inbound, tag="activities", frozen=True):
    """Activities from VAIC, kept as plain objects so no field VAIC adds is lost."""

    activities: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:  # on decode: a bad frame is a DecodeError
        if len(self.activities) > MAX_ACTIVITIES:
            raise ValueError(f"{len(self.activities)} activities in one message "
                             f"(at most {MAX_ACTIVITIES})")
        if _deeper_than(self.activities, MAX_DEPTH):
            raise ValueError(f"activities nested deeper than {MAX_DEPTH} levels")


def _deeper_than(value: object, limit: int) -> bool:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list | tuple):
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in item)
    return False


def conversation_id_problem(cid: object) -> str | None:
    """Why ``cid`` cannot key a call (``None`` if it can): it must be 1 to 128 letters,
    digits or ``._:@+=~-`` (VAIC sends a UUID), so that it is safe in logs and URLs."""
    if not isinstance(cid, str) or not cid:
        return "no conversationId"
    if len(cid) > MAX_CONVERSATION_ID:
        return f"conversationId of {len(cid)} characters (at most {MAX_CONVERSATION_ID})"
    if _CONVERSATION_ID.fullmatch(cid) is None:
        return "conversationId with characters other than letters, digits and ._:@+=~-"
    return None


def text_field(value: object, limit: int = 256) -> str | None:
    """A free-text field as VAIC may send it (a string, a number, or something else
    by mistake): a string of at most ``limit`` characters, or ``None``."""
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)[:limit]


InboundMessage = (
    ConnectionValidate
    | SessionInitiate
    | SessionResume
    | SessionEnd
    | UserStreamStart
    | UserStreamChunk
    | UserStreamStop
    | Activities
)


class UnknownMessage(msgspec.Struct, rename="camel", frozen=True):
    """What :func:`decode` keeps of a message whose ``type`` it does not know: enough to
    log it and the call it belongs to."""

    type: str
    conversation_id: str | None = None


# --- bot -> VAIC ---------------------------------------------------------------------------


class ConnectionValidated(_Message, tag="connection.validated", frozen=True):
    success: bool  # always sent: every known VAIC-side implementation expects it


class SessionAccepted(_Message, tag="session.accepted", frozen=True):
    media_format: str | None = None


class SessionError(_Message, tag="session.error", frozen=True):
    reason: str
    conversation_id: str | None = None


class UserStreamStarted(_Message, tag="userStream.started", frozen=True):
    participant: str | None = None


class UserStreamStopped(_Message, tag="userStream.stopped", frozen=True):
    participant: str | None = None


class UserStreamSpeechStarted(_Message, tag="userStream.speech.started", frozen=True):
    participant: str | None = None


class UserStreamSpeechStopped(_Message, tag="userStream.speech.stopped", frozen=True):
    participant: str | None = None


class UserStreamSpeechCommitted(_Message, tag="userStream.speech.committed", frozen=True):
    participant: str | None = None


class UserStreamSpeechHypothesis(_Message, tag="userStream.speech.hypothesis", frozen=True):
    alternatives: tuple[Alternative, ...]
    participant: str | None = None


class UserStreamSpeechRecognition(_Message, tag="userStream.speech.recognition", frozen=True):
    alternatives: tuple[Alternative, ...]
    participant: str | None = None


class PlayStreamStart(_Message, tag="playStream.start", frozen=True):
    stream_id: str
    media_format: str | None = None  # the bridge always sends it; decoding tolerates a gap
    alt_text: str | None = None
    activity_params: dict[str, Any] | None = None
    participant: str | None = None
    target_player: str | None = None  # interactive agent assist: which player plays it


class PlayStreamChunk(_Message, tag="playStream.chunk", frozen=True, gc=False):  # as above
    stream_id: str
    audio_chunk: bytes


class PlayStreamStop(_Message, tag="playStream.stop", frozen=True):
    stream_id: str


class OutboundActivities(_Message, tag="activities", frozen=True):
    activities: tuple[Activity, ...]


OutboundMessage = (
    ConnectionValidated
    | SessionAccepted
    | SessionError
    | UserStreamStarted
    | UserStreamStopped
    | UserStreamSpeechStarted
    | UserStreamSpeechStopped
    | UserStreamSpeechCommitted
    | UserStreamSpeechHypothesis
    | UserStreamSpeechRecognition
    | PlayStreamStart
    | PlayStreamChunk
    | PlayStreamStop
    | OutboundActivities
)


# --- codec ---------------------------------------------------------------------------------

_decoder: Final = msgspec.json.Decoder(InboundMessage)
_unknown_decoder: Final = msgspec.json.Decoder(UnknownMessage)
_outbound_decoder: Final = msgspec.json.Decoder(OutboundMessage)
_encoder: Final = msgspec.json.Encoder()


def decode(frame: str | bytes) -> InboundMessage | UnknownMessage:
    """Decode one VAIC -> bot frame.

    Raises :class:`DecodeError` for frames that are not a message at all, or that are a
    known message with fields of the wrong type (invalid base64 included).
    """
    try:
        message: InboundMessage = _decoder.decode(frame)
    except Exception as exc:  # whatever decoding raises, the frame is not a known message
        return not_known(_unknown_decoder, _INBOUND_TAGS, frame, exc)
    return message


def decode_outbound(frame: str | bytes) -> OutboundMessage:
    """Decode one bot -> VAIC frame (used by the VAIC simulator and tests)."""
    try:
        message: OutboundMessage = _outbound_decoder.decode(frame)
        return message
    except (msgspec.DecodeError, RecursionError) as exc:
        raise DecodeError(str(exc)) from None


# Encode a message to JSON bytes (either direction, for the bridge and its simulator).
# The encoder's own method rather than a function around it: it runs for every chunk.
encode: Final[Callable[[OutboundMessage | InboundMessage], bytes]] = _encoder.encode

# Decode a frame that is one of the known messages, raising whatever msgspec raises for
# anything else; :func:`decode` then says what the frame is. For the usual frame, one
# call into msgspec and no function around it.
decode_known: Final[Callable[[str | bytes], InboundMessage]] = _decoder.decode


_INBOUND_TAGS: Final = tags(InboundMessage)
OUTBOUND_TAGS: Final = tags(OutboundMessage)
