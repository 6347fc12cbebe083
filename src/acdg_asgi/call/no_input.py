"""When the caller says nothing (the ``NoInput`` policy): reprompt, then hang up politely.

The bridge's own timer (:attr:`~.state.Timer.NO_INPUT`) starts when the agent's words
have been heard (from ``AgentAudioDone``, plus what is still to play) and stops when the
agent takes a turn again, asks for a function, or the caller speaks or keys. Once VAIC
sends ``noUserInput`` itself, its count drives the policy and the bridge's timer stays
off for the rest of the call.

A silence while no agent is ready (lost, reconnecting) is not the caller's: the
dead-air budget (``Limits.dead_air_s``) bounds it, with the hold prompt or a hangup, and
neither timer counts it here. Once an agent is back the caller's turn starts again.
"""

from __future__ import annotations

from .. import events as ev
from ..policies import NoInput
from ..protocols import deepgram as dg
from .base_parts import CallBase
from .state import CallState, Timer

__all__ = ["NoInputWatch"]


class NoInputWatch:
    __slots__ = ("count", "policy", "vaic_times")

    def __init__(self, policy: NoInput | None) -> None:
        self.policy = policy
        self.count = 0  # silences in a row
        self.vaic_times = False  # VAIC sends noUserInput: its timer, not ours

    def agent_done(self, call: CallBase, now: float) -> None:
        """The agent finished a turn's audio: the caller's turn to talk, once it played."""
        policy = self.policy
        if policy is not None and policy.bridge_timer and not self.vaic_times:
            call.timers.set(Timer.NO_INPUT, now + call.unplayed_s(now) + policy.timeout_s)

    def agent_busy(self, call: CallBase) -> None:
        """The agent speaks, thinks or waits for a function: not the caller's silence."""
        if self.policy is not None:
            call.timers.clear(Timer.NO_INPUT)

    def caller_active(self, call: CallBase) -> None:
        """The caller spoke or keyed: the count starts again."""
        if self.policy is not None:
            self.count = 0
            call.timers.clear(Timer.NO_INPUT)

    def due(self, call: CallBase, now: float) -> None:
        """The bridge's timer ran out."""
        if call.state is CallState.ACTIVE and call.link.ready:
            self._silence(call, now, "bridge")

    def agent_back(self, call: CallBase, now: float) -> None:
        """A new agent connection is ready after a lost one: the caller's turn again."""
        self.agent_done(call, now)

    def vaic(self, call: CallBase, count: int | None, now: float) -> None:
        """VAIC's ``noUserInput``."""
        if self.policy is None:
            return
        self.vaic_times = True
        call.timers.clear(Timer.NO_INPUT)
        if call.state is CallState.ACTIVE and call.link.ready:  # else: the dead-air budget's
            self._silence(call, now, "vaic")

    def _silence(self, call: CallBase, now: float, source: str) -> None:
        policy = self.policy
        assert policy is not None
        self.count += 1
        if self.count <= policy.reprompts:
            call.emit(ev.NoInputActionEvent, now, action="reprompt", count=self.count,
                      source=source)
            text = policy.reprompt_text(self.count)
            if policy.reprompt_as == "user":
                call.to_agent_when_ready(dg.InjectUserMessage(content=text), now)
            else:
                call.to_agent_when_ready(dg.InjectAgentMessage(message=text), now)
            return
        call.emit(ev.NoInputActionEvent, now, action="hangup", count=self.count, source=source)
        call.hang_up_saying(now, policy.goodbye, policy.reason, end_reason="no_input")
