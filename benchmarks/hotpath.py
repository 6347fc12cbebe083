"""The Python cost of one round trip on the direct path, in one process and without
sockets: the bridge's against the floor relay's, with one call or many.

    .venv/bin/python benchmarks/hotpath.py                   # 1 and 100 calls
    .venv/bin/python benchmarks/hotpath.py --calls 1,20,100 --rounds 300
    .venv/bin/python benchmarks/hotpath.py --calls 100 --evict-kb 64

For each call it starts a real one (the bridge mounted in Starlette under uvicorn with
the direct protocol, the echo agent on loopback, a ``websockets`` client as VAIC) and
makes the floor relay's pair of protocols beside it. Then each connection's transport
is swapped for one that only counts what is written, the clock of every bridge call
is one that this script moves by 20 ms per frame period, and the sockets' protocols
are fed what a call carries: a masked ``userStream.chunk`` of 20 ms into VAIC's side,
its echo as a binary frame into the agent's. Short rounds of the bridge and of the
floor alternate; the ratio is the median over rounds of the two times of one round,
so what slows the machine in a round slows both.

- With one call, everything a call touches stays in the CPU's caches: the ratio is the
  interpreter's work, instruction for instruction.
- With a hundred, a round visits each call once per frame period, as real load does,
  and a call's objects have left the caches by its next frame. What the ratio grows by
  is the price of the bridge's larger footprint per call: its state lives in more
  objects than the floor relay's two.

- With ``--evict-kb K``, each round trip is preceded by reading the next K KiB of a
  buffer far larger than the caches, as the kernel's work between two frames of a call
  evicts what the call left there: the ratio then comes nearer what a loaded target
  shows (only the round trips are timed). ``footprint.py`` counts the same effect in
  cache lines, without the timing's noise.

Every call and floor pair is fed the same caller frame: a frame comes fresh from the
kernel, in the caches, and a frame of each call's own would be read from memory.

Every frame must be written through (an assertion checks the counts): a round where
the playout held audio back or a budget paused reading would measure something else.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "targets")]

import echo_agent  # noqa: E402
import floor_relay  # noqa: E402
import loadgen  # noqa: E402
import uvicorn  # noqa: E402
import websockets  # noqa: E402
from starlette.applications import Starlette  # noqa: E402

from acdg_asgi import AgentSettings, BridgeApp, Playout  # noqa: E402
from acdg_asgi.serving import DirectWebSocketProtocol  # noqa: E402
from acdg_asgi.transports.wsframe import apply_mask  # noqa: E402

AUDIO = bytes(range(256)) * 2 + bytes(128)  # 20 ms of 16 kHz linear16
KEY = b"\x11\x22\x33\x44"
ECHO = bytes((0x82, 126)) + len(AUDIO).to_bytes(2, "big") + AUDIO  # the agent's frame
TOKEN = "token"

# What a round feeds one call: VAIC's side, the frame it gets, and the agent's side.
Feed = tuple[Callable[[bytes], None], bytes, Callable[[bytes], None]]


class CountingTransport:
    """Takes writes and counts them; on the steady path it is asked nothing else."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:  # asked per frame by code before 5301d9b
        return 0


def caller_frame(cid: str) -> bytes:
    """A masked text frame of 20 ms of caller audio, as VAIC sends it."""
    text = json.dumps({"type": "userStream.chunk", "conversationId": cid,
                       "audioChunk": base64.b64encode(AUDIO).decode()},
                      separators=(",", ":")).encode()
    return bytes((0x81, 0x80 | 126)) + len(text).to_bytes(2, "big") + KEY \
        + apply_mask(text, KEY)


async def start_bridge(calls: int) -> list[tuple[Any, Any, Any]]:
    """``calls`` calls through a bridge, each streaming: (runtime, VAIC's protocol, the
    agent connection)."""
    loop = asyncio.get_running_loop()
    agent = await loop.create_server(lambda: echo_agent.EchoAgent(0.0, 0), "127.0.0.1", 0)
    agent_port = agent.sockets[0].getsockname()[1]
    bridge = BridgeApp(agent=AgentSettings(), deepgram_url=f"ws://127.0.0.1:{agent_port}",
                       auth=TOKEN, playout=Playout(lead_ms=100), metrics=True)
    app = Starlette(routes=bridge.routes("/audiocodes"), lifespan=bridge.lifespan)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on",
                                           ws=DirectWebSocketProtocol, log_level="warning"))
    serving = loop.create_task(server.serve())
    while not server.started:  # uvicorn's Server offers no event for it
        assert not serving.done(), "the bridge did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    out = []
    for n in range(calls):
        cid = f"hotpath-{n}"
        # No compression: a VAIC does not ask for it, and its frames leave the direct path.
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/audiocodes", compression=None,
                                      additional_headers={"Authorization": f"Bearer {TOKEN}"})
        await ws.send(json.dumps({"type": "session.initiate", "conversationId": cid,
                                  "expectAudioMessages": True,
                                  "supportedMediaFormats": ["raw/lpcm16"]}))
        await until(ws, "session.accepted")
        await ws.send(json.dumps({"type": "userStream.start", "conversationId": cid}))
        await until(ws, "userStream.started")
        chunk = json.dumps({"type": "userStream.chunk", "conversationId": cid,
                            "audioChunk": base64.b64encode(AUDIO).decode()})
        for _ in range(3):  # the play stream is open and the playout steady
            await ws.send(chunk)
            await until(ws, "playStream.chunk")
        (runtime,) = [rt for rt in bridge.calls.runtimes() if rt.call.conversation_id == cid]
        direct = runtime.vaic.socket.direct
        assert isinstance(direct, DirectWebSocketProtocol) and direct._by_hand, \
            "the call is not on the direct path"
        out.append((runtime, direct, runtime.agent.push))
    return out


async def until(ws: Any, kind: str) -> None:
    while json.loads(await ws.recv())["type"] != kind:
        pass


def floor_pair() -> tuple[floor_relay.VaicSide, floor_relay.AgentSide]:
    vaic = floor_relay.VaicSide("ws://unused", None, None)
    agent = floor_relay.AgentSide(vaic, "unused", "/", None)
    vaic.open = agent.open = agent.ready = True
    vaic.agent = agent
    vaic.transport = agent.transport = CountingTransport()  # type: ignore[assignment]
    vaic.play(AUDIO)  # its play stream is open
    return vaic, agent


class Rounds:
    """Feeds frames to the bridge's calls or the floor's pairs, one round at a time."""

    def __init__(self, bridge: list[tuple[Any, Any, Any]],
                 floor: list[tuple[floor_relay.VaicSide, floor_relay.AgentSide]],
                 evict_kb: int = 0) -> None:
        self.clock = time.monotonic() + 1000.0  # ahead of every deadline the calls hold
        self.evict_bytes = evict_kb * 1024
        # Far larger than any cache, so that each window read evicts.
        self.evict = bytearray(max(256 << 20, 4 * self.evict_bytes)) if evict_kb else None
        self.timer_s = timer_cost() if evict_kb else 0.0
        self.to_bridge = CountingTransport()
        # One frame for all (see the module's note); a chunk's conversationId is not read.
        frame = caller_frame("hotpath")
        self.bridge: list[Feed] = []
        for runtime, direct, agent in bridge:
            direct.transport = agent._transport = self.to_bridge
            runtime.now = self.now
            direct._budget.left = float("inf")  # a round is far faster than real time
            self.bridge.append((direct.data_received, frame, agent.data_received))
        self.to_floor = CountingTransport()
        self.floor: list[Feed] = []
        for vaic, agent in floor:
            vaic.transport = agent.transport = self.to_floor  # type: ignore[assignment]
            self.floor.append((vaic.data_received, frame, agent.data_received))

    def now(self) -> float:
        return self.clock

    def bridge_round(self, periods: int) -> float:
        return self._round(self.bridge, self.to_bridge, periods)

    def floor_round(self, periods: int) -> float:
        return self._round(self.floor, self.to_floor, periods)

    def _round(self, feeds: list[Feed], counted: CountingTransport, periods: int) -> float:
        """Seconds per round trip over ``periods`` frame periods of every call in ``feeds``
        (the clock moves for the floor's rounds too, which read none, so both loops are
        the same)."""
        before = counted.writes
        if self.evict is not None:
            return self._evicting_round(feeds, counted, periods, before)
        start = time.perf_counter()
        for _ in range(periods):
            self.clock += 0.02
            for caller, frame, agent in feeds:
                caller(frame)
                agent(ECHO)
        elapsed = time.perf_counter() - start
        trips = periods * len(feeds)
        assert counted.writes - before == 2 * trips, "a frame was held back"
        return elapsed / trips

    def _evicting_round(self, feeds: list[Feed], counted: CountingTransport, periods: int,
                        before: int) -> float:
        """As :meth:`_round`, reading the next ``evict_kb`` of a large buffer between
        round trips, as the kernel's and the other calls' work between two frames of a
        call does: what a call left in the caches is gone by its next frame, while what
        every round trip reads stays. Only the round trips are timed (less what the two
        clock reads cost)."""
        evict, size, clock, elapsed = self.evict, self.evict_bytes, time.perf_counter, 0.0
        assert evict is not None
        at, end = 0, len(evict)
        for _ in range(periods):
            self.clock += 0.02
            for caller, frame, agent in feeds:
                evict.find(b"\x01", at, at + size)
                at = at + size if at + 2 * size <= end else 0
                start = clock()
                caller(frame)
                agent(ECHO)
                elapsed += clock() - start
        trips = periods * len(feeds)
        assert counted.writes - before == 2 * trips, "a frame was held back"
        return elapsed / trips - self.timer_s


def timer_cost() -> float:
    """What a pair of ``perf_counter`` reads adds to a timed span, at the median."""
    clock, spans = time.perf_counter, []
    for _ in range(20_000):
        start = clock()
        spans.append(clock() - start)
    return statistics.median(spans)


async def measure(calls: int, rounds: int, trips: int, evict_kb: int) -> dict[str, float]:
    rounds_of = Rounds(await start_bridge(calls), [floor_pair() for _ in range(calls)],
                       evict_kb)
    periods = max(1, trips // calls)
    bridge, floor = [], []
    for _ in range(rounds):
        bridge.append(rounds_of.bridge_round(periods))
        floor.append(rounds_of.floor_round(periods))
    ratios = [b / f for b, f in zip(bridge, floor, strict=True)]
    return {"calls": calls, "bridge_us": statistics.median(bridge) * 1e6,
            "floor_us": statistics.median(floor) * 1e6, "ratio": statistics.median(ratios),
            "q1": statistics.quantiles(ratios, n=4)[0], "q3": statistics.quantiles(ratios, n=4)[2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", default="1,100", help="calls at once, comma-separated")
    ap.add_argument("--rounds", type=int, default=200, help="rounds of each, alternating")
    ap.add_argument("--trips", type=int, default=5000, help="round trips per round")
    ap.add_argument("--evict-kb", type=int, default=0,
                    help="read this many KiB between round trips, as the kernel's work does")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a count, in a process of its own
    args = ap.parse_args()
    if args.one is not None:
        with asyncio.Runner(loop_factory=loadgen.new_loop_factory()) as runner:
            print(json.dumps(runner.run(measure(args.one, args.rounds, args.trips,
                                             args.evict_kb))), flush=True)
        os._exit(0)  # the server and the sockets go with the process
    # One core, as the suite pins its targets; one process per count, so that the calls
    # of one count are not in the next one's caches or heap.
    core = {min(os.sched_getaffinity(0))}
    print(f"pinned to CPU {core}; {args.rounds} rounds of {args.trips} round trips each")
    print("| calls | bridge, µs per round trip | floor | bridge ÷ floor, median (quartiles) |")
    print("|---:|---:|---:|---:|")
    for calls in args.calls.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--one", calls, "--rounds", str(args.rounds),
             "--trips", str(args.trips), "--evict-kb", str(args.evict_kb)],
            capture_output=True, text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, core))
        if out.returncode:
            sys.exit(f"hotpath: {calls} calls failed:\n{out.stderr[-2000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {row['calls']} | {row['bridge_us']:.2f} | {row['floor_us']:.2f} "
              f"| {row['ratio']:.2f} ({row['q1']:.2f}-{row['q3']:.2f}) |", flush=True)


if __name__ == "__main__":
    main()
