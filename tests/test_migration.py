"""Code written for the predecessor runs here: its README's examples, and its event fields.

tests/predecessor/ holds the predecessor README's Quick Start and method examples with
only their imports changed; they run as scripts, as their users run them, against the
stand-in agent, called by the VAIC simulator. The old field names, keywords and the
``AC_TOKEN`` variable work too, each with a MigrationWarning.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from rig import standin

from acdg_asgi import BridgeApp, MediaFormat, MigrationWarning, Session
from acdg_asgi.audio import FORMATS
from acdg_asgi.compat.types import DeepgramAgent, DeepgramAgentConfig, DeepgramThink
from acdg_asgi.config import as_agent_config
from acdg_asgi.events import BridgeErrorEvent, SessionEndEvent, SessionStartEvent
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.testing import (
    AgentScript,
    CallReport,
    CallScript,
    Turn,
    Utterance,
    run_call,
    serve,
)

pytestmark = pytest.mark.anyio

PREDECESSOR = Path(__file__).resolve().parent / "predecessor"
QUICK = {"ms_per_word": 40, "end_of_turn_ms": 200}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Script:
    """A predecessor script running as its users run it: ``python script.py``."""

    def __init__(self, process: Any, port: int) -> None:
        self.process = process
        self.url = f"ws://127.0.0.1:{port}/"
        self.stdout = b""
        self.stderr = b""


@asynccontextmanager
async def running(name: str, agent_url: str, **env: str) -> AsyncIterator[Script]:
    port = free_port()
    environ = {**os.environ, "ACDG_HOST": "127.0.0.1", "ACDG_PORT": str(port),
               "DEEPGRAM_URL": agent_url, "PYTHONUNBUFFERED": "1", **env}
    environ.pop("AC_TOKEN", None)
    process = await anyio.open_process([sys.executable, str(PREDECESSOR / name)], env=environ)
    script = Script(process, port)
    async with process:
        try:
            with anyio.fail_after(20):
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                        break
                    except OSError:
                        assert process.returncode is None, "the script exited"
                        await anyio.sleep(0.05)
            yield script
        finally:
            process.terminate()  # SIGTERM: the bridge drains, then exits
            with anyio.fail_after(15):
                await process.wait()
            assert process.stdout is not None and process.stderr is not None
            script.stdout = await _read(process.stdout)
            script.stderr = await _read(process.stderr)


async def _read(stream: Any) -> bytes:
    data = b""
    async for chunk in stream:
        data += chunk
    return data


async def test_the_quick_start_runs_with_only_its_imports_changed() -> None:
    async with standin(AgentScript(turns=(Turn("Sure"),), **QUICK),
                       api_key="your-api-key") as agent:
        async with running("quick_start.py", agent.url) as script:
            call = CallScript(wait_for_greeting=True, utterances=(Utterance(speech_ms=400),))
            report = await run_call(script.url, call, token="your-audiocodes-token")
            refused = await run_call(script.url, call, token="not-the-token")
        settings = agent.connections[0].settings

    assert report.ok, report.to_json(indent=2)
    assert refused.connect_error == "HTTP 401"  # ac_token is enforced
    assert settings is not None and settings.agent.greeting == "Hello from the otter slide!"
    assert isinstance(settings.agent.think, tuple) and len(settings.agent.think) == 2
    assert isinstance(settings.agent.speak, tuple)
    assert [s.provider["type"] for s in settings.agent.speak] == ["deepgram", "cartesia"]
    assert settings.agent.speak[1].provider["voice"] == {"mode": "id",
                                                         "id": "<your-desired-voice-id>"}
    out = script.stdout.decode()
    assert "Call started: " in out and "SessionStartEvent(" in out
    assert "DeepgramBridge(BridgeConfig(...)) is the predecessor's API" in script.stderr.decode()
    assert script.process.returncode == 0


async def test_the_method_examples_run_with_only_their_imports_changed() -> None:
    turns = (
        Turn("It is on its way.", heard="Where is my order?", function="get_order_status",
             arguments='{"order_id": "A123"}'),
        Turn("One moment.", heard="Can I speak to an agent?"),
        Turn("Sure.", heard="Please transfer me."),
    )
    async with standin(AgentScript(turns=turns, **QUICK)) as agent:
        async with running("methods.py", agent.url, DEEPGRAM_API_KEY="k") as script:
            talk = CallScript(
                wait_for_greeting=True, wait_for_hangup=True, max_duration_ms=15_000,
                dtmf=((100, "1"), (300, "2")),
                utterances=(Utterance(speech_ms=400, pause_ms=1000),) * 3,
            )
            keys = CallScript(wait_for_greeting=True, wait_for_hangup=True,
                              max_duration_ms=8000, utterances=())
            first = await run_call(script.url, talk, token="your-audiocodes-token")
            warm = await run_call(script.url, msgspec.structs.replace(keys, dtmf=((100, "8"),)),
                                  token="your-audiocodes-token")
            bye = await run_call(script.url, msgspec.structs.replace(keys, dtmf=((100, "9"),)),
                                 token="your-audiocodes-token")
        records = list(agent.connections)

    for report in (first, warm, bye):
        assert not report.violations, report.to_json(indent=2)
    out = script.stdout.decode()
    ended = {cid: rest for cid, _, rest in (line.removeprefix("ended ").partition(" ")
                                          for line in out.splitlines()
                                          if line.startswith("ended "))}
    session_id, reason, transcript = ended[first.conversation_id].split(" ", 2)
    sent = _activities(first)
    assert sent["startCallRecording"] == [{"recordingName": session_id}]
    assert sent["playUrl"] == [{"playUrlUrl": "https://cdn.example.com/hold-music.wav"}]
    assert sent["sendDtmf"] == [{"dtmfDigits": "1234#"}]
    assert sent["customEvent"] == [{"foo": "bar"}]
    assert sent["transfer"] == [{"transferTarget": "sip:queue@example.com"}]
    assert _activities(warm)["transfer"] == [{"transferTarget": "sip:queue@example.com",
                                              "handoverReason": "caller asked for a human"}]
    assert "hangup" in _activities(bye)

    told = [m for m in records[0].messages if not isinstance(m, dg.KeepAlive)]
    injected = [m.message for m in told if isinstance(m, dg.InjectAgentMessage)]
    assert injected == ["Thanks for waiting — I found your account.", "I'm here, how can I help?"]
    [think] = [m.think for m in told if isinstance(m, dg.UpdateThink)]
    assert isinstance(think, dg.ThinkSettings) and think.prompt == "You are a billing specialist."
    [answer] = [m for m in told if isinstance(m, dg.FunctionCallResponse)]
    assert (answer.name, answer.content) == ("get_order_status", "order A123 has shipped")

    assert "Caller pressed: 1" in out and "Caller pressed: 2" in out
    assert reason == "transfer"
    assert ["user", "Where is my order?"] in json.loads(transcript)
    assert ended[warm.conversation_id].split(" ")[1] == "transfer"
    assert ended[bye.conversation_id].split(" ")[1] == "ended"


def _activities(report: CallReport) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for received in report.activities:
        activity = received.activity
        out.setdefault(activity.name or "", []).append(activity.activity_params)
    return out


# --- the old names, one by one ------------------------------------------------------------


async def test_old_event_fields_and_media_format_strings_work_in_a_real_call() -> None:
    seen: dict[str, Any] = {}
    ended = anyio.Event()
    caught = warnings.catch_warnings(record=True)
    warned = caught.__enter__()
    warnings.simplefilter("always", MigrationWarning)
    async with standin(AgentScript(turns=(Turn("Sure"),), **QUICK)) as agent:
        bridge = BridgeApp(deepgram_url=agent.url, preferred_media_formats=("raw/mulaw",))

        @bridge.on("session_start")
        async def start(session: Session, event: SessionStartEvent) -> None:
            seen["started_at"] = event.started_at
            seen["mulaw"] = session.media_format == "raw/mulaw"
            seen["format"] = str(session.media_format)
            raise RuntimeError("a handler that fails")

        @bridge.on("error")
        async def error(event: BridgeErrorEvent) -> None:
            seen["error"] = (event.description, event.recoverable, event.cause)

        @bridge.on("session_end")
        async def end(event: SessionEndEvent) -> None:
            seen["end"] = (event.reason == "hangup", event.duration_ms, event.ended_at)
            ended.set()

        try:
            async with serve(bridge) as host:
                report = await run_call(f"ws://{host}/", CallScript(
                    formats=("raw/lpcm16", "raw/mulaw"), wait_for_greeting=True,
                    utterances=(Utterance(speech_ms=300),)))
                with anyio.fail_after(5):
                    await ended.wait()
        finally:
            caught.__exit__(None, None, None)

    assert report.media_format == "raw/mulaw"  # the old keyword set the preference
    assert seen["mulaw"] is True and seen["format"] == "raw/mulaw"
    assert seen["started_at"].endswith("+00:00") and seen["started_at"][:4].isdigit()
    description, recoverable, cause = seen["error"]
    assert "a handler that fails" in description and recoverable is True and cause is None
    hangup, duration_ms, ended_at = seen["end"]
    assert hangup is True and isinstance(duration_ms, int) and duration_ms > 500
    assert ended_at >= seen["started_at"]
    ours = [w for w in warned if issubclass(w.category, MigrationWarning)]
    messages = {str(w.message).partition(" is the predecessor's")[0] for w in ours}
    assert messages >= {
        "preferred_media_formats=", "SessionStartEvent.started_at",
        "comparing a MediaFormat with a string", "BridgeErrorEvent.description",
        "BridgeErrorEvent.recoverable", "BridgeErrorEvent.cause",
        'SessionEndEvent.reason == "hangup"', "SessionEndEvent.duration_ms",
        "SessionEndEvent.ended_at",
    }
    assert all(Path(w.filename).name == Path(__file__).name for w in ours), \
        [(str(w.message), w.filename) for w in ours]


def test_the_caller_reason_is_a_string_everywhere_else() -> None:
    end = SessionEndEvent(session_id="s", conversation_id="c", at=0.0, reason="caller")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MigrationWarning)
        assert end.reason == "caller" and end.reason != "ended" and f"{end.reason}" == "caller"
        assert msgspec.json.decode(msgspec.json.encode(end))["reason"] == "caller"
        assert repr(end).count("reason='caller'") == 1
        assert {end.reason: 1}["caller"] == 1
        assert SessionEndEvent(session_id="s", conversation_id="c", at=0.0,
                               reason="ended") != "hangup"
    with pytest.warns(MigrationWarning):
        assert end.reason == "hangup"


def test_a_media_format_is_its_token_as_a_string() -> None:
    mulaw = FORMATS["raw/mulaw"]
    assert str(mulaw) == "raw/mulaw" and f"{mulaw}" == "raw/mulaw"
    with pytest.warns(MigrationWarning, match="media_format.token"):
        assert mulaw == "raw/mulaw"
    with pytest.warns(MigrationWarning) as warned:
        assert mulaw != "raw/lpcm16"
        assert not mulaw != "raw/mulaw"  # noqa: SIM202 - the operator is what is tested
    assert {Path(w.filename).name for w in warned} == {Path(__file__).name}
    assert mulaw == MediaFormat("raw/mulaw", "mulaw", 8000, 1, False) != FORMATS["wav/mulaw"]
    assert {mulaw: 1}[FORMATS["raw/mulaw"]] == 1


async def test_ac_token_is_read_when_auth_is_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AC_TOKEN", "from-the-env")
    async with standin(AgentScript(turns=(Turn("Sure"),), **QUICK)) as agent:
        with pytest.warns(MigrationWarning, match="AC_TOKEN"):
            bridge = BridgeApp(deepgram_url=agent.url)
        explicit = BridgeApp(deepgram_url=agent.url, auth="given")
        async with serve(bridge) as host, serve(explicit) as other:
            script = CallScript(utterances=(), max_duration_ms=3000)
            without = await run_call(f"ws://{host}/", script)
            with_it = await run_call(f"ws://{host}/", script, token="from-the-env")
            given = await run_call(f"ws://{other}/", script, token="from-the-env")
    assert without.connect_error == "HTTP 401" and with_it.media_format is not None
    assert given.connect_error == "HTTP 401"  # auth= wins over the variable


def test_the_old_typed_config_is_a_dict_the_bridge_takes() -> None:
    config = DeepgramAgentConfig(agent=DeepgramAgent(
        think=[DeepgramThink(provider={"type": "open_ai", "model": "gpt-4o-mini"}, prompt="Hi")],
        greeting="Hello"))
    assert type(config) is dict
    agent = as_agent_config(config).agent
    assert isinstance(agent.think, tuple) and agent.think[0].prompt == "Hi"
    assert agent.greeting == "Hello"

