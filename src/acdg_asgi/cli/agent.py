"""``acdg agent``: the stand-in Deepgram Voice Agent on a port, scripted from a file.

For trying the bridge and the examples with no key and no network, and for a team's own
CI: point the bridge at it with ``DEEPGRAM_URL=ws://127.0.0.1:PORT/v1/agent/converse``.
It speaks the v1 wire protocol (Deepgram's own SDK can talk to it) and follows its script
(:mod:`acdg_asgi.testing.agent_file`) instead of a language model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

import anyio

from ..errors import ConfigError
from ..protocols import deepgram as dg
from ..testing.agent import AgentConnectionRecord, AgentScript, StandInAgent
from ..testing.agent_file import load_agent_file
from . import values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=values.argument(values.port), default=8765,
                        help="port to listen on (default 8765; 0 picks one)")
    parser.add_argument("--path", help=f"URL path (default {dg.AGENT_PATH}, as Deepgram's)")
    parser.add_argument("--script", type=Path, metavar="FILE",
                        help="what the agent says and does, as TOML (.toml) or JSON: turns, "
                        "function calls, failures, drops, an API key")
    parser.add_argument("--api-key", help="refuse clients without this key (HTTP 401); "
                        "overrides the script's api_key")


async def serve_agent(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    loaded = load_agent_file(args.script) if args.script is not None else None
    script = loaded.script if loaded is not None else AgentScript()
    api_key = args.api_key or (loaded.api_key if loaded is not None else None)
    path = args.path or (loaded.path if loaded is not None else None) or dg.AGENT_PATH
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: not a port number")
    if not path.startswith("/"):
        raise ConfigError(f"--path {path!r}: a URL path starts with '/'")
    try:
        agent = StandInAgent(script=script, host=args.host, port=args.port, api_key=api_key,
                             path=path)
        async with agent:
            key = "clients must send the API key" if api_key else "any API key (or none)"
            count = len(script.turns)
            turns = f"{count} scripted turn{'s' * (count != 1)}" if not script.echo else "echo"
            out.write(f"stand-in Deepgram agent on {agent.url} ({turns}; {key})\n"
                      f"point the bridge at it: DEEPGRAM_URL={agent.url}\n"
                      "Ctrl-C to stop.\n")
            out.flush()
            await _follow(agent, out)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    return 0


async def _follow(agent: StandInAgent, out: TextIO) -> None:
    """One line per connection as it comes and goes."""
    async with anyio.create_task_group() as tg:
        seen = 0
        while True:
            try:
                await agent.wait_for_connections(seen + 1, timeout=3600)
            except TimeoutError:
                continue
            for record in agent.connections[seen:]:
                seen += 1
                out.write(f"connection {seen}: {record.path}\n")
                out.flush()
                tg.start_soon(_closed, seen, record, out)


async def _closed(number: int, record: AgentConnectionRecord, out: TextIO) -> None:
    await record.closed.wait()
    said = sum(1 for kind in record.sent_types if kind == "AgentAudioDone")
    out.write(f"connection {number} ended ({record.close_reason}): {said} utterances, "
              f"{record.barge_ins} barge-ins\n")
    out.flush()
