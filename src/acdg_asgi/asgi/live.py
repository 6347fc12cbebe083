"""``GET <mount>/live/events?call=<conversationId>``: one call's events as Server-Sent Events.

The events and their JSON are :mod:`acdg_asgi.observability.live`'s. The stream replays
the call from its start (or after ``Last-Event-ID`` / ``?after=``), follows it live, and
ends after ``session_end``; a comment line every 15 s keeps proxies from closing it.
Authentication is the caller's (:class:`~.routes.HttpRoutes`) business.
"""

from __future__ import annotations

from contextlib import aclosing, suppress
from typing import Any, Final
from urllib.parse import parse_qs

import anyio
from starlette.types import Receive, Scope, Send

from ..observability.live import SCHEMA_VERSION, LiveEvents
from .responses import respond

__all__ = ["HEARTBEAT_S", "live_events"]

HEARTBEAT_S: Final = 15.0
_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]


async def live_events(scope: Scope, receive: Receive, send: Send, feed: LiveEvents) -> None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    call = (query.get("call") or [""])[0]
    if not call:
        await respond(send, 400, b'{"error":"name the call: ?call=<conversationId>"}')
        return
    after = _after(scope, query)
    if after is None:
        await respond(send, 400, b'{"error":"Last-Event-ID and ?after= take a number"}')
        return
    if feed.full():
        await respond(send, 503, b'{"error":"too many live subscribers"}')
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    lock = anyio.Lock()

    async def write(chunk: bytes) -> None:
        async with lock:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async with anyio.create_task_group() as tg:
        tg.start_soon(_until_disconnect, receive, tg.cancel_scope)
        tg.start_soon(_heartbeat, write)
        await write(b": acdg live events, schema version %d\nretry: 2000\n\n" % SCHEMA_VERSION)
        async with aclosing(feed.subscribe(call, after=after)) as events:
            async for event in events:
                await write(event.sse())
        tg.cancel_scope.cancel()
    # The page may have gone meanwhile.
    with anyio.CancelScope(shield=True), anyio.move_on_after(1), suppress(OSError):
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _after(scope: Scope, query: dict[str, list[str]]) -> int | None:
    given = (query.get("after") or [""])[0]
    for name, value in scope.get("headers", ()):
        if name.lower() == b"last-event-id":
            given = value.decode("latin-1")
    try:
        return max(0, int(given)) if given.strip() else 0
    except ValueError:
        return None


async def _until_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _heartbeat(write: Any) -> None:
    while True:
        await anyio.sleep(HEARTBEAT_S)
        await write(b": keep-alive\n\n")
