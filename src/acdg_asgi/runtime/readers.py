"""What a frame from either socket means to the call: checked, decoded, handed in.

Every message goes through the call's own tables (:meth:`Call.vaic
<acdg_asgi.call.machine.Call.vaic>`, :meth:`Call.agent <acdg_asgi.call.machine.Call.agent>`);
nothing here decides what a message does (in the steady state the runtime hands the
caller's audio to the agent link itself, as the table's handler would). What is wrong
with a frame is the peer's fault: it becomes a warning on the call and a count for the
metrics, and the call goes on.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ..call import Call
from ..errors import RemoteProtocolError
from ..observability.logs import CallLog, FoldedLog
from ..protocols import audiocodes as ac
from ..protocols import deepgram as dg

__all__ = ["CallInputs", "agent_message", "take_vaic", "vaic_message"]


class CallInputs(Protocol):
    """What the readers need of a call's runtime."""

    call: Call
    log: CallLog
    folded: FoldedLog  # for lines a peer can make repeat

    def now(self) -> float: ...

    def peer_error(self, source: str, kind: str, description: str) -> None: ...


def vaic_message(rt: CallInputs, frame: str | bytes) -> ac.InboundMessage | None:
    """One frame from VAIC, checked and decoded: the message for the call, or ``None``
    when there is none (what was wrong with the frame is reported)."""
    if frame.__class__ is not str:
        rt.peer_error("audiocodes", "binary", f"binary frame ({len(frame)} B) ignored")
        return None
    if len(frame) > rt.call.limits.max_frame_bytes:
        rt.peer_error("audiocodes", "oversized", f"frame of {len(frame)} bytes ignored")
        return None
    try:
        msg = ac.decode(frame)
    except ac.DecodeError as exc:
        rt.peer_error("audiocodes", "malformed", f"malformed message ignored: {exc}")
        return None
    if msg.__class__ is ac.UnknownMessage:
        rt.folded.log("unknown", logging.INFO, "unknown VAIC message type %r ignored",
                      msg.type)
        return None
    return msg  # type: ignore[return-value]


def take_vaic(rt: CallInputs, msg: ac.InboundMessage) -> None:
    """The call takes a message from VAIC; one it did not expect now is reported."""
    try:
        rt.call.vaic(msg, rt.now())
    except RemoteProtocolError as exc:
        rt.peer_error("audiocodes", "out_of_order", str(exc))


def agent_message(rt: CallInputs, text: str) -> None:
    """One text message from the agent (audio goes straight to :meth:`Call.agent_audio`)."""
    try:
        msg = dg.decode_server(text)
    except dg.DecodeError as exc:
        rt.peer_error("deepgram", "malformed", f"malformed agent message: {exc}")
        return
    if isinstance(msg, dg.UnknownMessage):
        rt.folded.log("unknown agent", logging.INFO, "unknown agent message type %r ignored",
                      msg.type)
        return
    rt.call.agent(msg, rt.now())
