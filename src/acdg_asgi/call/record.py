"""The per-call record, built from a call as it ends (the type is
:class:`~acdg_asgi.events.CallRecord`)."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime

from ..events import END_REASON_CODES, CallRecord, TranscriptLine
from .parts import CallParts

__all__ = ["build_record", "iso", "latency_figures"]


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


def latency_figures(latencies: list[float]) -> tuple[float | None, float | None]:
    """Median and maximum of the agent's per-turn latencies, in milliseconds."""
    if not latencies:
        return None, None
    return statistics.median(latencies) * 1000, max(latencies) * 1000


def build_record(call: CallParts, now: float) -> CallRecord:
    """The record of ``call``, ended at ``now``."""
    reason, reason_code, detail = call.end_reason or ("", None, None)
    p50, worst = latency_figures(call.transcript.totals_s())
    fmt, stats = call.media_format, call.stats
    return CallRecord(
        conversation_id=call.conversation_id,
        session_id=call.session_id,
        caller=call.initiate.caller or (call.details.caller if call.details else None),
        bot_name=call.initiate.bot_name,
        media_format=fmt.token,
        started_at=iso(call.started_wall),
        ended_at=iso(call.started_wall + now - call.started_at),
        duration_s=round(now - call.started_at, 3),
        end_reason=reason,
        reason_code=reason_code,
        detail=detail,
        turns=call.transcript.turns,
        transcript=tuple(TranscriptLine(role, text, unheard, at)
                         for role, text, unheard, at in call.transcript.texts()),
        function_calls=call.transcript.function_calls,
        agent_latency_p50_ms=p50,
        agent_latency_max_ms=worst,
        latency=tuple(call.transcript.reports),
        barge_ins=stats.barge_ins,
        resumes=stats.resumes,
        agent_reconnects=stats.agent_reconnects,
        warnings=stats.warnings,
        errors=stats.errors,
        caller_audio_s=round(fmt.duration_ms(stats.caller_bytes) / 1000, 3),
        agent_audio_s=round(fmt.duration_ms(stats.play_bytes) / 1000, 3),
        meaning=END_REASON_CODES.get(reason_code or ""),
        details=call.details,
        agent_request_ids=tuple(call.request_ids),
        frustration=call.frustration,
        participants_ignored=tuple(call.ignored),
        transfers=tuple(call.transcript.transfers),
    )
