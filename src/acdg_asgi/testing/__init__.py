"""Test an application, a bot or a rule of the bridge without Deepgram or AudioCodes.

    agent.py        StandInAgent: a Deepgram Voice Agent v1 server on a real socket,
                    following an AgentScript of Turns
    vaic.py         run_call / run_calls: a scripted VAIC (CallScript, Utterance) that
                    drives any bot and returns a CallReport
    conformance.py  ConformanceChecker: the Bot API rules a bot is judged by
    pair.py         CallPair: one call between a scripted VAIC and a scripted agent, no
                    sockets, a clock moved by hand (a protocol rule in a millisecond)
    server.py       serve: an ASGI app under uvicorn on a free loopback port
    signals.py      tones and silence in any media format
"""

from .agent import AgentScript, StandInAgent, Turn
from .conformance import ConformanceChecker
from .pair import CallPair
from .report import CallReport
from .script import CallScript, Utterance
from .vaic import run_call, run_calls

__all__ = [
    "AgentScript",
    "CallPair",
    "CallReport",
    "CallScript",
    "ConformanceChecker",
    "StandInAgent",
    "Turn",
    "Utterance",
    "run_call",
    "run_calls",
]
