"""What the browser-phone tests need: Chromium, a fake microphone, and the servers.

The page runs in Debian's headless Chromium (``/usr/bin/chromium``), driven by
playwright-python through ``executable_path``: no browser download. Chromium's fake
capture device plays a WAV file as the microphone. The page, its event stream and the
call are all the real ``BridgeApp(phone=True)``'s, which talks to the stand-in Deepgram
agent, all on loopback.
"""

from __future__ import annotations

import math
import os
import struct
import wave
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, WebSocketRoute

from acdg_asgi import BridgeApp, Session
from acdg_asgi.testing.server import serve

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


def phone_app(bridge: BridgeApp, extra: Sequence[Any] = ()) -> Starlette:
    """The bridge at /audiocodes as the README mounts it: the page at /audiocodes/phone."""
    return Starlette(routes=[
        *extra,
        WebSocketRoute("/audiocodes", bridge),
        Mount("/audiocodes", bridge),
    ])


@dataclass
class Served:
    host: str
    bridge: BridgeApp
    sessions: list[Session] = field(default_factory=list)
    ended: list[Any] = field(default_factory=list)  # SessionEndEvent
    any_ended: anyio.Event = field(default_factory=anyio.Event)
    dtmf: list[str] = field(default_factory=list)

    @property
    def page_url(self) -> str:
        return f"http://{self.host}/audiocodes/phone"


@asynccontextmanager
async def serve_phone(bridge: BridgeApp, extra: Sequence[Any] = ()) -> AsyncIterator[Served]:
    """Serve ``bridge`` (made with ``phone=True``) and what the tests compare the page with."""
    async with serve(phone_app(bridge, extra)) as host:
        served = Served(host, bridge)

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

        yield served


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
