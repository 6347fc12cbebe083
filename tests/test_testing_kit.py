"""The testing kit imports and runs as the README shows it."""

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.anyio


async def test_the_readme_imports_and_a_call_on_a_chosen_port() -> None:
    from acdg_asgi import AgentSettings, BridgeApp
    from acdg_asgi.testing import (
        AgentScript,
        CallReport,
        CallScript,
        StandInAgent,
        Turn,
        Utterance,
        run_call,
        run_calls,
        serve,
    )

    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = AgentScript(turns=(Turn("Sure", heard="help"),), ms_per_word=40)
    async with StandInAgent(script=script) as agent:
        bridge = BridgeApp(deepgram_url=agent.url, agent=AgentSettings(greeting="Hi"))
        async with serve(bridge, port=port) as host:
            assert host == f"127.0.0.1:{port}"
            call = CallScript(wait_for_greeting=True, utterances=(Utterance(speech_ms=300),))
            one = await run_call(f"ws://{host}/", call)
            two = await run_calls(f"ws://{host}/", [call, call], concurrency=2)
            with pytest.raises(OSError, match=f"could not serve on 127.0.0.1:{port}"):
                async with serve(bridge, port=port):
                    pass  # the port is taken by the first
    assert isinstance(one, CallReport) and one.ok, one.to_json(indent=2)
    assert all(r.ok for r in two)
    assert agent.connections[0].history[-1].content == "Sure"


def test_the_pytest_plugin_is_registered_under_its_name(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("acdg")
    assert plugin is not None and plugin.__name__ == "acdg_asgi.testing.pytest_plugin"
