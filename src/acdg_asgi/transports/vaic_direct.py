"""A uvicorn WebSocket protocol with a direct path for the bridge (``acdg serve`` uses it).

Standard ASGI costs a queue hop and a task switch per message each way, and uvicorn
pauses and resumes reading around every message. For 50 small frames a second per call
that is most of the bridge's CPU. This protocol is uvicorn's own ``websockets-sansio``
implementation plus one ASGI extension, ``acdg.direct``: an app that finds it in the
scope may, after accepting, take text messages as a synchronous callback from
``data_received`` and write text frames with a plain ``transport.write``.

Frames are read by hand (:mod:`acdg_asgi.transports.wsframe`) for what a call sends all the time:
whole text messages, pings and pongs. Anything else (a close, a binary or fragmented
message, a frame that breaks the rules) hands the connection back to the websockets
parser at that frame, for good, and uvicorn answers it as it always does. The
handshake, the close and the ``receive``/``send`` path stay uvicorn's.

    uvicorn.run(app, ws="acdg_asgi.serving:DirectWebSocketProtocol")

Apps that do not know the extension see an ordinary uvicorn WebSocket. Under uvicorn's
default protocol, configured or not, :func:`take_over` gives an accepted socket the same
path (the bridge calls it for its own sockets).

Reads keep to the socket's :class:`~acdg_asgi.transports.budget.ReadBudget` (``limit``):
once a frame spends what was left, reading pauses and what had already arrived waits
here (raw, or as texts the websockets parser had already read) until the pause is over;
a socket that stays over its budget is closed with 1008.

It relies on internals of uvicorn's class, as reworked in uvicorn 0.52.1, and is tested
with 0.52.1 to 0.55. On a newer uvicorn the protocol warns once when first used, and
:func:`take_over` leaves sockets as they are.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from importlib.metadata import version
from typing import Any, Final

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from ..config import Budget
from ..observability.logs import get_logger
from .budget import ReadBudget
from .vaic_asgi import DIRECT
from .wsframe import FIN, MASKED, PING, PONG, TEXT, apply_mask, header, header16, read_header

__all__ = ["UVICORN_RELEASE", "DirectWebSocketBase", "DirectWebSocketProtocol", "take_over",
           "takes_over"]

_log = get_logger("acdg_asgi.vaic")


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"

_TEXT_MESSAGE = FIN | TEXT
_PING_FRAME = FIN | PING
_PONG_FRAME = FIN | PONG
_TEXT_16 = bytes((_TEXT_MESSAGE, MASKED | 126))  # a masked text frame with a 16-bit length
_PARTIAL_MAX = 65536  # a larger frame arriving in pieces is left to the websockets parser
_PING_PAYLOAD = b"acdg"
_NEWEST_TESTED: Final = (0, 55)  # the oldest, 0.52.1, is pyproject's lower bound
UVICORN_RELEASE: Final = tuple(int(p) for p in version("uvicorn").split(".")[:2] if p.isdigit())
_TESTED: Final = UVICORN_RELEASE <= _NEWEST_TESTED
_untested_warned = False


def _warn_untested() -> None:
    """Once, when the protocol is first used on a uvicorn newer than it is tested with."""
    global _untested_warned
    if not _untested_warned:
        _untested_warned = True
        logging.getLogger("acdg_asgi.serve").warning(
            "uvicorn %s is newer than the releases the direct WebSocket protocol is tested "
            "with (0.52.1 to 0.55): if calls misbehave, pin uvicorn<0.56 or serve with "
            "ws='auto'", version("uvicorn"))


class DirectWebSocketBase(WebSocketsSansIOProtocol):
    """uvicorn's protocol plus the direct path, its state in the instance's dictionary as
    uvicorn's own: what a socket of uvicorn's class becomes (:func:`take_over`)."""

    _on_text: Callable[[str], None] | None = None
    _fast = False  # listening, and not paused: a whole text frame goes straight on
    _by_hand = False  # frames are read here, not by the websockets parser
    _partial = b""  # the start of a frame that has not fully arrived (or, paused, the rest)
    _budget: ReadBudget | None = None
    _max_size = 0  # uvicorn's ws_max_size, once listening
    _paused = False  # over the budget: not reading until the pause is over
    _held: deque[str] | None = None  # texts the websockets parser read during a pause
    backed_up = False  # VAIC reads slower than we write: the transport is over its high mark

    # uvicorn keeps the same fact in an asyncio.Event for its awaiting send; the outlet
    # asks it before every frame, which a plain attribute answers cheaper.
    def pause_writing(self) -> None:
        self.backed_up = True
        super().pause_writing()

    def resume_writing(self) -> None:
        self.backed_up = False
        super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.backed_up = False
        super().connection_lost(exc)

    def handle_connect(self, event: Any) -> None:
        if not _TESTED:
            _warn_untested()
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][DIRECT] = {"protocol": self}

    def limit(self, budget: ReadBudget) -> None:
        """Read no faster than ``budget`` allows."""
        self._budget = budget

    def listen(self, on_text: Callable[[str], None]) -> None:
        """Hand every text message to ``on_text`` inside ``data_received`` from now on."""
        if self._budget is None:  # not limited by its app: only a guard against floods
            self._budget = ReadBudget(Budget(), max_frame_bytes=self.config.ws_max_size,
                                      clock=self.loop.time)
        self._on_text = on_text
        self._max_size = self.config.ws_max_size
        self._fast = not self._paused
        if self.read_paused and self.queue.empty():
            # Otherwise uvicorn's receive() resumes once the app has read what is queued,
            # so no message overtakes an older one.
            self.read_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._by_hand:
            if not self._partial and self._fast and self._one_text(data):
                return
            self._read_frames(self._partial + data if self._partial else data)
            return
        if self._paused:
            self._wait_turn(data)
            return
        upgrading = not self.handshake_initiated
        super().data_received(data)
        if upgrading and not self.handshake_initiated and self.conn.handshake_exc is not None:
            self._bad_upgrade()
            return
        # Read by hand from the first frame on, if the upgrade request came alone: then
        # the websockets parser holds no part of a frame.
        self._by_hand = (
            upgrading and self.handshake_initiated and not self.close_sent
            and data.startswith(b"GET ") and data.find(b"\r\n\r\n") == len(data) - 4
        )

    def _one_text(self, data: bytes) -> bool:
        """The usual case, exactly one whole text message of 126 to 65535 bytes (a chunk
        of audio and its JSON): ``True`` once it is handed on. Its header is read here
        rather than by :func:`read_header`: the 16-bit length is all a chunk needs."""
        if data[:2] != _TEXT_16 or self.close_sent:
            return False
        length = len(data) - 8
        if data[2] << 8 | data[3] != length or length > self._max_size:
            return False
        try:
            text = apply_mask(data[8:], data[4:8]).decode()
        except UnicodeDecodeError:
            return False  # the frame loop hands it to the websockets parser
        self._on_text(text)  # type: ignore[misc]  # checked by the caller
        budget = self._budget
        budget.left -= length + budget.per_message  # type: ignore[union-attr]  # by listen()
        if budget.left < 0:  # type: ignore[union-attr]
            self._over_budget(b"")
        return True

    def _read_frames(self, buf: bytes) -> None:
        if self._paused:  # what waited, and what came before the transport stopped
            self._partial = buf
            self.transport.pause_reading()
            return
        pos, end, limit = 0, len(buf), self.config.ws_max_size
        while (frame := read_header(buf, pos)) is not None:
            if self.close_sent or self.disconnected:
                break  # what follows, the peer's close frame included, is uvicorn's
            first, second, length, head = frame
            if first not in (_TEXT_MESSAGE, _PING_FRAME, _PONG_FRAME) or not second & MASKED \
                    or length > limit or (first != _TEXT_MESSAGE and length > 125):
                break
            start = pos + head + 4
            stop = start + length
            if stop > end:
                if length > _PARTIAL_MAX:
                    break
                self._partial = buf[pos:]
                return
            payload = apply_mask(buf[start:stop], buf[start - 4 : start])
            if first == _TEXT_MESSAGE:
                on_text = self._on_text
                if on_text is None:  # not listening yet: uvicorn's queue, as usual
                    pos = stop
                    self.curr_msg_data_type, self.frames = "text", [payload]
                    self.send_receive_event_to_app()
                else:
                    try:
                        text = payload.decode()
                    except UnicodeDecodeError:
                        break
                    pos = stop
                    on_text(text)
                    if self._spent(length) and self._over_budget(buf[pos:]):
                        return
            elif first == _PING_FRAME:
                pos = stop
                if not self.close_sent:
                    self.transport.write(header(_PONG_FRAME, length) + payload)
                if self._spent(length) and self._over_budget(buf[pos:]):
                    return
            else:
                pos = stop
                self.handle_pong(Frame(Opcode.PONG, payload))
                if self._spent(length) and self._over_budget(buf[pos:]):
                    return
        else:
            self._partial = buf[pos:]
            return
        self._by_hand, self._partial = False, b""
        super().data_received(buf[pos:])

    def send_receive_event_to_app(self) -> None:
        on_text = self._on_text
        if self.curr_msg_data_type != "text" or self.close_sent:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.frames = []
            self._not_utf8()
            return
        if on_text is None:  # not listening yet: uvicorn's queue, as usual
            super().send_receive_event_to_app()
            return
        self.frames = []
        if self._paused:  # the parser read it during a pause: it goes once that is over
            if self._held is None:
                self._held = deque()
            self._held.append(text)
            return
        on_text(text)
        if self._spent(len(data)):
            self._over_budget(b"")

    # --- what a peer may get wrong -------------------------------------------------------

    def _not_utf8(self) -> None:
        """A text message that is not UTF-8: the connection fails (1007, as RFC 6455
        wants), with one warning instead of uvicorn's ERROR and traceback."""
        _log.warning("VAIC socket from %s sent a text message that is not UTF-8: closed (1007)",
                     _peer(self.client))
        self.conn.send_close(1007, "invalid UTF-8")
        self.handle_parser_exception()

    def _bad_upgrade(self) -> None:
        """The websockets parser refused the upgrade request (header fields too large, a
        request line too long, not HTTP): send its answer and close, with one warning.
        Before 0.55, uvicorn left the connection open, and the client waiting, for good;
        since, it answers and closes by itself."""
        _log.warning("upgrade from %s refused: %s", _peer(self.client), self.conn.handshake_exc)
        if not self.close_sent:
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.handshake_complete = self.close_sent = True
            self.transport.close()

    # --- the read budget ------------------------------------------------------------------

    def _spent(self, size: int) -> bool:
        """Take one frame of ``size`` bytes from the budget: ``True`` if it ran out."""
        budget = self._budget
        if budget is None:
            return False
        budget.left -= size + budget.per_message
        return budget.left < 0

    def _wait_turn(self, data: bytes) -> None:
        """Bytes that came in a pause (before the transport stopped, or after uvicorn
        resumed it): they wait for the pause to end."""
        self._partial += data
        self.transport.pause_reading()

    def _over_budget(self, rest: bytes) -> bool:
        """The budget ran out: stop reading for the pause it asks (``rest``, what arrived
        after this frame, waits), or close the socket. ``True`` if reading stopped."""
        budget = self._budget
        assert budget is not None
        wait = budget.pause()
        if budget.closing is not None:
            self.close_now(1008, "message rate over budget")
            return True
        if wait <= 0:
            return False
        self._paused, self._fast = True, False
        self._partial = rest
        self.transport.pause_reading()
        self.loop.call_later(wait, self._read_again)
        return True

    def _read_again(self) -> None:
        self._paused = False
        self._fast = self._on_text is not None
        if self.disconnected or self.close_sent:
            return
        held, on_text = self._held, self._on_text
        while held and on_text is not None and not self._paused:
            text = held.popleft()
            on_text(text)
            if self._spent(len(text)) and self._over_budget(b""):
                return
        rest, self._partial = self._partial, b""
        if rest:
            self.data_received(rest)
        if not self._paused and not self.read_paused:
            self.transport.resume_reading()

    def handle_pong(self, event: Frame) -> None:
        if self._budget is not None and not self._by_hand:  # by hand, it was counted
            self._budget.left -= self._budget.per_message  # a sign of life (heard_since)
        super().handle_pong(event)

    def ping(self) -> None:
        """Ping the peer; its pong counts as a frame read (a sign it is alive)."""
        if not (self.close_sent or self.disconnected or self.transport.is_closing()):
            self.transport.write(header(_PING_FRAME, len(_PING_PAYLOAD)) + _PING_PAYLOAD)

    def close_now(self, code: int, reason: str) -> None:
        """Close the socket from here, as the app's ``websocket.close`` would; the app
        reads the disconnect."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self._paused, self._fast, self._partial, self._held = False, False, b"", None
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.read_paused = False
        self.transport.resume_reading()  # to read the peer's close frame
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # uvicorn keeps the upgrade's response, headers and all, for the socket's life
            # (the request, the websockets parser keeps too); nothing reads them now.
            self.request = self.response = None  # type: ignore[assignment]
        elif message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # The refusal is answered in full. uvicorn does not count that as a finished
            # handshake, and would log "ASGI callable returned without completing
            # handshake." at ERROR after every refused upgrade.
            self.handshake_complete = True

    def write_text(self, data: bytes) -> bool:
        """Write one text frame now; ``False`` if the socket is gone or closing."""
        if self.disconnected or self.close_sent or self.transport.is_closing():
            return False
        n = len(data)
        self.transport.write((header16(_TEXT_MESSAGE, 126, n) if 125 < n < 65536
                              else header(_TEXT_MESSAGE, n)) + data)
        return True


class DirectWebSocketProtocol(DirectWebSocketBase):
    """:class:`DirectWebSocketBase` with what every frame reads in slots, next to the
    object's header, rather than spread over uvicorn's instance dictionary: what
    ``acdg serve`` and ``--ws acdg_asgi.serving:DirectWebSocketProtocol`` run. uvicorn's
    own attributes among them (``transport``, ``close_sent``, ``disconnected``) take
    the slots too, set by its ``__init__`` as ever."""

    _OWN: Final = ("_budget", "_by_hand", "_fast", "_held", "_max_size", "_on_text",
                   "_partial", "_paused", "backed_up")
    __slots__ = (*_OWN, "close_sent", "disconnected", "transport")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for name in self._OWN:  # a slot has no default: the base class's, each
            setattr(self, name, getattr(DirectWebSocketBase, name))
        super().__init__(*args, **kwargs)


def takes_over(receive: object) -> bool:
    """Whether :func:`take_over` applies to sockets like the one ``receive`` reads: the
    protocol is uvicorn's default and the uvicorn release a tested one."""
    protocol = getattr(receive, "__self__", None)
    return protocol.__class__ is WebSocketsSansIOProtocol and _TESTED


def _between_frames(conn: ServerProtocol) -> bool:
    """Whether the websockets parser holds no part of a frame or message: nothing
    buffered, and its generator waiting where a frame starts (it takes a header in
    pieces, and the buffer is empty between them). Unsure: no."""
    if conn.reader.buffer or getattr(conn, "expect_continuation_frame", True):
        return False
    parser = getattr(conn, "parser", None)
    while (inner := getattr(parser, "gi_yieldfrom", None)) is not None:
        parser = inner
    return getattr(parser, "gi_code", None) is StreamReader.at_eof.__code__


def take_over(receive: object) -> DirectWebSocketBase | None:
    """The direct path for a socket that uvicorn's default WebSocket protocol has just
    accepted, ``receive`` being that socket's ASGI callable; ``None`` where it is not
    that protocol (another server, another ``--ws``, a middleware that wraps ``receive``,
    a uvicorn release this module is not tested with).

    :class:`DirectWebSocketBase` adds to that class and keeps its state, so the
    connection becomes one by taking on the subclass (not :class:`DirectWebSocketProtocol`,
    whose slots make another layout). Called right after the accept, with
    no await between: nothing has been read from the socket since the upgrade's response
    went out, so the websockets parser holds no frame and frames can be read by hand,
    unless the peer sent before it had that response (then the parser keeps reading).
    """
    if not takes_over(receive):
        return None
    protocol = receive.__self__  # type: ignore[attr-defined]
    assert isinstance(protocol, WebSocketsSansIOProtocol)
    if not protocol.handshake_complete or protocol.close_sent or protocol.disconnected:
        return None
    protocol.__class__ = DirectWebSocketBase
    assert isinstance(protocol, DirectWebSocketBase)
    # Frames a peer sent before the upgrade's response (which no client should) stay
    # with the websockets parser, as on a socket whose upgrade did not come alone.
    protocol._by_hand = protocol.queue.empty() and not protocol.frames \
        and _between_frames(protocol.conn)
    protocol.backed_up = not protocol.writable.is_set()
    protocol.request = protocol.response = None  # type: ignore[assignment]  # as send() does
    protocol.scope["extensions"][DIRECT] = {"protocol": protocol}
    # Transports may keep the protocol's bound data_received (uvloop's do): renew it.
    protocol.transport.set_protocol(protocol)
    return protocol

