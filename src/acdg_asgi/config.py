"""Configuration objects: keyword-only, typed, frozen, with the defaults named.

Usage::

    BridgeApp(
        agent=AgentConfig(agent=AgentSettings(think=ThinkSettings(...), greeting="Hi!")),
        playout=Playout(lead_ms=100),          # pace agent audio, 100 ms ahead of real time
        limits=Limits(max_calls=200),
        reconnect=Reconnect(attempts=5),
    )

Secrets (the Deepgram key, the VAIC token) are held in :class:`Secret`, which never
shows its value in a repr, a log line or an exception.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .errors import ConfigError
from .protocols import deepgram as dg

__all__ = [
    "DEFAULT_KEEPALIVE_S",
    "DEFAULT_RESUME_GRACE_S",
    "AgentConfig",
    "Limits",
    "Playout",
    "Reconnect",
    "Secret",
    "as_agent_config",
]

DEFAULT_RESUME_GRACE_S: Final = 30.0
DEFAULT_KEEPALIVE_S: Final = 8.0
DEFAULT_LEAD_MS: Final = 100
DEFAULT_CHUNK_MS: Final = 20


class Secret:
    """A string that is masked wherever it is shown."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')" if self._value else "Secret('')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class AgentConfig(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Everything of the Deepgram ``Settings`` message except ``audio``.

    The bridge fills ``audio`` from the format negotiated with VAIC, and on a reconnect
    adds the conversation so far as ``agent.context`` and drops the greeting.
    """

    agent: dg.AgentSettings = dg.AgentSettings()
    tags: tuple[str, ...] | None = None
    experimental: bool | None = None
    mip_opt_out: bool | None = None
    flags: dg.Flags | None = None

    def settings(
        self, audio: dg.AudioSettings, *, history: tuple[dg.History, ...] = ()
    ) -> dg.Settings:
        """The ``Settings`` message for one connection to the agent."""
        agent = self.agent
        if history:
            agent = msgspec.structs.replace(
                agent, greeting=None, context=dg.Context(messages=history)
            )
        flags = self.flags
        if history and flags is not None and not flags.history:
            flags = None  # replayed context needs history kept on
        return dg.Settings(
            audio=audio,
            agent=agent,
            tags=self.tags,
            experimental=self.experimental,
            mip_opt_out=self.mip_opt_out,
            flags=flags,
        )


def as_agent_config(value: AgentConfig | dg.AgentSettings | dict[str, Any]) -> AgentConfig:
    """Accept an :class:`AgentConfig`, bare agent settings, or the same as a plain dict.

    A dict may be ``{"agent": {...}, "tags": [...]}`` or just the ``agent`` object.
    """
    if isinstance(value, AgentConfig):
        return value
    if isinstance(value, dg.AgentSettings):
        return AgentConfig(agent=value)
    if isinstance(value, dict):
        data = value if "agent" in value else {"agent": value}
        data = {k: v for k, v in data.items() if k != "audio"}  # the bridge owns audio
        try:
            return msgspec.convert(data, AgentConfig)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid agent config: {exc}") from None
    raise ConfigError(f"agent config must be AgentConfig, AgentSettings or dict, not {value!r}")


class Playout(msgspec.Struct, kw_only=True, frozen=True):
    """How agent audio goes out to VAIC.

    ``lead_ms``: how far ahead of real time audio may be sent. Smaller cuts the agent off
    sooner when the caller barges in; larger rides out more network jitter. 0 forwards
    every frame at once (no pacing). ``chunk_ms``: audio per ``playStream.chunk``.
    ``max_buffer_ms``: audio kept waiting per call; beyond it the oldest is dropped.
    """

    lead_ms: int = DEFAULT_LEAD_MS
    chunk_ms: int = DEFAULT_CHUNK_MS
    max_buffer_ms: int = 120_000

    def __post_init__(self) -> None:
        if self.lead_ms < 0 or self.chunk_ms <= 0 or self.max_buffer_ms < self.chunk_ms:
            raise ConfigError(f"invalid playout settings: {self!r}")


class Reconnect(msgspec.Struct, kw_only=True, frozen=True):
    """Retries of the agent connection, with exponential backoff.

    ``attempts`` consecutive failures end the call (hang up with a reason); a connection
    that reaches ``SettingsApplied`` resets the count.
    """

    attempts: int = 5
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 3.0

    def backoff(self, failures: int) -> float:
        if failures <= 1:
            return 0.0  # the first retry goes at once: the caller is waiting
        return float(min(self.max_backoff_s, self.initial_backoff_s * 2 ** (failures - 2)))


class Limits(msgspec.Struct, kw_only=True, frozen=True):
    """Bounds that keep one bad call or a flood of calls from hurting the rest, and the
    size of caller audio frames toward the agent.

    ``caller_frame_ms``: 0 forwards each ``userStream.chunk`` as it comes (VAIC sends
    20 ms); 40 or 60 sends fewer, larger frames, which costs less CPU and adds up to the
    difference in latency. Pair it with ``Playout(chunk_ms=...)`` for the other way.
    """

    max_calls: int | None = 1000
    max_frame_bytes: int = 256 * 1024
    initiate_timeout_s: float = 10.0
    handshake_timeout_s: float = 10.0
    hangup_timeout_s: float = 5.0
    resume_grace_s: float = DEFAULT_RESUME_GRACE_S
    keepalive_s: float = DEFAULT_KEEPALIVE_S
    pre_ready_audio_ms: int = 3000
    event_queue: int = 1000
    outbound_queue: int = 500  # messages waiting for a slow peer; oldest audio goes first
    caller_frame_ms: int = 0
