"""``acdg serve``: run the bridge alone under uvicorn."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import uvicorn

from ..app import BridgeApp
from ..events import SessionEndEvent
from ..observability.logs import configure_logging
from ..observability.metrics import prometheus_client_missing
from ..serving import DrainingServer
from .settings import ServeSettings

log = logging.getLogger("acdg_asgi.serve")


def build_app(settings: ServeSettings) -> BridgeApp:
    bridge = BridgeApp(
        agent=settings.agent_config(),
        deepgram_url=settings.bridge.deepgram_url,
        auth=settings.token,
        media_formats=settings.bridge.media_formats,
        playout=settings.playout,
        limits=settings.limits,
        reconnect=settings.reconnect,
        metrics=settings.server.metrics and not prometheus_client_missing,
    )
    if settings.server.records:
        write_records(bridge, Path(settings.server.records))
    return bridge


def write_records(bridge: BridgeApp, path: Path) -> None:
    """Append each finished call's record to ``path`` as one JSON line."""

    @bridge.on("session_end")
    def record(event: SessionEndEvent) -> None:
        if event.record is not None:
            with path.open("ab") as f:
                f.write(event.record.to_json() + b"\n")


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


def run(settings: ServeSettings) -> int:
    configure_logging(settings.server.log_format, settings.server.log_level)
    bridge = build_app(settings)
    server = settings.server
    where = f"ws://{server.host}:{server.port}{server.path}"
    log.info("acdg bridge listening on %s (health probe: GET http://%s:%d%s)",
             where, server.host, server.port, server.path)
    log.info("agent: %s at %s (API key %s)", describe_agent(settings),
             settings.bridge.deepgram_url, "set" if bridge.deepgram_api_key else "missing")
    if bridge.metrics is not None:
        log.info("metrics at http://%s:%d%s/metrics", server.host, server.port,
                 server.path.rstrip("/"))
    elif settings.server.metrics:
        log.info("no metrics: pip install 'acdg-asgi[metrics]' to serve them")
    log.info("accepting formats %s; auth: %s; at most %s calls; pacing lead %d ms",
             ", ".join(settings.bridge.media_formats),
             "bearer token" if settings.token else "NONE (set ACDG_TOKEN to require one)",
             settings.limits.max_calls, settings.playout.lead_ms)
    app: Any = bridge
    if server.path not in ("", "/"):
        from starlette.applications import Starlette
        from starlette.routing import Mount
        app = Starlette(routes=[Mount(server.path.rstrip("/"), bridge)],
                        lifespan=bridge.lifespan)
    config = uvicorn.Config(app, host=server.host, port=server.port, ws=server.ws,
                            loop=server.loop, log_config=None, lifespan="on")
    DrainingServer(config, bridges=[bridge]).run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(ServeSettings()))
