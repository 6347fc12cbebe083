"""The states of a call, the actions it asks of its runtime, what it measures, and what
it shares with other instances."""

from __future__ import annotations

import enum

import msgspec

from ..events import CallDetails, ToolRequest
from ..protocols import deepgram as dg

__all__ = [
    "Action", "CallShared", "CallState", "CheckTool", "ChooseAgent", "CloseAgent", "CloseVaic",
    "ConnectAgent", "Measure", "PendingTransfer", "PingAgent", "Timer", "Timers",
]


class CallState(enum.Enum):
    ACTIVE = "active"  # VAIC socket attached
    TRANSFERRING = "transferring"  # transfer sent; waiting for VAIC to say how it went
    DETACHED = "detached"  # VAIC socket lost; waiting for session.resume
    ENDING = "ending"  # we hung up, or the transfer was answered; waiting for VAIC to close
    ENDED = "ended"

    # Identity is enough, and a table keyed by (state, message class) is looked up for
    # every frame: skip Enum's hash of the member's name.
    __hash__ = object.__hash__


class ConnectAgent(msgspec.Struct, frozen=True):
    attempt: int


class CloseAgent(msgspec.Struct, frozen=True):
    pass


class CloseVaic(msgspec.Struct, frozen=True):
    reason: str


class ChooseAgent(msgspec.Struct, frozen=True):
    """Run the per-call agent factory with what ``start`` said (``None``: it did not come
    in time), and hand the result to :meth:`Call.agent_chosen`."""

    details: CallDetails | None


class CheckTool(msgspec.Struct, frozen=True):
    """Run the application's ``TelephonyTools.check`` hook on ``request`` and hand its
    verdict to :meth:`Call.tool_checked`."""

    request: ToolRequest


class PingAgent(msgspec.Struct, frozen=True):
    """Ping the agent connection; its answer comes back as ``Call.agent_pong``."""


Action = ConnectAgent | CloseAgent | CloseVaic | ChooseAgent | CheckTool | PingAgent


class PendingTransfer(msgspec.Struct, frozen=True, kw_only=True):
    """A transfer sent to VAIC whose outcome is not known yet."""

    destination: str | None


class CallShared(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the owner of a call keeps in the shared store beside its history, so that
    another instance can take the call over as it stands: the call's details, the
    application's changes to the agent, a transfer under way, whom the agent hears, and
    where the caller cut the agent short."""

    details: CallDetails | None = None
    started: bool = False  # session_start was emitted
    agent_updates: tuple[
        dg.UpdatePrompt | dg.UpdateThink | dg.UpdateSpeak | dg.UpdateListen
        | dg.UpdateThinkLive, ...] = ()
    transfer: PendingTransfer | None = None
    hearing: str | None = None
    cuts: dict[int, str] = msgspec.field(default_factory=dict)
    sensitive: bool = False  # sensitive mode is on: keep masking after a take-over


class Measure(enum.Enum):
    """A timing the call measured, for whoever observes it (metrics, tracing); seconds."""

    AGENT_HANDSHAKE = "agent_handshake_seconds"  # agent connect to SettingsApplied
    AGENT_RESPONSE_LATENCY = "agent_response_latency_seconds"  # LatencyReport total, per turn
    AGENT_STT_LATENCY = "agent_stt_latency_seconds"  # the rest: LatencyReport's parts
    AGENT_TTT_TOKEN_LATENCY = "agent_ttt_token_latency_seconds"
    AGENT_TTT_TEXT_LATENCY = "agent_ttt_text_latency_seconds"
    AGENT_TTT_TOOL_LATENCY = "agent_ttt_tool_latency_seconds"
    AGENT_TTT_THINKING_LATENCY = "agent_ttt_thinking_latency_seconds"
    AGENT_TTS_LATENCY = "agent_tts_latency_seconds"
    BARGE_IN_REACTION = "barge_in_reaction_seconds"  # UserStartedSpeaking to the stop written
    BARGE_IN_TAIL = "barge_in_tail_seconds"  # agent audio sent but not played at a barge-in


class Timer(enum.Enum):
    """A named deadline of the call (besides the agent link's and the playout's)."""

    HANGUP = "hangup"  # we hung up or transferred: VAIC's session.end is due by then
    RESUME = "resume"  # VAIC lost its socket: its session.resume is due by then
    START = "start"  # VAIC's start activity (the call's details) is waited for until then
    TRANSFER = "transfer"  # VAIC's transferStatus or session.end is due by then
    NO_INPUT = "no_input"  # the caller has said nothing since the agent's words played
    DTMF = "dtmf"  # keys being collected: what was keyed counts as one input then
    BARGE_IN = "barge_in"  # caller speech shorter than min_speech_ms by then cuts nothing
    PLAY_URL = "play_url"  # a play_url tool stops waiting for VAIC's playFinished then
    DEAD_AIR = "dead_air"  # no agent since then: the caller hears a hold prompt or a hangup
    WARNINGS = "warnings"  # repeated warnings were folded: report them as one


class Timers:
    """The call's named deadlines; :attr:`first` is the earliest, kept current, so asking
    it after every input costs one attribute read."""

    __slots__ = ("_at", "first")

    def __init__(self) -> None:
        self._at: dict[Timer, float] = {}
        self.first: float | None = None

    def __contains__(self, timer: Timer) -> bool:
        return timer in self._at

    def at(self, timer: Timer) -> float | None:
        """When ``timer`` is due, if it is set."""
        return self._at.get(timer)

    def set(self, timer: Timer, at: float) -> None:
        self._at[timer] = at
        self.first = min(self._at.values())

    def clear(self, timer: Timer) -> None:
        if self._at.pop(timer, None) is not None:
            self.first = min(self._at.values(), default=None)

    def due(self, now: float) -> list[Timer]:
        """The timers due at ``now``, in the order of :class:`Timer`; they are cleared."""
        if self.first is None or now < self.first:
            return []
        due = [t for t in Timer if self._at.get(t, now + 1) <= now]
        for t in due:
            del self._at[t]
        self.first = min(self._at.values(), default=None)
        return due
