"""Time from ``session.initiate`` to the first agent audio, with and without VAIC's
``start``, for an agent that is the same for every call and for one chosen per call.

    .venv/bin/python benchmarks/first_audio.py                 # 20 calls per case
    .venv/bin/python benchmarks/first_audio.py --calls 50 --connect-ms 150

Everything runs in this process on loopback: the stand-in agent (its greeting's first
audio frame is the "first agent audio"), the bridge under uvicorn, and a raw WebSocket
client as VAIC. ``--connect-ms`` delays each agent connection by that much before it
opens, standing in for the network and TLS handshake to ``agent.deepgram.com`` that
loopback does not have, so the overlap of the ``start`` wait with the agent connection
shows. Reports the median and the 90th percentile per case, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Mapping

import anyio
from websockets.asyncio.client import connect

from acdg_asgi import AgentSettings, BridgeApp, CallInfo, Limits
from acdg_asgi.testing.agent import AgentScript, StandInAgent
from acdg_asgi.testing.server import serve
from acdg_asgi.transports.agent_base import AgentConnection
from acdg_asgi.transports.agent_lean import LeanConnector

GREETING = AgentSettings(greeting="Hello")


class SlowConnector:
    """The default connector, ``delay_s`` later: a far agent's connection time."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.inner = LeanConnector()

    async def connect(self, url: str, headers: Mapping[str, str]) -> AgentConnection:
        await anyio.sleep(self.delay_s)
        return await self.inner.connect(url, headers)


async def one_call(host: str, send_start: bool) -> float:
    """Milliseconds from sending session.initiate to the first playStream.chunk."""
    cid = str(uuid.uuid4())
    async with connect(f"ws://{host}/", compression=None) as ws:
        began = time.perf_counter()
        await ws.send(json.dumps({"type": "session.initiate", "conversationId": cid,
                                  "caller": "+15551230000", "expectAudioMessages": True,
                                  "supportedMediaFormats": ["raw/lpcm16"]}))
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "session.accepted" and send_start:
                await ws.send(json.dumps({"type": "activities", "conversationId": cid,
                                          "activities": [{"type": "event", "name": "start",
                                                          "parameters": {"callee": "+1800"}}]}))
            elif message["type"] == "playStream.chunk":
                elapsed = (time.perf_counter() - began) * 1000
                break
        await ws.send(json.dumps({"type": "session.end", "conversationId": cid,
                                  "reasonCode": "client-disconnected"}))
    return elapsed


async def measure(calls: int, connect_ms: float, start_wait_s: float) -> dict[str, list[float]]:
    async def per_call(info: CallInfo) -> AgentSettings:
        return GREETING

    results: dict[str, list[float]] = {}
    async with StandInAgent(script=AgentScript(ms_per_word=100)) as agent:
        for label, spec in (("same agent for every call", GREETING), ("agent factory", per_call)):
            bridge = BridgeApp(agent=spec, deepgram_url=agent.url, tracing=False,
                               connector=SlowConnector(connect_ms / 1000),
                               limits=Limits(start_wait_s=start_wait_s))
            async with serve(bridge) as host:
                for send_start in (True, False):
                    times = [await one_call(host, send_start) for _ in range(calls)]
                    results[f"{label}, {'start sent' if send_start else 'no start'}"] = times
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--connect-ms", type=float, default=0.0,
                        help="delay each agent connection by this much")
    parser.add_argument("--start-wait", type=float, default=Limits().start_wait_s,
                        help="Limits.start_wait_s (default: the bridge's default)")
    args = parser.parse_args()
    results = anyio.run(measure, args.calls, args.connect_ms, args.start_wait)
    print(f"session.initiate to first agent audio, ms ({args.calls} calls each, agent "
          f"connect +{args.connect_ms:g} ms, start_wait_s {args.start_wait:g})")
    print(f"{'case':<42} {'median':>8} {'p90':>8}")
    for case, times in results.items():
        p90 = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]
        print(f"{case:<42} {statistics.median(times):8.1f} {p90:8.1f}")


if __name__ == "__main__":
    main()
