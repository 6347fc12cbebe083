"""Sensitive mode over real sockets: what the caller keys and says while it is on appears
in no output, and VAIC's recording is paused and resumed around it.

One call through the bridge under uvicorn (at debug level, as websockets is), with the
stand-in agent, real Redis as the shared store, a JSON-lines file and a signed webhook for
the records, an observer and handlers for the events. The caller keys a card number
and says it with a secret word inside ``session.sensitive()``; afterwards every output
is searched for them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import msgspec
import pytest
import redis
from rig import standin
from servers import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from test_log_hygiene import DIRECT
from vaic_raw import EventLog, vaic, wait_until

from acdg_asgi import (
    AgentSettings,
    BridgeApp,
    DtmfInput,
    Session,
    ThinkSettings,
    redact_card_numbers,
)
from acdg_asgi.call import Measure
from acdg_asgi.delivery import JsonLines, RecordWebhook
from acdg_asgi.events import Event
from acdg_asgi.observability.observer import CallView
from acdg_asgi.testing.agent import AgentScript, Turn
from acdg_asgi.testing.server import serve

pytestmark = pytest.mark.anyio

CARD = "4111111111111111"
SPOKEN = "4111 1111 1111 1111"
WORD = "periwinkle"
NEEDLES = (CARD, SPOKEN, WORD, "1111 1111")
SECRET = "webhook-secret-3141"
SUPERVISOR = "supervisor-secret-2718"
LEAD_S = 0.2  # more than the pacing lead: what was sent has played
THINK = ThinkSettings(provider={"type": "open_ai", "model": "gpt-4o-mini"}, prompt="Be kind.")
SCRIPT = AgentScript(turns=(
    Turn("Got your keys.", heard="(keys)"),  # answers the keys, which reach it masked
    Turn(f"Thanks, I noted {SPOKEN}.", heard=f"my card is {SPOKEN}, my word is {WORD}"),
    Turn("Anything else?", heard="no thanks"),
), ms_per_word=40, end_of_turn_ms=200)


class Everything:
    """An observer that keeps every event it is shown, encoded."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def call_event(self, call: CallView, event: Event) -> None:
        self.seen.append(msgspec.json.encode(event))

    def call_started(self, call: CallView) -> None:
        pass

    def call_observed(self, call: CallView, measure: Measure, value: float) -> None:
        pass

    def call_finished(self, call: CallView) -> None:
        pass

    def refused(self, cause: str) -> None:
        pass

    def protocol_error(self, peer: str, kind: str) -> None:
        pass


class Receiver:
    """The webhook's far end: keeps every body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.app = Starlette(routes=[Route("/hooks", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        self.bodies.append(await request.body())
        return Response(status_code=204)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    names = ("uvicorn.error", "uvicorn.access", "uvicorn.asgi", "websockets", "acdg_asgi")
    levels = {name: logging.getLogger(name).level for name in names}
    caplog.set_level(logging.DEBUG)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield caplog
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def redis_contents(url: str) -> bytes:
    """Every value in the store, whatever its type."""
    r = redis.Redis.from_url(url)
    out: list[bytes] = []
    for key in r.scan_iter():
        kind = r.type(key)
        if kind == b"string":
            out.append(r.get(key) or b"")
        elif kind == b"hash":
            out.extend(v for v in r.hgetall(key).values())
        elif kind == b"list":
            out.extend(r.lrange(key, 0, -1))
        elif kind == b"set":
            out.extend(r.smembers(key))
        elif kind == b"zset":
            out.extend(r.zrange(key, 0, -1))
        elif kind == b"stream":  # the live events
            out.extend(value for _, fields in r.xrange(key) for value in fields.values())
    return b"\n".join(out)


def leaks(name: str, text: str | bytes) -> list[str]:
    low = (text.decode(errors="replace") if isinstance(text, bytes) else text).lower()
    return [f"{name}: {needle!r}" for needle in NEEDLES if needle in low]


@pytest.mark.parametrize("ws", [DIRECT, "websockets"])
async def test_what_the_caller_keys_and_says_in_sensitive_mode_appears_in_no_output(
    ws: str, redis_url: str, tmp_path: Path, debug_logs: pytest.LogCaptureFixture,
) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    receiver, port = Receiver(), free_port()
    lines = tmp_path / "calls.jsonl"
    observer = Everything()
    async with standin(SCRIPT) as agent, serve(receiver.app, port=port):
        bridge = BridgeApp(
            agent=AgentSettings(think=THINK, greeting="Hello, how can I help?"),
            deepgram_url=agent.url, tracing=False, store=redis_url, instance_id="a",
            observers=[observer], dtmf=DtmfInput(terminator="#"), redact=redact_card_numbers,
            records=[JsonLines(lines), RecordWebhook(f"http://127.0.0.1:{port}/hooks",
                                                     secret=SECRET)],
        )
        log = EventLog(bridge)
        sessions: list[Session] = []
        bridge.on("session_start")(lambda session, event: sessions.append(session))
        async with serve(bridge, ws=ws, log_config=None, log_level="debug") as host, \
                vaic(host) as caller:
            await caller.initiate()
            await caller.start_stream()
            await caller.wait_for("playStream.stop")  # the greeting
            session = sessions[0]
            async with session.sensitive(keep_audio_from_agent=False) as sensitive:
                await caller.wait_for(lambda r: r.type == "activities" and r.msg[
                    "activities"][0]["name"] == "pauseCallRecording")
                await caller.activity(type="event", name="DTMF", value=CARD + "#")
                card = await sensitive.digits(timeout_s=10)
                await log.wait_for("conversation_text", lambda e: e.content == "Got your keys.")
                await caller.wait_for("playStream.stop", count=2)
                await anyio.sleep(LEAD_S)  # heard to the end: no barge-in
                await caller.speak(voiced_ms=300, silent_ms=400, pace=0.5)
                await log.wait_for("conversation_text", lambda e: e.role == "user", count=2)
            resumed = await caller.wait_for(lambda r: r.type == "activities" and r.msg[
                "activities"][0]["name"] == "resumeCallRecording")
            await log.wait_for("conversation_text", lambda e: e.content.startswith("Thanks"))
            await caller.wait_for("playStream.stop", count=3)
            await anyio.sleep(LEAD_S)
            # After the mode the caller is heard as they are.
            await caller.speak(voiced_ms=300, silent_ms=400, pace=0.5)
            await log.wait_for("conversation_text", lambda e: e.content == "no thanks")
            await wait_until(lambda: b"no thanks" in redis_contents(redis_url),
                             what="the history shared in Redis")
            stored = redis_contents(redis_url)
            await caller.end()
            await caller.wait_closed()
            end = await log.wait_for("session_end")
            await wait_until(lambda: receiver.bodies and lines.exists(),
                             what="the record delivered")
        logs = "\n".join(f"{r.getMessage()} {r.args!r} {r.__dict__}" for r in debug_logs.records)

    # The block, and only the block, had the keys.
    assert card == CARD
    # VAIC was asked to pause the recording, then to resume it.
    names = [a["name"] for r in caller.of_type("activities") for a in r.msg["activities"]]
    assert names.index("pauseCallRecording") < names.index("resumeCallRecording")
    assert resumed.at > caller.of_type("activities")[0].at
    # Masked where it was, and the rest as it was.
    record = end.record
    assert [line.content for line in record.transcript] == [
        "Hello, how can I help?", "[redacted]", "Got your keys.", "[redacted]",
        "Thanks, I noted [card].", "no thanks", "Anything else?"]
    assert [(e.digits, e.masked) for e in log.of("dtmf_collected")] == [("[redacted]", True)]
    assert [e.on for e in log.of("sensitive_mode")] == [True, False]
    told = [m for c in agent.connections for m in c.text_frames if "InjectUserMessage" in m]
    assert told == ['{"type":"InjectUserMessage","content":"DTMF-[redacted]"}']
    # ... and nowhere else.
    found = [
        *leaks("record (JSON lines)", lines.read_text()),
        *(leak for body in receiver.bodies for leak in leaks("record (webhook)", body)),
        *leaks("shared store", stored),
        *leaks("logs", logs),
        *(leak for event in observer.seen for leak in leaks("observer", event)),
        *leaks("handlers", msgspec.json.encode([e for _, e in log.events])),
        *(leak for r in caller.replies for leak in leaks("to VAIC", msgspec.json.encode(r.msg))),
        *(leak for c in agent.connections for frame in c.text_frames
          for leak in leaks("to the agent", frame)),
    ]
    assert found == []
    assert len(logs) > 10_000 and "DEBUG" in logs  # the debug lines were there to search
    # The search finds what the caller said outside the mode, where transcripts go.
    outside = {
        "record (JSON lines)": lines.read_bytes(), "record (webhook)": receiver.bodies[0],
        "shared store": stored, "observer": b"".join(observer.seen),
        "handlers": msgspec.json.encode([e for _, e in log.events]),
        "to VAIC": b"".join(msgspec.json.encode(r.msg) for r in caller.replies),
    }
    assert [name for name, text in outside.items() if b"no thanks" not in text] == []


async def test_by_default_the_agent_hears_silence_and_gets_the_keys_masked() -> None:
    async with standin(SCRIPT) as agent:
        bridge = BridgeApp(agent=AgentSettings(think=THINK, greeting="Hello"),
                           deepgram_url=agent.url, tracing=False, dtmf=DtmfInput(max_digits=4))
        log = EventLog(bridge)
        sessions: list[Session] = []
        bridge.on("session_start")(lambda session, event: sessions.append(session))
        async with serve(bridge) as host, vaic(host) as caller:
            await caller.initiate()
            await caller.start_stream()
            await caller.wait_for("playStream.stop")
            record = agent.connections[0]
            async with sessions[0].sensitive() as sensitive:
                heard = record.audio_bytes
                await caller.speak(voiced_ms=400, silent_ms=600)  # the agent must not hear it
                await caller.activity(type="event", name="DTMF", value="1234")
                pin = await sensitive.digits(timeout_s=10)
                await log.wait_for("conversation_text", lambda e: e.content == "Got your keys.")
                await wait_until(lambda: record.audio_bytes >= heard + caller.fmt.frame_bytes(900),
                                 what="the caller's audio, as silence")
            assert record.barge_ins == 0
            assert not [m for m in record.sent_types[-20:] if m == "UserStartedSpeaking"]
            await caller.end()
            await log.wait_for("session_end")
    assert pin == "1234"
    user_turns = [e.content for e in log.of("conversation_text") if e.role == "user"]
    assert user_turns == ["[redacted]"]  # the masked keys, as the agent got them
    assert "1234" not in str(record.text_frames)
    assert [e.content for e in log.of("conversation_text")][-1] == "Got your keys."


async def test_bridge_control_drives_sensitive_mode_from_outside_the_call() -> None:
    async with standin(SCRIPT) as agent:
        bridge = BridgeApp(agent=AgentSettings(think=THINK, greeting="Hello"),
                           deepgram_url=agent.url, tracing=False)
        log = EventLog(bridge)
        async with serve(bridge) as host, vaic(host) as caller:
            await caller.initiate()
            await caller.start_stream()
            await caller.wait_for("playStream.stop")
            async with bridge.control(caller.conversation_id).sensitive():
                await caller.activity(type="event", name="DTMF", value="9876")
                await log.wait_for("dtmf")
            await caller.wait_for(lambda r: r.type == "activities" and r.msg[
                "activities"][0]["name"] == "resumeCallRecording")
            await caller.end()
            await log.wait_for("session_end")
    names = [a["name"] for r in caller.of_type("activities") for a in r.msg["activities"]]
    assert names == ["pauseCallRecording", "resumeCallRecording"]
    assert [e.digits for e in log.of("dtmf")] == ["[redacted]"]
    assert "9876" not in str([e for _, e in log.events])


async def test_a_function_calls_card_number_is_kept_redacted_in_the_store_and_the_history(
    redis_url: str,
) -> None:
    """The handler gets the arguments as the agent sent them; the shared store, the next
    agent connection's history, the observers and the live view (a supervisor's page, and
    the live events in the store) get them, and the handler's answer, redacted."""
    redis.Redis.from_url(redis_url).flushdb()
    script = AgentScript(turns=(
        Turn("It is charged.", heard="charge my card", function="charge",
             arguments=f'{{"card": "{SPOKEN}", "amount": 12}}'),
        Turn("Anything else?", heard="no thanks"),
    ), ms_per_word=40, end_of_turn_ms=200, drop_after_turns=1)
    async with standin(script) as agent:
        bridge = BridgeApp(agent=AgentSettings(think=THINK, greeting="Hello"),
                           deepgram_url=agent.url, tracing=False, store=redis_url,
                           instance_id="a", redact=redact_card_numbers, live=True,
                           control_auth=SUPERVISOR, observers=[observer := Everything()])
        log = EventLog(bridge)
        handed: list[str] = []

        @bridge.on("function_call_request")
        async def charge(session: Session, event: Event) -> None:
            for fn in event.functions:  # type: ignore[attr-defined]
                handed.append(fn.arguments)
                await session.respond_to_function_call(fn.id, fn.name, {"charged": CARD})

        async with serve(bridge) as host, vaic(host) as caller:
            await caller.initiate()
            await caller.start_stream()
            await caller.wait_for("playStream.stop")  # the greeting
            await caller.speak(voiced_ms=300, silent_ms=400, pace=0.5)
            await log.wait_for("conversation_text", lambda e: e.content.startswith("It is charged"))
            await wait_until(lambda: len(agent.connections) == 2 and any(
                '"Settings"' in frame for frame in agent.connections[1].text_frames),
                what="the agent connection after the drop, with its settings")
            await wait_until(lambda: b"charge" in redis_contents(redis_url),
                             what="the function call shared in Redis")
            await caller.end()
            await log.wait_for("session_end")
            async with httpx.AsyncClient(base_url=f"http://{host}") as client:
                page = await client.get(f"/live/events?call={caller.conversation_id}", headers={
                    "Authorization": f"Bearer {SUPERVISOR}"})
            await wait_until(lambda: b"session_end" in redis_contents(redis_url),
                             what="the call's live events shared in Redis")
            stored = redis_contents(redis_url)

    assert handed == [f'{{"card": "{SPOKEN}", "amount": 12}}']
    (settings,) = [f for f in agent.connections[1].text_frames if '"Settings"' in f]
    assert '"name":"charge"' in settings and "[card]" in settings
    assert leaks("the next agent's history", settings) == []
    assert leaks("shared store", stored) == [] and b"[card]" in stored
    assert b'"function_call_request"' in stored  # the live events are in what was searched
    asked = [e for e in observer.seen if b'"charge"' in e and b'"functions"' in e]
    assert len(asked) == 1 and b"[card]" in asked[0], observer.seen
    assert leaks("an observer", b"\n".join(observer.seen)) == []
    assert page.status_code == 200 and "event: function_call_request" in page.text
    assert leaks("the live view", page.text) == [] and "[card]" in page.text
