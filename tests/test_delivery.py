"""Post-call delivery: each call's record to a signed webhook that may be down, and to a
JSON-lines file; real calls, a real HTTP receiver on loopback, a spool on disk."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from vaic_raw import wait_until

from acdg_asgi import AgentSettings, BridgeApp, CallRecord
from acdg_asgi.delivery import JsonLines, RecordWebhook, sign, verify
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call

pytestmark = pytest.mark.anyio

SECRET = "webhook-secret-789"
SCRIPT = AgentScript(turns=(Turn("Yes.", heard="hello"),), ms_per_word=60)
CALL = CallScript(utterances=(Utterance(speech_ms=0, pause_ms=500),
                              Utterance(speech_ms=300, pause_ms=700)))


class Receiver:
    """A CRM's webhook endpoint: checks each signature, keeps one record per id."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.records: dict[str, CallRecord] = {}
        self.posts = 0
        self.bad_signatures = 0
        self.app = Starlette(routes=[Route("/hooks/calls", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        self.posts += 1
        if not verify(SECRET, body, request.headers.get("x-acdg-signature", "")):
            self.bad_signatures += 1
            return Response(status_code=401)
        if self.status == 200:
            record = msgspec.json.decode(body, type=CallRecord)
            assert request.headers["x-acdg-record"] == record.session_id
            self.records[record.session_id] = record
        return Response(status_code=self.status)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def bridge_with(sink: object, agent: StandInAgent) -> AsyncIterator[str]:
    bridge = BridgeApp(agent=AgentSettings(greeting="Hi"), deepgram_url=agent.url,
                       tracing=False, records=[sink])  # type: ignore[list-item]
    async with serve(bridge) as host:  # uvicorn runs the bridge's lifespan
        yield f"ws://{host}/"


async def calls(url: str, n: int) -> list[str]:
    reports = [await run_call(url, CALL) for _ in range(n)]
    assert all(r.ok for r in reports), [r.violations for r in reports]
    return [r.conversation_id for r in reports]


async def test_an_outage_of_the_receiver_loses_no_record(tmp_path: Path) -> None:
    port = free_port()
    receiver = Receiver()
    webhook = RecordWebhook(f"http://127.0.0.1:{port}/hooks/calls", secret=SECRET,
                            spool=tmp_path / "spool", max_backoff_s=0.5)
    async with StandInAgent(script=SCRIPT) as agent, bridge_with(webhook, agent) as url:
        async with serve(receiver.app, port=port):
            first = await calls(url, 1)
            await wait_until(lambda: len(receiver.records) == 1)
        # the receiver is down: two more calls wait in the spool, on disk
        during = await calls(url, 2)
        await wait_until(lambda: len(list((tmp_path / "spool").glob("*.json"))) == 2)
        assert len(receiver.records) == 1
        async with serve(receiver.app, port=port):
            await wait_until(lambda: len(receiver.records) == 3)
            await wait_until(lambda: not list((tmp_path / "spool").glob("*.json")))
    got = sorted(r.conversation_id for r in receiver.records.values())
    assert got == sorted(first + during)
    assert receiver.bad_signatures == 0
    assert all(r.transcript for r in receiver.records.values())


async def test_records_waiting_on_disk_are_delivered_after_a_restart(tmp_path: Path) -> None:
    port = free_port()
    spool = tmp_path / "spool"
    async with StandInAgent(script=SCRIPT) as agent:
        down = RecordWebhook(f"http://127.0.0.1:{port}/hooks/calls", secret=SECRET,
                             spool=spool, max_backoff_s=0.5)
        async with bridge_with(down, agent) as url:
            waiting = await calls(url, 2)
            await wait_until(lambda: len(list(spool.glob("*.json"))) == 2)
        receiver = Receiver()
        async with serve(receiver.app, port=port):
            restarted = RecordWebhook(f"http://127.0.0.1:{port}/hooks/calls", secret=SECRET,
                                      spool=spool, max_backoff_s=0.5)
            async with bridge_with(restarted, agent):
                await wait_until(lambda: len(receiver.records) == 2)
    assert sorted(r.conversation_id for r in receiver.records.values()) == sorted(waiting)


async def test_a_record_the_receiver_refuses_is_set_aside(tmp_path: Path) -> None:
    port = free_port()
    receiver = Receiver(status=422)
    spool = tmp_path / "spool"
    webhook = RecordWebhook(f"http://127.0.0.1:{port}/hooks/calls", secret=SECRET,
                            spool=spool)
    async with (StandInAgent(script=SCRIPT) as agent, serve(receiver.app, port=port),
                bridge_with(webhook, agent) as url):
        await calls(url, 1)
        await wait_until(lambda: list(spool.glob("*.rejected")))
    assert receiver.posts == 1  # not retried
    assert not list(spool.glob("*.json"))


async def test_json_lines_get_every_record(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    async with StandInAgent(script=SCRIPT) as agent, bridge_with(JsonLines(path), agent) as url:
        ids = await calls(url, 2)
    lines = path.read_bytes().splitlines()
    records = [msgspec.json.decode(line, type=CallRecord) for line in lines]
    assert sorted(r.conversation_id for r in records) == sorted(ids)


def test_a_signature_fails_for_another_body_secret_or_an_old_timestamp() -> None:
    body = b'{"session_id":"s"}'
    header = sign(SECRET, body)
    assert verify(SECRET, body, header)
    assert not verify(SECRET, body + b" ", header)
    assert not verify("other-secret", body, header)
    assert not verify(SECRET, body, sign(SECRET, body, timestamp=1_000_000_000))
    assert not verify(SECRET, body, "garbage")
