"""Internal: the sans-I/O core. One phone call as a state machine, with its parts.

Nothing in here reads a clock, opens a socket or imports an I/O library; the runtime
(:mod:`acdg_asgi.runtime`) feeds a :class:`Call` its inputs and writes what it gives out.

    machine.py      the Call: inputs in, outboxes out
    state.py        call states, the actions a call asks of its runtime, what it measures,
                    what it shares with other instances
    vaic_table.py   what each VAIC message does, by call state
    notifications.py  what VAIC's activities mean: start, DTMF, transferStatus, ...
    agent_table.py  what each Deepgram message does
    agent_state.py  the agent's configuration as it stands: chosen, then updated
    agent_setup.py  each agent connection's way to ready: Welcome, Settings, what waits
    parts.py        the interface the tables and the record are written against
    agent_link.py   the agent connection as a sub-machine: handshake, backoff, keep-alive
    playout.py      the playout clock: agent audio out at playback rate
    transcript.py   the conversation so far, which a new agent connection is seeded with
    stats.py        per-call counters
    record.py       the per-call record at the end
    fold.py         repeats of one kind folded into one report
"""

from .machine import Call
from .state import Action, CallState, CloseAgent, CloseVaic, ConnectAgent, Measure, PingAgent
from .stats import CallStats

__all__ = ["Action", "Call", "CallState", "CallStats", "CloseAgent", "CloseVaic",
           "ConnectAgent", "Measure", "PingAgent"]
