"""The conversation record of a call: what was said, which functions ran, how fast.

It is appended per turn, never per audio frame, and it is what a new agent connection
is seeded with (``agent.context.messages``) when the old one drops.
"""

from __future__ import annotations

from .protocols import deepgram as dg

__all__ = ["Transcript"]


class Transcript:
    def __init__(self) -> None:
        self.entries: list[dg.History] = []
        self.latencies: list[float] = []

    def add_text(self, role: str, content: str) -> None:
        self.entries.append(dg.History(role=role, content=content))

    def add_function_call(self, record: dg.FunctionCallRecord) -> None:
        self.entries.append(dg.History(function_calls=(record,)))

    def add_latency(self, seconds: float | None) -> None:
        if seconds is not None:
            self.latencies.append(seconds)

    def history(self) -> tuple[dg.History, ...]:
        return tuple(self.entries)

    def texts(self) -> list[tuple[str, str]]:
        """``(role, content)`` of every spoken turn, in order."""
        return [(e.role, e.content) for e in self.entries if e.role and e.content is not None]

    @property
    def function_calls(self) -> int:
        return sum(len(e.function_calls) for e in self.entries if e.function_calls)

    @property
    def turns(self) -> int:
        return sum(1 for e in self.entries if e.role == "assistant")
