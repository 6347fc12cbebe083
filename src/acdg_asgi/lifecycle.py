"""The states of a call, and the actions a call asks of its runtime."""

from __future__ import annotations

import enum

import msgspec

__all__ = ["Action", "CallState", "CloseAgent", "CloseVaic", "ConnectAgent"]


class CallState(enum.Enum):
    ACTIVE = "active"  # VAIC socket attached
    DETACHED = "detached"  # VAIC socket lost; waiting for session.resume
    ENDING = "ending"  # we hung up or transferred; waiting for VAIC to close
    ENDED = "ended"


class ConnectAgent(msgspec.Struct, frozen=True):
    attempt: int


class CloseAgent(msgspec.Struct, frozen=True):
    pass


class CloseVaic(msgspec.Struct, frozen=True):
    reason: str


Action = ConnectAgent | CloseAgent | CloseVaic
