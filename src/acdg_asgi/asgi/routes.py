"""The bridge's plain HTTP side: Live Hub's probe, readiness, metrics, call control.

    GET  <mount>/                      {"type": "ac-bot-api", "success": true}
    GET  <mount>/ready                 200 while taking calls, 503 while draining; the body
                                       says how many, and the shared store's state
    GET  <mount>/metrics               Prometheus text (with metrics=True)
    GET  <mount>/live/events?call=ID   one call's events as Server-Sent Events (with a live
                                       feed: phone=True or live=True); authenticated like
                                       the bot URL, or with control_auth's credentials
    GET  <mount>/live/events           every call's events, the same way
    GET  <mount>/live/calls            the calls in progress (JSON), the same way
    GET  <mount>/live                  the supervisor page (with a live feed)
    GET  <mount>/phone                 the browser phone (with phone=True)
    POST <mount>/calls/{id}/{method}   run a Session method on a call, wherever it is
                                       (with control_auth=; JSON body = keyword arguments):
                                       200 done, 400 bad request, 401, 404 no such call,
                                       409 the call refused it, 503 store down, 504 no answer

``/ready`` and ``/metrics`` tell call volumes and instance ids. ``ops="control_auth"``
asks the control route's credentials for them; ``ops="separate"`` leaves them off the
bot's URL, for :meth:`HttpRoutes.ops_app` to serve on a port of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec
from starlette.types import Receive, Scope, Send

from ..auth import AuthHook, Connection
from ..call.commands import make_command
from ..cluster.cluster import Cluster
from ..cluster.control import CallControl
from ..errors import (
    AuthError,
    BridgeError,
    CallNotFound,
    CommandFailed,
    ControlError,
    ControlTimeout,
)
from ..observability.live import LiveSource
from ..observability.metrics import CONTENT_TYPE, PrometheusMetrics
from .live import live_calls, live_events
from .phone import PhonePage, SupervisorPage
from .registry import CallRegistry
from .responses import respond, route_path

__all__ = ["HttpRoutes", "OpsAccess", "OpsApp"]

OpsAccess = Literal["public", "control_auth", "separate"]

PROBE_BODY = b'{"type":"ac-bot-api","success":true}'
MAX_CONTROL_BODY = 64 * 1024


class HttpRoutes:
    """The HTTP requests a bridge answers, below where it is mounted."""

    def __init__(
        self, calls: CallRegistry, cluster: Cluster, *, metrics: PrometheusMetrics | None,
        control_auth: AuthHook | None, control: Callable[[str], CallControl],
        ops: OpsAccess = "public",
        live: LiveSource | None = None, live_auth: Sequence[AuthHook] = (),
        phone: PhonePage | None = None, live_page: SupervisorPage | None = None,
    ) -> None:
        self._calls = calls
        self._cluster = cluster
        self._metrics = metrics
        self._control_auth = control_auth
        self._control = control
        self.ops = ops
        self.ops_app = OpsApp(self)
        self._live = live
        self._live_auth = tuple(live_auth)
        self._phone = phone
        self._live_page = live_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = route_path(scope), scope["method"]
        if path.startswith("/calls/") and self._control_auth is not None:
            await self._control_route(scope, receive, send, path, self._control_auth)
        elif method not in ("GET", "HEAD"):
            await respond(send, 405, b'{"error":"method not allowed"}')
        elif path == "/":
            await respond(send, 200, PROBE_BODY)
        elif path in ("/ready", "/metrics") and self.ops != "separate":
            if self.ops == "control_auth" and not await self._allowed(scope, path):
                await respond(send, 401, b'{"error":"unauthorized"}')
            else:
                await self.ops_route(path, send)
        elif path in ("/live/events", "/live/calls") and self._live is not None:
            if not await _any_allows(self._live_auth, Connection.from_scope(scope, path)):
                await respond(send, 401, b'{"error":"unauthorized"}')
            elif path == "/live/events":
                await live_events(scope, receive, send, self._live)
            else:
                await live_calls(send, self._live, self._cluster.instance_id)
        elif self._live_page is not None and self._live_page.handles(path):
            await self._live_page.serve(scope, send, path)
        elif self._phone is not None and self._phone.handles(path):
            await self._phone.serve(scope, send, path)
        else:
            await respond(send, 404, b'{"error":"not found"}')

    async def ops_route(self, path: str, send: Send) -> None:
        if path == "/ready":
            await self._ready(send)
        elif path == "/metrics" and self._metrics is not None:
            await respond(send, 200, self._metrics.render(), CONTENT_TYPE)
        else:
            await respond(send, 404, b'{"error":"not found"}')

    async def _allowed(self, scope: Scope, path: str) -> bool:
        assert self._control_auth is not None
        try:
            return await self._control_auth(Connection.from_scope(scope, path))
        except AuthError:
            return False

    async def _ready(self, send: Send) -> None:
        calls, draining = len(self._calls), self._calls.draining
        body = msgspec.json.encode({
            "ready": not draining, "calls": calls, "instance": self._cluster.instance_id,
            "cluster_calls": await self._cluster.cluster_calls(calls),
            "store": self._cluster.describe_store(),
        })
        await respond(send, 503 if draining else 200, body)

    async def _control_route(
        self, scope: Scope, receive: Receive, send: Send, path: str, auth: AuthHook
    ) -> None:
        if scope["method"] != "POST":
            await respond(send, 405, b'{"error":"use POST"}')
            return
        if not await self._allowed(scope, path):
            await respond(send, 401, b'{"error":"unauthorized"}')
            return
        _, _, rest = path.partition("/calls/")
        cid, _, method = rest.partition("/")
        try:
            body = await _read_body(receive)
            arguments = msgspec.json.decode(body) if body.strip() else {}
            if not isinstance(arguments, dict):
                raise ValueError("the body must be a JSON object of the method's arguments")
            await self._control(cid).run(make_command(method, arguments))
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


class OpsApp:
    """``/ready`` and ``/metrics`` alone: an ASGI app for a port of their own."""

    def __init__(self, routes: HttpRoutes) -> None:
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # refused (403) with no complaint in the log
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await respond(send, 405, b'{"error":"method not allowed"}')
        else:
            await self._routes.ops_route(route_path(scope), send)


async def _any_allows(hooks: Sequence[AuthHook], conn: Connection) -> bool:
    for hook in hooks:
        try:
            if await hook(conn):
                return True
        except AuthError:
            continue
    return False


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
