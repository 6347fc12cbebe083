"""The per-call record: one summary per call, handed over with ``session_end``.

``acdg serve --records calls.jsonl`` writes them as JSON lines; applications get the same
object as ``SessionEndEvent.record`` (a CRM note, a billing line, a QA sample).
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from .call import Call

__all__ = ["CallRecord", "Turn", "build_record"]


class Turn(msgspec.Struct, frozen=True):
    role: str
    content: str


class CallRecord(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: str
    session_id: str
    caller: str | None
    bot_name: str | None
    media_format: str
    started_at: str  # ISO 8601, UTC
    ended_at: str
    duration_s: float
    end_reason: str
    reason_code: str | None = None
    detail: str | None = None
    turns: int
    transcript: tuple[Turn, ...]
    function_calls: int
    agent_latency_p50_ms: float | None
    agent_latency_max_ms: float | None
    barge_ins: int
    resumes: int
    agent_reconnects: int
    warnings: int
    errors: int
    caller_audio_s: float
    agent_audio_s: float

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


def latency_figures(latencies: list[float]) -> tuple[float | None, float | None]:
    """Median and maximum of the agent's per-turn latencies, in milliseconds."""
    if not latencies:
        return None, None
    return statistics.median(latencies) * 1000, max(latencies) * 1000


def build_record(call: Call, now: float) -> CallRecord:
    """The record of ``call``, ended at ``now``."""
    reason, reason_code, detail = call.end_reason or ("", None, None)
    p50, worst = latency_figures(call.transcript.latencies)
    fmt, stats = call.media_format, call.stats
    return CallRecord(
        conversation_id=call.conversation_id,
        session_id=call.session_id,
        caller=call.initiate.caller,
        bot_name=call.initiate.bot_name,
        media_format=fmt.token,
        started_at=iso(call.started_wall),
        ended_at=iso(call.started_wall + now - call.started_at),
        duration_s=round(now - call.started_at, 3),
        end_reason=reason,
        reason_code=reason_code,
        detail=detail,
        turns=call.transcript.turns,
        transcript=tuple(Turn(role, text) for role, text in call.transcript.texts()),
        function_calls=call.transcript.function_calls,
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
