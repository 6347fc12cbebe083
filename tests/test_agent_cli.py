"""``acdg agent``: the stand-in Deepgram agent as a command, scripted from a file.

It runs as a user starts it (a subprocess on a port it picks and prints); Deepgram's
official SDK is its client, and the examples find it through ``DEEPGRAM_URL``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from deepgram import AsyncDeepgramClient
from deepgram.agent.v1 import types as sdk
from deepgram.environment import DeepgramClientEnvironment
from rig import load_example
from test_standin_agent import sdk_settings, utterance

from acdg_asgi import ConfigError
from acdg_asgi.testing.agent_file import load_agent_file
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call

pytestmark = pytest.mark.anyio

SCRIPT = """\
api_key = "file-key"
ms_per_word = 30
end_of_turn_ms = 150

[[turns]]
heard = "Where is my order?"
reply = "Let me look that up."
function = "lookup_order"
arguments = {order_id = "A123"}

[[turns]]
heard = "Thanks."
reply = "Goodbye!"
"""


@asynccontextmanager
async def acdg_agent(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[str]:
    """``acdg agent ARGS --port 0`` until the block ends; yields the URL it printed."""
    command = [sys.executable, "-m", "acdg_asgi.cli", "agent", "--port", "0", *args]
    process: Process = await anyio.open_process(command, env=env)
    async with process:
        try:
            assert process.stdout is not None
            printed = b""
            with anyio.fail_after(15):
                while b"Ctrl-C" not in printed:
                    printed += await process.stdout.receive()
            found = re.search(rb"on (ws://\S+) ", printed)
            assert found is not None, printed
            yield found.group(1).decode()
        finally:
            process.terminate()


def sdk_client(url: str, key: str) -> AsyncDeepgramClient:
    base = url.removesuffix("/v1/agent/converse")
    env = DeepgramClientEnvironment(base="http://127.0.0.1:9", production=base, agent=base,
                                    agent_rest="http://127.0.0.1:9")
    return AsyncDeepgramClient(api_key=key, environment=env)


async def test_the_official_sdk_follows_a_scripted_conversation(tmp_path: Path) -> None:
    script = tmp_path / "agent.toml"
    script.write_text(SCRIPT)
    async with acdg_agent("--script", str(script)) as url:
        async with sdk_client(url, "file-key").agent.v1.connect() as socket:
            got: list[object] = []

            async def until(kind: type) -> object:
                with anyio.fail_after(5):
                    while not isinstance(message := await socket.recv(), kind):
                        got.append(message)
                    return message

            await until(sdk.AgentV1Welcome)
            await socket.send_settings(sdk_settings())
            await until(sdk.AgentV1SettingsApplied)
            await until(sdk.AgentV1AgentAudioDone)  # the greeting
            for frame in utterance():
                await socket.send_media(frame)
            request = await until(sdk.AgentV1FunctionCallRequest)
            assert isinstance(request, sdk.AgentV1FunctionCallRequest)
            call = request.functions[0]
            assert (call.name, json.loads(call.arguments)) == ("lookup_order", {"order_id": "A123"})
            await socket.send_function_call_response(
                sdk.AgentV1SendFunctionCallResponse(id=call.id, name=call.name, content="shipped"))
            reply = await until(sdk.AgentV1ConversationText)
            assert isinstance(reply, sdk.AgentV1ConversationText)
            assert (reply.role, reply.content) == ("assistant", "Let me look that up. (shipped)")

        with pytest.raises(Exception, match="401"):  # the file's key is enforced
            async with sdk_client(url, "wrong-key").agent.v1.connect():
                pass


async def test_an_example_app_finds_it_through_deepgram_url() -> None:
    build_app = load_example("starlette_app").build_app

    async with acdg_agent("--path", "/agent", "--api-key", "k") as url:
        assert url.endswith("/agent")
        with pytest.MonkeyPatch.context() as env:
            env.setenv("DEEPGRAM_URL", url)
            env.setenv("DEEPGRAM_API_KEY", "k")
            env.delenv("ACDG_TOKEN", raising=False)
            app = build_app()
        async with serve(app, lifespan="on") as host:
            report = await run_call(f"ws://{host}/audiocodes", CallScript(
                wait_for_greeting=True, utterances=(Utterance(speech_ms=400),),
                max_duration_ms=10_000))
    assert report.ok, report.to_json(indent=2)
    assert app.state.bridge.deepgram_url == url
    assert [t.text for t in report.transcripts if t.final] == ["Hi, I'd like to check on my order."]


async def test_a_bad_script_file_is_named_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text('greting = "hi"\n')
    command = [sys.executable, "-m", "acdg_asgi.cli", "agent", "--script", str(bad)]
    done = await anyio.run_process(command, check=False)
    assert done.returncode == 2
    line = done.stderr.decode().strip()
    assert line.startswith(f"acdg agent: error: {bad}: unknown 'greting'; known: api_key, ")
    assert "\n" not in line


def test_a_json_script_with_failures_and_drops(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({
        "drop_after_turns": 1, "fail_settings": ["INVALID_SETTINGS", "no such voice"],
        "turns": [{"reply": "Hi", "arguments": {"a": 1}, "function": "f"}],
    }))
    loaded = load_agent_file(path)
    assert loaded.script.drop_after_turns == 1
    assert loaded.script.fail_settings == ("INVALID_SETTINGS", "no such voice")
    assert loaded.script.turns[0].arguments == '{"a": 1}'
    assert (loaded.api_key, loaded.path) == (None, None)
    path.write_text('{"turns": [{"reply": "Hi", "hread": "x"}]}')
    with pytest.raises(ConfigError, match=r"turns\[0\]: unknown 'hread'"):
        load_agent_file(path)
    path.write_text('{"ms_per_word": 0}')
    with pytest.raises(ConfigError, match="must be positive"):
        load_agent_file(path)
