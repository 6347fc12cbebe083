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
from .state import CloseAgent, Measure
from .transcript import turn_latency

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


# Think Live's utterances that are not turns: kept out of the transcript, the history
# and play-stream captions (the audio still plays).
_ASIDES: Final = frozenset({"backchannel", "filler"})


def _welcome(call: CallParts, msg: dg.Welcome, now: float) -> None:
    call.setup.welcomed(call, msg.request_id, now)  # Settings, once the config is known


def _settings_applied(call: CallParts, msg: dg.SettingsApplied, now: float) -> None:
    attempts = call.link.failures
    handshake, gap_ms, held = call.link.applied(now)
    call.observations.append((Measure.AGENT_HANDSHAKE, handshake))
    if gap_ms is not None:
        call.stats.agent_reconnects += 1
        call.emit(ev.AgentReconnectedEvent, now, attempts=attempts, gap_ms=gap_ms)
        call.no_input.agent_back(call, now)
    call.to_agent.extend(call.setup.ready())  # updates and injections that waited
    call.to_agent.extend(held)
    call.dead_air_over(now)


def _conversation_text(call: CallParts, msg: dg.ConversationText, now: float) -> None:
    behavior = msg.conversational_behavior
    aside = behavior in _ASIDES
    content = call.masking.text(msg.role, msg.content)  # as everyone sees it from here
    index = None if aside else call.transcript.add_text(msg.role, content, now - call.started_at)
    if msg.role == "user":
        if not aside:
            call.barge.caller_spoke()
            alt = (ac.Alternative(text=content),)
            participant = call.hearing
            call.to_vaic.append(ac.UserStreamSpeechRecognition(alternatives=alt,
                                                               participant=participant))
            call.to_vaic.append(ac.UserStreamSpeechCommitted(participant=participant))
    else:
        call.discard_agent_audio = False
        call.goodbye_begun()
        call.no_input.agent_busy(call)
        cut_by = call.barge.cut_by(msg.content) if not aside else call.barge.by
        call.playout.begin(None if aside else content, index, cut_by)
    call.emit(ev.ConversationTextEvent, now, role=msg.role, content=content,
              behavior=behavior, languages=msg.languages)


def _user_started_speaking(call: CallParts, msg: dg.UserStartedSpeaking, now: float) -> None:
    call.masking.caller_started()
    call.no_input.caller_active(call)
    speaking = call.playout.speaking
    if speaking and not call.barge.started_speaking(call, now):
        # The policy keeps the utterance playing. Deepgram stops synthesising at the
        # caller's word: the stream ends with the audio already received.
        call.playout.end_turn()
        call.emit(ev.UserStartedSpeakingEvent, now, kept_playing=True)
        return
    fields = call.barge.cut(call, now)
    call.to_vaic.append(ac.UserStreamSpeechStarted(participant=call.hearing))
    call.emit(ev.UserStartedSpeakingEvent, now, interrupted=speaking, **fields)


def _agent_turn_start(call: CallParts, msg: dg.AgentThinking | dg.AgentStartedSpeaking, now: float
) -> None:
    call.discard_agent_audio = False
    call.no_input.agent_busy(call)
    if isinstance(msg, dg.AgentThinking):
        call.emit(ev.AgentThinkingEvent, now, content=msg.content)
    else:  # experimental; the record falls back on it when no LatencyReport comes
        call.transcript.add_latency(msg.total_latency)


_LATENCY_PARTS: Final = (
    ("stt_latency", Measure.AGENT_STT_LATENCY),
    ("ttt_token_latency", Measure.AGENT_TTT_TOKEN_LATENCY),
    ("ttt_text_latency", Measure.AGENT_TTT_TEXT_LATENCY),
    ("ttt_tool_latency", Measure.AGENT_TTT_TOOL_LATENCY),
    ("ttt_thinking_latency", Measure.AGENT_TTT_THINKING_LATENCY),
    ("tts_latency", Measure.AGENT_TTS_LATENCY),
    ("total_latency", Measure.AGENT_RESPONSE_LATENCY),
)


def _latency_report(call: CallParts, msg: dg.LatencyReport, now: float) -> None:
    latency = turn_latency(msg)
    call.transcript.reports.append(latency)
    for field, measure in _LATENCY_PARTS:
        value = getattr(msg, field)
        if value is not None:
            call.observations.append((measure, value))
    call.emit(ev.LatencyReportEvent, now, latency=latency)


def _frustration(call: CallParts, msg: dg.FrustrationDetected, now: float) -> None:
    call.frustration = max(call.frustration + 1, msg.count)
    call.emit(ev.FrustrationDetectedEvent, now, count=msg.count, escalated=msg.escalated)


def _history(call: CallParts, msg: dg.History, now: float) -> None:
    call.transcript.server_history(msg)


def _think_provider(call: CallParts, msg: dg.CustomFromThinkProvider, now: float) -> None:
    call.emit(ev.ThinkProviderMessageEvent, now, content=msg.content)


def _agent_audio_done(call: CallParts, msg: dg.AgentAudioDone, now: float) -> None:
    call.playout.end_turn()
    call.pull(now)
    call.no_input.agent_done(call, now)
    call.emit(ev.AgentAudioDoneEvent, now)


def _function_call_request(call: CallParts, msg: dg.FunctionCallRequest, now: float) -> None:
    call.transcript.functions_asked(msg.functions)
    call.no_input.agent_busy(call)
    rest = call.tools.requested(call, msg.functions, now)  # the telephony tools run here
    if rest:
        call.emit(ev.FunctionCallRequestEvent, now, functions=rest)
        call.observers_see(functions=tuple(map(call.transcript.keep, rest)))


def _server_function_response(
    call: CallParts, msg: dg.ServerFunctionCallResponse, now: float
) -> None:
    call.transcript.function_ran_on_server(msg)
    call.emit(ev.FunctionCallResponseEvent, now, id=msg.id, name=msg.name, content=msg.content)
    call.observers_see(content=call.transcript.answer(msg.content))


def _function_call_cancelled(call: CallParts, msg: dg.FunctionCallCancelled, now: float) -> None:
    ids = tuple(f.id for f in msg.functions)
    call.transcript.functions_withdrawn(ids)
    call.tools.withdrawn(call, ids, now)
    call.emit(ev.FunctionCallCancelledEvent, now, ids=ids)


def _ack(call: CallParts, msg: dg.ServerMessage, now: float) -> None:
    call.emit(_ACK_EVENTS[type(msg)], now)


def _warning(call: CallParts, msg: dg.Warning | dg.InjectionRefused, now: float) -> None:
    if isinstance(msg, dg.InjectionRefused):
        call.goodbye_begun()  # a goodbye that will not come: the hangup waits no more
        call.no_input.agent_done(call, now)  # a reprompt that will not come: time again
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


_Handler = Callable[[CallParts, Any, float], None]

_ACK_EVENTS: Final[dict[type[dg.ServerMessage], type[ev.Event]]] = {
    dg.PromptUpdated: ev.PromptUpdatedEvent,
    dg.ThinkUpdated: ev.ThinkUpdatedEvent,
    dg.SpeakUpdated: ev.SpeakUpdatedEvent,
    dg.ListenUpdated: ev.ListenUpdatedEvent,
    dg.ThinkLiveUpdated: ev.ThinkLiveUpdatedEvent,
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
    dg.ListenUpdated: _ack,
    dg.ThinkLiveUpdated: _ack,
    dg.LatencyReport: _latency_report,
    dg.FrustrationDetected: _frustration,
    dg.History: _history,
    dg.CustomFromThinkProvider: _think_provider,
    dg.InjectionRefused: _warning,
    dg.Warning: _warning,
    dg.Error: _error,
}
