"""Keys the caller presses, into the conversation (the ``DtmfInput`` policy).

A key may cut the agent short (``Interruption(by="dtmf")`` or ``"any"``) and counts as
the caller's input for the no-input policy. With ``DtmfInput``, each ``DTMF`` activity
(or, when collecting, ``max_digits`` keys, the keys before the terminator, or what was
keyed when the inter-key timer :attr:`~.state.Timer.DTMF` runs out) is one input: a
``dtmf_collected`` event, and a user message to the agent (``DTMF-1234``). On the
terminator, ``ForceEndTurn`` goes first, so what the caller said before it is answered
now. In sensitive mode the input is masked for everyone but the ``sensitive()`` block,
and reaches the agent masked when the mode keeps keys from it.
"""

from __future__ import annotations

from typing import Final

from .. import events as ev
from ..policies import DtmfInput
from ..protocols import deepgram as dg
from .base_parts import CallBase
from .interruption import BargeIn
from .no_input import NoInputWatch
from .sensitive import Masking
from .state import Timer

__all__ = ["DigitInput"]

_KEYS: Final = frozenset("0123456789*#ABCDabcd")


class DigitInput:
    __slots__ = ("barge", "keyed", "masking", "no_input", "policy", "secret")

    def __init__(self, policy: DtmfInput | None, *, barge: BargeIn, no_input: NoInputWatch,
                 masking: Masking) -> None:
        self.policy = policy
        self.barge, self.no_input, self.masking = barge, no_input, masking
        self.keyed = ""  # collected so far
        self.secret = False  # some of it was keyed in sensitive mode

    def pressed(self, call: CallBase, digits: str, now: float) -> None:
        """VAIC's ``DTMF`` activity."""
        keys = "".join(k for k in digits if k in _KEYS).upper()
        if not keys:
            return
        self.barge.key(call, now)
        self.no_input.caller_active(call)
        policy = self.policy
        if policy is None or not policy.collects:
            if policy is not None or self.masking.on:
                self._input(call, keys, "key", now, secret=self.masking.on)
            return
        self.secret = self.secret or self.masking.on
        for key in keys:
            if key == policy.terminator:
                self._done(call, "terminator", now)
                continue
            self.keyed += key
            if policy.max_digits is not None and len(self.keyed) >= policy.max_digits:
                self._done(call, "max_digits", now)
        if self.keyed:
            call.timers.set(Timer.DTMF, now + policy.timeout_s)

    def due(self, call: CallBase, now: float) -> None:
        """No key for ``timeout_s``: what was keyed is the input."""
        if self.keyed:
            self._done(call, "timeout", now)

    def _done(self, call: CallBase, ended_by: str, now: float) -> None:
        keyed, self.keyed = self.keyed, ""
        secret, self.secret = self.secret, False
        call.timers.clear(Timer.DTMF)
        policy = self.policy
        if ended_by == "terminator" and policy is not None and policy.force_end_turn:
            call.to_agent_when_ready(dg.ForceEndTurn(), now)
        if keyed:
            self._input(call, keyed, ended_by, now, secret=secret)

    def _input(self, call: CallBase, keys: str, ended_by: str, now: float, *, secret: bool
               ) -> None:
        masking = self.masking
        if secret:
            masking.captured.append(keys)
        shown = masking.mask if secret else keys
        call.emit(ev.DtmfCollectedEvent, now, digits=shown, ended_by=ended_by, masked=secret)
        policy = self.policy
        if policy is not None and policy.to_agent:
            told = shown if secret and masking.mode.keep_digits_from_agent else keys
            call.to_agent_when_ready(dg.InjectUserMessage(content=policy.message(told)), now)
