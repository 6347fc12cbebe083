"""The far end: how the bridge opens a connection to a Deepgram Voice Agent.

A connector is anything with ``async connect(url, headers) -> AgentConnection``. Two
ship with the package: :class:`~acdg_asgi.transports.agent_lean.LeanConnector` (the
default: frames by hand, messages pushed from ``data_received``) and
:class:`~acdg_asgi.transports.agent_websockets.WebsocketsConnector` (the ``websockets``
client). Tests and ``acdg demo`` point either at the stand-in agent
(:mod:`acdg_asgi.testing.agent`); any other client can be dropped in the same way.

A connection is either awaited (:class:`AgentConnection`: the runtime reads and writes
it from tasks) or pushing (:class:`PushAgentConnection`: it hands each message over as
it arrives and takes writes without waiting). The runtime asks which once, at connect.

A connector that cannot connect raises :class:`~acdg_asgi.errors.AgentConnectError`;
:func:`refused` and :func:`unreachable` word it as both connectors do (the URL without
its query, the host, the HTTP status, and what to check), and mark the answers that a
retry cannot change.

What a connector's calls share on the way out, the environment's proxy and the system's
CAs, is looked up once per connector (:class:`Egress`), not once per call.

A connection that can also be pinged (:class:`PingableConnection`, both shipped ones) is
watched for silence: one that does not answer a ping in time is treated as lost.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from ..errors import AgentConnectError
from ..protocols.deepgram import DEFAULT_URL

__all__ = [
    "AgentConnection", "AgentConnector", "Egress", "PingableConnection", "PushAgentConnection",
    "refused", "shown_url", "unreachable",
]


class AgentConnection(Protocol):
    async def recv(self) -> str | bytes:
        """The next frame: ``str`` for JSON text, ``bytes`` for audio. Raises AgentClosed."""
        ...

    async def send_text(self, data: bytes) -> None:
        """Send encoded JSON as a text frame. Raises AgentClosed."""
        ...

    async def send_audio(self, data: bytes) -> None:
        """Send audio as a binary frame. Raises AgentClosed."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class PushAgentConnection(AgentConnection, Protocol):
    """A connection that hands messages over as they arrive and writes without waiting:
    the fast path (see :mod:`acdg_asgi.transports.agent_lean`)."""

    def listen(
        self, on_message: Callable[[str | bytes], None], on_closed: Callable[[str], None]
    ) -> None: ...

    def write_text(self, data: bytes) -> None:
        """Write a text frame now. Raises AgentClosed."""
        ...

    def write_audio(self, data: bytes) -> bool:
        """Write a binary frame now; ``False`` if it was dropped because the agent does
        not read (memory stays bounded). Raises AgentClosed."""
        ...


@runtime_checkable
class PingableConnection(Protocol):
    def ping(self, on_pong: Callable[[], None]) -> None:
        """Send a WebSocket ping now; call ``on_pong()`` when its pong arrives (never, if
        the connection closes first). Raises AgentClosed."""
        ...


class AgentConnector(Protocol):
    async def connect(self, url: str, headers: Mapping[str, str]) -> AgentConnection: ...


class Egress:
    """A connector's way out, looked up at its first call and kept for the next ones: the
    proxy the environment names for the agent's host (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``NO_PROXY``) and the TLS context with the system's CAs (or ``SSL_CERT_FILE``).

    Per call, the proxy lookup reads the whole environment, and loading the CAs takes
    tens of milliseconds of CPU: on the event loop, every live call would hear a gap
    whenever another one starts."""

    __slots__ = ("_host", "_proxy", "_tls")

    def __init__(self) -> None:
        self._host: tuple[str, str | None, int | None] | None = None
        self._proxy: str | None = None
        self._tls: ssl.SSLContext | None = None

    def proxy(self, url: str) -> str | None:
        """The environment's proxy for ``url``'s scheme, host and port (the last ones
        asked about are kept). Raises ``websockets``' ``InvalidURI`` for a bad URL."""
        parts = urlsplit(url)
        host = (parts.scheme, parts.hostname, parts.port)
        if host != self._host:
            self._proxy, self._host = get_proxy(parse_uri(url)), host
        return self._proxy

    async def tls(self) -> ssl.SSLContext:
        """The default client context (certificate and host name checked), loaded in a
        worker thread, so that the first call does not stall the others either."""
        if self._tls is None:
            context = await asyncio.to_thread(ssl.create_default_context)
            self._tls = self._tls or context  # calls that raced here share the first
        return self._tls


# --- why a connection failed, in words -------------------------------------------------------


def shown_url(url: str) -> str:
    """``url`` as a log line may show it: no user info, no query (either may hold a key)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}" + ("?..." if parts.query else "")


def refused(
    url: str, status: int, *, key_sent: bool, location: str | None = None
) -> AgentConnectError:
    """The agent answered the upgrade with HTTP ``status`` instead of 101."""
    at = shown_url(url)
    if status == 401 and key_sent:
        text = f"the agent refused the API key (HTTP 401) at {at}: check DEEPGRAM_API_KEY " \
               "(or deepgram_api_key=)"
    elif status == 401:
        text = f"the agent wants an API key (HTTP 401) at {at}: set DEEPGRAM_API_KEY " \
               "(or deepgram_api_key=)"
    elif status == 403:
        text = f"the agent refused access (HTTP 403) at {at}: check that DEEPGRAM_API_KEY " \
               "is valid and may use the Voice Agent API"
    elif status == 404:
        text = f"no agent at {at} (HTTP 404): check the URL (deepgram_url= or DEEPGRAM_URL); " \
               f"Deepgram's is {DEFAULT_URL}"
    elif 300 <= status < 400:
        to = f" to {shown_url(location)}" if location else ""
        text = f"the agent URL {at} redirects (HTTP {status}{to}): configure the URL it " \
               "points to"
    elif status in (408, 429):
        text = f"the agent at {at} is busy (HTTP {status}): check the concurrency limit " \
               "of the Deepgram project"
    elif 400 <= status < 500:
        text = f"the agent refused the upgrade (HTTP {status}) at {at}: check the URL " \
               "and DEEPGRAM_API_KEY"
    else:
        text = f"the agent failed the upgrade (HTTP {status}) at {at}"
    return AgentConnectError(text, status=status)


def proxy_refused(proxy: str, target: str, status: int) -> AgentConnectError:
    """An HTTP proxy answered ``CONNECT target`` with ``status`` instead of 200."""
    what = "the proxy credentials" if status == 407 else "that the proxy allows it"
    return AgentConnectError(
        f"the proxy {shown_url(proxy)} refused the tunnel to {target} (HTTP {status}): "
        f"check {what} (HTTPS_PROXY, or proxy=)",
        status=status, retryable=status >= 500,
    )


def unreachable(url: str, exc: BaseException, *, proxy: str | None = None) -> AgentConnectError:
    """No answer from the agent (or from the ``proxy`` on the way): DNS, TCP or TLS."""
    parts = urlsplit(proxy or url)
    host = parts.hostname or "?"
    port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    context = f"(the proxy for {shown_url(url)})" if proxy else f"({shown_url(url)})"
    where = f"{host}:{port} {context}"
    retryable = True
    if isinstance(exc, socket.gaierror):
        text = f"cannot resolve {host} {context}: check the URL and DNS"
    elif isinstance(exc, ConnectionRefusedError):
        text = f"nothing listens at {where}: connection refused"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        text = f"TLS with {where} failed: its certificate does not verify " \
               f"({exc.verify_message or exc.reason}): check the URL, or the CA bundle " \
               "(SSL_CERT_FILE) where a proxy inspects TLS"
        retryable = False
    elif isinstance(exc, ssl.SSLError):
        text = f"TLS with {where} failed: {exc.reason or exc}"
    elif isinstance(exc, TimeoutError):
        text = f"no answer from {where}"
    elif isinstance(exc, OSError):
        text = f"cannot connect to {where}: {exc.strerror or exc}"
    else:
        text = f"cannot connect to {where}: {exc}"
    return AgentConnectError(text, retryable=retryable)
