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
    tick()                 time passed; call at :meth:`next_deadline`
    command methods        what the application asks for (via Session)

Outputs are drained by the runtime after every input:

    to_vaic     AudioCodes messages, in order
    to_agent    Deepgram messages and caller audio (bytes), in order
    events      application events
    actions     what the runtime must do with sockets (connect, close)

VAIC messages are dispatched through ``_VAIC_TABLE``, keyed by call state and message
class. A pair that is not in the table is a protocol error by the peer: it is logged by
the runtime and answered with a warning event; the call goes on.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import msgspec

from . import events as ev
from .audio import MediaFormat, strip_wav_header
from .config import AgentConfig, Limits, Playout, Reconnect
from .errors import RemoteProtocolError, SessionClosedError
from .history import Transcript
from .pacing import Playout as PlayoutClock
from .protocols import audiocodes as ac
from .protocols import deepgram as dg
from .records import CallRecord, iso, latency_figures
from .records import Turn as RecordTurn
from .stats import CallStats

__all__ = ["Call", "CallState", "CloseAgent", "CloseVaic", "ConnectAgent"]


class CallState(enum.Enum):
    ACTIVE = "active"  # VAIC socket attached
    DETACHED = "detached"  # VAIC socket lost; waiting for session.resume
    ENDING = "ending"  # we hung up or transferred; waiting for VAIC to close
    ENDED = "ended"


class AgentState(enum.Enum):
    CONNECTING = "connecting"  # socket being opened
    HANDSHAKE = "handshake"  # waiting for Welcome / SettingsApplied
    READY = "ready"
    BACKOFF = "backoff"  # lost; waiting to retry
    CLOSED = "closed"


class ConnectAgent(msgspec.Struct, frozen=True):
    attempt: int


class CloseAgent(msgspec.Struct, frozen=True):
    pass


class CloseVaic(msgspec.Struct, frozen=True):
    reason: str


Action = ConnectAgent | CloseAgent | CloseVaic

_MAX_GOODBYE_S: Final = 15.0  # longest a hangup or transfer waits for the agent to finish

# Agent errors that a new connection with the same settings would hit again.
_CONFIG_ERRORS: Final = frozenset(
    {
        "INVALID_SETTINGS",
        "INVALID_AGENT_ID",
        "AGENT_ID_NOT_SUPPORTED",
        "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS",
        "SETTINGS_ALREADY_APPLIED",
        "USER_AUDIO_FORMAT",
    }
)


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
            media_format,
            lead_ms=playout.lead_ms,
            chunk_ms=playout.chunk_ms,
            max_buffer_ms=playout.max_buffer_ms,
            next_stream_id=lambda: next(stream_ids),
            stats=self.stats,
        )
        self.transcript = Transcript()
        self.started_at = now
        self.started_wall = wall_clock  # for the record; the machine itself runs on ``now``
        self.state = CallState.ACTIVE
        self.agent_state = AgentState.CONNECTING
        self.end_reason: tuple[str, str | None, str | None] | None = None

        self.to_vaic: list[ac.OutboundMessage] = []
        self.to_agent: list[dg.ClientMessage | bytes] = []
        self.events: list[ev.Event] = []
        self.actions: list[Action] = []

        self._pre_ready: deque[bytes] = deque()
        self._pre_ready_bytes = 0
        self._pre_ready_max = media_format.frame_bytes(self.limits.pre_ready_audio_ms)
        self._discard_agent_audio = False
        self._failures = 0
        self._agent_deadline: float | None = None  # handshake timeout or backoff end
        self._agent_lost_at: float | None = None
        self._last_agent_send = now
        self._detached_at: float | None = None
        self._resume_deadline: float | None = None
        self._hangup_deadline: float | None = None
        self._pending_end: tuple[str, str | None] | None = None
        self._deferred_end: tuple[ac.Activity, str, str | None] | None = None
        self._deferred_until = 0.0
        self._pending_functions: dict[str, dg.FunctionCall] = {}
        self._cancelled_functions: set[str] = set()
        self.request_id: str | None = None
        # (metric name, value) pairs for whoever observes the call (metrics, tracing)
        self.observations: list[tuple[str, float]] = []
        self._connect_started = now
        self.barge_in_at: float | None = None  # a barge-in stop waiting to be written

        self.to_vaic.append(ac.SessionAccepted(media_format=media_format.token))
        if taken_over is not None:
            self.transcript.entries.extend(history)
            self._emit(ev.SessionResumedEvent, now, gap_ms=0.0, taken_over=True)
        else:
            self._emit(
                ev.SessionStartEvent,
                now,
                caller=initiate.caller,
                bot_name=initiate.bot_name,
                media_format=media_format.token,
                offered_formats=tuple(initiate.supported_media_formats),
            )
        self.actions.append(ConnectAgent(attempt=1))

    def __repr__(self) -> str:
        return f"<Call {self.conversation_id} {self.state.value} agent={self.agent_state.value}>"

    # --- VAIC side ---------------------------------------------------------------------

    def vaic(self, msg: ac.InboundMessage, now: float) -> None:
        handler = _VAIC_TABLE.get((self.state, type(msg)))
        if handler is None:
            raise RemoteProtocolError(
                f"{type(msg).__struct_config__.tag} not expected while {self.state.value}",
                conversation_id=self.conversation_id,
            )
        handler(self, msg, now)

    def _on_chunk(self, msg: ac.UserStreamChunk, now: float) -> None:
        audio = msg.audio_chunk
        stats = self.stats
        stats.caller_frames += 1
        stats.caller_bytes += len(audio)
        if self.media_format.wav:
            audio = strip_wav_header(audio)
        if self.agent_state is AgentState.READY:
            self.to_agent.append(audio)
            self._last_agent_send = now
            return
        self._pre_ready.append(audio)
        self._pre_ready_bytes += len(audio)
        while self._pre_ready_bytes > self._pre_ready_max:
            self._pre_ready_bytes -= len(self._pre_ready.popleft())
            stats.caller_frames_dropped += 1

    def _on_user_stream_start(self, msg: ac.UserStreamStart, now: float) -> None:
        self.to_vaic.append(ac.UserStreamStarted(participant=msg.participant))

    def _on_user_stream_stop(self, msg: ac.UserStreamStop, now: float) -> None:
        self.to_vaic.append(ac.UserStreamStopped(participant=msg.participant))

    def _on_activities(self, msg: ac.Activities, now: float) -> None:
        for raw in msg.activities:
            self._emit(ev.InboundActivityEvent, now, activity=raw)
            if raw.get("type", "event") == "event" and raw.get("name") == "DTMF":
                self._emit(ev.DtmfEvent, now, digits=str(raw.get("value") or ""))

    def _on_session_end(self, msg: ac.SessionEnd, now: float) -> None:
        if self.state is CallState.ENDING and self._pending_end is not None:
            reason, detail = self._pending_end
            self._finish(now, reason, reason_code=msg.reason_code, detail=detail)
        else:
            self._finish(now, "caller", reason_code=msg.reason_code, detail=msg.reason)

    def _on_validate(self, msg: ac.ConnectionValidate, now: float) -> None:
        self.to_vaic.append(ac.ConnectionValidated(success=True))

    def _ignore(self, msg: ac.InboundMessage, now: float) -> None:
        pass

    def vaic_lost(self, now: float) -> None:
        """VAIC's socket closed or failed without ``session.end``."""
        if self.state is CallState.ACTIVE and self.limits.resume_grace_s > 0:
            self.state = CallState.DETACHED
            self._detached_at = now
            self._resume_deadline = now + self.limits.resume_grace_s
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
        self._resume_deadline = None
        self._detached_at = None
        self.stats.resumes += 1
        self._emit(ev.SessionResumedEvent, now, gap_ms=gap * 1000)

    # --- agent side --------------------------------------------------------------------

    def agent_connected(self, now: float) -> None:
        """The agent socket is open; the handshake starts with its ``Welcome``."""
        self.agent_state = AgentState.HANDSHAKE
        self._agent_deadline = now + self.limits.handshake_timeout_s

    def agent(self, msg: dg.ServerMessage, now: float) -> None:
        handler = _AGENT_TABLE.get(type(msg))
        if handler is not None:
            handler(self, msg, now)

    def agent_audio(self, audio: bytes, now: float) -> None:
        stats = self.stats
        stats.agent_frames += 1
        stats.agent_bytes += len(audio)
        if self._discard_agent_audio or self.state is CallState.ENDED:
            return
        dropped = self.playout.push(audio)
        if dropped:
            self._warn(now, "PLAYOUT_OVERFLOW", f"dropped {dropped} bytes of agent audio")
        self._pull(now)

    def agent_lost(self, now: float, reason: str) -> None:
        """The agent socket closed, failed to open, or timed out in the handshake."""
        if self.agent_state in (AgentState.CLOSED, AgentState.BACKOFF):
            return
        was_ready = self.agent_state is AgentState.READY
        if self.state is CallState.ENDED or self.state is CallState.ENDING:
            self.agent_state = AgentState.CLOSED
            return
        self._failures += 1
        if was_ready or self._agent_lost_at is None:
            self._agent_lost_at = now
        self.playout.end_turn()  # let what was already synthesised play out
        if self._failures > self.reconnect.attempts:
            self.agent_state = AgentState.CLOSED
            self._error(now, "AGENT_UNAVAILABLE", f"agent connection failed: {reason}", fatal=True)
            self.hangup(now, "agent unavailable", end_reason="error")
            return
        self.agent_state = AgentState.BACKOFF
        self._agent_deadline = now + self.reconnect.backoff(self._failures)
        self._warn(now, "AGENT_CONNECTION_LOST", f"{reason}; reconnecting", source="bridge")

    def _on_welcome(self, msg: dg.Welcome, now: float) -> None:
        self.request_id = msg.request_id
        settings = self.agent_config.settings(
            self.media_format.deepgram_audio(), history=self.transcript.history()
        )
        self.to_agent.append(settings)
        self._last_agent_send = now

    def _on_settings_applied(self, msg: dg.SettingsApplied, now: float) -> None:
        self.agent_state = AgentState.READY
        self.observations.append(("agent_handshake_seconds", now - self._connect_started))
        self._agent_deadline = None
        if self._failures and self._agent_lost_at is not None:
            self.stats.agent_reconnects += 1
            gap = (now - self._agent_lost_at) * 1000
            self._emit(ev.AgentReconnectedEvent, now, attempts=self._failures, gap_ms=gap)
        self._failures = 0
        self._agent_lost_at = None
        self.to_agent.extend(self._pre_ready)
        self._pre_ready.clear()
        self._pre_ready_bytes = 0
        self._last_agent_send = now

    def _on_conversation_text(self, msg: dg.ConversationText, now: float) -> None:
        self.transcript.add_text(msg.role, msg.content)
        if msg.role == "user":
            alt = (ac.Alternative(text=msg.content),)
            self.to_vaic.append(ac.UserStreamSpeechRecognition(alternatives=alt))
            self.to_vaic.append(ac.UserStreamSpeechCommitted())
        else:
            self._discard_agent_audio = False
            self.playout.begin(msg.content)
        self._emit(ev.ConversationTextEvent, now, role=msg.role, content=msg.content)

    def _on_user_started_speaking(self, msg: dg.UserStartedSpeaking, now: float) -> None:
        speaking = self.playout.speaking
        cut, stop = self.playout.cut(now)
        if stop is not None and self.state is CallState.ACTIVE:
            self.to_vaic.append(stop)
            self.barge_in_at = now
        if speaking:
            self.stats.barge_ins += 1
            self.observations.append(("barge_in_tail_seconds", (cut.sent_ms - cut.heard_ms) / 1000))
            self._discard_agent_audio = True
        self.to_vaic.append(ac.UserStreamSpeechStarted())
        self._emit(
            ev.UserStartedSpeakingEvent,
            now,
            interrupted=speaking,
            agent_audio_sent_ms=cut.sent_ms,
            agent_audio_heard_ms=cut.heard_ms,
            agent_audio_dropped_ms=cut.dropped_ms,
        )

    def _on_agent_turn_start(
        self, msg: dg.AgentThinking | dg.AgentStartedSpeaking, now: float
    ) -> None:
        self._discard_agent_audio = False
        if isinstance(msg, dg.AgentThinking):
            self._emit(ev.AgentThinkingEvent, now, content=msg.content)
        else:
            self.transcript.add_latency(msg.total_latency)
            if msg.total_latency is not None:
                self.observations.append(("agent_response_latency_seconds", msg.total_latency))

    def _on_agent_audio_done(self, msg: dg.AgentAudioDone, now: float) -> None:
        self.playout.end_turn()
        self._pull(now)
        self._emit(ev.AgentAudioDoneEvent, now)

    def _on_function_call_request(self, msg: dg.FunctionCallRequest, now: float) -> None:
        for fn in msg.functions:
            if fn.client_side:
                self._pending_functions[fn.id] = fn
        self._emit(ev.FunctionCallRequestEvent, now, functions=msg.functions)

    def _on_server_function_response(self, msg: dg.ServerFunctionCallResponse, now: float) -> None:
        self.transcript.add_function_call(
            dg.FunctionCallRecord(
                id=msg.id or "", name=msg.name, client_side=False, arguments="{}",
                response=msg.content,
            )
        )

    def _on_function_call_cancelled(self, msg: dg.FunctionCallCancelled, now: float) -> None:
        ids = tuple(f.id for f in msg.functions)
        for fid in ids:
            self._pending_functions.pop(fid, None)
            self._cancelled_functions.add(fid)
        self._emit(ev.FunctionCallCancelledEvent, now, ids=ids)

    def _on_ack(self, msg: dg.ServerMessage, now: float) -> None:
        self._emit(_ACK_EVENTS[type(msg)], now)

    def _on_warning(self, msg: dg.Warning | dg.InjectionRefused, now: float) -> None:
        if isinstance(msg, dg.InjectionRefused):
            self._warn(now, "INJECTION_REFUSED", msg.message, source="deepgram")
        else:
            self._warn(now, msg.code, msg.description, source="deepgram")

    def _on_error(self, msg: dg.Error, now: float) -> None:
        fatal = msg.code in _CONFIG_ERRORS
        self._error(now, msg.code, msg.description, source="deepgram", fatal=fatal)
        if fatal:
            self.agent_state = AgentState.CLOSED
            self.actions.append(CloseAgent())
            self.hangup(now, f"agent error {msg.code}", end_reason="error")
        else:  # the server closes after an Error; reconnect with the history
            self.actions.append(CloseAgent())
            self.agent_lost(now, f"agent error {msg.code}: {msg.description}")

    def _noop(self, msg: dg.ServerMessage, now: float) -> None:
        pass

    # --- time --------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`tick` has work to do, or ``None``."""
        if self.state is CallState.ENDED:
            return None
        candidates = [self._agent_deadline, self._resume_deadline, self._hangup_deadline]
        if self.state is CallState.ACTIVE:
            candidates.append(self.playout.next_deadline())
            if self._deferred_end is not None:
                candidates.append(min(self._deferred_until, self.playout.play_head))
        if self.agent_state is AgentState.READY:
            candidates.append(self._last_agent_send + self.limits.keepalive_s)
        return min((c for c in candidates if c is not None), default=None)

    def tick(self, now: float) -> None:
        if self.state is CallState.ENDED:
            return
        if self._hangup_deadline is not None and now >= self._hangup_deadline:
            reason, detail = self._pending_end or ("ended", None)
            self._finish(now, reason, detail=detail)
            return
        if self._resume_deadline is not None and now >= self._resume_deadline:
            self._finish(now, "timeout", detail="VAIC did not resume in time")
            return
        if self._agent_deadline is not None and now >= self._agent_deadline:
            self._agent_deadline = None
            if self.agent_state is AgentState.BACKOFF:
                self.agent_state = AgentState.CONNECTING
                self.actions.append(ConnectAgent(attempt=self._failures + 1))
                self._connect_started = now
            elif self.agent_state in (AgentState.CONNECTING, AgentState.HANDSHAKE):
                self.actions.append(CloseAgent())
                self.agent_lost(now, "agent handshake timed out")
        if (
            self.agent_state is AgentState.READY
            and now - self._last_agent_send >= self.limits.keepalive_s
        ):
            self.to_agent.append(dg.KeepAlive())
            self._last_agent_send = now
        self._pull(now)

    def _pull(self, now: float) -> None:
        if self.state is CallState.ACTIVE or self.state is CallState.ENDING:
            self.playout.pull(now, self.to_vaic)
        if self._deferred_end is not None:
            self._end_when_played(now)

    # --- commands (from Session) -------------------------------------------------------

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
        if isinstance(msg, dg.FunctionCallResponse) and msg.id is not None:
            if msg.id in self._cancelled_functions:
                return  # withdrawn by the agent: answering would confuse it
            fn = self._pending_functions.pop(msg.id, None)
            self.transcript.add_function_call(
                dg.FunctionCallRecord(
                    id=msg.id, name=msg.name, client_side=True,
                    arguments=fn.arguments if fn else "{}", response=msg.content,
                    thought_signature=fn.thought_signature if fn else None,
                )
            )
        if self.agent_state is AgentState.READY:
            self.to_agent.append(msg)
            self._last_agent_send = now
        else:
            self._warn(now, "AGENT_NOT_READY", f"{type(msg).__name__} dropped: agent reconnecting")

    def send_activities(self, activities: tuple[ac.Activity, ...], now: float) -> None:
        self._check_open("send_activity")
        self.to_vaic.append(ac.OutboundActivities(activities=activities))

    def hangup(self, now: float, reason: str, *, end_reason: str = "ended") -> None:
        """Hang up (``hangup`` activity with ``hangupReason``) once the agent's words have
        played; the call ends when VAIC confirms or after ``hangup_timeout_s``."""
        activity = ac.Activity(
            type="event", name="hangup", activity_params={"hangupReason": reason}
        )
        self._end_after_playout(now, activity, end_reason, reason)

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
        self._hangup_deadline = now + self.limits.hangup_timeout_s
        self.actions.append(CloseAgent())
        self.agent_state = AgentState.CLOSED

    def _finish(
        self, now: float, reason: str, *, reason_code: str | None = None, detail: str | None = None
    ) -> None:
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        self.agent_state = AgentState.CLOSED
        self.end_reason = (reason, reason_code, detail)
        self.playout.clear()
        self._pre_ready.clear()
        self.actions.append(CloseAgent())
        self.actions.append(CloseVaic(reason=reason))
        self._emit(
            ev.SessionEndEvent,
            now,
            reason=reason,
            reason_code=reason_code,
            detail=detail,
            duration_s=now - self.started_at,
            record=self._record(now),
        )

    def _record(self, now: float) -> CallRecord:
        reason, reason_code, detail = self.end_reason or ("", None, None)
        p50, worst = latency_figures(self.transcript.latencies)
        fmt, stats = self.media_format, self.stats
        return CallRecord(
            conversation_id=self.conversation_id,
            session_id=self.session_id,
            caller=self.initiate.caller,
            bot_name=self.initiate.bot_name,
            media_format=fmt.token,
            started_at=iso(self.started_wall),
            ended_at=iso(self.started_wall + now - self.started_at),
            duration_s=round(now - self.started_at, 3),
            end_reason=reason,
            reason_code=reason_code,
            detail=detail,
            turns=self.transcript.turns,
            transcript=tuple(RecordTurn(role, text) for role, text in self.transcript.texts()),
            function_calls=self.transcript.function_calls,
            agent_latency_p50_ms=p50,
            agent_latency_max_ms=worst,
            barge_ins=stats.barge_ins,
            resumes=stats.resumes,
            agent_reconnects=stats.agent_reconnects,
            warnings=stats.warnings,
            errors=stats.errors,
            caller_audio_s=round(fmt.duration_ms(stats.caller_bytes) / 1000, 3),
            agent_audio_s=round(fmt.duration_ms(stats.play_bytes) / 1000, 3),
        )

    def end(self, now: float, reason: str, detail: str | None = None) -> None:
        """End the call at once (no hangup activity): drain deadline, fatal bugs."""
        self._finish(now, reason, detail=detail)

    # --- helpers -----------------------------------------------------------------------

    def _emit(self, cls: type[ev.Event], now: float, **fields: Any) -> None:
        self.events.append(
            cls(session_id=self.session_id, conversation_id=self.conversation_id, at=now, **fields)
        )

    def _warn(self, now: float, code: str, description: str, *, source: str = "bridge") -> None:
        self.stats.warnings += 1
        self._emit(ev.WarningEvent, now, code=code, description=description, source=source)

    def _error(
        self, now: float, code: str, message: str, *, source: str = "bridge", fatal: bool = False
    ) -> None:
        self.stats.errors += 1
        self._emit(ev.BridgeErrorEvent, now, code=code, message=message, source=source, fatal=fatal)

    def protocol_warning(self, now: float, source: str, description: str) -> None:
        """A peer sent something wrong; tell the application, keep going."""
        self._warn(now, "PROTOCOL_ERROR", description, source=source)


_Handler = Callable[[Call, Any, float], None]

_VAIC_TABLE: Final[dict[tuple[CallState, type[ac.InboundMessage]], _Handler]] = {
    (CallState.ACTIVE, ac.UserStreamChunk): Call._on_chunk,
    (CallState.ACTIVE, ac.UserStreamStart): Call._on_user_stream_start,
    (CallState.ACTIVE, ac.UserStreamStop): Call._on_user_stream_stop,
    (CallState.ACTIVE, ac.Activities): Call._on_activities,
    (CallState.ACTIVE, ac.SessionEnd): Call._on_session_end,
    (CallState.ACTIVE, ac.ConnectionValidate): Call._on_validate,
    (CallState.ENDING, ac.UserStreamChunk): Call._ignore,
    (CallState.ENDING, ac.UserStreamStart): Call._ignore,
    (CallState.ENDING, ac.UserStreamStop): Call._on_user_stream_stop,
    (CallState.ENDING, ac.Activities): Call._on_activities,
    (CallState.ENDING, ac.SessionEnd): Call._on_session_end,
    (CallState.ENDED, ac.UserStreamChunk): Call._ignore,
    (CallState.ENDED, ac.SessionEnd): Call._ignore,
}

_ACK_EVENTS: Final[dict[type[dg.ServerMessage], type[ev.Event]]] = {
    dg.PromptUpdated: ev.PromptUpdatedEvent,
    dg.ThinkUpdated: ev.ThinkUpdatedEvent,
    dg.SpeakUpdated: ev.SpeakUpdatedEvent,
}

_AGENT_TABLE: Final[dict[type[dg.ServerMessage], _Handler]] = {
    dg.Welcome: Call._on_welcome,
    dg.SettingsApplied: Call._on_settings_applied,
    dg.ConversationText: Call._on_conversation_text,
    dg.UserStartedSpeaking: Call._on_user_started_speaking,
    dg.AgentThinking: Call._on_agent_turn_start,
    dg.AgentStartedSpeaking: Call._on_agent_turn_start,
    dg.AgentAudioDone: Call._on_agent_audio_done,
    dg.FunctionCallRequest: Call._on_function_call_request,
    dg.ServerFunctionCallResponse: Call._on_server_function_response,
    dg.FunctionCallCancelled: Call._on_function_call_cancelled,
    dg.PromptUpdated: Call._on_ack,
    dg.ThinkUpdated: Call._on_ack,
    dg.SpeakUpdated: Call._on_ack,
    dg.ListenUpdated: Call._noop,
    dg.LatencyReport: Call._noop,
    dg.History: Call._noop,
    dg.InjectionRefused: Call._on_warning,
    dg.Warning: Call._on_warning,
    dg.Error: Call._on_error,
}
