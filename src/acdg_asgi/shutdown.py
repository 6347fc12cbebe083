"""SIGTERM drains calls under whichever server runs the bridge.

uvicorn (also under gunicorn's uvicorn workers) closes every WebSocket with 1012 when it
gets SIGTERM or SIGINT, *before* the ASGI lifespan shutdown, so a drain started there
finds its calls already cut. The bridge's lifespan startup therefore takes the server's
own handler for those signals and puts itself in front: on the first signal the bridges
drain (readiness 503, calls run to their end up to the drain deadline, then a polite
hang-up, or with ``migrate`` move to another instance), and only then is the server's
handler called, so it shuts down with no calls left. A second signal ends the calls at
once (a polite hang-up, no waiting).

Handlers set with ``signal.signal`` (uvicorn, gunicorn workers) and with asyncio's
``loop.add_signal_handler`` (hypercorn ``-w 0``) are both taken over. Where this process
never sees the signal (hypercorn's worker processes: its master gets it) or no Python
handler exists, :func:`hook_signals` says so in one log line.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

__all__ = ["Drainable", "hook_signals", "server_workers", "unhook_signals"]

log = logging.getLogger("acdg_asgi.serve")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Drainable(Protocol):
    @property
    def drain_timeout_s(self) -> float: ...

    @property
    def drain_mode(self) -> str: ...

    async def drain(self) -> None: ...

    async def stop(self) -> None: ...


Forward = Callable[[int, FrameType | None], Any]


class _Hook:
    """Stands in front of one server's signal handlers for the bridges it serves."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.bridges: list[Drainable] = []
        self.forward: dict[int, Forward] = {}
        self.restore: dict[int, Callable[[], None]] = {}
        self.server = "the server"
        self._draining = False
        self._forwarded = False
        self._task: asyncio.Task[None] | None = None

    # --- the signal, as signal.signal or the loop delivers it -------------------------------

    def on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.loop.is_closed():
            self._pass_on(sig, frame)
        else:
            self.loop.call_soon_threadsafe(self._handle, sig, frame)

    def on_loop_signal(self, sig: int) -> None:
        self._handle(sig, None)

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        name = signal.Signals(sig).name
        if self._forwarded:  # the server is shutting down already: its own handling
            self._pass_on(sig, frame)
        elif not self._draining:
            self._draining = True
            calls = sum(len(getattr(b, "calls", ())) for b in self.bridges)
            mode = {b.drain_mode for b in self.bridges}
            how = "moving them to another instance" if mode == {"migrate"} else (
                f"up to {max(b.drain_timeout_s for b in self.bridges):.0f} s, "
                "then a polite hang-up")
            log.info("%s received: draining, calls in progress: %d (%s), before %s shuts "
                     "down; send it again to end them now", name, calls, how, self.server)
            self._task = self.loop.create_task(self._run(self._drain(), sig, frame))
        else:
            log.info("%s again: ending every call now", name)
            self._task = self.loop.create_task(self._run(self._stop(), sig, frame))

    async def _drain(self) -> None:
        await asyncio.gather(*(bridge.drain() for bridge in self.bridges))
        log.info("drained: no calls left")

    async def _stop(self) -> None:
        await asyncio.gather(*(bridge.stop() for bridge in self.bridges))

    async def _run(self, work: Any, sig: int, frame: FrameType | None) -> None:
        try:
            await work
        finally:
            if not self._forwarded:
                self._forwarded = True
                self._pass_on(sig, frame)

    def _pass_on(self, sig: int, frame: FrameType | None) -> None:
        forward = self.forward.get(sig) or next(iter(self.forward.values()))
        forward(sig, frame)

    # --- taking over and giving back ---------------------------------------------------------

    def take(self, sig: int) -> str | None:
        """Stand in front of the handler of ``sig``; the server's name, or ``None``."""
        handlers = getattr(self.loop, "_signal_handlers", None)
        handle = handlers.get(sig) if isinstance(handlers, dict) else None
        if handle is not None:  # asyncio's add_signal_handler (hypercorn -w 0)
            callback, args = handle._callback, handle._args
            self.loop.add_signal_handler(sig, self.on_loop_signal, sig)
            self.forward[sig] = lambda s, f: callback(*args)
            self.restore[sig] = lambda: self.loop.add_signal_handler(sig, callback, *args)
            return _server_name(callback)
        current = signal.getsignal(sig)
        if not callable(current) or current is signal.default_int_handler:
            return None
        signal.signal(sig, self.on_signal)
        self.forward[sig] = current

        def restore() -> None:
            if signal.getsignal(sig) == self.on_signal:
                signal.signal(sig, current)

        self.restore[sig] = restore
        return _server_name(current)

    def give_back(self) -> None:
        for restore in self.restore.values():
            restore()
        self.restore.clear()


_hooks: list[_Hook] = []


def hook_signals(bridge: Drainable) -> bool:
    """Drain ``bridge`` on the server's SIGTERM/SIGINT; ``False`` (said in a log line) if
    this process cannot see them. Call from the lifespan startup, in the server's loop."""
    if threading.current_thread() is not threading.main_thread():
        log.info("the bridge runs outside the main thread: SIGTERM cannot drain its calls "
                 "here; drain it yourself with `await bridge.drain()` before shutdown")
        return False
    loop = asyncio.get_running_loop()
    current = signal.getsignal(signal.SIGTERM)
    owner = getattr(current, "__self__", None)
    if bridge in getattr(owner, "bridges", ()) and not isinstance(owner, _Hook):
        # A DrainingServer (acdg serve) drains this bridge itself.
        log.info("drain on SIGTERM: %s (%s)", _describe(bridge),
                 serving_with(owner, _server_name(current)))
        return True
    for hook in _hooks:
        if owner is hook or _loop_hook(loop, hook):
            hook.bridges.append(bridge)
            return True
    hook = _Hook(loop)
    server = hook.take(signal.SIGTERM)
    if server is None:
        log.warning(_cannot_drain(current))
        return False
    hook.take(signal.SIGINT)
    hook.server = server
    hook.bridges.append(bridge)
    _hooks.append(hook)
    log.info("drain on SIGTERM: %s (%s)", _describe(bridge), serving_with(owner, server))
    return True


def unhook_signals(bridge: Drainable) -> None:
    """At lifespan shutdown: forget ``bridge``; the last one gives the handlers back."""
    for hook in list(_hooks):
        if bridge in hook.bridges:
            hook.bridges.remove(bridge)
            if not hook.bridges:
                hook.give_back()
                _hooks.remove(hook)


def server_workers() -> int:
    """How many worker processes the server runs this app in, where it can be told:
    uvicorn's ``--workers``, gunicorn's ``-w`` (its workers keep the master's argv)."""
    for hook in _hooks:
        for forward in hook.forward.values():
            config = getattr(getattr(forward, "__self__", None), "config", None)
            workers = getattr(config, "workers", None)
            if isinstance(workers, int) and workers > 1:
                return workers
    if "gunicorn" in sys.modules and multiprocessing.parent_process() is None:
        argv = sys.argv[1:]
        for i, arg in enumerate(argv):
            value = arg.split("=", 1)[1] if arg.startswith("--workers=") else (
                argv[i + 1] if arg in ("-w", "--workers") and i + 1 < len(argv) else None)
            if value is not None and value.isdigit():
                return int(value)
        env = os.environ.get("WEB_CONCURRENCY", "")
        return int(env) if env.isdigit() else 1
    return 1


_PARSERS = {"HttpToolsProtocol": "httptools", "H11Protocol": "h11"}


def serving_with(server: object, name: str) -> str:
    """The loop, HTTP parser and WebSocket protocol in use, as far as they can be known."""
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    parts = [f"server {name}", f"loop {loop}"]
    config = getattr(server, "config", None)
    http = getattr(config, "http_protocol_class", None)
    ws = getattr(config, "ws_protocol_class", None)
    if isinstance(http, type):  # uvicorn's parsers by name, also beneath a subclass
        parser = next((_PARSERS[c.__name__] for c in http.__mro__ if c.__name__ in _PARSERS),
                      http.__name__)
        parts.append(f"HTTP {parser}")
    if isinstance(ws, type):
        parts.append(f"WebSocket {ws.__name__}")
    return ", ".join(parts)


def _describe(bridge: Drainable) -> str:
    if bridge.drain_mode == "migrate":
        return "calls move to another instance through the shared store"
    return f"calls get up to {bridge.drain_timeout_s:.0f} s, then a polite hang-up"


def _loop_hook(loop: asyncio.AbstractEventLoop, hook: _Hook) -> bool:
    handlers = getattr(loop, "_signal_handlers", None)
    handle = handlers.get(signal.SIGTERM) if isinstance(handlers, dict) else None
    return hook.loop is loop and handle is not None and (
        getattr(handle, "_callback", None) == hook.on_loop_signal)


def _server_name(handler: object) -> str:
    owner = getattr(handler, "__self__", handler)
    module = getattr(owner, "__module__", None) or type(owner).__module__
    if module.startswith("acdg_asgi"):
        return f"uvicorn ({type(owner).__name__})"
    return module.split(".")[0]


def _cannot_drain(current: object) -> str:
    if "hypercorn" in sys.modules and multiprocessing.parent_process() is not None:
        return ("SIGTERM cannot drain calls here: hypercorn's worker processes never see it "
                "(its master does) and hypercorn cuts calls after --graceful-timeout; run "
                "`hypercorn -w 0 ...` (one process) or `acdg serve module:app` to drain")
    return (f"SIGTERM cannot drain calls here: no Python handler for it in this process "
            f"({current!r}); serve with `acdg serve module:app` or uvicorn, or call "
            "`await bridge.drain()` yourself before shutdown")
