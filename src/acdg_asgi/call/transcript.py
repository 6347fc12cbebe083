"""The conversation record of a call: what was said, which functions ran, how fast.

It is appended per turn, never per audio frame, and it is what a new agent connection
is seeded with (``agent.context.messages``) when the old one drops. Entries stay as the
agent said them; where the caller barged in, :attr:`Transcript.cuts` holds what was
heard, and the history and the texts give that part only. The arguments and answers of
function calls are kept as :class:`Kept` gives them (redacted, masked in sensitive mode).
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from ..events import ToolRequest, TransferRecord, TurnLatency
from ..protocols import deepgram as dg

__all__ = ["Kept", "Transcript", "turn_latency"]


class Kept(Protocol):
    """How a function call's texts are kept (:class:`~acdg_asgi.call.sensitive.Masking`)."""

    def arguments(self, text: str) -> str: ...

    def answer(self, text: str) -> str: ...


def turn_latency(report: dg.LatencyReport) -> TurnLatency:
    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 1)

    return TurnLatency(
        stt_ms=ms(report.stt_latency), ttt_token_ms=ms(report.ttt_token_latency),
        ttt_text_ms=ms(report.ttt_text_latency), ttt_tool_ms=ms(report.ttt_tool_latency),
        ttt_thinking_ms=ms(report.ttt_thinking_latency), tts_ms=ms(report.tts_latency),
        total_ms=ms(report.total_latency),
    )


class Transcript:
    def __init__(self, kept: Kept | None = None) -> None:
        self._kept = kept
        self.entries: list[dg.History] = []
        self.cuts: dict[int, str] = {}  # entry index -> the part the caller heard
        self.latencies: list[float] = []  # AgentStartedSpeaking (experimental), seconds
        self.reports: list[TurnLatency] = []  # LatencyReport, the documented figures
        self._asked: dict[str, dg.FunctionCall] = {}  # client-side calls awaiting an answer
        self._withdrawn: set[str] = set()
        self._calls: dict[str, int] = {}  # function call id -> its entry
        self.times: dict[int, float] = {}  # entry index -> seconds since the call began
        self.transfers: list[TransferRecord] = []

    def add_text(self, role: str, content: str, at_s: float | None = None) -> int:
        """A spoken turn (said ``at_s`` into the call); its index (to :meth:`cut` it)."""
        self.entries.append(dg.History(role=role, content=content))
        index = len(self.entries) - 1
        if at_s is not None:
            self.times[index] = round(at_s, 3)
        return index

    def cut(self, index: int, heard: str) -> str | None:
        """The caller barged in on entry ``index`` having heard ``heard``; the rest, unheard."""
        if not 0 <= index < len(self.entries):
            return None
        content = self.entries[index].content or ""
        if not content.startswith(heard) or heard == content:
            return None
        self.cuts[index] = heard
        return content[len(heard):].strip() or None

    def functions_asked(self, functions: tuple[dg.FunctionCall, ...]) -> None:
        # Kept as they are to be recorded: the mode that masks them is the one in force now.
        self._asked.update((fn.id, self.keep(fn)) for fn in functions if fn.client_side)

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
            arguments=asked.arguments if asked else "{}", response=self.answer(answer.content),
            thought_signature=asked.thought_signature if asked else None,
        ))
        return True

    def function_ran_on_server(self, answer: dg.ServerFunctionCallResponse) -> None:
        if answer.id and answer.id in self._calls:
            return  # the server's History already had it, with its arguments
        self._add_call(dg.FunctionCallRecord(
            id=answer.id or "", name=answer.name, client_side=False, arguments="{}",
            response=self.answer(answer.content),
        ))

    def server_history(self, entry: dg.History) -> None:
        """Deepgram's own record of a turn. Spoken turns are kept from ``ConversationText``;
        a server-side function call is taken from here, where its arguments are."""
        for call in entry.function_calls or ():
            if call.client_side:
                continue
            if self._kept is not None:
                call = msgspec.structs.replace(call, arguments=self._kept.arguments(
                    call.arguments), response=self._kept.answer(call.response))
            index = self._calls.get(call.id)
            if index is None:
                self._add_call(call)
            else:
                self.entries[index] = dg.History(function_calls=(call,))

    def keep(self, fn: dg.FunctionCall) -> dg.FunctionCall:
        """A function call as the history keeps it."""
        if self._kept is None:
            return fn
        return msgspec.structs.replace(fn, arguments=self._kept.arguments(fn.arguments))

    def keep_request(self, request: ToolRequest) -> ToolRequest:
        """A telephony tool's request as observers see it: its arguments and target kept
        as its function call is."""
        kept = self._kept
        if kept is None:
            return request

        def shown(value: object) -> object:
            return msgspec.json.decode(kept.arguments(msgspec.json.encode(value).decode()))

        arguments = shown(request.arguments)
        return msgspec.structs.replace(
            request, arguments=arguments if isinstance(arguments, dict) else {},
            target=None if request.target is None else str(shown(request.target)))

    def answer(self, content: str) -> str:
        """A function's answer as the history keeps it."""
        return content if self._kept is None else self._kept.answer(content)

    def _add_call(self, record: dg.FunctionCallRecord) -> None:
        if record.id:
            self._calls[record.id] = len(self.entries)
        self.entries.append(dg.History(function_calls=(record,)))

    def add_latency(self, seconds: float | None) -> None:
        if seconds is not None:
            self.latencies.append(seconds)

    def totals_s(self) -> list[float]:
        """Per-turn total latency: from ``LatencyReport`` when Deepgram sent any, else from
        ``AgentStartedSpeaking``."""
        if self.reports:
            return [r.total_ms / 1000 for r in self.reports if r.total_ms is not None]
        return self.latencies

    def history(self) -> tuple[dg.History, ...]:
        """The conversation as a new agent connection should know it: what was heard."""
        if not self.cuts:
            return tuple(self.entries)
        out = []
        for i, entry in enumerate(self.entries):
            heard = self.cuts.get(i)
            if heard is None:
                out.append(entry)
            elif heard:
                out.append(dg.History(role=entry.role, content=heard))
        return tuple(out)

    def texts(self) -> list[tuple[str, str, str | None, float | None]]:
        """``(role, heard, unheard, at_s)`` of every spoken turn, in order."""
        out: list[tuple[str, str, str | None, float | None]] = []
        for i, e in enumerate(self.entries):
            if not e.role or e.content is None:
                continue
            heard = self.cuts.get(i)
            at = self.times.get(i)
            if heard is None:
                out.append((e.role, e.content, None, at))
            else:
                out.append((e.role, heard, e.content[len(heard):].strip() or None, at))
        return out

    @property
    def function_calls(self) -> int:
        return sum(len(e.function_calls) for e in self.entries if e.function_calls)

    @property
    def turns(self) -> int:
        return sum(1 for e in self.entries if e.role == "assistant")
