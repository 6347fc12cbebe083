"""ASGI helpers for the bridge's routes: the path below the mount point, plain responses,
and refused WebSocket upgrades."""

from __future__ import annotations

import msgspec
from starlette.types import Scope, Send

from ..transports.redact import mark_refused

__all__ = ["deny", "respond", "route_path"]


def route_path(scope: Scope) -> str:
    """The path below the mount point, whichever way the host framework reports it."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/")  # Litestar hands mounted apps "/ready/"
    return path or "/"


async def respond(
    send: Send, status: int, body: bytes, content_type: str = "application/json"
) -> None:
    headers = [(b"content-type", content_type.encode()),
               (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def deny(scope: Scope, send: Send, status: int, reason: str) -> None:
    """Refuse a WebSocket upgrade with a real HTTP status where the server allows it."""
    mark_refused()  # so uvicorn's "returned without completing handshake" is not logged
    if "websocket.http.response" in scope.get("extensions", {}):
        body = msgspec.json.encode({"error": reason})
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": reason})
