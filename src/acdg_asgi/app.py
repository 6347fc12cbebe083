"""BridgeApp: the ASGI application that VAIC connects to.

Route it in a host app with ``bridge.routes("/audiocodes")`` (Starlette, FastAPI) or
``bridge.litestar_handler("/audiocodes")`` (Litestar), or serve it alone. At its root it
answers Live Hub's HTTP health probe and accepts VAIC's WebSockets, one call per socket;
``/ready`` reports readiness for load balancers. Calls are kept by ``conversationId``,
so a ``session.resume`` on a new socket finds its call.

Mounted apps do not receive ASGI lifespan events from their host, so the bridge offers
its own: pass ``lifespan=bridge.lifespan`` to Starlette/FastAPI (or enter
``async with bridge:``). Its startup puts the drain in front of the server's SIGTERM
handling (:mod:`acdg_asgi.shutdown`), so a SIGTERM drains calls under plain uvicorn too.
Without it the bridge still works; it just cannot drain.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, ParamSpec
from urllib.parse import urlsplit

import anyio
from starlette.types import Receive, Scope, Send

from .asgi.admission import Admission, AgentFactory, AgentSource, AgentSpec, CallInfo
from .asgi.mount import BridgeRoute, litestar_handler
from .asgi.phone import PhonePage, SupervisorPage
from .asgi.registry import CallRegistry
from .asgi.routes import HttpRoutes, OpsAccess
from .audio import DEFAULT_PREFERENCE, FORMATS
from .auth import AuthHook, build_auth
from .cluster.cluster import Cluster
from .cluster.control import CallControl
from .cluster.live import LiveShipper, SharedLive
from .cluster.store import CallStore, open_store
from .cluster.store.base import LiveStore
from .config import (
    DEFAULT_TRANSFER_FAILED,
    AgentConfig,
    Limits,
    Participants,
    Playout,
    Reconnect,
    Secret,
    VaicSessionParams,
    as_agent_config,
)
from .delivery import RecordFeed, RecordSink
from .errors import ConfigError, moved
from .events import Event
from .observability.live import LiveEvents, LiveOutbox, LiveSource
from .observability.logs import log_somewhere, logger
from .observability.metrics import PrometheusMetrics
from .observability.observer import Observer, Observers
from .observability.tracing import call_tracer
from .policies import (
    CallOptions,
    DtmfInput,
    Interruption,
    NoInput,
    SensitiveMode,
    TelephonyTools,
)
from .protocols import deepgram as dg
from .protocols._codec import nearest
from .runtime.app_events import EventHandlers, H
from .runtime.deps import CallDeps
from .runtime.scheduler import Scheduler
from .shutdown import hook_signals, server_workers, unhook_signals
from .transports.agent_base import AgentConnector
from .transports.agent_lean import LeanConnector
from .transports.redact import protect_server_logs

if TYPE_CHECKING:
    from litestar.handlers import ASGIRouteHandler
    from starlette.routing import BaseRoute

DEFAULT_DRAIN_TIMEOUT_S = 20.0  # with the hang-ups after it, inside Kubernetes' default 30 s
DrainMode = Literal["wait", "migrate"]
P = ParamSpec("P")

__all__ = ["AgentFactory", "BridgeApp", "CallInfo"]


_INIT_CALLER = 4  # a warning from __init__ points past _names_the_nearest, at its caller


def _names_the_nearest(init: Callable[P, None]) -> Callable[P, None]:
    """A misspelt keyword names the nearest known one, as the settings structs do:
    ``BridgeApp(direct_pth=False)`` says ``did you mean "direct_path"?``."""
    known = [name for name in inspect.signature(init).parameters if name != "self"]

    @functools.wraps(init)
    def checked(*args: P.args, **kwargs: P.kwargs) -> None:
        if unknown := [key for key in kwargs if key not in known]:
            raise TypeError("; ".join(
                f"BridgeApp() got an unknown keyword {key!r}{nearest(key, known)}"
                for key in unknown))
        init(*args, **kwargs)

    return checked


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

        app = Starlette(routes=bridge.routes("/audiocodes"), lifespan=bridge.lifespan)

    On shutdown (SIGTERM) the bridge drains: ``drain_mode="wait"`` lets calls run up to
    ``drain_timeout_s`` and then hangs up politely; ``"migrate"`` (with a shared
    ``store``) moves them to another instance at once.

    In development, ``phone=True`` serves a browser phone at ``<mount>/phone``: a VAIC in
    a web page that calls the bridge, with the call's events from ``<mount>/live/events``.
    ``live=True`` (or ``phone=True``) serves the live view: every call's events and the
    calls in progress (``<mount>/live/events``, ``<mount>/live/calls``) and a supervisor
    page at ``<mount>/live``, authenticated with ``control_auth`` (and, with
    ``phone=True``, like the bot URL). With a shared ``store`` they cover every
    instance's calls.
    """

    @_names_the_nearest
    def __init__(
        self,
        *,
        agent: AgentSpec | AgentFactory | None = None,
        deepgram_api_key: str | Secret | None = None,
        deepgram_url: str | None = None,
        auth: str | Secret | AuthHook | None = None,
        media_formats: Sequence[str] = DEFAULT_PREFERENCE,
        playout: Playout | None = None,
        limits: Limits | None = None,
        reconnect: Reconnect | None = None,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
        drain_mode: DrainMode = "wait",
        connector: AgentConnector | None = None,
        metrics: bool | PrometheusMetrics = False,
        tracing: bool | None = None,
        observers: Sequence[Observer] = (),
        store: CallStore | str | None = None,
        instance_id: str | None = None,
        lease_ttl_s: float = 30.0,
        control_auth: str | Secret | AuthHook | None = None,
        records: Sequence[RecordSink] = (),
        ops_access: OpsAccess = "public",
        vaic_session: VaicSessionParams | None = None,
        participants: Participants | None = None,
        transfer_failed_message: str | None = DEFAULT_TRANSFER_FAILED,
        tools: TelephonyTools | None = None,
        interruption: Interruption | None = None,
        no_input: NoInput | None = None,
        dtmf: DtmfInput | None = None,
        sensitive: SensitiveMode | None = None,
        redact: Callable[[str], str] | None = None,
        phone: bool = False,
        live: bool | LiveEvents = False,
        direct_path: bool = True,
        preferred_media_formats: Sequence[str] | None = None,
    ) -> None:
        if preferred_media_formats is not None:
            moved("preferred_media_formats=", "media_formats=", stacklevel=_INIT_CALLER)
            media_formats = preferred_media_formats
        if auth is None and os.environ.get("AC_TOKEN"):
            moved("the AC_TOKEN variable", "auth=os.environ['AC_TOKEN'] (acdg serve reads "
                  "ACDG_TOKEN)", stacklevel=_INIT_CALLER)
            logger.info("auth: the bearer token from AC_TOKEN")
            auth = Secret(os.environ["AC_TOKEN"])
        choose_agent, self.static_agent = _agent_source(agent)  # static: None for a factory
        if isinstance(media_formats, str):
            media_formats = (media_formats,)  # one format, not its characters
        unknown = [f for f in media_formats if f not in FORMATS]
        if unknown or not media_formats:
            raise ConfigError(f"unsupported media formats {unknown}; known: {sorted(FORMATS)}")
        _expect("deepgram_api_key", deepgram_api_key, str | Secret | None, "a string")
        if deepgram_url is None:
            deepgram_url = os.environ.get("DEEPGRAM_URL") or dg.DEFAULT_URL
        key = deepgram_api_key if deepgram_api_key is not None else os.environ.get(
            "DEEPGRAM_API_KEY", "")
        self.deepgram_api_key = key if isinstance(key, Secret) else Secret(key)
        _check_agent_url(deepgram_url)
        if not self.deepgram_api_key and deepgram_url == dg.DEFAULT_URL:
            raise ConfigError("no Deepgram API key: pass deepgram_api_key= or set DEEPGRAM_API_KEY")
        self.deepgram_url = deepgram_url
        self.media_formats = tuple(media_formats)
        _expect("playout", playout, Playout | None, "Playout(...)")
        _expect("limits", limits, Limits | None, "Limits(...)")
        _expect("reconnect", reconnect, Reconnect | None, "Reconnect(...)")
        _expect("metrics", metrics, bool | PrometheusMetrics, "True, False or PrometheusMetrics")
        _expect("instance_id", instance_id, str | None, "a string")
        for name, seconds in (("drain_timeout_s", drain_timeout_s), ("lease_ttl_s", lease_ttl_s)):
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
                raise ConfigError(f"{name} must be a number of seconds above 0, not {seconds!r}")
        if connector is not None and not callable(getattr(connector, "connect", None)):
            raise ConfigError(f"connector must have an async connect(url, headers), not "
                              f"{connector!r}")
        self.playout = playout or Playout()
        self.limits = limits or Limits()
        self.reconnect = reconnect or Reconnect()
        if drain_mode not in ("wait", "migrate"):
            raise ConfigError(f"drain_mode must be 'wait' or 'migrate', not {drain_mode!r}")
        if not drain_timeout_s >= 0:
            raise ConfigError(f"drain_timeout_s must be 0 or more, not {drain_timeout_s!r}")
        self.drain_timeout_s = float(drain_timeout_s)
        self.drain_mode: DrainMode = drain_mode
        self._started = False
        self._warned_no_lifespan = False
        _expect("tools", tools, TelephonyTools | None, "TelephonyTools(...)")
        _expect("interruption", interruption, Interruption | None, "Interruption(...)")
        _expect("no_input", no_input, NoInput | None, "NoInput(...)")
        _expect("dtmf", dtmf, DtmfInput | None, "DtmfInput(...)")
        _expect("sensitive", sensitive, SensitiveMode | None, "SensitiveMode(...)")
        if redact is not None and not callable(redact):
            raise ConfigError(f"redact must be a function from text to text, not {redact!r}")
        self.options = CallOptions(vaic_session=vaic_session,
                                   participants=participants or Participants(),
                                   transfer_failed_message=transfer_failed_message,
                                   tools=tools, interruption=interruption or Interruption(),
                                   no_input=no_input, dtmf=dtmf,
                                   sensitive=sensitive or SensitiveMode(), redact=redact)
        self.auth = build_auth(auth)
        self.control_auth = build_auth(control_auth) if control_auth is not None else None
        _check_ops_access(ops_access, self.control_auth)
        self.cluster = Cluster(open_store(store), instance_id=instance_id,
                               lease_ttl_s=lease_ttl_s)
        protect_server_logs()  # uvicorn's debug lines would show VAIC's token
        log_somewhere()
        self.calls = CallRegistry()
        self._auth_repr = "none" if auth is None else "token" if isinstance(
            auth, str | Secret) else getattr(auth, "__qualname__", "hook")
        self._connector = connector or LeanConnector()
        self.handlers = EventHandlers()
        self.metrics = PrometheusMetrics() if metrics is True else metrics or None
        watchers: list[Observer] = list(observers)
        if self.metrics is not None:
            self.metrics.watch(self.calls.live)
            self.metrics.watch_cluster(lambda: self.cluster.last_cluster_calls)
            watchers.append(self.metrics)
        tracer = call_tracer(enabled=tracing)
        if tracer is not None:
            watchers.append(tracer)
        self.records = tuple(records)
        if self.records:
            watchers.append(RecordFeed(self.records))
        self.live = LiveEvents() if live is True or (phone and live is False) else live or None
        live_auth = [self.auth] if phone else []
        if self.control_auth is not None:
            live_auth.append(self.control_auth)
        self.live_shipper: LiveShipper | None = None
        live_source: LiveSource | None = self.live
        if self.live is not None:
            if not live_auth:
                raise ConfigError("live= needs control_auth= (or phone=True) to authenticate "
                                  "who reads the events")
            self.live.instance = self.live.instance or self.cluster.instance_id
            store = self.cluster.store
            if isinstance(store, LiveStore):  # pages on any instance follow calls on any
                self.live.outbox = LiveOutbox()
                self.live_shipper = LiveShipper(self.live.outbox, store)
                live_source = SharedLive(self.live, store)
            watchers.append(self.live)
        self.observers = Observers(watchers)
        self._background: AsyncExitStack | None = None
        self._admission = Admission(
            self.calls, self.cluster, auth=self.auth, agent=choose_agent,
            static_agent=self.static_agent, media_formats=self.media_formats,
            playout=self.playout, limits=self.limits, reconnect=self.reconnect,
            observers=self.observers, deps=self._call_deps, options=self.options,
            taking_over=live_source.taking_over if isinstance(live_source, SharedLive) else None,
            direct_path=direct_path,
        )
        self._routes = HttpRoutes(self.calls, self.cluster, metrics=self.metrics,
                                  control_auth=self.control_auth, control=self.control,
                                  ops=ops_access, live=live_source, live_auth=live_auth,
                                  phone=PhonePage() if phone else None,
                                  live_page=SupervisorPage() if self.live else None)
        self.ops_app = self._routes.ops_app
        """``/ready`` and ``/metrics`` as an ASGI app of their own, to serve on another port
        (with ``ops_access="separate"`` the bot's URL no longer answers them)."""

    @property
    def ops_access(self) -> OpsAccess:
        """Who may read ``/ready`` and ``/metrics`` on the bot's URL: ``"public"``,
        ``"control_auth"``, or nobody (``"separate"``: only :attr:`ops_app` serves them).
        ``acdg serve --ops-port`` sets ``"separate"``."""
        return self._routes.ops

    @ops_access.setter
    def ops_access(self, value: OpsAccess) -> None:
        _check_ops_access(value, self.control_auth)
        self._routes.ops = value

    def __repr__(self) -> str:
        return (
            f"BridgeApp(deepgram_url={self.deepgram_url!r}, "
            f"deepgram_api_key={self.deepgram_api_key!r}, auth={self._auth_repr}, "
            f"cluster={self.cluster!r}, calls={len(self.calls)}, draining={self.draining})"
        )

    @property
    def draining(self) -> bool:
        """Refusing new calls (readiness 503) while the calls in progress finish."""
        return self.calls.draining

    def on(self, event: str | type[Event]) -> Callable[[H], H]:
        """Register a handler: ``@bridge.on("session_start")``. See :mod:`acdg_asgi.events`."""
        return self.handlers.on(event)

    # --- routing in a host app -----------------------------------------------------------

    def routes(self, path: str = "/") -> list[BaseRoute]:
        """Starlette/FastAPI routes serving the bridge at ``path`` and below it.

        ``Starlette(routes=[*bridge.routes("/audiocodes"), ...])``, ``FastAPI(routes=...)``
        or ``app.router.routes.extend(bridge.routes("/audiocodes"))``. The WebSocket and
        Live Hub's GET probe are answered at ``/audiocodes`` and ``/audiocodes/`` alike,
        with no redirect; ``/audiocodes/ready`` and ``/audiocodes/metrics`` below it.
        ``Connection.path`` is ``"/"`` for both spellings.
        """
        return [BridgeRoute(path, self)]

    def litestar_handler(self, path: str = "/") -> ASGIRouteHandler:
        """The same for Litestar: ``Litestar(route_handlers=[bridge.litestar_handler(
        "/audiocodes")], lifespan=[bridge.lifespan])``. Imports Litestar only here."""
        return litestar_handler(self, path)

    # --- lifespan and drain --------------------------------------------------------------

    async def __aenter__(self) -> BridgeApp:
        """Start what runs beside the calls: the drain on the server's SIGTERM; with a
        shared store, this instance's control channel and heartbeat; the delivery of call
        records."""
        self.calls.draining = False
        if self.live is not None:
            self.live.open()
        if not self._started:
            self._started = True
            hook_signals(self)
            workers = server_workers()
            if workers > 1 and not self.cluster.shared:
                logger.warning(
                    "%d worker processes and no shared store: each worker is an instance "
                    "with its own calls, so a VAIC resume that lands on another worker is "
                    "refused; run one worker per container, or set ACDG_REDIS_URL", workers)
        if self._background is None:
            await self.cluster.announce()
        if (self.cluster.shared or self.records) and self._background is None:
            stack = AsyncExitStack()
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            if self.cluster.shared:
                tg.start_soon(self.cluster.serve, self.calls)
            if self.live_shipper is not None:
                tg.start_soon(self.live_shipper.run)
            for sink in self.records:
                tg.start_soon(sink.run)
            self._background = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.drain()
        for sink in self.records:
            with anyio.move_on_after(5):
                await sink.flush()
        if self._started:
            self._started = False
            unhook_signals(self)
        if self._background is not None:
            stack, self._background = self._background, None
            await stack.aclose()
        if self.cluster.store is not None:
            await self.cluster.store.close()

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """For ``Starlette(lifespan=bridge.lifespan)``: drain calls on shutdown."""
        async with self:
            yield

    async def drain(self, timeout_s: float | None = None, *, migrate: bool | None = None) -> None:
        """Refuse new calls, let active ones finish, then hang up what is left.

        With ``migrate=True`` (and a shared store), active calls are not waited for: each
        VAIC socket is closed without ``session.end``, VAIC reconnects through the load
        balancer, and another instance resumes the call with its history. The defaults
        are ``drain_timeout_s`` and ``drain_mode``.
        """
        calls = self.calls
        calls.draining = True
        if migrate is None:
            migrate = self.drain_mode == "migrate"
        if migrate and not self.cluster.shared and calls:
            logger.warning("drain: migrating calls needs a shared store; waiting for them")
        if migrate and self.cluster.shared:
            for runtime in calls.runtimes():
                await runtime.command(lambda call, now: call.end(now, "migrated"))
            await calls.wait_for_no_calls(self.limits.hangup_timeout_s)
            return
        deadline = self.drain_timeout_s if timeout_s is None else timeout_s
        if calls:
            logger.info("draining: %d calls active, waiting up to %.0f s", len(calls), deadline)
        await calls.wait_for_no_calls(deadline)
        for runtime in calls.runtimes():
            if runtime.call.is_active:
                await runtime.command(lambda call, now: call.hangup(
                    now, "service shutting down", end_reason="shutdown"))
        await calls.wait_for_no_calls(self.limits.hangup_timeout_s + 1)
        for runtime in calls.runtimes():
            await runtime.command(lambda call, now: call.end(now, "shutdown"))
        if self.live is not None:
            self.live.close()  # the calls are over: nothing more to watch

    async def stop(self) -> None:
        """End every call at once: hang up politely where VAIC is there, no resume grace."""
        calls = self.calls
        calls.draining = True
        for runtime in calls.runtimes():
            if runtime.call.is_active:
                await runtime.command(lambda call, now: call.hangup(
                    now, "service stopping", end_reason="shutdown", wait_for_playout=False))
        await calls.wait_for_no_calls(1.0)
        for runtime in calls.runtimes():
            await runtime.command(lambda call, now: call.end(now, "shutdown"))
        if self.live is not None:
            self.live.close()

    def control(self, conversation_id: str, *, timeout_s: float = 5.0) -> CallControl:
        """Call-control methods for a call on this or (with a shared store) any instance."""
        return CallControl(self.calls, self.cluster, conversation_id, timeout_s=timeout_s)

    # --- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            if not self._started and not self._warned_no_lifespan:
                self._warned_no_lifespan = True
                logger.warning("the bridge's lifespan was not run, so calls cannot drain on "
                               "shutdown: pass lifespan=bridge.lifespan to the host app "
                               "(Litestar: lifespan=[bridge.lifespan])")
            await self._admission(scope, receive, send)
        elif kind == "http":
            await self._routes(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.__aenter__()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.__aexit__(None, None, None)
                await send({"type": "lifespan.shutdown.complete"})
                return

    @property
    def connector(self) -> AgentConnector:
        """What opens the agent connections (``LeanConnector`` unless given)."""
        return self._connector

    @property
    def agent_headers(self) -> dict[str, str]:
        """The agent upgrade's headers: the API key, as Deepgram takes it."""
        key = self.deepgram_api_key
        return {"Authorization": f"Token {key.reveal()}"} if key else {}

    def _call_deps(self) -> CallDeps:
        """What each call borrows from the bridge."""
        return CallDeps(
            connector=self._connector,
            agent_url=self.deepgram_url,
            agent_headers=self.agent_headers,
            scheduler=Scheduler.for_running_loop(),
            handlers=self.handlers,
            observers=self.observers,
            cluster=self.cluster,
        )


def _agent_source(
    agent: AgentSpec | AgentFactory | None,
) -> tuple[AgentSource, AgentConfig | None]:
    """``agent=`` as one shape: an async function from the call to its agent config (or
    ``None``: no agent for this call); and the config, if it is the same for every call
    (then no call waits for VAIC's ``start`` to choose it)."""
    if agent is None or isinstance(agent, AgentConfig | dg.AgentSettings | dict | str):
        static = as_agent_config(agent if agent is not None else AgentConfig())

        async def same_for_every_call(info: CallInfo) -> AgentConfig:
            return static

        return same_for_every_call, static
    if callable(agent):
        try:
            inspect.signature(agent).bind(None)
        except TypeError:
            raise ConfigError(f"the agent factory {_name(agent)} must take one argument, the "
                              "call's CallInfo") from None
        except ValueError:
            pass  # no signature to read (a builtin): find out at the first call
        factory = agent

        async def per_call(info: CallInfo) -> AgentConfig | None:
            spec = factory(info)
            if inspect.isawaitable(spec):  # an async factory, or a plain one
                spec = await spec
            return None if spec is None else as_agent_config(spec)

        return per_call, None
    raise ConfigError(f"agent must be settings, a dict, an agent configuration id or a "
                      f"factory: {agent!r}")


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _expect(name: str, value: object, kinds: Any, what: str) -> None:
    if not isinstance(value, kinds):
        raise ConfigError(f"{name} must be {what}, not {value!r}")


def _check_ops_access(value: object, control_auth: object) -> None:
    if value not in ("public", "control_auth", "separate"):
        raise ConfigError(f"ops_access must be 'public', 'control_auth' or 'separate', "
                          f"not {value!r}")
    if value == "control_auth" and control_auth is None:
        raise ConfigError("ops_access='control_auth' needs control_auth= (a token or hook)")


def _check_agent_url(url: object) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    try:
        port_ok = parts is not None and (parts.port is None or parts.port > 0)
    except ValueError:
        port_ok = False
    if parts is None or parts.scheme not in ("ws", "wss") or not parts.hostname or not port_ok:
        raise ConfigError(f"deepgram_url must be a ws:// or wss:// URL such as {dg.DEFAULT_URL}, "
                          f"not {url!r}")
