"""The live routes: calls' events as Server-Sent Events, and the calls in progress.

    GET <mount>/live/events?call=<conversationId>   one call's events
    GET <mount>/live/events                         every call's events
    GET <mount>/live/calls                          {"calls": [LiveCall, ...], ...}

The events and their JSON are :mod:`acdg_asgi.observability.live`'s. One call's stream
replays the call from its start (or after ``Last-Event-ID`` / ``?after=``), follows it
live, and ends after ``session_end``; the stream of every call starts with the next event
(or after the id given) and goes on. A comment line every 15 s keeps proxies from closing
either. With a shared store both cover every instance's calls. Authentication is the
caller's (:class:`~.routes.HttpRoutes`) business.
"""

from __future__ import annotations

import logging
from contextlib import aclosing, suppress
from typing import Any, Final
from urllib.parse import parse_qs

import anyio
import msgspec
from starlette.types import Receive, Scope, Send

from ..errors import StoreUnavailable
from ..observability.live import SCHEMA_VERSION, LiveSource
from .responses import respond

__all__ = ["HEARTBEAT_S", "live_calls", "live_events"]

log = logging.getLogger("acdg_asgi.live")

HEARTBEAT_S: Final = 15.0
_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]


async def live_calls(send: Send, source: LiveSource, instance: str) -> None:
    try:
        calls = await source.calls()
    except StoreUnavailable as exc:
        await respond(send, 503, msgspec.json.encode({"error": str(exc)}))
        return
    body = msgspec.json.encode({"calls": calls, "instance": instance,
                                "shared": source.shared, "schema": SCHEMA_VERSION})
    await respond(send, 200, body)


async def live_events(scope: Scope, receive: Receive, send: Send, source: LiveSource) -> None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    call = (query.get("call") or [None])[0]
    if call == "":
        await respond(send, 400, b'{"error":"name the call (?call=<conversationId>), '
                                 b'or leave call= out for every call"}')
        return
    try:
        follow = source.follow(call, _after(scope, query))
    except ValueError as exc:
        await respond(send, 400, msgspec.json.encode({"error": str(exc)}))
        return
    except OverflowError:
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
        try:
            async with aclosing(follow) as events:
                async for event in events:
                    await write(event.sse())
        except (StoreUnavailable, OverflowError) as exc:  # the page reconnects after retry:
            log.warning("live events for %s ended: %s", call or "every call", exc)
        tg.cancel_scope.cancel()
    # The page may have gone meanwhile.
    with anyio.CancelScope(shield=True), anyio.move_on_after(1), suppress(OSError):
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _after(scope: Scope, query: dict[str, list[str]]) -> str:
    given = (query.get("after") or [""])[0]
    for name, value in scope.get("headers", ()):
        if name.lower() == b"last-event-id":
            given = value.decode("latin-1")
    return given.strip()


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
