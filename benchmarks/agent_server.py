"""The stand-in Deepgram Voice Agent in a process of its own, for the benchmark suite.

``--mode echo`` sends every caller audio frame straight back (latency and lost frames);
``--mode script`` runs the default scripted turns (barge-in). Prints its URL, then serves
until killed.

Usage::

    python benchmarks/agent_server.py --mode echo --port 0
"""

from __future__ import annotations

import argparse
import sys

import anyio

from acdg_asgi.testing.agent import AgentScript, StandInAgent


async def serve(mode: str, host: str, port: int) -> None:
    script = AgentScript(echo=True) if mode == "echo" else AgentScript(idle_timeout=60.0)
    async with StandInAgent(script=script, host=host, port=port) as agent:
        print(agent.url, flush=True)
        await anyio.sleep_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", choices=("echo", "script"), default="echo")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    try:
        import uvloop  # noqa: F401

        options = {"use_uvloop": True}
    except ImportError:
        options = {}
    try:
        anyio.run(serve, args.mode, args.host, args.port, backend_options=options)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
