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

Apps that do not know the extension see an ordinary uvicorn WebSocket.

It relies on internals of uvicorn's class, as reworked in uvicorn 0.52.1, and is tested
with 0.52.1 to 0.54; a newer uvicorn gets one warning at import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import version
from typing import Any, Final

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode

from .vaic_asgi import DIRECT
from .wsframe import FIN, MASKED, PING, PONG, TEXT, apply_mask, header, read_header

__all__ = ["DirectWebSocketProtocol"]

_TEXT_MESSAGE = FIN | TEXT
_PING_FRAME = FIN | PING
_PONG_FRAME = FIN | PONG
_PARTIAL_MAX = 65536  # a larger frame arriving in pieces is left to the websockets parser
_NEWEST_TESTED: Final = (0, 54)  # the oldest, 0.52.1, is pyproject's lower bound

if tuple(int(p) for p in version("uvicorn").split(".")[:2] if p.isdigit()) > _NEWEST_TESTED:
    logging.getLogger("acdg_asgi.serve").warning(
        "uvicorn %s is newer than the releases the direct WebSocket protocol is tested with "
        "(0.52.1 to 0.54): if calls misbehave, pin uvicorn<0.55 or serve with ws='auto'",
        version("uvicorn"))


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    _on_text: Callable[[str], None] | None = None
    _by_hand = False  # frames are read here, not by the websockets parser
    _partial = b""  # the start of a frame that has not fully arrived

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][DIRECT] = {"protocol": self}

    def listen(self, on_text: Callable[[str], None]) -> None:
        """Hand every text message to ``on_text`` inside ``data_received`` from now on."""
        self._on_text = on_text
        if self.read_paused and self.queue.empty():
            # Otherwise uvicorn's receive() resumes once the app has read what is queued,
            # so no message overtakes an older one.
            self.read_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._by_hand:
            if not self._partial and self._on_text is not None and self._one_text(data):
                return
            self._read_frames(self._partial + data if self._partial else data)
            return
        upgrading = not self.handshake_initiated
        super().data_received(data)
        # Read by hand from the first frame on, if the upgrade request came alone: then
        # the websockets parser holds no part of a frame.
        self._by_hand = (
            upgrading and self.handshake_initiated and not self.close_sent
            and data.startswith(b"GET ") and data.find(b"\r\n\r\n") == len(data) - 4
        )

    def _one_text(self, data: bytes) -> bool:
        """The usual case, exactly one whole text message: ``True`` once it is handed on."""
        frame = read_header(data, 0)
        if frame is None or frame[0] != _TEXT_MESSAGE or not frame[1] & MASKED \
                or self.close_sent:
            return False
        start = frame[3] + 4
        if start + frame[2] != len(data) or frame[2] > self.config.ws_max_size:
            return False
        try:
            text = apply_mask(data[start:], data[start - 4 : start]).decode()
        except UnicodeDecodeError:
            return False  # the frame loop hands it to the websockets parser
        self._on_text(text)  # type: ignore[misc]  # checked by the caller
        return True

    def _read_frames(self, buf: bytes) -> None:
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
                    super().send_receive_event_to_app()
                else:
                    try:
                        text = payload.decode()
                    except UnicodeDecodeError:
                        break
                    pos = stop
                    on_text(text)
            elif first == _PING_FRAME:
                pos = stop
                if not self.close_sent:
                    self.transport.write(header(_PONG_FRAME, length) + payload)
            else:
                pos = stop
                self.handle_pong(Frame(Opcode.PONG, payload))
        else:
            self._partial = buf[pos:]
            return
        self._by_hand, self._partial = False, b""
        super().data_received(buf[pos:])

    def send_receive_event_to_app(self) -> None:
        on_text = self._on_text
        if on_text is None or self.curr_msg_data_type != "text" or self.close_sent:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        try:
            text = data.decode()
        except UnicodeDecodeError:
            super().send_receive_event_to_app()  # uvicorn's own handling of bad UTF-8
            return
        self.frames = []
        on_text(text)

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # The refusal is answered in full. uvicorn does not count that as a finished
            # handshake, and would log "ASGI callable returned without completing
            # handshake." at ERROR after every refused upgrade.
            self.handshake_complete = True

    def backed_up(self) -> bool:
        """VAIC reads slower than we write: the transport's buffer is over its high mark."""
        return not self.writable.is_set()

    def write_text(self, data: bytes) -> bool:
        """Write one text frame now; ``False`` if the socket is gone or closing."""
        if self.disconnected or self.close_sent or self.transport.is_closing():
            return False
        self.transport.write(header(_TEXT_MESSAGE, len(data)) + data)
        return True
