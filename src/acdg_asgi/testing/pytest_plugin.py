"""pytest fixtures for testing an application built on acdg-asgi, over real sockets.

Loaded automatically once acdg-asgi is installed (a ``pytest11`` entry point, ``acdg``);
``-p no:acdg`` turns it off, and ``pytest_plugins = ["acdg_asgi.testing.pytest_plugin"]``
names it where entry points are not loaded. The fixtures are async: mark the tests
``pytest.mark.anyio``. A team's test of its own handlers::

    import pytest
    from acdg_asgi.testing import AgentScript, CallScript, Turn

    from myapp import build_bridge   # a BridgeApp with the handlers under test

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def agent_script() -> AgentScript:            # what the stand-in agent does
        return AgentScript(turns=(Turn("Let me check.", function="lookup_order"),))

    @pytest.fixture
    def bridge(stand_in_agent):                   # the app, pointed at the stand-in
        return build_bridge(deepgram_url=stand_in_agent.url)

    async def test_lookup_order(vaic_call, stand_in_agent) -> None:
        report = await vaic_call(CallScript(wait_for_greeting=True))
        assert report.ok, report.to_json(indent=2)

The fixtures, each of which a test module or conftest.py may override:

``agent_script``, ``agent_api_key``
    what the stand-in agent does, and the key it demands (default: its demo script, none)
``stand_in_agent``
    the stand-in Deepgram agent (:class:`~.agent.StandInAgent`) on a free port
``bridge``
    the :class:`~acdg_asgi.BridgeApp` under test (default: a plain one at the stand-in)
``bridge_app``, ``bridge_path``
    the ASGI app to serve (default: ``bridge``) and the bridge's path in it (``"/"``);
    override both to serve a Starlette / FastAPI app with the bridge at ``/audiocodes``
``bridge_token``
    the bearer token the simulated VAIC sends (default none)
``bridge_url``
    the app served by uvicorn on a free port: ``ws://127.0.0.1:PORT/PATH``
``vaic_call``
    ``await vaic_call(script=None, **run_call_options)``: one call through ``bridge_url``
    by the VAIC simulator, returning its :class:`~.report.CallReport`
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import pytest

from ..app import BridgeApp
from .agent import AgentScript, StandInAgent
from .report import CallReport
from .script import CallScript
from .server import serve
from .vaic import run_call

__all__ = ["VaicCall"]


class VaicCall(Protocol):
    """The ``vaic_call`` fixture: place one call to the served bridge."""

    async def __call__(self, script: CallScript | None = None, **options: Any) -> CallReport: ...


@pytest.fixture
def agent_script() -> AgentScript:
    return AgentScript()


@pytest.fixture
def agent_api_key() -> str | None:
    return None


@pytest.fixture
async def stand_in_agent(
    agent_script: AgentScript, agent_api_key: str | None
) -> AsyncIterator[StandInAgent]:
    async with StandInAgent(script=agent_script, api_key=agent_api_key) as agent:
        yield agent


@pytest.fixture
def bridge(stand_in_agent: StandInAgent, agent_api_key: str | None) -> BridgeApp:
    return BridgeApp(deepgram_url=stand_in_agent.url, deepgram_api_key=agent_api_key or "")


@pytest.fixture
def bridge_app(bridge: BridgeApp) -> Any:
    return bridge


@pytest.fixture
def bridge_path() -> str:
    return "/"


@pytest.fixture
def bridge_token() -> str | None:
    return None


@pytest.fixture
async def bridge_url(bridge_app: Any, bridge_path: str) -> AsyncIterator[str]:
    async with serve(bridge_app, lifespan="auto") as host:
        yield f"ws://{host}/{bridge_path.lstrip('/')}"


@pytest.fixture
def vaic_call(bridge_url: str, bridge_token: str | None) -> VaicCall:
    async def call(script: CallScript | None = None, **options: Any) -> CallReport:
        options.setdefault("token", bridge_token)
        return await run_call(bridge_url, script, **options)

    return call
