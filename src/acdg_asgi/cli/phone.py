"""``acdg phone URL``: the browser phone on its own, calling any Bot API bot at ``URL``.

The page is the one ``BridgeApp(phone=True)`` serves, here on a small server of its
own: ``http://host:port/`` opens it with ``URL`` filled in. It shows what the protocol
carries (transcripts, play streams, DTMF, the hangup, a verdict); a bridge's event
stream is only shown when the page comes from that bridge.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO
from urllib.parse import quote

import uvicorn
from starlette.types import Receive, Scope, Send

from ..asgi.phone import PhonePage
from ..asgi.responses import respond
from ..errors import ConfigError
from . import values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the bot's WebSocket URL, e.g. wss://bot.example.com/audiocodes")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to serve the page on (default 127.0.0.1)")
    parser.add_argument("--port", type=values.argument(values.port), default=8100,
                        help="port (default 8100)")


class PhoneServer:
    """An ASGI app: the page at ``/phone``, and ``/`` opening it to call ``bot_url``."""

    def __init__(self, bot_url: str) -> None:
        if not bot_url.startswith(("ws://", "wss://")):
            raise ConfigError(f"the bot URL must start with ws:// or wss://, not {bot_url!r}")
        self.bot_url = bot_url
        self._page = PhonePage(events_url=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message: Any = await receive()
            while message["type"] != "lifespan.shutdown":
                await send({"type": f"{message['type']}.complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/") or "/"
        if path == "/":
            location = f"phone?url={quote(self.bot_url, safe='')}".encode()
            await send({"type": "http.response.start", "status": 307,
                        "headers": [(b"location", location), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
        elif self._page.handles(path):
            await self._page.serve(scope, send, path)
        else:
            await respond(send, 404, b'{"error":"not found"}')


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    app = PhoneServer(args.url)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    out.write(f"Browser phone for {args.url}: open http://{shown}:{args.port}/ and press "
              "Call (a token, if the bot wants one, goes in Settings). Ctrl-C to stop.\n")
    out.flush()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="on")
    return 0
