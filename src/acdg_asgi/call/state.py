"""The states of a call, the actions it asks of its runtime, and what it measures."""

from __future__ import annotations

import enum

import msgspec

__all__ = [
    "Action", "CallState", "CloseAgent", "CloseVaic", "ConnectAgent", "Measure", "Timer", "Timers",
]


class CallState(enum.Enum):
    ACTIVE = "active"  # VAIC socket attached
    DETACHED = "detached"  # VAIC socket lost; waiting for session.resume
    ENDING = "ending"  # we hung up or transferred; waiting for VAIC to close
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


Action = ConnectAgent | CloseAgent | CloseVaic


class Measure(enum.Enum):
    """A timing the call measured, for whoever observes it (metrics, tracing); seconds."""

    AGENT_HANDSHAKE = "agent_handshake_seconds"  # agent connect to SettingsApplied
    AGENT_RESPONSE_LATENCY = "agent_response_latency_seconds"  # Deepgram's own, per turn
    BARGE_IN_REACTION = "barge_in_reaction_seconds"  # UserStartedSpeaking to the stop written
    BARGE_IN_TAIL = "barge_in_tail_seconds"  # agent audio sent but not played at a barge-in


class Timer(enum.Enum):
    """A named deadline of the call (besides the agent link's and the playout's)."""

    HANGUP = "hangup"  # we hung up or transferred: VAIC's session.end is due by then
    RESUME = "resume"  # VAIC lost its socket: its session.resume is due by then


class Timers:
    """The call's named deadlines; :attr:`first` is the earliest, kept current, so asking
    it after every input costs one attribute read."""

    __slots__ = ("_at", "first")

    def __init__(self) -> None:
        self._at: dict[Timer, float] = {}
        self.first: float | None = None

    def __contains__(self, timer: Timer) -> bool:
        return timer in self._at

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
