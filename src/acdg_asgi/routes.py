"""The bridge's plain HTTP side: Live Hub's probe, readiness, metrics, call control.

    GET  <mount>/                      {"type": "ac-bot-api", "success": true}
    GET  <mount>/ready                 200 while taking calls, 503 while draining
    GET  <mount>/metrics               Prometheus text (with metrics=True)
    POST <mount>/calls/{id}/{method}   run a Session method on a call, wherever it is
                                       (with control_auth=; JSON body = keyword arguments):
                                       200 done, 400 bad request, 401, 404 no such call,
                                       409 the call refused it, 503 store down, 504 no answer
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from starlette.types import Receive, Scope, Send

from .auth import Connection
from .cluster import CONTROL_METHODS, CallNotFound, CommandFailed, ControlError, ControlTimeout
from .errors import AuthError, BridgeError
from .metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from .app import BridgeApp

__all__ = ["deny", "handle_http", "respond", "route_path"]

PROBE_BODY = b'{"type":"ac-bot-api","success":true}'
MAX_CONTROL_BODY = 64 * 1024


async def handle_http(bridge: BridgeApp, scope: Scope, receive: Receive, send: Send) -> None:
    path, method = route_path(scope), scope["method"]
    if path.startswith("/calls/") and bridge.control_auth is not None:
        await _control(bridge, scope, receive, send, path)
    elif method not in ("GET", "HEAD"):
        await respond(send, 405, b'{"error":"method not allowed"}')
    elif path == "/":
        await respond(send, 200, PROBE_BODY)
    elif path == "/ready":
        calls = len(bridge.calls)
        body = msgspec.json.encode({
            "ready": not bridge.draining, "calls": calls, "instance": bridge.cluster.instance_id,
            "cluster_calls": await bridge.cluster.cluster_calls(calls),
        })
        await respond(send, 503 if bridge.draining else 200, body)
    elif path == "/metrics" and bridge.metrics is not None:
        await respond(send, 200, bridge.metrics.render(), CONTENT_TYPE)
    else:
        await respond(send, 404, b'{"error":"not found"}')


async def _control(
    bridge: BridgeApp, scope: Scope, receive: Receive, send: Send, path: str
) -> None:
    assert bridge.control_auth is not None
    if scope["method"] != "POST":
        await respond(send, 405, b'{"error":"use POST"}')
        return
    try:
        allowed = await bridge.control_auth(Connection.from_scope(scope, path))
    except AuthError:
        allowed = False
    if not allowed:
        await respond(send, 401, b'{"error":"unauthorized"}')
        return
    _, _, rest = path.partition("/calls/")
    cid, _, method = rest.partition("/")
    body = await _read_body(receive)
    try:
        kwargs = msgspec.json.decode(body) if body.strip() else {}
        if not isinstance(kwargs, dict) or method not in CONTROL_METHODS:
            raise ValueError(f"unknown method {method!r}" if kwargs is not None else "bad body")
        await bridge.control(cid).call(method, **kwargs)
    except CallNotFound as exc:
        await respond(send, 404, _error(exc))
    except (ValueError, TypeError, msgspec.DecodeError) as exc:
        await respond(send, 400, _error(exc))
    except ControlTimeout as exc:
        await respond(send, 504, _error(exc))
    except (CommandFailed, ControlError) as exc:
        await respond(send, 409 if isinstance(exc, CommandFailed) else 503, _error(exc))
    except BridgeError as exc:  # the call is here and refused the command
        await respond(send, 409, _error(exc))
    else:
        await respond(send, 200, b'{"ok":true}')


def _error(exc: Exception) -> bytes:
    return msgspec.json.encode({"ok": False, "error": str(exc)})


async def _read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message: Any = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_CONTROL_BODY:
            raise ValueError("request body too large")
        if not message.get("more_body"):
            return bytes(body)


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
    if "websocket.http.response" in scope.get("extensions", {}):
        body = msgspec.json.encode({"error": reason})
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": reason})
