"""What the browser-phone tests need: Chromium, a fake microphone, and the servers.

The page runs in Debian's headless Chromium (``/usr/bin/chromium``), driven by
playwright-python through ``executable_path``: no browser download. Chromium's fake
capture device plays a WAV file as the microphone. The page is served next to the real
``BridgeApp``, which talks to the stand-in Deepgram agent, all on loopback.
"""

from __future__ import annotations

import math
import os
import struct
import wave
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from acdg_asgi import BridgeApp, Session
from acdg_asgi.events import EVENT_NAMES, Event
from acdg_asgi.testing.server import serve

WEB = Path(__file__).resolve().parents[2] / "src" / "acdg_asgi" / "web"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = Path(os.environ.get("ACDG_CHROMIUM", "/usr/bin/chromium"))

# Headless Chromium as root on a machine with no network, with a fake microphone that
# plays a file once (``%noloop``) and audio allowed to start without a gesture.
BASE_FLAGS = (
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
)

ASSETS = {
    "phone.js": "text/javascript",
    "phone-worklet.js": "text/javascript",
    "phone.css": "text/css",
}


def chromium_flags(wav: Path) -> list[str]:
    return [*BASE_FLAGS, f"--use-file-for-fake-audio-capture={wav}%noloop"]


def require_browser() -> None:
    """Skip (or, under CI, fail) when Chromium or playwright is missing."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (pip install playwright; it drives " \
                      f"{CHROMIUM}, no browser download)"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests need Chromium: {problem}")
        pytest.skip(problem)


# --- the fake microphone ----------------------------------------------------------------


def caller_wav(path: Path, bursts: Sequence[tuple[float, float]], total_s: float,
               rate: int = 16000) -> Path:
    """16-bit mono PCM: a 440 Hz tone for each (start_s, length_s) burst, silence elsewhere.

    The stand-in agent hears any sample above its voice threshold (1000) as speech; the
    tone's amplitude of 8000 stays well above it after the page's resampling.
    """
    samples = [0] * int(total_s * rate)
    for start, length in bursts:
        first = int(start * rate)
        for i in range(int(length * rate)):
            samples[first + i] = int(8000 * math.sin(2 * math.pi * 440 * i / rate))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return path


# --- the servers ----------------------------------------------------------------------------


@dataclass
class EventFeed:
    """The bridge's events per conversation, replayed to each event-stream client.

    This is the contract the page expects of a server's event stream: GET with
    ``?call=<conversationId>``; each event ``event: <name>`` and ``data: <JSON>``.
    """

    calls: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    closed: bool = False
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def record(self, name: str, event: Event) -> None:
        self.calls.setdefault(event.conversation_id, []).append((name, msgspec.json.encode(event)))
        self._changed.set()
        self._changed = anyio.Event()

    async def stream(self, call: str) -> AsyncIterator[bytes]:
        sent = 0
        yield b": events for one call\n\n"
        while not self.closed:
            items = self.calls.get(call, [])
            for name, data in items[sent:]:
                yield b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"
                if name == "session_end":
                    return
            sent = len(items)
            with anyio.move_on_after(1):
                await self._changed.wait()

    def close(self) -> None:
        self.closed = True
        self._changed.set()


def listen(bridge: BridgeApp, feed: EventFeed) -> None:
    def forward(name: str) -> Callable[[Event], None]:
        return lambda event: feed.record(name, event)

    for name in EVENT_NAMES:
        bridge.on(name)(forward(name))


class BearerSubprotocol:
    """What the server side must do for the page's token (browsers cannot set headers).

    A WebSocket offering subprotocols ``acdg.bearer, <token>`` reaches ``app`` with
    ``Authorization: Bearer <token>`` instead, and is accepted with ``acdg.bearer``
    (never the token) as its subprotocol: Chromium fails a handshake that offered
    subprotocols and got none back. (A class, as Starlette treats a bare function given
    to a route as an endpoint, not as an ASGI app.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        offered = list(scope.get("subprotocols", ())) if scope["type"] == "websocket" else []
        if len(offered) < 2 or offered[0] != "acdg.bearer":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
        headers.append((b"authorization", b"Bearer " + offered[1].encode()))

        async def accept_with_subprotocol(message: Message) -> None:
            if message["type"] == "websocket.accept":
                message = {**message, "subprotocol": "acdg.bearer"}
            await send(message)

        inner = {**scope, "headers": headers, "subprotocols": offered[2:]}
        await self.app(inner, receive, accept_with_subprotocol)


def phone_app(
    bridge: BridgeApp, feed: EventFeed, extra: Sequence[Any] = (),
    wrap: Callable[[ASGIApp], ASGIApp] | None = None,
) -> Starlette:
    """The bridge at /audiocodes, the page at /audiocodes/phone, its events at /events."""
    bot: ASGIApp = wrap(bridge) if wrap is not None else bridge

    async def page(request: Request) -> Response:
        return FileResponse(WEB / "phone.html", media_type="text/html")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return Response("not found", status_code=404)
        return FileResponse(WEB / name, media_type=ASSETS[name])

    async def events(request: Request) -> Response:
        call = request.query_params.get("call", "")
        headers = {"Cache-Control": "no-store"}
        return StreamingResponse(feed.stream(call), media_type="text/event-stream",
                                 headers=headers)

    async def slash(request: Request) -> Response:
        return RedirectResponse("/audiocodes/phone")  # its relative links need no slash

    return Starlette(routes=[
        Route("/audiocodes/phone", page),
        Route("/audiocodes/phone/", slash),
        Route("/audiocodes/phone/{name}", asset),
        Route("/events", events),
        *extra,
        WebSocketRoute("/audiocodes", bot),
        Mount("/audiocodes", bot),
    ])


@dataclass
class Served:
    host: str
    bridge: BridgeApp
    feed: EventFeed
    sessions: list[Session] = field(default_factory=list)
    ended: list[Any] = field(default_factory=list)  # SessionEndEvent
    any_ended: anyio.Event = field(default_factory=anyio.Event)
    dtmf: list[str] = field(default_factory=list)

    @property
    def page_url(self) -> str:
        return f"http://{self.host}/audiocodes/phone"


@asynccontextmanager
async def serve_phone(
    bridge: BridgeApp, extra: Sequence[Any] = (),
    wrap: Callable[[ASGIApp], ASGIApp] | None = None,
) -> AsyncIterator[Served]:
    feed = EventFeed()
    listen(bridge, feed)
    async with serve(phone_app(bridge, feed, extra, wrap)) as host:
        served = Served(host, bridge, feed)

        @bridge.on("session_start")
        def started(session: Session, event: Any) -> None:
            served.sessions.append(session)

        @bridge.on("session_end")
        def ended(event: Any) -> None:
            served.ended.append(event)
            served.any_ended.set()

        @bridge.on("dtmf")
        def keyed(event: Any) -> None:
            served.dtmf.append(event.digits)

        try:
            yield served
        finally:
            feed.close()


# --- the browser ------------------------------------------------------------------------------


@asynccontextmanager
async def chromium(wav: Path) -> AsyncIterator[Any]:
    """Headless /usr/bin/chromium under playwright, with ``wav`` as the microphone."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=chromium_flags(wav)
        )
        try:
            yield browser
        finally:
            await browser.close()


async def wait_for(page: Any, condition: str, timeout_s: float, what: str) -> Any:
    """Wait until the JS expression ``condition`` is truthy; fail with the page's state."""
    try:
        handle = await page.wait_for_function(condition, timeout=timeout_s * 1000, polling=100)
    except Exception as exc:
        state = await page.evaluate(
            "JSON.stringify({state: acdgPhone.state, verdict: acdgPhone.verdict,"
            " transcript: acdgPhone.transcript, violations: acdgPhone.violations,"
            " events: acdgPhone.events.slice(-40)})"
        )
        raise AssertionError(f"timed out waiting for {what}; page: {state}") from exc
    return await handle.json_value()
