"""Logs: the logger that names the call on every line, and the output of the ``acdg``
commands (readable text, or one JSON object per line).

Call log lines carry ``conversation_id`` and ``session_id`` as ``extra`` fields
(:class:`CallLog`); the JSON format puts them in their own fields so a log pipeline can
index them.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec

from ..transports.redact import ServerLogFilter

__all__ = [
    "CallLog", "JsonFormatter", "configure_logging", "for_call", "log_somewhere", "logger",
]

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

logger = logging.getLogger("acdg_asgi.call")


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """Every line names the call: ``conversation_id`` and ``session_id`` ride in ``extra``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[{extra.get('conversation_id')}] {msg}", kwargs


def for_call(
    conversation_id: str | None, session_id: str | None = None, base: logging.Logger = logger
) -> CallLog:
    """The log of one call, before or outside its runtime (admission, the cluster)."""
    return CallLog(base, {"conversation_id": conversation_id, "session_id": session_id})


_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("conversation_id", "session_id"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        cid = entry.get("conversation_id")
        if cid is not None:  # the field says it: no "[conversation]" prefix in the text too
            entry["message"] = entry["message"].removeprefix(f"[{cid}] ")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode()


def configure_logging(fmt: str = "text", level: str = "info") -> None:
    """``acdg serve``'s logging: one handler on the root logger, to stderr, that every
    logger (the bridge's, uvicorn's, websockets') writes through, with
    :class:`ServerLogFilter` on it. It replaces whatever was there, the bridge's
    fallback (:func:`log_somewhere`) included."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ServerLogFilter())  # whichever logger a server or library writes to
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    ours = logging.getLogger("acdg_asgi")
    ours.handlers[:] = [h for h in ours.handlers if not isinstance(h, _Fallback)]


class _Fallback(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes only while the root logger has no handler: then Python would print the
    bare message (no time, no level) or, below WARNING, nothing."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


# Servers that set up logging of their own before they import the app.
_SERVER_LOGGERS = ("uvicorn.error", "hypercorn.error")


def log_somewhere() -> None:
    """Give the bridge's lines time and level where the host configured no logging.

    Called when a bridge is made. If the root logger has a handler then (the app's
    logging, ``acdg serve``'s), the lines go there as usual, at the app's level, and
    nothing is added. Otherwise the bridge's logger gets a handler to stderr that writes
    while the root logger has none, at the level of the server's own log where the server
    set one up first (``uvicorn app:app --log-level``: INFO by default, so the drain and
    call lines show), else Python's WARNING."""
    ours = logging.getLogger("acdg_asgi")
    if logging.getLogger().handlers or any(isinstance(h, _Fallback) for h in ours.handlers):
        return
    handler = _Fallback(sys.stderr)
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ServerLogFilter())
    ours.addHandler(handler)
    for name in _SERVER_LOGGERS:
        server = logging.getLogger(name)
        if ours.level == logging.NOTSET and _has_handlers(server):
            ours.setLevel(server.getEffectiveLevel())


def _has_handlers(logger: logging.Logger) -> bool:
    """Whether records of ``logger`` reach a handler below the root logger."""
    current: logging.Logger | None = logger
    while current is not None and current is not logging.getLogger():
        if current.handlers:
            return True
        current = current.parent if current.propagate else None
    return False
