"""Target: BridgeApp mounted in a plain Starlette app, stock uvicorn with uvloop.

Usage::

    python benchmarks/targets/bridge_uvicorn.py --port 8000 --agent-url ws://127.0.0.1:9000/v1/agent/converse
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from acdg_asgi import AgentSettings, BridgeApp, Playout


def build(agent_url: str, token: str | None, agent_key: str | None, lead_ms: int) -> Starlette:
    bridge = BridgeApp(
        agent=AgentSettings(),
        deepgram_url=agent_url,
        deepgram_api_key=agent_key or "",
        auth=token or None,
        playout=Playout(lead_ms=lead_ms),
        metrics=True,
    )
    return Starlette(routes=[Mount("/", app=bridge)], lifespan=bridge.lifespan)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--agent-url", required=True)
    ap.add_argument("--token", default="token", help="bearer token VAIC must send ('' for none)")
    ap.add_argument("--agent-key", default="", help="Deepgram API key, if the agent needs one")
    ap.add_argument("--lead-ms", type=int, default=100, help="playout lead; 0: no pacing")
    ap.add_argument("--ws", default="auto", help="uvicorn WebSocket implementation")
    ap.add_argument("--loop", default="uvloop", help="uvicorn event loop")
    args = ap.parse_args()
    uvicorn.run(
        build(args.agent_url, args.token, args.agent_key, args.lead_ms),
        host=args.host,
        port=args.port,
        ws=args.ws,
        loop=args.loop,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
