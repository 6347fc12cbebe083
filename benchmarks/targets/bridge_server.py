"""Target: BridgeApp alone (pacing, metrics, token auth) under a chosen ASGI server, so
the servers can be compared with everything else equal.

Usage::

    python benchmarks/targets/bridge_server.py --server hypercorn --port 8000 --agent-url URL

Servers: ``uvicorn-sansio`` (uvicorn's default WebSocket implementation),
``uvicorn-wsproto``, ``uvicorn-websockets`` (uvicorn's older implementation),
``uvicorn-direct`` (:mod:`acdg_asgi.transports.vaic_direct`), ``hypercorn``, ``granian``;
all on uvloop.
granian runs the app in a worker process of its own; ``run.py`` counts the CPU of the
whole process tree.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import uvicorn

from acdg_asgi import AgentSettings, BridgeApp, Playout

UVICORN_WS = {
    "uvicorn-sansio": "websockets-sansio",
    "uvicorn-wsproto": "wsproto",
    "uvicorn-websockets": "websockets",
    "uvicorn-direct": "acdg_asgi.serving:DirectWebSocketProtocol",
}


def make_bridge(agent_url: str, token: str) -> BridgeApp:
    return BridgeApp(agent=AgentSettings(), deepgram_url=agent_url, auth=token or None,
                     playout=Playout(lead_ms=100), metrics=True)


def granian_app() -> BridgeApp:
    """The factory granian's worker imports; the arguments travel in the environment."""
    return make_bridge(os.environ["BENCH_AGENT_URL"], os.environ["BENCH_TOKEN"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", choices=[*UVICORN_WS, "hypercorn", "granian"], required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--agent-url", required=True)
    ap.add_argument("--token", default="token", help="bearer token VAIC must send ('' for none)")
    args = ap.parse_args()
    if args.server == "granian":
        from granian import Granian
        from granian.constants import Interfaces, Loops
        from granian.log import LogLevels

        os.environ.update(BENCH_AGENT_URL=args.agent_url, BENCH_TOKEN=args.token)
        Granian("bridge_server:granian_app", address=args.host, port=args.port,
                interface=Interfaces.ASGI, factory=True, loop=Loops.uvloop,
                log_level=LogLevels.warning, working_dir=Path(__file__).parent).serve()
        return
    bridge = make_bridge(args.agent_url, args.token)
    if args.server in UVICORN_WS:
        uvicorn.run(bridge, host=args.host, port=args.port, ws=UVICORN_WS[args.server],
                    loop="uvloop", log_level="warning", access_log=False)
        return
    import uvloop
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.loglevel = "WARNING"
    uvloop.install()
    asyncio.run(serve(bridge, config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
