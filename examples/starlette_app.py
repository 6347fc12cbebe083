"""The bridge inside a Starlette app, at ``/audiocodes``.

Run it (``acdg serve`` drains calls on SIGTERM and uses the fast WebSocket path; plain
``uvicorn --factory examples.starlette_app:build_app`` drains too)::

    DEEPGRAM_API_KEY=... ACDG_TOKEN=... acdg serve examples.starlette_app:build_app --factory
    DEEPGRAM_API_KEY=... ACDG_TOKEN=... python examples/starlette_app.py --port 8000   # the same

and point the VAIC / Live Hub bot connection at ``wss://<host>/audiocodes``. The app
keeps its own routes (here ``/``); the bridge answers the calls, Live Hub's probe
(``GET /audiocodes``) and ``GET /audiocodes/ready``.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from acdg_asgi import (
    AgentSettings,
    BridgeApp,
    Function,
    FunctionCallRequestEvent,
    Session,
    SpeakSettings,
    ThinkSettings,
)

AGENT = AgentSettings(
    think=ThinkSettings(
        provider={"type": "open_ai", "model": "gpt-4o-mini"},
        prompt="You are Acme's phone agent. Keep answers short.",
        functions=(
            Function(
                name="lookup_order",
                description="Look up the status of an order by its number.",
                parameters={"type": "object", "properties": {"order": {"type": "string"}},
                            "required": ["order"]},
            ),
        ),
    ),
    speak=SpeakSettings(provider={"type": "deepgram", "model": "aura-2-thalia-en"}),
    greeting="Thanks for calling Acme. How can I help?",
)


def build_bridge(
    deepgram_url: str | None = None,
    *,
    deepgram_api_key: str | None = None,
    auth: str | None = None,
) -> BridgeApp:
    """The bridge with its handlers; the token defaults to ``$ACDG_TOKEN``, the agent's URL
    to ``$DEEPGRAM_URL`` (e.g. the stand-in agent), else Deepgram's."""
    bridge = BridgeApp(
        agent=AGENT,
        deepgram_api_key=deepgram_api_key,
        auth=auth if auth is not None else os.environ.get("ACDG_TOKEN") or None,
        deepgram_url=deepgram_url,
    )

    @bridge.on("function_call_request")
    async def lookup_order(session: Session, event: FunctionCallRequestEvent) -> None:
        for fn in event.functions:
            if fn.client_side and fn.name == "lookup_order":
                await session.respond_to_function_call(fn.id, fn.name, {"status": "shipped"})

    return bridge


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Acme voice agent")


def build_app(
    deepgram_url: str | None = None,
    *,
    deepgram_api_key: str | None = None,
    auth: str | None = None,
) -> Starlette:
    bridge = build_bridge(deepgram_url, deepgram_api_key=deepgram_api_key, auth=auth)
    app = Starlette(
        # The bridge at /audiocodes and /audiocodes/ alike (VAIC's URLs usually have no
        # trailing slash), with /audiocodes/ready and /audiocodes/metrics below it.
        routes=[Route("/", home), *bridge.routes("/audiocodes")],
        lifespan=bridge.lifespan,  # drain calls on SIGTERM
    )
    app.state.bridge = bridge
    return app


if __name__ == "__main__":
    from acdg_asgi.cli import serve_main

    raise SystemExit(serve_main(build_app, factory=True))
