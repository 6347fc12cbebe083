"""The rig most socket tests run in: a stand-in agent, a bridge, real uvicorn, the logs.

:func:`rig` starts the stand-in Deepgram agent (optionally behind a
:class:`~_faults.TcpProxy`), a :class:`~acdg_asgi.BridgeApp` pointed at it, serves the
bridge with real uvicorn on a loopback port, and records every application event
(:class:`~vaic_raw.EventLog`), every session, and what uvicorn and asyncio log
(:class:`LogCapture`). A scripted VAIC dials :attr:`Rig.url` (``run_call(r.url, script)``);
a call by hand goes through :meth:`Rig.call_ready`. The rig counts the running tasks on
entry, so a test ends with :meth:`Rig.settled`::

    async with rig(script, limits=Limits(resume_grace_s=5)) as r:
        async with r.call_ready() as (caller, record):  # initiate, agent ready, stream
            cid = caller.conversation_id
            ...
            await caller.end()
            await caller.wait_closed()
        await r.settled([cid], end_reasons="caller")
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import uvicorn
from _faults import TcpProxy
from vaic_raw import EventLog, RawVaic, vaic, wait_until
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from acdg_asgi import BridgeApp, Session
from acdg_asgi.testing.agent import AgentConnectionRecord, AgentScript, StandInAgent
from acdg_asgi.testing.server import serve

__all__ = [
    "SETTLE_S",
    "LogCapture",
    "Rig",
    "agent_ready",
    "call_ready",
    "hangup_reason",
    "is_hangup",
    "load_example",
    "rig",
    "sample",
    "scrape",
    "serve_small_buffers",
    "standin",
    "upgrade_status",
]

SETTLE_S = 10.0  # generous: CI machines are noisy
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

class LogCapture(logging.Handler):
    """Every WARNING-or-worse record, from the root logger and from ``uvicorn``.

    uvicorn's own logging config stops ``uvicorn.*`` from propagating, so the handler
    sits on both; a record seen twice is kept once.
    """

    LOGGERS = ("", "uvicorn")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._seen: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if id(record) not in self._seen:
            self._seen.add(id(record))
            self.records.append(record)

    @contextlib.contextmanager
    def installed(self) -> Any:
        loggers = [logging.getLogger(name) for name in self.LOGGERS]
        for logger in loggers:
            logger.addHandler(self)
        try:
            yield self
        finally:
            for logger in loggers:
                logger.removeHandler(self)

    def problems(self) -> list[str]:
        """uvicorn or asyncio errors, and any traceback logged anywhere."""
        bad = []
        for r in self.records:
            server = r.name.startswith(("uvicorn", "asyncio"))
            if (server and r.levelno >= logging.ERROR) or r.exc_info or r.stack_info:
                bad.append(f"{r.name} {r.levelname}: {r.getMessage()}"
                           + (f" [{r.exc_info[1]!r}]" if r.exc_info else ""))
        return bad

    def messages(self, logger_prefix: str = "acdg_asgi") -> list[str]:
        return [r.getMessage() for r in self.records if r.name.startswith(logger_prefix)]


@asynccontextmanager
async def standin(script: AgentScript | None = None, **kwargs: Any) -> AsyncIterator[StandInAgent]:
    async with StandInAgent(script=script, **kwargs) as agent:
        yield agent


@asynccontextmanager
async def serve_small_buffers(app: Any, *, ws: object = "auto",
                              send_buffer: int = 4096) -> AsyncIterator[str]:
    """uvicorn on a listening socket whose connections get a small kernel send buffer
    (fixed, not grown by the kernel), so a client that stops reading backs writes up."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, ws=ws, log_level="warning",  # type: ignore[arg-type]
                                           log_config=None))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [listener])
        while not server.started:  # noqa: ASYNC110 - uvicorn only offers a flag
            await anyio.sleep(0.005)
        try:
            yield f"127.0.0.1:{listener.getsockname()[1]}"
        finally:
            server.should_exit = True


@dataclass
class Rig:
    agent: StandInAgent
    bridge: BridgeApp
    host: str
    log: EventLog
    logs: LogCapture
    proxy: TcpProxy | None = None
    sessions: list[Session] = field(default_factory=list)  # one per session_start
    tasks_before: int = 0  # asyncio tasks running once the rig was up

    @property
    def url(self) -> str:
        """Where VAIC dials the bridge: ``ws://host/``."""
        return f"ws://{self.host}/"

    @property
    def call_ids(self) -> list[str]:
        return sorted({e.conversation_id for e in self.log.of("session_start")})

    async def agent_ready(self, index: int = 0) -> AgentConnectionRecord:
        """The stand-in's ``index``-th connection, once it has said ``SettingsApplied``."""
        return await agent_ready(self.agent, index)

    def call_ready(
        self, formats: Sequence[str] = ("raw/lpcm16",), *, stream: bool = True, **fields: Any
    ) -> contextlib.AbstractAsyncContextManager[tuple[RawVaic, AgentConnectionRecord]]:
        """:func:`call_ready` on this rig's bridge."""
        return call_ready(self.host, self.agent, formats, stream=stream, **fields)

    async def settled(
        self,
        calls: Iterable[str] = (),
        *,
        end_reasons: Mapping[str, str] | str | None = None,
        allow_logs: Callable[[str], bool] = lambda line: False,
    ) -> None:
        """What must hold once the calls of a test are over, whatever went wrong in them:
        no call left in the bridge, one ``session_end`` per call (with its reason: one for
        all, or per call), the tasks back to what ran before, every agent connection
        closed, no traceback in the server's logs."""
        calls = list(calls)
        reasons = dict.fromkeys(calls, end_reasons) if isinstance(end_reasons, str) \
            else dict(end_reasons or {})
        await wait_until(lambda: not self.bridge.calls, within=SETTLE_S, what="bridge.calls empty")
        for cid in calls:
            await self.log.wait_for("session_end", lambda e, c=cid: e.conversation_id == c,
                                    within=SETTLE_S)
        before = self.tasks_before
        await wait_until(lambda: len(asyncio.all_tasks()) <= before, within=SETTLE_S,
                         what=f"tasks back to {before} (now {len(asyncio.all_tasks())})")
        await anyio.sleep(0.2)  # anything late (a second session_end, a log line) shows up now
        for cid in calls:
            ends = self.log.of("session_end", cid)
            assert len(ends) == 1, f"{cid}: {len(ends)} session_end events"
            if cid in reasons:
                assert ends[0].reason == reasons[cid], ends[0]
        starts = {e.conversation_id for e in self.log.of("session_start")}
        assert {e.conversation_id for e in self.log.of("session_end")} == starts
        for record in self.agent.connections:
            await wait_until(record.closed.is_set, within=SETTLE_S, what="agent connection closed")
        problems = [p for p in self.logs.problems() if not allow_logs(p)]
        assert problems == [], "\n".join(problems)
        assert len(asyncio.all_tasks()) <= before


@asynccontextmanager
async def rig(
    script: AgentScript | None = None,
    *,
    proxy: bool = False,
    agent_url: str | None = None,
    agent_api_key: str | None = None,
    send_buffer: int | None = None,
    ws: object = "auto",
    **bridge_kwargs: Any,
) -> AsyncIterator[Rig]:
    """Stand-in agent (behind a proxy if asked; ``agent_url`` points the bridge elsewhere),
    bridge, real uvicorn (``ws`` its WebSocket implementation; ``send_buffer`` a small
    kernel send buffer for VAIC's sockets), events and logs captured."""
    logs = LogCapture()
    with logs.installed():
        async with standin(script, api_key=agent_api_key) as agent, \
                contextlib.AsyncExitStack() as stack:
            url = agent_url or agent.url
            tcp = None
            if proxy:
                tcp = await stack.enter_async_context(TcpProxy(url))
                url = tcp.url
            if agent_api_key is not None:
                bridge_kwargs.setdefault("deepgram_api_key", agent_api_key)
            bridge = BridgeApp(deepgram_url=url, **bridge_kwargs)
            log = EventLog(bridge)
            r = Rig(agent, bridge, "", log, logs, tcp)
            bridge.on("session_start")(lambda session, event: r.sessions.append(session))
            if send_buffer is not None:
                served = serve_small_buffers(bridge, ws=ws, send_buffer=send_buffer)
            else:
                # log_config=None: leave logging alone, so the capture sees uvicorn's records.
                served = serve(bridge, ws=ws, log_config=None)
            r.host = await stack.enter_async_context(served)
            r.tasks_before = len(asyncio.all_tasks())
            yield r


async def agent_ready(agent: StandInAgent, index: int = 0) -> AgentConnectionRecord:
    """The stand-in's ``index``-th connection, once it has said ``SettingsApplied``."""
    await agent.wait_for_connections(index + 1, timeout=SETTLE_S)
    record = agent.connections[index]
    await wait_until(lambda: "SettingsApplied" in record.sent_types, what="agent ready")
    return record


@asynccontextmanager
async def call_ready(
    host: str, agent: StandInAgent, formats: Sequence[str] = ("raw/lpcm16",), *,
    stream: bool = True, **fields: Any,
) -> AsyncIterator[tuple[RawVaic, AgentConnectionRecord]]:
    """A VAIC socket through the prelude of a call: ``session.initiate`` accepted, the
    agent connection ready and (``stream``) the user stream started. For calls opened one
    after another: the call's agent connection is the next one the stand-in gets."""
    index = len(agent.connections)
    async with vaic(host) as caller:
        accepted = await caller.initiate(formats, **fields)
        assert accepted["type"] == "session.accepted", accepted
        record = await agent_ready(agent, index)
        if stream:
            await caller.start_stream()
        yield caller, record


def is_hangup(reply: Any) -> bool:
    if reply.type != "activities":
        return False
    return any(a.get("name") == "hangup" for a in reply.msg.get("activities", ()))


async def hangup_reason(caller: RawVaic, within: float = SETTLE_S) -> str:
    """Wait for a ``hangup`` activity; return its (non-empty) ``hangupReason``."""
    reply = await caller.wait_for(is_hangup, within=within)
    activity = next(a for a in reply.msg["activities"] if a.get("name") == "hangup")
    reason = (activity.get("activityParams") or {}).get("hangupReason")
    assert isinstance(reason, str) and reason, f"hangup without a reason: {reply.msg}"
    return reason


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        base, _, rest = metric.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if base == name and got == want:
            return float(value)
    return 0.0


async def scrape(host: str, path: str = "/metrics") -> str:
    """What Prometheus would read at ``http://host/metrics``."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://{host}{path}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py``, imported as the module ``examples_<name>``."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # frameworks resolve handler annotations through it
    spec.loader.exec_module(module)
    return module


async def upgrade_status(
    host: str, path: str = "/", headers: Mapping[str, str] | None = None
) -> int:
    """The HTTP status a VAIC WebSocket upgrade gets: 101 if accepted."""
    try:
        async with connect(f"ws://{host}{path}", additional_headers=headers,
                           open_timeout=SETTLE_S, proxy=None):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code
