"""One connection to the stand-in agent: handshake, caller turns, replies and barge-in.

Three tasks share one task group: the reader (every client frame, in order), the speaker
(agent turns, one at a time, from a queue) and the clock (idle timeout, and the end of a
caller turn whose audio simply stopped). Only the reader changes handshake state; the
speaker owns the outgoing audio, which the reader may cut short (barge-in, interrupt).
"""

from __future__ import annotations

import contextlib
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Final

import anyio
import anyio.abc
import msgspec
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..audio import MediaFormat
from ..protocols import deepgram as dg
from ._agent_turns import (
    BURST_SPEEDUP,
    AgentScript,
    Conversation,
    Heard,
    Listener,
    audio_problem,
    decode_client,
    media_format,
    message_type,
    speech,
    with_defaults,
)

AUDIO: Final = "<audio>"  # how binary frames appear in sent_types
CLOCK_TICK: Final = 0.05  # seconds; granularity of the "caller audio stopped" check
ERROR_CLOSE_CODE: Final = 1011
TTS_LATENCY: Final = 0.05  # reported seconds; nothing is really synthesized
STT_LATENCY: Final = 0.02



@dataclass(eq=False)
class AgentConnectionRecord:
    """What the stand-in saw and did on one accepted connection, for tests to inspect."""

    request_id: str
    path: str
    settings: dg.Settings | None = None
    settings_raw: str | None = None
    text_frames: list[str] = field(default_factory=list)  # every text frame received
    messages: list[dg.ClientMessage] = field(default_factory=list)  # decoded, not audio
    audio_bytes: int = 0
    audio_frames: int = 0
    sent_types: list[str] = field(default_factory=list)  # "type" of each frame sent, or AUDIO
    sent_audio_bytes: int = 0
    barge_ins: int = 0  # caller speech that started while the agent was speaking
    latency_reports: list[dg.LatencyReport] = field(default_factory=list)  # sent
    history: list[dg.History] = field(default_factory=list)  # includes replayed context
    close_reason: str | None = None  # an Error code, "dropped", or "closed <code>"
    closed: anyio.Event = field(default_factory=anyio.Event)


class _Say(msgspec.Struct, frozen=True):
    """Speak this text (greeting, injected agent message, or a Think Live backchannel)."""

    text: str
    behavior: str = "default"


class _Answer(msgspec.Struct, frozen=True):
    """Answer a caller turn; ``injected`` is the text of an InjectUserMessage."""

    injected: str | None = None


class _PendingCall:
    __slots__ = ("call", "cancelled", "content", "done")

    def __init__(self, call: dg.FunctionCall) -> None:
        self.call = call
        self.done = anyio.Event()
        self.content = ""
        self.cancelled = False


class AgentSession:
    """The stand-in's side of one WebSocket."""

    def __init__(self, ws: ServerConnection, record: AgentConnectionRecord, script: AgentScript):
        self._ws = ws
        self._record = record
        self._script = script
        self._settings: dg.Settings | None = None
        self._agent: dg.AgentSettings | None = None
        self._listener: Listener | None = None
        self._input: MediaFormat | None = None
        self._voice: MediaFormat | None = None
        self._backchannel_due: float | None = None  # caller audio (ms) until a backchannel
        self._conversation = Conversation(script)
        self._history_on = True
        self._echo = False
        self._jobs: deque[_Say | _Answer] = deque()
        self._wake = anyio.Event()
        self._busy = False
        self._speech: anyio.CancelScope | None = None
        self._speaking_until = 0.0
        self._calls: dict[str, _PendingCall] = {}
        self._last_rx = self._last_audio = anyio.current_time()
        self._closing = False
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def record(self) -> AgentConnectionRecord:
        return self._record

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._guarded, self._clock)
            await self._send(dg.Welcome(request_id=self._record.request_id))
            await self._read()
            tg.cancel_scope.cancel()

    def drop(self) -> None:
        """Abort the TCP connection: no close frame, as when a network path dies."""
        if self._record.close_reason is None:
            self._record.close_reason = "dropped"
        self._closing = True
        self._ws.transport.abort()

    # --- reading ---------------------------------------------------------------------------

    async def _read(self) -> None:
        record, ws = self._record, self._ws
        try:
            async for frame in ws:
                self._last_rx = anyio.current_time()
                if self._closing:  # drain, or a flooding client would stall the close handshake
                    if isinstance(frame, str):
                        record.text_frames.append(frame)
                    continue
                if isinstance(frame, str):
                    await self._on_text(frame)
                elif self._echo:  # benchmark hot path: no decoding, no turn logic
                    record.audio_frames += 1
                    record.audio_bytes += len(frame)
                    record.sent_types.append(AUDIO)
                    record.sent_audio_bytes += len(frame)
                    await ws.send(frame)
                else:
                    await self._on_audio(frame)
        except ConnectionClosed:
            pass

    async def _on_text(self, frame: str) -> None:
        self._record.text_frames.append(frame)
        try:
            message = decode_client(frame)
        except dg.DecodeError as exc:
            await self._fail("UNPARSABLE_CLIENT_MESSAGE", f"Error parsing client message: {exc}")
            return
        if isinstance(message, dg.UnknownMessage):
            await self._fail(
                "UNPARSABLE_CLIENT_MESSAGE", f"Unknown client message type {message.type!r}"
            )
            return
        self._record.messages.append(message)
        if self._settings is not None:
            await self._on_message(message)
        elif isinstance(message, dg.Settings):
            await self._apply(message, frame)
        else:
            await self._fail(
                "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS", f"Received {message_type(message)} first"
            )

    async def _on_audio(self, frame: bytes) -> None:
        if self._listener is None:
            await self._fail(
                "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS", "Received binary audio before Settings"
            )
            return
        self._record.audio_frames += 1
        self._record.audio_bytes += len(frame)
        self._last_audio = self._last_rx
        heard = self._listener.feed(frame)
        if heard is Heard.STARTED:
            await self._caller_started()
        elif heard is Heard.ENDED:
            self._push(_Answer())
        elif self._listener.speaking and self._backchannel_due is not None:
            self._backchannel_due -= self._listener_ms(frame)
            if self._backchannel_due <= 0:
                self._backchannel_due = None
                if not self._agent_busy and self._script.backchannel is not None:
                    self._push(_Say(self._script.backchannel, behavior="backchannel"))

    async def _apply(self, settings: dg.Settings, raw: str) -> None:
        self._record.settings, self._record.settings_raw = settings, raw
        if self._script.fail_settings is not None:
            await self._fail(*self._script.fail_settings)
            return
        if isinstance(settings.agent, str):
            stored = self._script.stored_agents.get(settings.agent)
            if stored is None:
                await self._fail("INVALID_AGENT_ID", f"no agent configuration {settings.agent!r}")
                return
            agent = stored
        else:
            agent = settings.agent
        source, sink = with_defaults(settings.audio)
        problem = audio_problem(source, sink)
        if problem is not None:
            await self._fail("INVALID_SETTINGS", problem)
            return
        self._settings = settings
        self._agent = agent
        self._input = media_format(source.encoding, source.sample_rate)
        self._listener = Listener(self._input, self._script.end_of_turn_ms)
        self._voice = media_format(sink.encoding, sink.sample_rate, sink.container)
        context = agent.context.messages if agent.context else ()
        self._conversation = Conversation(self._script, context)
        self._record.history = self._conversation.history
        self._history_on = settings.flags is None or settings.flags.history
        await self._send(dg.SettingsApplied())
        self._echo = self._script.echo
        assert self._tg is not None
        self._tg.start_soon(self._guarded, self._speaker)
        if agent.greeting and not self._echo:
            self._push(_Say(agent.greeting))

    async def _on_message(self, message: dg.ClientMessage) -> None:
        match message:
            case dg.Settings():
                await self._fail("SETTINGS_ALREADY_APPLIED", "Settings were already applied")
            case dg.KeepAlive():
                pass
            case dg.UpdatePrompt():
                await self._send(dg.PromptUpdated())
            case dg.UpdateThink():
                await self._send(dg.ThinkUpdated())
            case dg.UpdateSpeak():
                await self._send(dg.SpeakUpdated())
            case dg.UpdateListen():
                await self._send(dg.ListenUpdated())
            case dg.UpdateThinkLive():
                await self._send(dg.ThinkLiveUpdated())
            case dg.CustomToThinkProvider(content=content):
                await self._send(dg.CustomFromThinkProvider(content=content))
            case dg.InjectUserMessage(content=content):
                self._push(_Answer(injected=content))
            case dg.InjectAgentMessage():
                await self._inject(message)
            case dg.FunctionCallResponse():
                await self._function_result(message)
            case dg.ForceEndTurn():
                await self._force_end_turn()

    async def _caller_started(self) -> None:
        await self._send(dg.UserStartedSpeaking())
        if self._agent_speaking:
            self._record.barge_ins += 1
            self._stop_speech()
        if self._calls:  # the caller talks again: what the agent asked for is withdrawn
            pending, self._calls = list(self._calls.values()), {}
            await self._send(dg.FunctionCallCancelled(functions=tuple(
                dg.CancelledFunction(id=p.call.id, name=p.call.name) for p in pending)))
            for p in pending:
                p.cancelled = True
                p.done.set()
        if self._script.backchannel is not None:
            # Think Live's "mhmm" once the caller has held the floor this long (audio time)
            self._backchannel_due = float(self._script.backchannel_after_ms)

    def _listener_ms(self, frame: bytes) -> float:
        assert self._input is not None
        return self._input.duration_ms(len(frame))

    async def _inject(self, message: dg.InjectAgentMessage) -> None:
        behavior = message.behavior or "default"
        caller_busy = self._listener is not None and self._listener.speaking
        if behavior == "interrupt":
            self._stop_speech()
            self._jobs.appendleft(_Say(message.message))
            self._wake.set()
        elif caller_busy or (behavior == "default" and self._agent_busy):
            who = "USER" if caller_busy else "AGENT"
            await self._send(dg.InjectionRefused(message=f"{who.lower()} is speaking"))
            await self._warn(
                f"INJECT_AGENT_MESSAGE_DURING_{who}_SPEECH",
                f"InjectAgentMessage refused during {who.lower()} speech",
            )
        else:
            self._push(_Say(message.message))

    async def _function_result(self, message: dg.FunctionCallResponse) -> None:
        pending = self._calls.pop(message.id or "", None)
        if pending is None:
            await self._warn("FUNCTION_CALL_FAILED", f"No pending function call {message.id!r}")
            return
        pending.content = message.content
        pending.done.set()

    async def _force_end_turn(self) -> None:
        assert self._agent is not None and self._listener is not None
        listen = self._agent.listen
        if listen is None or listen.provider.get("version") != "v2":
            await self._warn(
                "FORCE_END_TURN_UNSUPPORTED", "ForceEndTurn needs a v2 listen provider"
            )
        elif self._listener.end() is Heard.ENDED:
            self._push(_Answer())

    # --- speaking --------------------------------------------------------------------------

    def _push(self, job: _Say | _Answer) -> None:
        self._jobs.append(job)
        self._wake.set()

    @property
    def _agent_speaking(self) -> bool:
        """Audio is going out, or what went out is still playing at the caller's end."""
        return self._speech is not None or anyio.current_time() < self._speaking_until

    @property
    def _agent_busy(self) -> bool:
        return self._busy or bool(self._jobs) or self._agent_speaking

    def _stop_speech(self) -> None:
        if self._speech is not None:
            self._speech.cancel()
        self._speaking_until = 0.0

    async def _speaker(self) -> None:
        while True:
            while not self._jobs:
                self._wake = anyio.Event()
                await self._wake.wait()
            job = self._jobs.popleft()
            self._busy = True
            try:
                if isinstance(job, _Say):
                    await self._say("assistant", job.text, job.behavior)
                    await self._speak(job.text, 0.0)
                else:
                    await self._answer(job.injected)
            finally:
                self._busy = False

    async def _answer(self, injected: str | None) -> None:
        turn = self._conversation.take_turn()
        started = anyio.current_time()
        await self._say("user", turn.heard if injected is None else injected,
                        languages=turn.languages)
        if turn.frustrated:
            count = self._conversation.frustration
            await self._send(dg.FrustrationDetected(count=count,
                                                    escalated=count >= self._frustration_max))
        await self._send(dg.AgentThinking(content=""))
        reply = turn.reply
        if turn.function is not None:
            if turn.before is not None:
                await self._say("assistant", turn.before)
                await self._speak(turn.before, 0.0)
            call = dg.FunctionCall(
                id=f"fc_{secrets.token_hex(6)}", name=turn.function, arguments=turn.arguments
            )
            result = await self._call(call)
            if result is None:
                return  # withdrawn: the caller's next turn is answered instead
            reply = f"{reply} ({result})"
        await self._say("assistant", reply)
        think = round(anyio.current_time() - started, 3)
        await self._speak(reply, think)
        report = dg.LatencyReport(
            stt_latency=STT_LATENCY,
            ttt_token_latency=think,
            ttt_text_latency=think,
            ttt_tool_latency=think if turn.function is not None else None,
            ttt_thinking_latency=None,
            tts_latency=TTS_LATENCY,
            total_latency=think + TTS_LATENCY,
        )
        self._record.latency_reports.append(report)
        await self._send(report)
        if self._conversation.drop_due:
            self.drop()

    async def _call(self, call: dg.FunctionCall) -> str | None:
        pending = self._calls[call.id] = _PendingCall(call)
        await self._send(dg.FunctionCallRequest(functions=(call,)))
        await pending.done.wait()
        if pending.cancelled:
            return None
        entry = self._conversation.called(call, pending.content)
        if self._history_on:
            await self._send(entry)
        return pending.content

    async def _say(self, role: str, content: str, behavior: str = "default", *,
                   languages: tuple[str, ...] | None = None) -> None:
        await self._send(dg.ConversationText(role=role, content=content, languages=languages,
                                             conversational_behavior=behavior))
        if behavior != "default":
            return  # not a turn: not in the history
        entry = self._conversation.said(role, content)
        if self._history_on:
            await self._send(entry)

    @property
    def _frustration_max(self) -> int:
        """``think_live.provider.frustration_max_count`` (Deepgram's default unknown: 2)."""
        think_live = self._agent.think_live if self._agent is not None else None
        value = think_live.provider.get("frustration_max_count") if think_live else None
        return value if isinstance(value, int) else 2

    async def _speak(self, text: str, think: float) -> None:
        """Send one utterance; ``AgentAudioDone`` only if nobody cut it short."""
        assert self._voice is not None
        await self._send(
            dg.AgentStartedSpeaking(
                total_latency=think + TTS_LATENCY, tts_latency=TTS_LATENCY, ttt_latency=think
            )
        )
        script, voice = self._script, self._voice
        groups = speech(text, voice, script)
        total = sum(len(frame) for group in groups for frame in group)
        start = anyio.current_time()
        self._speaking_until = start + voice.duration_ms(total) / 1000
        sent_ms = 0
        with anyio.CancelScope() as scope:
            self._speech = scope
            try:
                for group in groups:
                    for frame in group:
                        await self._send_audio(frame)
                        sent_ms += script.frame_ms
                        if script.realtime:
                            due = start + sent_ms / 1000  # late under load: no wait
                            await anyio.sleep(max(0.0, due - anyio.current_time()))
                    if not script.realtime:
                        await anyio.sleep(len(group) * script.frame_ms / 1000 / BURST_SPEEDUP)
            finally:
                self._speech = None
        if not scope.cancel_called:
            await self._send(dg.AgentAudioDone())

    # --- time ------------------------------------------------------------------------------

    async def _clock(self) -> None:
        idle = self._script.idle_timeout
        end_of_turn = self._script.end_of_turn_ms / 1000
        while True:
            now = anyio.current_time()
            if now - self._last_rx >= idle:
                await self._fail(
                    "CLIENT_MESSAGE_TIMEOUT",
                    "We waited too long for a WebSocket message. Please ensure that you are "
                    "continuously sending audio data or KeepAlive messages.",
                )
                return
            listener = self._listener
            if listener is not None and listener.speaking and now - self._last_audio >= end_of_turn:
                listener.end()
                self._push(_Answer())
            if self._echo:
                await anyio.sleep(self._last_rx + idle - now)
            else:
                await anyio.sleep(min(CLOCK_TICK, self._last_rx + idle - now))

    # --- writing ---------------------------------------------------------------------------

    async def _send(self, message: dg.ServerMessage) -> None:
        self._record.sent_types.append(message_type(message))
        await self._ws.send(dg.encode(message), text=True)

    async def _send_audio(self, frame: bytes) -> None:
        self._record.sent_types.append(AUDIO)
        self._record.sent_audio_bytes += len(frame)
        await self._ws.send(frame)

    async def _warn(self, code: str, description: str) -> None:
        await self._send(dg.Warning(description=description, code=code))

    async def _fail(self, code: str, description: str) -> None:
        """Send ``Error``, then close; the reader drains what is still arriving meanwhile."""
        if self._closing:
            return
        self._closing = True
        self._record.close_reason = code
        self._stop_speech()
        await self._send(dg.Error(description=description, code=code))
        assert self._tg is not None
        self._tg.start_soon(self._guarded, partial(self._ws.close, ERROR_CLOSE_CODE, code))

    async def _guarded(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run a side task; a lost connection ends only that task (the reader sees it too)."""
        with contextlib.suppress(ConnectionClosed):
            await task()
