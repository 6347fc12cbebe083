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

__all__ = ["CallLog", "JsonFormatter", "configure_logging", "logger"]

logger = logging.getLogger("acdg_asgi.call")


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """Every line names the call: ``conversation_id`` and ``session_id`` ride in ``extra``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[{extra.get('conversation_id')}] {msg}", kwargs

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
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(ServerLogFilter())  # whichever logger a server or library writes to
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
