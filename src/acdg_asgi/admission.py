"""Letting a call in: the upgrade, its authentication, and the first message on a socket.

A socket becomes a call on ``session.initiate`` (format negotiated, agent config chosen,
or a clear ``session.error``), or rejoins one on ``session.resume``: the call is found
here, or taken over from another instance through the shared store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from starlette.types import Receive, Scope, Send

from .audio import FORMATS, negotiate
from .auth import Connection
from .call import Call
from .config import AgentConfig, as_agent_config
from .errors import AuthError, SessionClosedError
from .fastws import DIRECT
from .protocols import audiocodes as ac
from .protocols import deepgram as dg
from .routes import deny, route_path
from .runtime import CallRuntime
from .scheduler import Scheduler
from .services import logger
from .transport import VaicSocket

if TYPE_CHECKING:
    from .app import BridgeApp

__all__ = ["AgentFactory", "AgentSpec", "CallInfo", "admit"]


class CallInfo(msgspec.Struct, frozen=True):
    """What a per-call agent factory can choose from: the upgrade and the initiate."""

    connection: Connection
    initiate: ac.SessionInitiate


AgentSpec = AgentConfig | dg.AgentSettings | dict[str, Any]
AgentFactory = Callable[[CallInfo], Awaitable[AgentSpec]]


async def admit(bridge: BridgeApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Handle one VAIC WebSocket from upgrade to close."""
    conn = Connection.from_scope(scope, route_path(scope))
    if (await receive())["type"] != "websocket.connect":
        return
    if bridge.draining and not bridge.awaiting_resume():
        bridge.observers.refused("draining")
        await deny(scope, send, 503, "draining: not accepting new calls")
        return
    try:
        allowed, status = await bridge.auth(conn), 401
    except AuthError as exc:
        allowed, status = False, exc.status_code
    if not allowed:
        bridge.observers.refused("auth")
        logger.warning("upgrade refused (%d) from %s", status, conn.client)
        await deny(scope, send, status, "unauthorized")
        return
    await send({"type": "websocket.accept"})
    client = f"{conn.client[0]}:{conn.client[1]}" if conn.client else "?"
    direct = scope.get("extensions", {}).get(DIRECT, {}).get("protocol")
    vaic = VaicSocket(receive, send, client=client,
                      max_frame_bytes=bridge.limits.max_frame_bytes, direct=direct)
    first = None
    with anyio.move_on_after(bridge.limits.initiate_timeout_s):
        first = await _await_session(vaic)
    if first is None:
        bridge.observers.refused("no_session")
        await vaic.close(1000 if vaic.closed else 1008, "no session.initiate")
    elif isinstance(first, ac.SessionResume):
        await _resume(bridge, vaic, conn, first)
    else:
        await _initiate(bridge, vaic, conn, first)


async def _initiate(
    bridge: BridgeApp, vaic: VaicSocket, conn: Connection, msg: ac.SessionInitiate
) -> None:
    cid = msg.conversation_id or ""
    fmt = negotiate(msg.supported_media_formats, bridge.media_formats)
    refusal: tuple[str, str] | None = None  # (cause for metrics, reason for VAIC)
    if not cid:
        refusal = ("bad_request", "session.initiate without conversationId")
    elif bridge.draining:
        refusal = ("draining", "bridge is shutting down")
    elif bridge.limits.max_calls is not None and len(bridge.calls) >= bridge.limits.max_calls:
        refusal = ("capacity", "bridge at capacity")
    elif cid in bridge.calls:
        refusal = ("duplicate", "conversation already in progress")
    elif not msg.expect_audio_messages:
        refusal = ("no_audio", "this bot answers with audio; set directTTS (expectAudioMessages)")
    elif fmt is None:
        refusal = ("no_format", f"no supported media format: offered "
                   f"{list(msg.supported_media_formats)}, supported {list(bridge.media_formats)}")
    agent = None
    if refusal is None:
        agent = await _agent_config(bridge, CallInfo(conn, msg))
        if agent is None:
            refusal = ("agent_config", "no agent configuration for this call")
    if refusal is not None or fmt is None or agent is None:
        cause, reason = refusal or ("bad_request", "refused")
        await _refuse(bridge, vaic, cid, cause, reason)
        return
    call = Call(msg, session_id=uuid.uuid4().hex, media_format=fmt, agent_config=agent,
                now=Scheduler.for_running_loop().now(), playout=bridge.playout,
                limits=bridge.limits, reconnect=bridge.reconnect, wall_clock=time.time())
    await _run(bridge, CallRuntime(call, bridge.services()), vaic, conn.path)


async def _resume(
    bridge: BridgeApp, vaic: VaicSocket, conn: Connection, msg: ac.SessionResume
) -> None:
    cid = msg.conversation_id or ""
    runtime = bridge.calls.get(cid)
    if runtime is not None:
        try:
            await runtime.attach(vaic)
        except SessionClosedError:
            await _refuse(bridge, vaic, cid, "resume_ended", "conversation has ended")
        return
    if bridge.draining:
        await _refuse(bridge, vaic, cid, "draining", "bridge is shutting down")
        return
    if not bridge.cluster.shared:
        await _refuse(bridge, vaic, cid, "resume_unknown", "conversation not found")
        return
    claimed = await bridge.cluster.take_over(cid)
    if isinstance(claimed, str):
        await _refuse(bridge, vaic, cid, "resume_unknown", claimed)
        return
    snapshot, history = claimed
    agent = await _agent_config(bridge, CallInfo(conn, snapshot.initiate))
    fmt = FORMATS.get(snapshot.media_format)
    if agent is None or fmt is None:
        await _refuse(bridge, vaic, cid, "agent_config", "no agent configuration for this call")
        return
    call = Call(snapshot.initiate, session_id=snapshot.session_id, media_format=fmt,
                agent_config=agent, now=Scheduler.for_running_loop().now(),
                playout=bridge.playout, limits=bridge.limits, reconnect=bridge.reconnect,
                wall_clock=snapshot.started_wall, taken_over=(snapshot.epoch, history))
    logger.info("[%s] resumed here, taken over from %s", cid, snapshot.owner or "a drained peer")
    await _run(bridge, CallRuntime(call, bridge.services()), vaic, snapshot.path)


async def _run(bridge: BridgeApp, runtime: CallRuntime, vaic: VaicSocket, path: str) -> None:
    cid = runtime.call.conversation_id
    bridge.calls[cid] = runtime
    try:
        if bridge.cluster.shared:
            await bridge.cluster.register(runtime, path)
        await runtime.run(vaic)
    finally:
        if bridge.calls.get(cid) is runtime:
            del bridge.calls[cid]
        bridge.call_removed()
        if bridge.cluster.shared:
            with anyio.CancelScope(shield=True), anyio.move_on_after(3):
                await bridge.cluster.keep(runtime, runtime.unshared_history())
                await bridge.cluster.unregister(runtime)


async def _agent_config(bridge: BridgeApp, info: CallInfo) -> AgentConfig | None:
    if bridge.agent_factory is None:
        return bridge.static_agent
    try:
        return as_agent_config(await bridge.agent_factory(info))
    except Exception:
        logger.exception("[%s] agent factory failed", info.initiate.conversation_id)
        return None


async def _await_session(vaic: VaicSocket) -> ac.SessionInitiate | ac.SessionResume | None:
    """Read until a session starts, answering ``connection.validate`` on the way."""
    while (frame := await vaic.receive()) is not None:
        try:
            msg = ac.decode(frame) if isinstance(frame, str) else None
        except ac.DecodeError as exc:
            logger.warning("malformed message before session.initiate from %s: %s",
                           vaic.client, exc)
            continue
        if isinstance(msg, ac.SessionInitiate | ac.SessionResume):
            return msg
        if isinstance(msg, ac.ConnectionValidate):
            await vaic.send_text(ac.encode(ac.ConnectionValidated(success=True)))
        elif msg is None:
            logger.warning("binary frame before session.initiate from %s ignored", vaic.client)
        else:
            kind = msg.type if isinstance(msg, ac.UnknownMessage) else (
                type(msg).__struct_config__.tag)
            logger.warning("[%s] %s before session.initiate ignored", msg.conversation_id, kind)
    return None


async def _refuse(bridge: BridgeApp, vaic: VaicSocket, cid: str, cause: str, reason: str) -> None:
    bridge.observers.refused(cause)
    logger.warning("[%s] session refused: %s", cid, reason)
    try:
        await vaic.send_text(ac.encode(ac.SessionError(reason=reason, conversation_id=cid or None)))
    finally:
        await vaic.close(1000, reason)
