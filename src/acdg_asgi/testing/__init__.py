"""Test an application, a bot or a rule of the bridge without Deepgram or AudioCodes.

    from acdg_asgi.testing import (
        AgentScript, CallReport, CallScript, StandInAgent, Turn, Utterance, run_call, serve,
    )

    async with StandInAgent(script=AgentScript(turns=(Turn("Sure", function="lookup"),))) as agent:
        bridge = my_bridge(deepgram_url=agent.url)   # your BridgeApp and its handlers
        async with serve(bridge) as host:             # a real uvicorn server, on a free port
            report = await run_call(f"ws://{host}/", CallScript(wait_for_greeting=True))
    assert report.ok, report.to_json(indent=2)

    agent.py         StandInAgent: a Deepgram Voice Agent v1 server on a real socket,
                     following an AgentScript of Turns (agent_file.py: from TOML or JSON)
    vaic.py          run_call / run_calls: a scripted VAIC (CallScript, Utterance) that
                     drives any bot and returns a CallReport: its conformance violations
                     and its failures (verdict.py: did the call work for its caller)
    conformance.py   ConformanceChecker: the Bot API rules a bot is judged by
    pair.py          CallPair: one call between a scripted VAIC and a scripted agent, no
                     sockets, a clock moved by hand (a protocol rule in a millisecond)
    server.py        serve: an ASGI app under uvicorn on loopback, on a free or given port
    signals.py       tones and silence in any media format
    pytest_plugin.py fixtures (stand_in_agent, bridge, bridge_url, vaic_call), loaded by
                     pytest once acdg-asgi is installed
"""

from ._agent_turns import AFTER_SCRIPT, DEFAULT_TURNS
from .agent import AgentConnectionRecord, AgentScript, StandInAgent, Turn
from .agent_file import AgentFile, load_agent_file
from .conformance import CODES, ConformanceChecker
from .pair import CallPair
from .report import BargeIn, CallEvent, CallReport, Latency, PlayStream, Transcript
from .rules import Failure, Note, Violation
from .script import CallScript, Utterance, read_wav
from .server import serve
from .vaic import run_call, run_calls, validate_connection
from .verdict import FAILURE_CODES

__all__ = [
    "AFTER_SCRIPT",
    "CODES",
    "DEFAULT_TURNS",
    "FAILURE_CODES",
    "AgentConnectionRecord",
    "AgentFile",
    "AgentScript",
    "BargeIn",
    "CallEvent",
    "CallPair",
    "CallReport",
    "CallScript",
    "ConformanceChecker",
    "Failure",
    "Latency",
    "Note",
    "PlayStream",
    "StandInAgent",
    "Transcript",
    "Turn",
    "Utterance",
    "Violation",
    "load_agent_file",
    "read_wav",
    "run_call",
    "run_calls",
    "serve",
    "validate_connection",
]
