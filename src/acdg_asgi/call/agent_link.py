"""The call's link to the agent: connect, handshake, ready, lost, back off, retry.

A sub-machine of the :class:`~acdg_asgi.call.machine.Call`, pure like it: the call feeds it what
happened and asks it what is due. It holds caller audio while no agent is ready (bounded:
the newest audio is kept), counts consecutive failures against the reconnect budget, and
knows when a KeepAlive is owed because nothing else went to the agent for a while.

Liveness: a ready connection is pinged every ``Limits.agent_ping_s``; one that has not
answered within ``Limits.agent_pong_timeout_s`` is silent (a black hole: no data, no
FIN, no RST) and the call treats it as lost.

    CONNECTING --socket open--> HANDSHAKE --SettingsApplied--> READY
        ^                           |  (timeout)                 |
        |                           v                            v
        +------- deadline ------ BACKOFF <------- lost ----------+
                                    |  (budget spent)
                                    v
                                 CLOSED
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Final, Literal

from ..audio import MediaFormat
from ..config import Limits, Reconnect
from ..interned import SMALL_COUNT, interned
from .stats import CallStats

__all__ = ["AgentLink", "AgentState"]


class AgentState(enum.Enum):
    CONNECTING = "connecting"  # socket being opened
    HANDSHAKE = "handshake"  # waiting for Welcome / SettingsApplied
    READY = "ready"
    BACKOFF = "backoff"  # lost; waiting to retry
    CLOSED = "closed"


_READY: Final = AgentState.READY  # for the per-frame path: see machine._ACTIVE


class _LinkFramePath:
    # What caller_audio reads, first in the object (see machine._CallFramePath).
    __slots__ = ("_frame_bytes", "_frames", "_frames_bytes", "last_send", "state", "tap")


class AgentLink(_LinkFramePath):
    # Slots: a call's state in fewer places for the cache.
    __slots__ = (
        "_gathered", "_gathered_at", "_held", "_held_bytes", "_held_max", "connect_started",
        "deadline", "failures", "limits", "lost_at", "ping_at", "pong_due", "reconnect",
        "stats",
    )

    def __init__(
        self, fmt: MediaFormat, *, limits: Limits, reconnect: Reconnect, stats: CallStats,
        now: float,
    ) -> None:
        self.limits = limits
        self.reconnect = reconnect
        self.stats = stats
        self.state = AgentState.CONNECTING
        self.failures = 0  # consecutive; a connection that gets ready resets it
        self.deadline: float | None = None  # handshake timeout or end of backoff
        self.lost_at: float | None = None  # when the last good connection went away
        self.connect_started = now
        self.last_send = now
        # Caller frames not yet in the stats, all of _frames_bytes: a small integer
        # (interned.SMALL_COUNT), not a new object for each frame (count_caller).
        self._frames = 0
        self._frames_bytes = 0
        self._held: deque[bytes] = deque()
        self._held_bytes = 0
        self._held_max = fmt.frame_bytes(limits.pre_ready_audio_ms)
        # What the call does to caller audio first (strip a WAV header, count the caller's
        # voice, keep it from the agent): None while nothing needs to, the usual case.
        self.tap: Callable[[bytes, float], bytes] | None = None
        self._frame_bytes = fmt.frame_bytes(limits.caller_frame_ms)  # 0: no coalescing
        self._gathered = bytearray()
        self._gathered_at = 0.0  # when the oldest gathered audio came
        self.ping_at: float | None = None  # while ready: when the next ping goes
        self.pong_due: float | None = None  # a ping is out: its answer is due by then

    @property
    def ready(self) -> bool:
        return self.state is AgentState.READY

    def connecting(self, now: float) -> None:
        """A connection attempt starts."""
        self.state = AgentState.CONNECTING
        self.connect_started = now
        self.deadline = None
        self.ping_at = self.pong_due = None

    def connected(self, now: float) -> None:
        """The socket is open; the handshake starts with the agent's ``Welcome``."""
        self.state = AgentState.HANDSHAKE
        self.deadline = now + self.limits.handshake_timeout_s

    def applied(self, now: float) -> tuple[float, float | None, list[bytes]]:
        """``SettingsApplied``: the handshake time, the gap if this was a reconnect (ms),
        and the caller audio held meanwhile, to send now."""
        gap = None
        if self.failures and self.lost_at is not None:
            gap = (now - self.lost_at) * 1000
        handshake = now - self.connect_started
        self.state = AgentState.READY
        self.deadline = None
        self.failures = 0
        self.lost_at = None
        self._ping_from(now)
        held = list(self._held)
        self._held.clear()
        self._held_bytes = 0
        self.last_send = now
        return handshake, gap, held

    def caller_audio(self, audio: bytes, now: float) -> bytes | None:
        """A caller audio chunk: the audio to send to the agent now, or ``None`` if the
        agent is not ready (then it is held, bounded, until it is). It gives nothing out
        to the call itself; its :attr:`tap` may (the runtime counts on it)."""
        frames = self._frames
        if frames < SMALL_COUNT and len(audio) == self._frames_bytes:
            self._frames = frames + 1
        else:
            self.count_caller()
            self._frames, self._frames_bytes = 1, interned(len(audio))
        if self.tap is not None:
            audio = self.tap(audio, now)
        if self.state is _READY:
            if self._frame_bytes:
                if not self._gathered:
                    self._gathered_at = now
                self._gathered += audio
                if len(self._gathered) < self._frame_bytes:
                    return None
                audio = bytes(self._gathered)
                self._gathered.clear()
            self.last_send = now
            return audio
        self.hold(audio)
        return None

    def count_caller(self) -> None:
        """Count in the stats the caller frames :meth:`caller_audio` took (it leaves them
        to whoever reads the stats, as :meth:`PlayoutClock.count_passed` does)."""
        if frames := self._frames:
            self._frames = 0
            stats = self.stats
            stats.caller_frames += frames
            stats.caller_bytes += frames * self._frames_bytes

    def hold(self, audio: bytes) -> None:
        """Caller audio while no agent is ready: keep the newest, bounded."""
        self._held.append(audio)
        self._held_bytes += len(audio)
        while self._held_bytes > self._held_max:
            self._held_bytes -= len(self._held.popleft())
            self.stats.caller_frames_dropped += 1

    def lost(self, now: float) -> Literal["retry", "give_up", "ignore"]:
        """The socket closed, failed to open, or timed out in the handshake."""
        if self.state is AgentState.CLOSED or self.state is AgentState.BACKOFF:
            return "ignore"
        if self.state is AgentState.READY or self.lost_at is None:
            self.lost_at = now
        self.failures += 1
        self.ping_at = self.pong_due = None
        if self.failures > self.reconnect.attempts:
            self.close()
            return "give_up"
        self.state = AgentState.BACKOFF
        self.deadline = now + self.reconnect.backoff(self.failures)
        return "retry"

    def due(self, now: float) -> Literal["connect", "timeout"] | None:
        """What the passing of time asks for: a new attempt, or giving up on a handshake."""
        if self.deadline is None or now < self.deadline:
            return None
        self.deadline = None
        if self.state is AgentState.BACKOFF:
            self.connecting(now)
            return "connect"
        if self.state is AgentState.HANDSHAKE or self.state is AgentState.CONNECTING:
            return "timeout"
        return None

    def gathered_due(self, now: float) -> bytes | None:
        """Caller audio gathered for a larger frame that waited long enough: send it."""
        if not self._gathered or now < self._gathered_at + self.limits.caller_frame_ms / 1000:
            return None
        audio = bytes(self._gathered)
        self._gathered.clear()
        self.last_send = now
        return audio

    def keepalive_due(self, now: float) -> bool:
        return self.ready and now - self.last_send >= self.limits.keepalive_s

    def next_deadline(self) -> float | None:
        if not self.ready:
            return self.deadline
        due = self.last_send + self.limits.keepalive_s
        liveness = self.pong_due if self.pong_due is not None else self.ping_at
        if liveness is not None and liveness < due:
            due = liveness
        if self._gathered:
            return min(due, self._gathered_at + self.limits.caller_frame_ms / 1000)
        return due

    def close(self) -> None:
        self.state = AgentState.CLOSED
        self.deadline = None
        self.ping_at = self.pong_due = None
        self._held.clear()
        self._held_bytes = 0

    # --- liveness ----------------------------------------------------------------------

    def ping_due(self, now: float) -> bool:
        """Whether to ping the agent now; its answer is due within the pong timeout."""
        if self.ping_at is None or now < self.ping_at:
            return False
        self.ping_at = None
        self.pong_due = now + self.limits.agent_pong_timeout_s
        return True

    def pong(self, now: float) -> None:
        """The agent answered the ping: the next one goes a ping interval from now."""
        if self.pong_due is not None:
            self._ping_from(now)

    def silent(self, now: float) -> bool:
        """The ping went unanswered for the whole pong timeout."""
        return self.pong_due is not None and now >= self.pong_due

    def _ping_from(self, now: float) -> None:
        every = self.limits.agent_ping_s
        self.ping_at = now + every if every > 0 else None
        self.pong_due = None
