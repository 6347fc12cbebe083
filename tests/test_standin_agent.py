"""The stand-in Deepgram Voice Agent, checked against the official SDK and the protocol doc."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pydantic
import pytest
from deepgram import AsyncDeepgramClient
from deepgram.agent.v1 import types as sdk
from deepgram.agent.v1.socket_client import _sanitize_numeric_types
from deepgram.environment import DeepgramClientEnvironment
from deepgram.types.speak_settings_v1 import SpeakSettingsV1
from deepgram.types.speak_settings_v1provider import SpeakSettingsV1Provider_Deepgram
from deepgram.types.think_settings_v1 import ThinkSettingsV1
from deepgram.types.think_settings_v1functions_item import ThinkSettingsV1FunctionsItem
from deepgram.types.think_settings_v1provider import ThinkSettingsV1Provider_OpenAi
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from acdg_asgi.protocols import deepgram as dg
from acdg_asgi.testing import signals
from acdg_asgi.testing._agent_turns import (
    answered_turns,
    audio_problem,
    media_format,
    speech,
    with_defaults,
)
from acdg_asgi.testing.agent import AUDIO, AgentScript, StandInAgent, Turn

KEY = "test-key-123"
L16 = media_format("linear16", 16000)
FAST = AgentScript(ms_per_word=20, end_of_turn_ms=100)
M = TypeVar("M")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


pytestmark = pytest.mark.anyio


# --- helpers -------------------------------------------------------------------------------


L16_AUDIO = dg.AudioSettings(
    input=dg.AudioInput(encoding="linear16", sample_rate=16000),
    output=dg.AudioOutput(encoding="linear16", sample_rate=16000, container="none"),
)


def settings(**agent: Any) -> dg.Settings:
    return dg.Settings(audio=L16_AUDIO, agent=dg.AgentSettings(**agent), tags=("test",))


def utterance(speech_ms: int = 200, pause_ms: int = 200) -> list[bytes]:
    """Caller frames: a 440 Hz "utterance", then silence."""
    return [signals.tone(L16, 20)] * (speech_ms // 20) + [signals.silence(L16, 20)] * (
        pause_ms // 20
    )


class Peer:
    """A raw WebSocket client that keeps every frame the stand-in sent."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[str | bytes] = []  # every frame, in order
        self.messages: list[dg.ServerMessage] = []

    async def next(self) -> dg.ServerMessage | bytes:
        frame = await self.ws.recv()
        self.frames.append(frame)
        if isinstance(frame, bytes):
            return frame
        message = dg.decode_server(frame)
        assert not isinstance(message, dg.UnknownMessage), frame
        self.messages.append(message)
        return message

    async def until(self, kind: type[M], limit: float = 5.0) -> M:
        with anyio.fail_after(limit):
            while True:
                message = await self.next()
                if isinstance(message, kind):
                    return message

    async def send(self, message: dg.ClientMessage) -> None:
        await self.ws.send(dg.encode(message), text=True)

    async def talk(self, frames: list[bytes]) -> None:
        for frame in frames:
            await self.ws.send(frame)

    async def closed(self, limit: float = 5.0) -> ConnectionClosed:
        with anyio.fail_after(limit):
            try:
                while True:
                    await self.next()
            except ConnectionClosed as exc:
                return exc

    def types(self) -> list[str]:
        return [AUDIO if isinstance(f, bytes) else json.loads(f)["type"] for f in self.frames]


@asynccontextmanager
async def peer(agent: StandInAgent, **kwargs: Any) -> AsyncIterator[Peer]:
    async with connect(agent.url, **kwargs) as ws:
        yield Peer(ws)


async def ready(p: Peer, message: dg.Settings | None = None) -> None:
    await p.until(dg.Welcome)
    await p.send(message or settings())
    await p.until(dg.SettingsApplied)


# --- 1. the official SDK talks to the stand-in ---------------------------------------------

# Wire type -> the SDK model that must parse it.
SDK_SERVER: dict[str, type[pydantic.BaseModel]] = {
    "Welcome": sdk.AgentV1Welcome,
    "SettingsApplied": sdk.AgentV1SettingsApplied,
    "ConversationText": sdk.AgentV1ConversationText,
    "UserStartedSpeaking": sdk.AgentV1UserStartedSpeaking,
    "AgentThinking": sdk.AgentV1AgentThinking,
    "FunctionCallRequest": sdk.AgentV1FunctionCallRequest,
    "AgentStartedSpeaking": sdk.AgentV1AgentStartedSpeaking,
    "AgentAudioDone": sdk.AgentV1AgentAudioDone,
    "LatencyReport": sdk.AgentV1LatencyReport,
    "PromptUpdated": sdk.AgentV1PromptUpdated,
    "ThinkUpdated": sdk.AgentV1ThinkUpdated,
    "SpeakUpdated": sdk.AgentV1SpeakUpdated,
    "ListenUpdated": sdk.AgentV1ListenUpdated,
    "ThinkLiveUpdated": sdk.AgentV1ThinkLiveUpdated,
    "FrustrationDetected": sdk.AgentV1FrustrationDetected,
    "__customFromThinkProvider": sdk.AgentV1CustomFromThinkProvider,
    "InjectionRefused": sdk.AgentV1InjectionRefused,
    "History": sdk.ConversationHistoryMessage,  # or FunctionCallHistoryMessage, see below
    "Warning": sdk.AgentV1Warning,
    "Error": sdk.AgentV1Error,
}


def sdk_validate(frame: str) -> pydantic.BaseModel:
    """Validate one server frame strictly against the SDK's model for its type."""
    fields = json.loads(frame)
    model = SDK_SERVER[fields["type"]]
    if "function_calls" in fields:
        model = sdk.FunctionCallHistoryMessage
    return model.model_validate_json(frame)


def sdk_settings() -> sdk.AgentV1Settings:
    return sdk.AgentV1Settings(
        audio=sdk.AgentV1SettingsAudio(
            input=sdk.AgentV1SettingsAudioInput(encoding="linear16", sample_rate=16000),
            output=sdk.AgentV1SettingsAudioOutput(
                encoding="linear16", sample_rate=16000, container="none"
            ),
        ),
        agent=sdk.AgentV1SettingsAgent(
            listen=sdk.AgentV1SettingsAgentContextListen(
                provider=sdk.AgentV1SettingsAgentContextListenProvider_V1(model="nova-3")
            ),
            think=ThinkSettingsV1(
                provider=ThinkSettingsV1Provider_OpenAi(model="gpt-4o-mini"),
                prompt="You help callers track orders.",
                functions=[
                    ThinkSettingsV1FunctionsItem(
                        name="lookup_order",
                        description="Find an order",
                        parameters={
                            "type": "object",
                            "properties": {"order_id": {"type": "string"}},
                        },
                    )
                ],
            ),
            speak=SpeakSettingsV1(
                provider=SpeakSettingsV1Provider_Deepgram(model="aura-2-thalia-en")
            ),
            greeting="Hello! How can I help?",
        ),
    )


async def test_official_sdk_holds_a_conversation() -> None:
    script = AgentScript(
        turns=(
            Turn(
                "Your order has shipped.",
                heard="Where is my order?",
                function="lookup_order",
                arguments='{"order_id": "A1"}',
            ),
            Turn("Glad to help. " + " ".join(["More"] * 20), heard="Thanks."),
        ),
        ms_per_word=20,
        end_of_turn_ms=100,
    )
    async with StandInAgent(script=script, api_key=KEY) as agent:
        env = DeepgramClientEnvironment(
            base="http://127.0.0.1:9",
            production=agent.base_url,
            agent=agent.base_url,
            agent_rest="http://127.0.0.1:9",
        )
        client = AsyncDeepgramClient(api_key=KEY, environment=env)
        got: list[Any] = []

        async with client.agent.v1.connect() as socket:

            async def until(kind: type[M]) -> M:
                with anyio.fail_after(5):
                    while True:
                        message = await socket.recv()
                        got.append(message)
                        if isinstance(message, kind):
                            return message

            await until(sdk.AgentV1Welcome)
            await socket.send_settings(sdk_settings())
            await until(sdk.AgentV1SettingsApplied)
            await until(sdk.AgentV1AgentAudioDone)  # the greeting

            for frame in utterance():
                await socket.send_media(frame)
            request = await until(sdk.AgentV1FunctionCallRequest)
            call = request.functions[0]
            assert (call.name, call.arguments, call.client_side) == (
                "lookup_order",
                '{"order_id": "A1"}',
                True,
            )
            await socket.send_function_call_response(
                sdk.AgentV1SendFunctionCallResponse(id=call.id, name=call.name, content="shipped")
            )
            reply = await until(sdk.AgentV1ConversationText)
            assert (reply.role, reply.content) == ("assistant", "Your order has shipped. (shipped)")
            await until(sdk.AgentV1AgentAudioDone)

            await socket.send_update_prompt(sdk.AgentV1UpdatePrompt(prompt="Be brief."))
            await until(sdk.AgentV1PromptUpdated)
            await socket.send_update_think(
                sdk.AgentV1UpdateThink(
                    think=ThinkSettingsV1(provider=ThinkSettingsV1Provider_OpenAi(model="gpt-4o"))
                )
            )
            await until(sdk.AgentV1ThinkUpdated)
            await socket.send_update_speak(
                sdk.AgentV1UpdateSpeak(
                    speak=SpeakSettingsV1(
                        provider=SpeakSettingsV1Provider_Deepgram(model="aura-2-apollo-en")
                    )
                )
            )
            await until(sdk.AgentV1SpeakUpdated)
            await socket.send_update_listen(
                sdk.AgentV1UpdateListen(
                    listen=sdk.AgentV1UpdateListenListen(
                        provider=sdk.AgentV1UpdateListenListenProvider_V1(model="nova-3")
                    )
                )
            )
            await until(sdk.AgentV1ListenUpdated)
            await socket.send_keep_alive()
            await socket.send_inject_user_message(sdk.AgentV1InjectUserMessage(content="Thanks."))
            heard = await until(sdk.AgentV1ConversationText)
            assert (heard.role, heard.content) == ("user", "Thanks.")
            await until(sdk.AgentV1AgentStartedSpeaking)
            await socket.send_inject_agent_message(sdk.AgentV1InjectAgentMessage(message="Hey"))
            await until(sdk.AgentV1InjectionRefused)
            warning = await until(sdk.AgentV1Warning)
            assert warning.code == "INJECT_AGENT_MESSAGE_DURING_AGENT_SPEECH"
            await until(sdk.AgentV1AgentAudioDone)
            await socket.send_inject_agent_message(
                sdk.AgentV1InjectAgentMessage(message="Anything else?", behavior="queue")
            )
            said = await until(sdk.AgentV1ConversationText)
            assert (said.role, said.content) == ("assistant", "Anything else?")
            await until(sdk.AgentV1AgentAudioDone)

        record = agent.connections[0]

    assert not [m for m in got if isinstance(m, dict)], "the SDK could not parse some messages"
    for message in got:
        if not isinstance(message, bytes):  # construct_type does not validate: do it here
            type(message).model_validate(message.model_dump())
    names = [AUDIO if isinstance(m, bytes) else m.type for m in got]
    assert names == record.sent_types[: len(names)]
    assert_in_order(
        names,
        "Welcome SettingsApplied ConversationText History AgentStartedSpeaking <audio>",
        "AgentAudioDone UserStartedSpeaking ConversationText History AgentThinking",
        "FunctionCallRequest History ConversationText History AgentStartedSpeaking <audio>",
        "AgentAudioDone LatencyReport PromptUpdated ThinkUpdated SpeakUpdated ListenUpdated",
        "ConversationText AgentStartedSpeaking InjectionRefused Warning AgentAudioDone",
        "ConversationText AgentAudioDone",
    )
    greeting = got[2]
    assert isinstance(greeting, sdk.AgentV1ConversationText)
    assert (greeting.role, greeting.content) == ("assistant", "Hello! How can I help?")
    assert sum(len(m) for m in got if isinstance(m, bytes)) == record.sent_audio_bytes > 0
    # What the SDK sent decodes with our structs.
    assert isinstance(record.settings, dg.Settings)
    assert record.settings.agent.greeting == "Hello! How can I help?"
    assert [dg.decode_client(f) for f in record.text_frames] == record.messages


def assert_in_order(names: list[str], *expected: str) -> None:
    """``expected`` (space-separated types) appears in ``names`` as a subsequence."""
    rest = iter(names)
    for wanted in " ".join(expected).split():
        assert any(name == wanted for name in rest), f"{wanted} missing or out of order"


# --- 2. protocol errors --------------------------------------------------------------------

FLOAT_RATE = dg.encode(settings()).decode().replace('"sample_rate":16000', '"sample_rate":16000.0')
MULAW_24K = dg.Settings(
    audio=dg.AudioSettings(
        input=dg.AudioInput(encoding="mulaw", sample_rate=8000),
        output=dg.AudioOutput(encoding="mulaw", sample_rate=24000, container="none"),
    ),
    agent=dg.AgentSettings(),
)
SETTINGS = dg.encode(settings()).decode()


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (['{"type":"KeepAlive"}'], "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS"),
        ([signals.silence(L16, 20)], "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS"),
        ([SETTINGS, SETTINGS], "SETTINGS_ALREADY_APPLIED"),
        (["{not json"], "UNPARSABLE_CLIENT_MESSAGE"),
        (['{"type":"NoSuchMessage"}'], "UNPARSABLE_CLIENT_MESSAGE"),
        ([SETTINGS.replace('"tags":["test"]', '"tags":"test"')], "UNPARSABLE_CLIENT_MESSAGE"),
        ([FLOAT_RATE], "UNPARSABLE_CLIENT_MESSAGE"),
        ([dg.encode(MULAW_24K).decode()], "INVALID_SETTINGS"),
        ([SETTINGS.replace("linear16", "opus")], "INVALID_SETTINGS"),
    ],
    ids=[
        "text-first",
        "audio-first",
        "settings-twice",
        "bad-json",
        "unknown-type",
        "wrong-field-type",
        "float-sample-rate",
        "mulaw-24k",
        "opus-none",
    ],
)
async def test_protocol_errors(frames: list[str | bytes], code: str) -> None:
    async with StandInAgent(script=FAST) as agent, peer(agent) as p:
        await p.until(dg.Welcome)
        for frame in frames:
            await p.ws.send(frame)
        error = await p.until(dg.Error)
        assert error.code == code and error.description
        closed = await p.closed()
        assert closed.rcvd is not None and closed.rcvd.code == 1011
        await agent.connections[0].closed.wait()
        assert agent.connections[0].close_reason == code


async def test_fail_settings_answers_with_the_scripted_error() -> None:
    script = AgentScript(fail_settings=("INVALID_AGENT_ID", "no such agent"))
    async with StandInAgent(script=script) as agent, peer(agent) as p:
        await p.until(dg.Welcome)
        await p.send(settings())
        error = await p.until(dg.Error)
        assert (error.code, error.description) == ("INVALID_AGENT_ID", "no such agent")
        await p.closed()
        assert "SettingsApplied" not in p.types()


@pytest.mark.parametrize(
    "auth",
    [
        {"additional_headers": {"Authorization": f"Token {KEY}"}},
        {"additional_headers": {"Authorization": f"bearer {KEY}"}},
        {"subprotocols": ["token", KEY]},
        {"subprotocols": ["bearer", KEY]},
    ],
    ids=["token-header", "bearer-header", "token-subprotocol", "bearer-subprotocol"],
)
async def test_accepted_credentials(auth: dict[str, Any]) -> None:
    async with StandInAgent(api_key=KEY) as agent, peer(agent, **auth) as p:
        await p.until(dg.Welcome)
        offered = auth.get("subprotocols")
        assert p.ws.subprotocol == (offered[0] if offered else None)


@pytest.mark.parametrize(
    ("path", "auth", "status"),
    [
        ("/v1/agent/converse", {"additional_headers": {"Authorization": "Token wrong"}}, 401),
        ("/v1/agent/converse", {"subprotocols": ["token", "wrong"]}, 401),
        ("/v1/agent/converse", {}, 401),
        ("/v1/listen", {"additional_headers": {"Authorization": f"Token {KEY}"}}, 404),
        ("/agent", {"additional_headers": {"Authorization": f"Token {KEY}"}}, 404),
    ],
    ids=["wrong-key", "wrong-subprotocol-key", "no-key", "wrong-path", "pre-v1-path"],
)
async def test_refused_upgrades(path: str, auth: dict[str, Any], status: int) -> None:
    async with StandInAgent(api_key=KEY) as agent:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(agent.base_url + path, **auth):
                pass
        assert refused.value.response.status_code == status
        assert agent.connections == []


# --- 3. barge-in, drops, timeouts, refusals ------------------------------------------------

LONG_REPLY = " ".join(["word"] * 100)  # 10 s of audio at 100 ms a word


@pytest.mark.parametrize("realtime", [False, True], ids=["burst", "realtime"])
async def test_caller_barges_in(realtime: bool) -> None:
    script = AgentScript(
        turns=(Turn(LONG_REPLY), Turn("Sorry, go on.")),
        ms_per_word=100,
        end_of_turn_ms=100,
        realtime=realtime,
    )
    async with StandInAgent(script=script) as agent, peer(agent) as p:
        await ready(p)
        await p.talk(utterance())
        await p.until(dg.AgentStartedSpeaking)
        await p.until(bytes)
        await p.talk(utterance())  # talk over the agent
        await p.until(dg.UserStartedSpeaking)
        heard = await p.until(dg.ConversationText)
        assert heard.role == "user"
        reply = await p.until(dg.ConversationText)
        assert reply.content == "Sorry, go on."
        await p.until(dg.AgentAudioDone)
        record = agent.connections[0]

    full = sum(len(f) for g in speech(LONG_REPLY, L16, script) for f in g)
    first_turn = p.frames[: p.frames.index(next(f for f in p.frames if "Sorry" in str(f)))]
    cut_audio = sum(len(f) for f in first_turn if isinstance(f, bytes))
    assert 0 < cut_audio < full / 2
    assert record.barge_ins == 1
    assert p.types().count("AgentAudioDone") == 1  # only the uninterrupted reply


async def test_drop_after_turns_then_reconnect_with_context() -> None:
    script = AgentScript(
        turns=(Turn("First answer.", heard="one"), Turn("Second answer.", heard="two")),
        ms_per_word=20,
        end_of_turn_ms=100,
        drop_after_turns=1,
    )
    async with StandInAgent(script=script) as agent:
        async with peer(agent) as p:
            await ready(p, settings(greeting="Hi."))
            await p.talk(utterance())
            closed = await p.closed()
        assert isinstance(closed, ConnectionClosedError) and closed.rcvd is None
        assert agent.connections[0].close_reason == "dropped"
        history = tuple(m for m in p.messages if isinstance(m, dg.History))
        assert [(h.role, h.content) for h in history] == [
            ("assistant", "Hi."),
            ("user", "one"),
            ("assistant", "First answer."),
        ]

        async with peer(agent) as p:
            await ready(p, settings(context=dg.Context(messages=history)))
            await p.talk(utterance())
            heard = await p.until(dg.ConversationText)
            reply = await p.until(dg.ConversationText)
            assert (heard.content, reply.content) == ("two", "Second answer.")
            await p.until(dg.LatencyReport)
            await p.send(dg.KeepAlive())
            await p.ws.ping()  # still open: turn 2 is past drop_after_turns
        assert agent.connections[1].history[:3] == list(history)


async def test_idle_timeout_and_keep_alive() -> None:
    async with StandInAgent(script=AgentScript(idle_timeout=0.3)) as agent, peer(agent) as p:
        await ready(p)
        for _ in range(8):  # 0.8 s, well past the timeout
            await anyio.sleep(0.1)
            await p.send(dg.KeepAlive())
        assert "Error" not in p.types()
        error = await p.until(dg.Error)
        assert error.code == "CLIENT_MESSAGE_TIMEOUT"
        await p.closed()


async def test_idle_timeout_before_settings() -> None:
    async with StandInAgent(script=AgentScript(idle_timeout=0.2)) as agent, peer(agent) as p:
        error = await p.until(dg.Error)
        assert error.code == "CLIENT_MESSAGE_TIMEOUT"
        assert p.types() == ["Welcome", "Error"]


async def test_refuse_next_and_drop_all() -> None:
    async with StandInAgent() as agent:
        agent.refuse_next(2, status=503)
        for _ in range(2):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(agent.url):
                    pass
            assert refused.value.response.status_code == 503
        async with peer(agent) as a, peer(agent) as b:
            await agent.wait_for_connections(2)
            await a.until(dg.Welcome)
            await b.until(dg.Welcome)
            await agent.drop_all()
            for p in (a, b):
                closed = await p.closed()
                assert isinstance(closed, ConnectionClosedError)
        assert agent.refused == 2
        assert [c.close_reason for c in agent.connections] == ["dropped", "dropped"]


async def test_echo_mode_returns_caller_audio() -> None:
    frames = [bytes([i]) * 640 for i in range(50)]
    async with StandInAgent(script=AgentScript(echo=True)) as agent, peer(agent) as p:
        await ready(p, settings(greeting="not spoken in echo mode"))
        await p.talk(frames)
        echoed = [await p.until(bytes) for _ in frames]
        await p.send(dg.UpdatePrompt(prompt="x"))
        await p.until(dg.PromptUpdated)
    assert echoed == frames
    assert "ConversationText" not in p.types()
    assert agent.connections[0].audio_frames == 50


async def test_speech_that_stops_without_silence_still_ends_the_turn() -> None:
    async with StandInAgent(script=FAST) as agent, peer(agent) as p:
        await ready(p)
        await p.talk(utterance(pause_ms=0))
        heard = await p.until(dg.ConversationText)
        assert (heard.role, heard.content) == ("user", FAST.turns[0].heard)


@pytest.mark.parametrize(
    ("encoding", "rate", "container", "ok"),
    [
        ("linear16", 48000, "none", True),
        ("linear16", 22050, "none", False),
        ("mulaw", 16000, "wav", True),
        ("mulaw", 24000, "none", False),
        ("linear16", 16000, "ogg", False),
        ("mp3", 22050, "none", False),  # valid for Deepgram; the stand-in cannot make mp3
    ],
)
def test_audio_settings_check(encoding: str, rate: int, container: str, ok: bool) -> None:
    audio = dg.AudioSettings(
        input=dg.AudioInput(encoding="linear16", sample_rate=16000),
        output=dg.AudioOutput(encoding=encoding, sample_rate=rate, container=container),
    )
    assert (audio_problem(*with_defaults(audio)) is None) == ok


def test_replayed_context_counts_answers_not_greetings() -> None:
    said = [("assistant", "Hi"), ("user", "a"), ("assistant", "A"), ("user", "b")]
    context = tuple(dg.History(role=role, content=text) for role, text in said)
    assert answered_turns(context) == 1
    assert answered_turns((*context, dg.History(role="assistant", content="B"))) == 2


# --- injections, function-call errors, flags -----------------------------------------------


async def test_inject_agent_message_behaviors() -> None:
    script = AgentScript(turns=(Turn(LONG_REPLY),), ms_per_word=100, end_of_turn_ms=100)
    async with StandInAgent(script=script) as agent, peer(agent) as p:
        await ready(p)
        await p.send(dg.InjectUserMessage(content="Tell me everything."))
        await p.until(bytes)
        await p.send(dg.InjectAgentMessage(message="Refused."))
        refused = await p.until(dg.InjectionRefused)
        assert refused.message
        warning = await p.until(dg.Warning)
        assert warning.code == "INJECT_AGENT_MESSAGE_DURING_AGENT_SPEECH"

        await p.send(dg.InjectAgentMessage(message="Stop, listen.", behavior="interrupt"))
        said = await p.until(dg.ConversationText)
        assert (said.role, said.content) == ("assistant", "Stop, listen.")
        await p.until(dg.AgentAudioDone)

        await p.talk(utterance(pause_ms=0)[:3])  # caller mid-utterance
        await p.until(dg.UserStartedSpeaking)
        await p.send(dg.InjectAgentMessage(message="Queued?", behavior="queue"))
        warning = await p.until(dg.Warning)
        assert warning.code == "INJECT_AGENT_MESSAGE_DURING_USER_SPEECH"
    # The interrupted reply never finished; the interruption did.
    assert p.types().count("AgentAudioDone") == 1


async def test_legacy_inject_agent_content_field() -> None:
    async with StandInAgent(script=FAST) as agent, peer(agent) as p:
        await ready(p)
        await p.ws.send('{"type":"InjectAgentMessage","content":"Legacy hello."}')
        said = await p.until(dg.ConversationText)
        assert said.content == "Legacy hello."
        await p.until(dg.AgentAudioDone)
    assert agent.connections[0].messages[-1] == dg.InjectAgentMessage(message="Legacy hello.")


async def test_unknown_function_call_id_warns_and_force_end_turn_needs_flux() -> None:
    async with StandInAgent(script=FAST) as agent, peer(agent) as p:
        await ready(p)
        await p.send(dg.FunctionCallResponse(id="nope", name="f", content="x"))
        assert (await p.until(dg.Warning)).code == "FUNCTION_CALL_FAILED"
        await p.send(dg.ForceEndTurn())
        assert (await p.until(dg.Warning)).code == "FORCE_END_TURN_UNSUPPORTED"
        await p.ws.ping()


async def test_force_end_turn_with_flux() -> None:
    flux = dg.ListenSettings(
        provider={"type": "deepgram", "version": "v2", "model": "flux-general-en"}
    )
    script = AgentScript(end_of_turn_ms=60_000, ms_per_word=20)
    async with StandInAgent(script=script) as agent, peer(agent) as p:
        await ready(p, settings(listen=flux))
        await p.talk(utterance(pause_ms=100))
        await p.until(dg.UserStartedSpeaking)
        await p.send(dg.ForceEndTurn())
        heard = await p.until(dg.ConversationText)
        assert heard.role == "user"


async def test_history_flag_off_and_mulaw_wav_output() -> None:
    message = dg.Settings(
        audio=dg.AudioSettings(
            input=dg.AudioInput(encoding="mulaw", sample_rate=8000),
            output=dg.AudioOutput(encoding="mulaw", sample_rate=8000, container="wav"),
        ),
        agent=dg.AgentSettings(greeting="Hello."),
        flags=dg.Flags(history=False),
    )
    async with StandInAgent(script=FAST) as agent, peer(agent) as p:
        await ready(p, message)
        first = await p.until(bytes)
        await p.until(dg.AgentAudioDone)
        mulaw = media_format("mulaw", 8000)
        await p.talk([signals.tone(mulaw, 20)] * 5 + [signals.silence(mulaw, 20)] * 10)
        await p.until(dg.AgentAudioDone)
    assert first.startswith(b"RIFF")
    assert "History" not in p.types()
    assert agent.connections[0].history  # still kept, just not sent


async def test_closing_the_agent_closes_connections_and_leaves_no_tasks() -> None:
    before = asyncio.all_tasks()
    async with StandInAgent(script=FAST) as agent:
        ws = await connect(agent.url)
        p = Peer(ws)
        await ready(p, settings(greeting="Hello there, this greeting is long enough."))
    assert agent.connections[0].closed.is_set()
    closed = await p.closed()
    assert closed.rcvd is not None and closed.rcvd.code == 1001
    await ws.close()
    await anyio.lowlevel.checkpoint()
    assert asyncio.all_tasks() - before == set()


# --- 4. our protocol module against the SDK's models ---------------------------------------

CONTEXT = (
    dg.History(role="user", content="What's the weather?"),
    dg.History(
        function_calls=(
            dg.FunctionCallRecord(
                id="fc_1",
                name="get_weather",
                client_side=True,
                arguments='{"city": "Paris"}',
                response="Sunny",
            ),
        )
    ),
    dg.History(role="assistant", content="It is sunny."),
)
THINK = dg.ThinkSettings(
    provider={"type": "open_ai", "model": "gpt-4o-mini"},
    prompt="Be helpful.",
    functions=(dg.Function(name="end_call", description="Hang up", defer_until_eot=True),),
)
SPEAK = dg.SpeakSettings(provider={"type": "deepgram", "model": "aura-2-thalia-en"})
LISTEN = dg.ListenSettings(provider={"type": "deepgram", "version": "v1", "model": "nova-3"})
OUR_CLIENT_MESSAGES: list[tuple[dg.ClientMessage, type[pydantic.BaseModel]]] = [
    (
        dg.Settings(
            audio=L16_AUDIO,
            agent=dg.AgentSettings(
                listen=LISTEN,
                think=(THINK, dg.ThinkSettings(provider={"type": "anthropic", "model": "c"})),
                speak=SPEAK,
                greeting="Hi",
                context=dg.Context(messages=CONTEXT),
            ),
            tags=("a",),
            mip_opt_out=True,
            flags=dg.Flags(history=True),
        ),
        sdk.AgentV1Settings,
    ),
    (dg.UpdatePrompt(prompt="p"), sdk.AgentV1UpdatePrompt),
    (dg.UpdateThink(think=THINK), sdk.AgentV1UpdateThink),
    (dg.UpdateSpeak(speak=(SPEAK, SPEAK)), sdk.AgentV1UpdateSpeak),
    (dg.UpdateListen(listen=LISTEN), sdk.AgentV1UpdateListen),
    (dg.InjectUserMessage(content="hi"), sdk.AgentV1InjectUserMessage),
    (dg.InjectAgentMessage(message="hi", behavior="interrupt"), sdk.AgentV1InjectAgentMessage),
    (
        dg.FunctionCallResponse(id="fc_1", name="f", content="{}"),
        sdk.AgentV1SendFunctionCallResponse,
    ),
    (dg.KeepAlive(), sdk.AgentV1KeepAlive),
    (dg.ForceEndTurn(), sdk.AgentV1ForceEndTurn),
    (dg.UpdateThinkLive(think_live=dg.ThinkLiveSettings(provider={
        "type": "deepgram", "version": "v1", "frustration_max_count": 2})),
     sdk.AgentV1UpdateThinkLive),
    (dg.CustomToThinkProvider(content={"k": [1, 2]}), sdk.AgentV1CustomToThinkProvider),
    (
        dg.Settings(audio=L16_AUDIO, agent=dg.AgentSettings(
            think=THINK, think_live=dg.ThinkLiveSettings())),
        sdk.AgentV1Settings,
    ),
    (dg.Settings(audio=L16_AUDIO, agent="0b0e9c1e-3c1f-4bbd-9a3b-5a4f3c2d1e0f"),
     sdk.AgentV1Settings),
]


@pytest.mark.parametrize(
    ("message", "model"), OUR_CLIENT_MESSAGES, ids=[m.__name__ for _, m in OUR_CLIENT_MESSAGES]
)
def test_our_client_messages_parse_with_the_sdk(
    message: dg.ClientMessage, model: type[pydantic.BaseModel]
) -> None:
    wire = dg.encode(message)
    parsed = model.model_validate_json(wire)
    # What the SDK would send for the same message reads back as the same struct.
    resent = json.dumps(_sanitize_numeric_types(parsed.dict()))
    assert dg.decode_client(resent) == message


def test_settings_context_survives_the_sdk() -> None:
    message = OUR_CLIENT_MESSAGES[0][0]
    parsed = sdk.AgentV1Settings.model_validate_json(dg.encode(message))
    assert isinstance(parsed.agent, sdk.AgentV1SettingsAgent)
    messages = parsed.agent.messages
    assert messages is not None and len(messages) == 3
    assert isinstance(messages[1], sdk.FunctionCallHistoryMessage)
    assert messages[1].function_calls[0].response == "Sunny"


async def test_every_server_message_parses_with_ours_and_the_sdk() -> None:
    script = AgentScript(
        turns=(Turn("Done.", function="f", arguments="{}", frustrated=True,
                    languages=("en", "es")), Turn(LONG_REPLY)),
        ms_per_word=20,
        end_of_turn_ms=100,
        backchannel="Mhmm.",
        backchannel_after_ms=40,
    )
    async with StandInAgent(script=script) as agent, peer(agent) as p:
        await ready(p, settings(greeting="Hi."))
        await p.until(dg.AgentAudioDone)
        await anyio.sleep(0.05)  # the greeting has played: the caller's turn is no barge-in
        await p.talk(utterance())
        request = await p.until(dg.FunctionCallRequest)
        await p.send(dg.FunctionCallResponse(id=request.functions[0].id, name="f", content="ok"))
        await p.until(dg.LatencyReport)
        for update in (
            dg.UpdatePrompt(prompt="p"),
            dg.UpdateThink(think=THINK),
            dg.UpdateSpeak(speak=SPEAK),
            dg.UpdateListen(listen=LISTEN),
            dg.UpdateThinkLive(think_live=dg.ThinkLiveSettings()),
            dg.CustomToThinkProvider(content={"ping": 1}),
        ):
            await p.send(update)
        await p.until(dg.CustomFromThinkProvider)
        await p.send(dg.InjectUserMessage(content="more"))
        await p.until(bytes)
        await p.send(dg.InjectAgentMessage(message="x"))
        await p.until(dg.Warning)
        await p.send(settings())
        await p.closed()
    text = [f for f in p.frames if isinstance(f, str)]
    sent = {json.loads(f)["type"] for f in text}
    assert sent >= set(SDK_SERVER), set(SDK_SERVER) - sent
    for frame in text:
        ours = dg.decode_server(frame)
        theirs = sdk_validate(frame)
        assert ours == dg.decode_server(theirs.model_dump_json(exclude_none=True)), frame
    behaviors = [json.loads(f).get("conversational_behavior") for f in text
                 if '"ConversationText"' in f]
    assert "backchannel" in behaviors and set(behaviors) <= {"default", "backchannel"}
    assert len(text) == len([t for t in agent.connections[0].sent_types if t != AUDIO])
