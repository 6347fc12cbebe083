"""VAIC's side of a call as a raw ASGI WebSocket: receive frames, send text, close.

The frame path talks to the ASGI ``receive``/``send`` callables directly; a failed send
becomes :class:`VaicClosed`, which the runtime turns into a "socket lost" input.

A server's ``send`` usually finishes without waiting (uvicorn's does, unless the socket
is backed up), so :meth:`VaicSocket.send_text_now` runs it right there, in the callback
that produced the message, instead of in a writer task woken for it: that saves a task
switch for every agent audio frame. Only a send that does wait goes on in a task.

Reads keep to the socket's :class:`~acdg_asgi.transports.budget.ReadBudget`: past it,
:meth:`VaicSocket.receive` waits before it returns the frame, so the server reads no
more of the socket meanwhile (uvicorn reads a socket again only once its app has taken
what was read); a socket that stays over its budget is closed with 1008.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import CoroutineType
from typing import Any, Protocol

import anyio
from starlette.types import Receive, Send

from ..config import Budget
from ..errors import VaicClosed
from .budget import ReadBudget

__all__ = ["DIRECT", "VaicSocket"]

DIRECT = "acdg.direct"
"""The ASGI extension of :mod:`acdg_asgi.transports.vaic_direct`, found in the scope."""



class DirectProtocol(Protocol):
    """What a server protocol offers through the ``acdg.direct`` extension, once the
    socket is accepted."""

    backed_up: bool
    """The peer reads slower than we write: writes should wait for the socket."""

    def limit(self, budget: ReadBudget) -> None:
        """Read no faster than ``budget`` allows (frames it reads by hand)."""
        ...

    def listen(self, on_text: Callable[[str], None]) -> None:
        """Hand every text message to ``on_text`` inside ``data_received`` from now on."""
        ...

    def ping(self) -> None:
        """Send a ping; the pong counts as a frame read."""
        ...

    def write_text(self, data: bytes) -> bool:
        """Write one text frame now; ``False`` if the socket is gone or closing."""
        ...


class VaicSocket:
    """``direct`` is the server protocol when it offers the ``acdg.direct`` extension
    (:mod:`acdg_asgi.transports.vaic_direct`): text frames then come by callback and go
    out unawaited."""

    __slots__ = ("_receive", "_send", "broken", "budget", "client", "closed", "direct",
                 "max_frame_bytes")

    def __init__(
        self, receive: Receive, send: Send, *, client: str, max_frame_bytes: int,
        budget: ReadBudget | None = None, direct: DirectProtocol | None = None,
    ) -> None:
        """``budget``: how fast the socket may be read (by default, ``Budget()``'s)."""
        self._receive = receive
        self._send = send
        self.client = client
        self.max_frame_bytes = max_frame_bytes
        if budget is None:
            budget = ReadBudget(Budget(), max_frame_bytes=max_frame_bytes, clock=time.monotonic)
        self.budget = budget
        self.closed = False  # disconnected, or closed by us: nothing more to read
        self.broken = False  # a write failed; what VAIC sent before may still be read
        self.direct = direct
        if direct is not None:
            direct.limit(budget)

    async def receive(self) -> str | bytes | None:
        """The next frame, or ``None`` once the socket is closed (by the peer, or here
        for staying over its budget)."""
        if self.closed:
            return None
        message = await self._receive()
        kind = message["type"]
        if kind != "websocket.receive":
            self.closed = True  # websocket.disconnect
            return None
        text = message.get("text")
        frame = str(text) if text is not None else bytes(message.get("bytes") or b"")
        self.budget.left -= len(frame) + self.budget.per_message
        if self.budget.left < 0:
            budget = self.budget
            wait = budget.pause()
            if budget.closing is not None:
                await self.close(1008, "message rate over budget")
                return None
            await anyio.sleep(wait)  # the server reads nothing more of it meanwhile
        return frame

    def ping(self) -> bool:
        """Ping VAIC, where the server lets us (the direct protocol); ``False`` if not."""
        if self.direct is None or self.closed:
            return False
        self.direct.ping()
        return True

    def send_text_now(self, data: bytes) -> Awaitable[None] | None:
        """Send one text frame as far as it goes without waiting: ``None`` once sent,
        else the rest of the send, for a task to await before anything else is sent.
        Raises :class:`VaicClosed` as :meth:`send_text` does."""
        if self.closed or self.broken:
            raise VaicClosed("socket closed")
        send = self._send({"type": "websocket.send", "text": data.decode()})
        if send.__class__ is not CoroutineType and not isinstance(send, Coroutine):
            return self._guard(send)  # not a coroutine to step: awaited as it is
        try:
            first = send.send(None)
        except StopIteration:
            return None
        except Exception as exc:
            self.broken = True
            raise VaicClosed(repr(exc)) from None
        return self._guard(_Rest(send, first))

    async def _guard(self, rest: Awaitable[None]) -> None:
        try:
            await rest
        except Exception as exc:
            self.broken = True
            raise VaicClosed(repr(exc)) from None

    async def send_text(self, data: bytes) -> None:
        if self.closed or self.broken:
            raise VaicClosed("socket closed")
        try:
            await self._send({"type": "websocket.send", "text": data.decode()})
        except Exception as exc:  # servers differ: OSError, ClientDisconnected, RuntimeError
            self.broken = True  # the reader still drains what VAIC sent, then sees the end
            raise VaicClosed(repr(exc)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):  # already gone: nothing left to tell it
            await self._send({"type": "websocket.close", "code": code, "reason": reason[:120]})


class _Rest:
    """A coroutine stepped once already, awaitable for the rest: what it yielded first
    (the future it waits on) goes to the awaiting task, and so on to its end."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, None]:
        coro, value = self._coro, self._first
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # a cancellation goes to the coroutine, and so on
                try:
                    value = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = coro.send(sent)
                except StopIteration:
                    return
