"""Keep secrets and false alarms out of the logs that servers and libraries write.

websockets logs every handshake header at DEBUG level, ``Authorization`` included, and the
start of every frame; uvicorn's WebSocket implementations hand it their ``uvicorn.error``
logger, so ``--log-level debug`` prints VAIC's bearer token. :class:`ServerLogFilter`
replaces the values of credential headers with ``****`` and drops frame lines, which
would carry the beginning of audio payloads.

It also drops uvicorn's ``ASGI callable returned without completing handshake.`` ERROR
when it follows an upgrade that the bridge refused on purpose (a wrong token: 401;
draining: 503), which uvicorn's websockets-sansio implementation reports as if the app
had failed. The same line after anything else (an app that really did not answer) is
kept.

:func:`protect_server_logs` puts the filter on uvicorn's and websockets' loggers (every
``BridgeApp`` does it when it is made); under another server whose logs may show request
headers, add it to that server's logger::

    logging.getLogger("hypercorn.error").addFilter(ServerLogFilter())
"""

from __future__ import annotations

import contextvars
import logging
from typing import Final

__all__ = ["ServerLogFilter", "mark_refused", "protect_server_logs", "redacted_logger"]

_SECRET_HEADERS: Final = frozenset({"authorization", "proxy-authorization",
                                    "sec-websocket-protocol", "cookie", "x-api-key"})
_UNFINISHED: Final = "ASGI callable returned without completing handshake."
SERVER_LOGGERS: Final = ("uvicorn.error", "websockets.server", "websockets.client")

# Set in the task that refused an upgrade; the server logs its complaint from that task.
_refused_here: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "acdg_refused_upgrade", default=False)


def mark_refused() -> None:
    """This task answered its WebSocket upgrade with an HTTP refusal, on purpose."""
    _refused_here.set(True)


class ServerLogFilter(logging.Filter):
    """Masks credential headers, drops frame lines and the false alarm after a refusal."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _UNFINISHED and _refused_here.get():
            return False
        args = record.args
        if not isinstance(args, tuple) or not args:
            return True
        if any(type(a).__name__ == "Frame" for a in args):
            return False
        if len(args) == 2 and str(args[0]).lower() in _SECRET_HEADERS:
            record.args = (args[0], "****")
        return True


def protect_server_logs(names: tuple[str, ...] = SERVER_LOGGERS) -> None:
    """Put :class:`ServerLogFilter` on the loggers ``names`` (once each)."""
    for name in names:
        redacted_logger(name)


def redacted_logger(name: str) -> logging.Logger:
    """The logger ``name``, with :class:`ServerLogFilter` on its records."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, ServerLogFilter) for f in logger.filters):
        logger.addFilter(ServerLogFilter())
    return logger
