"""Testing your own handlers with pytest: examples/starlette_app.py's ``lookup_order``.

    pytest examples/test_my_handlers.py

The fixtures come from acdg-asgi's pytest plugin, loaded with the package: the stand-in
Deepgram agent (``stand_in_agent``, following ``agent_script``), your app served by
uvicorn on a free port (``bridge_app`` at ``bridge_path``), and ``vaic_call``, which
places a call as VoiceAI Connect would and returns what it saw. Everything runs on
loopback with real sockets; no key, no network.
"""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette_app import build_app  # pytest puts examples/ on sys.path for this file

from acdg_asgi.protocols.deepgram import FunctionCallResponse
from acdg_asgi.testing import AgentScript, CallScript, StandInAgent, Turn, Utterance
from acdg_asgi.testing.pytest_plugin import VaicCall

pytestmark = pytest.mark.anyio

TOKEN = "test-token"


@pytest.fixture
def agent_script() -> AgentScript:
    """The agent asks the app to look the order up, then reads out what the app said."""
    return AgentScript(turns=(
        Turn("Let me check.", heard="Where is order A123?", function="lookup_order",
             arguments='{"order": "A123"}'),
    ))


@pytest.fixture
def bridge_app(stand_in_agent: StandInAgent) -> Starlette:
    return build_app(stand_in_agent.url, auth=TOKEN)


@pytest.fixture
def bridge_path() -> str:
    return "/audiocodes"


@pytest.fixture
def bridge_token() -> str:
    return TOKEN


async def test_lookup_order_answers_the_agent(
    vaic_call: VaicCall, stand_in_agent: StandInAgent
) -> None:
    report = await vaic_call(CallScript(wait_for_greeting=True, utterances=(Utterance(),)))

    assert report.ok, report.to_json(indent=2)
    [connection] = stand_in_agent.connections
    answers = [m for m in connection.messages if isinstance(m, FunctionCallResponse)]
    assert [(a.name, json.loads(a.content)) for a in answers] == [
        ("lookup_order", {"status": "shipped"})
    ]
    said = [s.alt_text for s in report.play_streams]  # what the caller heard, as text
    assert said[-1] == 'Let me check. ({"status":"shipped"})'


async def test_a_call_without_the_token_is_refused(vaic_call: VaicCall) -> None:
    report = await vaic_call(token=None)
    assert report.connect_error == "HTTP 401"
