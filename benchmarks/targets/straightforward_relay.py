"""Yardstick: the straightforward relay, as most people would first write it.

A Starlette ``WebSocket`` endpoint under uvicorn (uvloop), the ``websockets`` client toward
the agent, stdlib ``json`` and ``base64``, and two tasks per call pumping each direction.
It speaks just enough of both protocols for the load generator: session.initiate ->
Settings -> session.accepted, caller chunks -> binary frames, agent audio ->
playStream.start/chunk/stop, UserStartedSpeaking -> playStream.stop + speech.started.

Usage::

    python benchmarks/targets/straightforward_relay.py --port 8000 --agent-url ws://...
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

AUDIO = {"encoding": "linear16", "sample_rate": 16000}
SETTINGS = {
    "type": "Settings",
    "audio": {"input": AUDIO, "output": {**AUDIO, "container": "none"}},
    "agent": {},
}


class Relay:
    def __init__(self, vaic: WebSocket, agent: ClientConnection) -> None:
        self.vaic = vaic
        self.agent = agent
        self.stream_id: str | None = None
        self.streams = 0

    async def send_vaic(self, message: dict[str, Any]) -> None:
        await self.vaic.send_text(json.dumps(message))

    async def stop_stream(self) -> None:
        if self.stream_id is not None:
            await self.send_vaic({"type": "playStream.stop", "streamId": self.stream_id})
            self.stream_id = None

    async def vaic_to_agent(self) -> None:
        while True:
            message = json.loads(await self.vaic.receive_text())
            kind = message.get("type")
            if kind == "userStream.chunk":
                await self.agent.send(base64.b64decode(message["audioChunk"]))
            elif kind == "userStream.start":
                await self.send_vaic({"type": "userStream.started"})
            elif kind == "userStream.stop":
                await self.send_vaic({"type": "userStream.stopped"})
            elif kind == "session.end":
                return

    async def agent_to_vaic(self) -> None:
        async for frame in self.agent:
            if isinstance(frame, bytes):
                if self.stream_id is None:
                    self.streams += 1
                    self.stream_id = str(self.streams)
                    await self.send_vaic({
                        "type": "playStream.start", "streamId": self.stream_id,
                        "mediaFormat": "raw/lpcm16",
                    })  # fmt: skip
                await self.send_vaic({
                    "type": "playStream.chunk", "streamId": self.stream_id,
                    "audioChunk": base64.b64encode(frame).decode(),
                })  # fmt: skip
                continue
            kind = json.loads(frame).get("type")
            if kind == "UserStartedSpeaking":
                await self.stop_stream()
                await self.send_vaic({"type": "userStream.speech.started"})
            elif kind == "AgentAudioDone":
                await self.stop_stream()


def make_app(agent_url: str, token: str | None, agent_key: str | None) -> Starlette:
    headers = {"Authorization": f"Token {agent_key}"} if agent_key else {}

    async def endpoint(ws: WebSocket) -> None:
        if token and ws.headers.get("authorization") != f"Bearer {token}":
            await ws.close(1008)
            return
        await ws.accept()
        try:
            initiate = json.loads(await ws.receive_text())
            if initiate.get("type") != "session.initiate":
                await ws.close(1008)
                return
            async with connect(agent_url, additional_headers=headers, compression=None) as agent:
                json.loads(await agent.recv())  # Welcome
                await agent.send(json.dumps(SETTINGS))
                while json.loads(await agent.recv()).get("type") != "SettingsApplied":
                    pass
                relay = Relay(ws, agent)
                await relay.send_vaic({"type": "session.accepted", "mediaFormat": "raw/lpcm16"})
                pumps = [
                    asyncio.create_task(relay.vaic_to_agent()),
                    asyncio.create_task(relay.agent_to_vaic()),
                ]
                _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (WebSocketDisconnect, ConnectionClosed, OSError):
            pass
        finally:
            await _close_quietly(ws)

    return Starlette(routes=[WebSocketRoute("/{path:path}", endpoint)])


async def _close_quietly(ws: WebSocket) -> None:
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
        await ws.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--agent-url", required=True)
    ap.add_argument("--token", default="token", help="bearer token VAIC must send ('' for none)")
    ap.add_argument("--agent-key", default="", help="Deepgram API key, if the agent needs one")
    ap.add_argument("--ws", default="auto", help="uvicorn WebSocket implementation")
    ap.add_argument("--loop", default="uvloop", help="uvicorn event loop")
    args = ap.parse_args()
    uvicorn.run(
        make_app(args.agent_url, args.token or None, args.agent_key or None),
        host=args.host,
        port=args.port,
        ws=args.ws,
        loop=args.loop,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
