"""What the message tables and the record may touch of a call: its parts, outboxes and
the sub-machines of its policies.

:class:`~acdg_asgi.call.machine.Call` is the one implementation. The tables
(:mod:`.vaic_table`, :mod:`.agent_table`, :mod:`.notifications`) and :mod:`.record` are
written against this interface rather than the class, so the machine imports them and
not the other way round.
"""

from __future__ import annotations

from typing import Protocol

from .agent_setup import AgentSetup
from .base_parts import CallBase
from .dtmf import DigitInput
from .interruption import BargeIn
from .no_input import NoInputWatch
from .sensitive import Masking
from .tools import ToolRunner

__all__ = ["CallParts"]


class CallParts(CallBase, Protocol):
    setup: AgentSetup
    tools: ToolRunner
    barge: BargeIn
    no_input: NoInputWatch
    digits: DigitInput
    masking: Masking
