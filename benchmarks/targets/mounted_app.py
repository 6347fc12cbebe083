"""Target: a user's own Starlette app with a ``BridgeApp`` routed at ``/audiocodes``, next
to an HTTP route of its own, served as users serve it.

- ``--serve acdg``: ``acdg serve mounted_app:app --factory`` (``acdg serve APP``): the
  direct WebSocket protocol, uvloop and httptools by default;
- ``--serve uvicorn``: ``uvicorn.run(app, ws=..., loop=..., http=...)``, with the
  documented options for the direct path (``--ws direct``) or stock uvicorn
  (``--ws auto``, whose sockets the bridge takes over; add ``--loop asyncio --http h11``
  for uvicorn without uvloop and httptools). ``--asgi`` passes
  ``direct_path=False``: the server's standard ASGI path, as on servers the bridge
  cannot take the direct path on.

The bridge has the features on as in the other bridge targets: pacing
(``Playout(lead_ms=100)``), metrics, bearer-token auth. ``--agent-factory`` chooses the
agent per call (as an application that reads VAIC's ``start`` would).

Usage::

    python benchmarks/targets/mounted_app.py --serve acdg --port 8000 --agent-url URL
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from acdg_asgi import AgentSettings, BridgeApp, CallInfo, Playout

PATH = "/audiocodes"
WS = {"direct": "acdg_asgi.serving:DirectWebSocketProtocol", "auto": "auto",
      "websockets-sansio": "websockets-sansio"}


def build(agent_url: str, token: str | None, lead_ms: int, factory: bool,
          asgi: bool = False) -> Starlette:
    async def per_call(info: CallInfo) -> AgentSettings:
        return AgentSettings()

    # direct_path only when asked: older sources (run.py's --base) do not know it
    options: dict[str, Any] = {"direct_path": False} if asgi else {}
    bridge = BridgeApp(
        agent=per_call if factory else AgentSettings(),
        deepgram_url=agent_url,
        auth=token or None,
        playout=Playout(lead_ms=lead_ms),
        metrics=True,
        **options,
    )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"calls": len(bridge.calls)})

    return Starlette(routes=[Route("/health", health), *bridge.routes(PATH)],
                     lifespan=bridge.lifespan)


def app() -> Starlette:
    """The factory ``acdg serve`` imports; the arguments travel in the environment."""
    return build(os.environ["BENCH_AGENT_URL"], os.environ.get("BENCH_TOKEN"),
                 int(os.environ.get("BENCH_LEAD_MS", "100")),
                 os.environ.get("BENCH_FACTORY") == "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", choices=("acdg", "uvicorn"), required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--agent-url", required=True)
    ap.add_argument("--token", default="token", help="bearer token VAIC must send ('' for none)")
    ap.add_argument("--lead-ms", type=int, default=100, help="playout lead; 0: no pacing")
    ap.add_argument("--agent-factory", action="store_true", help="choose the agent per call")
    ap.add_argument("--ws", choices=sorted(WS), default="auto", help="uvicorn: WebSocket protocol")
    ap.add_argument("--loop", default="uvloop", help="uvicorn: event loop")
    ap.add_argument("--http", default="auto", help="uvicorn: HTTP protocol")
    ap.add_argument("--asgi", action="store_true", help="uvicorn: direct_path=False")
    args = ap.parse_args()
    if args.serve == "acdg":
        serve_with_acdg(args)
        return
    import uvicorn

    uvicorn.run(build(args.agent_url, args.token, args.lead_ms, args.agent_factory, args.asgi),
                host=args.host, port=args.port, ws=WS[args.ws], loop=args.loop, http=args.http,
                log_level="warning", access_log=False)


def serve_with_acdg(args: argparse.Namespace) -> None:
    os.environ.update(BENCH_AGENT_URL=args.agent_url, BENCH_TOKEN=args.token,
                      BENCH_LEAD_MS=str(args.lead_ms),
                      BENCH_FACTORY="1" if args.agent_factory else "0")
    from acdg_asgi.cli import main as acdg

    sys.exit(acdg(["serve", "mounted_app:app", "--factory", "--app-dir",
                   str(Path(__file__).parent), "--host", args.host, "--port", str(args.port),
                   "--log-level", "warning"]))


if __name__ == "__main__":
    main()
