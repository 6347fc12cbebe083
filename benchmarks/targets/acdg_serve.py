"""Target: the bridge as ``acdg serve`` runs it: BridgeApp alone under uvicorn with the
direct WebSocket protocol, uvloop and httptools, the lean agent client, pacing, metrics
and bearer-token auth.

Usage::

    python benchmarks/targets/acdg_serve.py --port 8000 --agent-url ws://127.0.0.1:9000/v1/agent/converse
"""

from __future__ import annotations

import argparse
import os
import sys

from acdg_asgi.cli import main as acdg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--agent-url", required=True)
    ap.add_argument("--token", default="token", help="bearer token VAIC must send ('' for none)")
    ap.add_argument("--lead-ms", type=int, default=100, help="playout lead; 0: no pacing")
    ap.add_argument("--chunk-ms", type=int, default=20, help="audio per playStream.chunk")
    ap.add_argument("--caller-frame-ms", type=int, default=0, help="caller frames to the agent")
    args = ap.parse_args()
    if args.token:
        os.environ["ACDG_TOKEN"] = args.token
    sys.exit(acdg([
        "serve", "--host", args.host, "--port", str(args.port), "--deepgram-url", args.agent_url,
        "--lead-ms", str(args.lead_ms), "--chunk-ms", str(args.chunk_ms),
        "--caller-frame-ms", str(args.caller_frame_ms), "--log-level", "warning",
    ]))


if __name__ == "__main__":
    main()
