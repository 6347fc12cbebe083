"""Configuration is checked where it is given: misspelt keys name the nearest known one
in every form (dict, TOML, keywords), wrong values are refused at construction, a
partial TOML ``[agent]`` keeps the defaults, and ``acdg serve`` answers a bad file with
one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rig import standin
from vaic_raw import vaic

from acdg_asgi import (
    AgentSettings,
    BridgeApp,
    CallInfo,
    ConfigError,
    Limits,
    Playout,
    Reconnect,
    ThinkSettings,
)
from acdg_asgi.cli.settings import DEFAULT_AGENT, load_settings
from acdg_asgi.config import AgentConfig, as_agent_config
from acdg_asgi.testing.server import serve

pytestmark = pytest.mark.anyio

URL = "ws://127.0.0.1:9/v1/agent/converse"  # never dialled by these tests


@pytest.mark.parametrize(("config", "expected"), [
    ({"greting": "hi"}, """unknown key 'agent.greting' (did you mean "greeting"?)"""),
    ({"thinks": {"provider": {}}}, """unknown key 'agent.thinks' (did you mean "think"?)"""),
    ({"think": {"provider": {}, "promt": "x"}},
     """unknown key 'agent.think.promt' (did you mean "prompt"?)"""),
    ({"think": [{"provider": {}}, {"provider": {}, "promt": "x"}]},
     """unknown key 'agent.think[1].promt' (did you mean "prompt"?)"""),
    ({"agent": {"greeting": "hi"}, "tag": ["a"]}, """unknown key 'tag' (did you mean "tags"?)"""),
    ({"think": {"provider": {}, "functions": [{"name": "f", "paramters": {}}]}},
     """unknown key 'agent.think.functions[0].paramters' (did you mean "parameters"?)"""),
])
def test_a_misspelt_key_in_a_dict_config_names_the_nearest(
    config: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        BridgeApp(agent=config, deepgram_url=URL)
    assert expected in str(refused.value)


def test_provider_dicts_are_free_form_and_a_good_dict_is_taken_whole() -> None:
    config = as_agent_config({"think": {"provider": {"type": "open_ai", "anything": 1},
                                        "prompt": "Be brief."}, "greeting": "Hello"})
    assert config.agent.think == ThinkSettings(provider={"type": "open_ai", "anything": 1},
                                               prompt="Be brief.")


def test_a_misspelt_keyword_names_the_nearest() -> None:
    with pytest.raises(TypeError, match='unknown keyword \'greting\' \\(did you mean "greeting"'):
        AgentSettings(greting="hi")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match='\'max_cals\' \\(did you mean "max_calls"'):
        Limits(max_cals=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match='\'lead\' \\(did you mean "lead_ms"'):
        Playout(lead=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match='\'direct_pth\' \\(did you mean "direct_path"'):
        BridgeApp(direct_pth=False)  # type: ignore[call-arg]


@pytest.mark.parametrize(("make", "expected"), [
    (lambda: Limits(max_calls=-1), "max_calls must be 1 or more, or None for no limit"),
    (lambda: Limits(max_calls="10"), "Limits(max_calls='10'): Expected `int | null`, got `str`"),
    (lambda: Limits(keepalive_s=0), "keepalive_s must be more than 0"),
    (lambda: Playout(lead_ms=-5), "Playout(lead_ms=-5): lead_ms must be 0 or more"),
    (lambda: Playout(chunk_ms=20, max_buffer_ms=10), "max_buffer_ms must be at least chunk_ms"),
    (lambda: Reconnect(attempts=True), "Reconnect(attempts=True): Expected `int`, got `bool`"),
    (lambda: AgentConfig(agent={"greeting": "x"}), "expected AgentSettings, got dict"),
    (lambda: BridgeApp(deepgram_url="http://agent.example.com/v1/agent/converse"),
     "deepgram_url must be a ws:// or wss:// URL"),
    (lambda: BridgeApp(deepgram_url="wss:///v1/agent/converse"),
     "deepgram_url must be a ws:// or wss:// URL"),
    (lambda: BridgeApp(deepgram_url=URL, limits={"max_calls": 3}), "limits must be Limits(...)"),
    (lambda: BridgeApp(deepgram_url=URL, lease_ttl_s=0), "lease_ttl_s must be a number"),
    (lambda: BridgeApp(deepgram_url=URL, store="localhost:6379"),
     "store= must be a Redis URL such as redis://localhost:6379/0"),
    (lambda: BridgeApp(deepgram_url=URL, agent=lambda: None), "must take one argument"),
    (lambda: BridgeApp(deepgram_url=URL, connector=object()), "connector must have"),
])
def test_wrong_values_are_refused_at_construction(make: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as refused:
        make()
    assert expected in str(refused.value)


def test_a_redis_url_in_the_environment_is_named_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACDG_REDIS_URL", "user:secret@localhost:6379")
    with pytest.raises(ConfigError) as refused:
        BridgeApp(deepgram_url=URL)
    assert "ACDG_REDIS_URL must be a Redis URL" in str(refused.value)
    assert "secret" not in str(refused.value)


def test_one_media_format_may_be_a_bare_string() -> None:
    assert BridgeApp(deepgram_url=URL, media_formats="raw/mulaw").media_formats == ("raw/mulaw",)
    with pytest.raises(ConfigError, match=r"unsupported media formats \['raw/lpcm61'\]"):
        BridgeApp(deepgram_url=URL, media_formats="raw/lpcm61")


async def test_a_plain_function_works_as_agent_factory() -> None:
    def pick(info: CallInfo) -> AgentSettings:
        return AgentSettings(greeting=f"Hello {info.initiate.caller}")

    async with standin() as agent:
        bridge = BridgeApp(agent=pick, deepgram_url=agent.url)
        async with serve(bridge) as host, vaic(host) as caller:
            await caller.initiate()
            await agent.wait_for_connections(1)
            start = await caller.wait_for("playStream.start")
            await caller.end()
    assert start.msg["altText"] == "Hello +15551230000"


# --- TOML ----------------------------------------------------------------------------------


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "acdg.toml"
    path.write_text(text)
    return path


def test_misspelt_toml_keys_name_the_nearest(tmp_path: Path) -> None:
    path = toml(tmp_path, '[server]\nprot = 9000\n[limits]\nmax_cals = 3\n'
                          '[agent]\ngreting = "hi"\n[agent.think]\npromt = "x"\n')
    with pytest.raises(ConfigError) as refused:
        load_settings(path, {})
    text = str(refused.value)
    for expected in ("""'server.prot' (did you mean "port"?)""",
                     """'limits.max_cals' (did you mean "max_calls"?)""",
                     """'agent.greting' (did you mean "greeting"?)""",
                     """'agent.think.promt' (did you mean "prompt"?)"""):
        assert expected in text


def test_a_partial_toml_agent_keeps_the_defaults(tmp_path: Path) -> None:
    path = toml(tmp_path, '[agent]\ngreeting = "Thanks for calling Acme"\n'
                          '[agent.think]\nprompt = "You answer for Acme."\n'
                          '[agent.speak.provider]\ntype = "eleven_labs"\nmodel_id = "turbo"\n')
    agent = load_settings(path, {}).agent
    assert agent.greeting == "Thanks for calling Acme"
    assert agent.listen == DEFAULT_AGENT.listen
    assert isinstance(agent.think, ThinkSettings) and isinstance(DEFAULT_AGENT.think,
                                                                 ThinkSettings)
    assert agent.think.provider == DEFAULT_AGENT.think.provider
    assert agent.think.prompt == "You answer for Acme."
    # a provider given replaces the default's whole: no "model" left over from it
    assert agent.speak is not None and not isinstance(agent.speak, tuple)
    assert agent.speak.provider == {"type": "eleven_labs", "model_id": "turbo"}


def test_a_bad_toml_value_is_refused_with_its_place(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"acdg\.toml \[limits\]: .*max_calls must be 1 or more"):
        load_settings(toml(tmp_path, "[limits]\nmax_calls = -1\n"), {})


def test_acdg_serve_answers_a_bad_file_with_one_line(tmp_path: Path) -> None:
    path = toml(tmp_path, '[agent]\ngreting = "hi"\n')
    done = subprocess.run([sys.executable, "-m", "acdg_asgi.cli", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"""acdg serve: error: {path}: unknown key 'agent.greting' (did you mean "greeting"?)"""]
