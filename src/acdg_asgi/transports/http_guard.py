"""uvicorn's HTTP protocol with a deadline for the first request's head.

uvicorn waits as long as a client likes for the head of a request: one that drips its
WebSocket upgrade a byte a second holds a connection (and a file descriptor) for good,
and fifty of them hold fifty. :class:`GuardedHttpProtocol` closes a connection whose
first request has not arrived whole within :attr:`~_HeadDeadline.header_timeout_s`
(10 s; VAIC sends its upgrade in one packet; :func:`guarded_http` makes one with another
deadline). ``acdg serve`` uses it; elsewhere::

    uvicorn.run(app, http="acdg_asgi.transports.http_guard:GuardedHttpProtocol", ...)

It is uvicorn's httptools protocol when httptools is installed (a dependency of the
bridge), its h11 protocol otherwise (:class:`GuardedH11Protocol`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from ..observability.logs import get_logger

__all__ = ["GuardedH11Protocol", "GuardedHttpProtocol", "GuardedHttpToolsProtocol", "guarded_http"]

_log = get_logger("acdg_asgi.vaic")


class _HeadDeadline:
    """For a uvicorn HTTP protocol: both set ``cycle`` once a request's head is in, and
    hand the transport to another protocol on a WebSocket upgrade."""

    header_timeout_s = 10.0
    loop: asyncio.AbstractEventLoop
    transport: Any
    cycle: Any
    client: tuple[str, int] | None
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_overdue)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def _head_overdue(self) -> None:
        self._head_deadline = None
        transport = self.transport
        if self.cycle is not None or transport.is_closing() or transport.get_protocol() is not self:
            return  # a request came whole, or the connection was upgraded, or is gone
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        _log.warning("connection from %s closed: no whole request within %g s", client,
                     self.header_timeout_s)
        transport.close()


class GuardedH11Protocol(_HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol with the deadline."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover (httptools is a dependency; uvicorn's is optional)
    GuardedHttpToolsProtocol: type[asyncio.Protocol] | None = None
else:
    class _GuardedHttpTools(_HeadDeadline, HttpToolsProtocol):
        """uvicorn's httptools protocol with the deadline."""

    _GuardedHttpTools.__name__ = _GuardedHttpTools.__qualname__ = "GuardedHttpToolsProtocol"
    GuardedHttpToolsProtocol = _GuardedHttpTools


def guarded_http(
    header_timeout_s: float = _HeadDeadline.header_timeout_s, *, parser: str = "auto"
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (``parser``: ``"auto"`` is httptools where installed, else
    h11; or ``"httptools"``, ``"h11"``) that closes a connection whose first request has
    not come whole within ``header_timeout_s``. With the default deadline it is one of
    this module's classes, so uvicorn's worker processes can import it by name."""
    base: type[asyncio.Protocol] = GuardedH11Protocol
    if parser != "h11":
        if GuardedHttpToolsProtocol is not None:
            base = GuardedHttpToolsProtocol
        elif parser == "httptools":
            raise ImportError("httptools is not installed: pip install httptools")
    if header_timeout_s == _HeadDeadline.header_timeout_s:
        return base
    return type(base.__name__, (base,), {"header_timeout_s": header_timeout_s})


GuardedHttpProtocol = guarded_http()
