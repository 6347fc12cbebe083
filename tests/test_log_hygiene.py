"""Logs a team can ship and alert on: no secret at any level, no false ERROR after a
refused upgrade, lines that read as text and as JSON.

Real servers on loopback: ``acdg serve --log-level debug`` in a process of its own, and
uvicorn in this one with each WebSocket implementation at debug level, websockets' own
debug lines on, the stand-in agent enforcing its key.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from acdg_asgi import AgentSettings, BridgeApp, LeanConnector, ServerLogFilter, WebsocketsConnector
from acdg_asgi.observability.logs import CallLog, JsonFormatter, logger
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call
from acdg_asgi.transports.vaic_direct import UVICORN_RELEASE

pytestmark = pytest.mark.anyio

TOKEN = "vaic-token-SECRET-5150"
API_KEY = "dg-key-SECRET-8086"
SCRIPT = AgentScript(turns=(Turn("Sure, one moment.", heard="hello"),), ms_per_word=60)
CALL = CallScript(utterances=(Utterance(speech_ms=0, pause_ms=600),
                              Utterance(speech_ms=300, pause_ms=900)))
UNFINISHED = "ASGI callable returned without completing handshake"
DIRECT = "acdg_asgi.serving:DirectWebSocketProtocol"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything at DEBUG, the servers' and websockets' loggers included; put back after."""
    names = ("uvicorn.error", "uvicorn.access", "uvicorn.asgi", "websockets")
    levels = {name: logging.getLogger(name).level for name in names}
    caplog.set_level(logging.DEBUG)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield caplog
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def everything(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.args!r} {r.__dict__}" for r in caplog.records)


async def test_acdg_serve_at_debug_level_logs_no_secret(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    async with StandInAgent(script=SCRIPT, api_key=API_KEY) as agent:
        env = {**os.environ, "DEEPGRAM_URL": agent.url, "DEEPGRAM_API_KEY": API_KEY,
               "ACDG_TOKEN": TOKEN, "ACDG_PORT": str(port)}
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: ASYNC220  # the server runs beside this loop
                [sys.executable, "-m", "acdg_asgi.cli", "serve", "--log-level", "debug"],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            await wait_for_http(f"http://127.0.0.1:{port}/", proc, log)
            report = await run_call(f"ws://127.0.0.1:{port}/", CALL, token=TOKEN)
            with pytest.raises(InvalidStatus):  # a wrong token: refused, and logged as such
                await connect(f"ws://127.0.0.1:{port}/", proxy=None,
                              additional_headers={"Authorization": "Bearer wrong-" + TOKEN})
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    text = log.read_text()
    assert report.ok, report.render()
    assert "< authorization: ****" in text.lower()  # the header lines are there, masked
    assert TOKEN not in text and API_KEY not in text
    assert UNFINISHED not in text
    assert "upgrade refused (401)" in text


async def wait_for_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
        while True:
            try:
                await http.get(url)
                return
            except httpx.TransportError:
                assert proc.poll() is None, log.read_text()  # noqa: ASYNC240
                assert time.monotonic() < deadline, f"{url} never answered"
                await anyio.sleep(0.05)


@pytest.mark.parametrize("ws", [DIRECT, "websockets-sansio", "websockets", "wsproto"])
@pytest.mark.parametrize("connector", [LeanConnector, WebsocketsConnector],
                         ids=["lean", "websockets"])
async def test_debug_logs_of_a_whole_call_carry_neither_token_nor_key(
    ws: str, connector: type[LeanConnector | WebsocketsConnector],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    async with StandInAgent(script=SCRIPT, api_key=API_KEY) as agent:
        bridge = BridgeApp(agent=AgentSettings(greeting="Hi"), deepgram_url=agent.url,
                           deepgram_api_key=API_KEY, auth=TOKEN, tracing=False,
                           connector=connector(proxy=None))
        async with serve(bridge, ws=ws, log_config=None, log_level="debug") as host:
            report = await run_call(f"ws://{host}/", CALL, token=TOKEN)
    assert report.ok, report.render()
    text = everything(debug_logs)
    assert TOKEN not in text and API_KEY not in text
    if ws.startswith("websockets") or ws == DIRECT:  # these log the handshake headers
        assert "authorization: ****" in text.lower()


@pytest.mark.parametrize("ws", [DIRECT, "websockets-sansio", "websockets", "wsproto"])
async def test_a_refused_upgrade_is_logged_once_and_not_as_an_app_failure(
    ws: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bridge = BridgeApp(deepgram_url="ws://127.0.0.1:9/v1/agent/converse", auth=TOKEN)
    async with serve(bridge, ws=ws, log_config=None, log_level="info") as host:
        for header, status in (("Bearer wrong", 401), (f"Bearer {TOKEN}", 503)):
            if status == 503:
                bridge.calls.draining = True
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"ws://{host}/", proxy=None,
                              additional_headers={"Authorization": header})
            assert refused.value.response.status_code == status
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert any("upgrade refused (401)" in r.getMessage() for r in caplog.records)


async def test_without_the_filter_stock_uvicorn_raises_the_false_alarm_before_0_55(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the filter is for: uvicorn's own websockets-sansio logs an ERROR after every
    refused upgrade, until 0.55 counts the refusal as a finished handshake."""
    caplog.set_level(logging.INFO)
    bridge = BridgeApp(deepgram_url="ws://127.0.0.1:9/v1/agent/converse", auth=TOKEN)
    server_log = logging.getLogger("uvicorn.error")
    ours = [f for f in server_log.filters if isinstance(f, ServerLogFilter)]
    for f in ours:
        server_log.removeFilter(f)
    try:
        async with serve(bridge, ws="websockets-sansio", log_config=None) as host:
            with pytest.raises(InvalidStatus):
                await connect(f"ws://{host}/", proxy=None,
                              additional_headers={"Authorization": "Bearer wrong"})
            await anyio.sleep(0.2)
    finally:
        for f in ours:
            server_log.addFilter(f)
    alarmed = any(UNFINISHED in r.getMessage() and r.levelno == logging.ERROR
                  for r in caplog.records)
    assert alarmed == (UVICORN_RELEASE < (0, 55))


def test_call_lines_read_as_text_and_as_json() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logger.addHandler(keep)
    try:
        log = CallLog(logger, {"conversation_id": "conv-7", "session_id": "s-7"})
        log.warning("call finished: %s", "caller")
    finally:
        logger.removeHandler(keep)
    (record,) = records
    assert record.getMessage() == "[conv-7] call finished: caller"
    entry = msgspec.json.decode(JsonFormatter().format(record))
    assert entry["message"] == "call finished: caller"
    assert (entry["conversation_id"], entry["session_id"]) == ("conv-7", "s-7")


SCRIPT_WITHOUT_LOGGING = """
import logging, sys
from acdg_asgi import BridgeApp
BridgeApp(deepgram_url="ws://127.0.0.1:9/v1/agent/converse")
log = logging.getLogger("acdg_asgi.call")
log.warning("before the app configured logging")
logging.basicConfig(format="APP %(levelname)s %(message)s")
log.warning("after")
"""


def test_bridge_lines_get_time_and_level_where_the_app_configured_no_logging() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT_WITHOUT_LOGGING], capture_output=True,
                          text=True, timeout=60)
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING acdg_asgi\.call: "
                        r"before the app configured logging", lines[0])
    assert lines[1] == "APP WARNING after"  # once the app has a handler, only there


HANDLERS_APP = """
import logging
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from acdg_asgi import BridgeApp, ServerLogFilter

bridge = BridgeApp(deepgram_url="ws://127.0.0.1:9/v1/agent/converse")


def handlers(request):
    loggers = [logging.getLogger(), *(logger for logger in
               logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger))]
    logging.getLogger("acdg_asgi.call").info("a bridge line")
    return JSONResponse([[logger.name, type(h).__name__,
                          any(isinstance(f, ServerLogFilter) for f in h.filters)]
                         for logger in loggers for h in logger.handlers])


app = Starlette(routes=[Route("/handlers", handlers), *bridge.routes("/audiocodes")],
                lifespan=bridge.lifespan)
"""


async def test_acdg_serve_writes_every_line_through_one_filtered_handler(tmp_path: Path) -> None:
    """Under ``acdg serve APP`` the app's module, uvicorn and the bridge all log through the
    one handler ``acdg serve`` installs, with ServerLogFilter on it: no other handler
    anywhere, and the bridge's lines (the drain's included) with time and level."""
    (tmp_path / "handlersapp.py").write_text(HANDLERS_APP)
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "DEEPGRAM_API_KEY": "k", "ACDG_PORT": str(port)}
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220  # the server runs beside this loop
            [sys.executable, "-m", "acdg_asgi.cli", "serve", "handlersapp:app"], cwd=tmp_path,
            env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        await wait_for_http(f"http://127.0.0.1:{port}/audiocodes", proc, log)
        async with httpx.AsyncClient() as http:
            handlers = (await http.get(f"http://127.0.0.1:{port}/handlers")).json()
        proc.terminate()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    text = log.read_text()
    assert handlers == [["root", "StreamHandler", True]]
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO    "
    assert re.search(stamp + r"acdg_asgi\.call: a bridge line", text), text
    assert re.search(stamp + r"acdg_asgi\.serve: SIGTERM received: draining", text), text
    assert re.search(stamp + r"acdg_asgi\.serve: drained: no calls left", text), text
