"""The bridge inside a Litestar app, at ``/audiocodes``.

Run it::

    DEEPGRAM_API_KEY=... ACDG_TOKEN=... uvicorn --factory examples.litestar_app:build_app

and point the VAIC / Live Hub bot connection at ``wss://<host>/audiocodes``. Litestar
mounts ASGI apps with ``asgi(path, is_mount=True)``; it serves both ``/audiocodes`` and
``/audiocodes/`` to the bridge.
"""

from __future__ import annotations

import os

from litestar import Litestar, asgi, get
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
    """The bridge with its handlers; the token defaults to ``$ACDG_TOKEN``."""
    options = {"deepgram_url": deepgram_url} if deepgram_url else {}
    bridge = BridgeApp(
        agent=AGENT,
        deepgram_api_key=deepgram_api_key,
        auth=auth if auth is not None else os.environ.get("ACDG_TOKEN") or None,
        **options,
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
        # copy_scope: the bridge does not change the scope; Litestar 3 will default to it.
        route_handlers=[health, asgi("/audiocodes", is_mount=True, copy_scope=True)(bridge)],
        lifespan=[bridge.lifespan],  # drain calls on shutdown
        state=State({"bridge": bridge}),
    )
