"""A stand-in Deepgram Voice Agent (API v1) on a real WebSocket, for tests, demos and benchmarks.

It speaks the wire protocol of ``wss://agent.deepgram.com/v1/agent/converse``: ``Welcome``,
one ``Settings``, ``SettingsApplied``, then caller audio in and agent audio out, following
an :class:`AgentScript` instead of a language model. Caller "speech" is any frame loud
enough for :func:`~acdg_asgi.testing.signals.is_voiced`; agent speech is a 660 Hz tone,
one beep per word of the scripted reply.

Usage::

    async with StandInAgent(script=AgentScript(turns=(Turn("Hello there"),))) as agent:
        ...  # point a client at agent.url (or the SDK's environment at agent.base_url)
        await agent.wait_for_connections(1)
        record = agent.connections[0]  # what it received and sent

A caller turn goes: first voiced frame -> ``UserStartedSpeaking``; ``end_of_turn_ms`` of
silent audio (or no audio at all for that long) -> ``ConversationText(user)``, ``History``,
``AgentThinking``, an optional client-side ``FunctionCallRequest`` (after the turn's
``before`` words, spoken; the reply waits for its ``FunctionCallResponse`` and quotes its
content; the caller talking meanwhile withdraws it with ``FunctionCallCancelled``),
``ConversationText(assistant)``,
``History``, ``AgentStartedSpeaking``, audio, ``AgentAudioDone``, ``LatencyReport`` (every
field). A turn scripted ``frustrated`` adds ``FrustrationDetected``; ``backchannel`` makes
the agent say it (``conversational_behavior: backchannel``) while the caller talks.

The agent counts as speaking while it sends audio and until that audio would have finished
playing. Caller speech in that window is a barge-in: audio not yet sent is dropped, and an
utterance cut short gets no ``AgentAudioDone``. ``InjectAgentMessage`` follows its ``behavior``
(``default`` is refused while either side speaks, ``queue`` only while the caller does,
``interrupt`` never). Any ``Error`` the stand-in sends is followed by a close with 1011.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Sequence
from ssl import SSLContext
from types import TracebackType
from typing import Final, Self

import anyio
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from ..protocols import deepgram as dg
from ..transports.redact import redacted_logger
from ._agent_session import AUDIO, AgentConnectionRecord, AgentSession
from ._agent_turns import AFTER_SCRIPT, DEFAULT_TURNS, AgentScript, Turn

__all__ = [
    "AFTER_SCRIPT",
    "AUDIO",
    "DEFAULT_TURNS",
    "AgentConnectionRecord",
    "AgentScript",
    "StandInAgent",
    "Turn",
]

AUTH_SCHEMES: Final = frozenset({"token", "bearer"})


class StandInAgent:
    """A local Deepgram Voice Agent server. One instance serves any number of connections.

    ``api_key=None`` accepts any client; otherwise the upgrade must carry
    ``Authorization: Token|Bearer <key>`` or the subprotocols ``token|bearer, <key>``
    (only the scheme is echoed back), or it is refused with HTTP 401. Paths other than
    ``path`` (Deepgram's ``/v1/agent/converse``) get 404. ``script`` may be replaced
    between connections. With ``ssl`` (a server context) it serves ``wss://``.
    """

    def __init__(
        self,
        *,
        script: AgentScript | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        ssl: SSLContext | None = None,
        path: str = dg.AGENT_PATH,
    ) -> None:
        if not path.startswith("/"):
            raise ValueError(f"the agent's path must start with '/': {path!r}")
        self.script = script if script is not None else AgentScript()
        self.path = path
        self.connections: list[AgentConnectionRecord] = []
        self.refused = 0  # upgrades refused by refuse_next()
        self.requests = 0  # upgrade requests, refused ones included
        self._ssl = ssl
        self.url = ""
        self._host = host
        self._port = port
        self._api_key = api_key
        self._refusals: list[int] = []
        self._sessions: set[AgentSession] = set()
        self._server: Server | None = None
        self._arrived: anyio.Event | None = None

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"<StandInAgent url={self.url or 'not started'} api_key={key}>"

    @property
    def base_url(self) -> str:
        """``ws://host:port``: what the Deepgram SDK wants as its ``agent`` environment URL."""
        return self.url.removesuffix(self.path)

    async def __aenter__(self) -> Self:
        self._arrived = anyio.Event()
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            process_request=self._process_request,
            select_subprotocol=_select_subprotocol,
            compression=None,
            close_timeout=2,
            logger=redacted_logger("acdg_asgi.testing.agent.websocket"),
            ssl=self._ssl,
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "wss" if self._ssl is not None else "ws"
        self.url = f"{scheme}://{host}:{port}{self.path}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def drop_all(self) -> None:
        """Abort every open connection (no close frame) and wait until each handler ends."""
        sessions = list(self._sessions)
        for session in sessions:
            session.drop()
        for session in sessions:
            await session.record.closed.wait()

    def refuse_next(self, n: int = 1, status: int = 503) -> None:
        """Refuse the next ``n`` upgrade requests with HTTP ``status``."""
        self._refusals.extend([status] * n)

    async def wait_for_connections(self, n: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until ``n`` connections have been accepted in total."""
        with anyio.fail_after(timeout):
            while len(self.connections) < n:
                assert self._arrived is not None, "use StandInAgent as an async context manager"
                await self._arrived.wait()

    # --- handshake -------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests += 1
        if request.path.partition("?")[0] != self.path:
            return connection.respond(404, "Not Found\n")
        if self._refusals:
            self.refused += 1
            return connection.respond(self._refusals.pop(0), "Refused by the stand-in agent\n")
        if self._api_key is not None and not _authorized(request.headers, self._api_key):
            return connection.respond(401, "Invalid credentials\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        record = AgentConnectionRecord(request_id=str(uuid.uuid4()), path=ws.request.path)
        self.connections.append(record)
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = anyio.Event()
        session = AgentSession(ws, record, self.script)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            if record.close_reason is None:
                record.close_reason = f"closed {ws.close_code}"
            record.closed.set()


def _offered_subprotocols(headers: Headers) -> list[str]:
    return [
        item.strip()
        for value in headers.get_all("Sec-WebSocket-Protocol")
        for item in value.split(",")
        if item.strip()
    ]


def _authorized(headers: Headers, key: str) -> bool:
    scheme, _, secret = headers.get("Authorization", "").partition(" ")
    if scheme.lower() in AUTH_SCHEMES and _same(secret.strip(), key):
        return True
    offered = _offered_subprotocols(headers)
    return len(offered) >= 2 and offered[0].lower() in AUTH_SCHEMES and _same(offered[1], key)


def _same(given: str, key: str) -> bool:
    return hmac.compare_digest(given.encode(), key.encode())


def _select_subprotocol(
    connection: ServerConnection, subprotocols: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Echo the auth scheme offered as a subprotocol, never the secret after it."""
    if subprotocols and subprotocols[0].lower() in AUTH_SCHEMES:
        return subprotocols[0]
    return None
