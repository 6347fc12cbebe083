"""Telephony tools: functions the agent may call to act on the phone line.

``end_call``, ``transfer_call``, ``send_dtmf`` and ``play_url`` (as ``TelephonyTools``
enables them) are declared in every ``Settings`` and ``UpdateThink`` as client-side
functions with ``defer_until_eot`` (Deepgram holds them until the caller's turn is
confirmed). When the agent asks for one, the request is checked against the
configuration (named transfer targets and prompts only), shown to the application
(``tool_called``) and, with a ``check`` hook, put to it (:class:`~.state.CheckTool`).
It then waits until the agent's words have played, runs, and its outcome goes back as
the ``FunctionCallResponse``: a transfer's is VAIC's ``transferStatus``. A caller who
talks over those last words withdraws what still waits.

The agent is let go with the hangup of ``end_call`` and with an answered transfer, so
those outcomes are recorded in the call's transcript without being sent.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from .. import events as ev
from ..errors import LocalProtocolError
from ..policies import Handled, Proceed, Refuse, TelephonyTools, ToolVerdict, transfer_reason
from ..protocols import audiocodes as ac
from ..protocols import deepgram as dg
from .base_parts import CallBase
from .state import CallState, CheckTool, Timer

__all__ = ["ToolRunner", "tool_functions"]

_DTMF: Final = re.compile(r"[0-9*#]{1,20}")
_json: Final = msgspec.json.Encoder()


def tool_functions(tools: TelephonyTools) -> tuple[dg.Function, ...]:
    """The function definitions the agent is given for ``tools``."""
    out = []
    if tools.end_call:
        out.append(dg.Function(
            name="end_call", defer_until_eot=True,
            description="End the phone call when the conversation is over. Say goodbye "
                        "first: the call ends once your last words have been heard.",
            parameters={"type": "object", "properties": {"reason": {
                "type": "string", "description": "Why the call ends, for the call's record"}}},
        ))
    if tools.transfer is not None:
        targets = tools.transfer.targets
        described = "; ".join(f"{name}: {t.description}" if t.description else name
                              for name, t in targets.items() if not isinstance(t, str))
        out.append(dg.Function(
            name="transfer_call", defer_until_eot=True,
            description="Transfer the caller to a person or a department. Tell the caller "
                        f"first. Targets: {described}.",
            parameters={"type": "object", "required": ["target"], "properties": {"target": {
                "type": "string", "enum": list(targets)}}},
        ))
    if tools.send_dtmf:
        out.append(dg.Function(
            name="send_dtmf", defer_until_eot=True,
            description="Press keys on the phone line, e.g. to choose from the menu of the "
                        "system you are talking to.",
            parameters={"type": "object", "required": ["digits"], "properties": {"digits": {
                "type": "string", "pattern": "^[0-9*#]{1,20}$",
                "description": "The keys to press: 0-9, * and #"}}},
        ))
    if tools.play_url is not None:
        prompts = tools.play_url.prompts
        described = "; ".join(f"{name}: {p.description}" if p.description else name
                              for name, p in prompts.items() if not isinstance(p, str))
        out.append(dg.Function(
            name="play_url", defer_until_eot=True,
            description=f"Play a recorded message to the caller. Messages: {described}.",
            parameters={"type": "object", "required": ["prompt"], "properties": {"prompt": {
                "type": "string", "enum": list(prompts)}}},
        ))
    return tuple(out)


class _Pending:
    __slots__ = ("connection", "params", "request", "state")

    def __init__(self, request: ev.ToolRequest, connection: int) -> None:
        self.request = request
        self.connection = connection  # answers go only to the connection that asked
        self.state = "checking"  # -> waiting (for the words to play) -> running
        self.params: dict[str, Any] = {}


class ToolRunner:
    """One call's telephony tools: declared, asked for, checked, run, answered."""

    __slots__ = ("_connection", "_open", "_playing", "config", "functions", "names",
                 "transferring", "waiting")

    def __init__(self, config: TelephonyTools | None) -> None:
        self.config = config
        self.functions = tool_functions(config) if config is not None else ()
        self.names: frozenset[str] = frozenset(f.name for f in self.functions)
        self._open: dict[str, _Pending] = {}
        self.waiting: list[_Pending] = []  # until the agent's words have played
        self._playing: list[_Pending] = []  # play_url waiting for playFinished
        self.transferring: _Pending | None = None
        self._connection = 0

    # --- declared --------------------------------------------------------------------------

    def declare(self, think: dg.ThinkSettings | tuple[dg.ThinkSettings, ...] | None
                ) -> dg.ThinkSettings | tuple[dg.ThinkSettings, ...] | None:
        """``think`` with the tools added to its functions (each of a fallback chain). A
        function of the application's own with a tool's name stays, and the application
        answers it."""
        if not self.functions or think is None:
            return think
        if isinstance(think, tuple):
            return tuple(self._declare_one(item) for item in think)
        return self._declare_one(think)

    def _declare_one(self, think: dg.ThinkSettings) -> dg.ThinkSettings:
        own = tuple(think.functions or ())
        taken = {f.name for f in own}
        self.names = frozenset(f.name for f in self.functions) - taken
        added = tuple(f for f in self.functions if f.name not in taken)
        return msgspec.structs.replace(think, functions=own + added)

    def connected(self) -> None:
        """A new agent connection: what the old one asked is no longer its to answer."""
        self._connection += 1

    # --- asked -----------------------------------------------------------------------------

    def requested(self, call: CallBase, functions: tuple[dg.FunctionCall, ...], now: float
                  ) -> tuple[dg.FunctionCall, ...]:
        """The agent's ``FunctionCallRequest``: the tools are taken here; the rest is for
        the application."""
        if not self.names:
            return functions
        rest = []
        for fn in functions:
            if fn.client_side and fn.name in self.names:
                self._asked(call, fn, now)
            else:
                rest.append(fn)
        return tuple(rest)

    def _asked(self, call: CallBase, fn: dg.FunctionCall, now: float) -> None:
        try:
            arguments = msgspec.json.decode(fn.arguments or "{}")
        except msgspec.DecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            arguments = {}
        target, problem = self._target(fn.name, arguments)
        request = ev.ToolRequest(id=fn.id, name=fn.name, arguments=arguments, target=target)
        pending = self._open[fn.id] = _Pending(request, self._connection)
        call.emit(ev.ToolCalledEvent, now, request=request)
        call.observers_see(request=call.transcript.keep_request(request))
        if problem is not None:
            self._answer(call, pending, "failed", {"error": problem}, now)
        elif self.config is not None and self.config.check is not None:
            call.actions.append(CheckTool(request))
        else:
            self._go(call, pending, Proceed(), now)

    def _target(self, name: str, arguments: dict[str, Any]) -> tuple[str | None, str | None]:
        """What the arguments resolve to, or why they do not."""
        config = self.config
        assert config is not None
        if name == "end_call":
            reason = arguments.get("reason")
            return (reason if isinstance(reason, str) else None), None
        if name == "send_dtmf":
            digits = str(arguments.get("digits", ""))
            if _DTMF.fullmatch(digits):
                return digits, None
            return None, f"digits must be 1-20 of 0-9 * #, not {digits[:30]!r}"
        if name == "transfer_call":
            assert config.transfer is not None
            chosen = str(arguments.get("target", ""))
            target = config.transfer.get(chosen)
            if target is None:
                return None, f"no target {chosen[:40]!r}; known: " + ", ".join(
                    sorted(config.transfer.targets))
            return target.uri, None
        assert config.play_url is not None
        chosen = str(arguments.get("prompt", ""))
        prompt = config.play_url.get(chosen)
        if prompt is None:
            return None, f"no prompt {chosen[:40]!r}; known: " + ", ".join(
                sorted(config.play_url.prompts))
        return prompt.url, None

    def checked(self, call: CallBase, tool_id: str, verdict: ToolVerdict | None, now: float
                ) -> None:
        """The application's ``check`` hook answered (``None``: go ahead)."""
        pending = self._open.get(tool_id)
        if pending is None or pending.state != "checking":
            return  # withdrawn meanwhile
        if isinstance(verdict, Refuse):
            self._answer(call, pending, "refused", {"status": "refused",
                                                   "reason": verdict.reason}, now)
        elif isinstance(verdict, Handled):
            self._answer(call, pending, "handled", verdict.result, now)
        else:
            self._go(call, pending, verdict or Proceed(), now)

    def _go(self, call: CallBase, pending: _Pending, verdict: Proceed, now: float) -> None:
        pending.state = "waiting"
        pending.params = dict(verdict.params)
        self.waiting.append(pending)
        call.pull(now)  # runs at once if the agent's words have all been heard

    # --- run, once the agent's words have played -------------------------------------------

    def run_waiting(self, call: CallBase, now: float) -> None:
        waiting, self.waiting = self.waiting, []
        for pending in waiting:
            if call.state is CallState.ACTIVE:
                self._run(call, pending, now)
            else:
                self._answer(call, pending, "failed", {"error": f"the call is "
                                                       f"{call.state.value}"}, now)

    def _run(self, call: CallBase, pending: _Pending, now: float) -> None:
        request, params = pending.request, pending.params
        pending.state = "running"
        if request.name == "end_call":
            self._answer(call, pending, "done", {"status": "call ended"}, now, send=False)
            call.hangup(now, request.target or "the agent ended the call", params=params)
        elif request.name == "transfer_call":
            self._transfer(call, pending, now)
        elif request.name == "send_dtmf":
            call.send_activities((ac.Activity(type="event", name="sendDtmf", activity_params={
                "dtmfDigits": request.target, **params}),), now)
            self._answer(call, pending, "done", {"status": "sent", "digits": request.target},
                         now)
        else:  # play_url
            call.send_activities((ac.Activity(type="event", name="playUrl", activity_params={
                "playUrlUrl": request.target, **params}),), now)
            wait = self.config.play_wait_s if self.config is not None else 0.0
            if wait > 0:
                self._playing.append(pending)
                call.timers.set(Timer.PLAY_URL, now + wait)
            else:
                self._answer(call, pending, "done", {"status": "playing"}, now)

    def _transfer(self, call: CallBase, pending: _Pending, now: float) -> None:
        assert self.config is not None and self.config.transfer is not None
        request = pending.request
        target = self.config.transfer.get(str(request.arguments.get("target")))
        assert target is not None
        params: dict[str, Any] = {"transferTarget": target.uri}
        if target.handover_reason is not None:
            params["handoverReason"] = target.handover_reason
        if target.sip_headers:
            params["transferSipHeaders"] = list(target.sip_headers)
        params.update(pending.params)
        try:
            call.transfer_call(now, ac.Activity(type="event", name="transfer",
                                                activity_params=params))
        except LocalProtocolError as exc:
            self._answer(call, pending, "failed", {"error": str(exc)}, now)
            return
        self.transferring = pending

    # --- outcomes ------------------------------------------------------------------------

    def transfer_outcome(self, call: CallBase, status: str, reason_code: str | None,
                         reason: str | None, now: float) -> bool:
        """VAIC's ``transferStatus`` of a transfer the agent asked for: its result. Whether
        the agent was told (else the call tells it the usual way)."""
        pending, self.transferring = self.transferring, None
        if pending is None or pending.request.id not in self._open:
            return False
        if status == "answered":
            self._answer(call, pending, "done", {"status": "answered"}, now, send=False)
            return True
        result = {"status": "failed", "reason": transfer_reason(reason_code, reason)}
        if reason_code:
            result["reason_code"] = reason_code
        return self._answer(call, pending, "failed", result, now)

    def play_finished(self, call: CallBase, failed: str | None, now: float) -> None:
        """VAIC's ``playFinished`` (``failed``: ``playUrlFailed`` and its reason)."""
        if not self._playing:
            return
        pending = self._playing.pop(0)
        if failed is None:
            self._answer(call, pending, "done", {"status": "played"}, now)
        else:
            self._answer(call, pending, "failed", {"status": "failed", "reason": failed}, now)
        if not self._playing:
            call.timers.clear(Timer.PLAY_URL)

    def play_wait_over(self, call: CallBase, now: float) -> None:
        playing, self._playing = self._playing, []
        for pending in playing:
            self._answer(call, pending, "done", {"status": "playing",
                                                 "note": "VAIC did not say when it ended"}, now)

    def withdrawn(self, call: CallBase, ids: tuple[str, ...], now: float) -> None:
        """Deepgram's ``FunctionCallCancelled``: these are not to run, nor be answered."""
        for tool_id in ids:
            pending = self._open.get(tool_id)
            if pending is not None and pending.state != "running":
                self._cancel(call, pending, now)

    def barged_in(self, call: CallBase, now: float) -> None:
        """The caller talked over the agent's last words: what waits for them is off
        (Deepgram withdraws it too)."""
        for pending in list(self.waiting):
            self._cancel(call, pending, now)

    def _cancel(self, call: CallBase, pending: _Pending, now: float) -> None:
        self._open.pop(pending.request.id, None)
        if pending in self.waiting:
            self.waiting.remove(pending)
        call.emit(ev.ToolResultEvent, now, id=pending.request.id, name=pending.request.name,
                  status="cancelled")

    def _answer(self, call: CallBase, pending: _Pending, status: str, result: Any,
                now: float, *, send: bool = True) -> bool:
        """The function's result: recorded in the transcript, sent to the agent that asked
        (``send``). Whether it was sent."""
        request = pending.request
        self._open.pop(request.id, None)
        text = result if isinstance(result, str) else _json.encode(result).decode()
        response = dg.FunctionCallResponse(id=request.id, name=request.name, content=text)
        sent = False
        if call.transcript.function_answered(response) and send \
                and pending.connection == self._connection:
            call.to_agent_when_ready(response, now)
            sent = True
        call.emit(ev.ToolResultEvent, now, id=request.id, name=request.name, status=status,
                  result=text)
        call.observers_see(result=call.transcript.answer(text))
        return sent
