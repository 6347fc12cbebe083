"""Every message the bridge sends to the agent, checked against deepgram-sdk's own models.

One call exercises every client message the bridge can send: Settings (and Settings with
``agent.context`` after the stand-in drops the connection), KeepAlive, InjectAgentMessage,
InjectUserMessage, UpdatePrompt/Think/Speak/Listen/Think_Live, ForceEndTurn, the custom
think-provider message and FunctionCallResponse. Each raw text frame
the stand-in received is then validated by the SDK's pydantic model for its ``type``, and
must carry no field the model does not know (the SDK models accept extras silently).
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from deepgram.agent.v1.types import (
    AgentV1CustomToThinkProvider,
    AgentV1ForceEndTurn,
    AgentV1InjectAgentMessage,
    AgentV1InjectUserMessage,
    AgentV1KeepAlive,
    AgentV1SendFunctionCallResponse,
    AgentV1Settings,
    AgentV1UpdateListen,
    AgentV1UpdatePrompt,
    AgentV1UpdateSpeak,
    AgentV1UpdateThink,
    AgentV1UpdateThinkLive,
)
from deepgram.agent.v1.types.conversation_history_message import ConversationHistoryMessage
from deepgram.agent.v1.types.function_call_history_message import FunctionCallHistoryMessage
from rig import rig
from vaic_raw import vaic, wait_until

from acdg_asgi import (
    AgentConfig,
    AgentSettings,
    Flags,
    Function,
    Limits,
    ListenSettings,
    Session,
    SpeakSettings,
    ThinkLiveSettings,
    ThinkSettings,
)
from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.testing.agent import AgentScript, Turn

pytestmark = pytest.mark.anyio

SDK_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "Settings": AgentV1Settings,
    "UpdatePrompt": AgentV1UpdatePrompt,
    "UpdateSpeak": AgentV1UpdateSpeak,
    "UpdateThink": AgentV1UpdateThink,
    "UpdateListen": AgentV1UpdateListen,
    "UpdateThink_Live": AgentV1UpdateThinkLive,
    "ForceEndTurn": AgentV1ForceEndTurn,
    "__customToThinkProvider": AgentV1CustomToThinkProvider,
    "InjectAgentMessage": AgentV1InjectAgentMessage,
    "InjectUserMessage": AgentV1InjectUserMessage,
    "FunctionCallResponse": AgentV1SendFunctionCallResponse,
    "KeepAlive": AgentV1KeepAlive,
}

AGENT = AgentConfig(
    agent=AgentSettings(
        listen=ListenSettings(provider={"type": "deepgram", "version": "v1", "model": "nova-3",
                                        "language": "en-US", "smart_format": True}),
        think=ThinkSettings(
            provider={"type": "open_ai", "model": "gpt-4o-mini", "temperature": 0.3},
            prompt="You are a helpful phone agent.",
            functions=(Function(
                name="lookup_order",
                description="Look up an order.",
                parameters={"type": "object", "properties": {"order": {"type": "string"}},
                            "required": ["order"]},
            ),),
        ),
        speak=SpeakSettings(provider={"type": "deepgram", "model": "aura-2-thalia-en"}),
        think_live=ThinkLiveSettings(provider={"type": "deepgram", "version": "v1",
                                               "frustration_max_count": 3}),
        greeting="Hello there",
    ),
    tags=("acdg-test",),
    mip_opt_out=True,
    flags=Flags(history=True),
)

SCRIPT = AgentScript(
    turns=(
        Turn("Your order", heard="where is my order", function="lookup_order",
             arguments='{"order": "A1"}'),
        Turn("Sure thing", heard="unused"),
        Turn("Welcome back", heard="are you there"),
    ),
    ms_per_word=20,
    end_of_turn_ms=200,
)


def extras(model: Any, path: str = "$") -> list[str]:
    """Paths of fields the SDK model accepted without knowing them."""
    found: list[str] = []
    if isinstance(model, pydantic.BaseModel):
        found += [f"{path}.{name}" for name in (model.model_extra or {})]
        for name in type(model).model_fields:
            found += extras(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list | tuple):
        for i, item in enumerate(model):
            found += extras(item, f"{path}[{i}]")
    return found


async def test_every_client_message_validates_against_the_sdk() -> None:
    async with rig(SCRIPT, agent=AGENT, limits=Limits(keepalive_s=0.3)) as r:
        agent, log = r.agent, r.log

        @r.bridge.on("function_call_request")
        async def answer(session: Session, event: Any) -> None:
            for fn in event.functions:
                await session.respond_to_function_call(fn.id, fn.name, {"status": "shipped"})

        async with vaic(r.host) as caller:
            await caller.initiate()
            await caller.start_stream()
            await caller.wait_for("playStream.stop")  # the greeting
            session = r.sessions[0]

            # A caller turn with a client-side function call.
            await caller.speak(voiced_ms=200, silent_ms=300, pace=0.25)
            await caller.wait_for("playStream.stop", count=2)

            # Injections and updates.
            # "queue": the agent may still be finishing its last words (the default
            # behavior would be refused then).
            await session.send_agent_message("Please hold", behavior="queue")
            await caller.wait_for("playStream.stop", count=3)
            await session.send_user_message("I need help")
            await caller.wait_for("playStream.stop", count=4)
            await session.update_prompt("Be brief.")
            await session.update_think({"provider": {"type": "open_ai", "model": "gpt-4o"},
                                        "prompt": "Be brief."})
            await session.update_speak([
                {"provider": {"type": "deepgram", "model": "aura-2-orion-en"}},
                {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
            ])
            await session.update_listen({"provider": {"type": "deepgram", "version": "v1",
                                                      "model": "nova-3", "language": "es"}})
            await session.update_think_live({"provider": {"type": "deepgram", "version": "v1",
                                                          "agent_backchannel_sensitivity": 0.5}})
            await session.force_end_turn()
            await session.send_think_provider_message({"crm": "lookup"})
            for name in ("prompt_updated", "think_updated", "speak_updated", "listen_updated",
                         "think_live_updated", "think_provider_message"):
                await log.wait_for(name)

            # No caller audio for a while: the bridge keeps the agent connection alive.
            first = agent.connections[0]
            await wait_until(lambda: first.text_frames[-2:] == ['{"type":"KeepAlive"}'] * 2,
                             what="two KeepAlives in a row")

            # The agent connection drops; the bridge reconnects with the history.
            await agent.drop_all()
            reconnected = await log.wait_for("agent_reconnected")
            assert reconnected.attempts == 1 and reconnected.gap_ms >= 0
            assert len(agent.connections) == 2
            second = agent.connections[1]

            # The call goes on with the new connection.
            await caller.speak(voiced_ms=200, silent_ms=300, pace=0.25)
            await caller.wait_for("playStream.stop", count=5)
            assert caller.play_streams()[-1].start.msg["altText"] == "Welcome back"
            assert second.audio_bytes > 0
            await caller.end()
            await caller.wait_closed()
        await log.wait_for("session_end")

    # Every client frame on both connections is a valid SDK message with no unknown field.
    seen: list[str] = []
    for record in agent.connections:
        for frame in record.text_frames:
            kind = json.loads(frame)["type"]
            assert kind in SDK_MODELS, f"unexpected client message {frame}"
            parsed = SDK_MODELS[kind].model_validate_json(frame)
            assert extras(parsed) == [], f"{kind} has fields the SDK does not know: {frame}"
            seen.append(kind)
    assert set(seen) == set(SDK_MODELS)
    assert seen.count("Settings") == 2  # one per connection
    assert seen.count("FunctionCallResponse") == 1

    # Settings: integer sample rates on both; the reconnect replays the history, no greeting.
    initial, replay = (json.loads(r.settings_raw or "{}") for r in agent.connections)
    for settings in (initial, replay):
        for side in ("input", "output"):
            assert type(settings["audio"][side]["sample_rate"]) is int
        assert settings["audio"]["input"] == {"encoding": "linear16", "sample_rate": 16000}
    assert initial["agent"]["greeting"] == "Hello there"
    assert "context" not in initial["agent"]
    assert "greeting" not in replay["agent"]
    assert {k: v for k, v in replay.items() if k != "agent"} == {
        k: v for k, v in initial.items() if k != "agent"}
    # The reconnect keeps what changed mid-call: think (which replaced the prompt update
    # before it), speak, listen (merged) and think_live.
    assert replay["agent"]["think"] == {"provider": {"type": "open_ai", "model": "gpt-4o"},
                                        "prompt": "Be brief."}
    assert [s["provider"]["model"] for s in replay["agent"]["speak"]] == [
        "aura-2-orion-en", "aura-2-thalia-en"]
    assert replay["agent"]["listen"]["provider"] == {
        "type": "deepgram", "version": "v1", "model": "nova-3", "language": "es",
        "smart_format": True}
    assert replay["agent"]["think_live"]["provider"]["agent_backchannel_sensitivity"] == 0.5
    assert replay["agent"]["context"]["messages"] == [
        {"type": "History", "role": "assistant", "content": "Hello there"},
        {"type": "History", "role": "user", "content": "where is my order"},
        {"type": "History", "function_calls": [{
            "id": replay["agent"]["context"]["messages"][2]["function_calls"][0]["id"],
            "name": "lookup_order", "client_side": True, "arguments": '{"order": "A1"}',
            "response": '{"status":"shipped"}'}]},
        {"type": "History", "role": "assistant", "content": 'Your order ({"status":"shipped"})'},
        {"type": "History", "role": "assistant", "content": "Please hold"},
        {"type": "History", "role": "user", "content": "I need help"},
        {"type": "History", "role": "assistant", "content": "Sure thing"},
    ]
    sdk_replay = AgentV1Settings.model_validate_json(agent.connections[1].settings_raw or "")
    assert not isinstance(sdk_replay.agent, str)
    messages = sdk_replay.agent.context.messages if sdk_replay.agent.context else None
    assert messages is not None
    assert [type(m) for m in messages] == [
        ConversationHistoryMessage, ConversationHistoryMessage, FunctionCallHistoryMessage,
        ConversationHistoryMessage, ConversationHistoryMessage, ConversationHistoryMessage,
        ConversationHistoryMessage]

    # The function call was answered with the request's id, on the first connection.
    (request,) = log.of("function_call_request")
    (response,) = [json.loads(f) for f in agent.connections[0].text_frames
                   if '"FunctionCallResponse"' in f]
    assert response == {"type": "FunctionCallResponse", "id": request.functions[0].id,
                        "name": "lookup_order", "content": '{"status":"shipped"}'}
    assert [e.code for e in log.of("error")] == []


def test_function_arguments_decoded() -> None:
    """``FunctionCall.arguments`` is JSON text, as Deepgram sends it; ``args`` decodes it."""
    call = dg.FunctionCall(id="1", name="lookup_order", arguments='{"order_id": "A1"}')
    assert call.args == {"order_id": "A1"}
    assert dg.FunctionCall(id="2", name="f", arguments="").args == {}
    with pytest.raises(ValueError, match="arguments of f are not a JSON object"):
        _ = dg.FunctionCall(id="3", name="f", arguments="[1]").args
    with pytest.raises(ValueError, match="arguments of f are not JSON"):
        _ = dg.FunctionCall(id="4", name="f", arguments="{oops").args
