"""``acdg serve [APP]``: the bridge under uvicorn, with the drain, TLS and the fast path.

Without ``APP`` it builds a bridge from the settings (TOML, environment, flags). With
``APP`` (``module:attr``, as uvicorn takes it; ``--factory`` for a function returning the
app) it serves your own Starlette, FastAPI or Litestar app, or a ``BridgeApp``, and finds
the bridges inside it (through routes, mounts and middleware) to drain them on SIGTERM
and to write their call records.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.config import WS_PROTOCOLS

from ..app import DEFAULT_DRAIN_TIMEOUT_S, BridgeApp
from ..errors import ConfigError
from ..events import SessionEndEvent
from ..observability.logs import configure_logging
from ..observability.metrics import PrometheusMetrics, prometheus_client_missing
from ..serving import DrainingServer
from ..transports.http_guard import guarded_http
from . import checks
from .settings import ServeSettings, in_container

__all__ = ["OpsPort", "find_bridges", "listen", "load_app", "prepare", "run", "worker_app"]

log = logging.getLogger("acdg_asgi.serve")

SETTINGS_ENV = "ACDG_SERVE_SETTINGS"  # hands the settings to --workers processes
_LINKS = ("app", "routes", "router", "endpoint", "fn", "route_handler", "route_handlers", "_app",
          "handler", "middleware_stack")


def build_app(settings: ServeSettings) -> BridgeApp:
    """The bridge ``acdg serve`` runs when no ``APP`` is given."""
    metrics: bool | PrometheusMetrics = False
    if settings.server.metrics and not prometheus_client_missing:
        from prometheus_client import ProcessCollector

        metrics = PrometheusMetrics()
        ProcessCollector(registry=metrics.registry)
    server = settings.server
    return BridgeApp(
        agent=settings.agent_config(),
        deepgram_url=settings.bridge.deepgram_url,
        auth=settings.token,
        media_formats=settings.bridge.media_formats,
        playout=settings.playout,
        limits=settings.limits,
        reconnect=settings.reconnect,
        metrics=metrics,
        drain_mode="migrate" if server.drain == "migrate" else "wait",
        drain_timeout_s=(DEFAULT_DRAIN_TIMEOUT_S if server.drain_timeout_s is None
                         else server.drain_timeout_s),
    )


def write_records(bridge: BridgeApp, path: Path) -> None:
    """Append each finished call's record to ``path`` as one JSON line."""

    @bridge.on("session_end")
    def record(event: SessionEndEvent) -> None:
        if event.record is not None:
            with path.open("ab") as f:
                f.write(event.record.to_json() + b"\n")


def load_app(spec: str, *, factory: bool = False, app_dir: str = ".") -> Any:
    """``module:attr`` imported as uvicorn does; with ``factory``, called for the app.
    Whatever goes wrong is one line: a module that is not there, an attribute it lacks,
    or the exception the module (or factory) raised, with where it was raised."""
    from uvicorn.importer import ImportFromStringError, import_from_string

    folder = Path(app_dir).resolve()
    if not folder.is_dir():
        raise ConfigError(f"app_dir {app_dir!r}: no such directory")
    sys.path.insert(0, str(folder))
    try:
        app = import_from_string(spec)
    except ImportFromStringError as exc:
        why = str(exc).rstrip(".")
        raise ConfigError(f"cannot load the app {spec}: {why} (looked in {folder} and on "
                          "the import path; --app-dir names another directory)") from None
    except Exception as exc:
        raise ConfigError(f"cannot load the app {spec}: importing it raised {_raised(exc)}"
                          ) from None
    if factory:
        if not callable(app):
            raise ConfigError(f"--factory: {spec} is not a function")
        try:
            app = app()
        except Exception as exc:
            raise ConfigError(f"--factory: {spec}() raised {_raised(exc)}") from None
    return app


def _raised(exc: BaseException) -> str:
    """``NameError: name 'x' is not defined (myapp.py line 3)``: the exception and the
    innermost line of it that is not in this package."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "acdg_asgi" not in Path(f.filename).parts and "importlib" not in f.filename]
    where = f" ({frames[-1].filename} line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def find_bridges(app: object) -> list[BridgeApp]:
    """The ``BridgeApp``s in ``app``: itself, or found through routes, mounts, middleware."""
    found: list[BridgeApp] = []
    seen: set[int] = set()

    def walk(node: object, depth: int) -> None:
        if id(node) in seen or depth > 12 or isinstance(node, str | bytes | int | float):
            return
        seen.add(id(node))
        if isinstance(node, BridgeApp):
            found.append(node)
            return
        if isinstance(node, dict):
            children: Iterable[object] = node.values()
        elif isinstance(node, list | tuple | set | frozenset):
            children = node
        else:
            children = (getattr(node, name, None) for name in _LINKS)
        for child in children:
            if child is not None:
                walk(child, depth + 1)

    walk(app, 0)
    return found


def prepare(settings: ServeSettings) -> tuple[Any, list[BridgeApp]]:
    """The ASGI app to serve and the bridges in it, with the server settings applied and
    checked against them; :class:`ConfigError` for what ``acdg serve`` refuses."""
    server = settings.server
    if server.app is None:
        bridge = build_app(settings)
        app: Any = bridge
        if server.path != "/":
            from starlette.applications import Starlette

            app = Starlette(routes=bridge.routes(server.path), lifespan=bridge.lifespan)
        bridges = [bridge]
    else:
        app = load_app(server.app, factory=server.factory, app_dir=server.app_dir)
        bridges = find_bridges(app)
        if not bridges:
            raise ConfigError(
                f"no BridgeApp found in {server.app}: route one with bridge.routes(...) "
                "(Starlette, FastAPI) or bridge.litestar_handler(...), or name the bridge")
        for bridge in bridges:
            bridge.drain_mode = "migrate" if server.drain == "migrate" else "wait"
            if server.drain_timeout_s is not None:
                bridge.drain_timeout_s = server.drain_timeout_s
    _refuse(settings, bridges)
    if server.records:
        checks.writable(server.records)
        for bridge in bridges:
            write_records(bridge, Path(server.records))
    if server.ops_port is not None:
        bridges[0].ops_access = "separate"
        app = OpsPort(app, bridges[0].ops_app, server.ops_port)
    return app, bridges


def _refuse(settings: ServeSettings, bridges: list[BridgeApp]) -> None:
    """What cannot work with these bridges, before anything is served."""
    server = settings.server
    if server.ops_port is not None and len(bridges) > 1:
        raise ConfigError(f"--ops-port serves one bridge's /ready and /metrics, and "
                          f"{server.app} has {len(bridges)}: serve each bridge's ops_app "
                          "yourself, or leave --ops-port out")
    if server.workers > 1:
        if (server.app or "").startswith("__main__:"):
            raise ConfigError("--workers needs the app by name: acdg serve module:app "
                              "--workers N")
        if not all(b.cluster.shared for b in bridges):
            raise ConfigError(
                f"--workers {server.workers} needs a shared store: each worker process is "
                "an instance with its own calls, so a VAIC resume that lands on another "
                "worker would find nothing. Set ACDG_REDIS_URL (or store=), or run one "
                "worker per container and scale with replicas")
    if server.ws not in WS_PROTOCOLS:
        from uvicorn.importer import ImportFromStringError, import_from_string

        try:
            import_from_string(server.ws)
        except (ImportFromStringError, ImportError) as exc:
            raise ConfigError(f"ws {server.ws!r}: {exc}; leave it out for the default") from None
    for bridge in bridges:  # an HTTPS_PROXY the agent client cannot use
        proxy_for = getattr(bridge.connector, "proxy_for", None)
        try:
            if callable(proxy_for):
                proxy_for(bridge.deepgram_url)
        except ConfigError as exc:
            raise ConfigError(f"{exc}: check HTTPS_PROXY (or the connector's proxy=)") from None


class OpsPort:
    """``app`` on the bot's port, ``ops_app`` (``/ready``, ``/metrics``) on ``ops_port``:
    one server listens on both, and each connection goes by the port it came in on."""

    def __init__(self, app: Any, ops_app: Any, ops_port: int) -> None:
        self.app = app
        self.ops_app = ops_app
        self.ops_port = ops_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        local = scope.get("server") if scope["type"] != "lifespan" else None
        if local is not None and local[1] == self.ops_port:
            await self.ops_app(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def worker_app() -> Any:
    """For ``--workers``: each worker process builds the app from the same settings."""
    settings = msgspec.json.decode(os.environ[SETTINGS_ENV], type=ServeSettings)
    configure_logging(settings.server.log_format, settings.server.log_level)
    return prepare(settings)[0]


def describe_agent(settings: ServeSettings) -> str:
    agent = settings.agent

    def providers(value: Any) -> str:
        items = value if isinstance(value, tuple) else (value,)
        return " -> ".join(
            f"{i.provider.get('type')}/{i.provider.get('model') or i.provider.get('model_id')}"
            for i in items if i is not None
        ) or "default"

    listen = agent.listen.provider.get("model") if agent.listen else "default"
    return f"listen {listen}, think {providers(agent.think)}, speak {providers(agent.speak)}"


def _banner(settings: ServeSettings, bridges: list[BridgeApp]) -> None:
    server = settings.server
    host = server.bind_host
    tls = server.ssl_certfile is not None
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    where = "all interfaces" + (" (in a container)" if not server.host and in_container()
                                else "") if host in ("0.0.0.0", "::") else host
    ws, http = ("wss", "https") if tls else ("ws", "http")
    paths = [server.path] if server.app is None else ["<the app's bridge routes>"]
    log.info("acdg bridge listening on %s port %d: %s://%s:%d%s (health probe: GET "
             "%s://%s:%d%s)", where, server.port, ws, shown, server.port, paths[0], http,
             shown, server.port, paths[0])
    if server.ops_port is not None:
        log.info("readiness and metrics on the ops port only: %s://%s:%d/ready and "
                 "/metrics (not on the bot URL)", http, shown, server.ops_port)
    if server.app is not None:
        log.info("app %s: %d bridge(s); [bridge], [playout], [limits], [reconnect] and "
                 "[agent] settings are the app's own", server.app, len(bridges))
        return
    bridge = bridges[0]
    log.info("agent: %s at %s (API key %s)", describe_agent(settings),
             settings.bridge.deepgram_url, "set" if bridge.deepgram_api_key else "missing")
    if bridge.metrics is not None and server.ops_port is None:
        log.info("metrics at %s://%s:%d%s/metrics", http, shown, server.port,
                 server.path.rstrip("/"))
    elif bridge.metrics is None and server.metrics:
        log.info("no metrics: pip install 'acdg-asgi[metrics]' to serve them")
    log.info("accepting formats %s; auth: %s; at most %s calls; pacing lead %d ms",
             ", ".join(settings.bridge.media_formats),
             "bearer token" if settings.token else "NONE (set ACDG_TOKEN to require one)",
             settings.limits.max_calls, settings.playout.lead_ms)


def _uvicorn_config(settings: ServeSettings, app: Any, **extra: Any) -> uvicorn.Config:
    server = settings.server
    return uvicorn.Config(
        app, host=server.bind_host, port=server.port, ws=server.ws, loop=server.loop,
        # uvicorn's HTTP parser, but a request must come whole within 10 s (no drip-feeding)
        http=guarded_http(parser=server.http), log_config=None, lifespan="on",
        ssl_certfile=server.ssl_certfile,
        ssl_keyfile=server.ssl_keyfile, proxy_headers=server.proxy_headers,
        forwarded_allow_ips=server.forwarded_allow_ips, **extra)


def run(settings: ServeSettings) -> int:
    """Serve until SIGTERM has drained the calls; :class:`ConfigError` for settings that
    cannot be served, before anything listens."""
    server = settings.server
    configure_logging(server.log_format, server.log_level)
    if not prometheus_client_missing:
        from prometheus_client import disable_created_metrics

        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series next to every counter
    app, bridges = prepare(settings)
    checks.load_tls(server.ssl_certfile, server.ssl_keyfile)
    sockets = listen(settings)
    if isinstance(app, OpsPort):
        app.ops_port = server.ops_port or 0  # the one bound, if 0 asked for a free one
    if server.drain == "migrate" and not all(b.cluster.shared for b in bridges):
        log.warning("--drain migrate needs a shared store (ACDG_REDIS_URL or store=): "
                    "calls will be waited for instead")
    _banner(settings, bridges)
    if server.workers > 1:
        os.environ[SETTINGS_ENV] = msgspec.json.encode(settings).decode()
        config = _uvicorn_config(settings, f"{__name__}:worker_app", factory=True,
                                 workers=server.workers)
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=sockets).run()
        return 0
    DrainingServer(_uvicorn_config(settings, app), bridges=bridges).run(sockets=sockets)
    return 0


def listen(settings: ServeSettings) -> list[socket.socket]:
    """The bot's socket (and the ops port's), bound; a port given as 0 becomes the one
    the system chose, in ``settings`` too (the banner and worker processes use it)."""
    server = settings.server
    sockets = [checks.bind(server.bind_host, server.port)]
    server.port = sockets[0].getsockname()[1]
    if server.ops_port is not None:
        sockets.append(checks.bind(server.bind_host, server.ops_port))
        server.ops_port = sockets[1].getsockname()[1]
    return sockets


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(ServeSettings()))
