"""The conversation record of a call: what was said, which functions ran, how fast.

It is appended per turn, never per audio frame, and it is what a new agent connection
is seeded with (``agent.context.messages``) when the old one drops.
"""

from __future__ import annotations

from ..protocols import deepgram as dg

__all__ = ["Transcript"]


class Transcript:
    def __init__(self) -> None:
        self.entries: list[dg.History] = []
        self.latencies: list[float] = []
        self._asked: dict[str, dg.FunctionCall] = {}  # client-side calls awaiting an answer
        self._withdrawn: set[str] = set()

    def add_text(self, role: str, content: str) -> None:
        self.entries.append(dg.History(role=role, content=content))

    def functions_asked(self, functions: tuple[dg.FunctionCall, ...]) -> None:
        self._asked.update((fn.id, fn) for fn in functions if fn.client_side)

    def functions_withdrawn(self, ids: tuple[str, ...]) -> None:
        for fid in ids:
            self._asked.pop(fid, None)
            self._withdrawn.add(fid)

    def function_answered(self, answer: dg.FunctionCallResponse) -> bool:
        """Record the application's answer; ``False`` if the agent withdrew the call."""
        if answer.id is None:
            return True
        if answer.id in self._withdrawn:
            return False  # answering a withdrawn call would confuse the agent
        asked = self._asked.pop(answer.id, None)
        self._add_call(dg.FunctionCallRecord(
            id=answer.id, name=answer.name, client_side=True,
            arguments=asked.arguments if asked else "{}", response=answer.content,
            thought_signature=asked.thought_signature if asked else None,
        ))
        return True

    def function_ran_on_server(self, answer: dg.ServerFunctionCallResponse) -> None:
        self._add_call(dg.FunctionCallRecord(
            id=answer.id or "", name=answer.name, client_side=False, arguments="{}",
            response=answer.content,
        ))

    def _add_call(self, record: dg.FunctionCallRecord) -> None:
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
