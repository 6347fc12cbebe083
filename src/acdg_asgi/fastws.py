"""A uvicorn WebSocket protocol with a direct path for the bridge (``acdg serve`` uses it).

Standard ASGI costs a queue hop and a task switch per message each way, and uvicorn
pauses and resumes reading around every message. For 50 small frames a second per call
that is most of the bridge's CPU. This protocol is uvicorn's own ``websockets-sansio``
implementation plus one ASGI extension, ``acdg.direct``: an app that finds it in the
scope may, after accepting, take text messages as a synchronous callback from
``data_received`` and write text frames with a plain ``transport.write``. Everything
else (handshake, close, ping, the ``receive``/``send`` path) stays uvicorn's.

    uvicorn.run(app, ws="acdg_asgi.fastws:DirectWebSocketProtocol")

Apps that do not know the extension see an ordinary uvicorn WebSocket.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["DIRECT", "DirectWebSocketProtocol"]

DIRECT = "acdg.direct"


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    _on_text: Callable[[str], None] | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][DIRECT] = {"protocol": self}

    def listen(self, on_text: Callable[[str], None]) -> None:
        """Hand every text message to ``on_text`` inside ``data_received`` from now on."""
        self._on_text = on_text
        if self.read_paused:  # the message that was waiting is already in the queue
            self.read_paused = False
            self.transport.resume_reading()

    def send_receive_event_to_app(self) -> None:
        on_text = self._on_text
        if on_text is None or self.curr_msg_data_type != "text" or self.close_sent:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        try:
            text = data.decode()
        except UnicodeDecodeError:
            super().send_receive_event_to_app()  # uvicorn's own handling of bad UTF-8
            return
        on_text(text)

    def write_text(self, data: bytes) -> bool:
        """Write one text frame now; ``False`` if the socket is gone or closing."""
        if self.disconnected or self.close_sent or self.transport.is_closing():
            return False
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", 0x81, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 127, n)
        self.transport.write(head + data)
        return True
