"""Yardstick: the floor relay as a raw ASGI app under stock uvicorn, about the least CPU
any ASGI app can spend per frame there.

A plain ``async def app(scope, receive, send)``, no framework, served as the ``bridge``
target's app is (``uvicorn.run``, ``--ws auto --loop uvloop``). Everything else is the
floor relay's (``floor_relay.py``): its :class:`~floor_relay.Call` speaks AudioCodes, its
raw asyncio client speaks to the agent. VAIC's messages come one ``await receive()`` each
and go to the agent at once; the agent's go out through uvicorn's ``send``, stepped inside
the agent socket's ``data_received``: it finishes there unless VAIC's socket is backed up,
and then a task finishes it and sends what came meanwhile. So uvicorn-floor ÷ floor is
what uvicorn's own WebSocket handling costs.

Usage::

    python benchmarks/targets/uvicorn_floor.py --port 8000 --agent-url ws://...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import uvicorn
from floor_relay import NORMAL, Call

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Coroutine[Any, Any, None]]


@types.coroutine
def resume(step: Coroutine[Any, Any, None], waiting: Any) -> Generator[Any, Any, None]:
    """The rest of ``step``, a coroutine stepped once already that yielded ``waiting``."""
    with contextlib.suppress(StopIteration):
        while True:
            waiting = step.send((yield waiting))


class AsgiCall(Call):
    """VAIC's socket as the ASGI ``send`` carries it."""

    def __init__(self, send: Send, agent_url: str, agent_key: str | None) -> None:
        super().__init__(agent_url, agent_key)
        self.send = send
        self.closed = False
        self.backlog: list[Message] | None = None  # while a send waits for VAIC's socket
        self.finishing: asyncio.Task[None] | None = None

    def send_text(self, data: bytes) -> None:
        self.put({"type": "websocket.send", "text": data.decode()})

    def close(self, code: bytes = NORMAL) -> None:
        if not self.closed:
            self.closed = True
            self.put({"type": "websocket.close", "code": int.from_bytes(code, "big")})

    def put(self, message: Message) -> None:
        """Send ``message`` as far as the server's ``send`` goes without waiting; a send
        that has to wait is finished by a task, which then sends, in order, what came
        meanwhile."""
        if self.backlog is not None:
            self.backlog.append(message)
            return
        step = self.send(message)
        try:
            waiting = step.send(None)
        except StopIteration:
            return  # sent: the usual case
        except Exception:
            return  # VAIC's socket is gone: the receive loop hears it
        self.backlog = []
        self.finishing = asyncio.get_running_loop().create_task(self.finish(step, waiting))

    async def finish(self, step: Coroutine[Any, Any, None], waiting: Any) -> None:
        try:
            await resume(step, waiting)
            while self.backlog:
                await self.send(self.backlog.pop(0))
        except Exception:
            pass  # as in put
        self.backlog = None


def make_app(agent_url: str, token: str | None, agent_key: str | None) -> Callable[..., Any]:
    bearer = b"Bearer " + token.encode() if token else None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return  # lifespan: nothing to set up
        headers = {name.lower(): value for name, value in scope["headers"]}  # not always lower
        if bearer is not None and headers.get(b"authorization") != bearer:
            await send({"type": "websocket.close", "code": 1008})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        call = AsgiCall(send, agent_url, agent_key)
        on_text = call.on_text
        while (message := await receive())["type"] == "websocket.receive":
            if (text := message.get("text")) is not None:
                on_text(text)
        call.closed = True
        if call.agent is not None:
            call.agent.close()

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--agent-url", required=True)
    ap.add_argument("--token", default="token", help="bearer token VAIC must send ('' for none)")
    ap.add_argument("--agent-key", default="", help="Deepgram API key, if the agent needs one")
    ap.add_argument("--ws", default="auto", help="uvicorn: WebSocket protocol")
    ap.add_argument("--loop", default="uvloop", help="uvicorn: event loop")
    ap.add_argument("--http", default="auto", help="uvicorn: HTTP protocol")
    args = ap.parse_args()
    uvicorn.run(make_app(args.agent_url, args.token or None, args.agent_key or None),
                host=args.host, port=args.port, ws=args.ws, loop=args.loop, http=args.http,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
