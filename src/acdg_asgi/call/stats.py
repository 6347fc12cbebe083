"""Per-call counters: plain integers bumped on the frame path, read by metrics and records.

Counting here costs an integer add per frame; exporting (Prometheus, the per-call record)
happens only when someone asks, never on the frame path.
"""

from __future__ import annotations

import msgspec

__all__ = ["CallStats"]


class CallStats(msgspec.Struct):
    caller_frames: int = 0  # userStream.chunk received from VAIC
    caller_bytes: int = 0
    # caller audio never sent: held past pre_ready_audio_ms, refused or shed for a slow
    # agent socket, or queued for a connection that was lost
    caller_frames_dropped: int = 0
    agent_frames: int = 0  # binary audio frames received from the agent
    agent_bytes: int = 0
    play_chunks: int = 0  # playStream.chunk produced for VAIC
    play_bytes: int = 0
    # agent audio never sent: past the playout's max_buffer_ms, shed for a slow VAIC
    # socket, or queued for a socket that was lost
    play_bytes_dropped: int = 0
    other_participant_frames: int = 0  # audio of participants the agent does not hear
    play_bytes_late: int = 0  # agent audio skipped: already late after the bridge stalled
    barge_ins: int = 0
    resumes: int = 0
    agent_reconnects: int = 0
    warnings: int = 0
    errors: int = 0
