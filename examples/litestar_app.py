"""The bridge inside a Litestar app, at ``/audiocodes``.

Run it (``acdg serve`` drains calls on SIGTERM and uses the fast WebSocket path; plain
``uvicorn --factory examples.litestar_app:build_app`` drains too)::

    DEEPGRAM_API_KEY=... ACDG_TOKEN=... acdg serve examples.litestar_app:build_app --factory
    DEEPGRAM_API_KEY=... ACDG_TOKEN=... python examples/litestar_app.py --port 8000   # the same

and point the VAIC / Live Hub bot connection at ``wss://<host>/audiocodes``.
``bridge.litestar_handler("/audiocodes")`` serves both ``/audiocodes`` and
``/audiocodes/`` to the bridge.
"""

from __future__ import annotations

import os

from litestar import Litestar, get
from litestar.datastructures import State

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


@get("/health")
async def health(state: State) -> dict[str, int]:
    return {"calls": len(state.bridge.calls)}


def build_app(
    deepgram_url: str | None = None,
    *,
    deepgram_api_key: str | None = None,
    auth: str | None = None,
) -> Litestar:
    bridge = build_bridge(deepgram_url, deepgram_api_key=deepgram_api_key, auth=auth)
    return Litestar(
        route_handlers=[health, bridge.litestar_handler("/audiocodes")],
        lifespan=[bridge.lifespan],  # drain calls on SIGTERM
        state=State({"bridge": bridge}),
    )


if __name__ == "__main__":
    from acdg_asgi.cli import serve_main

    raise SystemExit(serve_main(build_app, factory=True))
