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
    agent_pong()           the agent answered a ping (:class:`~.state.PingAgent`)
    stalled(seconds)       the bridge itself did not run for that long (its event loop)
    tick()                 time passed; call at :meth:`next_deadline`
    command methods        what the application asks for (via Session)
    agent_chosen(config)   a per-call factory's answer (asked for with ChooseAgent)

Each agent connection's way to ready (``Welcome``, ``Settings``, what waits for
``SettingsApplied``) is a sub-machine of its own (:mod:`.agent_setup`), as the connection
itself is (:mod:`.agent_link`).

The contact-centre policies (``CallOptions``) are sub-machines of their own, each fed by
the tables and the call: the agent's telephony tools (:mod:`.tools`), what may interrupt
the agent (:mod:`.interruption`), the caller's silence (:mod:`.no_input`), keys
(:mod:`.dtmf`), and sensitive mode with the redaction hook (:mod:`.sensitive`).

A call is ACTIVE, TRANSFERRING (a transfer went to VAIC: the agent connection stays up,
caller audio does not reach it, and VAIC's ``transferStatus`` decides: ``failed`` back
to ACTIVE, ``answered`` to ENDING), DETACHED (VAIC's socket lost, a resume awaited; a
transfer under way is kept), ENDING (a hangup sent) or ENDED.

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

Agent trouble is bounded by the dead-air budget (``Limits.dead_air_s``, timer
``DEAD_AIR``): from the moment the caller has heard the last agent audio with no agent
connected, it has that long to come back; then the caller hears the hold prompt
(``Limits.hold_prompt_url``) while the reconnects go on, or a polite hangup. While no
agent is ready the budget alone speaks for the silence: the no-input policy neither
times nor counts it (its timer starts again once an agent is back), so the two never
both act on one silence. A transfer under way is not dead air (the caller hears the
transfer); one that fails with no agent connected starts the budget when it fails.
"""

from __future__ import annotations

import itertools
from typing import Any, Final

import msgspec

from .. import events as ev
from ..audio import MediaFormat, strip_wav_header
from ..config import AgentConfig, Limits, Playout, Reconnect
from ..errors import LocalProtocolError, RemoteProtocolError, SessionClosedError
from ..policies import CallOptions, SensitiveMode, ToolVerdict
from ..protocols import audiocodes as ac
from ..protocols import deepgram as dg
from .agent_link import AgentLink, AgentState
from .agent_setup import AgentSetup
from .agent_state import AgentUpdate, CurrentAgent
from .agent_table import AGENT_TABLE
from .dtmf import DigitInput
from .fold import Fold, Folded
from .interruption import BargeIn
from .no_input import NoInputWatch
from .playout import PlayoutClock, split_heard
from .record import build_record
from .sensitive import Masking
from .state import (
    Action,
    CallShared,
    CallState,
    ChooseAgent,
    CloseAgent,
    CloseVaic,
    ConnectAgent,
    Measure,
    PendingTransfer,
    PingAgent,
    Timer,
    Timers,
)
from .stats import CallStats
from .tools import ToolRunner
from .transcript import Transcript
from .vaic_table import VAIC_TABLE

__all__ = ["Call"]

# Enum members read through their class go through EnumType.__getattr__'s slow lookup;
# the per-frame paths compare with these instead.
_ACTIVE: Final = CallState.ACTIVE

_MAX_GOODBYE_S: Final = 15.0  # longest a hangup or transfer waits for the agent to finish


class _CallFramePath:
    """The slots of :class:`Call` that its frames read, first in the object.

    With many calls a call's objects have left the CPU's caches by its next frame, so a
    frame pays a trip to memory for each cache line it touches, and that, more than the
    instructions, is what a frame costs under load (``benchmarks/footprint.py``).
    CPython lays slots out sorted by name, a base class's before its subclass's: a base
    like this one keeps the fields a frame reads in one or two lines instead of spread
    over the object. The classes on the frame path each have one.
    """

    __slots__ = ("_deferred_end", "actions", "discard_agent_audio", "events", "link",
                 "playout", "state", "to_agent", "to_vaic")


class Call(_CallFramePath):
    # Slots: a call has more attributes than CPython's instances share a dict's keys for
    # (30), so without them each call would carry a dict of its own (1.6 KB).
    __slots__ = (
        "_deferred_until", "_detached_at", "_pending_end", "_silence", "_stats", "_warnings",
        "barge", "barge_in_at", "configuration", "conversation_id", "details", "digits",
        "end_reason", "epoch", "frustration", "hearing", "ignored", "initiate", "limits",
        "masking", "media_format", "no_input", "observations", "observed", "on_hold",
        "options", "reconnect", "request_ids", "saying_goodbye", "session_id",
        "session_started", "setup", "shared_version", "started_at", "started_wall", "timers",
        "tools", "transcript", "transfer_pending",
    )

    def __init__(
        self,
        initiate: ac.SessionInitiate,
        *,
        session_id: str,
        media_format: MediaFormat,
        agent_config: AgentConfig | None,
        now: float,
        playout: Playout | None = None,
        limits: Limits | None = None,
        reconnect: Reconnect | None = None,
        options: CallOptions | None = None,
        wall_clock: float = 0.0,
        taken_over: tuple[int, list[dg.History], CallShared] | None = None,
    ) -> None:
        """A new call (answers ``session.initiate``), or with ``taken_over=(epoch, history,
        shared)`` a call resumed from another instance (answers ``session.resume``).

        ``agent_config=None``: a per-call factory chooses it once VAIC's ``start`` has come
        (or ``Limits.start_wait_s`` has passed), asked for with :class:`ChooseAgent`."""
        self.conversation_id = initiate.conversation_id or ""
        self.session_id = session_id
        self.initiate = initiate
        self.media_format = media_format
        self.limits = limits or Limits()
        self.reconnect = reconnect or Reconnect()
        self.options = options or CallOptions()
        playout = playout or Playout()
        self._stats = CallStats()
        self.epoch, history, shared = taken_over or (0, [], CallShared())
        self.configuration = CurrentAgent(agent_config, shared.agent_updates)
        prefix = f"{self.epoch}-" if self.epoch else ""  # streamIds stay unique across owners
        stream_ids = (f"{prefix}{n}" for n in itertools.count(1))
        participants = self.options.participants
        self.playout = PlayoutClock(
            media_format, lead_ms=playout.lead_ms, chunk_ms=playout.chunk_ms,
            max_buffer_ms=playout.max_buffer_ms, next_stream_id=lambda: next(stream_ids),
            stats=self._stats, participant=participants.play_to,
            target_player=participants.target_player,
        )
        self.masking = Masking(self.options.sensitive, self.options.redact)
        self.masking.on = shared.sensitive
        self.transcript = Transcript(self.masking)
        self.started_at = now
        self.started_wall = wall_clock  # for the record; the machine itself runs on ``now``
        self.state = CallState.ACTIVE
        self.link = AgentLink(media_format, limits=self.limits, reconnect=self.reconnect,
                              stats=self._stats, now=now)
        self.end_reason: tuple[str, str | None, str | None] | None = None

        self.to_vaic: list[ac.OutboundMessage] = []
        self.to_agent: list[dg.ClientMessage | bytes] = []
        self.events: list[ev.Event] = []
        self.observed: list[tuple[ev.Event, ev.Event]] = []  # (event, as observers get it)
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
        self._warnings = Fold(self.limits.warning_interval_s)
        self.on_hold = False  # the hold prompt plays: no agent for longer than the budget
        self._dead_air_from(now)  # until the first agent connection is ready

        # What the call knows beyond its sockets (shared with other instances: shared()).
        self.details: ev.CallDetails | None = shared.details
        self.session_started = shared.started
        self.transfer_pending: PendingTransfer | None = shared.transfer
        hears = participants.agent_hears
        self.hearing: str | None = shared.hearing or (
            None if hears in ("caller", "first") else hears)
        self.ignored: list[str] = []  # participants kept from the agent
        self.shared_version = 0  # bumped whenever shared() would change
        self.request_ids: list[str] = []  # each agent connection's, from its Welcome
        self.frustration = 0

        # The contact-centre policies, each a sub-machine of its own.
        options = self.options
        self.tools = ToolRunner(options.tools)
        self.setup = AgentSetup(self.tools)  # each agent connection's way to ready
        self.barge = BargeIn(options.interruption, media_format, self.tools)
        self.barge.first = self.barge.first and taken_over is None  # the greeting is past
        self.no_input = NoInputWatch(options.no_input)
        self.digits = DigitInput(options.dtmf, barge=self.barge, no_input=self.no_input,
                                 masking=self.masking)
        self.saying_goodbye = False  # a goodbye was asked for; the hangup waits for it
        self._silence = bytes([media_format.silence_byte])
        self.watch_caller_audio()

        self.to_vaic.append(ac.SessionAccepted(media_format=media_format.token))
        if taken_over is not None:
            self.transcript.entries.extend(history)
            self.transcript.cuts.update(shared.cuts)
            if self.transfer_pending is not None:  # the wait restarts here
                self.state = CallState.TRANSFERRING
                self.discard_agent_audio = True
                self.timers.set(Timer.TRANSFER, now + self.limits.transfer_timeout_s)
            self.emit(ev.SessionResumedEvent, now, gap_ms=0.0, taken_over=True)
        else:
            session = self.options.vaic_session
            if session is not None:
                config = ac.Activity(type="event", name="config",
                                     session_params=session.session_params())
                self.to_vaic.append(ac.OutboundActivities(activities=(config,)))
            if self.limits.start_wait_s > 0:
                self.timers.set(Timer.START, now + self.limits.start_wait_s)
            else:
                self._session_start(now)
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
        elif self.state is CallState.TRANSFERRING and self.transfer_pending is not None:
            self._finish(now, "transfer", reason_code=reason_code,
                         detail=self.transfer_pending.destination)
        elif reason_code == "transferred":  # a transfer sent with send_activity
            self._finish(now, "transfer", reason_code=reason_code, detail=reason)
        else:
            self._finish(now, "caller", reason_code=reason_code, detail=reason)

    def vaic_lost(self, now: float) -> None:
        """VAIC's socket closed or failed without ``session.end``."""
        if self.state is CallState.TRANSFERRING:
            self.state = CallState.ACTIVE  # back to TRANSFERRING on resume (transfer_pending)
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
        if self.state is CallState.ACTIVE or self.state is CallState.TRANSFERRING:
            self.vaic_lost(now)  # the old socket's loss was not noticed yet
        self.to_vaic.append(ac.SessionAccepted(media_format=self.media_format.token))
        gap = now - (self._detached_at if self._detached_at is not None else now)
        if self.state is CallState.DETACHED:
            self.state = CallState.ACTIVE if self.transfer_pending is None \
                else CallState.TRANSFERRING
        self.timers.clear(Timer.RESUME)
        self._detached_at = None
        self.stats.resumes += 1
        self.emit(ev.SessionResumedEvent, now, gap_ms=gap * 1000)

    # --- agent side --------------------------------------------------------------------

    def agent_connected(self, now: float) -> None:
        """The agent socket is open; the handshake starts with its ``Welcome``."""
        self.link.connected(now)
        self.setup.connected()
        self.tools.connected()

    def agent(self, msg: dg.ServerMessage, now: float) -> None:
        handler = AGENT_TABLE.get(type(msg))
        if handler is not None:
            handler(self, msg, now)

    def agent_audio(self, audio: bytes, now: float) -> None:
        """Audio from the agent, into the playout: what is due goes to ``to_vaic``."""
        chunk = self.agent_chunk(audio, now)
        if chunk is not None:
            self.to_vaic.append(chunk)
        else:
            self.agent_audio_buffered(audio, now)

    def agent_audio_buffered(self, audio: bytes, now: float) -> None:
        """:meth:`agent_audio` where :meth:`agent_chunk` refused it: into the playout's
        buffer, and what is due from there to ``to_vaic``."""
        stats = self.stats
        stats.agent_frames += 1
        stats.agent_bytes += len(audio)
        if self.discard_agent_audio or self.state is CallState.ENDED:
            return
        dropped = self.playout.push(audio)
        if dropped:
            self.warn(now, "PLAYOUT_OVERFLOW", f"dropped {dropped} bytes of agent audio")
        self.pull(now)

    def agent_chunk(self, audio: bytes, now: float) -> ac.PlayStreamChunk | None:
        """The steady state of :meth:`agent_audio`, for the runtime: the chunk for VAIC
        when ``audio`` goes straight through, changing nothing else and moving no
        deadline. ``None`` otherwise, and nothing done: then :meth:`agent_audio_buffered`
        takes it."""
        if self.state is _ACTIVE and self._deferred_end is None \
                and not self.discard_agent_audio:
            return self.playout.pass_through(audio, now)  # counted when asked
        return None

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
            self.no_input.agent_busy(self)  # the silence is the agent's: the budget's to bound
            self._dead_air_from(now)

    def agent_pong(self, now: float) -> None:
        """The agent connection answered a ping."""
        self.link.pong(now)

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
                other = self._deferred_until
                if self.playout.settled and not self.saying_goodbye:  # else what it waits
                    # for (its audio, AgentAudioDone, the goodbye's words) comes first
                    other = min(other, self.playout.play_head)
                if best is None or other < best:
                    best = other
            elif self.tools.waiting and self.playout.settled:  # tools, once the words played
                other = self.playout.play_head
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
        if self.link.ping_due(now):
            self.actions.append(PingAgent())
        elif self.link.silent(now):
            self.actions.append(CloseAgent())
            self.agent_lost(now, f"agent did not answer a ping within "
                                 f"{self.limits.agent_pong_timeout_s:g} s")
        self.pull(now)

    def _timer_due(self, timer: Timer, now: float) -> None:
        if timer is Timer.HANGUP:
            reason, detail = self._pending_end or ("ended", None)
            self._finish(now, reason, detail=detail)
        elif timer is Timer.RESUME:
            self._finish(now, "timeout", detail="VAIC did not resume in time")
        elif timer is Timer.START:
            self._session_start(now)
        elif timer is Timer.TRANSFER:
            self._finish(now, "transfer", detail=f"VAIC reported no outcome of the transfer "
                         f"within {self.limits.transfer_timeout_s:g} s")
        elif timer is Timer.NO_INPUT:
            self.no_input.due(self, now)
        elif timer is Timer.DTMF:
            self.digits.due(self, now)
        elif timer is Timer.BARGE_IN:
            self.barge.drop_pending(self)
        elif timer is Timer.PLAY_URL:
            self.tools.play_wait_over(self, now)
        elif timer is Timer.DEAD_AIR:
            self._dead_air_due(now)
        elif timer is Timer.WARNINGS:
            self._report_folded(now, self._warnings.due(now))

    def pull(self, now: float) -> None:
        if self.state is CallState.ACTIVE or self.state is CallState.ENDING:
            self.playout.pull(now, self.to_vaic)
        if self._deferred_end is not None:
            self._end_when_played(now)
        elif self.tools.waiting and self.state is CallState.ACTIVE \
                and self.playout.idle(now):
            self.tools.run_waiting(self, now)

    # --- commands (from Session) -------------------------------------------------------

    def unplayed_s(self, now: float) -> float:
        """Seconds of agent audio produced that the caller has not heard yet."""
        playout = self.playout
        return max(0.0, playout.play_head - now) + playout.pending / playout.bytes_per_s

    @property
    def stats(self) -> CallStats:
        """The call's counters, up to date: the playout counts the chunks it passed
        straight through, and the link the caller's frames, only when they are read
        (:meth:`PlayoutClock.count_passed`, :meth:`AgentLink.count_caller`)."""
        self.playout.count_passed()
        self.link.count_caller()
        return self._stats

    @property
    def is_open(self) -> bool:
        """Not ended yet (a timer may have just ended it)."""
        return self.state is not CallState.ENDED

    @property
    def is_active(self) -> bool:
        state = self.state
        return state is CallState.ACTIVE or state is CallState.DETACHED \
            or state is CallState.TRANSFERRING

    def end_session(self, now: float, reason: str, params: dict[str, Any] | None = None) -> None:
        """The application hangs up (``params``: more of the hangup's ``activityParams``)."""
        self._check_open("end_session")
        self.hangup(now, reason, params=params)

    def transfer_call(self, now: float, activity: ac.Activity) -> None:
        """The application transfers the call."""
        self._check_open("transfer")
        if self.transfer_pending is not None or self._deferred_end is not None:
            raise LocalProtocolError("transfer: a transfer or hangup is already under way",
                                     conversation_id=self.conversation_id)
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
        if isinstance(msg, AgentUpdate):
            self.setup.update(self, msg, now)
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
        self, now: float, reason: str, *, end_reason: str = "ended", wait_for_playout: bool = True,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Hang up (``hangup`` activity with ``hangupReason``) once the agent's words have
        played; the call ends when VAIC confirms or after ``hangup_timeout_s``."""
        activity = ac.Activity(
            type="event", name="hangup", activity_params={**(params or {}), "hangupReason": reason}
        )
        if wait_for_playout:
            self._end_after_playout(now, activity, end_reason, reason)
        else:
            self._end_with(now, activity, end_reason, reason)

    def transfer(self, now: float, activity: ac.Activity) -> None:
        """Transfer once the agent's words have played, then wait for VAIC to say how it
        went (see :meth:`transfer_status`); the agent connection stays up meanwhile."""
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
        played = self.playout.idle(now) and not self.saying_goodbye
        if played or now >= self._deferred_until or self.state is not CallState.ACTIVE:
            activity, end_reason, detail = self._deferred_end
            self._deferred_end = None
            if end_reason == "transfer" and self.state is CallState.ACTIVE:
                self._start_transfer(now, activity, detail)
            else:
                self._end_with(now, activity, end_reason, detail)

    def _end_with(
        self, now: float, activity: ac.Activity, end_reason: str, detail: str | None
    ) -> None:
        if self.state is CallState.ENDING or self.state is CallState.ENDED:
            return
        self._deferred_end = None
        self._transfer_done()
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
        self._report_folded(now, self._warnings.flush())
        self.actions.append(CloseAgent())
        self.actions.append(CloseVaic(reason=reason))
        self.emit(ev.SessionEndEvent, now, reason=reason, reason_code=reason_code,
                  detail=detail, duration_s=now - self.started_at, record=build_record(self, now),
                  meaning=ev.END_REASON_CODES.get(reason_code or ""))

    def end(self, now: float, reason: str, detail: str | None = None) -> None:
        """End the call at once (no hangup activity): drain deadline, fatal bugs."""
        self._finish(now, reason, detail=detail)

    # --- transfers: sent, then answered, failed, or never reported ---------------------

    def _start_transfer(self, now: float, activity: ac.Activity, destination: str | None) -> None:
        _, stop = self.playout.cut(now)
        if stop is not None:
            self.to_vaic.append(stop)
        self.to_vaic.append(ac.OutboundActivities(activities=(activity,)))
        self.state = CallState.TRANSFERRING
        self.transfer_pending = PendingTransfer(destination=destination)
        self.transcript.transfers.append(ev.TransferRecord(
            destination=destination, outcome="unknown", at_s=round(now - self.started_at, 3)))
        self.discard_agent_audio = True  # the agent stays connected, and quiet
        self.timers.set(Timer.TRANSFER, now + self.limits.transfer_timeout_s)
        self.shared_changed()
        self.emit(ev.TransferStartedEvent, now, destination=destination)

    def _transfer_done(self) -> PendingTransfer | None:
        pending, self.transfer_pending = self.transfer_pending, None
        if pending is not None:
            self.timers.clear(Timer.TRANSFER)
            self.shared_changed()
        return pending

    def transfer_status(
        self, status: str | None, reason_code: str | None, reason: str | None, now: float
    ) -> None:
        """VAIC's ``transferStatus``: ``answered`` ends the call (reason ``transfer``);
        ``failed`` gives it back to the agent, which is told so it can tell the caller."""
        transferring = self.state is CallState.TRANSFERRING
        pending = self._transfer_done()
        destination = pending.destination if pending is not None else None
        transfers = self.transcript.transfers
        if status in ("answered", "failed") and transfers and transfers[-1].outcome == "unknown":
            transfers[-1] = msgspec.structs.replace(transfers[-1], outcome=status,
                                                    reason_code=reason_code)
        if status == "answered":
            self.emit(ev.TransferAnsweredEvent, now, destination=destination)
            self.tools.transfer_outcome(self, status, reason_code, reason, now)
            if self.state is CallState.TRANSFERRING or self.state is CallState.ACTIVE:
                self.state = CallState.ENDING
                self._pending_end = ("transfer", destination)
                self.timers.set(Timer.HANGUP, now + self.limits.hangup_timeout_s)
                self.actions.append(CloseAgent())
                self.link.close()
            return
        if status != "failed":
            self.protocol_warning(now, "audiocodes", f"transferStatus with status {status!r}")
            if pending is not None:  # keep waiting for a status that makes sense
                self.transfer_pending = pending
                self.timers.set(Timer.TRANSFER, now + self.limits.transfer_timeout_s)
            return
        if transferring:
            self.state = CallState.ACTIVE
            self.playout.clear()  # nothing said meanwhile is worth playing now
            self.discard_agent_audio = False
            if not self.link.ready:  # back with no agent: the dead-air budget from here
                self._dead_air_from(now)
        self.emit(ev.TransferFailedEvent, now, destination=destination,
                  reason_code=reason_code, reason=reason)
        if self.tools.transfer_outcome(self, status, reason_code, reason, now):
            return  # the agent asked for it, and has its outcome as the function's result
        text = self.options.transfer_failed_text(reason_code, reason)
        if text is not None and self.is_active:
            self.to_agent_when_ready(dg.InjectAgentMessage(message=text, behavior="interrupt"),
                                     now)

    # --- the agent's configuration: chosen, updated, sent --------------------------------

    def agent_chosen(self, config: AgentConfig | None, now: float) -> None:
        """The per-call factory's answer (see :class:`ChooseAgent`); ``None``: the
        application has no agent for this call (an unknown tenant), so it is hung up."""
        if self.configuration.config is not None or not self.is_open:
            return
        if config is None:
            if self.is_active:
                self.hangup(now, "no agent for this call", end_reason="ended")
            return
        self.configuration.config = config
        self.setup.configure(self, now)

    def agent_choice_failed(self, now: float, why: str) -> None:
        self.error(now, "AGENT_CONFIG", f"no agent configuration for this call: {why}",
                   fatal=True)
        if self.is_active:
            self.hangup(now, "no agent configuration for this call", end_reason="error")

    def to_agent_when_ready(self, msg: dg.ClientMessage, now: float) -> None:
        """``msg`` now if the agent is ready, else once it is (none once it is closed)."""
        self.setup.when_ready(self, msg, now)

    # --- the call's details: VAIC's start ------------------------------------------------

    def call_started(self, details: ev.CallDetails, now: float) -> None:
        """VAIC's ``start`` activity (a second one changes nothing)."""
        if self.details is not None:
            return
        self.details = details
        self.shared_changed()
        if self.hearing is None and self.options.participants.agent_hears == "caller":
            self.hearing = self._callers_participant(None)
        if not self.session_started:
            self._session_start(now)

    def _session_start(self, now: float) -> None:
        self.timers.clear(Timer.START)
        self.session_started = True
        self.shared_changed()
        initiate = self.initiate
        details = self.details
        self.emit(ev.SessionStartEvent, now,
                  caller=initiate.caller or (details.caller if details else None),
                  bot_name=initiate.bot_name, media_format=self.media_format.token,
                  offered_formats=tuple(initiate.supported_media_formats), details=details)
        if self.configuration.config is None:
            self.actions.append(ChooseAgent(details=details))

    # --- participants: one feeds the agent ---------------------------------------------

    def heard_from(self, participant: str, now: float, *, audio: bool = True) -> bool:
        """Audio (or a stream start) of ``participant``, who is not the one the agent hears
        so far: whether it is after all (the first stream decides, when nothing else did)."""
        if self.hearing is None:
            self.hearing = self._callers_participant(participant)
            self.shared_changed()
            if participant == self.hearing:
                return True
        if audio:
            self.stats.other_participant_frames += 1
        if participant not in self.ignored:
            self.ignored.append(participant)
            self.emit(ev.ParticipantIgnoredEvent, now, participant=participant,
                      hearing=self.hearing)
        return False

    def _callers_participant(self, first: str | None) -> str | None:
        """Whom the agent hears: by the policy, from ``start``'s participants, else
        ``first`` (the first participant whose stream started)."""
        if self.options.participants.agent_hears == "caller" and self.details is not None:
            caller = self.details.caller or self.initiate.caller
            for p in self.details.participants:
                if caller and p.uri_user == caller:
                    return p.participant
            for p in self.details.participants:
                if p.participant == "caller":
                    return p.participant
        return first

    # --- what the caller heard ----------------------------------------------------------

    def heard(self, cut_tag: int | None, share: float, unplayed: tuple[int, ...]
              ) -> tuple[str | None, str | None]:
        """A barge-in cut the agent short: mark what the caller did not hear; the heard
        and unheard text of the interrupted utterance."""
        transcript = self.transcript
        for tag in unplayed:
            transcript.cut(tag, "")
        if cut_tag is None or not 0 <= cut_tag < len(transcript.entries):
            if unplayed:
                self.shared_changed()
            return None, None
        text = transcript.entries[cut_tag].content or ""
        heard, _ = split_heard(text, share)
        unheard = transcript.cut(cut_tag, heard)
        self.shared_changed()
        return heard, unheard

    # --- shared with other instances ---------------------------------------------------

    def shared_changed(self) -> None:
        self.shared_version += 1

    def shared(self) -> CallShared:
        """The call's state beyond its history, for the shared store."""
        return CallShared(
            details=self.details, started=self.session_started,
            agent_updates=tuple(self.configuration.updates), transfer=self.transfer_pending,
            hearing=self.hearing, cuts=dict(self.transcript.cuts), sensitive=self.masking.on,
        )

    @property
    def agent_config(self) -> AgentConfig | None:
        """The agent's configuration as chosen for the call (before updates)."""
        return self.configuration.config

    # --- the contact-centre policies: what the tables and commands reach them by ------

    def watch_caller_audio(self) -> None:
        """Caller audio on its way to the agent goes through :meth:`_caller_tap` only when
        something needs it (a WAV header to strip, a barge-in counting the caller's voice,
        sensitive mode keeping the caller from the agent); otherwise it passes untouched."""
        needed = self.media_format.wav or self.barge.pending or self.masking.mutes_caller
        self.link.tap = self._caller_tap if needed else None

    def _caller_tap(self, audio: bytes, now: float) -> bytes:
        if self.media_format.wav:
            audio = strip_wav_header(audio)
        if self.barge.pending and self.barge.heard(audio):
            self.barge.confirmed(self, now)
        if self.masking.mutes_caller:
            audio = self._silence * len(audio)
        return audio

    def hang_up_saying(self, now: float, goodbye: str | None, reason: str, *,
                       end_reason: str) -> None:
        """Have the agent say ``goodbye``, then hang up once it has been heard (or at the
        latest after the usual wait for last words)."""
        if goodbye and self.link.state is not AgentState.CLOSED:
            self.to_agent_when_ready(dg.InjectAgentMessage(message=goodbye), now)
            self.saying_goodbye = True
        self.hangup(now, reason, end_reason=end_reason)

    def goodbye_begun(self) -> None:
        """The agent started an utterance (or refused one): the hangup now waits for what
        plays."""
        self.saying_goodbye = False

    def say_uninterruptible(self, content: str) -> None:
        """``content``, which the agent is about to be asked to say, cannot be cut."""
        self.barge.protect(content)

    def tool_checked(self, tool_id: str, verdict: ToolVerdict | None, now: float) -> None:
        """The application's ``TelephonyTools.check`` hook answered."""
        if self.is_open:
            self.tools.checked(self, tool_id, verdict, now)

    def enter_sensitive(self, now: float, mode: SensitiveMode | None = None) -> None:
        self._check_open("sensitive")
        self.masking.enter(self, now, mode or self.options.sensitive)

    def leave_sensitive(self, now: float) -> None:
        if self.is_active:
            self.masking.leave(self, now)

    # --- helpers -----------------------------------------------------------------------

    def emit(self, cls: type[ev.Event], now: float, **fields: Any) -> None:
        self.events.append(
            cls(session_id=self.session_id, conversation_id=self.conversation_id, at=now, **fields)
        )

    def observers_see(self, **fields: Any) -> None:
        """Observers get the event just emitted with these fields instead: what the history
        keeps of a function call, where the handlers need it as the agent sent it."""
        event = self.events[-1]
        if any(getattr(event, name) != value for name, value in fields.items()):
            self.observed.append((event, msgspec.structs.replace(event, **fields)))

    def warn(
        self, now: float, code: str, description: str, *, source: str = "bridge",
        kind: str | None = None,
    ) -> None:
        """A warning for the application; repeats of one kind (``source``, ``code`` and
        ``kind``) are folded (:mod:`.fold`)."""
        self.stats.warnings += 1
        warnings = self._warnings
        if warnings.add((source, code, kind), now, description):
            self.emit(ev.WarningEvent, now, code=code, description=description, source=source)
        elif warnings.next_deadline is not None:
            self.timers.set(Timer.WARNINGS, warnings.next_deadline)

    def error(
        self, now: float, code: str, message: str, *, source: str = "bridge", fatal: bool = False,
        status: int | None = None,
    ) -> None:
        self.stats.errors += 1
        self.emit(ev.BridgeErrorEvent, now, code=code, message=message, source=source,
                  fatal=fatal, status=status)

    def protocol_warning(
        self, now: float, source: str, description: str, kind: str | None = None
    ) -> None:
        """A peer sent something wrong; tell the application, keep going."""
        self.warn(now, "PROTOCOL_ERROR", description, source=source, kind=kind)

    def _report_folded(self, now: float, folded: list[Folded]) -> None:
        for repeats in folded:
            source: str
            code: str
            source, code, _ = repeats.key  # type: ignore[misc]  # as warn() made it
            self.emit(ev.WarningEvent, now, code=code, description=repeats.describe(),
                      source=source, count=repeats.count)
        if self._warnings.next_deadline is not None:
            self.timers.set(Timer.WARNINGS, self._warnings.next_deadline)

    # --- the bridge's own stalls ---------------------------------------------------------

    def stalled(self, now: float, seconds: float) -> None:
        """The bridge's event loop did not run for ``seconds`` until ``now``. Agent audio
        the caller should have heard meanwhile is late: beyond the lead it is skipped, so
        the stall does not stay in the call as a delay (:meth:`PlayoutClock.stalled`)."""
        if self.state is CallState.ACTIVE and self.playout.stalled(now, seconds):
            self.warn(now, "BRIDGE_STALLED", f"the bridge did not run for {seconds * 1000:.0f} ms:"
                      " agent audio that late is skipped")

    # --- agent trouble: the dead-air budget ------------------------------------------------

    def _dead_air_from(self, now: float) -> None:
        """No agent from now on: the budget starts once the caller has heard what the
        agent had said (a budget already running keeps its start)."""
        budget = self.limits.dead_air_s
        if budget > 0 and Timer.DEAD_AIR not in self.timers and not self.on_hold:
            self.timers.set(Timer.DEAD_AIR, now + self.unplayed_s(now) + budget)

    def dead_air_over(self, now: float) -> None:
        """An agent connection is ready (``SettingsApplied``): the dead air is over."""
        self.timers.clear(Timer.DEAD_AIR)
        if self.on_hold:
            self.on_hold = False
            if self.state is CallState.ACTIVE:
                self.to_vaic.append(ac.OutboundActivities(activities=(
                    ac.Activity(type="event", name="abortPrompts"),)))

    def _dead_air_due(self, now: float) -> None:
        budget = self.limits.dead_air_s
        if self.state is not CallState.ACTIVE:
            if self.state is CallState.DETACHED:  # nobody hears it: count again on resume
                self.timers.set(Timer.DEAD_AIR, now + budget)
            # TRANSFERRING: the caller hears the transfer; a failed one starts it again
            return
        url = self.limits.hold_prompt_url
        if url:
            self.on_hold = True
            self.warn(now, "AGENT_DEAD_AIR", f"no agent for {budget:g} s: the caller hears "
                      "the hold prompt while the bridge reconnects")
            self.to_vaic.append(ac.OutboundActivities(activities=(ac.Activity(
                type="event", name="playUrl", activity_params={"playUrlUrl": url}),)))
            return
        self.error(now, "AGENT_UNAVAILABLE", f"no agent for {budget:g} s (Limits.dead_air_s)",
                   fatal=True)
        self.link.close()
        self.actions.append(CloseAgent())
        self.hangup(now, "agent unavailable", end_reason="error")

