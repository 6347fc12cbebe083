"""The bridge under each of uvicorn's WebSocket implementations and under granian
(hypercorn is covered in test_frameworks.py): a whole call with a barge-in and DTMF,
conformance-checked."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from acdg_asgi import AgentSettings, BridgeApp
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call

pytestmark = pytest.mark.anyio


SCRIPT = AgentScript(turns=(Turn("One two three four five six.", heard="hi"),
                            Turn("Done.", heard="bye")), ms_per_word=120)
CALL = CallScript(utterances=(Utterance(speech_ms=0, pause_ms=600),
                              Utterance(speech_ms=300, pause_ms=350),
                              Utterance(speech_ms=300, pause_ms=900)),
                  barge_in_after_ms=300, dtmf=((200, "9"),))


@pytest.mark.parametrize(("ws", "direct_path"), [
    ("websockets-sansio", True), ("websockets-sansio", False), ("wsproto", True),
    ("websockets", True)], ids=["sansio-taken-over", "sansio-asgi", "wsproto", "websockets"])
async def test_a_call_under_each_uvicorn_websocket_implementation(
        ws: str, direct_path: bool) -> None:
    script, call = SCRIPT, CALL
    digits: list[str] = []
    async with StandInAgent(script=script) as agent:
        bridge = BridgeApp(agent=AgentSettings(greeting="Hi"), deepgram_url=agent.url,
                           auth="tok", tracing=False, direct_path=direct_path)
        bridge.on("dtmf")(lambda event: digits.append(event.digits))
        async with serve(bridge, ws=ws) as host:
            report = await run_call(f"ws://{host}/", call, token="tok")
            refused = await run_call(f"ws://{host}/", call, token="wrong")
    assert report.ok, report.violations
    assert report.barge_ins and all(b.stopped_ms is not None for b in report.barge_ins)
    assert digits == ["9"] and len(report.play_streams) >= 3
    assert agent.connections[0].audio_bytes == report.caller_frames * 640
    assert refused.connect_error is not None and "401" in refused.connect_error


@contextmanager
def granian(agent_url: str, token: str) -> Iterator[str]:
    """granian serving ``granian_app:app`` from a worker process; yields ``host:port``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    here = Path(__file__).resolve().parent
    server = subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "asgi", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--log-level", "warning", "--working-dir", str(here), "granian_app:app"],
        env={**os.environ, "AGENT_URL": agent_url, "TOKEN": token},
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


async def listening(host: str) -> None:
    name, port = host.split(":")
    with anyio.fail_after(20):
        while True:
            try:
                await (await anyio.connect_tcp(name, int(port))).aclose()
                return
            except OSError:
                await anyio.sleep(0.05)


async def test_a_call_under_granian() -> None:
    async with StandInAgent(script=SCRIPT) as agent:
        with granian(agent.url, "tok") as host:
            await listening(host)
            report = await run_call(f"ws://{host}/", CALL, token="tok")
            refused = await run_call(f"ws://{host}/", CALL, token="wrong")
    assert report.ok, report.violations
    assert report.barge_ins and all(b.stopped_ms is not None for b in report.barge_ins)
    assert len(report.play_streams) >= 3
    assert agent.connections[0].audio_bytes == report.caller_frames * 640
    assert refused.connect_error is not None and "401" in refused.connect_error
