"""OpenTelemetry traces (``pip install acdg-asgi[otel]``): a span per call, children for
the agent handshake and each agent turn.

Without the ``opentelemetry-api`` package nothing here is imported or run. With it, the
spans go wherever the application's tracer provider sends them (nowhere, if it set none).
"""

from __future__ import annotations

import time
from typing import Any

from ..call import Measure
from ..errors import ConfigError
from ..events import (
    AgentAudioDoneEvent,
    AgentReconnectedEvent,
    ConversationTextEvent,
    Event,
    SessionEndEvent,
    SessionResumedEvent,
    UserStartedSpeakingEvent,
)
from .observer import CallView, Observer

__all__ = ["CallTracer", "call_tracer"]


def call_tracer(*, enabled: bool | None) -> Observer | None:
    """A tracer if asked for (``True``), or if OpenTelemetry is installed (``None``)."""
    if enabled is False:
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        if enabled:
            message = "tracing needs OpenTelemetry: pip install 'acdg-asgi[otel]'"
            raise ConfigError(message) from None
        return None
    return CallTracer(trace.get_tracer("acdg_asgi"))


class _Spans:
    __slots__ = ("call", "context", "played_at", "turn")

    def __init__(self, call: Any, context: Any) -> None:
        self.call = call
        self.context = context
        self.turn: Any = None
        self.played_at: int | None = None  # when the turn's audio will have played (ns)


class CallTracer:
    def __init__(self, tracer: Any) -> None:
        from opentelemetry import trace

        self._tracer = tracer
        self._trace = trace
        self._spans: dict[int, _Spans] = {}

    def call_started(self, call: CallView) -> None:
        span = self._tracer.start_span("acdg.call", attributes={
            "acdg.conversation_id": call.conversation_id,
            "acdg.session_id": call.session_id,
            "acdg.media_format": call.media_format.token,
        })
        self._spans[id(call)] = _Spans(span, self._trace.set_span_in_context(span))

    def call_event(self, call: CallView, event: Event) -> None:
        spans = self._spans.get(id(call))
        if spans is None:
            return
        if isinstance(event, ConversationTextEvent) and event.role == "assistant" \
                and event.behavior not in ("backchannel", "filler"):
            self._end_turn(spans, interrupted=False)
            spans.turn = self._tracer.start_span("acdg.agent.turn", context=spans.context)
        elif isinstance(event, AgentAudioDoneEvent) and spans.turn is not None:
            # The agent is done producing; the turn lasts until the caller has heard it.
            spans.turn.add_event("agent.audio_done")
            spans.played_at = time.time_ns() + int(call.unplayed_s(event.at) * 1e9)
        elif isinstance(event, UserStartedSpeakingEvent):
            if event.interrupted:
                self._end_turn(spans, interrupted=True, heard_ms=event.agent_audio_heard_ms)
            else:
                self._end_turn(spans, interrupted=False)
        elif isinstance(event, SessionResumedEvent):
            spans.call.add_event("session.resumed", {"gap_ms": event.gap_ms})
        elif isinstance(event, AgentReconnectedEvent):
            spans.call.add_event("agent.reconnected", {"gap_ms": event.gap_ms})
        elif isinstance(event, SessionEndEvent):
            spans.call.set_attribute("acdg.end_reason", event.reason)

    def call_observed(self, call: CallView, measure: Measure, value: float) -> None:
        spans = self._spans.get(id(call))
        if spans is None or measure is not Measure.AGENT_HANDSHAKE:
            return
        end = time.time_ns()
        span = self._tracer.start_span("acdg.agent.handshake", context=spans.context,
                                       start_time=end - int(value * 1e9))
        span.end(end_time=end)

    def call_finished(self, call: CallView) -> None:
        spans = self._spans.pop(id(call), None)
        if spans is not None:
            self._end_turn(spans, interrupted=False)
            spans.call.end()

    def refused(self, cause: str) -> None:
        pass

    def protocol_error(self, peer: str, kind: str) -> None:
        pass

    @staticmethod
    def _end_turn(spans: _Spans, *, interrupted: bool, heard_ms: float | None = None) -> None:
        if spans.turn is None:
            return
        spans.turn.set_attribute("acdg.interrupted", interrupted)
        if heard_ms is not None:
            spans.turn.set_attribute("acdg.heard_ms", heard_ms)
        end = time.time_ns()
        if not interrupted and spans.played_at is not None:
            end = min(end, spans.played_at)
        spans.turn.end(end_time=end)
        spans.turn = None
        spans.played_at = None
