"""What each VAIC message does to a call, in each state of the call.

:meth:`Call.vaic <acdg_asgi.call.Call.vaic>` looks a message up in ``VAIC_HANDLERS`` by
``(state, message class)``; a pair that is not listed is a protocol error by VAIC, which
the call raises as :class:`~acdg_asgi.errors.RemoteProtocolError` naming both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from . import events as ev
from .lifecycle import CallState
from .protocols import audiocodes as ac

if TYPE_CHECKING:
    from .call import Call

__all__ = ["VAIC_HANDLERS"]


def _chunk(call: Call, msg: ac.UserStreamChunk, now: float) -> None:
    audio = call.link.caller_audio(msg.audio_chunk, now)
    if audio is not None:
        call.to_agent.append(audio)


def _user_stream_start(call: Call, msg: ac.UserStreamStart, now: float) -> None:
    call.to_vaic.append(ac.UserStreamStarted(participant=msg.participant))


def _user_stream_stop(call: Call, msg: ac.UserStreamStop, now: float) -> None:
    call.to_vaic.append(ac.UserStreamStopped(participant=msg.participant))


def _activities(call: Call, msg: ac.Activities, now: float) -> None:
    for raw in msg.activities:
        call.emit(ev.InboundActivityEvent, now, activity=raw)
        if raw.get("type", "event") == "event" and raw.get("name") == "DTMF":
            call.emit(ev.DtmfEvent, now, digits=str(raw.get("value") or ""))


def _session_end(call: Call, msg: ac.SessionEnd, now: float) -> None:
    call.vaic_ended(now, msg.reason_code, msg.reason)


def _validate(call: Call, msg: ac.ConnectionValidate, now: float) -> None:
    call.to_vaic.append(ac.ConnectionValidated(success=True))


def _ignore(call: Call, msg: ac.InboundMessage, now: float) -> None:
    pass


_Handler = Callable[["Call", Any, float], None]

VAIC_HANDLERS: Final[dict[tuple[CallState, type[ac.InboundMessage]], _Handler]] = {
    (CallState.ACTIVE, ac.UserStreamChunk): _chunk,
    (CallState.ACTIVE, ac.UserStreamStart): _user_stream_start,
    (CallState.ACTIVE, ac.UserStreamStop): _user_stream_stop,
    (CallState.ACTIVE, ac.Activities): _activities,
    (CallState.ACTIVE, ac.SessionEnd): _session_end,
    (CallState.ACTIVE, ac.ConnectionValidate): _validate,
    (CallState.ENDING, ac.UserStreamChunk): _ignore,
    (CallState.ENDING, ac.UserStreamStart): _ignore,
    (CallState.ENDING, ac.UserStreamStop): _user_stream_stop,
    (CallState.ENDING, ac.Activities): _activities,
    (CallState.ENDING, ac.SessionEnd): _session_end,
    (CallState.ENDED, ac.UserStreamChunk): _ignore,
    (CallState.ENDED, ac.SessionEnd): _ignore,
}
