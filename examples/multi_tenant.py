"""One mount, several personas: the agent is chosen per call.

Each tenant's VAIC / Live Hub bot connection points at its own URL under the mount,
``wss://<host>/audiocodes/acme`` or ``wss://<host>/audiocodes/globex``; a gateway that
cannot vary the URL may send an ``X-Tenant`` header instead. The factory runs once per
call, after authentication and before ``session.accepted``. For an unknown tenant it
returns ``None``: the call is refused with ``session.error`` and one INFO line. (A
factory that raises is a bug: that call is refused too, and the traceback logged.)

Run it::

    DEEPGRAM_API_KEY=... uvicorn --factory examples.multi_tenant:build_app
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount

from acdg_asgi import AgentSettings, BridgeApp, CallInfo, SpeakSettings, ThinkSettings


def persona(company: str, voice: str) -> AgentSettings:
    return AgentSettings(
        think=ThinkSettings(
            provider={"type": "open_ai", "model": "gpt-4o-mini"},
            prompt=f"You answer the phone for {company}. Keep answers short.",
        ),
        speak=SpeakSettings(provider={"type": "deepgram", "model": voice}),
        greeting=f"Thanks for calling {company}. How can I help?",
    )


PERSONAS: dict[str, AgentSettings] = {
    "acme": persona("Acme", "aura-2-thalia-en"),
    "globex": persona("Globex", "aura-2-orion-en"),
}


def tenant_of(info: CallInfo) -> str:
    """``X-Tenant`` if present, else the first path segment below the mount."""
    header = info.connection.headers.get("x-tenant", "").strip().lower()
    if header:
        return header
    return info.connection.path.strip("/").split("/")[0].lower()


async def pick_agent(info: CallInfo) -> AgentSettings | None:
    """The per-call agent factory: called with the upgrade and the ``session.initiate``;
    ``None`` refuses the call."""
    return PERSONAS.get(tenant_of(info))


def build_bridge(
    deepgram_url: str | None = None, *, deepgram_api_key: str | None = None
) -> BridgeApp:
    options = {"deepgram_url": deepgram_url} if deepgram_url else {}
    return BridgeApp(agent=pick_agent, deepgram_api_key=deepgram_api_key, **options)


def build_app(
    deepgram_url: str | None = None, *, deepgram_api_key: str | None = None
) -> Starlette:
    bridge = build_bridge(deepgram_url, deepgram_api_key=deepgram_api_key)
    app = Starlette(routes=[Mount("/audiocodes", bridge)], lifespan=bridge.lifespan)
    app.state.bridge = bridge
    return app
