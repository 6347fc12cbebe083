"""BridgeApp: the ASGI application that VAIC connects to.

Mount it anywhere (``app.mount("/audiocodes", BridgeApp(...))``) or serve it alone. At
its root it answers Live Hub's HTTP health probe and accepts VAIC's WebSockets, one call
per socket; ``/ready`` reports readiness for load balancers. Calls are kept by
``conversationId``, so a ``session.resume`` on a new socket finds its call.

Mounted apps do not receive ASGI lifespan events from their host, so the bridge offers
its own: pass ``lifespan=bridge.lifespan`` to Starlette/FastAPI (or enter
``async with bridge:``) to drain calls gracefully on shutdown. Without it the bridge
still works; it just cannot drain.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
from starlette.types import Receive, Scope, Send

from .agent import AgentConnector, WebsocketsConnector
from .audio import DEFAULT_PREFERENCE, FORMATS, negotiate
from .auth import AuthHook, Connection, build_auth
from .call import Call
from .config import AgentConfig, Limits, Playout, Reconnect, Secret, as_agent_config
from .errors import AuthError, ConfigError, SessionClosedError
from .events import Event
from .handlers import EventHandlers, H
from .metrics import CONTENT_TYPE, PrometheusMetrics
from .observe import Observer, Observers
from .protocols import audiocodes as ac
from .protocols import deepgram as dg
from .runtime import CallRuntime, Services, logger
from .scheduler import Scheduler
from .tracing import call_tracer
from .transport import VaicSocket

__all__ = ["AgentFactory", "BridgeApp", "CallInfo"]

PROBE_BODY = b'{"type":"ac-bot-api","success":true}'


class CallInfo(msgspec.Struct, frozen=True):
    """What a per-call agent factory can choose from: the upgrade and the initiate."""

    connection: Connection
    initiate: ac.SessionInitiate


AgentSpec = AgentConfig | dg.AgentSettings | dict[str, Any]
AgentFactory = Callable[[CallInfo], Awaitable[AgentSpec]]


class BridgeApp:
    """AudioCodes Bot API (streaming) in, Deepgram Voice Agent v1 out, one call per socket.

    Usage::

        bridge = BridgeApp(
            agent=AgentSettings(think=ThinkSettings(provider={...}, prompt="..."),
                                greeting="Hello!"),
            auth="the-token-configured-in-live-hub",
        )

        @bridge.on("conversation_text")
        async def on_text(session, event): ...

        app = Starlette(routes=[Mount("/audiocodes", bridge)], lifespan=bridge.lifespan)
    """

    def __init__(
        self,
        *,
        agent: AgentSpec | AgentFactory | None = None,
        deepgram_api_key: str | Secret | None = None,
        deepgram_url: str = dg.DEFAULT_URL,
        auth: str | Secret | AuthHook | None = None,
        media_formats: Sequence[str] = DEFAULT_PREFERENCE,
        playout: Playout | None = None,
        limits: Limits | None = None,
        reconnect: Reconnect | None = None,
        drain_timeout_s: float = 600.0,
        connector: AgentConnector | None = None,
        metrics: bool | PrometheusMetrics = False,
        tracing: bool | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        if agent is None or isinstance(agent, AgentConfig | dg.AgentSettings | dict):
            static = as_agent_config(agent if agent is not None else AgentConfig())
            self._agent_factory: AgentFactory | None = None
            self._static_agent: AgentConfig | None = static
        elif callable(agent):
            self._agent_factory, self._static_agent = agent, None
        else:
            raise ConfigError(f"agent must be settings, a dict or an async factory: {agent!r}")
        unknown = [f for f in media_formats if f not in FORMATS]
        if unknown or not media_formats:
            raise ConfigError(f"unsupported media formats {unknown}; known: {sorted(FORMATS)}")
        key = deepgram_api_key if deepgram_api_key is not None else os.environ.get(
            "DEEPGRAM_API_KEY", "")
        self.deepgram_api_key = key if isinstance(key, Secret) else Secret(key)
        if not self.deepgram_api_key and deepgram_url == dg.DEFAULT_URL:
            raise ConfigError("no Deepgram API key: pass deepgram_api_key= or set DEEPGRAM_API_KEY")
        self.deepgram_url = deepgram_url
        self.media_formats = tuple(media_formats)
        self.playout = playout or Playout()
        self.limits = limits or Limits()
        self.reconnect = reconnect or Reconnect()
        self.drain_timeout_s = drain_timeout_s
        self._auth = build_auth(auth)
        self._auth_repr = "none" if auth is None else "token" if isinstance(
            auth, str | Secret) else getattr(auth, "__qualname__", "hook")
        self._connector = connector or WebsocketsConnector(
            open_timeout=self.limits.handshake_timeout_s)
        self.handlers = EventHandlers()
        self.metrics = PrometheusMetrics() if metrics is True else metrics or None
        watchers: list[Observer] = list(observers)
        if self.metrics is not None:
            self.metrics.watch(lambda: list(self.calls.values()))
            watchers.append(self.metrics)
        tracer = call_tracer(enabled=tracing)
        if tracer is not None:
            watchers.append(tracer)
        self.observers = Observers(watchers)
        self.calls: dict[str, CallRuntime] = {}
        self.draining = False
        self._no_calls = anyio.Event()

    def __repr__(self) -> str:
        return (
            f"BridgeApp(deepgram_url={self.deepgram_url!r}, "
            f"deepgram_api_key={self.deepgram_api_key!r}, auth={self._auth_repr}, "
            f"calls={len(self.calls)}, draining={self.draining})"
        )

    def on(self, event: str | type[Event]) -> Callable[[H], H]:
        """Register a handler: ``@bridge.on("session_start")``. See :mod:`acdg_asgi.events`."""
        return self.handlers.on(event)

    # --- lifespan and drain --------------------------------------------------------------

    async def __aenter__(self) -> BridgeApp:
        self.draining = False
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.drain()

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """For ``Starlette(lifespan=bridge.lifespan)``: drain calls on shutdown."""
        async with self:
            yield

    async def drain(self, timeout_s: float | None = None) -> None:
        """Refuse new calls, let active ones finish, then hang up what is left."""
        self.draining = True
        deadline = self.drain_timeout_s if timeout_s is None else timeout_s
        if self.calls:
            logger.info("draining: %d calls active, waiting up to %.0f s", len(self.calls),
                        deadline)
        await self._wait_for_no_calls(deadline)
        for runtime in list(self.calls.values()):
            if runtime.call.is_active:
                await runtime.command(lambda call, now: call.hangup(
                    now, "service shutting down", end_reason="shutdown"))
        await self._wait_for_no_calls(self.limits.hangup_timeout_s + 1)
        for runtime in list(self.calls.values()):
            await runtime.command(lambda call, now: call.end(now, "shutdown"))

    async def _wait_for_no_calls(self, timeout_s: float) -> None:
        if self.calls:
            self._no_calls = anyio.Event()
            with anyio.move_on_after(timeout_s):
                await self._no_calls.wait()

    # --- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, send: Send) -> None:
        path = _route_path(scope)
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b'{"error":"method not allowed"}')
        elif path == "/":
            await _respond(send, 200, PROBE_BODY)
        elif path == "/ready":
            body = msgspec.json.encode({"ready": not self.draining, "calls": len(self.calls)})
            await _respond(send, 503 if self.draining else 200, body)
        elif path == "/metrics" and self.metrics is not None:
            await _respond(send, 200, self.metrics.render(), CONTENT_TYPE)
        else:
            await _respond(send, 404, b'{"error":"not found"}')

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.__aenter__()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.drain()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = Connection.from_scope(scope, _route_path(scope))
        if (await receive())["type"] != "websocket.connect":
            return
        if self.draining:
            self.observers.refused("draining")
            await _deny(scope, send, 503, "draining: not accepting new calls")
            return
        try:
            allowed = await self._auth(conn)
            status = 401
        except AuthError as exc:
            allowed, status = False, exc.status_code
        if not allowed:
            self.observers.refused("auth")
            logger.warning("upgrade refused (%d) from %s", status, conn.client)
            await _deny(scope, send, status, "unauthorized")
            return
        await send({"type": "websocket.accept"})
        client = f"{conn.client[0]}:{conn.client[1]}" if conn.client else "?"
        vaic = VaicSocket(receive, send, client=client, max_frame_bytes=self.limits.max_frame_bytes)
        first = None
        with anyio.move_on_after(self.limits.initiate_timeout_s):
            first = await _await_session(vaic)
        if first is None:
            self.observers.refused("no_session")
            await vaic.close(1000 if vaic.closed else 1008, "no session.initiate")
            return
        if isinstance(first, ac.SessionResume):
            await self._resume(vaic, first)
        else:
            await self._initiate(vaic, conn, first)

    async def _initiate(self, vaic: VaicSocket, conn: Connection, msg: ac.SessionInitiate) -> None:
        cid = msg.conversation_id
        refusal: tuple[str, str] | None = None  # (cause for metrics, reason for VAIC)
        fmt = negotiate(msg.supported_media_formats, self.media_formats)
        if not cid:
            refusal = ("bad_request", "session.initiate without conversationId")
        elif self.draining:
            refusal = ("draining", "bridge is shutting down")
        elif self.limits.max_calls is not None and len(self.calls) >= self.limits.max_calls:
            refusal = ("capacity", "bridge at capacity")
        elif cid in self.calls:
            refusal = ("duplicate", "conversation already in progress")
        elif not msg.expect_audio_messages:
            refusal = ("no_audio", "this bot answers with audio; set directTTS "
                       "(expectAudioMessages)")
        elif fmt is None:
            refusal = ("no_format", "no supported media format: offered "
                       f"{list(msg.supported_media_formats)}, supported {list(self.media_formats)}")
        agent = self._static_agent
        if refusal is None and agent is None and self._agent_factory is not None:
            try:
                agent = as_agent_config(await self._agent_factory(CallInfo(conn, msg)))
            except Exception as exc:
                logger.exception("[%s] agent factory failed", cid)
                refusal = ("agent_config",
                           f"no agent configuration for this call ({type(exc).__name__})")
        if refusal is not None or fmt is None or agent is None or not cid:
            cause, reason = refusal or ("bad_request", "refused")
            self.observers.refused(cause)
            logger.warning("[%s] session refused: %s", cid, reason)
            await _refuse(vaic, reason, cid)
            return
        call = Call(msg, session_id=uuid.uuid4().hex, media_format=fmt, agent_config=agent,
                    now=Scheduler.for_running_loop().now(), playout=self.playout,
                    limits=self.limits, reconnect=self.reconnect, wall_clock=time.time())
        runtime = CallRuntime(call, self._services())
        self.calls[cid] = runtime
        try:
            await runtime.run(vaic)
        finally:
            if self.calls.get(cid) is runtime:
                del self.calls[cid]
            if not self.calls:
                self._no_calls.set()

    async def _resume(self, vaic: VaicSocket, msg: ac.SessionResume) -> None:
        cid = msg.conversation_id or ""
        runtime = self.calls.get(cid)
        if runtime is None:
            self.observers.refused("resume_unknown")
            logger.warning("[%s] resume refused: conversation not found", cid)
            await _refuse(vaic, "conversation not found", cid)
            return
        try:
            await runtime.attach(vaic)
        except SessionClosedError:
            self.observers.refused("resume_ended")
            await _refuse(vaic, "conversation has ended", cid)

    def _services(self) -> Services:
        key = self.deepgram_api_key
        return Services(
            connector=self._connector,
            agent_url=self.deepgram_url,
            agent_headers={"Authorization": f"Token {key.reveal()}"} if key else {},
            scheduler=Scheduler.for_running_loop(),
            handlers=self.handlers,
            observers=self.observers,
        )


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
            cid = getattr(msg, "conversation_id", None)
            logger.warning("[%s] %s before session.initiate ignored", cid, msg.type if isinstance(
                msg, ac.UnknownMessage) else type(msg).__struct_config__.tag)
    return None


async def _refuse(vaic: VaicSocket, reason: str, cid: str | None) -> None:
    try:
        await vaic.send_text(ac.encode(ac.SessionError(reason=reason, conversation_id=cid)))
    finally:
        await vaic.close(1000, reason)


def _route_path(scope: Scope) -> str:
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


async def _respond(
    send: Send, status: int, body: bytes, content_type: str = "application/json"
) -> None:
    headers = [(b"content-type", content_type.encode()),
               (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _deny(scope: Scope, send: Send, status: int, reason: str) -> None:
    """Refuse an upgrade with a real HTTP status where the server allows it."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = msgspec.json.encode({"error": reason})
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": reason})
