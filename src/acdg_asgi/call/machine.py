"""The Call: one phone call as a state machine, with no I/O and no clock.

Theory of operation
-------------------
A call joins two sockets: VAIC's (AudioCodes Bot API) and the agent's (Deepgram Voice
Agent v1). Neither socket belongs to the call: VAIC may drop its socket and resume on a
new one, and the agent connection may be replaced mid-call. So the call is keyed by
``conversationId`` and outlives both.

Inputs are methods, each taking ``now`` (seconds on a monotonic clock):

    vaic(message)          a decoded VAIC message
    vaic_lost() / vaic_resumed()
    agent_connected() / agent(message) / agent_audio(bytes) / agent_lost(reason)
    agent_rejected(reason, status)   a refusal that a retry cannot change (HTTP 401...)
    tick()                 time passed; call at :meth:`next_deadline`
    command methods        what the application asks for (via Session)

Outputs are drained by the runtime after every input:

    to_vaic     AudioCodes messages, in order
    to_agent    Deepgram messages and caller audio (bytes), in order
    events      application events
    actions     what the runtime must do with sockets (connect, close)

VAIC messages are dispatched through ``VAIC_TABLE`` (:mod:`.vaic_table`), keyed by
call state and message class; agent messages through ``AGENT_TABLE``
(:mod:`.agent_table`), keyed by class. A VAIC message that is not expected in the
call's state is a protocol error by the peer: the runtime logs it and tells the
application with a warning event; the call goes on.
"""

from __future__ import annotations

import itertools
from typing import Any, Final

from .. import events as ev
from ..audio import MediaFormat
from ..config import AgentConfig, Limits, Playout, Reconnect
from ..errors import RemoteProtocolError, SessionClosedError
from ..protocols import audiocodes as ac
from ..protocols import deepgram as dg
from .agent_link import AgentLink
from .agent_table import AGENT_TABLE
from .playout import PlayoutClock
from .record import build_record
from .state import Action, CallState, CloseAgent, CloseVaic, ConnectAgent, Measure, Timer, Timers
from .stats import CallStats
from .transcript import Transcript
from .vaic_table import VAIC_TABLE

__all__ = ["Call"]

_MAX_GOODBYE_S: Final = 15.0  # longest a hangup or transfer waits for the agent to finish


class Call:
    def __init__(
        self,
        initiate: ac.SessionInitiate,
        *,
        session_id: str,
        media_format: MediaFormat,
        agent_config: AgentConfig,
        now: float,
        playout: Playout | None = None,
        limits: Limits | None = None,
        reconnect: Reconnect | None = None,
        wall_clock: float = 0.0,
        taken_over: tuple[int, list[dg.History]] | None = None,
    ) -> None:
        """A new call (answers ``session.initiate``), or with ``taken_over=(epoch, history)``
        a call resumed from another instance (answers ``session.resume``)."""
        self.conversation_id = initiate.conversation_id or ""
        self.session_id = session_id
        self.initiate = initiate
        self.media_format = media_format
        self.agent_config = agent_config
        self.limits = limits or Limits()
        self.reconnect = reconnect or Reconnect()
        playout = playout or Playout()
        self.stats = CallStats()
        self.epoch, history = taken_over or (0, [])
        prefix = f"{self.epoch}-" if self.epoch else ""  # streamIds stay unique across owners
        stream_ids = (f"{prefix}{n}" for n in itertools.count(1))
        self.playout = PlayoutClock(
            media_format, lead_ms=playout.lead_ms, chunk_ms=playout.chunk_ms,
            max_buffer_ms=playout.max_buffer_ms, next_stream_id=lambda: next(stream_ids),
            stats=self.stats,
        )
        self.transcript = Transcript()
        self.started_at = now
        self.started_wall = wall_clock  # for the record; the machine itself runs on ``now``
        self.state = CallState.ACTIVE
        self.link = AgentLink(media_format, limits=self.limits, reconnect=self.reconnect,
                              stats=self.stats, now=now)
        self.end_reason: tuple[str, str | None, str | None] | None = None

        self.to_vaic: list[ac.OutboundMessage] = []
        self.to_agent: list[dg.ClientMessage | bytes] = []
        self.events: list[ev.Event] = []
        self.actions: list[Action] = []

        self.discard_agent_audio = False
        self._detached_at: float | None = None
        self.timers = Timers()
        self._pending_end: tuple[str, str | None] | None = None
        self._deferred_end: tuple[ac.Activity, str, str | None] | None = None
        self._deferred_until = 0.0
        # (metric name, value) pairs for whoever observes the call (metrics, tracing)
        self.observations: list[tuple[Measure, float]] = []
        self.barge_in_at: float | None = None  # a barge-in stop waiting to be written

        self.to_vaic.append(ac.SessionAccepted(media_format=media_format.token))
        if taken_over is not None:
            self.transcript.entries.extend(history)
            self.emit(ev.SessionResumedEvent, now, gap_ms=0.0, taken_over=True)
        else:
            self.emit(ev.SessionStartEvent, now, caller=initiate.caller,
                      bot_name=initiate.bot_name, media_format=media_format.token,
                      offered_formats=tuple(initiate.supported_media_formats))
        self.actions.append(ConnectAgent(attempt=1))

    def __repr__(self) -> str:
        return f"<Call {self.conversation_id} {self.state.value} agent={self.link.state.value}>"

    # --- VAIC side ---------------------------------------------------------------------

    def vaic(self, msg: ac.InboundMessage, now: float) -> None:
        handler = VAIC_TABLE.get((self.state, type(msg)))
        if handler is None:
            raise RemoteProtocolError(
                f"{type(msg).__struct_config__.tag} not expected while {self.state.value}",
                conversation_id=self.conversation_id,
            )
        handler(self, msg, now)

    def vaic_ended(self, now: float, reason_code: str | None, reason: str | None) -> None:
        """VAIC's ``session.end``: the call is over (after our hangup, for our reason)."""
        if self.state is CallState.ENDING and self._pending_end is not None:
            end_reason, detail = self._pending_end
            self._finish(now, end_reason, reason_code=reason_code, detail=detail)
        else:
            self._finish(now, "caller", reason_code=reason_code, detail=reason)

    def vaic_lost(self, now: float) -> None:
        """VAIC's socket closed or failed without ``session.end``."""
        if self.state is CallState.ACTIVE and self.limits.resume_grace_s > 0:
            self.state = CallState.DETACHED
            self._detached_at = now
            self.timers.set(Timer.RESUME, now + self.limits.resume_grace_s)
            self.playout.detach()
        elif self.state is CallState.ENDING and self._pending_end is not None:
            reason, detail = self._pending_end
            self._finish(now, reason, detail=detail)
        elif self.state is not CallState.ENDED:
            self._finish(now, "timeout", detail="VAIC socket closed")

    def vaic_resumed(self, now: float) -> None:
        """``session.resume`` arrived on a new socket for this conversation."""
        if self.state is CallState.ENDED:
            raise SessionClosedError("call has ended", conversation_id=self.conversation_id)
        if self.state is CallState.ACTIVE:  # the old socket's loss was not noticed yet
            self.vaic_lost(now)
        self.to_vaic.append(ac.SessionAccepted(media_format=self.media_format.token))
        gap = now - (self._detached_at if self._detached_at is not None else now)
        if self.state is CallState.DETACHED:
            self.state = CallState.ACTIVE
        self.timers.clear(Timer.RESUME)
        self._detached_at = None
        self.stats.resumes += 1
        self.emit(ev.SessionResumedEvent, now, gap_ms=gap * 1000)

    # --- agent side --------------------------------------------------------------------

    def agent_connected(self, now: float) -> None:
        """The agent socket is open; the handshake starts with its ``Welcome``."""
        self.link.connected(now)

    def agent(self, msg: dg.ServerMessage, now: float) -> None:
        handler = AGENT_TABLE.get(type(msg))
        if handler is not None:
            handler(self, msg, now)

    def agent_audio(self, audio: bytes, now: float) -> None:
        stats = self.stats
        stats.agent_frames += 1
        stats.agent_bytes += len(audio)
        if self.discard_agent_audio or self.state is CallState.ENDED:
            return
        if self.state is CallState.ACTIVE and self._deferred_end is None \
                and self.playout.pass_through(audio, now, self.to_vaic):
            return  # the steady state: one chunk in, one out
        dropped = self.playout.push(audio)
        if dropped:
            self.warn(now, "PLAYOUT_OVERFLOW", f"dropped {dropped} bytes of agent audio")
        self.pull(now)

    def agent_lost(self, now: float, reason: str) -> None:
        """The agent socket closed, failed to open, or timed out in the handshake."""
        if self.state is CallState.ENDED or self.state is CallState.ENDING:
            self.link.close()
            return
        outcome = self.link.lost(now)
        if outcome == "ignore":
            return
        self.playout.end_turn()  # let what was already synthesised play out
        if outcome == "give_up":
            self.error(now, "AGENT_UNAVAILABLE", f"agent connection failed: {reason}", fatal=True)
            self.hangup(now, "agent unavailable", end_reason="error")
        else:
            self.warn(now, "AGENT_CONNECTION_LOST", f"{reason}; reconnecting")

    def agent_rejected(self, now: float, reason: str, status: int | None) -> None:
        """The agent refused the connection for good (a wrong key or URL): no retry, the
        caller is hung up with the reason."""
        if self.state is CallState.ENDED or self.state is CallState.ENDING:
            self.link.close()
            return
        self.link.close()
        self.playout.end_turn()  # let what was already synthesised play out
        self.error(now, "AGENT_REJECTED", reason, source="deepgram", fatal=True, status=status)
        why = f" (HTTP {status})" if status is not None else ""
        self.hangup(now, f"agent refused the connection{why}", end_reason="error")

    # --- time --------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`tick` has work to do, or ``None``."""
        if self.state is CallState.ENDED:
            return None
        # Runs after every input: plain comparisons, no temporary lists.
        best = self.link.next_deadline()
        other = self.timers.first
        if other is not None and (best is None or other < best):
            best = other
        if self.state is CallState.ACTIVE:
            other = self.playout.next_deadline()
            if other is not None and (best is None or other < best):
                best = other
            if self._deferred_end is not None:  # the goodbye: once heard, or at the latest
                other = min(self._deferred_until, self.playout.play_head)
                if best is None or other < best:
                    best = other
        return best

    def tick(self, now: float) -> None:
        if self.state is CallState.ENDED:
            return
        for timer in self.timers.due(now):
            self._timer_due(timer, now)
        if not self.is_open:
            return
        due = self.link.due(now)
        if due == "connect":
            self.actions.append(ConnectAgent(attempt=self.link.failures + 1))
        elif due == "timeout":
            self.actions.append(CloseAgent())
            self.agent_lost(now, "agent handshake timed out")
        gathered = self.link.gathered_due(now)
        if gathered is not None:
            self.to_agent.append(gathered)
        if self.link.keepalive_due(now):
            self.to_agent.append(dg.KeepAlive())
            self.link.last_send = now
        self.pull(now)

    def _timer_due(self, timer: Timer, now: float) -> None:
        if timer is Timer.HANGUP:
            reason, detail = self._pending_end or ("ended", None)
            self._finish(now, reason, detail=detail)
        elif timer is Timer.RESUME:
            self._finish(now, "timeout", detail="VAIC did not resume in time")

    def pull(self, now: float) -> None:
        if self.state is CallState.ACTIVE or self.state is CallState.ENDING:
            self.playout.pull(now, self.to_vaic)
        if self._deferred_end is not None:
            self._end_when_played(now)

    # --- commands (from Session) -------------------------------------------------------

    def unplayed_s(self, now: float) -> float:
        """Seconds of agent audio produced that the caller has not heard yet."""
        playout = self.playout
        return max(0.0, playout.play_head - now) + playout.pending / playout.bytes_per_s

    @property
    def is_open(self) -> bool:
        """Not ended yet (a timer may have just ended it)."""
        return self.state is not CallState.ENDED

    @property
    def is_active(self) -> bool:
        return self.state is CallState.ACTIVE or self.state is CallState.DETACHED

    def end_session(self, now: float, reason: str) -> None:
        """The application hangs up."""
        self._check_open("end_session")
        self.hangup(now, reason)

    def transfer_call(self, now: float, activity: ac.Activity) -> None:
        """The application transfers the call."""
        self._check_open("transfer")
        self.transfer(now, activity)

    def _check_open(self, what: str) -> None:
        if not self.is_active:
            raise SessionClosedError(
                f"{what}: call is {self.state.value}", conversation_id=self.conversation_id
            )

    def send_to_agent(self, msg: dg.ClientMessage, now: float) -> None:
        self._check_open(type(msg).__name__)
        if isinstance(msg, dg.FunctionCallResponse) and not self.transcript.function_answered(msg):
            return
        if self.link.ready:
            self.to_agent.append(msg)
            self.link.last_send = now
        else:
            self.warn(now, "AGENT_NOT_READY", f"{type(msg).__name__} dropped: agent reconnecting")

    def send_activities(self, activities: tuple[ac.Activity, ...], now: float) -> None:
        self._check_open("send_activity")
        self.to_vaic.append(ac.OutboundActivities(activities=activities))

    def hangup(
        self, now: float, reason: str, *, end_reason: str = "ended", wait_for_playout: bool = True
    ) -> None:
        """Hang up (``hangup`` activity with ``hangupReason``) once the agent's words have
        played; the call ends when VAIC confirms or after ``hangup_timeout_s``."""
        activity = ac.Activity(
            type="event", name="hangup", activity_params={"hangupReason": reason}
        )
        if wait_for_playout:
            self._end_after_playout(now, activity, end_reason, reason)
        else:
            self._end_with(now, activity, end_reason, reason)

    def transfer(self, now: float, activity: ac.Activity) -> None:
        """Transfer once the agent's words have played; the call ends with it."""
        target = (activity.activity_params or {}).get("transferTarget")
        self._end_after_playout(now, activity, "transfer", str(target))

    def _end_after_playout(
        self, now: float, activity: ac.Activity, end_reason: str, detail: str | None
    ) -> None:
        if self.state is not CallState.ACTIVE or self._deferred_end is not None:
            self._end_with(now, activity, end_reason, detail)
            return
        # "Goodbye" is usually the last thing the agent said: let the caller hear it.
        self._deferred_end = (activity, end_reason, detail)
        self._deferred_until = now + _MAX_GOODBYE_S
        self._end_when_played(now)

    def _end_when_played(self, now: float) -> None:
        if self._deferred_end is None:
            return
        played = not self.playout.speaking and self.playout.play_head <= now
        if played or now >= self._deferred_until or self.state is not CallState.ACTIVE:
            activity, end_reason, detail = self._deferred_end
            self._deferred_end = None
            self._end_with(now, activity, end_reason, detail)

    def _end_with(
        self, now: float, activity: ac.Activity, end_reason: str, detail: str | None
    ) -> None:
        if self.state is CallState.ENDING or self.state is CallState.ENDED:
            return
        self._deferred_end = None
        _, stop = self.playout.cut(now)
        if self.state is CallState.DETACHED:
            # Nobody to tell; VAIC's resume would be refused now anyway.
            self._finish(now, end_reason, detail=detail)
            return
        if stop is not None:
            self.to_vaic.append(stop)
        self.to_vaic.append(ac.OutboundActivities(activities=(activity,)))
        self.state = CallState.ENDING
        self._pending_end = (end_reason, detail)
        self.timers.set(Timer.HANGUP, now + self.limits.hangup_timeout_s)
        self.actions.append(CloseAgent())
        self.link.close()

    def _finish(
        self, now: float, reason: str, *, reason_code: str | None = None, detail: str | None = None
    ) -> None:
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        self.link.close()
        self.end_reason = (reason, reason_code, detail)
        self.playout.clear()
        self.actions.append(CloseAgent())
        self.actions.append(CloseVaic(reason=reason))
        self.emit(ev.SessionEndEvent, now, reason=reason, reason_code=reason_code,
                  detail=detail, duration_s=now - self.started_at, record=build_record(self, now))

    def end(self, now: float, reason: str, detail: str | None = None) -> None:
        """End the call at once (no hangup activity): drain deadline, fatal bugs."""
        self._finish(now, reason, detail=detail)

    # --- helpers -----------------------------------------------------------------------

    def emit(self, cls: type[ev.Event], now: float, **fields: Any) -> None:
        self.events.append(
            cls(session_id=self.session_id, conversation_id=self.conversation_id, at=now, **fields)
        )

    def warn(self, now: float, code: str, description: str, *, source: str = "bridge") -> None:
        self.stats.warnings += 1
        self.emit(ev.WarningEvent, now, code=code, description=description, source=source)

    def error(
        self, now: float, code: str, message: str, *, source: str = "bridge", fatal: bool = False,
        status: int | None = None,
    ) -> None:
        self.stats.errors += 1
        self.emit(ev.BridgeErrorEvent, now, code=code, message=message, source=source,
                  fatal=fatal, status=status)

    def protocol_warning(self, now: float, source: str, description: str) -> None:
        """A peer sent something wrong; tell the application, keep going."""
        self.warn(now, "PROTOCOL_ERROR", description, source=source)
