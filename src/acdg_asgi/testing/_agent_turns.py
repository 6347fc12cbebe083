"""The stand-in agent's script, ears and voice, with no sockets and no clock.

:class:`AgentScript` says what the agent answers. :func:`audio_problem` checks ``audio``
settings against Deepgram's table of output formats. :class:`Listener` decides when the
caller starts and stops talking, measured in *audio* time so a test may send caller audio
faster than real time. :func:`speech` turns reply text into tone frames, and
:class:`Conversation` keeps the turn count and the history record (including one replayed
from ``agent.context.messages`` on a reconnect).
"""

from __future__ import annotations

import enum
from typing import Final, Literal, NamedTuple

import msgspec

from ..audio import MediaFormat, wav_header
from ..protocols import deepgram as dg
from .signals import is_voiced, silence, tone

AGENT_HZ: Final = 660.0  # caller "speech" in tests is 440 Hz; a different pitch tells them apart
BURST_SPEEDUP: Final = 10  # burst mode sends audio this many times faster than real time


class Turn(msgspec.Struct, frozen=True):
    """One scripted exchange: what the caller is "heard" saying and what the agent replies."""

    reply: str
    heard: str = "caller speech"
    function: str | None = None  # a client-side function to call before replying
    arguments: str = "{}"  # JSON text of the call's arguments
    before: str | None = None  # said before the function call ("One moment, please.")
    languages: tuple[str, ...] | None = None  # detected in the caller's turn (multilingual)
    frustrated: bool = False  # FrustrationDetected after the caller's turn (Think Live)


DEFAULT_TURNS: Final = (
    Turn("Of course. What is the order number?", heard="Hi, I'd like to check on my order."),
    Turn("Thanks. Order A123 shipped yesterday and arrives Friday.", heard="It's A one two three."),
    Turn("You're welcome. Goodbye!", heard="Great, thank you."),
)
AFTER_SCRIPT: Final = Turn("Is there anything else I can help with?")


class AgentScript(msgspec.Struct, frozen=True, kw_only=True):
    """How the stand-in agent behaves. Every field has a default that suits a demo.

    Usage::

        AgentScript(turns=(Turn("Let me check.", function="lookup", arguments='{"id": 7}'),))
        AgentScript(echo=True)                      # benchmarks: caller audio comes straight back
        AgentScript(drop_after_turns=1)             # reconnect tests
        AgentScript(fail_settings=("INVALID_SETTINGS", "no such voice"))
        AgentScript(backchannel="Mhmm.")            # Think Live's backchannel in each caller turn
        AgentScript(stored_agents={"<uuid>": AgentSettings(greeting="Hi")})  # agent ids
    """

    turns: tuple[Turn, ...] = DEFAULT_TURNS
    ms_per_word: int = 200  # reply audio per word of reply text
    frame_ms: int = 20  # size of each binary agent-audio frame
    realtime: bool = False  # False: one word's frames at a time, BURST_SPEEDUP x real time
    end_of_turn_ms: int = 300  # caller silence (audio time) that ends the caller's turn
    echo: bool = False  # every caller frame goes straight back; no turns
    fail_settings: tuple[str, str] | None = None  # (code, description) answered to Settings
    drop_after_turns: int | None = None  # abort TCP once turn N is answered (context counts)
    idle_timeout: float = 10.0  # seconds without any client frame before CLIENT_MESSAGE_TIMEOUT
    # Think Live: said (conversational_behavior "backchannel") once the caller has spoken
    # this long; None: never.
    backchannel: str | None = None
    backchannel_after_ms: int = 200
    # Reusable agent configurations: Settings with an agent id string use these.
    stored_agents: dict[str, dg.AgentSettings] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ms_per_word <= 0 or self.frame_ms <= 0 or self.end_of_turn_ms <= 0:
            raise ValueError("ms_per_word, frame_ms and end_of_turn_ms must be positive")
        if self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        if self.drop_after_turns is not None and self.drop_after_turns < 1:
            raise ValueError("drop_after_turns counts answered turns, so it starts at 1")

    def turn(self, index: int) -> Turn:
        """The scripted turn at ``index`` (0-based), or :data:`AFTER_SCRIPT` past the end."""
        return self.turns[index] if index < len(self.turns) else AFTER_SCRIPT


# --- wire ---------------------------------------------------------------------------------


class _LegacyInjectAgentMessage(msgspec.Struct, tag="InjectAgentMessage", tag_field="type"):
    """``InjectAgentMessage`` as older docs wrote it: ``content`` instead of ``message``."""

    content: str
    behavior: Literal["default", "queue", "interrupt"] | None = None


_legacy_inject: Final = msgspec.json.Decoder(_LegacyInjectAgentMessage)


def decode_client(frame: str) -> dg.ClientMessage | dg.UnknownMessage:
    """:func:`deepgram.decode_client`, also accepting the legacy ``InjectAgentMessage`` form."""
    try:
        return dg.decode_client(frame)
    except dg.DecodeError as exc:
        error = exc
    try:
        legacy = _legacy_inject.decode(frame)
    except msgspec.DecodeError:
        raise error from None
    return dg.InjectAgentMessage(message=legacy.content, behavior=legacy.behavior)


def message_type(message: dg.ClientMessage | dg.ServerMessage) -> str:
    """The wire ``type`` of a message."""
    return str(message.__struct_config__.tag)


# --- audio settings ------------------------------------------------------------------------

INPUT_ENCODINGS: Final = frozenset(
    {"linear16", "linear32", "flac", "alaw", "mulaw", "amr-nb", "amr-wb", "opus", "ogg-opus",
     "speex", "g729"}
)  # fmt: skip
# encoding -> (sample rates, containers, bitrate range or None); Deepgram's TTS output table.
OUTPUT_FORMATS: Final[dict[str, tuple[frozenset[int], frozenset[str], tuple[int, int] | None]]] = {
    "linear16": (frozenset({8000, 16000, 24000, 32000, 48000}), frozenset({"none", "wav"}), None),
    "mulaw": (frozenset({8000, 16000}), frozenset({"none", "wav"}), None),
    "alaw": (frozenset({8000, 16000}), frozenset({"none", "wav"}), None),
    "mp3": (frozenset({22050}), frozenset({"none"}), (32000, 48000)),
    "opus": (frozenset({48000}), frozenset({"ogg", "none"}), (4000, 650000)),
    "flac": (frozenset({8000, 16000, 22050, 32000, 48000}), frozenset({"none"}), None),
    "aac": (frozenset({22050}), frozenset({"none"}), (4000, 192000)),
}
SYNTHESIZED: Final = frozenset({"linear16", "mulaw"})  # what signals.py can decode and encode


class Input(NamedTuple):
    encoding: str
    sample_rate: int


class Output(NamedTuple):
    encoding: str
    sample_rate: int
    container: str
    bitrate: int | None


def with_defaults(audio: dg.AudioSettings) -> tuple[Input, Output]:
    """The audio settings with the server's defaults filled in (linear16 at 24 kHz)."""
    source = audio.input or dg.AudioInput()
    sink = audio.output or dg.AudioOutput()
    return (
        Input(source.encoding or "linear16", source.sample_rate or 24000),
        Output(sink.encoding or "linear16", sink.sample_rate or 24000,
               sink.container or "none", sink.bitrate),
    )


def audio_problem(source: Input, sink: Output) -> str | None:
    """Why this audio cannot be served (an ``INVALID_SETTINGS`` description), or ``None``."""
    if source.encoding not in INPUT_ENCODINGS:
        return f"audio.input.encoding {source.encoding!r} is not supported"
    if source.sample_rate <= 0:
        return f"audio.input.sample_rate {source.sample_rate} is not valid"
    if sink.encoding not in OUTPUT_FORMATS:
        return f"audio.output.encoding {sink.encoding!r} is not supported"
    rates, containers, bitrates = OUTPUT_FORMATS[sink.encoding]
    if sink.sample_rate not in rates:
        return f"audio.output: {sink.encoding} does not support sample_rate {sink.sample_rate}"
    if sink.container not in containers:
        return f"audio.output: {sink.encoding} does not support container {sink.container!r}"
    if sink.bitrate is not None and bitrates is not None:
        low, high = bitrates
        if not low <= sink.bitrate <= high:
            return f"audio.output: bitrate {sink.bitrate} is out of range for {sink.encoding}"
    for side, encoding in (("input", source.encoding), ("output", sink.encoding)):
        if encoding not in SYNTHESIZED:
            return (
                f"audio.{side}.encoding {encoding!r}: the stand-in agent only does linear16/mulaw"
            )
    return None


def media_format(encoding: str, sample_rate: int, container: str = "none") -> MediaFormat:
    """A :class:`MediaFormat` for a Deepgram encoding (``linear16`` or ``mulaw``)."""
    width = 1 if encoding == "mulaw" else 2
    return MediaFormat(
        f"{encoding}/{sample_rate}", encoding, sample_rate, width, container == "wav"
    )


# --- listening -----------------------------------------------------------------------------


class Heard(enum.Enum):
    STARTED = "started"  # first voiced frame after silence
    ENDED = "ended"  # enough silence after speech: the caller's turn is over


class Listener:
    """Caller voice activity and end of turn, counted in audio time."""

    __slots__ = ("_end_ms", "_fmt", "_silent_ms", "speaking")

    def __init__(self, fmt: MediaFormat, end_of_turn_ms: int) -> None:
        self._fmt = fmt
        self._end_ms = end_of_turn_ms
        self._silent_ms = 0.0
        self.speaking = False

    def feed(self, frame: bytes) -> Heard | None:
        """Take one frame of caller audio; say whether a turn started or ended with it."""
        if is_voiced(frame, self._fmt):
            self._silent_ms = 0.0
            if self.speaking:
                return None
            self.speaking = True
            return Heard.STARTED
        if self.speaking:
            self._silent_ms += self._fmt.duration_ms(len(frame))
            if self._silent_ms >= self._end_ms:
                return self.end()
        return None

    def end(self) -> Heard | None:
        """End the caller's turn now (audio stopped, or ``ForceEndTurn``) if one is open."""
        if not self.speaking:
            return None
        self.speaking = False
        self._silent_ms = 0.0
        return Heard.ENDED


# --- speaking ------------------------------------------------------------------------------


def speech(text: str, fmt: MediaFormat, script: AgentScript) -> list[list[bytes]]:
    """Agent audio for ``text``: frames of ``script.frame_ms``, grouped about one word a group.

    Each word is a tone followed by a short pause, so the demo sounds like speech rhythm.
    With a ``wav`` container the first frame starts with a RIFF header (one per utterance).
    """
    words = max(1, len(text.split()))
    gap = script.ms_per_word // 5
    word = tone(fmt, script.ms_per_word - gap, AGENT_HZ) + silence(fmt, gap)
    audio = word * words
    if fmt.wav:
        audio = wav_header(fmt) + audio
    step = fmt.frame_bytes(script.frame_ms) or 1
    frames = [audio[i : i + step] for i in range(0, len(audio), step)]
    per_group = max(1, script.ms_per_word // script.frame_ms)
    return [frames[i : i + per_group] for i in range(0, len(frames), per_group)]


# --- conversation --------------------------------------------------------------------------


def answered_turns(messages: tuple[dg.History, ...]) -> int:
    """Caller turns the agent has already answered in a replayed context.

    Counts assistant messages that follow a user message, so a greeting is not a turn.
    """
    answered, waiting = 0, False
    for entry in messages:
        if entry.role == "user":
            waiting = True
        elif entry.role == "assistant" and waiting:
            answered += 1
            waiting = False
    return answered


class Conversation:
    """Turn count and history of one connection."""

    def __init__(self, script: AgentScript, context: tuple[dg.History, ...] = ()) -> None:
        self.script = script
        self.history: list[dg.History] = list(context)
        self.turns_done = answered_turns(context)

    def take_turn(self) -> Turn:
        """The turn that answers the next caller utterance; counts it as answered."""
        turn = self.script.turn(self.turns_done)
        self.turns_done += 1
        return turn

    def said(self, role: str, content: str) -> dg.History:
        entry = dg.History(role=role, content=content)
        self.history.append(entry)
        return entry

    @property
    def frustration(self) -> int:
        """FrustrationDetected so far: scripted turns answered with ``frustrated``."""
        return sum(1 for i in range(self.turns_done) if self.script.turn(i).frustrated)

    def called(self, call: dg.FunctionCall, response: str) -> dg.History:
        record = dg.FunctionCallRecord(
            id=call.id,
            name=call.name,
            client_side=call.client_side,
            arguments=call.arguments,
            response=response,
        )
        entry = dg.History(function_calls=(record,))
        self.history.append(entry)
        return entry

    @property
    def drop_due(self) -> bool:
        """Whether ``drop_after_turns`` asks for the connection to go now.

        Compared with the whole conversation's count, so a call that reconnects with its
        context past that turn is not dropped again.
        """
        return self.script.drop_after_turns == self.turns_done
