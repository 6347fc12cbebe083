"""Target: the bridge as ``acdg serve`` runs it: BridgeApp alone under uvicorn with the
direct WebSocket protocol, uvloop and httptools, the lean agent client, pacing, metrics
and bearer-token auth.

Usage::

    python benchmarks/targets/acdg_serve.py --port 8000 --agent-url ws://127.0.0.1:9000/v1/agent/converse
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

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
    ap.add_argument("--no-metrics", action="store_true", help="serve no Prometheus metrics")
    ap.add_argument("--redis", action="store_true",
                    help="keep call state in a Redis server started here (needs redis-server)")
    args = ap.parse_args()
    if args.token:
        os.environ["ACDG_TOKEN"] = args.token
    if args.redis:
        os.environ["ACDG_REDIS_URL"] = start_redis()
    sys.exit(acdg([
        "serve", "--host", args.host, "--port", str(args.port), "--deepgram-url", args.agent_url,
        "--lead-ms", str(args.lead_ms), "--chunk-ms", str(args.chunk_ms),
        "--caller-frame-ms", str(args.caller_frame_ms), "--log-level", "warning",
        *(["--no-metrics"] if args.no_metrics else []),
    ]))


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no orphaned redis-server


def start_redis() -> str:
    """A private redis-server on a free port; it dies with this process's group."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )
    atexit.register(server.terminate)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0"


if __name__ == "__main__":
    main()
