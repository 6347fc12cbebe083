"""The per-call record: one summary per call, handed over with ``session_end``.

``acdg serve --records calls.jsonl`` writes them as JSON lines; applications get the same
object as ``SessionEndEvent.record`` (a CRM note, a billing line, a QA sample).
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime

import msgspec

__all__ = ["CallRecord", "Turn"]


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
