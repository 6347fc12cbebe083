"""Scale-out timings: how long a caller waits when a call moves to another instance.

Two bridge instances share a Redis (a redis-server started here) and the stand-in agent.
For each of ``--calls`` simulated calls it measures, from the simulated VAIC's side:

- **resume elsewhere**: the call's socket to instance A drops; VAIC resumes on instance B,
  which takes the call over from Redis. Time from the socket loss to B's
  ``session.accepted`` (VAIC's side), and B's handshake with its new agent connection,
  seeded with the history (the caller hears the agent again once that is done).
- **migrate-drain**: instance A drains with ``migrate=True`` while the calls run; VAIC
  reconnects to B. Same two times.

Usage::

    python benchmarks/cluster.py --calls 20
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
import msgspec

from acdg_asgi import AgentSettings, BridgeApp
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.report import CallReport
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_calls

TURNS = tuple(Turn(f"Answer number {i}, a few words long.", heard="question") for i in range(6))
TALK = (
    Utterance(speech_ms=0, pause_ms=800),
    *(Utterance(speech_ms=300, pause_ms=1200) for _ in range(4)),
)


def redis_server() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


class Handshakes:
    """Observer: the agent handshake times of calls an instance took over."""

    def __init__(self) -> None:
        self.ms: list[float] = []

    def call_observed(self, runtime: Any, name: str, value: float) -> None:
        if name == "agent_handshake_seconds" and runtime.call.epoch:
            self.ms.append(value * 1000)

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None  # the other Observer methods: nothing to do


def gaps(reports: list[CallReport], handshakes: list[float]) -> dict[str, object]:
    """Socket lost -> session.accepted (ms), and the new agent handshake (ms)."""
    accepted = [g for r in reports for g in r.resume_gaps_ms]

    def summary(values: list[float]) -> dict[str, float | int | None]:
        if not values:
            return {"n": 0, "p50": None, "max": None}
        return {"n": len(values), "p50": round(statistics.median(values), 1),
                "max": round(max(values), 1)}

    return {"resumed": sum(1 for r in reports if r.resumed), "calls": len(reports),
            "socket_lost_to_accepted_ms": summary(accepted),
            "agent_handshake_after_takeover_ms": summary(handshakes)}


async def measure(calls: int, redis_url: str) -> dict[str, object]:
    results: dict[str, object] = {}
    async with StandInAgent(script=AgentScript(turns=TURNS, ms_per_word=120)) as agent:
        for mode in ("resume elsewhere", "migrate-drain"):
            async with AsyncExitStack() as stack:
                hosts = []
                bridges = []
                handshakes = Handshakes()
                for name in ("a", "b"):
                    bridge = BridgeApp(agent=AgentSettings(greeting="Hello"),
                                       deepgram_url=agent.url, store=redis_url,
                                       instance_id=f"{mode[:6]}-{name}", tracing=False,
                                       observers=[handshakes])
                    bridges.append(bridge)
                    hosts.append(await stack.enter_async_context(serve(bridge, lifespan="on")))
                url_a, url_b = (f"ws://{h}/" for h in hosts)
                if mode == "resume elsewhere":
                    script = CallScript(utterances=TALK, drop_and_resume_at_ms=2500,
                                        resume_urls=(url_b,))
                    reports = await run_calls(url_a, [script] * calls, concurrency=calls)
                else:
                    script = CallScript(utterances=TALK, resume_on_close=True,
                                        resume_urls=(url_b,))
                    reports = []
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_place, reports, url_a, script, calls)
                        await anyio.sleep(2.5)
                        await bridges[0].drain(migrate=True)
                results[mode] = gaps(reports, handshakes.ms)
    return results


async def _place(into: list[CallReport], url: str, script: CallScript, calls: int) -> None:
    into.extend(await run_calls(url, [script] * calls, concurrency=calls))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args()
    proc, url = redis_server()
    try:
        results = anyio.run(measure, args.calls, url)
    finally:
        proc.terminate()
    print(msgspec.json.format(msgspec.json.encode(results)).decode())


if __name__ == "__main__":
    main()
