"""Letting a call in: the upgrade, its authentication, and the first message on a socket.

A socket becomes a call on ``session.initiate`` (format negotiated, or a clear
``session.error``), or rejoins one on ``session.resume``: the call is found here, or taken
over from another instance through the shared store. A per-call agent factory runs once
VAIC's ``start`` has said who calls whom (see ``Limits.start_wait_s``), while the agent
connection opens.

From its first frame a socket keeps to its read budget and ``Limits.max_frame_bytes``;
a ``conversationId`` that could not safely key a call is refused, and what VAIC offers
is bounded before anything is kept of it. A resume replaces only a dead socket: while the
call's socket (here or on the instance that owns the call) proves alive within
``Limits.resume_probe_s``, the resume is refused, logged on ``acdg_asgi.security`` and
counted as ``acdg_refused_total{cause="resume_live"}``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
from starlette.types import Receive, Scope, Send

from ..audio import FORMATS, negotiate
from ..auth import AuthHook, Connection
from ..call import Call
from ..call.fold import Fold, Folded
from ..cluster.cluster import LIVE_ELSEWHERE, Cluster
from ..config import AgentConfig, Limits, Playout, Reconnect
from ..errors import AuthError, SessionClosedError
from ..events import CallDetails
from ..observability.logs import for_call, get_logger, logger, peer_text, security
from ..observability.observer import Observers
from ..policies import CallOptions
from ..protocols import audiocodes as ac
from ..protocols import deepgram as dg
from ..runtime.call_runtime import CallRuntime
from ..runtime.deps import CallDeps
from ..runtime.scheduler import Scheduler
from ..transports.budget import ReadBudget
from ..transports.vaic_asgi import DIRECT, VaicSocket
from ..transports.vaic_direct import take_over, takes_over
from .registry import CallRegistry
from .responses import deny, route_path

__all__ = ["MAX_OFFERED_FORMATS", "Admission", "AgentFactory", "AgentSpec", "CallInfo"]

MAX_OFFERED_FORMATS = 32  # of supportedMediaFormats, the first ones are kept (VAIC offers ~10)


class CallInfo(msgspec.Struct, frozen=True):
    """What a per-call agent factory can choose from: the upgrade, the initiate, and the
    call's details from VAIC's ``start`` (``None`` if it did not come in time)."""

    connection: Connection
    initiate: ac.SessionInitiate
    details: CallDetails | None = None

    @property
    def callee(self) -> str | None:
        """The number dialled (DNIS), when ``start`` said."""
        return self.details.callee if self.details is not None else None

    @property
    def sip_headers(self) -> dict[str, Any]:
        """``start``'s parameters from SIP headers (``sipHeadersToBot``), by their names."""
        return self.details.sip_headers if self.details is not None else {}


AgentSpec = AgentConfig | dg.AgentSettings | dict[str, Any] | str
# ``None``: this call has no agent (an unknown tenant): a new call is hung up with a
# reason (the factory runs after session.accepted), a resume is refused with session.error
AgentFactory = Callable[[CallInfo], Awaitable[AgentSpec | None] | AgentSpec | None]
AgentSource = Callable[[CallInfo], Awaitable[AgentConfig | None]]  # ``agent=``, normalised


serve_log = get_logger("acdg_asgi.serve")  # how the bridge is served, not one call
DIRECT_HINT = (
    "calls take the server's standard WebSocket path, about 1.6 times the CPU per call of the "
    "direct one: serve with `acdg serve APP`, or under uvicorn with "
    "--ws acdg_asgi.serving:DirectWebSocketProtocol (README, Performance)")
TAKEN_OVER = (
    "calls take the direct path: uvicorn's default WebSocket protocol is taken over for each "
    "VAIC socket once it is accepted (BridgeApp(direct_path=False) keeps uvicorn's own)")


class Admission:
    """Handles each VAIC WebSocket from the upgrade until it closes."""

    def __init__(
        self, calls: CallRegistry, cluster: Cluster, *, auth: AuthHook, agent: AgentSource,
        media_formats: tuple[str, ...], playout: Playout, limits: Limits,
        reconnect: Reconnect, observers: Observers, deps: Callable[[], CallDeps],
        static_agent: AgentConfig | None = None, options: CallOptions | None = None,
        taking_over: Callable[[str], Awaitable[None]] | None = None,
        direct_path: bool = True,
    ) -> None:
        self._calls = calls
        self._cluster = cluster
        self._auth = auth
        self._agent = agent
        self._static_agent = static_agent  # the same for every call: chosen at once
        self._formats = media_formats
        self._playout = playout
        self._limits = limits
        self._reconnect = reconnect
        self._observers = observers
        self._deps = deps
        self._options = options or CallOptions()
        self._taking_over = taking_over  # the live view's stream goes on where it was
        self._direct_path = direct_path  # False: every call on the server's ASGI path
        self._hinted = False  # the direct path's hint, once per bridge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = Connection.from_scope(scope, route_path(scope))
        if (await receive())["type"] != "websocket.connect":
            return
        calls = self._calls
        if calls.draining and not calls.awaiting_resume():
            self._observers.refused("draining")
            await deny(scope, send, 503, "draining: not accepting new calls")
            return
        try:
            allowed, status = await self._auth(conn), 401
        except AuthError as exc:
            allowed, status = False, exc.status_code
        if not allowed:
            self._observers.refused("auth")
            logger.warning("upgrade refused (%d) from %s", status, conn.client)
            await deny(scope, send, status, "unauthorized")
            return
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if conn.subprotocol is not None:
            accept["subprotocol"] = conn.subprotocol  # browsers fail a handshake without it
        await send(accept)
        client = f"{conn.client[0]}:{conn.client[1]}" if conn.client else "?"
        if not self._direct_path:
            direct = None
        elif (direct := scope.get("extensions", {}).get(DIRECT, {}).get("protocol")) is None:
            direct = take_over(receive)  # at once: see take_over
            # Which path calls take, once per bridge (not for a socket that closed at once).
            if not self._hinted and (direct is not None or not takes_over(receive)):
                self._hinted = True
                serve_log.info(TAKEN_OVER if direct is not None else DIRECT_HINT)
        limits = self._limits
        budget = ReadBudget(limits.vaic_budget, max_frame_bytes=limits.max_frame_bytes,
                            clock=Scheduler.for_running_loop().now)
        budget.on_over = lambda stage, why: security.warning(
            "VAIC socket from %s %s%s", client, why, " (closed)" if stage == "close" else "")
        vaic = VaicSocket(receive, send, client=client, max_frame_bytes=limits.max_frame_bytes,
                          budget=budget, direct=direct)
        first = None
        with anyio.move_on_after(limits.initiate_timeout_s):
            first = await _await_session(vaic)
        if first is None:
            self._observers.refused("flood" if budget.closing else "no_session")
            await vaic.close(1000 if vaic.closed else 1008, "no session.initiate")
        elif isinstance(first, ac.SessionResume):
            await self._resume(vaic, conn, first)
        else:
            await self._initiate(vaic, conn, first)

    async def _initiate(self, vaic: VaicSocket, conn: Connection, msg: ac.SessionInitiate) -> None:
        cid = msg.conversation_id or ""
        offered = msg.supported_media_formats
        if len(offered) > MAX_OFFERED_FORMATS:
            msg = msgspec.structs.replace(msg, supported_media_formats=offered[
                :MAX_OFFERED_FORMATS])
        fmt = negotiate(msg.supported_media_formats, self._formats)
        calls, limit = self._calls, self._limits.max_calls
        refusal: tuple[str, str] | None = None  # (cause for metrics, reason for VAIC)
        if problem := ac.conversation_id_problem(cid):
            refusal = ("bad_request", f"session.initiate with {problem}")
            cid = ""  # not echoed, not logged
        elif calls.draining:
            refusal = ("draining", "bridge is shutting down")
        elif limit is not None and len(calls) >= limit:
            refusal = ("capacity", "bridge at capacity")
        elif cid in calls:
            refusal = ("duplicate", "conversation already in progress")
        elif msg.expect_audio_messages is False:
            refusal = ("no_audio",
                       "this bot answers with audio; set directTTS (expectAudioMessages)")
        elif fmt is None:
            refusal = ("no_format", f"no supported media format: offered "
                       f"{_listed(offered)}, supported {list(self._formats)}")
        if refusal is not None or fmt is None:
            cause, reason = refusal or ("bad_request", "refused")
            await self._refuse(vaic, cid, cause, reason)
            return
        static = self._static_agent
        call = Call(msg, session_id=uuid.uuid4().hex, media_format=fmt, agent_config=static,
                    now=Scheduler.for_running_loop().now(), playout=self._playout,
                    limits=self._limits, reconnect=self._reconnect, options=self._options,
                    wall_clock=time.time())
        choose = None if static is not None else _chooser(self._agent, conn, msg)
        await self._run(CallRuntime(call, self._deps(), choose), vaic, conn.path)

    async def _resume(self, vaic: VaicSocket, conn: Connection, msg: ac.SessionResume) -> None:
        cid = msg.conversation_id or ""
        if problem := ac.conversation_id_problem(cid):
            await self._refuse(vaic, "", "bad_request", f"session.resume with {problem}")
            return
        runtime = self._calls.get(cid)
        if runtime is not None:
            if await runtime.vaic_alive(self._limits.resume_probe_s):
                await self._refuse_live(vaic, cid)
                return
            try:
                await runtime.attach(vaic)
            except SessionClosedError:
                await self._refuse(vaic, cid, "resume_ended", "conversation has ended")
            return
        if self._calls.draining:
            await self._refuse(vaic, cid, "draining", "bridge is shutting down")
            return
        if not self._cluster.shared:
            await self._refuse(vaic, cid, "resume_unknown", "conversation not found")
            return
        claimed = await self._cluster.take_over(cid, probe_s=self._limits.resume_probe_s)
        if claimed == LIVE_ELSEWHERE:
            await self._refuse_live(vaic, cid)
            return
        if isinstance(claimed, str):
            await self._refuse(vaic, cid, "resume_unknown", claimed)
            return
        snapshot, history, shared, previous = claimed
        agent = await self._agent_config(CallInfo(conn, snapshot.initiate, shared.details))
        fmt = FORMATS.get(snapshot.media_format)
        if not isinstance(agent, AgentConfig) or fmt is None:
            cause, reason = agent if isinstance(agent, tuple) else (
                "agent_config", f"unknown media format {snapshot.media_format!r}")
            await self._refuse(vaic, cid, cause, reason)
            return
        if self._taking_over is not None:
            await self._taking_over(cid)
        call = Call(snapshot.initiate, session_id=snapshot.session_id, media_format=fmt,
                    agent_config=agent, now=Scheduler.for_running_loop().now(),
                    playout=self._playout, limits=self._limits, reconnect=self._reconnect,
                    options=self._options, wall_clock=snapshot.started_wall,
                    taken_over=(snapshot.epoch, history, shared))
        for_call(cid, snapshot.session_id).info(
            "resumed here, taken over from %s", previous or "an instance that drained")
        await self._run(CallRuntime(call, self._deps()), vaic, snapshot.path)

    async def _run(self, runtime: CallRuntime, vaic: VaicSocket, path: str) -> None:
        self._calls.add(runtime)
        cluster, call = self._cluster, runtime.call
        try:
            if cluster.shared:
                await cluster.register(call, path, runtime.log)
            await runtime.run(vaic)
        finally:
            self._calls.remove(runtime)
            if cluster.shared:
                with anyio.CancelScope(shield=True), anyio.move_on_after(3):
                    await cluster.keep(call.conversation_id, runtime.unshared_history(),
                                       runtime.log, runtime.unshared_state())
                    await cluster.unregister(call, runtime.log)

    async def _agent_config(self, info: CallInfo) -> AgentConfig | tuple[str, str]:
        """The call's agent config, or why not (cause for metrics, reason for VAIC)."""
        try:
            config = await self._agent(info)
        except Exception:
            for_call(info.initiate.conversation_id).exception("agent factory failed")
            return ("agent_config", "no agent configuration for this call")
        if config is None:  # the application's choice: not a fault
            return ("no_agent", f"no agent for this call (path {info.connection.path})")
        return config

    async def _refuse_live(self, vaic: VaicSocket, cid: str) -> None:
        """A resume for a call whose socket is alive: someone else holds the call."""
        security.warning("[%s] session.resume from %s refused: the call's own socket is "
                         "alive (a resume replaces only a dead socket)", cid, vaic.client)
        await self._refuse(vaic, cid, "resume_live", "conversation is live on another socket")

    async def _refuse(self, vaic: VaicSocket, cid: str, cause: str, reason: str) -> None:
        self._observers.refused(cause)
        level = logging.INFO if cause == "no_agent" else logging.WARNING
        for_call(cid or None).log(level, "session refused: %s", reason)
        try:
            await vaic.send_text(ac.encode(ac.SessionError(reason=reason,
                                                           conversation_id=cid or None)))
        finally:
            await vaic.close(1000, reason)


def _chooser(
    source: AgentSource, conn: Connection, initiate: ac.SessionInitiate,
) -> Callable[[CallDetails | None], Awaitable[AgentConfig | None]]:
    """The factory of one call, to run once its details are known."""
    async def choose(details: CallDetails | None) -> AgentConfig | None:
        return await source(CallInfo(conn, initiate, details))

    return choose
def _listed(items: tuple[str, ...], shown: int = 8) -> str:
    """A peer's list, bounded for a reply or a log line."""
    head = ", ".join(repr(peer_text(i, 40)) for i in items[:shown])
    return f"[{head}]" if len(items) <= shown else f"[{head}, ...] ({len(items)} in all)"


async def _await_session(vaic: VaicSocket) -> ac.SessionInitiate | ac.SessionResume | None:
    """Read until a session starts, answering ``connection.validate`` on the way.

    What comes before is ignored with a warning; repeats of one kind are folded, so a
    socket that floods before its session cannot flood the log."""
    folds, now = Fold(5.0, burst=1), Scheduler.for_running_loop().now

    def ignored(kind: str, what: str) -> None:
        if folds.add(kind, now(), what):
            logger.warning("%s before session.initiate from %s ignored", what, vaic.client)
        report(folds.due(now()))

    def report(folded: list[Folded]) -> None:
        for repeats in folded:
            logger.warning("before session.initiate from %s, ignored: %s", vaic.client,
                           repeats.describe())

    try:
        while (frame := await vaic.receive()) is not None:
            if len(frame) > vaic.max_frame_bytes:
                ignored("oversized", f"frame of {len(frame)} bytes "
                                     f"(at most {vaic.max_frame_bytes})")
                continue
            if not isinstance(frame, str):
                ignored("binary", "binary frame")
                continue
            try:
                msg = ac.decode(frame)
            except ac.DecodeError as exc:
                ignored("malformed", f"malformed message ({exc})")
                continue
            if isinstance(msg, ac.SessionInitiate | ac.SessionResume):
                return msg
            if isinstance(msg, ac.ConnectionValidate):
                await vaic.send_text(ac.encode(ac.ConnectionValidated(success=True)))
            else:
                kind = msg.type if isinstance(msg, ac.UnknownMessage) else (
                    type(msg).__struct_config__.tag)
                ignored("message", f"{kind} message")
        return None
    finally:
        report(folds.flush())
