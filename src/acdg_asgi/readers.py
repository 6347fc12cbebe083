"""The readers of a call: VAIC's socket and the agent connection, frames into the Call.

Each has a general path (await a message, hand it to the call, flush) and a fast path for
sockets that push messages from ``data_received`` (the lean agent client, uvicorn with
:mod:`acdg_asgi.fastws`): the message is handled in the callback and whatever can be
written without waiting is written there; only the rest wakes the call's clock task.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, cast

import anyio

from .agent import AgentClosed, AgentConnectError, AgentConnection, PushAgentConnection
from .errors import RemoteProtocolError
from .lifecycle import CallState
from .protocols import audiocodes as ac
from .protocols import deepgram as dg
from .transport import VaicSocket

if TYPE_CHECKING:
    from .runtime import CallRuntime

__all__ = ["agent_loop", "read_vaic"]


async def read_vaic(rt: CallRuntime, vaic: VaicSocket) -> None:
    """Read VAIC's socket until it closes. With a direct socket (``acdg.direct``), text
    frames arrive as callbacks instead and are handled inside ``data_received``."""
    if vaic.direct:
        vaic.listen(partial(vaic_text, rt))
    while (frame := await vaic.receive()) is not None:
        if vaic_frame(rt, frame, vaic.max_frame_bytes):
            await rt.flush()
    rt.vaic_gone(vaic)
    await rt.flush()

def vaic_text(rt: CallRuntime, text: str) -> None:
    if vaic_frame(rt, text, rt.call.limits.max_frame_bytes) and not rt.flush_now():
        rt.kick.set()

def vaic_frame(rt: CallRuntime, frame: str | bytes, limit: int) -> bool:
    """Take one frame from VAIC; ``True`` if there may be something to flush."""
    call = rt.call
    if isinstance(frame, bytes):
        rt.peer_error("audiocodes", "binary", f"binary frame ({len(frame)} B) ignored")
    elif len(frame) > limit:
        rt.peer_error("audiocodes", "oversized", f"frame of {len(frame)} bytes ignored")
    else:
        try:
            msg = ac.decode(frame)
        except ac.DecodeError as exc:
            rt.peer_error("audiocodes", "malformed", f"malformed message ignored: {exc}")
            return True
        if msg.__class__ is ac.UserStreamChunk and forward_now(rt, msg):
            return False
        if isinstance(msg, ac.UnknownMessage):
            rt.log.info("unknown VAIC message type %r ignored", msg.type)
            return False
        try:
            call.vaic(msg, rt.scheduler.now())
        except RemoteProtocolError as exc:
            rt.peer_error("audiocodes", "out_of_order", str(exc))
    return True

def forward_now(rt: CallRuntime, msg: ac.UserStreamChunk) -> bool:
    """The fast path for caller audio, the message that comes 50 times a second: with
    a push connection and nothing queued, it goes straight to the agent, past the
    dispatch table and the flush. Anything else takes the general path."""
    call, conn = rt.call, rt.agent_conn
    if not rt.agent_push or conn is None or call.state is not CallState.ACTIVE or call.to_agent:
        return False
    audio = call.link.caller_audio(msg.audio_chunk, rt.scheduler.now())
    if audio is not None:
        try:  # noqa: SIM105 - no context manager per frame
            conn.write_audio(audio)  # type: ignore[attr-defined]  # agent_push: a push connection
        except AgentClosed:
            pass  # the connection reports its own loss
    return True

async def agent_loop(rt: CallRuntime) -> None:
    services, call, now = rt.services, rt.call, rt.scheduler.now
    async with rt.connect_requests:
        async for attempt in rt.connect_requests:
            rt.log.info("connecting to the agent (attempt %d)", attempt)
            try:
                with anyio.fail_after(call.limits.handshake_timeout_s):
                    conn = await services.connector.connect(
                        services.agent_url, services.agent_headers
                    )
            except (AgentConnectError, TimeoutError) as exc:
                call.agent_lost(now(), str(exc) or "agent connect timed out")
                await rt.flush()
                continue
            if call.state is CallState.ENDED:
                await conn.close()
                break
            rt.agent_conn = conn
            rt.agent_push = isinstance(conn, PushAgentConnection)
            call.agent_connected(now())
            await rt.flush()
            if rt.agent_push:
                reason = await listen_agent(rt, cast(PushAgentConnection, conn))
            else:
                reason = await read_agent(rt, conn)
            if rt.agent_conn is conn:  # not closed on the call's own request
                rt.agent_conn = None
                call.agent_lost(now(), reason)
                await rt.flush()

async def read_agent(rt: CallRuntime, conn: AgentConnection) -> str:
    """The general path: await each message, then flush."""
    while True:
        try:
            frame = await conn.recv()
        except AgentClosed as exc:
            return str(exc)
        agent_frame(rt, frame)
        await rt.flush()

async def listen_agent(rt: CallRuntime, conn: PushAgentConnection) -> str:
    """The fast path: each message is handled inside the connection's data callback;
    only what must be written to VAIC wakes the clock task, which flushes."""
    closed = anyio.Event()
    why = ["closed"]

    def on_message(frame: str | bytes) -> None:
        if frame.__class__ is bytes and rt.play_now(frame):
            return
        agent_frame(rt, frame)
        if not rt.flush_now():
            rt.kick.set()  # something must be written with waiting: the clock task

    def on_closed(reason: str) -> None:
        why[0] = reason
        closed.set()

    conn.listen(on_message, on_closed)
    await closed.wait()
    return why[0]

def agent_frame(rt: CallRuntime, frame: str | bytes) -> None:
    call, now = rt.call, rt.scheduler.now()
    if isinstance(frame, bytes):
        call.agent_audio(frame, now)
        return
    try:
        msg = dg.decode_server(frame)
    except dg.DecodeError as exc:
        rt.peer_error("deepgram", "malformed", f"malformed agent message: {exc}")
        return
    if isinstance(msg, dg.UnknownMessage):
        rt.log.info("unknown agent message type %r ignored", msg.type)
        return
    call.agent(msg, now)
