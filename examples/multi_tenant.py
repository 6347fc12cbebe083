"""One mount, several personas: the agent is chosen per call.

Each tenant's VAIC / Live Hub bot connection points at its own URL under the mount,
``wss://<host>/audiocodes/acme`` or ``wss://<host>/audiocodes/globex``; a gateway that
cannot vary the URL may send an ``X-Tenant`` header on the upgrade instead, or VAIC may
pass a SIP header through ``sipHeadersToBot`` (``{"tenant": "X-Tenant"}``), which arrives
in the ``start`` activity. The factory runs once per call, once ``start`` has come (or
``Limits.start_wait_s`` has passed), while the agent connection opens. For an unknown
tenant it returns ``None``: the call is hung up with the reason "no agent for this call"
and one INFO line. (A factory that raises is a bug: that call is hung up too, with a
fatal ``error`` event, and the traceback logged.)

Run it::

    DEEPGRAM_API_KEY=... acdg serve examples.multi_tenant:build_app --factory
"""

from __future__ import annotations

from starlette.applications import Starlette

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
    """The ``tenant`` SIP header (from ``start``), else ``X-Tenant`` on the upgrade, else
    the first path segment below the mount."""
    header = str(info.sip_headers.get("tenant") or "").strip().lower() \
        or info.connection.headers.get("x-tenant", "").strip().lower()
    if header:
        return header
    return info.connection.path.strip("/").split("/")[0].lower()


async def pick_agent(info: CallInfo) -> AgentSettings | None:
    """The per-call agent factory: called with the upgrade, the ``session.initiate`` and
    ``start``'s details (``info.callee``, ``info.sip_headers``); ``None``: no agent for
    this call, which is hung up."""
    return PERSONAS.get(tenant_of(info))


def build_bridge(
    deepgram_url: str | None = None, *, deepgram_api_key: str | None = None
) -> BridgeApp:
    return BridgeApp(agent=pick_agent, deepgram_api_key=deepgram_api_key,
                     deepgram_url=deepgram_url)


def build_app(
    deepgram_url: str | None = None, *, deepgram_api_key: str | None = None
) -> Starlette:
    bridge = build_bridge(deepgram_url, deepgram_api_key=deepgram_api_key)
    app = Starlette(routes=bridge.routes("/audiocodes"), lifespan=bridge.lifespan)
    app.state.bridge = bridge
    return app


if __name__ == "__main__":
    from acdg_asgi.cli import serve_main

    raise SystemExit(serve_main(build_app, factory=True))
