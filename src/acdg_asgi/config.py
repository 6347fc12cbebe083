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

Every value is checked where it is given: a misspelt keyword or dict key names the
nearest known one (:func:`check_keys`), and a value of the wrong type or out of range is
a :class:`~acdg_asgi.errors.ConfigError` naming the setting, at construction.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any, Final

import msgspec

from .errors import ConfigError
from .protocols import deepgram as dg
from .protocols._codec import CheckedKeywords, nearest

__all__ = [
    "DEFAULT_KEEPALIVE_S",
    "DEFAULT_RESUME_GRACE_S",
    "DEFAULT_TRANSFER_FAILED",
    "AgentConfig",
    "Budget",
    "Limits",
    "Participants",
    "Playout",
    "Reconnect",
    "Secret",
    "VaicSessionParams",
    "as_agent_config",
    "check_keys",
]

DEFAULT_RESUME_GRACE_S: Final = 30.0
DEFAULT_KEEPALIVE_S: Final = 8.0
DEFAULT_LEAD_MS: Final = 100
DEFAULT_CHUNK_MS: Final = 20
DEFAULT_TRANSFER_FAILED: Final = (
    "I'm sorry, I couldn't transfer your call: {reason}. Is there anything else I can do "
    "for you?"
)
TRANSFER_REASONS: Final = {  # transferStatus reasonCode, as the agent says it
    "busy": "the line is busy",
    "no-answer": "nobody answered",
    "declined": "the call was declined",
    "error": "something went wrong",
}
_RESERVED_SETTINGS: Final = frozenset({"type", "audio"})  # the bridge's own


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


class _Checked(msgspec.Struct, kw_only=True, frozen=True, metaclass=CheckedKeywords):
    """A config object: misspelt keywords name the nearest field; each field's type is
    checked at construction (``Limits(max_calls="10")`` is refused)."""

    def __post_init__(self) -> None:
        _check_types(self)


class AgentConfig(_Checked, frozen=True, omit_defaults=True):
    """Everything of the Deepgram ``Settings`` message except ``audio``.

    ``agent`` is the agent's settings, or the id (a UUID) of an agent configuration stored
    at Deepgram ("reusable agent configurations"). The bridge fills ``audio`` from the
    format negotiated with VAIC; on a reconnect it drops the greeting and appends the
    conversation so far to ``agent.context`` (after any messages seeded there). ``extra``
    is merged into the message as it is: the way to reach Settings fields newer than
    this package, e.g. ``extra={"agent": {"some_new_field": 1}}``.
    """

    agent: dg.AgentSettings | str = dg.AgentSettings()
    tags: tuple[str, ...] | None = None
    experimental: bool | None = None
    mip_opt_out: bool | None = None
    flags: dg.Flags | None = None
    extra: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_types(self)
        if isinstance(self.agent, str):
            try:
                uuid.UUID(self.agent)
            except ValueError:
                raise ConfigError(
                    f"agent {self.agent[:40]!r} is neither agent settings nor the id (a UUID) "
                    "of a Deepgram agent configuration") from None
        reserved = _RESERVED_SETTINGS & set(self.extra or ())
        if reserved:
            raise ConfigError(f"AgentConfig.extra may not set {sorted(reserved)}: "
                              "the bridge owns them")
        if isinstance(self.agent, str) and "agent" in (self.extra or {}):
            raise ConfigError("AgentConfig.extra cannot add agent fields to a stored agent "
                              "configuration id")

    @property
    def stored(self) -> bool:
        """Whether ``agent`` is the id of a configuration stored at Deepgram."""
        return isinstance(self.agent, str)

    def settings(
        self, audio: dg.AudioSettings, *, history: tuple[dg.History, ...] = ()
    ) -> dg.Settings:
        """The ``Settings`` message for one connection to the agent."""
        agent = self.agent
        if history and isinstance(agent, dg.AgentSettings):
            seeded = agent.context.messages if agent.context is not None else ()
            agent = msgspec.structs.replace(
                agent, greeting=None, context=dg.Context(messages=seeded + history)
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
            extra=self.extra,
        )


def as_agent_config(value: AgentConfig | dg.AgentSettings | dict[str, Any] | str) -> AgentConfig:
    """Accept an :class:`AgentConfig`, bare agent settings, the id of a stored Deepgram
    agent configuration, or the same as a plain dict.

    A dict may be ``{"agent": {...}, "tags": [...]}`` or just the ``agent`` object. A key
    the settings do not have is refused, naming the nearest known one: a misspelt
    ``"promt"`` would otherwise leave the agent without its prompt.
    """
    if isinstance(value, AgentConfig):
        return value
    if isinstance(value, dg.AgentSettings | str):
        return AgentConfig(agent=value)
    if isinstance(value, dict):
        data = value if "agent" in value else {"agent": value}
        data = {k: v for k, v in data.items() if k != "audio"}  # the bridge owns audio
        check_keys(data, AgentConfig, "the agent config")
        try:
            return msgspec.convert(data, AgentConfig)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid agent config: {exc}") from None
    raise ConfigError("agent config must be AgentConfig, AgentSettings, an agent "
                      f"configuration id or a dict, not {value!r}")


def check_keys(data: Any, schema: Any, where: str) -> None:
    """Refuse keys of ``data`` (plain dicts and lists, as from JSON or TOML) that the type
    ``schema`` does not have, each named with its path and the nearest known key.

    Free-form dicts (a provider's settings) are not looked into; nor is a union of
    several Struct types, which only its decoder can tell apart.
    """
    problems = list(_unknown_keys(data, msgspec.inspect.type_info(schema), ""))
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))


def _unknown_keys(data: Any, info: msgspec.inspect.Type, path: str) -> list[str]:
    inspect = msgspec.inspect
    if isinstance(info, inspect.UnionType):
        kinds = (inspect.StructType,) if isinstance(data, dict) else (
            inspect.ListType, inspect.VarTupleType, inspect.TupleType) if isinstance(
            data, list) else ()
        members = [t for t in info.types if isinstance(t, kinds)] if kinds else []
        return _unknown_keys(data, members[0], path) if len(members) == 1 else []
    if isinstance(info, inspect.StructType) and isinstance(data, dict):
        fields = {f.encode_name: f.type for f in info.fields}
        if info.tag_field is not None:
            fields[info.tag_field] = inspect.AnyType()
        found = []
        for key, value in data.items():
            name = f"{path}.{key}" if path else str(key)
            if key not in fields:
                found.append(f"unknown key {name!r}{nearest(str(key), fields)}")
            else:
                found += _unknown_keys(value, fields[key], name)
        return found
    if isinstance(info, inspect.ListType | inspect.VarTupleType) and isinstance(data, list):
        return [p for i, item in enumerate(data)
                for p in _unknown_keys(item, info.item_type, f"{path}[{i}]")]
    if isinstance(info, inspect.TupleType) and isinstance(data, list):
        return [p for i, (item, t) in enumerate(zip(data, info.item_types, strict=False))
                for p in _unknown_keys(item, t, f"{path}[{i}]")]
    return []


@functools.cache
def _fields(cls: type[msgspec.Struct]) -> tuple[msgspec.structs.FieldInfo, ...]:
    """A settings class's fields, resolved once: resolving their annotations is most of
    a check's cost, and a call replaces its agent's settings as it starts."""
    return msgspec.structs.fields(cls)


def _check_types(obj: msgspec.Struct, *, skip: tuple[str, ...] = ()) -> None:
    """Each field of ``obj`` holds its declared type (an int where a float goes, a list
    where a tuple goes, are fine); fields in ``skip`` (hooks) are checked by the caller."""
    for field in _fields(type(obj)):
        if field.name in skip:
            continue
        value = getattr(obj, field.name)
        try:
            converted = msgspec.convert(value, field.type, strict=True)
        except msgspec.ValidationError as exc:
            got = f"{field.name}={value!r}"
            raise ConfigError(f"{type(obj).__name__}({got}): {exc}") from None
        if type(converted) is not type(value) and not (
                isinstance(converted, float) and isinstance(value, int)) and not (
                isinstance(converted, tuple) and isinstance(value, list)):
            raise ConfigError(f"{type(obj).__name__}({field.name}={value!r}): expected "
                              f"{type(converted).__name__}, got {type(value).__name__}")


def _at_least(obj: msgspec.Struct, minimum: float, *names: str, none_ok: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None and none_ok:
            continue
        if value < minimum:
            bound = "more than 0" if minimum == 1e-9 else f"{minimum:g} or more"
            also = ", or None for no limit" if none_ok else ""
            raise ConfigError(f"{type(obj).__name__}({name}={value!r}): {name} must be "
                              f"{bound}{also}")


class Playout(_Checked, frozen=True):
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
        _check_types(self)
        _at_least(self, 0, "lead_ms")
        _at_least(self, 1, "chunk_ms")
        if self.max_buffer_ms < self.chunk_ms:
            raise ConfigError(f"Playout(max_buffer_ms={self.max_buffer_ms!r}): max_buffer_ms "
                              f"must be at least chunk_ms ({self.chunk_ms})")


class Reconnect(_Checked, frozen=True):
    """Retries of the agent connection, with exponential backoff.

    ``attempts`` consecutive failures end the call (hang up with a reason); a connection
    that reaches ``SettingsApplied`` resets the count.
    """

    attempts: int = 5
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 3.0

    def __post_init__(self) -> None:
        _check_types(self)
        _at_least(self, 0, "attempts", "initial_backoff_s", "max_backoff_s")

    def backoff(self, failures: int) -> float:
        if failures <= 1:
            return 0.0  # the first retry goes at once: the caller is waiting
        return float(min(self.max_backoff_s, self.initial_backoff_s * 2 ** (failures - 2)))


class Budget(_Checked, frozen=True):
    """What one VAIC socket may send: ``messages_per_s`` and ``bytes_per_s`` on average,
    with bursts of ``burst_s`` worth (and always one whole frame). A frame costs its size
    plus ``bytes_per_s / messages_per_s``, so a stream of tiny messages is held to
    ``messages_per_s`` and one of large frames to ``bytes_per_s``.

    VAIC sends 50 audio frames a second of about 1 KB (1.4 KB at 24 kHz): about a third
    of the default budget. A socket over its budget is not read until it is back within it
    (its bytes wait in the kernel, and so at its sender), so the frames it sends cost
    what an honest call's cost. One that stays over its budget is warned after
    ``warn_after_s`` and closed (1008) after ``close_after_s``.
    """

    messages_per_s: float = 200.0
    bytes_per_s: float = 512 * 1024
    burst_s: float = 1.0
    warn_after_s: float = 2.0
    close_after_s: float = 10.0

    def __post_init__(self) -> None:
        _check_types(self)
        _at_least(self, 1e-9, "messages_per_s", "bytes_per_s", "burst_s")
        _at_least(self, 0, "warn_after_s")
        if self.close_after_s < self.warn_after_s:
            raise ConfigError(f"Budget(close_after_s={self.close_after_s!r}): close_after_s "
                              f"must be warn_after_s ({self.warn_after_s!r}) or more")


class Limits(_Checked, frozen=True):
    """Bounds that keep one bad call or a flood of calls from hurting the rest, and the
    size of caller audio frames toward the agent.

    ``max_frame_bytes``: larger VAIC frames are ignored (from the first frame on).
    ``vaic_budget``: the rate each VAIC socket may send at (see :class:`Budget`).
    ``outbound_queue_bytes``: audio waiting for a peer that reads slower than real time,
    per socket; beyond it the oldest audio is dropped (a peer that stops reading even its
    control messages is closed).
    ``warning_interval_s``: repeats of one kind of warning within it are folded into one
    (0: every warning is reported on its own).
    ``resume_probe_s``: a ``session.resume`` for a call whose socket is still open is
    answered only if that socket stays silent this long (no answer to a ping, no frame);
    if it proves alive, the resume is refused.
    ``agent_ping_s`` and ``agent_pong_timeout_s``: the agent connection is pinged every
    ``agent_ping_s``; one that does not answer within ``agent_pong_timeout_s`` is lost.
    ``dead_air_s``: the longest the caller hears nothing because no agent is connected
    (an outage, a reconnect, an agent that never answers); then the caller hears
    ``hold_prompt_url`` (a ``playUrl``) if set, while the reconnects go on, or a polite
    hangup with a reason.

    ``caller_frame_ms``: 0 forwards each ``userStream.chunk`` as it comes (VAIC sends
    20 ms); 40 or 60 sends fewer, larger frames, which costs less CPU and adds up to the
    difference in latency. Pair it with ``Playout(chunk_ms=...)`` for the other way.
    """

    max_calls: int | None = 1000
    max_frame_bytes: int = 256 * 1024
    vaic_budget: Budget = Budget()
    initiate_timeout_s: float = 10.0
    handshake_timeout_s: float = 10.0
    hangup_timeout_s: float = 5.0
    resume_grace_s: float = DEFAULT_RESUME_GRACE_S
    resume_probe_s: float = 2.0
    keepalive_s: float = DEFAULT_KEEPALIVE_S
    agent_ping_s: float = 5.0
    agent_pong_timeout_s: float = 3.0
    dead_air_s: float = 5.0
    hold_prompt_url: str | None = None
    pre_ready_audio_ms: int = 3000
    event_queue: int = 1000
    outbound_queue_bytes: int = 256 * 1024
    warning_interval_s: float = 5.0
    caller_frame_ms: int = 0
    # How long a per-call agent factory waits for VAIC's ``start`` (the call's details);
    # the agent connection opens meanwhile, so a prompt ``start`` costs no time.
    start_wait_s: float = 0.3
    # After a transfer: how long to wait for VAIC's transferStatus or session.end.
    transfer_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        _check_types(self)
        _at_least(self, 1, "max_calls", none_ok=True)
        _at_least(self, 1, "max_frame_bytes", "event_queue", "outbound_queue_bytes")
        _at_least(self, 1e-9, "initiate_timeout_s", "handshake_timeout_s", "hangup_timeout_s",
                  "keepalive_s", "transfer_timeout_s", "agent_pong_timeout_s")
        _at_least(self, 0, "resume_grace_s", "pre_ready_audio_ms", "caller_frame_ms",
                  "start_wait_s", "resume_probe_s", "agent_ping_s", "dead_air_s",
                  "warning_interval_s")


class VaicSessionParams(_Checked, frozen=True, omit_defaults=True):
    """VAIC session parameters the bridge sends at call start, as a ``config`` activity
    with ``sessionParams`` (only those set). Opt in with ``BridgeApp(vaic_session=...)``.

    ``barge_in=True`` makes VAIC keep streaming caller audio while the agent speaks, which
    the bridge's barge-in needs (Live Hub's default is off). ``send_events_to_bot`` names
    the notifications VAIC should send (``noUserInput``, ``playFinished``, ...).
    ``extra`` goes into ``sessionParams`` as it is, for any other parameter.
    """

    barge_in: bool | None = msgspec.field(default=None, name="bargeIn")
    send_events_to_bot: tuple[str, ...] | None = msgspec.field(
        default=None, name="sendEventsToBot")
    send_dtmf: bool | None = msgspec.field(default=None, name="sendDTMF")
    user_no_input_timeout_ms: int | None = msgspec.field(
        default=None, name="userNoInputTimeoutMS")
    user_no_input_retries: int | None = msgspec.field(default=None, name="userNoInputRetries")
    user_no_input_give_up_timeout_ms: int | None = msgspec.field(
        default=None, name="userNoInputGiveUpTimeoutMS")
    bot_no_input_timeout_ms: int | None = msgspec.field(
        default=None, name="botNoInputTimeoutMS")
    language: str | None = None
    extra: dict[str, Any] | None = None

    def session_params(self) -> dict[str, Any]:
        params: dict[str, Any] = msgspec.to_builtins(msgspec.structs.replace(self, extra=None))
        return {**params, **(self.extra or {})}


class Participants(_Checked, frozen=True):
    """Calls with several participants (VAIC agent assist): whom the agent hears, and
    where its voice goes.

    ``agent_hears``: ``"caller"`` (default) is the participant whose ``uriUser`` in
    ``start`` is the caller's number, else the one named ``caller``, else the first whose
    stream starts; ``"first"`` is the first stream to start; any other value is a
    participant name. Audio of everyone else never reaches the agent (reported once per
    participant with ``participant_ignored``). A plain call's stream has no participant
    and always reaches the agent. ``play_to`` and ``target_player`` go on every
    ``playStream.start`` (``participant``, ``targetPlayer``) when set.
    """

    agent_hears: str = "caller"
    play_to: str | None = None
    target_player: str | None = None
