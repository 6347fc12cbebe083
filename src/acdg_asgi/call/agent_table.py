"""What each Deepgram message does to a call.

:meth:`Call.agent <acdg_asgi.call.machine.Call.agent>` dispatches decoded agent messages
through ``AGENT_TABLE`` by class; the handlers here turn them into AudioCodes messages,
application events and changes to the call's playout and history. A message type with no
entry changes nothing (the runtime logs unknown types before they get here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from .. import events as ev
from ..protocols import audiocodes as ac
from ..protocols import deepgram as dg
from .parts import CallParts
from .state import CallState, CloseAgent, Measure

__all__ = ["AGENT_TABLE"]

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


def _welcome(call: CallParts, msg: dg.Welcome, now: float) -> None:
    settings = call.agent_config.settings(
        call.media_format.deepgram_audio(), history=call.transcript.history()
    )
    call.to_agent.append(settings)
    call.link.last_send = now


def _settings_applied(call: CallParts, msg: dg.SettingsApplied, now: float) -> None:
    attempts = call.link.failures
    handshake, gap_ms, held = call.link.applied(now)
    call.observations.append((Measure.AGENT_HANDSHAKE, handshake))
    if gap_ms is not None:
        call.stats.agent_reconnects += 1
        call.emit(ev.AgentReconnectedEvent, now, attempts=attempts, gap_ms=gap_ms)
    call.to_agent.extend(held)


def _conversation_text(call: CallParts, msg: dg.ConversationText, now: float) -> None:
    call.transcript.add_text(msg.role, msg.content)
    if msg.role == "user":
        alt = (ac.Alternative(text=msg.content),)
        call.to_vaic.append(ac.UserStreamSpeechRecognition(alternatives=alt))
        call.to_vaic.append(ac.UserStreamSpeechCommitted())
    else:
        call.discard_agent_audio = False
        call.playout.begin(msg.content)
    call.emit(ev.ConversationTextEvent, now, role=msg.role, content=msg.content)


def _user_started_speaking(call: CallParts, msg: dg.UserStartedSpeaking, now: float) -> None:
    speaking = call.playout.speaking
    cut, stop = call.playout.cut(now)
    if stop is not None and call.state is CallState.ACTIVE:
        call.to_vaic.append(stop)
        call.barge_in_at = now
    if speaking:
        call.stats.barge_ins += 1
        call.observations.append((Measure.BARGE_IN_TAIL, (cut.sent_ms - cut.heard_ms) / 1000))
        call.discard_agent_audio = True
    call.to_vaic.append(ac.UserStreamSpeechStarted())
    call.emit(
        ev.UserStartedSpeakingEvent,
        now,
        interrupted=speaking,
        agent_audio_sent_ms=cut.sent_ms,
        agent_audio_heard_ms=cut.heard_ms,
        agent_audio_dropped_ms=cut.dropped_ms,
    )


def _agent_turn_start(call: CallParts, msg: dg.AgentThinking | dg.AgentStartedSpeaking, now: float
) -> None:
    call.discard_agent_audio = False
    if isinstance(msg, dg.AgentThinking):
        call.emit(ev.AgentThinkingEvent, now, content=msg.content)
    else:
        call.transcript.add_latency(msg.total_latency)
        if msg.total_latency is not None:
            call.observations.append((Measure.AGENT_RESPONSE_LATENCY, msg.total_latency))


def _agent_audio_done(call: CallParts, msg: dg.AgentAudioDone, now: float) -> None:
    call.playout.end_turn()
    call.pull(now)
    call.emit(ev.AgentAudioDoneEvent, now)


def _function_call_request(call: CallParts, msg: dg.FunctionCallRequest, now: float) -> None:
    call.transcript.functions_asked(msg.functions)
    call.emit(ev.FunctionCallRequestEvent, now, functions=msg.functions)


def _server_function_response(
    call: CallParts, msg: dg.ServerFunctionCallResponse, now: float
) -> None:
    call.transcript.function_ran_on_server(msg)


def _function_call_cancelled(call: CallParts, msg: dg.FunctionCallCancelled, now: float) -> None:
    ids = tuple(f.id for f in msg.functions)
    call.transcript.functions_withdrawn(ids)
    call.emit(ev.FunctionCallCancelledEvent, now, ids=ids)


def _ack(call: CallParts, msg: dg.ServerMessage, now: float) -> None:
    call.emit(_ACK_EVENTS[type(msg)], now)


def _warning(call: CallParts, msg: dg.Warning | dg.InjectionRefused, now: float) -> None:
    if isinstance(msg, dg.InjectionRefused):
        call.warn(now, "INJECTION_REFUSED", msg.message, source="deepgram")
    else:
        call.warn(now, msg.code, msg.description, source="deepgram")


def _error(call: CallParts, msg: dg.Error, now: float) -> None:
    fatal = msg.code in _CONFIG_ERRORS
    call.error(now, msg.code, msg.description, source="deepgram", fatal=fatal)
    if fatal:
        call.link.close()
        call.actions.append(CloseAgent())
        call.hangup(now, f"agent error {msg.code}", end_reason="error")
    else:  # the server closes after an Error; reconnect with the history
        call.actions.append(CloseAgent())
        call.agent_lost(now, f"agent error {msg.code}: {msg.description}")


def _noop(call: CallParts, msg: dg.ServerMessage, now: float) -> None:
    pass


_Handler = Callable[[CallParts, Any, float], None]

_ACK_EVENTS: Final[dict[type[dg.ServerMessage], type[ev.Event]]] = {
    dg.PromptUpdated: ev.PromptUpdatedEvent,
    dg.ThinkUpdated: ev.ThinkUpdatedEvent,
    dg.SpeakUpdated: ev.SpeakUpdatedEvent,
}

AGENT_TABLE: Final[dict[type[dg.ServerMessage], _Handler]] = {
    dg.Welcome: _welcome,
    dg.SettingsApplied: _settings_applied,
    dg.ConversationText: _conversation_text,
    dg.UserStartedSpeaking: _user_started_speaking,
    dg.AgentThinking: _agent_turn_start,
    dg.AgentStartedSpeaking: _agent_turn_start,
    dg.AgentAudioDone: _agent_audio_done,
    dg.FunctionCallRequest: _function_call_request,
    dg.ServerFunctionCallResponse: _server_function_response,
    dg.FunctionCallCancelled: _function_call_cancelled,
    dg.PromptUpdated: _ack,
    dg.ThinkUpdated: _ack,
    dg.SpeakUpdated: _ack,
    dg.ListenUpdated: _noop,
    dg.LatencyReport: _noop,
    dg.History: _noop,
    dg.InjectionRefused: _warning,
    dg.Warning: _warning,
    dg.Error: _error,
}
