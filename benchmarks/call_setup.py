"""Call setup latency: from ``session.initiate`` to ``session.accepted`` and to the first
agent audio, split into the agent's share and the bridge's own.

The echo agent (``echo_agent.py``) holds each handshake reply for ``--delay-ms`` (a
network round trip to a remote agent) and greets with audio stamped with its own
handshake times, which come back through the target inside the first
``playStream.chunk``. Every process on the machine shares ``time.monotonic``, so for
each call:

- *agent*: the time the agent held the handshake: from the upgrade request to its 101
  and ``Welcome``, and from ``Settings`` to ``SettingsApplied`` (the delays, plus its own
  few microseconds);
- *bridge*: the rest of ``session.initiate`` → first agent audio, all of it the
  target's (plus loopback): reading the initiate and connecting to the agent
  (*initiate → upgrade request*), ``Welcome`` → ``Settings`` (*welcome → settings*), and
  ``SettingsApplied`` with the greeting → the first ``playStream.chunk`` (*applied →
  audio*).

Calls run one after another, so each is timed alone. With ``--start`` the caller sends
VAIC's ``start`` activity as soon as ``session.accepted`` arrives, as VAIC does, for a
bridge that waits for it before it configures the agent.

    .venv/bin/python benchmarks/call_setup.py --targets acdg-serve,bridge,floor --delay-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import echo_agent
import loadgen
import run
from wsclient import WsClient

HERE: Final = Path(__file__).resolve().parent
clock: Final = time.monotonic


class SetupCall(WsClient):
    """One call, up to its first agent audio."""

    def __init__(self, host: str, path: str, send_start: bool) -> None:
        super().__init__(host, path, run.TOKEN)
        self.cid = f"setup-{uuid.uuid4().hex[:12]}"
        self.send_start = send_start
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self.t_connect = clock()
        self.t: dict[str, float] = {}

    def on_open(self) -> None:
        self.t["upgraded"] = clock()
        self.t["initiate"] = clock()
        self.send_text(json.dumps({
            "type": "session.initiate", "conversationId": self.cid, "botName": "bench",
            "caller": "+15550100", "expectAudioMessages": True,
            "supportedMediaFormats": [loadgen.MEDIA_FORMAT],
        }).encode())  # fmt: skip

    def on_text(self, payload: bytes) -> None:
        now = clock()
        msg = json.loads(payload)
        kind = msg.get("type")
        if kind == "session.accepted" and "accepted" not in self.t:
            self.t["accepted"] = now
            if self.send_start:
                self.send_text(json.dumps({"type": "activities", "conversationId": self.cid,
                                           "activities": [{
                                               "type": "event", "name": "start",
                                               "parameters": {"caller": "+15550100",
                                                              "callee": "+15550199"}}]}
                                          ).encode())
            self.send_text(json.dumps({"type": "userStream.start",
                                       "conversationId": self.cid}).encode())
        elif kind == "playStream.chunk" and "audio" not in self.t:
            self.t["audio"] = now
            audio = binascii.a2b_base64(msg["audioChunk"])
            self._finish(audio)
        elif kind in ("session.error",) or (kind == "activities" and "audio" not in self.t):
            self._fail(f"{kind}: {payload[:200]!r}")

    def on_closed(self, reason: str) -> None:
        self._fail(reason)

    def _finish(self, audio: bytes) -> None:
        size = echo_agent.STAMPS.size
        if len(audio) < size or audio[:4] != echo_agent.STAMP_MAGIC:
            self._fail("the first agent audio carries no handshake stamps")
            return
        _, request, upgraded, settings, applied = echo_agent.STAMPS.unpack(audio[:size])
        t = self.t
        agent = (upgraded - request) + (applied - settings)
        first = t["audio"] - t["initiate"]
        result = {
            "upgrade_ms": (t["upgraded"] - self.t_connect) * 1000,
            "accepted_ms": (t["accepted"] - t["initiate"]) * 1000,
            "first_audio_ms": first * 1000,
            "agent_ms": agent * 1000,
            "bridge_ms": (first - agent) * 1000,
            "initiate_to_request_ms": (request - t["initiate"]) * 1000,
            "welcome_to_settings_ms": (settings - upgraded) * 1000,
            "applied_to_audio_ms": (t["audio"] - applied) * 1000,
        }
        self.send_text(json.dumps({"type": "session.end", "conversationId": self.cid,
                                   "reasonCode": "client-disconnected"}).encode())
        if not self.done.done():
            self.done.set_result(result)
        self.loop.call_later(0.2, self.close)

    def _fail(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(reason))
        self.close()


async def measure(url: str, calls: int, send_start: bool, gap_s: float) -> list[dict[str, Any]]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    results = []
    for _ in range(calls):
        _, call = await loop.create_connection(
            lambda: SetupCall(f"{host}:{port}", parts.path or "/", send_start), host, port)
        results.append(await asyncio.wait_for(call.done, 10))
        await asyncio.sleep(gap_s)
    return results


KEYS: Final = ("accepted_ms", "first_audio_ms", "agent_ms", "bridge_ms",
               "initiate_to_request_ms", "welcome_to_settings_ms", "applied_to_audio_ms",
               "upgrade_ms")


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for key in KEYS:
        values = sorted(r[key] for r in results)
        out[key] = {"p50": round(statistics.median(values), 2),
                    "p90": round(values[min(len(values) - 1, int(0.9 * len(values)))], 2),
                    "max": round(values[-1], 2)}
    return out


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"Call setup, {doc['plan']['calls']} calls one after another per target; the agent "
        f"holds each handshake reply {doc['plan']['delay_ms']:g} ms"
        + ("; VAIC's start sent on session.accepted" if doc["plan"]["start"] else "")
        + f". Code {doc['machine'].get('code')}, run {doc['created']}. Medians (p90), ms.",
        "",
        "| target | initiate → accepted | initiate → first agent audio | agent's share "
        "| bridge's share | of which: initiate → agent upgrade request | welcome → settings "
        "| applied → audio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target, s in doc["targets"].items():
        if "error" in s:
            lines.append(f"| {target} | {s['error']} |||||||")
            continue
        cells = [f"{s[k]['p50']:.2f} ({s[k]['p90']:.2f})" for k in KEYS[:7]]
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="acdg-serve,bridge,floor")
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--start", action="store_true", help="send VAIC's start on accepted")
    ap.add_argument("--gap", type=float, default=0.05, help="seconds between calls")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    cores = run.Cores.split()
    if cores.load is not None:
        os.sched_setaffinity(0, cores.load)
    doc: dict[str, Any] = {
        "created": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "machine": run.machine(cores),
        "plan": {"calls": args.calls, "delay_ms": args.delay_ms, "start": args.start},
        "targets": {},
    }
    with tempfile.TemporaryDirectory(prefix="acdg-setup-") as tmp:
        logdir = Path(tmp)
        for target in targets:
            agent, agent_url = run.start_agent("echo", logdir, cores, "--delay-ms",
                                               str(args.delay_ms), "--greeting-ms", "100")
            try:
                run.wait_agent(agent)
                child, port = run.ready_target(target, agent_url, logdir, cores)
            except run.TargetFailed as exc:
                agent.stop()
                doc["targets"][target] = {"error": (str(exc) or repr(exc)).splitlines()[0]}
                print(f"{target:16} FAILED: {exc}", flush=True)
                continue
            try:
                url = run.target_url(target, port)
                with asyncio.Runner(loop_factory=loadgen.new_loop_factory()) as runner:
                    runner.run(measure(url, 2, args.start, args.gap))  # warm-up
                    results = runner.run(measure(url, args.calls, args.start, args.gap))
                doc["targets"][target] = summarize(results) | {"calls": results}
                s = doc["targets"][target]
                print(f"{target:16} accepted {s['accepted_ms']['p50']:.2f} ms, first audio "
                      f"{s['first_audio_ms']['p50']:.2f} ms = agent {s['agent_ms']['p50']:.2f} + "
                      f"bridge {s['bridge_ms']['p50']:.2f} ms", flush=True)
            except (run.TargetFailed, RuntimeError, TimeoutError) as exc:
                doc["targets"][target] = {"error": (str(exc) or repr(exc)).splitlines()[0]}
                print(f"{target:16} FAILED: {exc}", flush=True)
            finally:
                run.stop_all(child, agent)
    run.write_results(doc, args.out, f"setup-{doc['created']}.json", markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
