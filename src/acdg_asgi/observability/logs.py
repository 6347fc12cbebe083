"""Logs: the logger that names the call on every line, and the output of the ``acdg``
commands (readable text, or one JSON object per line).

Call log lines carry ``conversation_id`` and ``session_id`` as ``extra`` fields
(:class:`CallLog`); the JSON format puts them in their own fields so a log pipeline can
index them.

Whatever a peer sent can end up in a log line (a ``conversationId``, an unknown message
type, a reason). The bridge's loggers (:func:`get_logger`) pass every string argument
through :func:`peer_text`: control characters escaped, so a newline cannot forge a line,
and at most :data:`LOG_ARG_MAX` characters, so a huge field cannot flood the log.
``acdg_asgi.security`` is the logger of refusals an operator should look at (a resume
for a call that is alive elsewhere, a socket closed for flooding).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from ..call.fold import Fold, Folded
from ..transports.redact import ServerLogFilter

__all__ = [
    "CallLog", "FoldedLog", "JsonFormatter", "PeerSafe", "configure_logging", "for_call",
    "get_logger",
    "log_somewhere", "logger", "peer_text", "security",
]

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

LOG_ARG_MAX: Final = 300
# C0 and C1 controls, line and paragraph separators, bidirectional overrides
_UNSAFE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def peer_text(value: object, limit: int = LOG_ARG_MAX) -> str:
    """``value`` as text that is safe to log or echo back: at most ``limit`` characters
    of it (the rest counted), control characters written as ``\\xNN``/``\\uNNNN``."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = f"{text[:limit]}...(+{len(text) - limit} chars)"
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class PeerSafe(logging.Filter):
    """Makes every string argument of a record safe (:func:`peer_text`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(peer_text(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, Mapping):
            record.args = {k: peer_text(v) if isinstance(v, str) else v for k, v in args.items()}
        return True


def get_logger(name: str) -> logging.Logger:
    """One of the bridge's loggers, its arguments made safe (:class:`PeerSafe`)."""
    log = logging.getLogger(name)
    if not any(isinstance(f, PeerSafe) for f in log.filters):
        log.addFilter(PeerSafe())
    return log


logger = get_logger("acdg_asgi.call")
security = get_logger("acdg_asgi.security")


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """Every line names the call: ``conversation_id`` and ``session_id`` ride in ``extra``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[{extra.get('conversation_id')}] {msg}", kwargs


def for_call(
    conversation_id: str | None, session_id: str | None = None, base: logging.Logger = logger
) -> CallLog:
    """The log of one call, before or outside its runtime (admission, the cluster). The
    id may not have been checked yet: it goes into every line made safe (:func:`peer_text`)."""
    if conversation_id is not None:
        conversation_id = peer_text(conversation_id, 128)
    return CallLog(base, {"conversation_id": conversation_id, "session_id": session_id})


class FoldedLog:
    """Lines a peer can make repeat (an unknown message type, a full event queue), folded
    per kind: the first few in each interval are written, then one line says how many
    more there were, quoting the last (see :mod:`acdg_asgi.call.fold`)."""

    def __init__(
        self, log: logging.LoggerAdapter[Any] | logging.Logger, clock: Callable[[], float],
        *, interval_s: float = 5.0,
    ) -> None:
        self._log = log
        self._clock = clock
        self._fold = Fold(interval_s)
        self._levels: dict[str, int] = {}

    def log(self, kind: str, level: int, msg: str, *args: Any) -> None:
        now = self._clock()
        self._report(self._fold.due(now))
        self._levels[kind] = level
        if self._fold.add(kind, now, (msg, args)):
            self._log.log(level, msg, *args)

    def flush(self) -> None:
        """Say what is still folded (at the end of the call)."""
        self._report(self._fold.flush())

    def _report(self, folded: list[Folded]) -> None:
        for repeats in folded:
            msg, args = repeats.detail
            self._log.log(self._levels.get(str(repeats.key), logging.INFO),
                          "%d more like this in %g s, the last: " + msg, repeats.count,
                          repeats.interval_s, *args)


_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _one_line(record.getMessage()),
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


class TextFormatter(logging.Formatter):
    """One record, one line (a traceback follows on lines of its own): whatever another
    library logs, a newline in its message cannot start a forged line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _one_line(record.message)
        return super().formatMessage(record)


def _one_line(message: str) -> str:
    return _UNSAFE.sub(_escape, message) if _UNSAFE.search(message) else message


def configure_logging(fmt: str = "text", level: str = "info") -> None:
    """``acdg serve``'s logging: one handler on the root logger, to stderr, that every
    logger (the bridge's, uvicorn's, websockets') writes through, with
    :class:`ServerLogFilter` on it. It replaces whatever was there, the bridge's
    fallback (:func:`log_somewhere`) included."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(TEXT_FORMAT))
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
    handler.setFormatter(TextFormatter(TEXT_FORMAT))
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
