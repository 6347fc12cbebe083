"""What each VAIC message does to a call, in each state of the call.

:meth:`Call.vaic <acdg_asgi.call.machine.Call.vaic>` looks a message up in ``VAIC_TABLE`` by
``(state, message class)``; a pair that is not listed is a protocol error by VAIC, which
the call raises as :class:`~acdg_asgi.errors.RemoteProtocolError` naming both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ..protocols import audiocodes as ac
from .notifications import on_activity
from .parts import CallParts
from .state import CallState

__all__ = ["VAIC_TABLE"]


def _chunk(call: CallParts, msg: ac.UserStreamChunk, now: float) -> None:
    # A plain call's stream has no participant; agent assist has one stream each.
    # CallRuntime.vaic_frame does what this does for a plain stream itself, in the steady
    # state: a change here is a change there (tests/test_fast_paths.py holds them equal).
    if msg.participant is not None and msg.participant != call.hearing \
            and not call.heard_from(msg.participant, now):
        return
    audio = call.link.caller_audio(msg.audio_chunk, now)
    if audio is not None:
        call.to_agent.append(audio)


def _user_stream_start(call: CallParts, msg: ac.UserStreamStart, now: float) -> None:
    if msg.participant is not None and msg.participant != call.hearing:
        call.heard_from(msg.participant, now, audio=False)
    call.to_vaic.append(ac.UserStreamStarted(participant=msg.participant))


def _user_stream_stop(call: CallParts, msg: ac.UserStreamStop, now: float) -> None:
    call.to_vaic.append(ac.UserStreamStopped(participant=msg.participant))


def _activities(call: CallParts, msg: ac.Activities, now: float) -> None:
    for raw in msg.activities:
        on_activity(call, raw, now)


def _session_end(call: CallParts, msg: ac.SessionEnd, now: float) -> None:
    call.vaic_ended(now, ac.text_field(msg.reason_code), ac.text_field(msg.reason))


def _validate(call: CallParts, msg: ac.ConnectionValidate, now: float) -> None:
    call.to_vaic.append(ac.ConnectionValidated(success=True))


def _ignore(call: CallParts, msg: ac.InboundMessage, now: float) -> None:
    pass


_Handler = Callable[[CallParts, Any, float], None]

VAIC_TABLE: Final[dict[tuple[CallState, type[ac.InboundMessage]], _Handler]] = {
    (CallState.ACTIVE, ac.UserStreamChunk): _chunk,
    (CallState.ACTIVE, ac.UserStreamStart): _user_stream_start,
    (CallState.ACTIVE, ac.UserStreamStop): _user_stream_stop,
    (CallState.ACTIVE, ac.Activities): _activities,
    (CallState.ACTIVE, ac.SessionEnd): _session_end,
    (CallState.ACTIVE, ac.ConnectionValidate): _validate,
    # A transfer under way: the caller's audio is not the agent's business meanwhile.
    (CallState.TRANSFERRING, ac.UserStreamChunk): _ignore,
    (CallState.TRANSFERRING, ac.UserStreamStart): _user_stream_start,
    (CallState.TRANSFERRING, ac.UserStreamStop): _user_stream_stop,
    (CallState.TRANSFERRING, ac.Activities): _activities,
    (CallState.TRANSFERRING, ac.SessionEnd): _session_end,
    (CallState.TRANSFERRING, ac.ConnectionValidate): _validate,
    (CallState.ENDING, ac.UserStreamChunk): _ignore,
    (CallState.ENDING, ac.UserStreamStart): _ignore,
    (CallState.ENDING, ac.UserStreamStop): _user_stream_stop,
    (CallState.ENDING, ac.Activities): _activities,
    (CallState.ENDING, ac.SessionEnd): _session_end,
    (CallState.ENDED, ac.UserStreamChunk): _ignore,
    (CallState.ENDED, ac.SessionEnd): _ignore,
}
