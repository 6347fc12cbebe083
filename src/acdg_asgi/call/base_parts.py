"""What the policies' sub-machines may touch of a call: its parts and outboxes.

:class:`~acdg_asgi.call.machine.Call` is the one implementation. The sub-machines of the
contact-centre policies (:mod:`.tools`, :mod:`.interruption`, :mod:`.no_input`,
:mod:`.dtmf`, :mod:`.sensitive`) and of each agent connection's setup
(:mod:`.agent_setup`) are written against this interface; the tables against
:class:`~.parts.CallParts`, which adds the sub-machines themselves.
"""

from __future__ import annotations

from typing import Any, Protocol

from .. import events as ev
from ..audio import MediaFormat
from ..policies import CallOptions
from ..protocols import audiocodes as ac
from ..protocols import deepgram as dg
from .agent_link import AgentLink
from .agent_state import CurrentAgent
from .playout import PlayoutClock
from .state import Action, CallState, Measure, Timers
from .stats import CallStats
from .transcript import Transcript

__all__ = ["CallBase"]


class CallBase(Protocol):
    conversation_id: str
    session_id: str
    initiate: ac.SessionInitiate
    media_format: MediaFormat
    configuration: CurrentAgent
    options: CallOptions
    state: CallState
    started_at: float
    started_wall: float
    end_reason: tuple[str, str | None, str | None] | None

    link: AgentLink
    playout: PlayoutClock
    transcript: Transcript
    discard_agent_audio: bool
    barge_in_at: float | None
    details: ev.CallDetails | None
    hearing: str | None
    ignored: list[str]
    request_ids: list[str]
    frustration: int
    timers: Timers

    to_vaic: list[ac.OutboundMessage]
    to_agent: list[dg.ClientMessage | bytes]
    actions: list[Action]
    observations: list[tuple[Measure, float]]

    @property
    def stats(self) -> CallStats: ...

    def emit(self, cls: type[ev.Event], now: float, **fields: Any) -> None: ...

    def observers_see(self, **fields: Any) -> None: ...

    def warn(
        self, now: float, code: str, description: str, *, source: str = ..., kind: str | None = ...
    ) -> None: ...

    def error(
        self, now: float, code: str, message: str, *, source: str = ..., fatal: bool = ...
    ) -> None: ...

    def pull(self, now: float) -> None: ...

    @property
    def is_active(self) -> bool: ...

    def unplayed_s(self, now: float) -> float: ...

    def hangup(
        self, now: float, reason: str, *, end_reason: str = ..., wait_for_playout: bool = ...,
        params: dict[str, Any] | None = ...,
    ) -> None: ...

    def hang_up_saying(self, now: float, goodbye: str | None, reason: str, *,
                       end_reason: str) -> None: ...

    def goodbye_begun(self) -> None: ...

    def transfer_call(self, now: float, activity: ac.Activity) -> None: ...

    def send_activities(self, activities: tuple[ac.Activity, ...], now: float) -> None: ...

    def to_agent_when_ready(self, msg: dg.ClientMessage, now: float) -> None: ...

    def watch_caller_audio(self) -> None: ...

    def agent_lost(self, now: float, reason: str) -> None: ...

    def dead_air_over(self, now: float) -> None: ...

    def vaic_ended(self, now: float, reason_code: str | None, reason: str | None) -> None: ...

    def protocol_warning(self, now: float, source: str, description: str) -> None: ...

    def call_started(self, details: ev.CallDetails, now: float) -> None: ...

    def transfer_status(
        self, status: str | None, reason_code: str | None, reason: str | None, now: float
    ) -> None: ...

    def heard_from(self, participant: str, now: float, *, audio: bool = ...) -> bool: ...

    def heard(self, cut_tag: int | None, share: float, unplayed: tuple[int, ...]
              ) -> tuple[str | None, str | None]: ...

    def shared_changed(self) -> None: ...
