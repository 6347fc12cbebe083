"""Keep secrets out of logs that third-party libraries write.

websockets logs every handshake header at DEBUG level, ``Authorization`` included, and the
start of every frame. Loggers made here replace the values of credential headers with
``****`` and drop frame lines, which would carry the beginning of audio payloads.
"""

from __future__ import annotations

import logging
from typing import Final

__all__ = ["redacted_logger"]

_SECRET_HEADERS: Final = frozenset({"authorization", "sec-websocket-protocol"})


class _RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(type(a).__name__ == "Frame" for a in args):
            return False
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() in _SECRET_HEADERS:
            record.args = (args[0], "****")
        return True


def redacted_logger(name: str) -> logging.Logger:
    """The logger ``name``, with credential headers masked in its records."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _RedactSecrets) for f in logger.filters):
        logger.addFilter(_RedactSecrets())
    return logger
