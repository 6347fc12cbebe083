"""Prometheus metrics (``pip install acdg-asgi[metrics]``).

Rare things (calls, resumes, refusals, timings) update prometheus-client objects as they
happen. Frame and byte counts are summed from each call's plain-integer
:class:`~acdg_asgi.call.CallStats` at scrape time, so the audio path pays nothing for
them. No label carries a conversation id: label sets stay small and fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..call import CallState, CallStats, Measure
from ..errors import ConfigError
from ..events import (
    AgentReconnectedEvent,
    BridgeErrorEvent,
    Event,
    FrustrationDetectedEvent,
    ParticipantIgnoredEvent,
    SessionEndEvent,
    SessionResumedEvent,
    SessionStartEvent,
    TransferAnsweredEvent,
    TransferFailedEvent,
    UserStartedSpeakingEvent,
)
from .observer import CallView

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError:  # pragma: no cover - exercised only without the extra
    prometheus_client_missing = True
    Collector = object  # type: ignore[misc,assignment]  # so this module still imports
else:
    prometheus_client_missing = False

__all__ = ["CONTENT_TYPE", "PrometheusMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (metric, label value, CallStats field): frames and bytes each way, read at scrape time
_FLOWS = (
    ("frames", "caller_to_agent", "caller_frames"),
    ("frames", "agent_to_bridge", "agent_frames"),
    ("frames", "bridge_to_vaic", "play_chunks"),
    ("bytes", "caller_to_agent", "caller_bytes"),
    ("bytes", "agent_to_bridge", "agent_bytes"),
    ("bytes", "bridge_to_vaic", "play_bytes"),
)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5)
_AGENT_BUCKETS = (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)
_DURATION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class PrometheusMetrics:
    """Metrics of one or more bridges, in ``registry`` (a new one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if prometheus_client_missing:
            raise ConfigError("metrics need prometheus-client: pip install 'acdg-asgi[metrics]'")
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.calls_started = Counter("acdg_calls_started", "Calls accepted", registry=r)
        self.calls_ended = Counter("acdg_calls_ended", "Calls ended, by reason", ["reason"],
                                   registry=r)
        self.resumes = Counter("acdg_session_resumes", "Calls resumed by VAIC after a socket "
                               "loss", registry=r)
        self.reconnects = Counter("acdg_agent_reconnects", "Agent connections replaced "
                                  "mid-call", registry=r)
        self.refusals = Counter("acdg_refused", "Upgrades and sessions refused, by cause",
                               ["cause"], registry=r)
        self.protocol_errors = Counter("acdg_protocol_errors", "Bad input from a peer",
                                       ["peer", "kind"], registry=r)
        self.errors = Counter("acdg_errors", "Error events, by source", ["source"], registry=r)
        self.agent_rejected = Counter("acdg_agent_rejected", "Agent connections refused for "
                                      "good (a wrong key or URL), by HTTP status", ["status"],
                                      registry=r)
        self.barge_ins = Counter("acdg_barge_ins", "Caller interruptions of the agent",
                                 registry=r)
        self.handshake = Histogram("acdg_agent_handshake_seconds", "Agent connect to "
                                   "SettingsApplied", buckets=(*_LATENCY_BUCKETS, 10),
                                   registry=r)
        self.agent_latency = Histogram("acdg_agent_response_latency_seconds", "Agent's own "
                                       "total latency per turn (LatencyReport)",
                                       buckets=_AGENT_BUCKETS, registry=r)
        self.agent_stages = Histogram("acdg_agent_latency_seconds", "Parts of the agent's "
                                      "latency per turn (LatencyReport), by stage", ["stage"],
                                      buckets=(*_LATENCY_BUCKETS, 10), registry=r)
        self.transfers = Counter("acdg_transfers", "Transfer outcomes VAIC reported",
                                 ["outcome"], registry=r)
        self.frustration = Counter("acdg_frustration_detected", "FrustrationDetected from "
                                   "the agent", registry=r)
        self.participants_ignored = Counter("acdg_participants_ignored", "Participants whose "
                                            "audio was kept from the agent", registry=r)
        self.barge_in_reaction = Histogram("acdg_barge_in_reaction_seconds", "UserStarted"
                                           "Speaking received to playStream.stop written",
                                           buckets=_LATENCY_BUCKETS, registry=r)
        self.barge_in_tail = Histogram("acdg_barge_in_tail_seconds", "Agent audio sent but "
                                       "not yet played when the caller barged in",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.duration = Histogram("acdg_call_duration_seconds", "Call duration",
                                  buckets=_DURATION_BUCKETS, registry=r)
        self._measured: dict[Measure, Any] = {
            Measure.AGENT_HANDSHAKE: self.handshake,
            Measure.AGENT_RESPONSE_LATENCY: self.agent_latency,
            Measure.BARGE_IN_REACTION: self.barge_in_reaction,
            Measure.BARGE_IN_TAIL: self.barge_in_tail,
            Measure.AGENT_STT_LATENCY: self.agent_stages.labels("stt"),
            Measure.AGENT_TTT_TOKEN_LATENCY: self.agent_stages.labels("ttt_token"),
            Measure.AGENT_TTT_TEXT_LATENCY: self.agent_stages.labels("ttt_text"),
            Measure.AGENT_TTT_TOOL_LATENCY: self.agent_stages.labels("ttt_tool"),
            Measure.AGENT_TTT_THINKING_LATENCY: self.agent_stages.labels("ttt_thinking"),
            Measure.AGENT_TTS_LATENCY: self.agent_stages.labels("tts"),
        }
        self._live: list[Callable[[], Iterable[CallView]]] = []
        self._cluster: Callable[[], int | None] | None = None
        self._finished = CallStats()
        self.registry.register(_LiveCollector(self))

    def watch(self, calls: Callable[[], Iterable[CallView]]) -> None:
        """Count the calls that ``calls()`` returns as live: those not yet handed to
        :meth:`call_finished` (a bridge registers itself)."""
        self._live.append(calls)

    def watch_cluster(self, calls: Callable[[], int | None]) -> None:
        """Report ``calls()`` (active calls on every instance) as a gauge, when known."""
        self._cluster = calls

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))

    # --- Observer ------------------------------------------------------------------------

    def call_started(self, call: CallView) -> None:
        pass

    def call_event(self, call: CallView, event: Event) -> None:
        if isinstance(event, SessionStartEvent):
            self.calls_started.inc()
        elif isinstance(event, SessionEndEvent):
            self.calls_ended.labels(event.reason).inc()
            self.duration.observe(event.duration_s)
        elif isinstance(event, SessionResumedEvent):
            self.resumes.inc()
        elif isinstance(event, AgentReconnectedEvent):
            self.reconnects.inc()
        elif isinstance(event, BridgeErrorEvent):
            self.errors.labels(event.source).inc()
            if event.code == "AGENT_REJECTED":
                self.agent_rejected.labels(str(event.status or "none")).inc()
        elif isinstance(event, UserStartedSpeakingEvent) and event.interrupted:
            self.barge_ins.inc()
        elif isinstance(event, TransferFailedEvent):
            self.transfers.labels("failed").inc()
        elif isinstance(event, TransferAnsweredEvent):
            self.transfers.labels("answered").inc()
        elif isinstance(event, FrustrationDetectedEvent):
            self.frustration.inc()
        elif isinstance(event, ParticipantIgnoredEvent):
            self.participants_ignored.inc()

    def call_observed(self, call: CallView, measure: Measure, value: float) -> None:
        self._measured[measure].observe(value)

    def call_finished(self, call: CallView) -> None:
        # Moved from "live" to "finished" in one step, so the totals never go back.
        finished, stats = self._finished, call.stats
        for field in stats.__struct_fields__:
            setattr(finished, field, getattr(finished, field) + getattr(stats, field))

    def refused(self, cause: str) -> None:
        self.refusals.labels(cause).inc()

    def protocol_error(self, peer: str, kind: str) -> None:
        self.protocol_errors.labels(peer, kind).inc()

    # --- scrape time ---------------------------------------------------------------------

    def _live_calls(self) -> Iterator[CallView]:
        for calls in self._live:
            yield from calls()


class _LiveCollector(Collector):
    def __init__(self, metrics: PrometheusMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        live = list(self.metrics._live_calls())
        yield GaugeMetricFamily("acdg_active_calls", "Calls in progress", value=len(live))
        cluster = self.metrics._cluster() if self.metrics._cluster is not None else None
        if cluster is not None:
            yield GaugeMetricFamily("acdg_cluster_active_calls",
                                    "Calls in progress on every instance", value=cluster)
        detached = sum(1 for c in live if c.state is CallState.DETACHED)
        yield GaugeMetricFamily("acdg_detached_calls", "Calls waiting for VAIC to resume",
                                value=detached)
        families = {
            "frames": CounterMetricFamily("acdg_frames", "Audio frames, by direction",
                                          labels=["direction"]),
            "bytes": CounterMetricFamily("acdg_audio_bytes", "Audio bytes, by direction",
                                         labels=["direction"]),
        }
        finished = self.metrics._finished
        for family, direction, field in _FLOWS:
            total = getattr(finished, field) + sum(getattr(c.stats, field) for c in live)
            families[family].add_metric([direction], total)
        dropped = CounterMetricFamily("acdg_dropped", "Audio dropped, by what", labels=["what"])
        for what, field in (("caller_frames", "caller_frames_dropped"),
                            ("agent_audio_bytes", "play_bytes_dropped"),
                            ("other_participant_frames", "other_participant_frames"),
                            ("late_agent_audio_bytes", "play_bytes_late")):
            total = getattr(finished, field) + sum(getattr(c.stats, field) for c in live)
            dropped.add_metric([what], total)
        yield from families.values()
        yield dropped
